//! Prometheus metrics of the control plane, served on its admin port (9101, [`crate::admin`]).
//!
//! Three sources feed them: [`grpc::GrpcMetricsLayer`] wraps every gRPC service (calls by
//! method and code, latency), [`MeteredStore`] wraps the state store (operation latency and
//! errors, the revision, audit entries written), and the elected background work reports
//! prunes and whether it holds the election. Counts of stored objects are read from the
//! store when scraped. Every label has a fixed, small set of values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use streamgate_store::{Guard, LeaseId, Op, PREFIX, Store, StoreError, Versioned, WatchStream};

use crate::job::{JobDoc, JobState};

pub mod grpc;

/// Store operations, the `operation` label.
const OPERATIONS: [&str; 7] = [
    "get",
    "list",
    "txn",
    "watch",
    "lease_grant",
    "lease_keep_alive",
    "lease_revoke",
];

/// How long a scrape waits for the store to count objects.
const COUNT_TIMEOUT: Duration = Duration::from_secs(1);

/// The kinds of stored objects counted at scrape, with their key prefix under [`PREFIX`].
const KINDS: [(&str, &str); 5] = [
    ("policies", "policies/"),
    ("assets", "assets/"),
    ("keys", "keys/"),
    ("edges", "edges/"),
    ("jobs", "jobs/"),
];

/// The control plane's metrics.
pub struct ControlMetrics {
    registry: Registry,
    pub(crate) grpc_requests: IntCounterVec,
    pub(crate) grpc_duration: HistogramVec,
    pub(crate) store_duration: HistogramVec,
    pub(crate) store_errors: IntCounterVec,
    pub(crate) store_revision: IntGauge,
    pub(crate) store_up: IntGauge,
    pub(crate) objects: IntGaugeVec,
    pub(crate) jobs: IntGaugeVec,
    pub(crate) audit_entries: IntCounter,
    pub(crate) prunes: IntCounter,
    pub(crate) prune_errors: IntCounter,
    pub(crate) election_held: IntGauge,
}

impl std::fmt::Debug for ControlMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlMetrics").finish_non_exhaustive()
    }
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

impl ControlMetrics {
    /// A fresh registry holding every control-plane metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let grpc_requests = IntCounterVec::new(
            Opts::new(
                "streamgate_control_grpc_requests_total",
                "gRPC calls answered, by method (`package.Service/Method`; `unknown` for methods the server does not have) and status code",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let grpc_duration = HistogramVec::new(
            HistogramOpts::new(
                "streamgate_control_grpc_request_duration_seconds",
                "Time from a gRPC call's arrival to its response headers (for unary calls, the whole call), by method",
            )
            .buckets(latency_buckets()),
            &["method"],
        )
        .expect("valid metric");
        let store_duration = HistogramVec::new(
            HistogramOpts::new(
                "streamgate_control_store_operation_duration_seconds",
                "Latency of state-store (etcd or embedded) operations, by operation; for watch, until the stream is open",
            )
            .buckets(latency_buckets()),
            &["operation"],
        )
        .expect("valid metric");
        let store_errors = IntCounterVec::new(
            Opts::new(
                "streamgate_control_store_operation_errors_total",
                "State-store operations that failed, by operation and error (conflict: a guard did not hold)",
            ),
            &["operation", "error"],
        )
        .expect("valid metric");
        let store_revision = IntGauge::new(
            "streamgate_control_store_revision",
            "The latest store revision this control plane has seen (committed or read)",
        )
        .expect("valid metric");
        let store_up = IntGauge::new(
            "streamgate_control_store_up",
            "Whether the store answered the last scrape's reads (1) or not (0)",
        )
        .expect("valid metric");
        let objects = IntGaugeVec::new(
            Opts::new(
                "streamgate_control_objects",
                "Objects in the store at the last scrape that reached it, by kind (policies, assets, keys, edges registered, jobs)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let jobs = IntGaugeVec::new(
            Opts::new(
                "streamgate_control_jobs",
                "Transcode jobs in the store at the last scrape that reached it, by state (queued is the queue depth in jobs)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let audit_entries = IntCounter::new(
            "streamgate_control_audit_entries_total",
            "Audit entries committed by this control plane",
        )
        .expect("valid metric");
        let prunes = IntCounter::new(
            "streamgate_control_edge_records_pruned_total",
            "Edge records nobody refreshes that the elected background work deleted",
        )
        .expect("valid metric");
        let prune_errors = IntCounter::new(
            "streamgate_control_edge_prune_errors_total",
            "Rounds of edge-record pruning that failed on a store error",
        )
        .expect("valid metric");
        let election_held = IntGauge::new(
            "streamgate_control_election_held",
            "Whether this process holds the control plane's election and runs its background work (1) or not (0)",
        )
        .expect("valid metric");
        for op in OPERATIONS {
            store_duration.with_label_values(&[op]);
        }
        for (kind, _) in KINDS {
            objects.with_label_values(&[kind]);
        }
        for state in JobState::ALL {
            jobs.with_label_values(&[state.as_str()]);
        }
        for c in [
            Box::new(grpc_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(grpc_duration.clone()),
            Box::new(store_duration.clone()),
            Box::new(store_errors.clone()),
            Box::new(store_revision.clone()),
            Box::new(store_up.clone()),
            Box::new(objects.clone()),
            Box::new(jobs.clone()),
            Box::new(audit_entries.clone()),
            Box::new(prunes.clone()),
            Box::new(prune_errors.clone()),
            Box::new(election_held.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            grpc_requests,
            grpc_duration,
            store_duration,
            store_errors,
            store_revision,
            store_up,
            objects,
            jobs,
            audit_entries,
            prunes,
            prune_errors,
            election_held,
        }
    }

    /// Counts `n` pruned edge records.
    pub fn pruned(&self, n: usize) {
        self.prunes.inc_by(n as u64);
    }

    /// Counts a failed pruning round.
    pub fn prune_failed(&self) {
        self.prune_errors.inc();
    }

    /// Records whether this process holds the election.
    pub fn set_election_held(&self, held: bool) {
        self.election_held.set(i64::from(held));
    }

    fn saw_revision(&self, revision: i64) {
        if revision > self.store_revision.get() {
            self.store_revision.set(revision);
        }
    }

    fn record<T>(&self, op: &'static str, started: Instant, r: &Result<T, StoreError>) {
        self.store_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = r {
            self.store_error(op, e);
        }
    }

    fn store_error(&self, op: &'static str, e: &StoreError) {
        let kind = match e {
            StoreError::Conflict { .. } => "conflict",
            StoreError::Compacted { .. } => "compacted",
            StoreError::LeaseExpired(_) => "lease_expired",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Denied(_) => "denied",
            _ => "other",
        };
        self.store_errors.with_label_values(&[op, kind]).inc();
    }

    /// Counts the objects in `store` (bounded by [`COUNT_TIMEOUT`]) and renders every metric
    /// as Prometheus text. When the store does not answer, the counts keep their last values
    /// and `streamgate_control_store_up` is 0.
    pub async fn render(&self, store: &dyn Store) -> Vec<u8> {
        let counted = tokio::time::timeout(COUNT_TIMEOUT, async {
            let mut counts = [0i64; KINDS.len()];
            let mut states = [0i64; JobState::ALL.len()];
            for (i, (kind, prefix)) in KINDS.iter().enumerate() {
                let (items, revision) = store.list(&format!("{PREFIX}{prefix}")).await?;
                self.saw_revision(revision);
                counts[i] = i64::try_from(items.len()).unwrap_or(i64::MAX);
                if *kind == "jobs" {
                    for (_, v) in &items {
                        // A document this version cannot read is counted in `objects` only.
                        if let Ok(doc) = serde_json::from_slice::<JobDoc>(&v.value)
                            && let Some(i) = JobState::ALL.iter().position(|s| *s == doc.state)
                        {
                            states[i] += 1;
                        }
                    }
                }
            }
            Ok::<_, StoreError>((counts, states))
        })
        .await;
        match counted {
            Ok(Ok((counts, states))) => {
                self.store_up.set(1);
                for ((kind, _), n) in KINDS.iter().zip(counts) {
                    self.objects.with_label_values(&[kind]).set(n);
                }
                for (state, n) in JobState::ALL.iter().zip(states) {
                    self.jobs.with_label_values(&[state.as_str()]).set(n);
                }
            }
            _ => self.store_up.set(0),
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        buf
    }
}

/// A [`Store`] that records each operation's latency and errors, the revisions it sees and
/// the audit entries it commits.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<ControlMetrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<ControlMetrics>) -> Self {
        Self { inner, metrics }
    }
}

fn is_audit(op: &Op) -> bool {
    matches!(op, Op::Put { key, .. } if key.strip_prefix(PREFIX).is_some_and(|k| k.starts_with("audit/")))
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics.record("get", t, &r);
        r
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StoreError> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        self.metrics.record("list", t, &r);
        if let Ok((_, revision)) = &r {
            self.metrics.saw_revision(*revision);
        }
        r
    }

    async fn txn(&self, guards: &[Guard], ops: Vec<Op>) -> Result<i64, StoreError> {
        let audits = ops.iter().filter(|op| is_audit(op)).count() as u64;
        let t = Instant::now();
        let r = self.inner.txn(guards, ops).await;
        self.metrics.record("txn", t, &r);
        if let Ok(revision) = r {
            self.metrics.saw_revision(revision);
            self.metrics.audit_entries.inc_by(audits);
        }
        r
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream, StoreError> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, after).await;
        self.metrics.record("watch", t, &r);
        let stream = r?;
        let metrics = Arc::clone(&self.metrics);
        // Errors on an open stream count as watch errors too.
        Ok(Box::pin(stream.inspect(move |item| match item {
            Ok(batch) => metrics.saw_revision(batch.revision),
            Err(e) => metrics.store_error("watch", e),
        })))
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let t = Instant::now();
        let r = self.inner.grant(ttl).await;
        self.metrics.record("lease_grant", t, &r);
        r
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.keep_alive(lease).await;
        self.metrics.record("lease_keep_alive", t, &r);
        r
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.revoke(lease).await;
        self.metrics.record("lease_revoke", t, &r);
        r
    }
}
