//! `streamgate ctl` as an operator uses it, against a real `streamgate control` process:
//! human and JSON output, versions, diffs, conflicts, refusals and exit codes.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Proc, free_port, spawn_listening};
use serde_json::Value;

const TOKEN: &str = "ops:operator-token-0123456789";

struct Ctl {
    endpoint: String,
    token_file: std::path::PathBuf,
    dir: tempfile::TempDir,
    _control: Proc,
}

impl Ctl {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("admin-tokens");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let port = free_port();
        let cfg = dir.path().join("control.toml");
        std::fs::write(
            &cfg,
            format!(
                "[control]\nadmin_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:{port}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
                dir.path().join("state").display(),
                token_file.display()
            ),
        )
        .unwrap();
        let control = spawn_listening(&["control", "--config"], &cfg, port, "control plane");
        // The operator's own token file holds only the token.
        let mine = dir.path().join("my-token");
        std::fs::write(&mine, "operator-token-0123456789\n").unwrap();
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            token_file: mine,
            dir,
            _control: control,
        }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// Runs `streamgate ctl <args>` with the endpoint and token set.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .arg("ctl")
            .args(["--endpoint", &self.endpoint, "--token-file"])
            .arg(&self.token_file)
            .args(args)
            .env_remove("STREAMGATE_TOKEN")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "ctl {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-o", "json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

const POLICY: &str = "id: viewers\ndescription: paying viewers\nrule:\n  jwt: {issuer: https://auth.example, audience: streamgate}\n";

#[test]
fn policies_apply_list_get_diff_delete() {
    let c = Ctl::start();
    let f = c.file("viewers.yaml", POLICY);
    let out = c.ok(&["policy", "apply", "-f", &f]);
    assert!(out.starts_with("policy viewers created (version "), "{out}");
    let list = c.json(&["policy", "list"]);
    assert_eq!(list[0]["id"], "viewers");
    assert_eq!(list[0]["document"]["rule"]["jwt"]["audience"], "streamgate");
    let v1 = list[0]["version"].as_i64().unwrap();
    let human = c.ok(&["policy", "list"]);
    assert!(human.lines().next().unwrap().starts_with("ID"), "{human}");
    assert!(human.contains("paying viewers"), "{human}");

    // Equal: exit 0 and "no changes". Changed: exit 1 and the changed line.
    let out = c.run(&["policy", "diff", "-f", &f]);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("no changes"));
    let f2 = c.file(
        "viewers2.yaml",
        &POLICY.replace("streamgate", "streamgate-premium"),
    );
    let out = c.run(&["policy", "diff", "-f", &f2]);
    assert_eq!(code(&out), 1);
    let d = text(&out.stdout);
    assert!(d.contains("-      \"audience\": \"streamgate\""), "{d}");
    assert!(
        d.contains("+      \"audience\": \"streamgate-premium\""),
        "{d}"
    );

    // Update reads the current version first; a stale explicit version is a conflict.
    let out = c.ok(&["policy", "apply", "-f", &f2]);
    assert!(out.contains("updated"), "{out}");
    let got = c.json(&["policy", "get", "viewers"]);
    assert!(got["version"].as_i64().unwrap() > v1);
    assert_eq!(
        got["document"]["rule"]["jwt"]["audience"],
        "streamgate-premium"
    );
    let stale = c.run(&[
        "policy",
        "apply",
        "-f",
        &f,
        "--expected-version",
        &v1.to_string(),
    ]);
    assert_eq!(code(&stale), 1);
    let err = text(&stale.stderr);
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("version conflict"),
        "{err}"
    );
    assert_eq!(
        c.json(&["policy", "get", "viewers"])["document"]["rule"]["jwt"]["audience"],
        "streamgate-premium",
        "the stale apply changed nothing"
    );

    // An invalid file: every error with its path, exit 64, nothing sent.
    let bad = c.file(
        "bad.yaml",
        "id: Bad Id\nrule:\n  any_of:\n    - ip: {allow: [nope]}\n    - jwt: {audience: 3}\n",
    );
    let out = c.run(&["policy", "apply", "-f", &bad]);
    assert_eq!(code(&out), 64);
    let err = text(&out.stderr);
    for path in [
        "id",
        "rule.any_of[0].ip.allow[0]",
        "rule.any_of[1].jwt.audience",
    ] {
        assert!(err.contains(path), "{path} missing in {err}");
    }

    // A bound policy cannot be deleted; unbound it can.
    c.ok(&["asset", "register", "demo", "--policy", "viewers"]);
    let out = c.run(&["policy", "delete", "viewers"]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("demo"), "{}", text(&out.stderr));
    c.ok(&["asset", "bind", "demo", ""]);
    assert_eq!(
        c.ok(&["policy", "delete", "viewers"]).trim(),
        "policy viewers deleted"
    );
    assert_eq!(c.json(&["policy", "list"]), Value::Array(vec![]));
}

#[test]
fn assets_keys_purges_audit_and_edges() {
    let c = Ctl::start();
    let f = c.file("viewers.yaml", POLICY);
    c.ok(&["policy", "apply", "-f", &f]);
    let a = c.json(&[
        "asset",
        "register",
        "demo",
        "--policy",
        "viewers",
        "--description",
        "the demo",
    ]);
    assert_eq!(a["id"], "demo");
    assert_eq!(a["policy"], "viewers");
    assert_eq!(a["description"], "the demo");
    let missing = c.run(&["asset", "register", "other", "--policy", "nope"]);
    assert_eq!(code(&missing), 1);
    assert!(
        text(&missing.stderr).contains("no policy"),
        "{}",
        text(&missing.stderr)
    );
    let list = c.json(&["asset", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Keys: a public JWK made by `ctl token mint --public-jwk`.
    let pem = c.dir.path().join("k.pem");
    streamgate_control::token::SigningKey::generate_ed25519(&pem, "k1").unwrap();
    let jwk = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["ctl", "token", "mint", "--key"])
        .arg(&pem)
        .args(["--kid", "k1", "--public-jwk"])
        .output()
        .unwrap();
    let jwk_file = c.file("k1.json", &text(&jwk.stdout));
    let added = c.json(&["key", "add", "-f", &jwk_file]);
    assert_eq!(added["kid"], "k1");
    assert_eq!(added["jwk"]["alg"], "EdDSA");
    let secret = c.run(&[
        "key",
        "add",
        "--jwk",
        r#"{"kid":"h","alg":"HS256","k":"c2VjcmV0"}"#,
    ]);
    assert_eq!(code(&secret), 64, "secrets by value are refused locally");
    let retired = c.json(&["key", "retire", "k1", "--overlap", "1h"]);
    assert!(
        retired["retire_at"].as_str().unwrap().ends_with('Z'),
        "{retired}"
    );
    let keys = c.ok(&["key", "list"]);
    assert!(keys.contains("retires "), "{keys}");

    let p = c.json(&["purge", "--asset", "demo"]);
    assert_eq!(p["seq"], 1);
    let bad = c.run(&["purge", "--prefix", "/etc/"]);
    assert_eq!(code(&bad), 1);
    assert!(text(&bad.stderr).contains("INVALID_ARGUMENT"));

    let log = c.json(&["audit"]);
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "policy.apply",
            "asset.register",
            "key.add",
            "key.retire",
            "purge"
        ]
    );
    assert!(log.as_array().unwrap().iter().all(|e| e["actor"] == "ops"));
    let human = c.ok(&["audit", "--after", &log[3]["seq"].to_string()]);
    assert!(
        human.contains("purge") && !human.contains("key.add"),
        "{human}"
    );

    let edges = c.json(&["edges"]);
    assert!(edges["store_revision"].as_i64().unwrap() > 0);
    assert_eq!(edges["edges"], Value::Array(vec![]));
}

#[test]
fn refusals_and_unreachable_endpoints_have_their_exit_codes() {
    let c = Ctl::start();
    // No token: UNAUTHENTICATED, with a hint.
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["ctl", "--endpoint", &c.endpoint, "policy", "list"])
        .env_remove("STREAMGATE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("UNAUTHENTICATED") && err.contains("--token"),
        "{err}"
    );
    // A wrong token.
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["ctl", "--endpoint", &c.endpoint, "policy", "list"])
        .env("STREAMGATE_TOKEN", "not-the-token-0123456789")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    // Nobody listening: 69, quickly.
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([
            "ctl",
            "--endpoint",
            &format!("http://127.0.0.1:{}", free_port()),
            "policy",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 69, "{}", text(&out.stderr));
    assert!(t0.elapsed() < Duration::from_secs(10));
    // A missing file is a local error.
    let out = c.run(&["policy", "apply", "-f", "/nonexistent.yaml"]);
    assert_eq!(code(&out), 64);
    // Not found.
    let out = c.run(&["policy", "get", "nope"]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("NOT_FOUND"));
}

/// A CA, and certificates it signed, written as PEM files into `dir`.
fn pki(dir: &std::path::Path) -> (String, String, String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["operator".into()]);
    (
        write("ca.pem", ca_cert.pem()),
        write("server.pem", server_cert),
        write("server.key", server_key),
        write("client.pem", client_cert),
        write("client.key", client_key),
    )
}

#[test]
fn the_api_over_mtls_needs_the_ca_a_client_certificate_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, server_cert, server_key, client_cert, client_key) = pki(d);
    // A client certificate from another CA must be refused.
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    let (other_ca, _, _, stranger_cert, stranger_key) = pki(&other);
    std::fs::write(d.join("admin-tokens"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let cfg = d.join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nadmin_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:{port}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\n\
             admin_token_file = \"{}\"\ntls_cert = \"{server_cert}\"\ntls_key = \"{server_key}\"\nclient_ca = \"{ca}\"\n",
            d.join("state").display(),
            d.join("admin-tokens").display()
        ),
    )
    .unwrap();
    let _control = spawn_listening(&["control", "--config"], &cfg, port, "control plane");
    let ctl = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["ctl", "--endpoint", &format!("https://127.0.0.1:{port}")])
            .args(extra)
            .args(["policy", "list", "-o", "json"])
            .env("STREAMGATE_TOKEN", "operator-token-0123456789")
            .output()
            .unwrap()
    };
    let ok = ctl(&["--ca", &ca, "--cert", &client_cert, "--key", &client_key]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(text(&ok.stdout).trim(), "[]");
    // No client certificate, a stranger's, the wrong CA, or plaintext: refused.
    for (why, args) in [
        ("no client certificate", vec!["--ca", &ca]),
        (
            "a certificate from another CA",
            vec![
                "--ca",
                &ca,
                "--cert",
                &stranger_cert,
                "--key",
                &stranger_key,
            ],
        ),
        (
            "a server the client does not trust",
            vec![
                "--ca",
                &other_ca,
                "--cert",
                &client_cert,
                "--key",
                &client_key,
            ],
        ),
    ] {
        let out = ctl(&args);
        assert!(!out.status.success(), "{why} was accepted");
    }
    let plain = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([
            "ctl",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "policy",
            "list",
        ])
        .env("STREAMGATE_TOKEN", "operator-token-0123456789")
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plaintext was accepted");
    // The certificate alone is not enough: the bearer token is still required.
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["ctl", "--endpoint", &format!("https://127.0.0.1:{port}")])
        .args([
            "--ca",
            &ca,
            "--cert",
            &client_cert,
            "--key",
            &client_key,
            "policy",
            "list",
        ])
        .env_remove("STREAMGATE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("UNAUTHENTICATED"));
    // https without --ca is a local error.
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([
            "ctl",
            "--endpoint",
            &format!("https://127.0.0.1:{port}"),
            "policy",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 64);
}
