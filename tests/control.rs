//! `streamgate control` as an operator runs it: config checked, the gRPC API served on the
//! embedded store, and applied policies still there after a restart.

use std::process::Command;

use streamgate_proto::control::v1 as pb;
use tonic::Request;

const TOKEN: &str = "operator-token-0123456789";

mod common;

use common::{Proc, free_port, spawn_listening};

fn start(cfg: &std::path::Path, port: u16) -> Proc {
    spawn_listening(&["control", "--config"], cfg, port, "control plane")
}

async fn client(
    port: u16,
) -> pb::policy_service_client::PolicyServiceClient<tonic::transport::Channel> {
    pb::policy_service_client::PolicyServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

/// Writes a `[control]` config for the embedded store under `dir`, serving gRPC on `port`
/// (the admin port on any free one), with the test's admin token.
fn write_embedded_config(dir: &std::path::Path, cfg: &std::path::Path, port: u16) {
    std::fs::write(
        cfg,
        format!(
            "[control]\nadmin_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:{port}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
            dir.join("state").display(),
            dir.join("admin-token").display()
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_serves_and_keeps_policies_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let cfg = dir.path().join("control.toml");
    write_embedded_config(dir.path(), &cfg, port);
    let check = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["control", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let proc = start(&cfg, port);
    let mut c = client(port).await;
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/examples/subscribers.yaml"
    ))
    .unwrap();
    let applied = c
        .apply(authed(pb::ApplyPolicyRequest {
            document: doc,
            expected_version: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(applied.id, "subscribers");
    let unauth = c.list(pb::ListPoliciesRequest {}).await.unwrap_err();
    assert_eq!(unauth.code(), tonic::Code::Unauthenticated);
    drop(proc);

    let _proc = start(&cfg, port);
    let mut c = client(port).await;
    let got = c
        .get(authed(pb::GetPolicyRequest {
            id: "subscribers".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(
        got.version, applied.version,
        "the policy survived the restart"
    );
}

#[test]
fn control_check_config_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nlisten = \"x\"\nadmin_listen = \"nowhere\"\nstore = \"zookeeper\"\nbogus = 1\ntls_cert = \"{}\"\ntls_key = \"/nonexistent.key\"\n",
            dir.path().join("bad.toml").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["control", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for p in [
        "control.listen",
        "control.store",
        "control.bogus",
        "control.admin_token_file",
        "control.admin_listen",
        "control.tls_cert",
        "control.tls_key",
    ] {
        assert!(err.contains(p), "{p} missing:\n{err}");
    }
}

/// The stock Python gRPC stack speaks reflection v1alpha; the control plane answers it as
/// well as v1, so grpcio-reflection lists the services and describes a method.
#[tokio::test(flavor = "multi_thread")]
async fn python_grpc_reflection_lists_services_and_describes_a_method() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let cfg = dir.path().join("control.toml");
    write_embedded_config(dir.path(), &cfg, port);
    let _proc = start(&cfg, port);
    let venv = std::env::var_os("STREAMGATE_VENV").map_or_else(
        || std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/streamgate-venv"),
        std::path::PathBuf::from,
    );
    let out = common::output_ok(
        Command::new(venv.join("bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/grpc_reflect.py"
            ))
            .arg(format!("127.0.0.1:{port}"))
            .arg("streamgate.control.v1.PolicyService.Apply"),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in [
        "streamgate.control.v1.PolicyService",
        "streamgate.control.v1.AssetService",
        "streamgate.control.v1.KeyService",
        "streamgate.control.v1.PurgeService",
        "streamgate.control.v1.AuditService",
        "streamgate.control.v1.EdgeService",
        "streamgate.control.v1.JobService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&want), "{want} missing from {services:?}");
    }
    assert_eq!(
        v["method"]["input"],
        "streamgate.control.v1.ApplyPolicyRequest"
    );
    let fields = v["method"]["input_fields"].as_array().unwrap();
    assert!(fields.iter().any(|f| f == "document"), "{fields:?}");
}

/// Logs carry no colour codes when stderr is not a terminal, and `--log-format json` writes
/// one JSON object per line.
#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
    for json in [false, true] {
        let port = free_port();
        let cfg = dir.path().join("control.toml");
        write_embedded_config(dir.path(), &cfg, port);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamgate"));
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let child = cmd
            .args(["control", "--config"])
            .arg(&cfg)
            .env("STREAMGATE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut proc = Proc(child);
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < std::time::Duration::from_secs(15));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        proc.0.kill().unwrap();
        let out = proc.0.wait_with_output_ref();
        assert!(!out.is_empty(), "no log lines (json: {json})");
        assert!(!out.contains('\x1b'), "colour codes in a log file: {out}");
        if json {
            for line in out.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(
                    v["level"].is_string() && v["timestamp"].is_string(),
                    "{line}"
                );
            }
        }
    }
}

trait ReadStderr {
    fn wait_with_output_ref(&mut self) -> String;
}

impl ReadStderr for std::process::Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        self.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    }
}

/// One sample line of the Prometheus text format: name, labels, value.
type Sample = (String, std::collections::BTreeMap<String, String>, f64);

/// Parses the Prometheus text exposition strictly enough to catch a malformed line: every
/// line is a `# HELP`/`# TYPE` comment or `name{label="value",...} number`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment line: {line}"
            );
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        let mut labels = std::collections::BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let close = body
                .find("} ")
                .unwrap_or_else(|| panic!("unclosed labels: {line}"));
            for pair in body[..close].split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label {pair:?} in {line}"));
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("unquoted label value in {line}"));
                labels.insert(k.to_owned(), v.to_owned());
            }
            rest = &body[close + 1..];
        }
        let value: f64 = rest
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad value ({e}): {line}"));
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// The value of the sample `name` whose labels include every `(key, value)` of `want`.
fn sample(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

async fn scrape(admin: u16) -> (String, Vec<Sample>) {
    let r = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers()
    );
    let text = r.text().await.unwrap();
    let samples = parse_prometheus(&text);
    (text, samples)
}

/// `promtool check metrics` on `text`; the test fails loudly when promtool is missing.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed to check the metrics ({e}); run ./scripts/setup.sh")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The admin port (9101) of `streamgate control`: `/healthz` and `/readyz` answer, and
/// after a few gRPC calls, some of them refused, `/metrics` counts them by method and code
/// along with the store's work, in text that promtool accepts.
#[tokio::test(flavor = "multi_thread")]
async fn admin_port_counts_grpc_calls_by_method_and_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let (port, admin) = (free_port(), free_port());
    let cfg = dir.path().join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
            dir.path().join("state").display(),
            dir.path().join("admin-token").display()
        ),
    )
    .unwrap();
    let _proc = start(&cfg, port);
    let health = reqwest::get(format!("http://127.0.0.1:{admin}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "the embedded store answers");

    let mut c = client(port).await;
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/examples/subscribers.yaml"
    ))
    .unwrap();
    c.apply(authed(pb::ApplyPolicyRequest {
        document: doc,
        expected_version: 0,
    }))
    .await
    .unwrap();
    for _ in 0..3 {
        let e = c.list(pb::ListPoliciesRequest {}).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }
    let e = c
        .get(authed(pb::GetPolicyRequest { id: "nope".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    c.list(authed(pb::ListPoliciesRequest {})).await.unwrap();
    // One queued job (nobody runs it): counted by state at scrape.
    let mut jobs =
        pb::job_service_client::JobServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
    jobs.submit(authed(pb::SubmitJobRequest {
        asset: "talk".into(),
        source: "s3://media/talk.mp4".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    // Paths that name no method count under `unknown`, refused or not, so a client cannot
    // grow the label set.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (path, token) in [
        ("streamgate.control.v1.PolicyService/Bogus1", Some(TOKEN)),
        ("no.such.Service/Bogus2", Some(TOKEN)),
        ("streamgate.control.v1.PolicyService/Bogus3", None),
    ] {
        let mut r = h2
            .post(format!("http://127.0.0.1:{port}/{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0]);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    // The election is won in the background; wait for it to show.
    let t0 = std::time::Instant::now();
    let (text, samples) = loop {
        let (text, samples) = scrape(admin).await;
        if sample(&samples, "streamgate_control_election_held", &[]) == Some(1.0) {
            break (text, samples);
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the election was never held:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let calls = "streamgate_control_grpc_requests_total";
    let svc = "streamgate.control.v1.PolicyService";
    for (method, code, n) in [
        ("Apply", "OK", 1.0),
        ("List", "UNAUTHENTICATED", 3.0),
        ("List", "OK", 1.0),
        ("Get", "NOT_FOUND", 1.0),
    ] {
        let m = format!("{svc}/{method}");
        assert_eq!(
            sample(&samples, calls, &[("method", &m), ("code", code)]),
            Some(n),
            "{m} {code}:\n{text}"
        );
    }
    assert_eq!(
        sample(
            &samples,
            calls,
            &[("method", "unknown"), ("code", "UNIMPLEMENTED")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &samples,
            calls,
            &[("method", "unknown"), ("code", "UNAUTHENTICATED")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &samples,
            calls,
            &[("method", &format!("{svc}/Get")), ("code", "OK")]
        ),
        None,
        "no call that did not happen is counted"
    );
    assert_eq!(
        sample(
            &samples,
            "streamgate_control_grpc_request_duration_seconds_count",
            &[("method", &format!("{svc}/List"))]
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(&samples, "streamgate_control_audit_entries_total", &[]),
        Some(2.0),
        "the apply and the submit wrote one audit entry each"
    );
    assert_eq!(
        sample(&samples, "streamgate_control_jobs", &[("state", "queued")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&samples, "streamgate_control_jobs", &[("state", "done")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&samples, "streamgate_control_objects", &[("kind", "jobs")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "streamgate_control_objects",
            &[("kind", "policies")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "streamgate_control_store_up", &[]),
        Some(1.0)
    );
    assert!(
        sample(
            &samples,
            "streamgate_control_store_operation_duration_seconds_count",
            &[("operation", "txn")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&samples, "streamgate_control_store_revision", &[]).is_some_and(|r| r >= 1.0),
        "{text}"
    );
    // Every label value is one of a fixed set: no path a client chose appears.
    for (name, labels, _) in &samples {
        if let Some(m) = labels.get("method") {
            assert!(
                m == "unknown" || m.contains('/'),
                "{name} has method label {m}"
            );
        }
    }
    promtool_check(&text);
}

/// `/readyz` follows the store: 200 while etcd answers, 503 once it is killed, while
/// `/healthz` stays 200 (the process is up) and `/metrics` still answers with
/// `streamgate_control_store_up 0`.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_when_the_store_is_unreachable() {
    let mut etcd = streamgate_store::testkit::start_etcd();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let (port, admin) = (free_port(), free_port());
    let cfg = dir.path().join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nstore = \"etcd\"\netcd_endpoints = [\"{}\"]\nadmin_token_file = \"{}\"\n",
            etcd.endpoint,
            dir.path().join("admin-token").display()
        ),
    )
    .unwrap();
    let _proc = start(&cfg, port);
    let get = |path: &'static str| async move {
        reqwest::get(format!("http://127.0.0.1:{admin}{path}"))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(get("/readyz").await, 200, "etcd answers");
    etcd.stop();
    let t0 = std::time::Instant::now();
    while get("/readyz").await != 503 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "/readyz still 200 with etcd down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(get("/healthz").await, 200, "the process is still up");
    let (text, samples) = scrape(admin).await;
    assert_eq!(
        sample(&samples, "streamgate_control_store_up", &[]),
        Some(0.0),
        "{text}"
    );
}
