//! The gRPC API over the store: `PolicyService` (with Watch), `AssetService`, `KeyService`,
//! `PurgeService`, `AuditService`, `EdgeService` and `JobService`, with admin authentication, gRPC health
//! and reflection.
//!
//! Every mutation commits its change and an audit entry (who, what, old version) in one
//! store transaction, guarded by the version the caller last saw, so no update is lost and
//! no change goes unaudited.

use std::sync::Arc;

use streamgate_policy::Policy;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use crate::store::{Guard, Op, PREFIX, Store, StoreError};

pub mod access;
mod analytics;
mod assets;
mod audit;
mod edges;
mod health;
pub mod jobs;
mod keys;
mod purge;
mod watch;

pub use access::{AccessApi, AdminAuth};
pub use analytics::AnalyticsApi;
pub use assets::{ASSET_ID_RULE, AssetApi, is_asset_id};
pub use audit::AuditApi;
pub use edges::EdgeApi;
pub use jobs::JobApi;
pub use keys::KeyApi;
pub use purge::PurgeApi;
pub use watch::PolicyEvents;

pub use crate::auth::{Actor, AdminTokens, Role, split_token_line};
pub(crate) use access::{caller, check_id};

/// The name of the actor of `req`, or `unknown` when the service runs without
/// [`AdminAuth`].
pub(crate) fn actor<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<Actor>()
        .map_or_else(|| "unknown".to_owned(), |a| a.name.clone())
}

pub use crate::store::audit_op;

/// One audited change: `ops` commit with their audit entry if every guard holds.
pub(crate) struct Change<'a> {
    pub(crate) actor: &'a str,
    pub(crate) action: &'a str,
    pub(crate) target: String,
    pub(crate) old_version: i64,
    pub(crate) guards: Vec<Guard>,
    pub(crate) ops: Vec<Op>,
}

impl Change<'_> {
    /// Commits; returns the revision (the new version of everything written).
    pub(crate) async fn commit(mut self, store: &dyn Store) -> Result<i64, Status> {
        self.ops.push(audit_op(
            self.actor,
            self.action,
            &self.target,
            self.old_version,
        ));
        store.txn(&self.guards, self.ops).await.map_err(status)
    }
}

pub(crate) fn guard(key: String, expected: i64) -> Guard {
    Guard { key, expected }
}

/// The key written whenever an asset is bound to `policy`, so that deleting the policy and
/// binding to it cannot both succeed (each guards what the other writes).
pub fn binding_key(policy: &str) -> String {
    format!("{PREFIX}bindings/{policy}")
}

pub fn policy_key(id: &str) -> String {
    format!("{PREFIX}policies/{id}")
}

fn status(e: StoreError) -> Status {
    match e {
        StoreError::Denied(m) => Status::unavailable(format!(
            "the state store refused the control plane's credentials or permissions: {m}"
        )),
        StoreError::Conflict {
            expected, current, ..
        } => Status::failed_precondition(format!(
            "version conflict: you sent {expected}, the current version is {current}; re-read and retry"
        )),
        other => Status::unavailable(other.to_string()),
    }
}

/// `PolicyService` over a [`Store`].
pub struct PolicyApi {
    store: Arc<dyn Store>,
    chains: Vec<streamgate_policy::address::ChainId>,
}

impl PolicyApi {
    /// Serves policies kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            chains: Vec::new(),
        }
    }

    /// Refuses policies whose `nft` conditions name chains outside `chains` (the
    /// deployment's chain registry); an empty list checks nothing.
    pub fn with_chains(mut self, chains: Vec<streamgate_policy::address::ChainId>) -> Self {
        self.chains = chains;
        self
    }
}

pub(crate) fn to_pb(id: String, value: Vec<u8>, version: i64) -> pb::Policy {
    pb::Policy {
        id,
        document_json: String::from_utf8_lossy(&value).into_owned(),
        version,
    }
}

#[tonic::async_trait]
impl pb::policy_service_server::PolicyService for PolicyApi {
    async fn apply(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let who = caller(&req);
        let req = req.into_inner();
        // Validate fully before anything is written; report every error with its path.
        let policy = Policy::parse(&req.document).map_err(|errs| {
            let list: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
            Status::invalid_argument(format!("{} error(s): {}", list.len(), list.join("; ")))
        })?;
        if !self.chains.is_empty() {
            let errs = policy.check_chains(&self.chains);
            if !errs.is_empty() {
                let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
                return Err(Status::invalid_argument(format!(
                    "{} error(s): {}",
                    list.len(),
                    list.join("; ")
                )));
            }
        }
        let id = policy.id.as_str().to_owned();
        check_id(&*self.store, &who, "PolicyService/Apply", "policies", &id).await?;
        let value = serde_json::to_vec(&policy.to_value()).expect("JSON");
        let key = policy_key(&id);
        let version = Change {
            actor: &who.name,
            action: "policy.apply",
            target: format!("policies/{id}"),
            old_version: req.expected_version,
            guards: vec![guard(key.clone(), req.expected_version)],
            ops: vec![Op::put(key, value.clone())],
        }
        .commit(&*self.store)
        .await?;
        Ok(Response::new(pb::ApplyPolicyResponse {
            policy: Some(to_pb(id, value, version)),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let who = caller(&req);
        let id = req.into_inner().id;
        check_id(&*self.store, &who, "PolicyService/Get", "policies", &id).await?;
        match self.store.get(&policy_key(&id)).await.map_err(status)? {
            Some(v) => Ok(Response::new(pb::GetPolicyResponse {
                policy: Some(to_pb(id, v.value, v.version)),
            })),
            None => Err(Status::not_found(format!("no policy {id:?}"))),
        }
    }

    async fn list(
        &self,
        req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let who = caller(&req);
        let prefix = policy_key("");
        let (items, _) = self.store.list(&prefix).await.map_err(status)?;
        let policies = items
            .into_iter()
            .map(|(k, v)| to_pb(k[prefix.len()..].to_owned(), v.value, v.version))
            .filter(|p| who.may_touch(&p.id))
            .collect();
        Ok(Response::new(pb::ListPoliciesResponse { policies }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let who = caller(&req);
        let req = req.into_inner();
        check_id(
            &*self.store,
            &who,
            "PolicyService/Delete",
            "policies",
            &req.id,
        )
        .await?;
        let key = policy_key(&req.id);
        if self.store.get(&key).await.map_err(status)?.is_none() {
            return Err(Status::not_found(format!("no policy {:?}", req.id)));
        }
        // Refuse while assets are bound to it. Binding touches the binding key, which this
        // delete guards, so a concurrent bind and this delete cannot both commit.
        let bkey = binding_key(&req.id);
        let bound_version = self
            .store
            .get(&bkey)
            .await
            .map_err(status)?
            .map_or(0, |v| v.version);
        let (assets, _) = self
            .store
            .list(&format!("{PREFIX}assets/"))
            .await
            .map_err(status)?;
        let users: Vec<String> = assets
            .iter()
            .filter_map(|(_, v)| {
                let d: serde_json::Value = serde_json::from_slice(&v.value).ok()?;
                (d["policy"].as_str() == Some(req.id.as_str()))
                    .then(|| d["id"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        if !users.is_empty() {
            // A tenant is told how many, but shown only its own assets' ids.
            let shown: Vec<&str> = users
                .iter()
                .filter(|a| who.may_touch(a))
                .map(String::as_str)
                .collect();
            return Err(Status::failed_precondition(format!(
                "policy {:?} is bound to {} asset(s): {}; bind them to another policy first",
                req.id,
                users.len(),
                shown.join(", ")
            )));
        }
        Change {
            actor: &who.name,
            action: "policy.delete",
            target: format!("policies/{}", req.id),
            old_version: req.expected_version,
            guards: vec![
                guard(key.clone(), req.expected_version),
                guard(bkey.clone(), bound_version),
            ],
            ops: vec![Op::Delete { key }, Op::Delete { key: bkey }],
        }
        .commit(&*self.store)
        .await?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    type WatchStream = PolicyEvents;

    async fn watch(
        &self,
        req: Request<pb::WatchPoliciesRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = caller(&req);
        let from = req.into_inner().from_revision;
        Ok(Response::new(
            watch::policy_events(Arc::clone(&self.store), from, who).await?,
        ))
    }
}

/// Serves the control API on `listener` until `shutdown` completes: the seven services
/// (authenticated by `auth`, each reported SERVING while the store answers and NOT_SERVING
/// while it does not), `grpc.health.v1` and reflection (open).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    auth: AdminAuth,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let metrics = Arc::new(crate::metrics::ControlMetrics::new());
    serve_with(listener, store, auth, None, Vec::new(), metrics, shutdown).await
}

/// Whether `store` answers a read within `within` (gRPC health and `/readyz`).
pub async fn store_answers(store: &dyn Store, within: std::time::Duration) -> bool {
    health::answers(store, within).await
}

/// As [`serve`], over TLS when `tls` is set (mTLS when it names a client CA), counting
/// every call in `metrics`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    auth: AdminAuth,
    tls: Option<tonic::transport::ServerTlsConfig>,
    chains: Vec<streamgate_policy::address::ChainId>,
    metrics: Arc<crate::metrics::ControlMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    // NOT_SERVING until the store answers (a start during an etcd outage); then followed.
    let serving = health::answers(&*store, std::time::Duration::from_secs(1)).await;
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tracing::warn!("the store does not answer yet; health NOT_SERVING until it does");
        tonic_health::ServingStatus::NotServing
    };
    health::set_all(&health, status).await;
    let follower = tokio::spawn(health::follow(health, Arc::clone(&store), serving));
    // Reflection in both versions: v1 (grpcurl, newer clients) and v1alpha (the stock
    // Python grpcio-reflection, grpcui, Postman).
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(streamgate_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor set is valid");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(streamgate_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("descriptor set is valid");
    let policies = pb::policy_service_server::PolicyServiceServer::new(
        PolicyApi::new(Arc::clone(&store)).with_chains(chains),
    );
    let assets =
        pb::asset_service_server::AssetServiceServer::new(AssetApi::new(Arc::clone(&store)));
    let keys = pb::key_service_server::KeyServiceServer::new(KeyApi::new(Arc::clone(&store)));
    let purges =
        pb::purge_service_server::PurgeServiceServer::new(PurgeApi::new(Arc::clone(&store)));
    let audit =
        pb::audit_service_server::AuditServiceServer::new(AuditApi::new(Arc::clone(&store)));
    let jobs = pb::job_service_server::JobServiceServer::new(JobApi::new(Arc::clone(&store)));
    let analytics = pb::analytics_service_server::AnalyticsServiceServer::new(AnalyticsApi::new(
        Arc::clone(&store),
    ));
    let edges = pb::edge_service_server::EdgeServiceServer::new(EdgeApi::new(Arc::clone(&store)));
    let access = pb::access_service_server::AccessServiceServer::new(AccessApi);
    let auth = auth.with_store(store);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let res = builder
        .layer(crate::metrics::grpc::GrpcMetricsLayer::new(metrics))
        .layer(auth)
        .add_service(health_svc)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(policies)
        .add_service(assets)
        .add_service(keys)
        .add_service(purges)
        .add_service(audit)
        .add_service(edges)
        .add_service(analytics)
        .add_service(jobs)
        .add_service(access)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    follower.abort();
    res
}

#[cfg(test)]
mod services_tests;
#[cfg(test)]
mod tests;
