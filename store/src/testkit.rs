//! Real etcd processes for tests (Debian's `etcd-server`, started on free loopback ports),
//! which tests can stop, freeze and start again on the same data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A single-node etcd. Dropping it kills the process and removes its data.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    /// The client URL, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    /// Its output, kept for the message when it fails to start.
    log: PathBuf,
    started: bool,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts a single-node etcd; panics loudly when it is not installed.
pub fn start_etcd() -> Etcd {
    let mut etcd = Etcd {
        child: None,
        endpoint: String::new(),
        client_port: free_port(),
        peer_port: free_port(),
        dir: tempfile::tempdir().expect("a temporary directory"),
        log: PathBuf::new(),
        started: false,
    };
    etcd.log = etcd.dir.path().with_extension("etcd.log");
    etcd.endpoint = format!("http://127.0.0.1:{}", etcd.client_port);
    etcd.start();
    etcd
}

impl Etcd {
    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Starts the process (again, on the same data and ports) and waits until it listens.
    /// On the first start, a port taken by another test between picking and binding is
    /// retried on new ports.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        for _ in 0..3 {
            match self.try_start() {
                Ok(()) => {
                    self.started = true;
                    return;
                }
                Err(why) if !self.started => {
                    eprintln!("etcd did not start ({why}); retrying on new ports");
                    self.client_port = free_port();
                    self.peer_port = free_port();
                    self.endpoint = format!("http://127.0.0.1:{}", self.client_port);
                }
                Err(why) => panic!("etcd did not start again: {why}"),
            }
        }
        panic!("etcd did not start three times");
    }

    fn try_start(&mut self) -> Result<(), String> {
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(&self.log).expect("a log file");
        let mut child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path())
            .args([
                "--listen-client-urls",
                &self.endpoint,
                "--advertise-client-urls",
                &self.endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("etcd is not installed ({e}): run ./scripts/setup.sh"));
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                return Err(format!("it exited with {status}: {}", tail.join(" | ")));
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("it did not listen within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process; the data stays for [`Etcd::start`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}
