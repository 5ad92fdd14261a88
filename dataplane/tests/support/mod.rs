//! Test harness: a real edge (Pingora) on free loopback ports, and a real HTTP origin
//! (hyper) that counts reads and can be slowed down or taken away.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use streamgate_edge::{Edge, EdgeConfig, Shutdown};
use tokio::task::JoinSet;

/// A free TCP port on loopback. The port is released before use; collisions are unlikely.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running edge.
pub struct TestEdge {
    pub base: String,
    pub admin: String,
    pub http: SocketAddr,
    pub tls: SocketAddr,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestEdge {
    /// Starts an edge with `cfg`, overriding its listen addresses with free loopback ports.
    pub fn start(mut cfg: EdgeConfig) -> Self {
        cfg.shutdown_grace = Duration::ZERO;
        Self::start_with_grace(cfg)
    }

    /// Like [`TestEdge::start`], keeping `cfg.shutdown_grace`.
    pub fn start_with_grace(mut cfg: EdgeConfig) -> Self {
        cfg.http_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        cfg.tls_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        cfg.admin_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        cfg.threads = 2;
        let (http, tls, admin) = (cfg.http_listen, cfg.tls_listen, cfg.admin_listen);
        let edge = Edge::build(cfg).expect("edge builds");
        let shutdown = Shutdown::new();
        let s2 = shutdown.clone();
        let thread = std::thread::spawn(move || edge.run(&s2).expect("edge runs"));
        // Wait until both listeners accept.
        for addr in [http, admin] {
            let t0 = std::time::Instant::now();
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "edge did not listen on {addr}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Self {
            base: format!("http://{http}"),
            admin: format!("http://{admin}"),
            http,
            tls,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The value of a metric line that starts with `prefix` (first match), from `/metrics`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A real HTTP/1.1 origin on loopback serving objects from memory.
pub struct TestOrigin {
    pub addr: SocketAddr,
    objects: Arc<Mutex<HashMap<String, Bytes>>>,
    reads: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    trickle: Arc<Mutex<Option<Trickle>>>,
    tasks: JoinSet<()>,
}

/// How a trickling origin sends bodies: `chunk` bytes every `every`, and, with
/// `die_after`, a broken connection once that many bytes are out.
#[derive(Clone, Copy, Debug)]
pub struct Trickle {
    pub chunk: usize,
    pub every: Duration,
    pub die_after: Option<usize>,
}

type OriginBody = BoxBody<Bytes, std::io::Error>;

fn trickled(body: Bytes, t: Trickle) -> OriginBody {
    let chunks = futures::stream::unfold(0usize, move |at| {
        let body = body.clone();
        async move {
            if at >= body.len() {
                return None;
            }
            if t.die_after.is_some_and(|d| at >= d) {
                let e = std::io::Error::other("origin dies mid-body");
                return Some((Err(e), usize::MAX));
            }
            if at > 0 {
                tokio::time::sleep(t.every).await;
            }
            let end = (at + t.chunk).min(body.len());
            Some((Ok(hyper::body::Frame::data(body.slice(at..end))), end))
        }
    });
    StreamBody::new(chunks).boxed()
}

impl TestOrigin {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let objects: Arc<Mutex<HashMap<String, Bytes>>> = Arc::default();
        let reads: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let total = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let trickle: Arc<Mutex<Option<Trickle>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let (o, r, t, d, tr) = (
            objects.clone(),
            reads.clone(),
            total.clone(),
            delay_ms.clone(),
            trickle.clone(),
        );
        let conns: Arc<Mutex<JoinSet<()>>> = Arc::default();
        tasks.spawn(async move {
            let _keep = conns.clone();
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => return,
                };
                let (o, r, t, d, tr) = (o.clone(), r.clone(), t.clone(), d.clone(), tr.clone());
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (o, r, t, d) = (o.clone(), r.clone(), t.clone(), d.clone());
                    let trickle = *tr.lock().unwrap();
                    async move {
                        let path = req.uri().path().trim_start_matches('/').to_owned();
                        t.fetch_add(1, Ordering::SeqCst);
                        *r.lock().unwrap().entry(path.clone()).or_default() += 1;
                        let delay = d.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let body = o.lock().unwrap().get(&path).cloned();
                        let full = |b: Bytes| -> OriginBody {
                            Full::new(b).map_err(|never| match never {}).boxed()
                        };
                        let resp = match body {
                            Some(b) => Response::builder()
                                .header("content-length", b.len())
                                .body(match trickle {
                                    Some(t) => trickled(b, t),
                                    None => full(b),
                                })
                                .unwrap(),
                            None => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(full(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                conns.lock().unwrap().spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            objects,
            reads,
            total,
            delay_ms,
            trickle,
            tasks,
        }
    }

    /// Sends every later body in chunks (see [`Trickle`]); `None`: at once.
    pub fn set_trickle(&self, t: Option<Trickle>) {
        *self.trickle.lock().unwrap() = t;
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn put(&self, key: &str, body: impl Into<Bytes>) {
        self.objects
            .lock()
            .unwrap()
            .insert(key.to_owned(), body.into());
    }

    pub fn reads(&self, key: &str) -> usize {
        self.reads.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Takes the origin away: the listener and every open connection close.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Writes `body` at `dir/rel`, creating folders.
pub fn write(dir: &std::path::Path, rel: &str, body: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// An HTTP origin config pointing at `origin`, with header timeout `timeout`.
pub fn http_origin_cfg(origin: &TestOrigin, timeout: Duration) -> streamgate_origin::OriginConfig {
    streamgate_origin::OriginConfig::Http(streamgate_origin::HttpOrigin {
        base_url: origin.base_url(),
        timeout,
        connect_timeout: Duration::from_millis(500),
        pool_max_idle_per_host: 16,
        pool_idle_timeout: Duration::from_secs(30),
    })
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Sends `raw` as-is over a new TCP connection and returns the whole response text.
pub async fn raw_request(addr: SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

mod clients;
#[allow(unused_imports)]
pub use clients::{run_client, venv_python};

/// A TCP relay on loopback that a test can cut and restore, to disconnect a client from a
/// server that keeps running (an edge from etcd, for example).
pub struct TcpRelay {
    pub addr: SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<JoinSet<()>>>,
    _accept: JoinSet<()>,
}

impl TcpRelay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let mut accept = JoinSet::new();
        let (o, c) = (open.clone(), conns.clone());
        accept.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                c.lock().unwrap().spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Self {
            addr,
            open,
            conns,
            _accept: accept,
        }
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.conns.lock().unwrap().abort_all();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
