//! Elections: at most one holder at a time of a named role, bound to its lease.
//!
//! Work that must run once in a fleet (pruning dead edge records, the farm's scheduler)
//! runs in whichever process holds the role's key, `/streamgate/v1/elections/<name>`. A
//! candidate creates the key if it is absent, under its own [`KeptLease`]; the others
//! watch it and try again when it is deleted. The key vanishes when its holder's lease
//! expires (the holder died, froze or lost etcd) or is revoked (it resigned), so the role
//! moves on within the lease TTL. A holder stops acting as soon as [`KeptLease::lost`]
//! says its lease may have expired, which is never later than the store drops it.
//!
//! Only the [`Store`] trait is used, so `dev` on the embedded store elects itself the
//! same way.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::{Event, Guard, KeptLease, Op, PREFIX, Store, StoreError};

/// A role to campaign for.
#[derive(Clone)]
pub struct Election {
    store: Arc<dyn Store>,
    key: String,
    candidate: String,
    ttl: Duration,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("key", &self.key)
            .field("candidate", &self.candidate)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The key of the role `name`.
pub fn election_key(name: &str) -> String {
    format!("{PREFIX}elections/{name}")
}

/// Holding a role: the lease that keeps it.
#[derive(Debug)]
pub struct Leadership {
    lease: KeptLease,
    key: String,
    revision: i64,
}

impl Leadership {
    /// Turns true (for good) once the role may have moved on: stop acting then.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lease.lost()
    }

    /// Whether the role may have moved on.
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// The revision at which this holder took the role (a fencing number: later holders
    /// have higher ones).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The role's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Gives the role up at once (revoking the lease deletes the key).
    pub async fn resign(self, store: &dyn Store) -> Result<(), StoreError> {
        self.lease.revoke(store).await
    }
}

impl Election {
    /// Campaigns for `name` as `candidate` (shown to operators as the holder), with
    /// leases of `ttl`.
    pub fn new(store: Arc<dyn Store>, name: &str, candidate: &str, ttl: Duration) -> Self {
        Self {
            store,
            key: election_key(name),
            candidate: candidate.to_owned(),
            ttl,
        }
    }

    /// Who holds the role now.
    pub async fn holder(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&self.key)
            .await?
            .map(|v| String::from_utf8_lossy(&v.value).into_owned()))
    }

    /// Waits until this candidate holds the role. Store failures are returned (the caller
    /// retries with backoff).
    pub async fn campaign(&self) -> Result<Leadership, StoreError> {
        let mut lease = KeptLease::grant(Arc::clone(&self.store), self.ttl).await?;
        loop {
            if lease.is_lost() {
                lease = KeptLease::grant(Arc::clone(&self.store), self.ttl).await?;
            }
            let guard = Guard {
                key: self.key.clone(),
                expected: 0,
            };
            let op = Op::put_leased(
                self.key.clone(),
                self.candidate.clone().into_bytes(),
                lease.id(),
            );
            match self.store.txn(&[guard], vec![op]).await {
                Ok(revision) => {
                    tracing::info!(key = %self.key, candidate = %self.candidate, revision, "elected");
                    return Ok(Leadership {
                        lease,
                        key: self.key.clone(),
                        revision,
                    });
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(StoreError::LeaseExpired(_)) => {
                    lease = KeptLease::grant(Arc::clone(&self.store), self.ttl).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            self.wait_vacant(&lease).await?;
        }
    }

    /// Returns once the role's key is absent (or our lease may be lost, to get a new one).
    async fn wait_vacant(&self, lease: &KeptLease) -> Result<(), StoreError> {
        let (items, rev) = self.store.list(&self.key).await?;
        if !items.iter().any(|(k, _)| *k == self.key) {
            return Ok(());
        }
        let mut stream = self.store.watch(&self.key, rev).await?;
        let mut lost = lease.lost();
        loop {
            tokio::select! {
                b = stream.next() => match b {
                    Some(Ok(b)) => {
                        if b.events.iter().any(|e| matches!(e, Event::Delete { key, .. } if *key == self.key)) {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(StoreError::Unavailable("election watch ended".into())),
                },
                _ = lost.changed() => return Ok(()),
            }
        }
    }
}

/// Runs `work` whenever this process holds the role, until `shutdown` completes: campaign,
/// run `work` until the role may be lost (then `work` is dropped, stopping it), campaign
/// again. Store failures are retried with backoff. On shutdown the role is resigned so
/// another process takes it over at once.
pub async fn run_elected<W, F>(election: Election, mut work: W, shutdown: impl Future<Output = ()>)
where
    W: FnMut(i64) -> F,
    F: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        let won = tokio::select! {
            r = election.campaign() => r,
            _ = &mut shutdown => return,
        };
        let leadership = match won {
            Ok(l) => {
                failures = 0;
                l
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(200).saturating_mul(1 << failures.min(5));
                tracing::warn!(key = %election.key, error = %e, retry_in = ?pause, "campaign failed");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = &mut shutdown => return,
                }
            }
        };
        let mut lost = leadership.lost();
        let stopping = tokio::select! {
            _ = work(leadership.revision()) => false,
            _ = async { while !*lost.borrow_and_update() { if lost.changed().await.is_err() { break } } } => {
                tracing::warn!(key = %election.key, "role lost; stepping down");
                false
            }
            _ = &mut shutdown => true,
        };
        if let Err(e) = leadership.resign(&*election.store).await {
            tracing::debug!(error = %e, "resign failed; the lease expires on its own");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
