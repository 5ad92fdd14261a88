//! The access log (`[edge.access_log]`): one JSON line per request, written by a thread of
//! its own so that a slow disk never holds a request up.
//!
//! A line holds the time, the method, the asset and object (the path: **never the query**,
//! where tokens travel, and no header, where bearer tokens and cookies do), the status, the
//! body bytes, the cache status, the refusal's reason, the protocol, the time the pipeline
//! took, and the client address cut to `ipv4_prefix`/`ipv6_prefix`. Lines are handed over
//! through a bounded queue; when the writer falls behind, lines are dropped and counted in
//! `streamgate_edge_access_log_dropped_total` rather than slowing requests.

use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::mpsc::{SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, SystemTime};

use crate::config::AccessLogConfig;

/// Lines queued at most before they are dropped (a second and a half at 40,000 req/s).
const QUEUE: usize = 65_536;
/// How often the writer drains the queue and flushes.
const POLL: Duration = Duration::from_millis(25);

/// One request, as the access log writes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// `GET`, `HEAD`, ...
    pub(crate) method: &'a str,
    /// The asset, for object paths.
    pub(crate) asset: Option<&'a str>,
    /// The request path, without its query.
    pub(crate) path: &'a str,
    /// The response status.
    pub(crate) status: u16,
    /// Body bytes sent (or to be sent, for a streamed body).
    pub(crate) bytes: u64,
    /// `HIT`, `MISS`, `STALE`, `BYPASS` or `NONE`.
    pub(crate) cache: &'static str,
    /// The refusal's or failure's reason, if any.
    pub(crate) reason: Option<&'static str>,
    /// `h1`, `h2` or `h3`.
    pub(crate) proto: &'static str,
    /// The client's address (cut to the configured prefix when written).
    pub(crate) client: Option<IpAddr>,
    /// Seconds from the request's arrival at the pipeline to its response headers.
    pub(crate) seconds: f64,
}

/// Cuts `ip` to its first `v4` or `v6` bits.
pub(crate) fn truncate(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    let ip = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v => v,
    };
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(v4.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// The access log.
pub(crate) struct AccessLog {
    tx: SyncSender<String>,
    dropped: prometheus::IntCounter,
    v4: u8,
    v6: u8,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Opens the log of `cfg` (which has a path) and starts its writer.
    pub(crate) fn open(
        cfg: &AccessLogConfig,
        registry: &prometheus::Registry,
    ) -> Result<Self, String> {
        let path = cfg.path.clone().ok_or("edge.access_log.path is not set")?;
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("edge.access_log.path {}: {e}", path.display()))?,
            )
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
                // Polls rather than blocks: a request queuing its line never has to wake
                // this thread (no futex call per request).
                loop {
                    std::thread::sleep(POLL);
                    loop {
                        match rx.try_recv() {
                            Ok(line) => {
                                if w.write_all(line.as_bytes()).is_err() {
                                    tracing::warn!("access log write failed");
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                let _ = w.flush();
                                return;
                            }
                        }
                    }
                    let _ = w.flush();
                }
            })
            .map_err(|e| format!("access log writer: {e}"))?;
        let dropped = prometheus::IntCounter::new(
            "streamgate_edge_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(dropped.clone()));
        Ok(Self {
            tx,
            dropped,
            v4: cfg.ipv4_prefix,
            v6: cfg.ipv6_prefix,
        })
    }

    /// Queues the line of `e`: written by hand into one buffer (no map, one allocation).
    pub(crate) fn record(&self, e: &Entry<'_>, now: SystemTime) {
        let mut s = String::with_capacity(160 + e.path.len());
        s.push_str("{\"time\":\"");
        let _ = write!(s, "{}", humantime::format_rfc3339_millis(now));
        let _ = write!(s, "\",\"method\":");
        json_str(&mut s, e.method);
        if let Some(a) = e.asset {
            s.push_str(",\"asset\":");
            json_str(&mut s, a);
        }
        s.push_str(",\"path\":");
        json_str(&mut s, e.path);
        let _ = write!(
            s,
            ",\"status\":{},\"bytes\":{},\"cache\":\"{}\",\"proto\":\"{}\",\"duration_ms\":{:.3}",
            e.status,
            e.bytes,
            e.cache,
            e.proto,
            e.seconds * 1e3
        );
        if let Some(r) = e.reason {
            s.push_str(",\"reason\":");
            json_str(&mut s, r);
        }
        if let Some(ip) = e.client {
            let _ = write!(s, ",\"client\":\"{}\"", truncate(ip, self.v4, self.v6));
        }
        s.push_str("}\n");
        if self.tx.try_send(s).is_err() {
            self.dropped.inc();
        }
    }
}

/// Appends `v` as a JSON string (quotes, backslashes and control characters escaped).
fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
    }

    #[test]
    fn addresses_are_cut_to_their_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(truncate(ip("203.0.113.77"), 24, 48), ip("203.0.113.0"));
        assert_eq!(truncate(ip("203.0.113.77"), 32, 48), ip("203.0.113.77"));
        assert_eq!(truncate(ip("203.0.113.77"), 0, 0), ip("0.0.0.0"));
        assert_eq!(
            truncate(ip("2001:db8:1:2:3::9"), 24, 48),
            ip("2001:db8:1::")
        );
        assert_eq!(truncate(ip("::ffff:10.1.2.3"), 16, 48), ip("10.1.0.0"));
    }
}
