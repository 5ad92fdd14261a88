//! Real etcd processes for tests (Debian's `etcd-server`, started on free loopback ports),
//! which tests can stop, freeze and start again on the same data: a single node
//! ([`start_etcd`]), a node with TLS and client-certificate authentication
//! ([`start_etcd_with`]), or a cluster of several members ([`start_cluster`]). [`pki`]
//! makes the certificates; `etcdctl` (Debian's `etcd-client`) sets up users and roles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd process. Dropping it kills the process and removes its data.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    /// The client URL, `http://127.0.0.1:<port>` (`https://` with TLS).
    pub endpoint: String,
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster` for members of a cluster (`None`: a single node).
    initial_cluster: Option<String>,
    tls: Option<ServerTls>,
    dir: tempfile::TempDir,
    /// Its output, kept for the message when it fails to start.
    log: PathBuf,
    started: bool,
}

/// TLS for the client port: the server's certificate and key, and the CA whose client
/// certificates it requires (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server certificate (PEM file).
    pub cert: PathBuf,
    /// Its key (PEM file).
    pub key: PathBuf,
    /// The CA of the client certificates it accepts.
    pub client_ca: PathBuf,
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

fn member(name: &str, tls: Option<ServerTls>) -> Etcd {
    let mut etcd = Etcd {
        child: None,
        endpoint: String::new(),
        name: name.to_owned(),
        client_port: free_port(),
        peer_port: free_port(),
        initial_cluster: None,
        tls,
        dir: tempfile::tempdir().expect("a temporary directory"),
        log: PathBuf::new(),
        started: false,
    };
    etcd.log = etcd.dir.path().with_extension("etcd.log");
    etcd.set_endpoint();
    etcd
}

/// Starts a single-node etcd; panics loudly when it is not installed.
pub fn start_etcd() -> Etcd {
    let mut etcd = member("t", None);
    etcd.start();
    etcd
}

/// Starts a single-node etcd serving clients over TLS and requiring client certificates.
pub fn start_etcd_with(tls: ServerTls) -> Etcd {
    let mut etcd = member("t", Some(tls));
    etcd.start();
    etcd
}

impl Etcd {
    fn set_endpoint(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoint = format!("{scheme}://127.0.0.1:{}", self.client_port);
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The member's name in its cluster.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the process (again, on the same data and ports) and waits until it listens.
    /// On the first start of a single node, a port taken by another test between picking
    /// and binding is retried on new ports.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        for _ in 0..3 {
            match self.try_start() {
                Ok(()) => {
                    self.started = true;
                    return;
                }
                Err(why) if !self.started && self.initial_cluster.is_none() => {
                    eprintln!("etcd did not start ({why}); retrying on new ports");
                    self.client_port = free_port();
                    self.peer_port = free_port();
                    self.set_endpoint();
                }
                Err(why) => panic!("etcd {} did not start: {why}", self.name),
            }
        }
        panic!("etcd did not start three times");
    }

    fn spawn(&self) -> Child {
        let peer_url = self.peer_url();
        let log = std::fs::File::create(&self.log).expect("a log file");
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &self.name, "--data-dir"])
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
            ]);
        match &self.initial_cluster {
            Some(c) => cmd.args([
                "--initial-cluster",
                c,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "streamgate-test",
            ]),
            None => cmd.args(["--initial-cluster", &format!("{}={peer_url}", self.name)]),
        };
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.client_ca)
                .arg("--client-cert-auth");
        }
        cmd.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("etcd is not installed ({e}): run ./scripts/setup.sh"))
    }

    fn try_start(&mut self) -> Result<(), String> {
        let mut child = self.spawn();
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("it exited with {status}: {}", self.log_tail(5)));
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

    /// The last `n` lines etcd logged.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut tail: Vec<&str> = text.lines().rev().take(n).collect();
        tail.reverse();
        tail.join(" | ")
    }

    /// Kills the process (SIGKILL); the data stays for [`Etcd::start`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets open and answers nothing.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("etcd is running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Several etcd members forming one cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The members, in order.
    pub members: Vec<Etcd>,
}

/// Starts a cluster of `n` members on free ports and waits until it has a leader.
pub fn start_cluster(n: usize) -> Cluster {
    for attempt in 0..3 {
        let mut members: Vec<Etcd> = (0..n).map(|i| member(&format!("m{i}"), None)).collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = Some(initial.clone());
        }
        // Start them together: each waits for the others to elect a leader.
        let children: Vec<Child> = members.iter().map(Etcd::spawn).collect();
        for (m, c) in members.iter_mut().zip(children) {
            m.child = Some(c);
            m.started = true;
        }
        let mut cluster = Cluster { members };
        match cluster.wait_leader(Duration::from_secs(60)) {
            Ok(_) => return cluster,
            Err(why) => {
                eprintln!("etcd cluster did not form (attempt {attempt}): {why}");
                for m in &mut cluster.members {
                    eprintln!("  {}: {}", m.name, m.log_tail(3));
                    m.stop();
                }
            }
        }
    }
    panic!("an etcd cluster of {n} did not form three times");
}

impl Cluster {
    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// The index of the leader, as the running members report it.
    pub fn leader(&self) -> Option<usize> {
        let running: Vec<&Etcd> = self.members.iter().filter(|m| m.is_running()).collect();
        let eps: Vec<String> = running.iter().map(|m| m.endpoint.clone()).collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", eps.join(",")))
            .args(["--command-timeout=2s", "endpoint", "status", "-w", "json"])
            .output()
            .unwrap_or_else(|e| panic!("etcdctl is not installed ({e}): run ./scripts/setup.sh"));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let statuses = v.as_array()?;
        let leader = statuses
            .iter()
            .filter_map(|s| s["Status"]["leader"].as_u64())
            .find(|l| *l != 0)?;
        let endpoint = statuses
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))?["Endpoint"]
            .as_str()?
            .to_owned();
        self.members.iter().position(|m| m.endpoint == endpoint)
    }

    /// Waits until the running members agree on a leader; returns its index.
    pub fn wait_leader(&self, within: Duration) -> Result<usize, String> {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if t0.elapsed() > within {
                return Err(format!("no leader within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A CA and certificates it signed, as PEM files in a folder.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// A server certificate for `localhost` and `127.0.0.1`, and its key.
    pub server: (PathBuf, PathBuf),
    /// A client certificate (common name `client`), and its key.
    pub client: (PathBuf, PathBuf),
}

/// Makes a CA, a server certificate and a client certificate under `dir`.
pub fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).expect("a PKI folder");
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).expect("a PEM file");
        p
    };
    let ca_key = KeyPair::generate().expect("a key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (sc, sk) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "etcd");
    let (cc, ck) = leaf(vec!["client".into()], "client");
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server: (write("server.pem", sc), write("server.key", sk)),
        client: (write("client.pem", cc), write("client.key", ck)),
    }
}
