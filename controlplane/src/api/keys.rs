//! `KeyService`: token verification keys, with retirement after an overlap so that tokens
//! signed before a rotation keep working until they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streamgate_policy::KeyDoc;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::status;
use crate::store::{PREFIX, Store};

fn key_key(kid: &str) -> String {
    format!("{PREFIX}keys/{kid}")
}

/// The longest overlap accepted when a key retires.
const MAX_OVERLAP: Duration = Duration::from_secs(90 * 24 * 3600);

fn parse(jwk_json: &str) -> Result<KeyDoc, Status> {
    let v: serde_json::Value = serde_json::from_str(jwk_json)
        .map_err(|e| Status::invalid_argument(format!("jwk_json is not JSON: {e}")))?;
    KeyDoc::from_value(&v).map_err(|e| Status::invalid_argument(format!("key: {e}")))
}

fn to_pb(doc: &KeyDoc, version: i64) -> pb::Key {
    pb::Key {
        kid: doc.kid.clone(),
        // Public material only; HS256 entries hold a secret reference, never the secret.
        jwk_json: doc.to_value().to_string(),
        version,
        retire_at: doc
            .retire_at
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default(),
    }
}

fn overlap(secs: i64) -> Result<Duration, Status> {
    let d = Duration::from_secs(
        u64::try_from(secs)
            .map_err(|_| Status::invalid_argument("overlap_seconds must be >= 0"))?,
    );
    if d > MAX_OVERLAP {
        return Err(Status::invalid_argument(
            "overlap_seconds is longer than 90 days",
        ));
    }
    Ok(d)
}

/// `KeyService` over a [`Store`].
pub struct KeyApi {
    store: Arc<dyn Store>,
}

impl KeyApi {
    /// Serves keys kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    async fn add_key(&self, jwk_json: &str) -> Result<pb::Key, Status> {
        let doc = parse(jwk_json)?;
        let value = serde_json::to_vec(&doc.to_value()).expect("JSON");
        let version = self
            .store
            .put(&key_key(&doc.kid), value, 0)
            .await
            .map_err(status)?;
        Ok(to_pb(&doc, version))
    }

    async fn retire_key(
        &self,
        kid: &str,
        overlap_secs: i64,
        expected: i64,
    ) -> Result<pb::Key, Status> {
        let overlap = overlap(overlap_secs)?;
        let cur = self
            .store
            .get(&key_key(kid))
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("no key {kid:?}")))?;
        let mut doc = parse(&String::from_utf8_lossy(&cur.value))?;
        doc.retire_at = Some(SystemTime::now() + overlap);
        let value = serde_json::to_vec(&doc.to_value()).expect("JSON");
        let version = self
            .store
            .put(&key_key(kid), value, expected)
            .await
            .map_err(status)?;
        Ok(to_pb(&doc, version))
    }
}

#[tonic::async_trait]
impl pb::key_service_server::KeyService for KeyApi {
    async fn add(
        &self,
        req: Request<pb::AddKeyRequest>,
    ) -> Result<Response<pb::AddKeyResponse>, Status> {
        let key = self.add_key(&req.into_inner().jwk_json).await?;
        Ok(Response::new(pb::AddKeyResponse { key: Some(key) }))
    }

    async fn list(
        &self,
        _req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let (items, _) = self.store.list(&key_key("")).await.map_err(status)?;
        let mut keys = Vec::with_capacity(items.len());
        for (_, v) in items {
            keys.push(to_pb(
                &parse(&String::from_utf8_lossy(&v.value))?,
                v.version,
            ));
        }
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    async fn retire(
        &self,
        req: Request<pb::RetireKeyRequest>,
    ) -> Result<Response<pb::RetireKeyResponse>, Status> {
        let r = req.into_inner();
        let key = self
            .retire_key(&r.kid, r.overlap_seconds, r.expected_version)
            .await?;
        Ok(Response::new(pb::RetireKeyResponse { key: Some(key) }))
    }

    /// Adds the new key, then retires the old one after the overlap. The two writes are not
    /// one transaction: if the retirement fails (a stale version), the new key stays, which
    /// is harmless, and the call reports the failure so the operator retries the retirement.
    async fn rotate(
        &self,
        req: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let r = req.into_inner();
        overlap(r.overlap_seconds)?;
        let added = self.add_key(&r.new_jwk_json).await?;
        let retiring = self
            .retire_key(&r.old_kid, r.overlap_seconds, r.expected_version)
            .await?;
        Ok(Response::new(pb::RotateKeyResponse {
            added: Some(added),
            retiring: Some(retiring),
        }))
    }
}
