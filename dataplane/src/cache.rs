//! The in-memory object cache: a byte budget, per-kind freshness, stale-if-error, request
//! collapsing so that N concurrent misses for one object make one origin read, and
//! negative caching: an origin 404 is remembered for a short TTL (never across a purge),
//! so a scan of missing names reaches the origin once per name and TTL.
//!
//! A hit is a lock-free `moka` read that clones an `Arc`; bodies are `Bytes` shared with
//! every response. Only a miss touches the in-flight table, under a short mutex.
//!
//! Fills of segments are read-while-write: as soon as the origin has answered, the fill
//! resolves to a [`Filling`], and the first requester and every waiter stream its chunks
//! as they arrive (a waiter that joins late gets what has arrived, then the rest). The
//! object enters the cache only once it is complete; a fill that breaks ends every stream
//! with an error (the front resets the connection) and stores nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use http::HeaderValue;

use crate::rewrite::Template;

/// One cached object.
#[derive(Debug)]
pub struct Entry {
    /// The whole body, shared by every response.
    pub body: Bytes,
    /// Strong validator computed from the body (so every edge agrees on it).
    pub etag: HeaderValue,
    /// When the entry stops being fresh.
    pub fresh_until: Instant,
    /// How long past `fresh_until` it is kept for stale-if-error.
    pub stale_for: Duration,
    /// A manifest's rewrite template, made by the first `?token=` request for it (`None`
    /// inside: the manifest cannot be templated and is rewritten per request).
    template: OnceLock<Option<Template>>,
}

impl Entry {
    /// Makes an entry fresh for `ttl` from `now`, keeping it `stale_for` longer.
    pub fn new(body: Bytes, now: Instant, ttl: Duration, stale_for: Duration) -> Self {
        let h = xxhash_rust::xxh3::xxh3_128(&body);
        let etag = HeaderValue::try_from(format!("\"{h:032x}\"")).expect("hex is a valid header");
        Self {
            body,
            etag,
            fresh_until: now + ttl,
            stale_for,
            template: OnceLock::new(),
        }
    }

    /// The rewrite template of this manifest (`mpd`: a DASH MPD, else an HLS playlist),
    /// built once.
    pub fn template(&self, mpd: bool) -> Option<&Template> {
        self.template
            .get_or_init(|| Template::build(&self.body, mpd).ok().flatten())
            .as_ref()
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh entry.
    Fresh(Arc<Entry>),
    /// An entry past its freshness but inside its stale-if-error window.
    Stale(Arc<Entry>),
    /// The origin answered 404 for this key less than the negative TTL ago.
    Absent,
    /// Nothing usable.
    Miss,
}

/// The result of filling one key, shared by every collapsed waiter.
pub(crate) type FillResult = Result<Fill, FillError>;

/// A successful fill.
#[derive(Debug, Clone)]
pub enum Fill {
    /// The object was read and stored.
    Stored(Arc<Entry>),
    /// The origin answered and the body is arriving: stream it from here.
    Streaming(Arc<Filling>),
    /// The object is larger than the per-object limit; each waiter streams it itself.
    TooLarge,
}

/// A failed fill, cloneable so that all waiters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillError {
    /// The origin has no such object.
    NotFound,
    /// The origin did not answer in time.
    Timeout,
    /// The origin failed; the text is for logs, never for clients.
    Unavailable(Arc<str>),
}

/// An object whose body is still arriving from the origin, shared by every reader.
pub struct Filling {
    size: u64,
    state: tokio::sync::watch::Sender<Progress>,
}

/// What a fill has received so far.
#[derive(Default)]
struct Progress {
    chunks: Vec<Bytes>,
    /// `Some(Ok)`: complete and stored as this entry; `Some(Err)`: broken.
    end: Option<Result<Arc<Entry>, Arc<str>>>,
}

impl std::fmt::Debug for Filling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filling({} bytes)", self.size)
    }
}

impl Filling {
    /// A fill of an object the origin says is `size` bytes long.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            state: tokio::sync::watch::Sender::new(Progress::default()),
        }
    }

    /// The object's length, as the origin declared it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a chunk that arrived from the origin and wakes the readers.
    pub fn push(&self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.state.send_modify(|p| p.chunks.push(chunk));
        }
    }

    /// Ends the fill: `Ok(entry)` when the body is complete, `Err` when it broke.
    pub fn finish(&self, end: Result<Arc<Entry>, Arc<str>>) {
        self.state.send_modify(|p| p.end = Some(end));
    }

    /// Everything received so far, in one buffer (for the entry of a complete fill).
    pub fn assemble(&self) -> Bytes {
        let p = self.state.borrow();
        if let [one] = &p.chunks[..] {
            return one.clone();
        }
        let mut buf = bytes::BytesMut::with_capacity(usize::try_from(self.size).unwrap_or(0));
        for c in &p.chunks {
            buf.extend_from_slice(c);
        }
        buf.freeze()
    }

    /// The entry of a fill that has completed.
    pub fn entry(&self) -> Option<Arc<Entry>> {
        match &self.state.borrow().end {
            Some(Ok(e)) => Some(Arc::clone(e)),
            _ => None,
        }
    }

    /// Waits for the end of the fill: the stored entry, or `None` if it broke.
    pub async fn finished(&self) -> Option<Arc<Entry>> {
        let mut rx = self.state.subscribe();
        let end = rx.wait_for(|p| p.end.is_some()).await.ok()?;
        end.end.as_ref().and_then(|e| e.as_ref().ok().cloned())
    }

    /// The body from its first byte: the chunks that have arrived, then each one as it
    /// comes. Ends with an error if the fill breaks (or its sender is gone unfinished).
    pub fn stream(
        self: &Arc<Self>,
    ) -> futures::stream::BoxStream<'static, Result<Bytes, streamgate_origin::OriginError>> {
        let rx = self.state.subscribe();
        futures::stream::unfold((rx, 0usize, false), |(mut rx, next, done)| async move {
            if done {
                return None;
            }
            loop {
                {
                    let p = rx.borrow_and_update();
                    if let Some(c) = p.chunks.get(next) {
                        let c = c.clone();
                        drop(p);
                        return Some((Ok(c), (rx, next + 1, false)));
                    }
                    match &p.end {
                        Some(Ok(_)) => return None,
                        Some(Err(why)) => {
                            let e = streamgate_origin::OriginError::Unavailable(why.to_string());
                            drop(p);
                            return Some((Err(e), (rx, next, true)));
                        }
                        None => {}
                    }
                }
                if rx.changed().await.is_err() {
                    let e = streamgate_origin::OriginError::Unavailable("fill abandoned".into());
                    return Some((Err(e), (rx, next, true)));
                }
            }
        })
        .boxed()
    }
}

type InFlight = Shared<BoxFuture<'static, FillResult>>;

struct Expiry;

impl moka::Expiry<Box<str>, Arc<Entry>> for Expiry {
    fn expire_after_create(&self, _k: &Box<str>, v: &Arc<Entry>, now: Instant) -> Option<Duration> {
        Some(v.fresh_until.saturating_duration_since(now) + v.stale_for)
    }

    fn expire_after_update(
        &self,
        k: &Box<str>,
        v: &Arc<Entry>,
        now: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(k, v, now)
    }
}

/// Drops every key of `map` that starts with `prefix`; returns how many.
fn drop_prefix<V, S>(map: &moka::sync::Cache<Box<str>, V, S>, prefix: &str) -> usize
where
    V: Clone + Send + Sync + 'static,
    S: std::hash::BuildHasher + Clone + Send + Sync + 'static,
{
    let keys: Vec<Box<str>> = map
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, _)| (*k).clone())
        .collect();
    for k in &keys {
        map.invalidate(k);
    }
    keys.len()
}

/// Removes a fill's in-flight marker when dropped.
struct Marker {
    cache: Arc<Cache>,
    key: Box<str>,
}

impl Drop for Marker {
    fn drop(&mut self) {
        self.cache
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// The object cache.
pub struct Cache {
    map: moka::sync::Cache<Box<str>, Arc<Entry>, ahash::RandomState>,
    /// Keys the origin answered 404 for, each for the negative TTL (`None`: off).
    absent: Option<moka::sync::Cache<Box<str>, (), ahash::RandomState>>,
    inflight: Mutex<HashMap<Box<str>, InFlight>>,
    /// Bumped by every purge; a fill that started before a purge does not store its
    /// (possibly outdated) result.
    purges: AtomicU64,
}

/// Fixed per-entry overhead counted against the byte budget.
const ENTRY_OVERHEAD: usize = 256;

#[allow(clippy::borrowed_box)] // moka hands the weigher `&K`, and K is `Box<str>`.
fn weigh(k: &Box<str>, v: &Arc<Entry>) -> u32 {
    u32::try_from(k.len() + v.body.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// At most this many negative entries are held (a bounded scan of missing names).
const MAX_ABSENT: u64 = 100_000;

impl Cache {
    /// A cache holding at most `max_bytes` of keys and bodies, remembering origin 404s for
    /// `not_found_ttl` (zero: not at all).
    pub fn new(max_bytes: u64, not_found_ttl: Duration) -> Self {
        let map = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(weigh)
            .expire_after(Expiry)
            .build_with_hasher(ahash::RandomState::new());
        let absent = (!not_found_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(MAX_ABSENT)
                .time_to_live(not_found_ttl)
                .build_with_hasher(ahash::RandomState::new())
        });
        Self {
            map,
            absent,
            inflight: Mutex::new(HashMap::new()),
            purges: AtomicU64::new(0),
        }
    }

    /// Looks `key` up at time `now`.
    pub fn lookup(&self, key: &str, now: Instant) -> Lookup {
        match self.map.get(key) {
            Some(e) if now < e.fresh_until => Lookup::Fresh(e),
            Some(e) => Lookup::Stale(e),
            None if self.is_absent(key) => Lookup::Absent,
            None => Lookup::Miss,
        }
    }

    fn is_absent(&self, key: &str) -> bool {
        self.absent.as_ref().is_some_and(|a| a.contains_key(key))
    }

    /// Fills `key` with `fetch`, collapsing concurrent calls: while a fill for `key` runs,
    /// later callers wait for it instead of starting their own. The fetch runs on its own
    /// task, so a client that goes away does not cancel it for the others. Returns the
    /// result and whether this caller started the fetch.
    pub async fn fill<F>(self: &Arc<Self>, key: &str, fetch: F) -> (FillResult, bool)
    where
        F: Future<Output = FillResult> + Send + 'static,
    {
        let (fut, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = inflight.get(key) {
                (f.clone(), false)
            } else if let Some(e) = self.map.get(key).filter(|e| Instant::now() < e.fresh_until) {
                // A fill finished between our lookup and taking the lock.
                return (Ok(Fill::Stored(e)), false);
            } else if self.is_absent(key) {
                return (Err(FillError::NotFound), false);
            } else {
                let this = Arc::clone(self);
                let owned: Box<str> = key.into();
                let k2 = owned.clone();
                let epoch = self.purges.load(Ordering::Acquire);
                let (tx, rx) = tokio::sync::oneshot::channel::<FillResult>();
                tokio::spawn(async move {
                    // Removes the in-flight marker when the task ends, even by a panic.
                    let _marker = Marker {
                        cache: Arc::clone(&this),
                        key: k2.clone(),
                    };
                    let res = fetch.await;
                    // Waiters get the result now; a streaming fill keeps its in-flight
                    // marker until the body is complete, so later requests join it.
                    let _ = tx.send(res.clone());
                    let stored = match &res {
                        Ok(Fill::Stored(e)) => Some(Arc::clone(e)),
                        Ok(Fill::Streaming(f)) => f.finished().await,
                        _ => None,
                    };
                    if this.purges.load(Ordering::Acquire) == epoch {
                        if let Some(e) = stored {
                            this.map.insert(k2.clone(), e);
                        } else if let (Err(FillError::NotFound), Some(a)) = (&res, &this.absent) {
                            a.insert(k2.clone(), ());
                        }
                    }
                    // `_marker` drops here: the entry is in before the in-flight marker
                    // goes, so no caller sees neither.
                });
                let fut = async move {
                    rx.await
                        .unwrap_or_else(|_| Err(FillError::Unavailable("fill task ended".into())))
                }
                .boxed()
                .shared();
                inflight.insert(owned, fut.clone());
                (fut, true)
            }
        };
        (fut.await, leader)
    }

    /// Drops `key`.
    pub fn invalidate(&self, key: &str) {
        self.map.invalidate(key);
    }

    /// Drops every key that starts with `prefix` (a purge), including what fills already
    /// in flight would store. Returns how many entries were dropped.
    pub fn invalidate_prefix(&self, prefix: &str) -> usize {
        self.purges.fetch_add(1, Ordering::AcqRel);
        let n = drop_prefix(&self.map, prefix);
        if let Some(absent) = &self.absent {
            drop_prefix(absent, prefix);
        }
        n
    }

    /// Bytes currently charged against the budget.
    pub fn weighted_size(&self) -> u64 {
        self.map.run_pending_tasks();
        self.map.weighted_size()
    }

    /// Entries currently held.
    pub fn entry_count(&self) -> u64 {
        self.map.entry_count()
    }

    /// Fills currently in flight.
    pub fn inflight(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn entry(body: &'static [u8], ttl: u64) -> Arc<Entry> {
        Arc::new(Entry::new(
            Bytes::from_static(body),
            Instant::now(),
            Duration::from_millis(ttl),
            Duration::from_secs(60),
        ))
    }

    #[tokio::test]
    async fn concurrent_fills_collapse_into_one_fetch() {
        let cache = Arc::new(Cache::new(1 << 20, Duration::ZERO));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let cache = Arc::clone(&cache);
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                let fetch = async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Fill::Stored(entry(b"body", 10_000)))
                };
                cache.fill("k", fetch).await
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (res, leader) = t.await.unwrap();
            leaders += usize::from(leader);
            assert!(matches!(res, Ok(Fill::Stored(e)) if &e.body[..] == b"body"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert!(matches!(
            cache.lookup("k", Instant::now()),
            Lookup::Fresh(_)
        ));
        assert_eq!(cache.inflight(), 0);
    }

    #[tokio::test]
    async fn entries_go_stale_then_errors_are_shared() {
        let cache = Arc::new(Cache::new(1 << 20, Duration::ZERO));
        let (res, _) = cache
            .fill("k", async { Ok(Fill::Stored(entry(b"x", 1))) })
            .await;
        assert!(res.is_ok());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(
            cache.lookup("k", Instant::now()),
            Lookup::Stale(_)
        ));
        let (res, _) = cache.fill("k", async { Err(FillError::Timeout) }).await;
        assert_eq!(res.unwrap_err(), FillError::Timeout);
        // A failed refill leaves the stale entry in place for stale-if-error.
        assert!(matches!(
            cache.lookup("k", Instant::now()),
            Lookup::Stale(_)
        ));
    }

    #[test]
    fn byte_budget_evicts() {
        let cache = Cache::new(10_000, Duration::ZERO);
        for i in 0..100 {
            let body = Bytes::from(vec![0u8; 1000]);
            let e = Arc::new(Entry::new(
                body,
                Instant::now(),
                Duration::from_secs(60),
                Duration::ZERO,
            ));
            cache.map.insert(format!("k{i}").into(), e);
        }
        assert!(cache.weighted_size() <= 10_000, "{}", cache.weighted_size());
    }

    #[test]
    fn etag_depends_on_body() {
        let a = entry(b"a", 1);
        let b = entry(b"b", 1);
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag, entry(b"a", 5).etag);
    }

    #[tokio::test]
    async fn not_found_is_remembered_until_its_ttl_or_a_purge() {
        let cache = Arc::new(Cache::new(1 << 20, Duration::from_millis(200)));
        let calls = Arc::new(AtomicUsize::new(0));
        let missing = |calls: &Arc<AtomicUsize>| {
            let calls = Arc::clone(calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(FillError::NotFound)
            }
        };
        let (res, leader) = cache.fill("a/missing", missing(&calls)).await;
        assert_eq!(res.unwrap_err(), FillError::NotFound);
        assert!(leader);
        assert!(matches!(
            cache.lookup("a/missing", Instant::now()),
            Lookup::Absent
        ));
        // A fill that raced the lookup is answered from the negative entry, not the origin.
        let (res, leader) = cache.fill("a/missing", missing(&calls)).await;
        assert_eq!(res.unwrap_err(), FillError::NotFound);
        assert!(!leader);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Other failures are not remembered.
        let _ = cache
            .fill("a/down", async { Err(FillError::Timeout) })
            .await;
        assert!(matches!(
            cache.lookup("a/down", Instant::now()),
            Lookup::Miss
        ));
        // A purge of the prefix forgets the 404 at once.
        cache.invalidate_prefix("a/");
        assert!(matches!(
            cache.lookup("a/missing", Instant::now()),
            Lookup::Miss
        ));
        let _ = cache.fill("a/missing", missing(&calls)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // And the TTL ends it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(
            cache.lookup("a/missing", Instant::now()),
            Lookup::Miss
        ));
        // Zero turns negative caching off.
        let off = Arc::new(Cache::new(1 << 20, Duration::ZERO));
        let _ = off.fill("k", missing(&calls)).await;
        assert!(matches!(off.lookup("k", Instant::now()), Lookup::Miss));
    }

    #[tokio::test]
    async fn a_filling_streams_to_early_and_late_readers_and_ends_cleanly_or_broken() {
        use futures::StreamExt;
        let f = Arc::new(Filling::new(6));
        let early = f.stream();
        f.push(Bytes::from_static(b"abc"));
        let late = f.stream();
        let reader = tokio::spawn(early.map(|c| c.unwrap()).collect::<Vec<_>>());
        tokio::task::yield_now().await;
        f.push(Bytes::from_static(b"def"));
        assert!(f.entry().is_none());
        let e = entry(b"abcdef", 1000);
        f.finish(Ok(Arc::clone(&e)));
        assert_eq!(reader.await.unwrap().concat(), b"abcdef");
        let got: Vec<_> = late.map(|c| c.unwrap()).collect().await;
        assert_eq!(got.concat(), b"abcdef");
        assert_eq!(f.assemble(), Bytes::from_static(b"abcdef"));
        assert!(f.entry().is_some());
        assert!(f.finished().await.is_some());

        // A broken fill: every reader gets what arrived, then an error, then the end.
        let f = Arc::new(Filling::new(6));
        f.push(Bytes::from_static(b"abc"));
        let s = f.stream();
        f.finish(Err("origin died".into()));
        let items: Vec<_> = s.collect().await;
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok() && items[1].is_err());
        assert!(f.finished().await.is_none());
    }
}
