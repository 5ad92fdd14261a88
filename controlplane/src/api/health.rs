//! gRPC health that follows the store: every service reports NOT_SERVING while the store
//! does not answer (a control plane started during an etcd outage, or cut off from every
//! member), and SERVING once it does. Load balancers and `grpc_health_probe` then route
//! around a control plane that cannot commit anything.

use std::sync::Arc;
use std::time::Duration;

use streamgate_proto::control::v1 as pb;
use streamgate_store::{PREFIX, Store};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::{AnalyticsApi, AssetApi, AuditApi, EdgeApi, JobApi, KeyApi, PolicyApi, PurgeApi};

/// How often the store is asked.
const EVERY: Duration = Duration::from_secs(2);
/// How long one check may take before it counts as no answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Sets every service (and the whole server, `""`) to `status`.
pub(crate) async fn set_all(h: &HealthReporter, status: ServingStatus) {
    use tonic::server::NamedService;
    for name in [
        "",
        pb::policy_service_server::PolicyServiceServer::<PolicyApi>::NAME,
        pb::asset_service_server::AssetServiceServer::<AssetApi>::NAME,
        pb::key_service_server::KeyServiceServer::<KeyApi>::NAME,
        pb::purge_service_server::PurgeServiceServer::<PurgeApi>::NAME,
        pb::audit_service_server::AuditServiceServer::<AuditApi>::NAME,
        pb::edge_service_server::EdgeServiceServer::<EdgeApi>::NAME,
        pb::analytics_service_server::AnalyticsServiceServer::<AnalyticsApi>::NAME,
        pb::job_service_server::JobServiceServer::<JobApi>::NAME,
    ] {
        h.set_service_status(name, status).await;
    }
}

/// Whether the store answers a read within `within`.
pub(crate) async fn answers(store: &dyn Store, within: Duration) -> bool {
    let probe = format!("{PREFIX}health");
    matches!(
        tokio::time::timeout(within, store.get(&probe)).await,
        Ok(Ok(_))
    )
}

/// Checks the store every [`EVERY`] and reports the result, starting from `serving`.
pub(crate) async fn follow(h: HealthReporter, store: Arc<dyn Store>, mut serving: bool) {
    loop {
        tokio::time::sleep(EVERY).await;
        let now = answers(&*store, CHECK_TIMEOUT).await;
        if now != serving {
            serving = now;
            if now {
                tracing::info!("the store answers; health SERVING");
                set_all(&h, ServingStatus::Serving).await;
            } else {
                tracing::warn!("the store does not answer; health NOT_SERVING");
                set_all(&h, ServingStatus::NotServing).await;
            }
        }
    }
}
