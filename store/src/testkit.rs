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
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
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
    };
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
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
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
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("etcd is not installed ({e}): run ./scripts/setup.sh"));
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
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
