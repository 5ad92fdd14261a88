//! The embedded store for `dev` and single-node use: the same conditional-write semantics
//! as etcd, kept in memory and persisted as an append-only log of JSON lines. A write is
//! acknowledged only after its line is on disk (`fdatasync`); a torn last line from a crash
//! is dropped at open, so no acknowledged write is lost.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{Store, StoreError, Versioned};

struct State {
    map: BTreeMap<String, Versioned>,
    revision: i64,
    log: std::fs::File,
}

/// A single-process store persisted to `path`.
pub struct EmbeddedStore {
    path: PathBuf,
    state: Mutex<State>,
}

fn log_err(path: &Path, message: impl ToString) -> StoreError {
    StoreError::Log {
        path: path.display().to_string(),
        message: message.to_string(),
    }
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
            state: Mutex::new(State { map, revision, log }),
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

fn check(st: &State, key: &str, expected: i64) -> Result<(), StoreError> {
    let current = st.map.get(key).map_or(0, |v| v.version);
    if current == expected {
        Ok(())
    } else {
        Err(StoreError::Conflict { expected, current })
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

    async fn put(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StoreError> {
        let mut st = self.state.lock().await;
        check(&st, key, expected)?;
        let rev = st.revision + 1;
        self.append(
            &mut st,
            &json!({"rev": rev, "op": "put", "key": key, "value": STANDARD.encode(&value)}),
        )?;
        st.revision = rev;
        st.map.insert(
            key.to_owned(),
            Versioned {
                value,
                version: rev,
            },
        );
        Ok(rev)
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<i64, StoreError> {
        let mut st = self.state.lock().await;
        check(&st, key, expected)?;
        let rev = st.revision + 1;
        self.append(&mut st, &json!({"rev": rev, "op": "del", "key": key}))?;
        st.revision = rev;
        st.map.remove(key);
        Ok(rev)
    }
}
