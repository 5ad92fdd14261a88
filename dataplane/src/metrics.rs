//! Prometheus metrics of the edge. Label sets are resolved once at start, so recording a
//! request is a few atomic adds with no map lookup and no lock.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// The protocol a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x.
    H1,
    /// HTTP/2.
    H2,
    /// HTTP/3.
    H3,
}

impl Proto {
    const ALL: [Self; 3] = [Self::H1, Self::H2, Self::H3];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }
}

/// The `x-cache` outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh entry.
    Hit,
    /// Fetched from origin.
    Miss,
    /// Served from a stale entry because the origin failed.
    Stale,
    /// Streamed from origin without caching.
    Bypass,
    /// The cache was not consulted (errors, preflight, player page).
    None,
}

impl CacheStatus {
    const ALL: [Self; 5] = [Self::Hit, Self::Miss, Self::Stale, Self::Bypass, Self::None];

    /// Header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
            Self::None => "NONE",
        }
    }
}

/// Status codes the edge produces; anything else is counted as `other`.
const STATUSES: [u16; 16] = [
    200, 204, 206, 304, 400, 401, 403, 404, 405, 416, 429, 500, 502, 503, 504, 0,
];

fn status_index(code: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == code)
        .unwrap_or(STATUSES.len() - 1)
}

/// Result of one origin read, for `streamgate_edge_origin_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginResult {
    /// The object was read.
    Ok,
    /// The origin has no such object.
    NotFound,
    /// The origin failed.
    Error,
    /// The origin timed out.
    Timeout,
}

/// All edge metrics.
pub struct Metrics {
    registry: Registry,
    requests: Vec<IntCounter>,
    bytes: Vec<IntCounter>,
    origin_reads: [IntCounter; 4],
    origin_latency: Histogram,
    /// Request latency to response headers, indexed by [`ObjectKind`] (manifest, segment, other).
    request_latency: [Histogram; 3],
    /// Bytes held by the cache, updated on scrape.
    pub cache_bytes: IntGauge,
    /// Entries held by the cache, updated on scrape.
    pub cache_entries: IntGauge,
    /// Origin fills in flight, updated on scrape.
    pub inflight_fills: IntGauge,
    /// QUIC transport figures.
    pub quic: QuicMetrics,
    gate_allowed: IntCounter,
    gate_denied: Vec<(&'static str, IntCounter)>,
    errors: IntCounterVec,
    /// The policy snapshot revision in force (absent while the edge is open).
    pub policy_revision: IntGauge,
    /// State watch: 1 while the edge is connected to its store and watching, else 0.
    pub state_connected: IntGauge,
    /// 1 while `/readyz` answers ready (the listeners run and, on a guarded edge, a policy
    /// snapshot is in force), else 0; set on each scrape.
    pub ready: IntGauge,
    /// Full reloads of the state prefix (start, compaction, reconnect after a gap).
    pub state_reloads: IntCounter,
    /// Watch failures (store unreachable, stream broken, compaction).
    pub state_watch_errors: IntCounter,
    /// Stored documents that did not validate and were left out (their assets fail closed).
    pub state_invalid_docs: IntCounter,
    /// Purges applied.
    pub purges: IntCounter,
    /// Cache entries dropped by purges.
    pub purged_entries: IntCounter,
    /// Seconds from a revision's commit to its install here, as seen by this edge's clock.
    pub state_apply_seconds: Histogram,
}

/// Buckets of the origin and request latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

use crate::error::GATE_REASONS;
use crate::request::ObjectKind;

/// Transport metrics of the HTTP/3 listener. Path figures are sampled when a connection closes.
pub struct QuicMetrics {
    /// Connections accepted (handshake completed).
    pub connections: IntCounter,
    /// Connections open now.
    pub open: IntGauge,
    /// Handshakes that failed or timed out.
    pub handshake_failures: IntCounter,
    /// Connection attempts refused because `max_connections` were open.
    pub refused: IntCounter,
    /// Smoothed RTT of each connection at close.
    pub rtt: Histogram,
    /// Packets sent.
    pub sent_packets: IntCounter,
    /// Packets declared lost.
    pub lost_packets: IntCounter,
    /// Congestion events (loss or ECN) seen.
    pub congestion_events: IntCounter,
}

impl Metrics {
    /// Registers every metric; `origin` is the origin kind label.
    pub fn new(origin: &'static str) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_requests_total",
                "Requests served, by protocol, status and cache result",
            ),
            &["proto", "status", "cache"],
        )
        .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_response_body_bytes_total",
                "Body bytes sent, by protocol and cache result",
            ),
            &["proto", "cache"],
        )
        .expect("valid metric");
        let origin_reads = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_origin_requests_total",
                "Origin reads, by origin kind and result",
            ),
            &["origin", "result"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "streamgate_edge_origin_latency_seconds",
                "Time to read a whole object from origin",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["origin"],
        )
        .expect("valid metric");
        let request_latency = HistogramVec::new(
            HistogramOpts::new(
                "streamgate_edge_request_duration_seconds",
                "Time from a request's arrival to its response headers, by object kind",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["kind"],
        )
        .expect("valid metric");
        let cache_bytes = IntGauge::new(
            "streamgate_edge_cache_bytes",
            "Bytes held by the object cache",
        )
        .expect("valid metric");
        let cache_entries =
            IntGauge::new("streamgate_edge_cache_entries", "Objects held by the cache")
                .expect("valid metric");
        let inflight_fills = IntGauge::new(
            "streamgate_edge_cache_inflight_fills",
            "Origin fills in flight",
        )
        .expect("valid metric");

        let c = |n: &str, h: &str| IntCounter::new(n, h).expect("valid metric");
        let quic = QuicMetrics {
            connections: c(
                "streamgate_edge_h3_connections_total",
                "HTTP/3 connections accepted",
            ),
            open: IntGauge::new(
                "streamgate_edge_h3_open_connections",
                "HTTP/3 connections open",
            )
            .expect("valid metric"),
            handshake_failures: c(
                "streamgate_edge_h3_handshake_failures_total",
                "QUIC handshakes that failed",
            ),
            refused: c(
                "streamgate_edge_h3_refused_total",
                "QUIC connections refused at the connection limit",
            ),
            rtt: Histogram::with_opts(
                HistogramOpts::new(
                    "streamgate_edge_h3_rtt_seconds",
                    "Smoothed RTT of HTTP/3 connections, sampled at close",
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )
            .expect("valid metric"),
            sent_packets: c("streamgate_edge_h3_sent_packets_total", "QUIC packets sent"),
            lost_packets: c(
                "streamgate_edge_h3_lost_packets_total",
                "QUIC packets declared lost",
            ),
            congestion_events: c(
                "streamgate_edge_h3_congestion_events_total",
                "QUIC congestion events",
            ),
        };
        let decisions = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_gate_decisions_total",
                "Gate decisions, by result and reason",
            ),
            &["result", "reason"],
        )
        .expect("valid metric");
        let gate_allowed = decisions.with_label_values(&["allow", ""]);
        let gate_denied = streamgate_policy::Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(GATE_REASONS)
            .map(|r| (r, decisions.with_label_values(&["deny", r])))
            .collect();
        let errors = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_errors_total",
                "Requests refused or failed, by class (client, gate, origin, chain, internal) and reason",
            ),
            &["class", "reason"],
        )
        .expect("valid metric");
        let policy_revision = IntGauge::new(
            "streamgate_edge_policy_revision",
            "Revision of the policy snapshot in force",
        )
        .expect("valid metric");
        let gauge = |n: &str, h: &str| IntGauge::new(n, h).expect("valid metric");
        let counter = |n: &str, h: &str| IntCounter::new(n, h).expect("valid metric");
        let state_connected = gauge(
            "streamgate_edge_state_connected",
            "1 while the edge watches its state store, 0 while it serves its last known state",
        );
        let ready = gauge(
            "streamgate_edge_ready",
            "1 while /readyz answers ready (listeners up and, on a guarded edge, a policy snapshot in force), else 0",
        );
        let state_reloads = counter(
            "streamgate_edge_state_reloads_total",
            "Full reloads of the state prefix",
        );
        let state_watch_errors = counter(
            "streamgate_edge_state_watch_errors_total",
            "State watch failures (unreachable, broken stream, compaction)",
        );
        let state_invalid_docs = counter(
            "streamgate_edge_state_invalid_documents_total",
            "Stored documents left out because they did not validate",
        );
        let purges = counter("streamgate_edge_purges_total", "Purges applied");
        let purged_entries = counter(
            "streamgate_edge_purged_entries_total",
            "Cache entries dropped by purges",
        );
        let state_apply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "streamgate_edge_state_apply_seconds",
                "Time to build and install a new state revision",
            )
            .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5]),
        )
        .expect("valid metric");
        let mut req = Vec::new();
        let mut by = Vec::new();
        for p in Proto::ALL {
            for s in STATUSES {
                let code = if s == 0 {
                    "other".to_owned()
                } else {
                    s.to_string()
                };
                for c in CacheStatus::ALL {
                    req.push(requests.with_label_values(&[p.as_str(), &code, c.as_str()]));
                }
            }
            for c in CacheStatus::ALL {
                by.push(bytes.with_label_values(&[p.as_str(), c.as_str()]));
            }
        }
        let o = |r| origin_reads.with_label_values(&[origin, r]);
        let origin_reads_arr = [o("ok"), o("not_found"), o("error"), o("timeout")];
        let origin_latency = latency.with_label_values(&[origin]);
        let k = |kind| request_latency.with_label_values(&[kind]);
        let request_latency_arr = [k("manifest"), k("segment"), k("other")];
        for c in [
            Box::new(requests) as Box<dyn prometheus::core::Collector>,
            Box::new(bytes),
            Box::new(origin_reads),
            Box::new(latency),
            Box::new(request_latency),
            Box::new(cache_bytes.clone()),
            Box::new(cache_entries.clone()),
            Box::new(inflight_fills.clone()),
            Box::new(quic.connections.clone()),
            Box::new(quic.open.clone()),
            Box::new(quic.handshake_failures.clone()),
            Box::new(quic.refused.clone()),
            Box::new(quic.rtt.clone()),
            Box::new(quic.sent_packets.clone()),
            Box::new(quic.lost_packets.clone()),
            Box::new(quic.congestion_events.clone()),
            Box::new(decisions),
            Box::new(errors.clone()),
            Box::new(policy_revision.clone()),
            Box::new(state_connected.clone()),
            Box::new(ready.clone()),
            Box::new(state_reloads.clone()),
            Box::new(state_watch_errors.clone()),
            Box::new(state_invalid_docs.clone()),
            Box::new(purges.clone()),
            Box::new(purged_entries.clone()),
            Box::new(state_apply_seconds.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Self {
            registry,
            requests: req,
            bytes: by,
            origin_reads: origin_reads_arr,
            origin_latency,
            request_latency: request_latency_arr,
            cache_bytes,
            cache_entries,
            inflight_fills,
            quic,
            gate_allowed,
            gate_denied,
            errors,
            policy_revision,
            state_connected,
            ready,
            state_reloads,
            state_watch_errors,
            state_invalid_docs,
            purges,
            purged_entries,
            state_apply_seconds,
        }
    }

    /// Counts an allow decision of a guarded gate.
    pub fn gate_allow(&self) {
        self.gate_allowed.inc();
    }

    /// Counts a refusal by its reason (the refusal path only, so a short scan is fine).
    pub fn gate_deny(&self, reason: &str) {
        if let Some((_, c)) = self.gate_denied.iter().find(|(r, _)| *r == reason) {
            c.inc();
        }
    }

    /// Counts a refused or failed request by its class and reason (the error path only:
    /// the label lookup hashes; both labels come from a fixed set of static strings).
    pub(crate) fn error(&self, class: &'static str, reason: &'static str) {
        self.errors.with_label_values(&[class, reason]).inc();
    }

    /// Counts one response.
    pub fn record(&self, proto: Proto, status: u16, cache: CacheStatus, body_bytes: u64) {
        let p = proto as usize;
        let c = cache as usize;
        let idx = (p * STATUSES.len() + status_index(status)) * CacheStatus::ALL.len() + c;
        self.requests[idx].inc();
        if body_bytes > 0 {
            self.bytes[p * CacheStatus::ALL.len() + c].inc_by(body_bytes);
        }
    }

    /// Records how long a request took to its response headers.
    pub fn observe_request(&self, kind: ObjectKind, seconds: f64) {
        let i = match kind {
            ObjectKind::Manifest => 0,
            ObjectKind::Segment => 1,
            ObjectKind::Other => 2,
        };
        self.request_latency[i].observe(seconds);
    }

    /// Counts one origin read and its latency.
    pub fn origin(&self, result: OriginResult, seconds: f64) {
        self.origin_reads[result as usize].inc();
        self.origin_latency.observe(seconds);
    }

    /// Origin reads with result `ok` so far (used by tests and the load tool).
    pub fn origin_reads_ok(&self) -> u64 {
        self.origin_reads[OriginResult::Ok as usize].get()
    }

    /// The registry, for components that register their own metrics (the chain clients).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        buf
    }
}
