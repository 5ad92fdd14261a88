//! `[edge.http3]`: the HTTP/3 (QUIC) listener on the TLS port.

use std::time::Duration;

use super::reader::{self, Errors, Fields};

/// HTTP/3 (QUIC) listener settings. Every default is written here once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http3Config {
    /// Serve HTTP/3 on UDP `tls_listen` when TLS is configured.
    pub enabled: bool,
    /// `ma` of the `Alt-Svc` header sent on every TLS response over TCP.
    pub alt_svc_max_age: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive PING interval, so NATs keep the path open during player pauses.
    pub keep_alive: Duration,
    /// Concurrent request streams a client may open on one connection.
    pub max_concurrent_streams: u32,
    /// New connections beyond this many open ones are refused.
    pub max_connections: usize,
    /// Per-stream receive window (also the window a client gets for uploads).
    pub stream_receive_window: u64,
    /// Per-connection receive window.
    pub receive_window: u64,
    /// Per-connection send window: bytes in flight to one client, across streams.
    pub send_window: u64,
    /// UDP socket send and receive buffer size (SO_SNDBUF / SO_RCVBUF).
    pub socket_buffer: u64,
    /// Use generic segmentation offload where the kernel has it.
    pub gso: bool,
    /// Upper bound of path MTU discovery, as a UDP payload size. 1452 fits any Ethernet
    /// path; loopback and jumbo-frame networks gain from more (up to 65527). Probing above
    /// the real path MTU is safe: lost probes only stop the search.
    pub max_udp_payload: u16,
    /// Ask clients to acknowledge less often (the ACK frequency extension), which saves
    /// packets and CPU on both ends for large downloads.
    pub ack_frequency: bool,
    /// Largest request header section accepted; larger ones are refused.
    pub max_header_bytes: u64,
    /// Time a client gets to send its request headers after opening a stream.
    pub request_header_timeout: Duration,
}

impl Default for Http3Config {
    fn default() -> Self {
        Self {
            enabled: true,
            alt_svc_max_age: Duration::from_secs(86400),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            max_concurrent_streams: 256,
            max_connections: 10_000,
            stream_receive_window: 4 << 20,
            receive_window: 16 << 20,
            send_window: 16 << 20,
            socket_buffer: 4 << 20,
            gso: true,
            max_udp_payload: 1452,
            ack_frequency: false,
            max_header_bytes: 16 << 10,
            request_header_timeout: Duration::from_secs(10),
        }
    }
}

impl Http3Config {
    /// Reads `[edge.http3]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        use reader::*;
        let mut q = e.table(errs, "http3");
        let h = Self::default();
        let http3 = Self {
            enabled: q.get(errs, "enabled", h.enabled, boolean),
            alt_svc_max_age: q.get(errs, "alt_svc_max_age", h.alt_svc_max_age, duration),
            idle_timeout: q.get(errs, "idle_timeout", h.idle_timeout, duration),
            keep_alive: q.get(errs, "keep_alive", h.keep_alive, duration),
            max_concurrent_streams: q.get(
                errs,
                "max_concurrent_streams",
                u64::from(h.max_concurrent_streams),
                int_in(1, 65_536),
            ) as u32,
            max_connections: q.get(
                errs,
                "max_connections",
                h.max_connections as u64,
                int_in(1, 10_000_000),
            ) as usize,
            stream_receive_window: q.get(
                errs,
                "stream_receive_window",
                h.stream_receive_window,
                byte_size,
            ),
            receive_window: q.get(errs, "receive_window", h.receive_window, byte_size),
            send_window: q.get(errs, "send_window", h.send_window, byte_size),
            socket_buffer: q.get(errs, "socket_buffer", h.socket_buffer, byte_size),
            gso: q.get(errs, "gso", h.gso, boolean),
            max_udp_payload: q.get(
                errs,
                "max_udp_payload",
                u64::from(h.max_udp_payload),
                int_in(1200, 65527),
            ) as u16,
            ack_frequency: q.get(errs, "ack_frequency", h.ack_frequency, boolean),
            max_header_bytes: q.get(errs, "max_header_bytes", h.max_header_bytes, byte_size),
            request_header_timeout: q.get(
                errs,
                "request_header_timeout",
                h.request_header_timeout,
                duration,
            ),
        };
        // QUIC varints cap flow-control windows at 2^62 - 1; keep them sane and non-zero.
        for (name, v) in [
            ("stream_receive_window", http3.stream_receive_window),
            ("receive_window", http3.receive_window),
            ("send_window", http3.send_window),
        ] {
            if !(16 << 10..=1 << 32).contains(&v) {
                errs.push(
                    format!("edge.http3.{name}"),
                    "must be between 16KiB and 4GiB",
                );
            }
        }
        // quinn sends up to 10 segments per GSO batch, and Linux refuses UDP sends over
        // 65507 bytes: larger payloads make every batch fail and throughput collapse.
        if http3.gso && u32::from(http3.max_udp_payload) * 10 > 65_507 {
            errs.push(
                "edge.http3.max_udp_payload",
                "must be at most 6550 while edge.http3.gso is on (10 segments per batch, 65507 bytes per send)",
            );
        }
        if http3.idle_timeout.is_zero() || http3.keep_alive >= http3.idle_timeout {
            errs.push(
                "edge.http3.keep_alive",
                "must be shorter than edge.http3.idle_timeout",
            );
        }
        q.finish(errs);
        http3
    }
}
