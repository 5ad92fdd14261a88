//! The gRPC API over the store. Today: `PolicyService` (Apply, Get, List, Delete) and
//! `AssetService` and `KeyService`, with admin authentication, gRPC health and reflection.
//! Purges, audit and Watch are defined in `proto/` and come next.

use std::sync::Arc;

use streamgate_policy::Policy;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use crate::store::{PREFIX, Store, StoreError};

mod assets;
mod keys;

pub use assets::AssetApi;
pub use keys::KeyApi;

fn policy_key(id: &str) -> String {
    format!("{PREFIX}policies/{id}")
}

fn status(e: StoreError) -> Status {
    match e {
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
}

impl PolicyApi {
    /// Serves policies kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn to_pb(id: String, value: Vec<u8>, version: i64) -> pb::Policy {
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
        let req = req.into_inner();
        // Validate fully before anything is written; report every error with its path.
        let policy = Policy::parse(&req.document).map_err(|errs| {
            let list: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
            Status::invalid_argument(format!("{} error(s): {}", list.len(), list.join("; ")))
        })?;
        let id = policy.id.as_str().to_owned();
        let value = serde_json::to_vec(&policy.to_value()).expect("JSON");
        let version = self
            .store
            .put(&policy_key(&id), value.clone(), req.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ApplyPolicyResponse {
            policy: Some(to_pb(id, value, version)),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let id = req.into_inner().id;
        match self.store.get(&policy_key(&id)).await.map_err(status)? {
            Some(v) => Ok(Response::new(pb::GetPolicyResponse {
                policy: Some(to_pb(id, v.value, v.version)),
            })),
            None => Err(Status::not_found(format!("no policy {id:?}"))),
        }
    }

    async fn list(
        &self,
        _req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let prefix = policy_key("");
        let (items, _) = self.store.list(&prefix).await.map_err(status)?;
        let policies = items
            .into_iter()
            .map(|(k, v)| to_pb(k[prefix.len()..].to_owned(), v.value, v.version))
            .collect();
        Ok(Response::new(pb::ListPoliciesResponse { policies }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let req = req.into_inner();
        let key = policy_key(&req.id);
        if self.store.get(&key).await.map_err(status)?.is_none() {
            return Err(Status::not_found(format!("no policy {:?}", req.id)));
        }
        self.store
            .delete(&key, req.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    type WatchStream = tokio_stream::Empty<Result<pb::PolicyEvent, Status>>;

    async fn watch(
        &self,
        _req: Request<pb::WatchPoliciesRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "Watch is not served yet; edges will watch etcd directly",
        ))
    }
}

/// Checks `authorization: Bearer <token>` against the admin tokens, in constant time.
#[derive(Clone)]
pub struct AdminAuth {
    tokens: Arc<Vec<Vec<u8>>>,
}

impl AdminAuth {
    /// Accepts any of `tokens` (each at least 16 bytes; shorter ones are ignored).
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: Arc::new(
                tokens
                    .into_iter()
                    .map(String::into_bytes)
                    .filter(|t| t.len() >= 16)
                    .collect(),
            ),
        }
    }

    fn ok(&self, presented: &[u8]) -> bool {
        // Compare against every token without an early exit, so timing says nothing.
        self.tokens.iter().fold(false, |acc, t| {
            let same_len = t.len() == presented.len();
            let diff = t.iter().zip(presented).fold(0u8, |d, (a, b)| d | (a ^ b));
            acc | (same_len & (diff == 0))
        })
    }
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if self.ok(t.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("admin token not accepted")),
            None => Err(Status::unauthenticated(
                "admin token required: authorization: Bearer <token>",
            )),
        }
    }
}

/// Serves the control API on `listener` until `shutdown` completes: `PolicyService`
/// (authenticated), `grpc.health.v1` and reflection (open).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    auth: AdminAuth,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::policy_service_server::PolicyServiceServer<PolicyApi>>()
        .await;
    health
        .set_serving::<pb::asset_service_server::AssetServiceServer<AssetApi>>()
        .await;
    health
        .set_serving::<pb::key_service_server::KeyServiceServer<KeyApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(streamgate_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor set is valid");
    let policies = pb::policy_service_server::PolicyServiceServer::with_interceptor(
        PolicyApi::new(Arc::clone(&store)),
        auth.clone(),
    );
    let assets = pb::asset_service_server::AssetServiceServer::with_interceptor(
        AssetApi::new(Arc::clone(&store)),
        auth.clone(),
    );
    let keys = pb::key_service_server::KeyServiceServer::with_interceptor(KeyApi::new(store), auth);
    tonic::transport::Server::builder()
        .add_service(health_svc)
        .add_service(reflection)
        .add_service(policies)
        .add_service(assets)
        .add_service(keys)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}

#[cfg(test)]
mod tests;
