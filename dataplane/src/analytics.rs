//! QoE from CMCD (CTA-5004): what players say about their playback, aggregated per asset.
//!
//! Every allowed request that carries CMCD (the `CMCD` query parameter, or the `CMCD-*`
//! headers) is counted under its asset: the request, a starved buffer (`bs`), the measured
//! throughput (`mtp`) and, on video segments, the bitrate served (`br`). A playback
//! session is a CMCD `sid` on an asset. It *starts* at the edge that serves its first
//! manifest, and its *startup* is the time from that manifest request to the request of
//! its first media segment (the player's own startup adds that segment's download).
//!
//! Cardinality is bounded: at most `edge.analytics.max_assets` assets get their own label;
//! the rest share `_other`. Sessions are followed in a fixed table of
//! `edge.analytics.session_slots` words (8-way sets, one compare-and-swap per change, the
//! oldest entry of a set evicted first), so neither memory nor the metrics grow with the
//! audience. The hot path takes no lock: the asset map is read through an `ArcSwap`, and
//! the counters are Prometheus' atomics.
//!
//! Each edge also publishes its aggregates to `/streamgate/v1/analytics/<edge-id>` (one key
//! per edge, under a lease), which the control plane sums for `ctl analytics`.

// Public for the benchmarks and fuzz targets (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use serde_json::{Map, Value, json};

use crate::cmcd::{self, ObjectType};
use crate::config::AnalyticsConfig;
use crate::request::ObjectKind;

/// Where edges publish their aggregates: `<STORE_PREFIX><edge-id>`. Outside the state
/// prefix `/streamgate/v1/` that every edge watches, so the figures of a thousand edges are
/// not sent to each of them; the control plane reads them when asked.
pub const STORE_PREFIX: &str = streamgate_store::ANALYTICS_PREFIX;

/// The label of the assets beyond `max_assets`.
pub const OTHER: &str = "_other";

/// Startup buckets, seconds.
pub const STARTUP_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0,
];
/// Bitrate buckets, kbps (a typical ABR ladder's rungs).
pub const BITRATE_BUCKETS: &[f64] = &[
    150.0, 300.0, 500.0, 800.0, 1200.0, 1800.0, 2500.0, 4000.0, 6000.0, 8000.0, 12_000.0, 20_000.0,
];
/// Throughput buckets, kbps.
pub const THROUGHPUT_BUCKETS: &[f64] = &[
    500.0,
    1000.0,
    2000.0,
    5000.0,
    10_000.0,
    20_000.0,
    50_000.0,
    100_000.0,
    200_000.0,
    500_000.0,
    1_000_000.0,
];

type AssetMap = HashMap<Box<str>, Arc<AssetQoe>, ahash::RandomState>;

/// One asset's aggregates.
#[derive(Debug)]
pub struct AssetQoe {
    sessions: IntCounter,
    requests: IntCounter,
    starved: IntCounter,
    startup: Histogram,
    bitrate: Histogram,
    throughput: Histogram,
}

struct Families {
    sessions: IntCounterVec,
    requests: IntCounterVec,
    starved: IntCounterVec,
    startup: HistogramVec,
    bitrate: HistogramVec,
    throughput: HistogramVec,
}

impl Families {
    fn new(registry: &prometheus::Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["asset"]).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["asset"],
            )
            .expect("valid metric");
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        Self {
            sessions: counter(
                "streamgate_edge_qoe_sessions_started_total",
                "Playback sessions (CMCD sid) whose first manifest this edge served, by asset",
            ),
            requests: counter(
                "streamgate_edge_qoe_cmcd_requests_total",
                "Allowed requests that carried CMCD, by asset",
            ),
            starved: counter(
                "streamgate_edge_qoe_starved_requests_total",
                "Requests whose CMCD said the buffer starved since the previous one (bs), by asset",
            ),
            startup: histogram(
                "streamgate_edge_qoe_startup_seconds",
                "Time from a session's first manifest request to its first media segment request, by asset",
                STARTUP_BUCKETS,
            ),
            bitrate: histogram(
                "streamgate_edge_qoe_bitrate_kbps",
                "Encoded bitrate of the video segments served (CMCD br), by asset",
                BITRATE_BUCKETS,
            ),
            throughput: histogram(
                "streamgate_edge_qoe_throughput_kbps",
                "Throughput the players measured (CMCD mtp), by asset",
                THROUGHPUT_BUCKETS,
            ),
        }
    }

    fn asset(&self, name: &str) -> AssetQoe {
        let l = &[name];
        AssetQoe {
            sessions: self.sessions.with_label_values(l),
            requests: self.requests.with_label_values(l),
            starved: self.starved.with_label_values(l),
            startup: self.startup.with_label_values(l),
            bitrate: self.bitrate.with_label_values(l),
            throughput: self.throughput.with_label_values(l),
        }
    }
}

use crate::table::{Sets, WAYS};

/// Slot layout: fingerprint in the top 20 bits (never 0), a "started" bit, then the time
/// in ms since the table's epoch in the low 43 bits (278 years).
const TIME_BITS: u32 = 43;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const STARTED: u64 = 1 << TIME_BITS;
const FP_SHIFT: u32 = TIME_BITS + 1;
/// A started session's time is refreshed when it is older than this (ms), so a session
/// that keeps playing is not evicted as idle, with one write per session per interval.
const REFRESH_MS: u64 = 5_000;

/// What one request did to its session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The first manifest of a new session: it started here.
    Started,
    /// The first media segment after the first manifest, this long after it (seconds).
    Startup(f64),
    /// Nothing new.
    Seen,
}

/// The session table: which (asset, sid) are playing, and since when.
struct Table {
    sets: Sets,
    hasher: ahash::RandomState,
    epoch: Instant,
    idle_ms: u64,
    startup_ms: u64,
}

impl Table {
    fn new(slots: usize, cfg: &AnalyticsConfig) -> Self {
        Self {
            sets: Sets::new(slots),
            hasher: ahash::RandomState::new(),
            epoch: Instant::now(),
            idle_ms: cfg.idle_timeout.as_millis() as u64,
            startup_ms: cfg.startup_timeout.as_millis() as u64,
        }
    }

    /// Counts one request of session `sid` on `asset` at `now`: a manifest (`manifest`)
    /// or a media segment, `starting` when its CMCD says so (`su`).
    fn step(&self, asset: &str, sid: u64, manifest: bool, starting: bool, now: Instant) -> Step {
        let h = self.hasher.hash_one((asset, sid));
        let set = self.sets.of(h);
        let fp = (h >> FP_SHIFT).max(1);
        let now = (now.saturating_duration_since(self.epoch).as_millis() as u64 & TIME_MASK).max(1);
        let live = |cur: u64| cur != 0 && now.saturating_sub(cur & TIME_MASK) <= self.idle_ms;
        for _ in 0..4 {
            let mut victim = (0, u64::MAX, 0);
            let mut found = None;
            for (i, slot) in set.iter().enumerate() {
                let cur = slot.load(Ordering::Acquire);
                if cur >> FP_SHIFT == fp && live(cur) {
                    found = Some((i, cur));
                    break;
                }
                let t = if live(cur) { cur & TIME_MASK } else { 0 };
                if t < victim.1 {
                    victim = (i, t, cur);
                }
            }
            let (i, cur, next, step) = match found {
                Some((i, cur)) => {
                    let t = cur & TIME_MASK;
                    if cur & STARTED != 0 {
                        if now.saturating_sub(t) < REFRESH_MS {
                            return Step::Seen;
                        }
                        (i, cur, (fp << FP_SHIFT) | STARTED | now, Step::Seen)
                    } else if manifest {
                        return Step::Seen;
                    } else {
                        let waited = now.saturating_sub(t);
                        let step = if waited <= self.startup_ms {
                            Step::Startup(waited as f64 / 1000.0)
                        } else {
                            Step::Seen
                        };
                        (i, cur, (fp << FP_SHIFT) | STARTED | now, step)
                    }
                }
                // A new session: started here on a manifest (its startup is timed from
                // it), or on a segment of a player starting up (`su`: a player that sends
                // no CMCD with manifests; no startup can be timed). A playing session's
                // segment started elsewhere (another edge, or before this edge forgot it).
                None if manifest => (victim.0, victim.2, (fp << FP_SHIFT) | now, Step::Started),
                None => (
                    victim.0,
                    victim.2,
                    (fp << FP_SHIFT) | STARTED | now,
                    if starting { Step::Started } else { Step::Seen },
                ),
            };
            if set[i]
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return step;
            }
        }
        // Four lost races on one set: leave this request out rather than spin.
        Step::Seen
    }
}

impl Table {
    fn slot_of(&self, asset: &str, key: u64) -> (&[AtomicU64; WAYS], u64) {
        let h = self.hasher.hash_one((asset, key, 0x6d61_6e69_u32));
        (self.sets.of(h), (h >> FP_SHIFT).max(1))
    }

    fn ms(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_millis() as u64 & TIME_MASK).max(1)
    }

    /// Remembers that `key` (a client network) asked for a manifest of `asset` without a
    /// session id at `now` (the latest such request wins).
    fn mark(&self, asset: &str, key: u64, now: Instant) {
        let (set, fp) = self.slot_of(asset, key);
        let now = self.ms(now);
        let mut victim = (0, u64::MAX, 0);
        for (i, slot) in set.iter().enumerate() {
            let cur = slot.load(Ordering::Acquire);
            if cur >> FP_SHIFT == fp {
                victim = (i, 0, cur);
                break;
            }
            let t = if cur == 0 { 0 } else { cur & TIME_MASK };
            if t < victim.1 {
                victim = (i, t, cur);
            }
        }
        // A lost race only loses this mark.
        let _ = set[victim.0].compare_exchange(
            victim.2,
            (fp << FP_SHIFT) | now,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// How long ago `key` asked for a manifest of `asset` without a session id, if within
    /// the startup timeout; the mark is used up.
    fn take(&self, asset: &str, key: u64, now: Instant) -> Option<f64> {
        let (set, fp) = self.slot_of(asset, key);
        let now = self.ms(now);
        for slot in set {
            let cur = slot.load(Ordering::Acquire);
            if cur >> FP_SHIFT == fp {
                let waited = now.saturating_sub(cur & TIME_MASK);
                let used = slot
                    .compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                return (used && waited <= self.startup_ms).then(|| waited as f64 / 1000.0);
            }
        }
        None
    }
}

/// The edge's QoE aggregates.
pub struct Analytics {
    assets: ArcSwap<AssetMap>,
    grow: Mutex<()>,
    other: Arc<AssetQoe>,
    families: Families,
    table: Table,
    /// Manifest requests without a session id, by asset and client network: players that
    /// send no CMCD with their first manifest (dash.js) have their startup timed from it.
    unnamed: Table,
    max_assets: usize,
    malformed: IntCounter,
    cfg: AnalyticsConfig,
    last: Mutex<Option<Value>>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics")
            .field("assets", &self.assets.load().len())
            .finish_non_exhaustive()
    }
}

impl Analytics {
    /// Aggregates per `cfg`, with their metrics in `registry`.
    pub fn new(cfg: &AnalyticsConfig, registry: &prometheus::Registry) -> Self {
        let families = Families::new(registry);
        let malformed = IntCounter::new(
            "streamgate_edge_cmcd_malformed_total",
            "Requests whose CMCD could not be read (left out of the QoE aggregates)",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(malformed.clone()));
        Self {
            assets: ArcSwap::default(),
            grow: Mutex::default(),
            other: Arc::new(families.asset(OTHER)),
            families,
            table: Table::new(cfg.session_slots, cfg),
            unnamed: Table::new((cfg.session_slots / 4).max(8), cfg),
            max_assets: cfg.max_assets,
            malformed,
            cfg: cfg.clone(),
            last: Mutex::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AnalyticsConfig {
        &self.cfg
    }

    /// A new asset's aggregates: the map is copied (rare; at most `max_assets` times).
    fn add_asset(&self, name: &str) -> Arc<AssetQoe> {
        let _g = self.grow.lock().expect("analytics assets");
        let cur = self.assets.load_full();
        if let Some(q) = cur.get(name) {
            return Arc::clone(q);
        }
        if cur.len() >= self.max_assets {
            return Arc::clone(&self.other);
        }
        let q = Arc::new(self.families.asset(name));
        let mut next = AssetMap::clone(&cur);
        next.insert(name.into(), Arc::clone(&q));
        self.assets.store(Arc::new(next));
        q
    }

    /// Counts one allowed request for `asset` of `kind`, from its query and headers.
    #[cfg(test)]
    pub fn record_request(
        &self,
        asset: &str,
        kind: ObjectKind,
        query: Option<&str>,
        headers: &http::HeaderMap,
        now: Instant,
    ) {
        let client = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        self.record(asset, kind, cmcd::read(query, headers), client, now);
    }

    /// Counts one allowed request for `asset` of `kind`, with the CMCD [`cmcd::read`] read
    /// from it (nothing without; a malformed one is only counted as such).
    pub fn record(
        &self,
        asset: &str,
        kind: ObjectKind,
        cmcd: Result<Option<cmcd::Data>, &'static str>,
        client: Option<std::net::IpAddr>,
        now: Instant,
    ) {
        let network = || {
            client.map(|ip| {
                let (n, tag) = crate::limit::network(ip, 32, 64);
                xxhash_rust::xxh3::xxh3_64_with_seed(&n, u64::from(tag))
            })
        };
        let d = match cmcd {
            Ok(Some(d)) => d,
            Ok(None) => {
                // A manifest without CMCD: the startup of the session this client starts
                // next (on a segment with `su`) is timed from it.
                if let (ObjectKind::Manifest, Some(n)) = (kind, network()) {
                    self.unnamed.mark(asset, n, now);
                }
                return;
            }
            Err(_) => {
                self.malformed.inc();
                return;
            }
        };
        // The common case borrows from the map; only a new asset takes the lock.
        let map = self.assets.load();
        let added;
        let q: &AssetQoe = match map.get(asset) {
            Some(q) => q,
            // Full: the rest share `_other`, without the lock.
            None if map.len() >= self.max_assets => &self.other,
            None => {
                added = self.add_asset(asset);
                &added
            }
        };
        q.requests.inc();
        if d.bs {
            q.starved.inc();
        }
        if let Some(mtp) = d.mtp {
            q.throughput.observe(mtp);
        }
        let media = kind != ObjectKind::Manifest
            && !matches!(
                d.ot,
                Some(ObjectType::Manifest | ObjectType::Init | ObjectType::Other)
            );
        let video = media && !matches!(d.ot, Some(ObjectType::Audio));
        if let (true, Some(br)) = (video, d.br) {
            q.bitrate.observe(br);
        }
        let Some(sid) = d.sid else {
            if let (ObjectKind::Manifest, Some(n)) = (kind, network()) {
                self.unnamed.mark(asset, n, now);
            }
            return;
        };
        if !media && kind != ObjectKind::Manifest {
            return;
        }
        match self
            .table
            .step(asset, sid, kind == ObjectKind::Manifest, d.su, now)
        {
            Step::Started => {
                q.sessions.inc();
                // Started on a segment: timed from this client's manifest, if it asked
                // for one without a session id just before.
                if kind != ObjectKind::Manifest
                    && let Some(s) = network().and_then(|n| self.unnamed.take(asset, n, now))
                {
                    q.startup.observe(s);
                }
            }
            Step::Startup(s) => q.startup.observe(s),
            Step::Seen => {}
        }
    }

    /// This edge's aggregates as published to `analytics/<edge-id>`:
    /// `{"v": 1, "assets": {"<id>": {"sessions", "requests", "starved", "startup_s",
    /// "bitrate_kbps", "throughput_kbps"}}}`, each histogram `{"le": [...], "counts":
    /// [cumulative...], "count", "sum"}`.
    pub fn document(&self) -> Value {
        let mut assets = Map::new();
        let map = self.assets.load();
        let all = map
            .iter()
            .map(|(k, v)| (&**k, v))
            .chain(std::iter::once((OTHER, &self.other)));
        for (name, q) in all {
            if q.requests.get() == 0 {
                continue;
            }
            assets.insert(
                name.to_owned(),
                json!({
                    "sessions": q.sessions.get(),
                    "requests": q.requests.get(),
                    "starved": q.starved.get(),
                    "startup_s": histogram_value(&q.startup, STARTUP_BUCKETS),
                    "bitrate_kbps": histogram_value(&q.bitrate, BITRATE_BUCKETS),
                    "throughput_kbps": histogram_value(&q.throughput, THROUGHPUT_BUCKETS),
                }),
            );
        }
        json!({"v": 1, "assets": assets})
    }
}

fn histogram_value(h: &Histogram, le: &[f64]) -> Value {
    use prometheus::core::Collector;
    let mut counts = vec![0u64; le.len()];
    let (mut count, mut sum) = (0, 0.0);
    if let Some(m) = h.collect().first().and_then(|f| f.get_metric().first()) {
        let p = m.get_histogram();
        count = p.get_sample_count();
        sum = p.get_sample_sum();
        for (c, b) in counts.iter_mut().zip(p.get_bucket()) {
            *c = b.cumulative_count();
        }
    }
    json!({"le": le, "counts": counts, "count": count, "sum": sum})
}

impl crate::source::Publish for Analytics {
    fn changes(&self) -> Option<Value> {
        let doc = self.document();
        let mut last = self.last.lock().expect("analytics document");
        if last.as_ref() == Some(&doc) {
            return None;
        }
        *last = Some(doc.clone());
        Some(doc)
    }

    fn document(&self) -> Value {
        Self::document(self)
    }
}

#[cfg(test)]
mod tests;
