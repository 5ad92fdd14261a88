//! The farm admin port (9102): `/metrics` (Prometheus text) and `/healthz`, served by the
//! shared admin server ([`streamgate_admin`]).

use std::sync::Arc;

use streamgate_admin::{Endpoints, Readiness};

use super::FarmMetrics;

impl Endpoints for FarmMetrics {
    async fn metrics(&self) -> Vec<u8> {
        self.render()
    }

    async fn ready(&self) -> Readiness {
        Readiness::NotServed
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<FarmMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    streamgate_admin::serve(listener, metrics, shutdown).await;
}
