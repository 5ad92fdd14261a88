//! The embedded store for `dev` and single-node use: the same conditional-write semantics
//! as etcd, kept in memory and persisted as an append-only log of JSON lines, one line per
//! transaction. A write is acknowledged only after its line is on disk (`fdatasync`); a torn
//! last line from a crash is dropped at open, so no acknowledged write is lost.
//!
//! Watches are served from a bounded in-memory history (the last [`HISTORY`] changes since
//! the store opened) plus a broadcast of new commits. A watcher that asks for older history,
//! or falls too far behind, gets [`StoreError::Compacted`] and lists again, as with etcd.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, broadcast};

use super::{Batch, Event, Guard, Op, Store, StoreError, Versioned, WatchStream};

/// How many changes the store remembers for watchers that resume.
pub const HISTORY: usize = 4096;

struct State {
    map: BTreeMap<String, Versioned>,
    revision: i64,
    log: std::fs::File,
    history: VecDeque<Event>,
    /// Changes at or before this revision are no longer in `history`.
    compacted: i64,
}

/// A single-process store persisted to `path`.
pub struct EmbeddedStore {
    path: PathBuf,
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Batch>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn log_err(path: &Path, message: impl ToString) -> StoreError {
    StoreError::Log {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Applies one logged operation (`{"op": "put"|"del", "key", "value"?}`) to `map`.
fn replay_op(
    map: &mut BTreeMap<String, Versioned>,
    v: &Value,
    rev: i64,
    path: &Path,
) -> Result<(), StoreError> {
    let key = v["key"]
        .as_str()
        .ok_or_else(|| log_err(path, "record without key"))?
        .to_owned();
    match v["op"].as_str() {
        Some("put") => {
            let value = STANDARD
                .decode(v["value"].as_str().unwrap_or_default())
                .map_err(|e| log_err(path, e))?;
            map.insert(
                key,
                Versioned {
                    value,
                    version: rev,
                },
            );
        }
        Some("del") => {
            map.remove(&key);
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
        let mut map = BTreeMap::new();
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
            match v.get("ops").and_then(Value::as_array) {
                Some(ops) => {
                    for op in ops {
                        replay_op(&mut map, op, rev, path)?;
                    }
                }
                // Single-operation records, as written before transactions existed.
                None => replay_op(&mut map, &v, rev, path)?,
            }
            revision = rev;
            good_len += line.len();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| log_err(path, e))?;
        log.set_len(good_len as u64).map_err(|e| log_err(path, e))?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(State {
                map,
                revision,
                log,
                history: VecDeque::new(),
                compacted: revision,
            }),
            live: broadcast::channel(1024).0,
        })
    }

    fn append(&self, st: &mut State, record: &Value) -> Result<(), StoreError> {
        let mut line = record.to_string();
        line.push('\n');
        st.log
            .write_all(line.as_bytes())
            .map_err(|e| log_err(&self.path, e))?;
        st.log.sync_data().map_err(|e| log_err(&self.path, e))
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
        Ok(self.state.lock().await.map.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StoreError> {
        let st = self.state.lock().await;
        let items = st
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok((items, st.revision))
    }

    async fn txn(&self, guards: &[Guard], ops: Vec<Op>) -> Result<i64, StoreError> {
        let mut st = self.state.lock().await;
        check(&st, guards)?;
        let rev = st.revision + 1;
        let record: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => {
                    json!({"op": "put", "key": key, "value": STANDARD.encode(value)})
                }
                Op::Delete { key } => json!({"op": "del", "key": key}),
            })
            .collect();
        self.append(&mut st, &json!({"rev": rev, "ops": record}))?;
        st.revision = rev;
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value } => {
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
                    if st.map.remove(&key).is_some() {
                        events.push(Event::Delete { key, version: rev });
                    }
                }
            }
        }
        remember(&mut st, &events);
        // No watcher is fine.
        let _ = self.live.send(Arc::new(Batch {
            revision: rev,
            events,
        }));
        Ok(rev)
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream, StoreError> {
        let st = self.state.lock().await;
        if after < st.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: st.compacted,
            });
        }
        // Subscribed under the lock: no commit falls between the replay and the live feed.
        let rx = self.live.subscribe();
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
