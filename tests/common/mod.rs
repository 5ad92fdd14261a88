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

/// Runs `cmd` and returns its output; panics with its stderr unless it succeeded.
pub fn output_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits until `check` holds, trying every 50 ms; fails the test naming `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_every(timeout, std::time::Duration::from_millis(50), what, check).await;
}

/// [`eventually`], trying every `every` (for waits whose length a test reports); returns
/// how long it took.
pub async fn eventually_every<F, Fut>(
    timeout: std::time::Duration,
    every: std::time::Duration,
    what: &str,
    mut check: F,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let t0 = std::time::Instant::now();
    while !check().await {
        assert!(t0.elapsed() < timeout, "not within {timeout:?}: {what}");
        tokio::time::sleep(every).await;
    }
    t0.elapsed()
}

/// Waits until the edge's admin port says ready (200 on `/readyz`).
pub async fn wait_ready(admin: u16, timeout: std::time::Duration) {
    let c = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{admin}/readyz");
    eventually(timeout, "the edge was ready", || async {
        c.get(&url).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Every URI an HLS playlist references: media lines and `URI="..."` attributes.
pub fn hls_uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            out.push(line.to_owned());
        } else if let Some(i) = line.find("URI=\"") {
            let rest = &line[i + 5..];
            out.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    out
}

/// `rel` resolved against the directory of `base`.
pub fn resolve(base: &str, rel: &str) -> String {
    format!("{}/{rel}", &base[..base.rfind('/').unwrap()])
}

/// `streamgate dev` on `data` with the HTTP, TLS, admin and control ports.
pub fn dev_command(
    data: &std::path::Path,
    [http, tls, admin, control]: [u16; 4],
) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"));
    c.args(["dev", "--data-dir"])
        .arg(data)
        .args([
            "--http-port",
            &http.to_string(),
            "--tls-port",
            &tls.to_string(),
        ])
        .args(["--admin-port", &admin.to_string()])
        .args(["--control-port", &control.to_string()])
        // Its own ingest and admin ports, so dev tests running side by side do not collide
        // on 8090, 9101 or 9102 (the printed admin URLs say which).
        .args(["--ingest-port", &free_port().to_string()])
        .args(["--control-admin-port", &free_port().to_string()])
        .args(["--farm-admin-port", &free_port().to_string()])
        .env("STREAMGATE_LOG", "warn");
    c
}

/// Spawns `cmd` with its stdout piped (stderr inherited) and returns it with the lines
/// it prints, read by a thread as they come.
pub fn spawn_with_lines(
    cmd: &mut std::process::Command,
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("the command starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (Proc(child), rx)
}

/// The three admin URLs `dev` prints after its player URLs, read from its output lines:
/// `("edge:", url)`, `("control plane:", url)`, `("farm:", url)`, in that order.
pub fn dev_admin_urls(lines: &std::sync::mpsc::Receiver<String>) -> Vec<(&'static str, String)> {
    let mut admins = Vec::new();
    while admins.len() < 3 {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("dev printed its admin ports");
        for what in ["edge:", "control plane:", "farm:"] {
            if let Some(url) = line.trim().strip_prefix(what) {
                admins.push((what, url.trim().to_owned()));
            }
        }
    }
    admins
}

#[path = "../../dataplane/tests/support/clients.rs"]
mod clients;
#[allow(unused_imports)]
pub use clients::{run_client, venv_python};

/// Sums the lines of the Prometheus text an admin port serves that start with `prefix` (a
/// metric name and optional labels).
pub async fn metric_sum(admin: u16, prefix: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
