//! The control plane's admin port (9101): `/metrics` (Prometheus text, [`ControlMetrics`]),
//! `/healthz` (the process runs) and `/readyz` (the store answers a read; 503 otherwise),
//! served by the shared admin server ([`streamgate_admin`]).

use std::sync::Arc;
use std::time::Duration;

use streamgate_admin::{Endpoints, Readiness};
use streamgate_store::Store;

use crate::metrics::ControlMetrics;

/// How long `/readyz` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// What the admin port reads: the metrics and the store (unwrapped, so that scrapes and
/// probes do not count as the control plane's own store operations).
pub struct Admin {
    /// The metrics to render.
    pub metrics: Arc<ControlMetrics>,
    /// The store asked by `/readyz` and counted by `/metrics`.
    pub store: Arc<dyn Store>,
}

impl Endpoints for Admin {
    async fn metrics(&self) -> Vec<u8> {
        self.metrics.render(&*self.store).await
    }

    async fn ready(&self) -> Readiness {
        if crate::api::store_answers(&*self.store, READY_TIMEOUT).await {
            Readiness::Ready
        } else {
            Readiness::NotReady("the state store does not answer")
        }
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Admin,
    shutdown: impl Future<Output = ()> + Send,
) {
    streamgate_admin::serve(listener, Arc::new(admin), shutdown).await;
}
