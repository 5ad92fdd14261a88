//! Work that must run once in a fleet of control planes, under an election
//! ([`streamgate_store::election`]): whichever process holds `elections/control` runs it;
//! when that process dies its lease expires and another takes over within the TTL.
//!
//! Today that is pruning edge records that nobody refreshes any more. Edges keep their
//! `edges/<id>` record under a lease, so a dead edge's record vanishes on its own; records
//! written without one (edges of older versions, or written by hand) would stay forever,
//! and [`prune_edges`] removes those once they are older than `edge_prune_after`. The farm's
//! scheduler can run under the same primitive with its own role name.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streamgate_store::election::{Election, run_elected};
use streamgate_store::{PREFIX, Store, StoreError};

use crate::metrics::ControlMetrics;

/// The role name of the control plane's background work.
pub const ROLE: &str = "control";

/// How often the holder prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// What to run under the election.
#[derive(Debug, Clone)]
pub struct Background {
    /// This process's name in the election.
    pub instance: String,
    /// The election's lease TTL.
    pub ttl: Duration,
    /// Edge records older than this are pruned.
    pub edge_prune_after: Duration,
    /// Where prunes and the election state are counted.
    pub metrics: Arc<ControlMetrics>,
}

/// Sets `streamgate_control_election_held` back to 0 when the elected work stops, however
/// it stops (the election lost, or shutdown).
struct Held(Arc<ControlMetrics>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.set_election_held(false);
    }
}

/// Whether the edge record `value` was last refreshed before `now - after` (by its
/// `applied_at`). A record whose time cannot be read is kept: it may come from another
/// version, and it is shown as stale anyway.
pub fn edge_record_expired(value: &[u8], now: SystemTime, after: Duration) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(value) else {
        return false;
    };
    let Some(t) = v["applied_at"]
        .as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
    else {
        return false;
    };
    now.duration_since(t).is_ok_and(|age| age >= after)
}

/// Deletes the edge records not refreshed for `after`; returns how many. Each delete is
/// guarded by the version read, so a record refreshed meanwhile stays.
pub async fn prune_edges(
    store: &dyn Store,
    now: SystemTime,
    after: Duration,
) -> Result<usize, StoreError> {
    let (items, _) = store.list(&format!("{PREFIX}edges/")).await?;
    let mut pruned = 0;
    for (key, v) in items {
        if !edge_record_expired(&v.value, now, after) {
            continue;
        }
        match store.delete(&key, v.version).await {
            Ok(_) => {
                tracing::info!(%key, "pruned an edge record nobody refreshes");
                pruned += 1;
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pruned)
}

/// Runs the background work under the election until `shutdown` completes; on shutdown
/// the role is resigned so another process takes it at once.
pub async fn run(store: Arc<dyn Store>, bg: Background, shutdown: impl Future<Output = ()>) {
    let election = Election::new(Arc::clone(&store), ROLE, &bg.instance, bg.ttl);
    let after = bg.edge_prune_after;
    let metrics = bg.metrics;
    run_elected(
        election,
        move |revision| {
            let store = Arc::clone(&store);
            let metrics = Arc::clone(&metrics);
            async move {
                tracing::info!(revision, "running the control plane's background work");
                metrics.set_election_held(true);
                let _held = Held(Arc::clone(&metrics));
                loop {
                    match prune_edges(&*store, SystemTime::now(), after).await {
                        Ok(n) => {
                            if n > 0 {
                                tracing::info!(pruned = n, "edge records pruned");
                            }
                            metrics.pruned(n);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "pruning edge records failed");
                            metrics.prune_failed();
                        }
                    }
                    tokio::time::sleep(PRUNE_EVERY).await;
                }
            }
        },
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests;
