//! The binary's command line: `--check-config` validates, lists every error with its field
//! path, and exits with 64 (EX_USAGE); a good file passes.

use std::process::Command;

fn streamgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamgate"))
}

#[test]
fn check_config_lists_every_error_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[edge]\nhttp_listen = \"nowhere\"\nthreads = 0\ncolour = \"blue\"\n[edge.http3]\nsend_window = \"1KiB\"\n[origin]\nkind = \"http\"\n",
    )
    .unwrap();
    let out = streamgate()
        .args(["edge", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "edge.http_listen",
        "edge.threads",
        "edge.colour",
        "edge.http3.send_window",
        "origin.base_url",
    ] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }

    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "[edge\n").unwrap();
    let out = streamgate()
        .args(["edge", "--check-config", "--config"])
        .arg(&syntax)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config/edge.toml");
    let out = streamgate()
        .args(["edge", "--check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Environment overrides are validated too.
    let out = streamgate()
        .args(["edge", "--check-config", "--config", example])
        .env("STREAMGATE_EDGE__CACHE__MAX_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("edge.cache.max_bytes"));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[edge]\nhttp_listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\n[origin]\nroot = \"{}\"\n",
            dir.path().join("o").display()
        ),
    )
    .unwrap();
    let out = streamgate()
        .args(["edge", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains(&port.to_string()),
        "{err}"
    );
}

fn venv_python() -> std::path::PathBuf {
    let venv = std::env::var_os("STREAMGATE_VENV").map_or_else(
        || std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/streamgate-venv"),
        std::path::PathBuf::from,
    );
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "no test virtualenv at {}: run ./scripts/setup.sh",
        venv.display()
    );
    py
}

#[test]
fn ctl_mints_tokens_an_independent_library_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "openssl genpkey (scripts/setup.sh installs openssl)"
    );
    let out = streamgate()
        .args([
            "ctl",
            "token",
            "mint",
            "--kid",
            "k1",
            "--iss",
            "ops",
            "--aud",
            "streamgate",
        ])
        .args([
            "--scope",
            "demo",
            "--ttl",
            "10m",
            "--claim",
            "plan=\"premium\"",
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let pubkey = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    let check = "import jwt,sys\n\
        c = jwt.decode(sys.argv[1], sys.argv[2], algorithms=['EdDSA'], audience='streamgate', issuer='ops')\n\
        assert c['sg_scope'] == ['demo'] and c['plan'] == 'premium', c\n\
        assert jwt.get_unverified_header(sys.argv[1])['kid'] == 'k1'\n";
    let v = Command::new(venv_python())
        .args([
            "-c",
            check,
            &token,
            &String::from_utf8(pubkey.stdout).unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "PyJWT refused the token: {}",
        String::from_utf8_lossy(&v.stderr)
    );

    let out = streamgate()
        .args([
            "ctl",
            "token",
            "mint",
            "--kid",
            "k1",
            "--public-jwk",
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    let jwk: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (jwk["alg"].as_str(), jwk["crv"].as_str()),
        (Some("EdDSA"), Some("Ed25519"))
    );
}

#[test]
fn ctl_policy_check_lists_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/examples/subscribers.yaml"
    );
    assert!(
        streamgate()
            .args(["ctl", "policy", "check", "-f", good])
            .status()
            .unwrap()
            .success()
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "id: Bad\nrule:\n  any_of:\n    - ip: {allow: [nope]}\n    - jwt: {audience: 3}\n",
    )
    .unwrap();
    let out = streamgate()
        .args(["ctl", "policy", "check", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for p in [
        "id",
        "rule.any_of[0].ip.allow[0]",
        "rule.any_of[1].jwt.audience",
    ] {
        assert!(err.contains(p), "{p} missing:\n{err}");
    }
    // With the chain registry, an nft condition on another chain is an error at its path.
    let nft = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/examples/nft-or-token.yaml"
    );
    let out = streamgate()
        .args([
            "ctl",
            "policy",
            "check",
            "-f",
            nft,
            "--chains",
            "eip155:1,eip155:137",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rule.any_of[3].nft.chain: solana:mainnet is not in the chain registry"),
        "{err}"
    );
    let all = "eip155:1,eip155:137,solana:mainnet";
    assert!(
        streamgate()
            .args(["ctl", "policy", "check", "-f", nft, "--chains", all])
            .status()
            .unwrap()
            .success()
    );
}
