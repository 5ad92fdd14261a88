//! The embedded store for `dev` and single-node use: the same conditional-write semantics
//! as etcd, kept in memory and persisted as an append-only log of JSON lines, one line per
//! transaction. A write is acknowledged only after its line is on disk (`fdatasync`); a torn
//! last line from a crash is dropped at open, so no acknowledged write is lost.
//!
//! Leases behave as etcd's: a key put under a lease is deleted, as a new revision with a
//! delete event, when the lease expires or is revoked; a put without a lease detaches the
//! key. Grants and revocations are logged; renewals are not, so after a restart every
//! lease starts a fresh TTL (as etcd does after a leader change) and expires unless its
//! holder keeps it alive. A background task (started on first use) expires leases on time.
//!
//! Watches are served from a bounded in-memory history (the last [`HISTORY`] changes since
//! the store opened) plus a broadcast of new commits. A watcher that asks for older history,
//! or falls too far behind, gets [`StoreError::Compacted`] and lists again, as with etcd.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, broadcast};
use tokio::time::Instant;

use super::{Batch, Event, Guard, LeaseId, Op, Store, StoreError, Versioned, WatchStream};

/// How many changes the store remembers for watchers that resume.
pub const HISTORY: usize = 4096;

struct State {
    map: BTreeMap<String, Versioned>,
    revision: i64,
    log: std::fs::File,
    history: VecDeque<Event>,
    /// Changes at or before this revision are no longer in `history`.
    compacted: i64,
    leases: HashMap<LeaseId, LeaseState>,
    /// The lease each leased key lives under.
    key_lease: HashMap<String, LeaseId>,
    next_lease: LeaseId,
}

struct LeaseState {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// A single-process store persisted to `path`.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Batch>>,
    reaper: AtomicBool,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn log_err(path: &Path, message: impl ToString) -> StoreError {
    StoreError::Log {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// What a log replay builds.
#[derive(Default)]
struct Replayed {
    map: BTreeMap<String, Versioned>,
    /// Leases by id, with their TTL and keys.
    leases: HashMap<LeaseId, (Duration, BTreeSet<String>)>,
    key_lease: HashMap<String, LeaseId>,
    max_lease: LeaseId,
}

impl Replayed {
    fn detach(&mut self, key: &str) {
        if let Some(l) = self.key_lease.remove(key)
            && let Some((_, keys)) = self.leases.get_mut(&l)
        {
            keys.remove(key);
        }
    }
}

/// Replays a log: the state it holds, the revision of its last record, and the length of
/// its whole records (a torn last line, from a crash mid-write, is left out). Pure; fuzzed:
/// any bytes give a state or an error naming `path`, never a panic.
fn replay(text: &[u8], path: &Path) -> Result<(Replayed, i64, usize), StoreError> {
    let mut r = Replayed::default();
    let mut revision = 0;
    let mut good_len = 0usize;
    for line in text.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break; // torn tail: the write was never acknowledged
        }
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| log_err(path, format!("corrupt record: {e}")))?;
        let rev = v["rev"]
            .as_i64()
            .ok_or_else(|| log_err(path, "record without rev"))?;
        if rev < revision {
            return Err(log_err(path, "revisions go backwards"));
        }
        if let Some(id) = v["grant"].as_i64() {
            let ttl = Duration::from_millis(v["ttl_ms"].as_u64().unwrap_or(1000));
            r.leases.insert(id, (ttl, BTreeSet::new()));
            r.max_lease = r.max_lease.max(id);
        } else if let Some(ops) = v.get("ops").and_then(Value::as_array) {
            for op in ops {
                replay_op(&mut r, op, rev, path)?;
            }
        } else if v.get("op").is_some() {
            // Single-operation records, as written before transactions existed.
            replay_op(&mut r, &v, rev, path)?;
        }
        if let Some(id) = v["revoke"].as_i64()
            && let Some((_, keys)) = r.leases.remove(&id)
        {
            for k in keys {
                r.key_lease.remove(&k);
            }
        }
        revision = rev;
        good_len += line.len();
    }
    Ok((r, revision, good_len))
}

/// Checks a log's bytes as [`EmbeddedStore::open`] would, without a file: the number of
/// keys it holds and its revision, or the error. For the fuzz target.
pub fn check_log(text: &[u8]) -> Result<(usize, i64), StoreError> {
    let (r, revision, _) = replay(text, Path::new("<fuzz>"))?;
    Ok((r.map.len(), revision))
}

/// Applies one logged operation (`{"op": "put"|"del", "key", "value"?, "lease"?}`).
fn replay_op(r: &mut Replayed, v: &Value, rev: i64, path: &Path) -> Result<(), StoreError> {
    let key = v["key"]
        .as_str()
        .ok_or_else(|| log_err(path, "record without key"))?
        .to_owned();
    match v["op"].as_str() {
        Some("put") => {
            let value = STANDARD
                .decode(v["value"].as_str().unwrap_or_default())
                .map_err(|e| log_err(path, e))?;
            r.detach(&key);
            if let Some(l) = v["lease"].as_i64() {
                let (_, keys) = r
                    .leases
                    .get_mut(&l)
                    .ok_or_else(|| log_err(path, "put under a lease never granted"))?;
                keys.insert(key.clone());
                r.key_lease.insert(key.clone(), l);
            }
            r.map.insert(
                key,
                Versioned {
                    value,
                    version: rev,
                },
            );
        }
        Some("del") => {
            r.detach(&key);
            r.map.remove(&key);
        }
        _ => return Err(log_err(path, "record with an unknown op")),
    }
    Ok(())
}

impl EmbeddedStore {
    /// Opens (or creates) the store log at `path` and replays it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| log_err(path, e))?;
        }
        let text = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(log_err(path, e)),
        };
        let (r, revision, good_len) = replay(&text, path)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| log_err(path, e))?;
        log.set_len(good_len as u64).map_err(|e| log_err(path, e))?;
        // Every lease restarts its TTL now, as etcd's do after a leader change.
        let now = Instant::now();
        let leases = r
            .leases
            .into_iter()
            .map(|(id, (ttl, keys))| {
                let deadline = now + ttl;
                (
                    id,
                    LeaseState {
                        ttl,
                        deadline,
                        keys,
                    },
                )
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                state: Mutex::new(State {
                    map: r.map,
                    revision,
                    log,
                    history: VecDeque::new(),
                    compacted: revision,
                    leases,
                    key_lease: r.key_lease,
                    next_lease: r.max_lease + 1,
                }),
                live: broadcast::channel(1024).0,
                reaper: AtomicBool::new(false),
                wake: Arc::new(Notify::new()),
            }),
        })
    }

    /// Locks the state after expiring the leases that are due, and makes sure the task
    /// that expires them on time runs.
    async fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, State>, StoreError> {
        if !self.inner.reaper.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(&self.inner)));
        }
        let mut st = self.inner.state.lock().await;
        self.inner.expire(&mut st, Instant::now())?;
        Ok(st)
    }
}

/// Expires leases on time while the store lives.
async fn reap(inner: Weak<Inner>) {
    loop {
        let Some(store) = inner.upgrade() else { return };
        let next = {
            let mut st = store.state.lock().await;
            if let Err(e) = store.expire(&mut st, Instant::now()) {
                tracing::error!(error = %e, "embedded store: expiring leases failed");
            }
            st.leases.values().map(|l| l.deadline).min()
        };
        let cap = Instant::now() + Duration::from_secs(1);
        let until = next.map_or(cap, |d| d.min(cap));
        // Holding only a weak reference while asleep lets the store be dropped.
        let wake = Arc::clone(&store.wake);
        drop(store);
        let _ = tokio::time::timeout_at(until, wake.notified()).await;
    }
}

impl Inner {
    fn append(&self, st: &mut State, record: &Value) -> Result<(), StoreError> {
        let mut line = record.to_string();
        line.push('\n');
        st.log
            .write_all(line.as_bytes())
            .map_err(|e| log_err(&self.path, e))?;
        st.log.sync_data().map_err(|e| log_err(&self.path, e))
    }

    /// Ends every lease whose deadline has passed.
    fn expire(&self, st: &mut State, now: Instant) -> Result<(), StoreError> {
        let due: Vec<LeaseId> = st
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.end_lease(st, id)?;
        }
        Ok(())
    }

    /// Removes lease `id` and deletes its keys in one revision (none if it had no keys).
    fn end_lease(&self, st: &mut State, id: LeaseId) -> Result<(), StoreError> {
        let Some(lease) = st.leases.get(&id) else {
            return Ok(());
        };
        let keys: Vec<String> = lease.keys.iter().cloned().collect();
        if keys.is_empty() {
            self.append(st, &json!({"rev": st.revision, "revoke": id}))?;
            st.leases.remove(&id);
            return Ok(());
        }
        let rev = st.revision + 1;
        let ops: Vec<Value> = keys
            .iter()
            .map(|k| json!({"op": "del", "key": k}))
            .collect();
        self.append(st, &json!({"rev": rev, "ops": ops, "revoke": id}))?;
        st.revision = rev;
        st.leases.remove(&id);
        let mut events = Vec::with_capacity(keys.len());
        for key in keys {
            st.key_lease.remove(&key);
            if st.map.remove(&key).is_some() {
                events.push(Event::Delete { key, version: rev });
            }
        }
        self.publish(st, rev, events);
        Ok(())
    }

    fn publish(&self, st: &mut State, rev: i64, events: Vec<Event>) {
        remember(st, &events);
        // No watcher is fine.
        let _ = self.live.send(Arc::new(Batch {
            revision: rev,
            events,
        }));
    }
}

impl State {
    fn detach(&mut self, key: &str) {
        if let Some(l) = self.key_lease.remove(key)
            && let Some(lease) = self.leases.get_mut(&l)
        {
            lease.keys.remove(key);
        }
    }
}

fn check(st: &State, guards: &[Guard]) -> Result<(), StoreError> {
    for g in guards {
        let current = st.map.get(&g.key).map_or(0, |v| v.version);
        if current != g.expected {
            return Err(StoreError::Conflict {
                key: g.key.clone(),
                expected: g.expected,
                current,
            });
        }
    }
    Ok(())
}

fn remember(st: &mut State, events: &[Event]) {
    st.history.extend(events.iter().cloned());
    while st.history.len() > HISTORY {
        // Forget whole revisions, so a resumed watch never sees half a transaction.
        let Some(old) = st.history.pop_front() else {
            break;
        };
        st.compacted = old.version();
        while st
            .history
            .front()
            .is_some_and(|e| e.version() == st.compacted)
        {
            st.history.pop_front();
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock().await?.map.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StoreError> {
        let st = self.lock().await?;
        let items = st
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok((items, st.revision))
    }

    async fn txn(&self, guards: &[Guard], ops: Vec<Op>) -> Result<i64, StoreError> {
        let mut st = self.lock().await?;
        check(&st, guards)?;
        for op in &ops {
            if let Op::Put { lease: Some(l), .. } = op
                && !st.leases.contains_key(l)
            {
                return Err(StoreError::LeaseExpired(*l));
            }
        }
        let rev = st.revision + 1;
        let record: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let mut r = json!({"op": "put", "key": key, "value": STANDARD.encode(value)});
                    if let Some(l) = lease {
                        r["lease"] = json!(l);
                    }
                    r
                }
                Op::Delete { key } => json!({"op": "del", "key": key}),
            })
            .collect();
        self.inner
            .append(&mut st, &json!({"rev": rev, "ops": record}))?;
        st.revision = rev;
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    st.detach(&key);
                    if let Some(l) = lease
                        && let Some(ls) = st.leases.get_mut(&l)
                    {
                        ls.keys.insert(key.clone());
                        st.key_lease.insert(key.clone(), l);
                    }
                    st.map.insert(
                        key.clone(),
                        Versioned {
                            value: value.clone(),
                            version: rev,
                        },
                    );
                    events.push(Event::Put {
                        key,
                        value,
                        version: rev,
                    });
                }
                Op::Delete { key } => {
                    st.detach(&key);
                    if st.map.remove(&key).is_some() {
                        events.push(Event::Delete { key, version: rev });
                    }
                }
            }
        }
        self.inner.publish(&mut st, rev, events);
        Ok(rev)
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl = Duration::from_secs(ttl.as_secs().max(1));
        let mut st = self.lock().await?;
        let id = st.next_lease;
        let rev = st.revision;
        self.inner.append(
            &mut st,
            &json!({"rev": rev, "grant": id, "ttl_ms": ttl.as_millis() as u64}),
        )?;
        st.next_lease += 1;
        st.leases.insert(
            id,
            LeaseState {
                ttl,
                deadline: Instant::now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        drop(st);
        self.inner.wake.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut st = self.lock().await?;
        let l = st
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseExpired(lease))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut st = self.lock().await?;
        self.inner.end_lease(&mut st, lease)
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream, StoreError> {
        let st = self.lock().await?;
        if after < st.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: st.compacted,
            });
        }
        // Subscribed under the lock: no commit falls between the replay and the live feed.
        let rx = self.inner.live.subscribe();
        let prefix = prefix.to_owned();
        let replay = Batch {
            revision: st.revision,
            events: st
                .history
                .iter()
                .filter(|e| e.version() > after && e.key().starts_with(&prefix))
                .cloned()
                .collect(),
        };
        let start = st.revision;
        drop(st);
        let live = futures::stream::unfold(Some((rx, start)), move |state| {
            let prefix = prefix.clone();
            async move {
                let (mut rx, seen) = state?;
                loop {
                    match rx.recv().await {
                        Ok(b) if b.revision <= seen => continue,
                        Ok(b) => {
                            let events = b
                                .events
                                .iter()
                                .filter(|e| e.key().starts_with(&prefix))
                                .cloned()
                                .collect();
                            let batch = Batch {
                                revision: b.revision,
                                events,
                            };
                            return Some((Ok(batch), Some((rx, b.revision))));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let err = StoreError::Compacted {
                                requested: seen,
                                compacted: seen,
                            };
                            return Some((Err(err), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(futures::stream::once(async move { Ok(replay) })
            .chain(live)
            .boxed())
    }
}
