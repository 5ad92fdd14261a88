//! A viewer's HTTP connections, on the same hyper (HTTP/1.1, h2) and h3/quinn clients as
//! `load proto`: HTTP/1.1 keeps a small pool per viewer (a browser opens several), h2 and h3
//! one multiplexed connection per viewer. A link throttle paces body reads, so a slow
//! link is real TCP (or QUIC) back-pressure on the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::proto::{IoStream, Proto, target, udp_socket};
use crate::tls::client_config;

type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;
type H3 = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// At most this many HTTP/1.1 connections per viewer (video, audio, playlists).
const H1_POOL: usize = 4;
/// Error bodies are read up to this size for the edge's JSON reason.
const MAX_ERROR_BODY: usize = 16 * 1024;
/// Manifests are read up to this size.
const MAX_MANIFEST: usize = 16 * 1024 * 1024;

/// Where the viewers connect, shared by all of them.
pub(crate) struct Endpoint {
    proto: Proto,
    addr: SocketAddr,
    sni: String,
    tls: Option<tokio_rustls::TlsConnector>,
    quic: Option<(quinn::Endpoint, quinn::ClientConfig)>,
}

impl Endpoint {
    /// Resolves `url`'s host and prepares TLS (and a QUIC endpoint for h3).
    pub(crate) fn new(url: &Uri, proto: Proto, server_name: Option<&str>) -> Result<Self, String> {
        let (addr, host, tls) = target(url).map_err(|e| e.to_string())?;
        let sni = server_name.map_or(host, str::to_owned);
        let mut quic = None;
        let tls_connector = match (proto, tls) {
            (Proto::H3, false) => return Err("HTTP/3 needs an https URL".into()),
            (Proto::H3, true) => {
                let mut cfg = client_config(&[b"h3"], true)?;
                cfg.enable_early_data = false;
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
                    .map_err(|e| e.to_string())?;
                let mut client = quinn::ClientConfig::new(Arc::new(crypto));
                let mut t = quinn::TransportConfig::default();
                t.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("valid")));
                client.transport_config(Arc::new(t));
                let bind: SocketAddr = if addr.is_ipv6() {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                }
                .parse()
                .expect("valid");
                let socket = udp_socket(bind).map_err(|e| e.to_string())?;
                let ep = quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    None,
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
                .map_err(|e| e.to_string())?;
                quic = Some((ep, client));
                None
            }
            (_, true) => {
                let alpn: &[&[u8]] = if proto == Proto::H2 {
                    &[b"h2"]
                } else {
                    &[b"http/1.1"]
                };
                Some(tokio_rustls::TlsConnector::from(Arc::new(client_config(
                    alpn, true,
                )?)))
            }
            (_, false) => None,
        };
        Ok(Self {
            proto,
            addr,
            sni,
            tls: tls_connector,
            quic,
        })
    }

    async fn stream(&self) -> Result<Box<dyn IoStream>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).ok();
        Ok(match &self.tls {
            Some(c) => {
                let name = rustls::pki_types::ServerName::try_from(self.sni.clone())
                    .map_err(|e| e.to_string())?;
                Box::new(
                    c.connect(name, tcp)
                        .await
                        .map_err(|e| format!("tls: {e}"))?,
                )
            }
            None => Box::new(tcp),
        })
    }

    async fn h1(&self) -> Result<H1, String> {
        let io = TokioIo::new(self.stream().await?);
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(send)
    }

    async fn h2(&self) -> Result<H2, String> {
        let io = TokioIo::new(self.stream().await?);
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(send)
    }

    async fn h3(&self) -> Result<H3, String> {
        let (ep, cfg) = self.quic.as_ref().ok_or("no QUIC endpoint")?;
        let conn = ep
            .connect_with(cfg.clone(), self.addr, &self.sni)
            .map_err(|e| format!("connect: {e}"))?
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = futures::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(send)
    }
}

/// Paces a viewer's downloads to a link rate, shared by its parallel requests.
#[derive(Debug)]
pub(crate) struct Link {
    bytes_per_sec: f64,
    busy_until: std::sync::Mutex<Instant>,
}

impl Link {
    pub(crate) fn new(kbps: u64) -> Self {
        Self {
            bytes_per_sec: kbps as f64 * 1000.0 / 8.0,
            busy_until: std::sync::Mutex::new(Instant::now()),
        }
    }

    async fn carry(&self, n: usize) {
        let until = {
            let mut b = self.busy_until.lock().expect("not poisoned");
            let start = (*b).max(Instant::now());
            *b = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
            *b
        };
        tokio::time::sleep_until(until.into()).await;
    }
}

/// One answer, read to the end.
#[derive(Debug)]
pub(crate) struct Got {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    /// The body, when asked for (or an error body, for its reason).
    pub(crate) body: Vec<u8>,
    pub(crate) bytes: u64,
    pub(crate) first_byte: Instant,
}

/// One viewer's connections.
pub(crate) struct Conns {
    ep: Arc<Endpoint>,
    h1: tokio::sync::Mutex<Vec<H1>>,
    h1_open: std::sync::atomic::AtomicUsize,
    h1_free: tokio::sync::Notify,
    h2: tokio::sync::Mutex<Option<H2>>,
    h3: tokio::sync::Mutex<Option<H3>>,
}

impl Conns {
    pub(crate) fn new(ep: Arc<Endpoint>) -> Self {
        Self {
            ep,
            h1: tokio::sync::Mutex::new(Vec::new()),
            h1_open: 0.into(),
            h1_free: tokio::sync::Notify::new(),
            h2: tokio::sync::Mutex::new(None),
            h3: tokio::sync::Mutex::new(None),
        }
    }

    /// GETs `url` with `headers`, reads the whole body (keeping it when `keep_body`), paced
    /// by `link`.
    pub(crate) async fn get(
        &self,
        url: &Uri,
        headers: &[(String, String)],
        keep_body: bool,
        link: Option<&Link>,
    ) -> Result<Got, String> {
        let mut b = Request::get(url.clone());
        // h2 and h3 carry the authority in `:authority`; a second Host header is refused by
        // some servers (nginx answers 400).
        if self.ep.proto == Proto::H1
            && let Some(a) = url.authority()
        {
            b = b.header(http::header::HOST, a.as_str());
        }
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Empty::new()).map_err(|e| format!("request: {e}"))?;
        match self.ep.proto {
            Proto::H1 => self.get_h1(req, keep_body, link).await,
            Proto::H2 => {
                let mut send = {
                    let mut g = self.h2.lock().await;
                    match g.as_ref() {
                        Some(s) if !s.is_closed() => s.clone(),
                        _ => {
                            let s = self.ep.h2().await?;
                            *g = Some(s.clone());
                            s
                        }
                    }
                };
                send.ready().await.map_err(|e| format!("h2: {e}"))?;
                let resp = send
                    .send_request(req)
                    .await
                    .map_err(|e| format!("h2: {e}"))?;
                read_hyper(resp, keep_body, link).await
            }
            Proto::H3 => {
                let mut send = {
                    let mut g = self.h3.lock().await;
                    match g.as_ref() {
                        Some(s) => s.clone(),
                        None => {
                            let s = self.ep.h3().await?;
                            *g = Some(s.clone());
                            s
                        }
                    }
                };
                let r = get_h3(&mut send, req, keep_body, link).await;
                if r.is_err() {
                    // The connection may be gone: the next request opens a new one.
                    *self.h3.lock().await = None;
                }
                r
            }
        }
    }

    async fn get_h1(
        &self,
        req: Request<Empty<Bytes>>,
        keep_body: bool,
        link: Option<&Link>,
    ) -> Result<Got, String> {
        use std::sync::atomic::Ordering;
        let mut send = loop {
            if let Some(s) = self.h1.lock().await.pop() {
                if !s.is_closed() {
                    break s;
                }
                self.h1_open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            if self.h1_open.fetch_add(1, Ordering::Relaxed) < H1_POOL {
                match self.ep.h1().await {
                    Ok(s) => break s,
                    Err(e) => {
                        self.h1_open.fetch_sub(1, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            self.h1_open.fetch_sub(1, Ordering::Relaxed);
            self.h1_free.notified().await;
        };
        let r = async {
            send.ready().await.map_err(|e| format!("h1: {e}"))?;
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| format!("h1: {e}"))?;
            read_hyper(resp, keep_body, link).await
        }
        .await;
        if r.is_ok() && !send.is_closed() {
            self.h1.lock().await.push(send);
        } else {
            self.h1_open.fetch_sub(1, Ordering::Relaxed);
        }
        self.h1_free.notify_one();
        r
    }
}

fn keep(status: u16, keep_body: bool, have: usize) -> bool {
    if (200..300).contains(&status) {
        keep_body && have < MAX_MANIFEST
    } else {
        have < MAX_ERROR_BODY
    }
}

async fn read_hyper(
    resp: http::Response<hyper::body::Incoming>,
    keep_body: bool,
    link: Option<&Link>,
) -> Result<Got, String> {
    let first_byte = Instant::now();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = resp.into_body();
    let mut out = Vec::new();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            bytes += data.len() as u64;
            if keep(status, keep_body, out.len()) {
                out.extend_from_slice(&data);
            }
            if let Some(l) = link {
                l.carry(data.len()).await;
            }
        }
    }
    Ok(Got {
        status,
        location,
        body: out,
        bytes,
        first_byte,
    })
}

async fn get_h3(
    send: &mut H3,
    req: Request<Empty<Bytes>>,
    keep_body: bool,
    link: Option<&Link>,
) -> Result<Got, String> {
    let (parts, _) = req.into_parts();
    let mut stream = send
        .send_request(Request::from_parts(parts, ()))
        .await
        .map_err(|e| format!("h3: {e}"))?;
    stream.finish().await.map_err(|e| format!("h3: {e}"))?;
    let resp = stream
        .recv_response()
        .await
        .map_err(|e| format!("h3: {e}"))?;
    let first_byte = Instant::now();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut out = Vec::new();
    let mut bytes = 0u64;
    while let Some(mut chunk) = stream.recv_data().await.map_err(|e| format!("h3: {e}"))? {
        let n = chunk.remaining();
        bytes += n as u64;
        if keep(status, keep_body, out.len()) {
            out.extend_from_slice(chunk.chunk());
            // A chunk may hold several slices.
            let first = chunk.chunk().len();
            chunk.advance(first);
            while chunk.has_remaining() {
                out.extend_from_slice(chunk.chunk());
                let l = chunk.chunk().len();
                chunk.advance(l);
            }
        } else {
            chunk.advance(n);
        }
        if let Some(l) = link {
            l.carry(n).await;
        }
    }
    Ok(Got {
        status,
        location,
        body: out,
        bytes,
        first_byte,
    })
}
