//! The edge as a watcher of the control plane's state.
//!
//! The watcher lists `/streamgate/v1/` once, then watches it from the revision it applied.
//! Every change to `policies/`, `assets/` or `keys/` builds a new [`Snapshot`] that is
//! swapped into the gate atomically (requests never take a lock). `purges/` records drop
//! cache entries. Everything else under the prefix (audit entries, edge status, jobs) is
//! ignored.
//!
//! Failure handling:
//! - The store unreachable or the stream broken: retry with full-jitter exponential
//!   backoff (100 ms doubling to 5 s), resuming from the applied revision, while the gate
//!   keeps enforcing the last snapshot.
//! - A compaction past the applied revision: list the prefix once and resume from the new
//!   revision, at once, with no backoff. Purges recorded in the gap are applied.
//! - At start, if the store cannot be reached within `initial_sync_timeout`, the
//!   last-known-good file (written after every installed revision) is loaded, so a
//!   restarted edge serves what it enforced before.
//!
//! A publisher task, off the watch path, writes the last-known-good file and reports the
//! applied revision to `/streamgate/v1/edges/<edge-id>` on every new snapshot, every
//! applied purge and every 30 s, so the control plane can show which edges run which
//! revision (and so whether a purge reached them all).

// Public for the fuzz targets and benchmarks (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde_json::{Value, json};
use streamgate_store::{Batch, Event, Op, PREFIX, Store, StoreError};
use tokio::sync::watch;

use crate::gate::Snapshot;
use crate::pipeline::Pipeline;

/// Where the state comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// An etcd cluster, connected (and reconnected) by the watcher.
    Etcd(Box<streamgate_store::etcd::EtcdConfig>),
    /// A store handed over by the caller (`streamgate dev` shares its embedded store).
    Store(Arc<dyn Store>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Etcd(e) => f.debug_tuple("Etcd").field(&e.endpoints).finish(),
            Self::Store(_) => f.write_str("Store(..)"),
        }
    }
}

impl Source {
    async fn connect(&self) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            Self::Etcd(cfg) => Ok(Arc::new(
                streamgate_store::etcd::EtcdStore::connect_with(cfg).await?,
            )),
            Self::Store(s) => Ok(Arc::clone(s)),
        }
    }
}

/// The watcher, run as a Pingora background service.
pub(crate) struct StateWatcher {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) source: Source,
    pub(crate) lkg: Option<PathBuf>,
    pub(crate) edge_id: String,
    pub(crate) token_cache_entries: u64,
    pub(crate) initial_sync_timeout: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_secs(30);
/// The lease of this edge's `edges/<id>` record: a dead edge's record vanishes within it.
const RECORD_TTL: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Full jitter: a uniform delay in `[0, min(max, min * 2^attempt)]`.
fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_MIN
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let r = ahash::RandomState::new().hash_one(Instant::now());
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(r % nanos)
}

/// Which part of the state a key belongs to.
enum Kind {
    Policy,
    Asset,
    Key,
    Purge,
    /// `streams/<edge-id>`: an edge's playback-session counts.
    Streams,
    /// `denials/<principal>`: a principal refused for token sharing, under a lease.
    Denial,
    Other,
}

fn kind(key: &str) -> Kind {
    let rest = key.strip_prefix(PREFIX).unwrap_or(key);
    if rest.starts_with("policies/") {
        Kind::Policy
    } else if rest.starts_with("assets/") {
        Kind::Asset
    } else if rest.starts_with("keys/") {
        Kind::Key
    } else if rest.starts_with("purges/") {
        Kind::Purge
    } else if rest.starts_with("streams/") {
        Kind::Streams
    } else if rest.starts_with("denials/") {
        Kind::Denial
    } else {
        Kind::Other
    }
}

/// Why a purge record was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeRecordError {
    /// Not a JSON document.
    #[error("not JSON")]
    NotJson,
    /// `asset` is empty or holds a `/`.
    #[error("the asset is not one path segment")]
    Asset,
    /// Neither an asset nor a relative, non-empty prefix.
    #[error("neither a non-empty asset nor a relative prefix")]
    Neither,
}

/// The cache prefix a purge record names: `{"asset": "demo"}` or `{"prefix": "demo/v/"}`.
/// Pure; fuzzed (the record comes from the store).
pub fn purge_prefix(value: &[u8]) -> Result<String, PurgeRecordError> {
    let v: Value = serde_json::from_slice(value).map_err(|_| PurgeRecordError::NotJson)?;
    if let Some(a) = v.get("asset").and_then(Value::as_str) {
        if a.is_empty() || a.contains('/') {
            return Err(PurgeRecordError::Asset);
        }
        return Ok(format!("{a}/"));
    }
    match v.get("prefix").and_then(Value::as_str) {
        Some(p) if !p.is_empty() && !p.starts_with('/') => Ok(p.to_owned()),
        _ => Err(PurgeRecordError::Neither),
    }
}

/// What the publisher writes out.
#[derive(Clone)]
struct Published {
    snapshot: Option<Arc<Snapshot>>,
    applied: i64,
    store: Option<Arc<dyn Store>>,
    /// Bumped by each new snapshot and each purge: the events worth reporting at once.
    epoch: u64,
}

/// The documents the snapshot is built from, by store key.
#[derive(Default)]
struct Docs {
    docs: BTreeMap<String, Value>,
}

impl Docs {
    fn set(&mut self, key: &str, value: &[u8]) {
        // A document that is not JSON is kept as null and reported when the snapshot builds.
        let v = serde_json::from_slice(value).unwrap_or(Value::Null);
        self.docs.insert(key.to_owned(), v);
    }

    /// The snapshot document. A document whose id differs from its key's last segment
    /// is replaced by null, so it is reported and left out rather than shadowing another.
    fn document(&self, revision: i64) -> Value {
        let (mut policies, mut assets, mut keys) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in &self.docs {
            let name = k.rsplit('/').next().unwrap_or_default();
            let (list, field) = match kind(k) {
                Kind::Policy => (&mut policies, "id"),
                Kind::Asset => (&mut assets, "id"),
                Kind::Key => (&mut keys, "kid"),
                Kind::Purge | Kind::Streams | Kind::Denial | Kind::Other => continue,
            };
            if v.get(field).and_then(Value::as_str) == Some(name) {
                list.push(v.clone());
            } else {
                list.push(Value::Null);
            }
        }
        json!({"revision": revision, "policies": policies, "assets": assets, "keys": keys})
    }
}

impl StateWatcher {
    fn install(&self, docs: &Docs, revision: i64, publish: &watch::Sender<Published>) {
        let t0 = Instant::now();
        let m = self.pipeline.metrics();
        match Snapshot::from_store(docs.document(revision), self.token_cache_entries) {
            Ok((snap, problems)) => {
                for p in &problems {
                    tracing::error!(revision, problem = %p, "stored state left out; its assets fail closed");
                }
                m.state_invalid_docs.inc_by(problems.len() as u64);
                let snap = Arc::new(snap);
                self.pipeline.gate().install(Arc::clone(&snap));
                m.policy_revision.set(revision);
                m.state_apply_seconds.observe(t0.elapsed().as_secs_f64());
                tracing::debug!(revision, "state installed");
                publish.send_modify(|p| {
                    p.snapshot = Some(snap);
                    p.applied = revision;
                    p.epoch += 1;
                });
            }
            Err(e) => {
                // Not reachable with from_store (it only fails on a non-object document).
                tracing::error!(revision, error = %e, "state did not build; keeping the current one");
            }
        }
    }

    fn purge(&self, key: &str, value: &[u8]) {
        match purge_prefix(value) {
            Ok(prefix) => {
                let n = self.pipeline.cache().invalidate_prefix(&prefix);
                let m = self.pipeline.metrics();
                m.purges.inc();
                m.purged_entries.inc_by(n as u64);
                tracing::info!(%key, %prefix, entries = n, "purge applied");
            }
            Err(e) => tracing::error!(%key, error = %e, "purge record ignored"),
        }
    }

    /// Another edge's session counts (`None`: its key is gone, with its lease).
    fn streams(&self, key: &str, value: Option<&[u8]>) {
        let edge = key.rsplit('/').next().unwrap_or_default();
        if edge == self.edge_id {
            return;
        }
        if let Some(s) = self.pipeline.sessions() {
            if let Some(v) = value
                && let Err(e) = crate::session::parse_counts(v)
            {
                tracing::warn!(%key, error = %e, "session counts ignored");
            }
            s.set_remote(edge, value);
        }
    }

    /// A principal refused for token sharing (`None`: its key is gone, the refusal lifted).
    fn denial(&self, key: &str, value: Option<&[u8]>) {
        let Some(g) = self.pipeline.sharing() else {
            return;
        };
        match value.map(|v| crate::sharing::parse_denial(key, v)) {
            Some(Ok((p, until))) => {
                let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                if !left.is_zero() {
                    g.deny(p, Instant::now() + left);
                }
            }
            Some(Err(e)) => tracing::warn!(%key, error = %e, "token-sharing denial ignored"),
            None => {
                let hex = key.rsplit('/').next().unwrap_or_default();
                if let Ok(p) = u64::from_str_radix(hex, 16) {
                    g.lift(p);
                }
            }
        }
    }

    /// Lists the prefix and installs it; applies purges newer than `since`.
    async fn reload(
        &self,
        store: &dyn Store,
        docs: &mut Docs,
        since: i64,
        publish: &watch::Sender<Published>,
    ) -> Result<i64, StoreError> {
        let (items, rev) = store.list(PREFIX).await?;
        let mut fresh = Docs::default();
        if let Some(s) = self.pipeline.sessions() {
            s.clear_remote();
        }
        for (k, v) in &items {
            match kind(k) {
                Kind::Policy | Kind::Asset | Kind::Key => fresh.set(k, &v.value),
                Kind::Purge if since > 0 && v.version > since => self.purge(k, &v.value),
                Kind::Streams => self.streams(k, Some(&v.value)),
                Kind::Denial => self.denial(k, Some(&v.value)),
                Kind::Purge | Kind::Other => {}
            }
        }
        *docs = fresh;
        self.pipeline.metrics().state_reloads.inc();
        self.install(docs, rev, publish);
        tracing::info!(
            revision = rev,
            keys = items.len(),
            "state loaded from the store"
        );
        Ok(rev)
    }

    /// Applies one watch batch; returns whether the snapshot changed and whether a purge
    /// was applied.
    fn apply(&self, docs: &mut Docs, batch: &Batch) -> (bool, bool) {
        let (mut changed, mut purged) = (false, false);
        for ev in &batch.events {
            match (kind(ev.key()), ev) {
                (Kind::Policy | Kind::Asset | Kind::Key, Event::Put { key, value, .. }) => {
                    docs.set(key, value);
                    changed = true;
                }
                (Kind::Policy | Kind::Asset | Kind::Key, Event::Delete { key, .. }) => {
                    changed |= docs.docs.remove(key).is_some();
                }
                (Kind::Purge, Event::Put { key, value, .. }) => {
                    self.purge(key, value);
                    purged = true;
                }
                (Kind::Streams, Event::Put { key, value, .. }) => self.streams(key, Some(value)),
                (Kind::Streams, Event::Delete { key, .. }) => self.streams(key, None),
                (Kind::Denial, Event::Put { key, value, .. }) => self.denial(key, Some(value)),
                (Kind::Denial, Event::Delete { key, .. }) => self.denial(key, None),
                _ => {}
            }
        }
        (changed, purged)
    }
}

fn load_lkg(pipeline: &Pipeline, lkg: Option<&std::path::Path>, token_cache_entries: u64) {
    let Some(path) = lkg else {
        tracing::error!(
            "state store unreachable and no snapshot file configured; gated requests get 503"
        );
        return;
    };
    match Snapshot::load(path, token_cache_entries) {
        Ok(s) => {
            let rev = s.revision;
            if pipeline.gate().install_if_empty(s) {
                pipeline.metrics().policy_revision.set(rev);
                tracing::warn!(revision = rev, path = %path.display(),
                        "state store unreachable; serving the last known good snapshot");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "state store unreachable and no usable last-known-good snapshot; gated requests get 503");
        }
    }
}

#[async_trait]
impl BackgroundService for StateWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (publish, published) = watch::channel(Published {
            snapshot: None,
            applied: 0,
            store: None,
            epoch: 0,
        });
        let streams = self.pipeline.sessions().map(|s| {
            let at = Leased {
                key: format!("{PREFIX}streams/{}", self.edge_id),
                interval: s.config().publish_interval,
                ttl: s.config().lease_ttl,
                what: "session counts",
            };
            let doc: Arc<dyn crate::source::Publish> = Arc::clone(s) as _;
            tokio::spawn(publish_leased(published.clone(), doc, at, shutdown.clone()))
        });
        let sharing = self
            .pipeline
            .sharing()
            .and_then(|g| g.take_events())
            .map(|events| {
                tokio::spawn(report_sharing(
                    published.clone(),
                    events,
                    self.edge_id.clone(),
                    shutdown.clone(),
                ))
            });
        let analytics = self.pipeline.analytics().map(|a| {
            let at = Leased {
                key: format!("{}{}", crate::analytics::STORE_PREFIX, self.edge_id),
                interval: a.config().publish_interval,
                ttl: a.config().lease_ttl,
                what: "QoE aggregates",
            };
            let doc: Arc<dyn crate::source::Publish> = Arc::clone(a) as _;
            tokio::spawn(publish_leased(published.clone(), doc, at, shutdown.clone()))
        });
        let publisher = tokio::spawn(publisher(
            published,
            self.lkg.clone(),
            self.edge_id.clone(),
            shutdown.clone(),
        ));
        // However the first connection attempt goes (refused, or hanging on a frozen
        // host), the last-known-good file is considered once the timeout passes.
        let lkg_timer = {
            let pipeline = Arc::clone(&self.pipeline);
            let (lkg, entries, wait) = (
                self.lkg.clone(),
                self.token_cache_entries,
                self.initial_sync_timeout,
            );
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if pipeline.gate().revision().is_none() {
                    load_lkg(&pipeline, lkg.as_deref(), entries);
                }
            })
        };
        let mut store: Option<Arc<dyn Store>> = None;
        let mut docs = Docs::default();
        let mut applied = 0i64;
        let mut need_list = true;
        let mut attempt = 0u32;
        let m = Arc::clone(self.pipeline.metrics());
        loop {
            if *shutdown.borrow() {
                break;
            }
            let failure = async {
                let s = match &store {
                    Some(s) => Arc::clone(s),
                    None => {
                        let s = tokio::time::timeout(CONNECT_TIMEOUT, self.source.connect())
                            .await
                            .map_err(|_| StoreError::Unavailable("connect timed out".into()))??;
                        store = Some(Arc::clone(&s));
                        publish.send_modify(|p| p.store = Some(Arc::clone(&s)));
                        if let Some(auth) = self.pipeline.auth() {
                            auth.use_store(Arc::clone(&s));
                        }
                        s
                    }
                };
                if need_list {
                    let since = applied.max(self.pipeline.gate().revision().unwrap_or(0));
                    applied = self.reload(&*s, &mut docs, since, &publish).await?;
                    need_list = false;
                }
                let mut stream = s.watch(PREFIX, applied).await?;
                m.state_connected.set(1);
                attempt = 0;
                loop {
                    let item = tokio::select! {
                        i = stream.next() => i,
                        _ = shutdown.changed() => return Ok(()),
                    };
                    match item {
                        Some(Ok(batch)) => {
                            let (changed, purged) = self.apply(&mut docs, &batch);
                            if changed {
                                self.install(&docs, batch.revision, &publish);
                            }
                            if purged || (!changed && batch.revision > applied) {
                                publish.send_modify(|p| {
                                    p.applied = p.applied.max(batch.revision);
                                    p.epoch += u64::from(purged);
                                });
                            }
                            applied = applied.max(batch.revision);
                        }
                        Some(Err(e)) => return Err(e),
                        None => return Err(StoreError::Unavailable("watch ended".into())),
                    }
                }
            }
            .await;
            m.state_connected.set(0);
            match failure {
                Ok(()) => break,
                Err(StoreError::Compacted {
                    requested,
                    compacted,
                }) => {
                    m.state_watch_errors.inc();
                    tracing::warn!(
                        requested,
                        compacted,
                        "state history compacted; reloading the prefix"
                    );
                    need_list = true;
                }
                Err(e) => {
                    m.state_watch_errors.inc();
                    let delay = backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    if attempt >= 3 && matches!(self.source, Source::Etcd(_)) {
                        // Reconnect from scratch (a new endpoint resolution) from time to time.
                        store = None;
                    }
                    tracing::warn!(error = %e, retry_in = ?delay, revision = applied,
                        "state store unreachable; enforcing the last known state");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        lkg_timer.abort();
        let _ = publisher.await;
        for task in streams.into_iter().chain(analytics).chain(sharing) {
            let _ = task.await;
        }
    }
}

/// Writes the last-known-good file and the edge status after each new snapshot, and the
/// status every [`HEARTBEAT`]. The status lives under a lease of [`RECORD_TTL`], kept
/// alive in the background and revoked at shutdown; when it is lost (etcd was out of reach
/// longer than that), a new one is granted and the status written again.
async fn publisher(
    mut rx: watch::Receiver<Published>,
    lkg: Option<PathBuf>,
    edge_id: String,
    mut shutdown: ShutdownWatch,
) {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let hostname = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut written: i64 = -1;
    let mut reported_at = Instant::now() - HEARTBEAT;
    let mut reported: u64 = u64::MAX;
    let mut lease: Option<(Arc<dyn Store>, streamgate_store::KeptLease)> = None;
    loop {
        let mut lost = lease.as_ref().map(|(_, l)| l.lost());
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = async { match &mut lost { Some(l) => { let _ = l.wait_for(|x| *x).await; } None => std::future::pending().await } } => {
                // The record went with the lease: write it again under a new one.
                lease = None;
                reported = u64::MAX;
            }
            _ = shutdown.changed() => break,
        }
        let p = rx.borrow_and_update().clone();
        if let (Some(path), Some(snap)) = (&lkg, &p.snapshot)
            && snap.revision != written
        {
            written = snap.revision;
            let path = path.clone();
            let snap = Arc::clone(snap);
            let res = tokio::task::spawn_blocking(move || write_lkg(&path, &snap)).await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "last-known-good snapshot not written"),
                Err(e) => tracing::error!(error = %e, "last-known-good writer failed"),
            }
        }
        let snap_rev = p.snapshot.as_ref().map_or(0, |s| s.revision);
        if let Some(store) = &p.store
            && (p.epoch != reported || reported_at.elapsed() >= HEARTBEAT)
        {
            reported = p.epoch;
            reported_at = Instant::now();
            let status = json!({
                "id": edge_id,
                "revision": p.applied.max(snap_rev),
                "applied_at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                "started_at": started_at,
                "version": env!("CARGO_PKG_VERSION"),
                "hostname": hostname,
            });
            if lease
                .as_ref()
                .is_none_or(|(s, l)| l.is_lost() || !Arc::ptr_eq(s, store))
            {
                match streamgate_store::KeptLease::grant(Arc::clone(store), RECORD_TTL).await {
                    Ok(l) => lease = Some((Arc::clone(store), l)),
                    Err(e) => {
                        tracing::debug!(error = %e, "edge status lease not granted");
                        reported = u64::MAX;
                        continue;
                    }
                }
            }
            let Some((_, l)) = &lease else { continue };
            let op = Op::put_leased(
                format!("{PREFIX}edges/{edge_id}"),
                status.to_string().into_bytes(),
                l.id(),
            );
            if let Err(e) = store.txn(&[], vec![op]).await {
                tracing::debug!(error = %e, "edge status not reported");
                if matches!(e, StoreError::LeaseExpired(_)) {
                    lease = None;
                }
                reported = u64::MAX;
            }
        }
    }
    // Gone at once rather than after the TTL.
    if let Some((store, l)) = lease {
        let _ = tokio::time::timeout(Duration::from_secs(1), l.revoke(&*store)).await;
    }
}

/// How one edge document is kept in the store: its key, how often it is published, and
/// the TTL of its lease.
struct Leased {
    key: String,
    interval: Duration,
    ttl: Duration,
    what: &'static str,
}

/// Publishes `doc` to its key under a lease of `at.ttl`: at most once per `at.interval`,
/// when it changed, and again under a new lease when the old one was lost. Used for the
/// session counts (`streams/<edge-id>`) and the QoE aggregates (`analytics/<edge-id>`
/// outside the watched prefix).
async fn publish_leased(
    rx: watch::Receiver<Published>,
    doc: Arc<dyn crate::source::Publish>,
    at: Leased,
    mut shutdown: ShutdownWatch,
) {
    let mut lease: Option<(Arc<dyn Store>, streamgate_store::KeptLease)> = None;
    let mut pending: Option<Value> = None;
    let mut tick = tokio::time::interval(at.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        doc.tick();
        let Some(store) = rx.borrow().store.clone() else {
            continue;
        };
        let renewed = lease
            .as_ref()
            .is_none_or(|(s, l)| l.is_lost() || !Arc::ptr_eq(s, &store));
        if let Some(d) = doc.changes() {
            pending = Some(d);
        } else if renewed && lease.is_some() {
            // The key went with the lost lease: write the document again.
            pending = Some(doc.document());
        }
        let Some(d) = &pending else { continue };
        if renewed {
            match streamgate_store::KeptLease::grant(Arc::clone(&store), at.ttl).await {
                Ok(l) => lease = Some((Arc::clone(&store), l)),
                Err(e) => {
                    tracing::debug!(error = %e, what = at.what, "lease not granted");
                    continue;
                }
            }
        }
        let Some((_, l)) = &lease else { continue };
        let op = Op::put_leased(at.key.clone(), d.to_string().into_bytes(), l.id());
        match store.txn(&[], vec![op]).await {
            Ok(_) => pending = None,
            Err(e) => {
                tracing::debug!(error = %e, what = at.what, "not published");
                if matches!(e, StoreError::LeaseExpired(_)) {
                    lease = None;
                }
            }
        }
    }
    if let Some((store, l)) = lease {
        let _ = tokio::time::timeout(Duration::from_secs(1), l.revoke(&*store)).await;
    }
}

/// Writes each principal flagged for token sharing to the audit log (actor
/// `edge:<edge-id>`, action `sharing.flag` or `sharing.deny`) and, for a denial, its
/// `denials/<principal>` key under a lease of `deny_for`, so every edge refuses it.
async fn report_sharing(
    rx: watch::Receiver<Published>,
    mut events: tokio::sync::mpsc::Receiver<crate::sharing::Flagged>,
    edge_id: String,
    mut shutdown: ShutdownWatch,
) {
    let actor = format!("edge:{edge_id}");
    loop {
        let f = tokio::select! {
            f = events.recv() => match f { Some(f) => f, None => break },
            _ = shutdown.changed() => break,
        };
        let Some(store) = rx.borrow().store.clone() else {
            tracing::warn!("no state store: a token-sharing event is not in the audit log");
            continue;
        };
        let action = if f.deny_for.is_some() {
            "sharing.deny"
        } else {
            "sharing.flag"
        };
        let target = crate::sharing::audit_target(&f);
        let mut ops = vec![streamgate_store::audit_op(&actor, action, &target, 0)];
        if let (Some(doc), Some(ttl)) = (
            crate::sharing::denial_document(&f, &edge_id, SystemTime::now()),
            f.deny_for,
        ) {
            let secs = Duration::from_secs(ttl.as_secs_f64().ceil().max(1.0) as u64);
            match store.grant(secs).await {
                Ok(lease) => ops.push(Op::put_leased(
                    format!("{PREFIX}denials/{:016x}", f.principal),
                    doc.to_string().into_bytes(),
                    lease,
                )),
                Err(e) => {
                    tracing::warn!(error = %e, "token-sharing denial not shared with the fleet");
                }
            }
        }
        if let Err(e) = store.txn(&[], ops).await {
            tracing::warn!(error = %e, action, "token-sharing event not written");
        }
    }
}

/// Writes the snapshot document atomically: a temporary file, fsync, rename.
fn write_lkg(path: &std::path::Path, snap: &Snapshot) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(snap.to_value()).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_records_name_a_prefix() {
        assert_eq!(
            purge_prefix(br#"{"seq":1,"asset":"demo"}"#).unwrap(),
            "demo/"
        );
        assert_eq!(
            purge_prefix(br#"{"seq":2,"prefix":"demo/video/720p/"}"#).unwrap(),
            "demo/video/720p/"
        );
        for bad in [
            &br#"{"asset":"a/b"}"#[..],
            br#"{"asset":""}"#,
            br#"{"prefix":""}"#,
            br#"{"prefix":"/x"}"#,
            br#"{}"#,
            b"nope",
        ] {
            assert!(
                purge_prefix(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 0..40 {
            let cap = BACKOFF_MIN
                .saturating_mul(1u32 << attempt.min(16))
                .min(BACKOFF_MAX);
            assert!(backoff(attempt) <= cap);
        }
        let draws: std::collections::HashSet<_> = (0..20).map(|_| backoff(10)).collect();
        assert!(draws.len() > 10, "delays should differ: {draws:?}");
    }
}
