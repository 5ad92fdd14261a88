//! A lease kept alive in the background, with a signal for when it may be lost.
//!
//! The keep-alive runs every third of the TTL. A renewal that succeeds at the server was
//! sent at `sent`, so the server's deadline is at least `sent + ttl`: until then the lease
//! is surely alive. When no renewal succeeds by that instant, or the store says the lease
//! is gone, [`KeptLease::lost`] turns true and stays true. Holders stop acting on the
//! lease's behalf then (a worker kills its ffmpeg, an elected process steps down) and get
//! a new one; being early is safe, acting on a lease the server already dropped is not.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{LeaseId, Store, StoreError};

/// A lease with a keep-alive task. Dropping it stops the keep-alive (the lease then
/// expires on its own); [`KeptLease::revoke`] ends it at once.
#[derive(Debug)]
pub struct KeptLease {
    id: LeaseId,
    ttl: Duration,
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl KeptLease {
    /// Grants a lease of `ttl` on `store` and keeps it alive.
    pub async fn grant(store: Arc<dyn Store>, ttl: Duration) -> Result<Self, StoreError> {
        let ttl = Duration::from_secs(ttl.as_secs().max(1));
        let sent = Instant::now();
        let id = store.grant(ttl).await?;
        let (tx, lost) = watch::channel(false);
        let task = tokio::spawn(keep(store, id, ttl, sent, tx));
        Ok(Self {
            id,
            ttl,
            lost,
            task,
        })
    }

    /// The lease id, for [`crate::Op::put_leased`].
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The TTL granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the lease may have expired.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Turns true (once, for good) when the lease may have expired.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Stops the keep-alive and revokes the lease, deleting its keys.
    pub async fn revoke(self, store: &dyn Store) -> Result<(), StoreError> {
        self.task.abort();
        store.revoke(self.id).await
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep(
    store: Arc<dyn Store>,
    id: LeaseId,
    ttl: Duration,
    mut sent: Instant,
    lost: watch::Sender<bool>,
) {
    let period = ttl / 3;
    let mut next = sent + period;
    loop {
        let deadline = sent + ttl;
        tokio::time::sleep_until(next.min(deadline)).await;
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // A renewal that has not answered by the deadline is as good as failed.
        match tokio::time::timeout_at(deadline, store.keep_alive(id)).await {
            Ok(Ok(_)) => {
                sent = now;
                next = now + period;
            }
            Ok(Err(StoreError::LeaseExpired(_))) | Err(_) => break,
            Ok(Err(e)) => {
                tracing::debug!(lease = id, error = %e, "lease keep-alive failed; retrying");
                next = Instant::now() + Duration::from_millis(250).min(period);
            }
        }
    }
    tracing::warn!(lease = id, "lease lost");
    lost.send_replace(true);
}
