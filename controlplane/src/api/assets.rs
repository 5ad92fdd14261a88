//! `AssetService`: assets and their binding to a policy.

use std::sync::Arc;

use serde_json::{Value, json};
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Change, binding_key, caller, check_id, guard, policy_key, status};
use crate::auth::Actor;
use crate::store::{Op, PREFIX, Store};

fn asset_key(id: &str) -> String {
    format!("{PREFIX}assets/{id}")
}

/// An asset id is one path segment of `a-z`, `0-9`, `.`, `_`, `-` (at most 128, not `.` or
/// `..`): it is the first segment of every URL under `/v/` and of every object key.
pub fn is_asset_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// What [`is_asset_id`] asks for, for error messages.
pub const ASSET_ID_RULE: &str = "1 to 128 characters of a-z, 0-9, '.', '_', '-'";

fn valid_id(id: &str) -> Result<(), Status> {
    if is_asset_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "asset id {id:?}: {ASSET_ID_RULE}"
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

    /// Writes the asset at `expected`. A binding must name a policy that exists; the write
    /// guards that policy's version and touches its binding key, so deleting the policy
    /// concurrently cannot leave the asset bound to nothing.
    async fn write(
        &self,
        who: &Actor,
        method: &str,
        action: &str,
        a: &pb::Asset,
        expected: i64,
    ) -> Result<pb::Asset, Status> {
        valid_id(&a.id)?;
        // A tenant keeps to its prefixes, for the asset and for the policy it binds.
        check_id(&*self.store, who, method, "assets", &a.id).await?;
        if !a.policy_id.is_empty() {
            check_id(&*self.store, who, method, "policies", &a.policy_id).await?;
        }
        let key = asset_key(&a.id);
        let mut doc = json!({"id": a.id, "policy": (!a.policy_id.is_empty()).then_some(&a.policy_id), "description": a.description});
        // The published version (origin prefix and job) belongs to the farm: operators'
        // edits keep it. The guard below makes sure it is the one read here.
        if expected != 0
            && let Some(old) = self.store.get(&key).await.map_err(status)?
            && let Ok(old) = serde_json::from_slice::<Value>(&old.value)
        {
            for field in ["origin_prefix", "job"] {
                if let Some(v) = old.get(field) {
                    doc[field] = v.clone();
                }
            }
        }
        let mut guards = vec![guard(key.clone(), expected)];
        let mut ops = vec![Op::put(key, serde_json::to_vec(&doc).expect("JSON"))];
        if !a.policy_id.is_empty() {
            let pkey = policy_key(&a.policy_id);
            let policy = self
                .store
                .get(&pkey)
                .await
                .map_err(status)?
                .ok_or_else(|| {
                    Status::failed_precondition(format!("no policy {:?} to bind to", a.policy_id))
                })?;
            guards.push(guard(pkey, policy.version));
            ops.push(Op::put(
                binding_key(&a.policy_id),
                a.id.clone().into_bytes(),
            ));
        }
        let version = Change {
            actor: &who.name,
            action,
            target: format!("assets/{}", a.id),
            old_version: expected,
            guards,
            ops,
        }
        .commit(&*self.store)
        .await?;
        Ok(pb::Asset {
            version,
            origin_prefix: doc["origin_prefix"].as_str().unwrap_or_default().to_owned(),
            job_id: doc["job"].as_str().unwrap_or_default().to_owned(),
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
        origin_prefix: s("origin_prefix"),
        job_id: s("job"),
    }
}

#[tonic::async_trait]
impl pb::asset_service_server::AssetService for AssetApi {
    async fn register(
        &self,
        req: Request<pb::RegisterAssetRequest>,
    ) -> Result<Response<pb::RegisterAssetResponse>, Status> {
        let who = caller(&req);
        let a = req
            .into_inner()
            .asset
            .ok_or_else(|| Status::invalid_argument("asset is required"))?;
        let asset = self
            .write(&who, "AssetService/Register", "asset.register", &a, 0)
            .await?;
        Ok(Response::new(pb::RegisterAssetResponse {
            asset: Some(asset),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetAssetRequest>,
    ) -> Result<Response<pb::GetAssetResponse>, Status> {
        let who = caller(&req);
        let id = req.into_inner().id;
        check_id(&*self.store, &who, "AssetService/Get", "assets", &id).await?;
        let asset = self.read(&id).await?;
        Ok(Response::new(pb::GetAssetResponse { asset: Some(asset) }))
    }

    async fn list(
        &self,
        req: Request<pb::ListAssetsRequest>,
    ) -> Result<Response<pb::ListAssetsResponse>, Status> {
        let who = caller(&req);
        let (items, _) = self.store.list(&asset_key("")).await.map_err(status)?;
        let assets = items
            .iter()
            .map(|(_, v)| from_doc(&v.value, v.version))
            .filter(|a| who.may_touch(&a.id))
            .collect();
        Ok(Response::new(pb::ListAssetsResponse { assets }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateAssetRequest>,
    ) -> Result<Response<pb::UpdateAssetResponse>, Status> {
        let who = caller(&req);
        let req = req.into_inner();
        let a = req
            .asset
            .ok_or_else(|| Status::invalid_argument("asset is required"))?;
        if req.expected_version == 0 {
            return Err(Status::invalid_argument(
                "expected_version is required to update",
            ));
        }
        let asset = self
            .write(
                &who,
                "AssetService/Update",
                "asset.update",
                &a,
                req.expected_version,
            )
            .await?;
        Ok(Response::new(pb::UpdateAssetResponse {
            asset: Some(asset),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteAssetRequest>,
    ) -> Result<Response<pb::DeleteAssetResponse>, Status> {
        let who = caller(&req);
        let req = req.into_inner();
        check_id(&*self.store, &who, "AssetService/Delete", "assets", &req.id).await?;
        self.read(&req.id).await?;
        let key = asset_key(&req.id);
        Change {
            actor: &who.name,
            action: "asset.delete",
            target: format!("assets/{}", req.id),
            old_version: req.expected_version,
            guards: vec![guard(key.clone(), req.expected_version)],
            ops: vec![Op::Delete { key }],
        }
        .commit(&*self.store)
        .await?;
        Ok(Response::new(pb::DeleteAssetResponse {}))
    }

    async fn bind(
        &self,
        req: Request<pb::BindAssetRequest>,
    ) -> Result<Response<pb::BindAssetResponse>, Status> {
        let who = caller(&req);
        let req = req.into_inner();
        check_id(
            &*self.store,
            &who,
            "AssetService/Bind",
            "assets",
            &req.asset_id,
        )
        .await?;
        let mut a = self.read(&req.asset_id).await?;
        a.policy_id = req.policy_id;
        let asset = self
            .write(
                &who,
                "AssetService/Bind",
                "asset.bind",
                &a,
                req.expected_version,
            )
            .await?;
        Ok(Response::new(pb::BindAssetResponse { asset: Some(asset) }))
    }
}
