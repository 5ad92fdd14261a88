//! The protocol benchmark: `connections` x `streams` requests in flight against one URL for
//! a fixed time, over HTTP/1.1, HTTP/2 or HTTP/3, every body read to the end.
//!
//! All three protocols use one worker shape: a worker loop sends a request, reads the whole
//! body, records the latency, and repeats. HTTP/2 and HTTP/3 multiplex `streams` workers on
//! each of `connections` connections; HTTP/1.1 gives each worker its own connection.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hdrhistogram::Histogram;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;

use crate::tls::client_config;

/// The protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// HTTP/1.1 (TLS with ALPN http/1.1 for https URLs).
    H1,
    /// HTTP/2 (ALPN h2 for https, prior knowledge for http).
    H2,
    /// HTTP/3 over QUIC (https only).
    H3,
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct ProtoBench {
    /// The URL to fetch.
    pub url: Uri,
    /// Protocol.
    pub proto: Proto,
    /// Connections (HTTP/1.1: connections x streams connections are opened).
    pub connections: usize,
    /// Requests in flight per connection.
    pub streams: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Accept any server certificate.
    pub insecure: bool,
    /// TLS server name (SNI); defaults to the URL's host.
    pub server_name: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Print a progress line every second to stderr.
    pub progress: bool,
    /// HTTP/3: upper bound of MTU discovery (UDP payload bytes).
    pub max_udp_payload: u16,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProtoReport {
    /// The protocol, as negotiated and checked.
    pub proto: Proto,
    /// Requests completed in the measured window.
    pub requests: u64,
    /// Body bytes received in the measured window.
    pub bytes: u64,
    /// Failed requests (transport errors or non-2xx), over the whole run.
    pub errors: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Body megabytes (10^6) per second.
    pub mbps: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// (percentile, ms) points for plots.
    pub distribution: Vec<(f64, f64)>,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The URL cannot be used.
    #[error("bad URL: {0}")]
    Url(String),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// A connection could not be made.
    #[error("connect: {0}")]
    Connect(String),
    /// The server did not speak the protocol asked for.
    #[error("negotiated {got} instead of {want:?}")]
    Protocol {
        /// Asked for.
        want: Proto,
        /// Got.
        got: String,
    },
}

struct Shared {
    start_measure: Instant,
    end: Instant,
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn measuring(&self, t: Instant) -> bool {
        t >= self.start_measure
    }
}

pub(crate) fn target(url: &Uri) -> Result<(SocketAddr, String, bool), LoadError> {
    let host = url.host().ok_or_else(|| LoadError::Url("no host".into()))?;
    let tls = match url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(LoadError::Url("scheme must be http or https".into())),
    };
    let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = (host.trim_matches(|c| c == '[' || c == ']'), port)
        .to_socket_addrs()
        .map_err(|e| LoadError::Url(e.to_string()))?
        .next()
        .ok_or_else(|| LoadError::Url("host resolves to nothing".into()))?;
    Ok((addr, host.to_owned(), tls))
}

fn request(b: &ProtoBench) -> Request<Empty<Bytes>> {
    let mut r = Request::get(b.url.clone());
    if let Some(a) = b.url.authority() {
        r = r.header(http::header::HOST, a.as_str());
    }
    for (k, v) in &b.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    r.body(Empty::new()).expect("valid request")
}

type Hist = Histogram<u64>;

fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

fn record(shared: &Shared, hist: &mut Hist, t0: Instant, bytes: u64, ok: bool) {
    let now = Instant::now();
    if !ok {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if shared.measuring(t0) && now <= shared.end {
        let _ = hist.record((now - t0).as_micros().max(1) as u64);
        shared.requests.fetch_add(1, Ordering::Relaxed);
        shared.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Runs one benchmark. Fails if the protocol cannot be negotiated; request failures are
/// counted in the report.
pub async fn run(b: &ProtoBench) -> Result<ProtoReport, LoadError> {
    let (addr, host, tls) = target(&b.url)?;
    let sni = b.server_name.clone().unwrap_or(host);
    let now = Instant::now();
    let shared = Arc::new(Shared {
        start_measure: now + b.warmup,
        end: now + b.warmup + b.duration,
        requests: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut workers = tokio::task::JoinSet::new();
    match b.proto {
        Proto::H1 | Proto::H2 => {
            let connector = if tls {
                let alpn: &[&[u8]] = if b.proto == Proto::H2 {
                    &[b"h2"]
                } else {
                    &[b"http/1.1"]
                };
                let cfg = client_config(alpn, b.insecure).map_err(LoadError::Tls)?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
            } else {
                None
            };
            let conns = if b.proto == Proto::H1 {
                b.connections * b.streams
            } else {
                b.connections
            };
            let per_conn = if b.proto == Proto::H1 { 1 } else { b.streams };
            for _ in 0..conns {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| LoadError::Connect(e.to_string()))?;
                tcp.set_nodelay(true).ok();
                let io: Box<dyn IoStream> = match &connector {
                    Some(c) => {
                        let name = rustls::pki_types::ServerName::try_from(sni.clone())
                            .map_err(|e| LoadError::Tls(e.to_string()))?;
                        let s = c
                            .connect(name, tcp)
                            .await
                            .map_err(|e| LoadError::Connect(e.to_string()))?;
                        let got = s
                            .get_ref()
                            .1
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned());
                        let want = if b.proto == Proto::H2 {
                            "h2"
                        } else {
                            "http/1.1"
                        };
                        if got.as_deref() != Some(want) {
                            return Err(LoadError::Protocol {
                                want: b.proto,
                                got: got.unwrap_or_else(|| "no ALPN".into()),
                            });
                        }
                        Box::new(s)
                    }
                    None => Box::new(tcp),
                };
                let io = TokioIo::new(io);
                if b.proto == Proto::H2 {
                    let (send, conn) =
                        hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                            .await
                            .map_err(|e| LoadError::Connect(e.to_string()))?;
                    tokio::spawn(conn);
                    for _ in 0..per_conn {
                        let (send, shared, b) = (send.clone(), Arc::clone(&shared), b.clone());
                        workers.spawn(async move { hyper_worker(send, false, &shared, &b).await });
                    }
                } else {
                    let (send, conn) = hyper::client::conn::http1::handshake(io)
                        .await
                        .map_err(|e| LoadError::Connect(e.to_string()))?;
                    tokio::spawn(conn);
                    let (shared, b) = (Arc::clone(&shared), b.clone());
                    workers.spawn(async move { hyper_worker(send, true, &shared, &b).await });
                }
            }
        }
        Proto::H3 => {
            if !tls {
                return Err(LoadError::Url("HTTP/3 needs an https URL".into()));
            }
            let mut cfg = client_config(&[b"h3"], b.insecure).map_err(LoadError::Tls)?;
            cfg.enable_early_data = false;
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
                .map_err(|e| LoadError::Tls(e.to_string()))?;
            let mut client = quinn::ClientConfig::new(Arc::new(crypto));
            let mut t = quinn::TransportConfig::default();
            t.stream_receive_window(quinn::VarInt::from_u32(16 << 20))
                .receive_window(quinn::VarInt::from_u32(64 << 20))
                .max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("valid")));
            let mut mtu = quinn::MtuDiscoveryConfig::default();
            mtu.upper_bound(b.max_udp_payload);
            t.mtu_discovery_config(Some(mtu));
            client.transport_config(Arc::new(t));
            let bind: SocketAddr = if addr.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            }
            .parse()
            .expect("valid");
            for _ in 0..b.connections {
                let socket = udp_socket(bind).map_err(|e| LoadError::Connect(e.to_string()))?;
                let mut ecfg = quinn::EndpointConfig::default();
                let _ = ecfg.max_udp_payload_size(b.max_udp_payload.max(1472));
                let mut endpoint =
                    quinn::Endpoint::new(ecfg, None, socket, Arc::new(quinn::TokioRuntime))
                        .map_err(|e| LoadError::Connect(e.to_string()))?;
                endpoint.set_default_client_config(client.clone());
                let conn = endpoint
                    .connect(addr, &sni)
                    .map_err(|e| LoadError::Connect(e.to_string()))?
                    .await
                    .map_err(|e| LoadError::Connect(e.to_string()))?;
                let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
                    .await
                    .map_err(|e| LoadError::Connect(e.to_string()))?;
                tokio::spawn(async move {
                    let _keep = endpoint;
                    let _ = futures::future::poll_fn(|cx| driver.poll_close(cx)).await;
                });
                for _ in 0..b.streams {
                    let (send, shared, b) = (send.clone(), Arc::clone(&shared), b.clone());
                    workers.spawn(async move { h3_worker(send, &shared, &b).await });
                }
            }
        }
    }
    if b.progress {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while Instant::now() < shared.end {
                tick.tick().await;
                let phase = if Instant::now() < shared.start_measure {
                    "warm-up"
                } else {
                    "measuring"
                };
                eprintln!(
                    "  {phase}: {} requests, {} errors",
                    shared.requests.load(Ordering::Relaxed),
                    shared.errors.load(Ordering::Relaxed)
                );
            }
        });
    }
    let mut hist = new_hist();
    while let Some(h) = workers.join_next().await {
        if let Ok(h) = h {
            hist.add(&h).expect("same bounds");
        }
    }
    let secs = b.duration.as_secs_f64();
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let requests = shared.requests.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    let distribution = [
        0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
    ]
    .iter()
    .map(|&p| (p * 100.0, q(p)))
    .collect();
    Ok(ProtoReport {
        proto: b.proto,
        requests,
        bytes,
        errors: shared.errors.load(Ordering::Relaxed),
        seconds: secs,
        rps: requests as f64 / secs,
        mbps: bytes as f64 / secs / 1e6,
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        distribution,
    })
}

/// A client UDP socket with 4 MiB buffers: with the 208 KiB default, a fast server overflows
/// the client's receive queue and the run measures drops, not the server.
pub(crate) fn udp_socket(bind: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(4 << 20).ok();
    s.set_send_buffer_size(4 << 20).ok();
    s.bind(&bind.into())?;
    Ok(s.into())
}

pub(crate) trait IoStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> IoStream for T {}

async fn read_body(resp: http::Response<hyper::body::Incoming>) -> Option<u64> {
    if !resp.status().is_success() {
        return None;
    }
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            n += data.len() as u64;
        }
    }
    Some(n)
}

/// The two hyper senders, so one worker loop serves HTTP/1.1 and HTTP/2.
trait HyperSend: Send {
    fn ready(&mut self) -> impl Future<Output = Result<(), hyper::Error>> + Send;
    fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> impl Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send;
}

impl HyperSend for hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    fn ready(&mut self) -> impl Future<Output = Result<(), hyper::Error>> + Send {
        Self::ready(self)
    }
    fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> impl Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send
    {
        self.send_request(req)
    }
}

impl HyperSend for hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    fn ready(&mut self) -> impl Future<Output = Result<(), hyper::Error>> + Send {
        Self::ready(self)
    }
    fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> impl Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send
    {
        self.send_request(req)
    }
}

/// One HTTP/1.1 or HTTP/2 worker. An HTTP/1.1 connection is unusable after a failed
/// exchange, so that worker stops; an HTTP/2 stream failure leaves the connection usable.
async fn hyper_worker(
    mut send: impl HyperSend,
    stop_on_error: bool,
    shared: &Shared,
    b: &ProtoBench,
) -> Hist {
    let mut hist = new_hist();
    while Instant::now() < shared.end {
        if send.ready().await.is_err() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let t0 = Instant::now();
        let res = match send.send(request(b)).await {
            Ok(resp) => read_body(resp).await,
            Err(_) => None,
        };
        record(shared, &mut hist, t0, res.unwrap_or(0), res.is_some());
        if res.is_none() && stop_on_error {
            break;
        }
    }
    hist
}

async fn h3_worker(
    mut send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    shared: &Shared,
    b: &ProtoBench,
) -> Hist {
    let mut hist = new_hist();
    while Instant::now() < shared.end {
        let t0 = Instant::now();
        let res = async {
            let (parts, _) = request(b).into_parts();
            let mut stream = send
                .send_request(Request::from_parts(parts, ()))
                .await
                .ok()?;
            stream.finish().await.ok()?;
            let resp = stream.recv_response().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let mut n = 0u64;
            while let Some(mut chunk) = stream.recv_data().await.ok()? {
                let len = chunk.remaining();
                n += len as u64;
                chunk.advance(len);
            }
            Some(n)
        }
        .await;
        record(shared, &mut hist, t0, res.unwrap_or(0), res.is_some());
    }
    hist
}

/// `streamgate load proto`: benchmark one URL over one protocol.
#[derive(Debug, Clone, clap::Args)]
pub struct ProtoArgs {
    /// The URL to fetch, e.g. https://127.0.0.1:8443/v/demo/video/720p/seg-00001.m4s
    pub url: String,
    /// Protocol: h1, h2 or h3.
    #[arg(long, value_enum, default_value_t = Proto::H2)]
    pub proto: Proto,
    /// Connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection (HTTP/1.1 opens connections x streams connections).
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// Measured time, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up time.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Accept any server certificate (self-signed test servers).
    #[arg(long)]
    pub insecure: bool,
    /// TLS server name to send (SNI).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Extra header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write a percentile plot (SVG) here.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// HTTP/3: upper bound of path MTU discovery, in UDP payload bytes.
    #[arg(long, default_value_t = 1452)]
    pub max_udp_payload: u16,
}

/// Runs [`ProtoArgs`] on its own runtime, prints a summary, writes JSON and SVG if asked.
pub fn run_cli(args: ProtoArgs) -> anyhow::Result<()> {
    let headers = args
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("header {h:?} is not `Name: value`"))
        })
        .collect::<anyhow::Result<_>>()?;
    let bench = ProtoBench {
        url: args.url.parse()?,
        proto: args.proto,
        connections: args.connections.max(1),
        streams: args.streams.max(1),
        duration: args.duration,
        warmup: args.warmup,
        insecure: args.insecure,
        server_name: args.server_name,
        headers,
        progress: !args.quiet,
        max_udp_payload: args.max_udp_payload,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&bench))?;
    println!(
        "{:?}: {} requests, {:.0} req/s, {:.1} MB/s, errors {}, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        report.proto,
        report.requests,
        report.rps,
        report.mbps,
        report.errors,
        report.p50_ms,
        report.p90_ms,
        report.p99_ms,
        report.p999_ms,
        report.max_ms
    );
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(p) = &args.svg {
        let label = format!("{:?}", report.proto).to_lowercase();
        std::fs::write(
            p,
            crate::plot::percentile_svg(&[(label, report.distribution.clone())]),
        )?;
    }
    if report.errors > 0 {
        anyhow::bail!("{} requests failed", report.errors);
    }
    Ok(())
}
