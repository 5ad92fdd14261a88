//! The etcd store: conditional writes are etcd transactions comparing `mod_revision`;
//! watches are etcd watches with progress notices, resumed by revision.
//!
//! Every call goes through [`pool`]: one connection per member, the pinned member first,
//! per-attempt deadlines, and retries on another member. Reads, lease renewals and
//! revocations are retried through any failure. A transaction is retried freely while it
//! cannot have reached a member; once its answer was lost it may have committed, so the
//! retry checks for its own write (see [`EtcdStore::txn`]) instead of writing twice or
//! reporting its own commit as a conflict. Watches fail over in [`watch`].
//!
//! [`EtcdStore::connect_with`] never waits for the cluster: a store made while every
//! member is down answers `Unavailable` until one comes back. It fails only when a member
//! refuses our credentials ([`StoreError::Denied`]), so a wrong password or certificate is
//! reported at start.

pub mod config;
mod diagnose;
mod pool;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use futures::StreamExt;
use tokio::time::Instant;

pub use config::{Credentials, EtcdConfig, EtcdTls};
use pool::{Gave, Pool, Retry};

use super::{Batch, Guard, LeaseId, Op, Store, StoreError, Versioned, WatchStream};

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.pool.endpoints().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether the members could be asked at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// A member answered a read.
    Answered,
    /// No member answered within the dial timeout (why, per member).
    Unreachable(String),
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// etcd answers `NOT_FOUND` ("requested lease not found") for a put or renewal under a
/// lease it no longer has.
fn lease_error(e: etcd_client::Error, lease: LeaseId) -> StoreError {
    match &e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::NotFound => {
            StoreError::LeaseExpired(lease)
        }
        _ => unavailable(e),
    }
}

fn gave(g: Gave) -> StoreError {
    match g {
        Gave::Error(e) => e,
        Gave::Final(e) => unavailable(e),
        Gave::Ambiguous(m) => StoreError::Unavailable(m),
    }
}

fn versioned(kv: &KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        version: kv.mod_revision(),
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`) with every default.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        Self::connect_with(&EtcdConfig::new(endpoints.to_vec())).await
    }

    /// A store on the cluster `cfg` describes. Asks the members once (within the dial
    /// timeout): a refusal of our credentials or certificate is an error
    /// ([`StoreError::Denied`]); members that do not answer are not (the store retries them
    /// on every call).
    pub async fn connect_with(cfg: &EtcdConfig) -> Result<Self, StoreError> {
        let store = Self {
            pool: Arc::new(Pool::new(cfg.clone())?),
        };
        Pool::spawn_prober(&store.pool, Duration::from_secs(1));
        if let Reach::Unreachable(why) = store.probe(cfg.dial_timeout).await? {
            tracing::warn!(%why, "etcd unreachable at start; retrying on every call");
        }
        Ok(store)
    }

    /// Asks every member at once for one key under the prefix, until one answers or
    /// `within` passes. A refusal of our credentials is an error.
    pub async fn probe(&self, within: Duration) -> Result<Reach, StoreError> {
        let deadline = Instant::now() + within;
        let n = self.pool.endpoints().count();
        let mut asks: futures::stream::FuturesUnordered<_> = (0..n)
            .map(|i| {
                let pool = Arc::clone(&self.pool);
                async move {
                    let ask = async {
                        let mut c = pool.client_of(i).await?;
                        c.get(
                            super::PREFIX,
                            Some(GetOptions::new().with_keys_only().with_limit(1)),
                        )
                        .await
                        .map_err(pool::classify)
                    };
                    let r = match tokio::time::timeout_at(deadline, ask).await {
                        Ok(r) => r,
                        Err(_) => Err(pool::Fault::NotSent("no answer".into())),
                    };
                    (i, r)
                }
            })
            .collect();
        let mut why = Vec::new();
        while let Some((i, r)) = asks.next().await {
            let endpoint = self.pool.endpoint(i).to_owned();
            match r {
                Ok(_) => {
                    self.pool.answered(i);
                    return Ok(Reach::Answered);
                }
                Err(pool::Fault::Denied(m)) => {
                    return Err(StoreError::Denied(format!("{endpoint}: {m}")));
                }
                Err(pool::Fault::Final(e)) => {
                    return Err(StoreError::Denied(format!("{endpoint}: {e}")));
                }
                Err(pool::Fault::NotSent(m) | pool::Fault::Lost(m)) => {
                    // A TLS member that takes the connection and then drops it may be
                    // refusing our certificate; find out before calling it an outage.
                    if let Some(tls) = &self.pool.cfg.tls
                        && let Some(refusal) = diagnose::tls_refusal(&endpoint, tls).await
                    {
                        return Err(StoreError::Denied(format!("{endpoint}: {refusal}")));
                    }
                    self.pool.failed(i);
                    why.push(format!("{endpoint}: {m}"));
                }
            }
        }
        Ok(Reach::Unreachable(why.join("; ")))
    }

    /// A client of the first member that answers (tests use it to compact, or to look at
    /// the cluster).
    pub async fn client(&self) -> Result<Client, StoreError> {
        self.pool
            .call(Retry::Idempotent, |c| async move { Ok(c) })
            .await
            .map_err(gave)
    }

    /// The endpoint of the member calls go to first (the last one that answered).
    pub fn current_endpoint(&self) -> String {
        self.pool.endpoint(self.pool.pinned()).to_owned()
    }

    fn guard(g: &Guard) -> Compare {
        if g.expected == 0 {
            // An absent key has version 0.
            Compare::version(g.key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(g.key.as_str(), CompareOp::Equal, g.expected)
        }
    }

    /// Reads `keys` at one revision: their values (`None`: absent) and that revision.
    async fn read_back(&self, keys: &[&str]) -> Result<(Vec<Option<Found>>, i64), StoreError> {
        let gets: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(*k, None)).collect();
        let resp = self
            .pool
            .call(Retry::Idempotent, |mut c| {
                let t = Txn::new().and_then(gets.clone());
                async move { c.txn(t).await }
            })
            .await
            .map_err(gave)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((first_kvs(&resp), rev))
    }
}

/// What a read found of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    value: Vec<u8>,
    revision: i64,
    lease: LeaseId,
}

/// The first key-value of each get in a transaction's answer.
fn first_kvs(resp: &TxnResponse) -> Vec<Option<Found>> {
    resp.op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| Found {
                value: kv.value().to_vec(),
                revision: kv.mod_revision(),
                lease: kv.lease(),
            }),
            _ => None,
        })
        .collect()
}

/// Whether the store holds exactly what `ops` wrote, all in one commit: every put's key at
/// its value and lease, at one revision, and every deleted key absent. Returns that
/// revision (`read_at` when the ops only delete). This is how a transaction whose answer
/// was lost recognises its own commit.
fn applied(ops: &[Op], found: &[Option<Found>], read_at: i64) -> Option<i64> {
    let mut rev = None;
    for (op, kv) in ops.iter().zip(found) {
        match op {
            Op::Put { value, lease, .. } => {
                let kv = kv.as_ref()?;
                if kv.value != *value || kv.lease != lease.unwrap_or(0) {
                    return None;
                }
                match rev {
                    None => rev = Some(kv.revision),
                    Some(r) if r != kv.revision => return None,
                    Some(_) => {}
                }
            }
            Op::Delete { .. } => {
                if kv.is_some() {
                    return None;
                }
            }
        }
    }
    if ops.is_empty() {
        return None;
    }
    Some(rev.unwrap_or(read_at))
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let resp = self
            .pool
            .call(
                Retry::Idempotent,
                |mut c| async move { c.get(key, None).await },
            )
            .await
            .map_err(gave)?;
        Ok(resp.kvs().first().map(versioned))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StoreError> {
        let resp = self
            .pool
            .call(Retry::Idempotent, |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await
            .map_err(gave)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let items = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    versioned(kv),
                )
            })
            .collect();
        Ok((items, rev))
    }

    /// Commits `ops` if the guards hold. When an attempt's answer is lost (the member died
    /// or froze with the request in flight, or the leader changed under it), the attempt
    /// may have committed. The next attempt then checks for its own commit: an unguarded
    /// transaction reads its keys back before writing again, and a guarded one whose
    /// guards fail looks at what failed them (read in the same transaction); when every key
    /// holds what this transaction wrote, at one revision, that commit was its own and is
    /// reported as success. (Deletes leave no trace: a delete-only transaction whose keys
    /// are gone is reported done.)
    async fn txn(&self, guards: &[Guard], ops: Vec<Op>) -> Result<i64, StoreError> {
        let lease = ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            Op::Delete { .. } => None,
        });
        let keys: Vec<&str> = ops.iter().map(Op::key).collect();
        let writes: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => TxnOp::put(
                    key.as_str(),
                    value.clone(),
                    lease.map(|l| PutOptions::new().with_lease(l)),
                ),
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let compares: Vec<Compare> = guards.iter().map(Self::guard).collect();
        // On failure: every guarded key, then every written key.
        let reads: Vec<TxnOp> = guards
            .iter()
            .map(|g| g.key.as_str())
            .chain(keys.iter().copied())
            .map(|k| TxnOp::get(k, None))
            .collect();
        let deadline = Instant::now() + self.pool.cfg.retry_timeout;
        let mut lost: Option<String> = None;
        loop {
            if lost.is_some() && guards.is_empty() {
                let (found, at) = self.read_back(&keys).await?;
                if let Some(rev) = applied(&ops, &found, at) {
                    tracing::info!(revision = rev, "etcd write confirmed by reading it back");
                    return Ok(rev);
                }
            }
            let r = self
                .pool
                .call(Retry::UntilSent, |mut c| {
                    let t = Txn::new()
                        .when(compares.clone())
                        .and_then(writes.clone())
                        .or_else(reads.clone());
                    async move { c.txn(t).await }
                })
                .await;
            let resp = match r {
                Ok(resp) => resp,
                Err(Gave::Ambiguous(why)) => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::Unavailable(format!(
                            "etcd did not confirm the write within {:?}; it may or may not have been applied ({why})",
                            self.pool.cfg.retry_timeout
                        )));
                    }
                    tracing::debug!(%why, "etcd write answer lost; checking and retrying");
                    lost = Some(why);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(Gave::Final(e)) => {
                    return Err(match lease {
                        Some(l) => lease_error(e, l),
                        None => unavailable(e),
                    });
                }
                Err(Gave::Error(e)) => return Err(e),
            };
            let rev = resp.header().map_or(0, |h| h.revision());
            if resp.succeeded() {
                return Ok(rev);
            }
            let found = first_kvs(&resp);
            let (current, written) = found.split_at(guards.len().min(found.len()));
            if lost.is_some()
                && let Some(rev) = applied(&ops, written, rev)
            {
                tracing::info!(
                    revision = rev,
                    "etcd write confirmed: its own commit failed the retry's guard"
                );
                return Ok(rev);
            }
            // Name the first guard that moved.
            for (g, kv) in guards.iter().zip(current) {
                let now = kv.as_ref().map_or(0, |f| f.revision);
                if now != g.expected {
                    return Err(StoreError::Conflict {
                        key: g.key.clone(),
                        expected: g.expected,
                        current: now,
                    });
                }
            }
            // A guard failed between the compare and the read; report the first one.
            let g = guards.first().cloned().unwrap_or(Guard {
                key: String::new(),
                expected: 0,
            });
            return Err(StoreError::Conflict {
                key: g.key,
                expected: g.expected,
                current: -1,
            });
        }
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs().max(1) as i64;
        // A grant whose answer was lost leaves an unused lease behind; it expires alone.
        let resp = self
            .pool
            .call(Retry::Idempotent, |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await
            .map_err(gave)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let alive = self
            .pool
            .call(Retry::Idempotent, |mut c| async move {
                // Opening the keep-alive stream sends one renewal and reads its answer.
                match c.lease_keep_alive(lease).await {
                    Ok(_) => Ok(true),
                    // A TTL of zero is how etcd says "not found"; the client reports it as
                    // a keep-alive error, as it does a broken stream, so ask the lease.
                    Err(etcd_client::Error::LeaseKeepAliveError(m)) => {
                        let r = c.lease_time_to_live(lease, None).await?;
                        if r.ttl() <= 0 {
                            Ok(false)
                        } else {
                            Err(etcd_client::Error::LeaseKeepAliveError(m))
                        }
                    }
                    Err(e) => Err(e),
                }
            })
            .await;
        match alive {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::LeaseExpired(lease)),
            Err(Gave::Final(e)) => Err(lease_error(e, lease)),
            Err(g) => Err(gave(g)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self
            .pool
            .call(Retry::Idempotent, |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(Gave::Final(e)) => match lease_error(e, lease) {
                StoreError::LeaseExpired(_) => Ok(()),
                other => Err(other),
            },
            Err(g) => Err(gave(g)),
        }
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream, StoreError> {
        let mut w = watch::Watcher::new(Arc::clone(&self.pool), prefix, after);
        // Open it now, so an unreachable cluster is reported to the caller.
        w.open().await?;
        let batches = futures::stream::unfold(w, |mut w| async move {
            let item: Result<Batch, StoreError> = w.next().await?;
            Some((item, w))
        });
        Ok(batches.boxed())
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod security_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_recognised_only_when_every_key_holds_what_it_wrote() {
        let kv = |value: &[u8], revision: i64, lease: i64| {
            Some(Found {
                value: value.to_vec(),
                revision,
                lease,
            })
        };
        let ops = vec![
            Op::put("/a", b"1".to_vec()),
            Op::put_leased("/b", b"2".to_vec(), 7),
            Op::delete("/c"),
        ];
        assert_eq!(
            applied(&ops, &[kv(b"1", 9, 0), kv(b"2", 9, 7), None], 12),
            Some(9)
        );
        // Another value, another lease, two revisions, or a delete that did not happen.
        assert_eq!(
            applied(&ops, &[kv(b"x", 9, 0), kv(b"2", 9, 7), None], 12),
            None
        );
        assert_eq!(
            applied(&ops, &[kv(b"1", 9, 0), kv(b"2", 9, 8), None], 12),
            None
        );
        assert_eq!(
            applied(&ops, &[kv(b"1", 9, 0), kv(b"2", 10, 7), None], 12),
            None
        );
        assert_eq!(
            applied(&ops, &[kv(b"1", 9, 0), kv(b"2", 9, 7), kv(b"3", 5, 0)], 12),
            None
        );
        assert_eq!(applied(&ops, &[None, kv(b"2", 9, 7), None], 12), None);
        assert_eq!(applied(&[Op::delete("/c")], &[None], 12), Some(12));
        assert_eq!(applied(&[], &[], 12), None);
    }

    fn arb_ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
        use proptest::prelude::*;
        proptest::collection::vec(
            (
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::option::of(1i64..4),
            ),
            1..6,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (put, value, lease))| {
                    let key = format!("/k{i}");
                    match (put, lease) {
                        (true, Some(l)) => Op::put_leased(key, value, l),
                        (true, None) => Op::put(key, value),
                        (false, _) => Op::delete(key),
                    }
                })
                .collect()
        })
    }

    /// What the store holds right after `ops` committed at `rev`.
    fn after_commit(ops: &[Op], rev: i64) -> Vec<Option<Found>> {
        ops.iter()
            .map(|op| match op {
                Op::Put { value, lease, .. } => Some(Found {
                    value: value.clone(),
                    revision: rev,
                    lease: lease.unwrap_or(0),
                }),
                Op::Delete { .. } => None,
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn its_own_commit_is_recognised_and_any_other_write_is_not(
            ops in arb_ops(),
            rev in 1i64..1000,
            which in 0usize..6,
            how in 0u8..4,
        ) {
            let found = after_commit(&ops, rev);
            let puts = ops.iter().any(|o| matches!(o, Op::Put { .. }));
            proptest::prop_assert_eq!(applied(&ops, &found, rev + 5), Some(if puts { rev } else { rev + 5 }));
            // Someone else's write to any one key (another value, revision, lease, or a
            // key that should be gone but is there) is not our commit.
            let i = which % ops.len();
            let mut other = found.clone();
            other[i] = match (&other[i], how) {
                (Some(f), 0) => Some(Found { value: [f.value.as_slice(), b"x"].concat(), ..f.clone() }),
                (Some(f), 1) => Some(Found { revision: f.revision + 1, ..f.clone() }),
                (Some(f), 2) => Some(Found { lease: f.lease + 1, ..f.clone() }),
                (Some(_), _) => None,
                (None, _) => Some(Found { value: b"v".to_vec(), revision: rev, lease: 0 }),
            };
            let only_revision_moved = how == 1 && ops.iter().filter(|o| matches!(o, Op::Put { .. })).count() == 1;
            if !only_revision_moved {
                proptest::prop_assert_eq!(applied(&ops, &other, rev + 5), None);
            }
        }
    }
}
