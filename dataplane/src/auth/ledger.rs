//! Used sign-in nonces, recorded fleet-wide in the state store.
//!
//! `nonces/<nonce>` is created with a guarded transaction (absent, or it fails), bound to a
//! lease shared by every nonce this edge records within [`ROTATE`]: one write per sign-in,
//! and a grant once per [`ROTATE`]. A lease granted at `g` lives until `g + ttl`; nonces
//! are recorded before `g + ROTATE` and must stay until they expire, at most `keep` after
//! they are recorded, so the lease's TTL is `keep + ROTATE`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use streamgate_store::{Guard, LeaseId, Op, PREFIX, Store, StoreError};

/// How often a new lease is granted for the nonces recorded after it.
pub(super) const ROTATE: Duration = Duration::from_secs(60);

pub(super) struct Ledger {
    store: ArcSwapOption<Arc<dyn Store>>,
    keep: Duration,
    lease: Mutex<Option<(LeaseId, Instant)>>,
}

impl Ledger {
    /// Nonces are kept `keep` (their TTL plus the allowed clock skew).
    pub(super) fn new(keep: Duration) -> Self {
        Self {
            store: ArcSwapOption::empty(),
            keep,
            lease: Mutex::new(None),
        }
    }

    pub(super) fn set_store(&self, store: Arc<dyn Store>) {
        self.store.store(Some(Arc::new(store)));
        *self.lease.lock().expect("lease lock") = None;
    }

    /// Records `nonce` as used. `Ok(false)`: some edge recorded it before. Without a
    /// store, the edge's own memory (checked by the caller) is all there is: `Ok(true)`.
    pub(super) async fn record(&self, nonce: &str) -> Result<bool, StoreError> {
        let Some(store) = self.store.load_full() else {
            return Ok(true);
        };
        let key = format!("{PREFIX}nonces/{nonce}");
        for _ in 0..2 {
            let lease = self.lease(&**store).await?;
            let guard = Guard {
                key: key.clone(),
                expected: 0,
            };
            match store
                .txn(&[guard], vec![Op::put_leased(key.clone(), "1", lease)])
                .await
            {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { .. }) => return Ok(false),
                // Revoked or expired under us: take a new lease once.
                Err(StoreError::LeaseExpired(_)) => {
                    *self.lease.lock().expect("lease lock") = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "nonce lease expired twice in a row".into(),
        ))
    }

    async fn lease(&self, store: &dyn Store) -> Result<LeaseId, StoreError> {
        let now = Instant::now();
        if let Some((id, granted)) = *self.lease.lock().expect("lease lock")
            && now.duration_since(granted) < ROTATE
        {
            return Ok(id);
        }
        // Two sign-ins racing here may both grant; the spare lease expires unused.
        let id = store.grant(self.keep + ROTATE).await?;
        *self.lease.lock().expect("lease lock") = Some((id, now));
        Ok(id)
    }
}
