//! Python test peers from the test virtualenv (`scripts/setup.sh` makes it), shared by the
//! edge's and the binary's integration tests.
#![allow(dead_code)]

/// The test virtualenv's Python, checked to import `module`. Fails loudly when missing.
pub fn venv_python(module: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("STREAMGATE_VENV").map_or_else(
        || std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/streamgate-venv"),
        std::path::PathBuf::from,
    );
    let py = venv.join("bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{module} is not installed in {}: run ./scripts/setup.sh",
        venv.display()
    );
    py
}

/// Runs a client script from `tests/clients` with `input` as JSON on stdin; parses its stdout.
pub fn run_client(module: &str, script: &str, input: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new(venv_python(module))
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
