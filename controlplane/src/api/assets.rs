//! `AssetService`: assets and their binding to a policy.

use std::sync::Arc;

use serde_json::{Value, json};
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::{policy_key, status};
use crate::store::{PREFIX, Store};

fn asset_key(id: &str) -> String {
    format!("{PREFIX}assets/{id}")
}

/// An asset id is one path segment of `a-z`, `0-9`, `.`, `_`, `-`: it is the first segment of
/// every URL under `/v/`.
fn valid_id(id: &str) -> Result<(), Status> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "asset id {id:?}: 1 to 128 characters of a-z, 0-9, '.', '_', '-'"
        )))
    }
}

/// `AssetService` over a [`Store`].
pub struct AssetApi {
    store: Arc<dyn Store>,
}

impl AssetApi {
    /// Serves assets kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// A binding must name a policy that exists. (Deleting a policy that assets still use is
    /// not prevented yet: the edge then refuses those assets with 403, failing closed.)
    async fn check_policy(&self, policy: &str) -> Result<(), Status> {
        if policy.is_empty()
            || self
                .store
                .get(&policy_key(policy))
                .await
                .map_err(status)?
                .is_some()
        {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "no policy {policy:?} to bind to"
            )))
        }
    }

    async fn write(&self, a: &pb::Asset, expected: i64) -> Result<pb::Asset, Status> {
        valid_id(&a.id)?;
        self.check_policy(&a.policy_id).await?;
        let doc = json!({"id": a.id, "policy": (!a.policy_id.is_empty()).then_some(&a.policy_id), "description": a.description});
        let version = self
            .store
            .put(
                &asset_key(&a.id),
                serde_json::to_vec(&doc).expect("JSON"),
                expected,
            )
            .await
            .map_err(status)?;
        Ok(pb::Asset {
            version,
            ..a.clone()
        })
    }

    async fn read(&self, id: &str) -> Result<pb::Asset, Status> {
        let v = self
            .store
            .get(&asset_key(id))
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("no asset {id:?}")))?;
        Ok(from_doc(&v.value, v.version))
    }
}

fn from_doc(value: &[u8], version: i64) -> pb::Asset {
    let d: Value = serde_json::from_slice(value).unwrap_or_default();
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
    pb::Asset {
        id: s("id"),
        policy_id: s("policy"),
        description: s("description"),
        version,
    }
}

#[tonic::async_trait]
impl pb::asset_service_server::AssetService for AssetApi {
    async fn register(
        &self,
        req: Request<pb::RegisterAssetRequest>,
    ) -> Result<Response<pb::RegisterAssetResponse>, Status> {
        let a = req
            .into_inner()
            .asset
            .ok_or_else(|| Status::invalid_argument("asset is required"))?;
        let asset = self.write(&a, 0).await?;
        Ok(Response::new(pb::RegisterAssetResponse {
            asset: Some(asset),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetAssetRequest>,
    ) -> Result<Response<pb::GetAssetResponse>, Status> {
        let asset = self.read(&req.into_inner().id).await?;
        Ok(Response::new(pb::GetAssetResponse { asset: Some(asset) }))
    }

    async fn list(
        &self,
        _req: Request<pb::ListAssetsRequest>,
    ) -> Result<Response<pb::ListAssetsResponse>, Status> {
        let (items, _) = self.store.list(&asset_key("")).await.map_err(status)?;
        let assets = items
            .iter()
            .map(|(_, v)| from_doc(&v.value, v.version))
            .collect();
        Ok(Response::new(pb::ListAssetsResponse { assets }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateAssetRequest>,
    ) -> Result<Response<pb::UpdateAssetResponse>, Status> {
        let req = req.into_inner();
        let a = req
            .asset
            .ok_or_else(|| Status::invalid_argument("asset is required"))?;
        if req.expected_version == 0 {
            return Err(Status::invalid_argument(
                "expected_version is required to update",
            ));
        }
        let asset = self.write(&a, req.expected_version).await?;
        Ok(Response::new(pb::UpdateAssetResponse {
            asset: Some(asset),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteAssetRequest>,
    ) -> Result<Response<pb::DeleteAssetResponse>, Status> {
        let req = req.into_inner();
        self.read(&req.id).await?;
        self.store
            .delete(&asset_key(&req.id), req.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteAssetResponse {}))
    }

    async fn bind(
        &self,
        req: Request<pb::BindAssetRequest>,
    ) -> Result<Response<pb::BindAssetResponse>, Status> {
        let req = req.into_inner();
        let mut a = self.read(&req.asset_id).await?;
        a.policy_id = req.policy_id;
        let asset = self.write(&a, req.expected_version).await?;
        Ok(Response::new(pb::BindAssetResponse { asset: Some(asset) }))
    }
}
