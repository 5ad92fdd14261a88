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
