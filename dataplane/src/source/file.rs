//! The snapshot file as the source of state: re-read when it changes. A file that does not
//! load is logged and the snapshot in force stays (last known good).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::gate::Snapshot;
use crate::pipeline::Pipeline;

/// Reloads the policy snapshot file when it changes. A file that does not load is logged and
/// the snapshot in force stays (last known good).
pub(crate) struct SnapshotReloader {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) path: std::path::PathBuf,
    pub(crate) interval: Duration,
    pub(crate) token_cache_entries: u64,
}

#[async_trait]
impl BackgroundService for SnapshotReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen = stamp(&self.path);
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = stamp(&self.path);
            if now == seen {
                continue;
            }
            seen = now;
            match Snapshot::load(&self.path, self.token_cache_entries) {
                Ok(s) => {
                    let rev = s.revision;
                    self.pipeline.gate().install(s);
                    self.pipeline.metrics().policy_revision.set(rev);
                    tracing::info!(revision = rev, "policy snapshot reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy snapshot reload failed; keeping the current one")
                }
            }
        }
    }
}
