//! Helpers shared by the binary's integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod chain;

use std::process::Child;

/// A child process that is killed when the test ends, pass or fail.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on loopback (released before use; collisions are unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `streamgate <args> <cfg>` (output to stderr, logs at warn) and waits until it
/// accepts TCP on `port`.
pub fn spawn_listening(args: &[&str], cfg: &std::path::Path, port: u16, what: &str) -> Proc {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(args)
        .arg(cfg)
        .env("STREAMGATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    proc
}

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
