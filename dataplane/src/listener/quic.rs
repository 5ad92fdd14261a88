//! The HTTP/3 front: QUIC (quinn) and HTTP/3 (h3) on UDP, on the TLS port. It is a second
//! door into the same house: every request goes to the shared [`Pipeline`], exactly as
//! from the Pingora front, and the response is written back as it is.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{EndpointConfig, IdleTimeout, TransportConfig, VarInt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::body::Body;
use crate::config::Http3Config;
use crate::metrics::{Metrics, Proto};
use crate::pipeline::{Conn, Pipeline};
use crate::tls::CertStore;

type H3Conn = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// Binds the UDP socket with the configured buffer sizes. Done when the edge is built, so
/// that a taken port is reported before anything starts.
pub(crate) fn bind_udp(addr: SocketAddr, buffer: u64) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(false).ok();
    }
    let size = usize::try_from(buffer).unwrap_or(usize::MAX);
    // The kernel may clamp these (net.core.rmem_max); that is not an error.
    s.set_send_buffer_size(size).ok();
    s.set_recv_buffer_size(size).ok();
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Builds quinn's server configuration: TLS 1.3 with ALPN `h3`, no 0-RTT, and the
/// transport limits and windows from `cfg`.
pub(crate) fn server_config(
    certs: Arc<CertStore>,
    cfg: &Http3Config,
) -> Result<quinn::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // 0-RTT stays off: replayed early data must never authorise anything.
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;

    let mut t = TransportConfig::default();
    let var = |v: u64| VarInt::from_u64(v).unwrap_or(VarInt::MAX);
    t.max_idle_timeout(Some(
        IdleTimeout::try_from(cfg.idle_timeout).map_err(|e| e.to_string())?,
    ))
    .keep_alive_interval(Some(cfg.keep_alive))
    .max_concurrent_bidi_streams(VarInt::from_u32(cfg.max_concurrent_streams))
    // HTTP/3 needs three unidirectional streams per side (control, QPACK encoder, decoder).
    .max_concurrent_uni_streams(VarInt::from_u32(16))
    .stream_receive_window(var(cfg.stream_receive_window))
    .receive_window(var(cfg.receive_window))
    .send_window(cfg.send_window)
    .enable_segmentation_offload(cfg.gso);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(cfg.max_udp_payload);
    t.mtu_discovery_config(Some(mtu));
    if cfg.ack_frequency {
        t.ack_frequency_config(Some(quinn::AckFrequencyConfig::default()));
    }
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(t));
    Ok(server)
}

/// The HTTP/3 listener, run by Pingora as a background service so that it shares the
/// server's lifecycle and shutdown signal.
pub(crate) struct QuicFront {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) cfg: Http3Config,
    pub(crate) server: quinn::ServerConfig,
    pub(crate) socket: Mutex<Option<UdpSocket>>,
    pub(crate) grace: Duration,
}

#[async_trait]
impl BackgroundService for QuicFront {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(socket) = self.socket.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut endpoint_cfg = EndpointConfig::default();
        // Accept datagrams as large as we probe for.
        let _ = endpoint_cfg.max_udp_payload_size(self.cfg.max_udp_payload.max(1472));
        let endpoint = match quinn::Endpoint::new(
            endpoint_cfg,
            Some(self.server.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        ) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "HTTP/3 listener failed to start");
                return;
            }
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    if endpoint.open_connections() > self.cfg.max_connections {
                        self.metrics.quic.refused.inc();
                        incoming.refuse();
                        continue;
                    }
                    let pipeline = Arc::clone(&self.pipeline);
                    let metrics = Arc::clone(&self.metrics);
                    let cfg = self.cfg.clone();
                    conns.spawn(connection(incoming, pipeline, metrics, cfg, stop_rx.clone()));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        // Graceful shutdown: refuse new connections, send GOAWAY on open ones, let their
        // requests finish until the deadline, then close whatever is left.
        endpoint.set_server_config(None);
        stop_tx.send_replace(true);
        let deadline = tokio::time::sleep(self.grace);
        tokio::pin!(deadline);
        while !conns.is_empty() {
            tokio::select! {
                _ = conns.join_next() => {}
                _ = &mut deadline => break,
            }
        }
        conns.abort_all();
        endpoint.close(VarInt::from_u32(0), b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
}

/// Serves one QUIC connection: accepts request streams until the client goes away or a
/// shutdown has drained them.
async fn connection(
    incoming: quinn::Incoming,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    cfg: Http3Config,
    mut stop: watch::Receiver<bool>,
) {
    let conn = match incoming.accept() {
        Ok(connecting) => match connecting.await {
            Ok(c) => c,
            Err(e) => {
                metrics.quic.handshake_failures.inc();
                tracing::debug!(error = %e, "QUIC handshake failed");
                return;
            }
        },
        Err(e) => {
            metrics.quic.handshake_failures.inc();
            tracing::debug!(error = %e, "QUIC connection refused");
            return;
        }
    };
    metrics.quic.connections.inc();
    metrics.quic.open.inc();
    let client = Some(conn.remote_address().ip());
    let mut h3: H3Conn = match h3::server::builder()
        .max_field_section_size(cfg.max_header_bytes)
        .build(h3_quinn::Connection::new(conn.clone()))
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 setup failed");
            close_stats(&conn, &metrics);
            return;
        }
    };
    let mut draining = *stop.borrow();
    if draining {
        let _ = h3.shutdown(0).await;
    }
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let pipeline = Arc::clone(&pipeline);
                    let timeout = cfg.request_header_timeout;
                    tokio::spawn(async move {
                        // A stream that never sends its headers is dropped after the timeout.
                        match tokio::time::timeout(timeout, resolver.resolve_request()).await {
                            Ok(Ok((req, stream))) => respond(req, stream, &pipeline, client).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "bad HTTP/3 request"),
                            Err(_) => tracing::debug!("HTTP/3 request headers timed out"),
                        }
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/3 connection ended");
                    break;
                }
            },
            _ = stop.changed(), if !draining => {
                draining = true;
                // GOAWAY: requests already accepted finish; accept() then returns None.
                let _ = h3.shutdown(0).await;
            }
        }
    }
    close_stats(&conn, &metrics);
}

fn close_stats(conn: &quinn::Connection, metrics: &Metrics) {
    let s = conn.stats();
    let q = &metrics.quic;
    q.open.dec();
    q.rtt.observe(s.path.rtt.as_secs_f64());
    q.sent_packets.inc_by(s.path.sent_packets);
    q.lost_packets.inc_by(s.path.lost_packets);
    q.congestion_events.inc_by(s.path.congestion_events);
}

type ReqStream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Runs one request through the shared pipeline and writes the response.
async fn respond(
    req: http::Request<()>,
    mut stream: ReqStream,
    pipeline: &Pipeline,
    client: Option<std::net::IpAddr>,
) {
    let started = Instant::now();
    let (parts, ()) = req.into_parts();
    let conn = Conn {
        proto: Proto::H3,
        tls: true,
        client,
    };
    let resp = if pipeline.wants_body(&parts) {
        let mut buf = bytes::BytesMut::new();
        let mut body = Some(());
        loop {
            match stream.recv_data().await {
                Ok(Some(mut chunk)) => {
                    use bytes::Buf;
                    if buf.len() + chunk.remaining() > crate::auth::MAX_BODY_BYTES {
                        body = None;
                        break;
                    }
                    while chunk.has_remaining() {
                        let c = chunk.chunk();
                        buf.extend_from_slice(c);
                        let n = c.len();
                        chunk.advance(n);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/3 request body failed");
                    body = None;
                    break;
                }
            }
        }
        pipeline
            .handle_with_body(&parts, &conn, body.map(|()| buf.freeze()))
            .await
    } else {
        pipeline.handle(&parts, &conn).await
    };
    let (head, body) = resp.into_parts();
    if let Err(e) = stream
        .send_response(http::Response::from_parts(head, ()))
        .await
    {
        tracing::debug!(error = %e, "HTTP/3 response header failed");
        return;
    }
    let sent = match body {
        Body::Empty => Ok(()),
        Body::Full(bytes) => stream.send_data(bytes).await,
        Body::Stream(mut chunks) => loop {
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = stream.send_data(chunk).await {
                        break Err(e);
                    }
                }
                Some(Err(e)) => {
                    // Headers are out: reset the stream so the client sees a broken body.
                    tracing::warn!(error = %e, "origin stream failed mid-body");
                    stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                    return;
                }
                None => break Ok(()),
            }
        },
    };
    match sent {
        Ok(()) => {
            if let Err(e) = stream.finish().await {
                tracing::debug!(error = %e, "HTTP/3 finish failed");
            }
        }
        Err(e) => tracing::debug!(error = %e, elapsed = ?started.elapsed(), "HTTP/3 body failed"),
    }
}
