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

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_serves_and_keeps_policies_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let cfg = dir.path().join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nlisten = \"127.0.0.1:{port}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
            dir.path().join("state").display(),
            dir.path().join("admin-token").display()
        ),
    )
    .unwrap();
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
            "[control]\nlisten = \"x\"\nstore = \"zookeeper\"\nbogus = 1\ntls_cert = \"{}\"\ntls_key = \"/nonexistent.key\"\n",
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
    std::fs::write(
        &cfg,
        format!(
            "[control]\nlisten = \"127.0.0.1:{port}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
            dir.path().join("state").display(),
            dir.path().join("admin-token").display()
        ),
    )
    .unwrap();
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
        std::fs::write(
            &cfg,
            format!(
                "[control]\nlisten = \"127.0.0.1:{port}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
                dir.path().join("state").display(),
                dir.path().join("admin-token").display()
            ),
        )
        .unwrap();
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
