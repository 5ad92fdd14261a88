//! `KeyService`: token verification keys, with retirement after an overlap so that tokens
//! signed before a rotation keep working until they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streamgate_policy::KeyDoc;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Change, actor, guard, status};
use crate::store::{Op, PREFIX, Store};

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

    /// The retiring version of key `kid` (currently at `expected`), after `overlap_secs`.
    async fn retiring(&self, kid: &str, overlap_secs: i64) -> Result<KeyDoc, Status> {
        let overlap = overlap(overlap_secs)?;
        let cur = self
            .store
            .get(&key_key(kid))
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("no key {kid:?}")))?;
        let mut doc = parse(&String::from_utf8_lossy(&cur.value))?;
        doc.retire_at = Some(SystemTime::now() + overlap);
        Ok(doc)
    }
}

fn put(doc: &KeyDoc) -> Op {
    Op::put(
        key_key(&doc.kid),
        serde_json::to_vec(&doc.to_value()).expect("JSON"),
    )
}

#[tonic::async_trait]
impl pb::key_service_server::KeyService for KeyApi {
    async fn add(
        &self,
        req: Request<pb::AddKeyRequest>,
    ) -> Result<Response<pb::AddKeyResponse>, Status> {
        let who = actor(&req);
        let doc = parse(&req.into_inner().jwk_json)?;
        let version = Change {
            actor: &who,
            action: "key.add",
            target: format!("keys/{}", doc.kid),
            old_version: 0,
            guards: vec![guard(key_key(&doc.kid), 0)],
            ops: vec![put(&doc)],
        }
        .commit(&*self.store)
        .await?;
        Ok(Response::new(pb::AddKeyResponse {
            key: Some(to_pb(&doc, version)),
        }))
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
        let who = actor(&req);
        let r = req.into_inner();
        let doc = self.retiring(&r.kid, r.overlap_seconds).await?;
        let version = Change {
            actor: &who,
            action: "key.retire",
            target: format!("keys/{}", r.kid),
            old_version: r.expected_version,
            guards: vec![guard(key_key(&r.kid), r.expected_version)],
            ops: vec![put(&doc)],
        }
        .commit(&*self.store)
        .await?;
        Ok(Response::new(pb::RetireKeyResponse {
            key: Some(to_pb(&doc, version)),
        }))
    }

    /// Adds the new key and retires the old one after the overlap, in one transaction: both
    /// happen or neither does.
    async fn rotate(
        &self,
        req: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let who = actor(&req);
        let r = req.into_inner();
        let new = parse(&r.new_jwk_json)?;
        if new.kid == r.old_kid {
            return Err(Status::invalid_argument(
                "the new key needs a kid of its own",
            ));
        }
        let old = self.retiring(&r.old_kid, r.overlap_seconds).await?;
        let version = Change {
            actor: &who,
            action: "key.rotate",
            target: format!("keys/{}", r.old_kid),
            old_version: r.expected_version,
            guards: vec![
                guard(key_key(&r.old_kid), r.expected_version),
                guard(key_key(&new.kid), 0),
            ],
            ops: vec![put(&new), put(&old)],
        }
        .commit(&*self.store)
        .await?;
        Ok(Response::new(pb::RotateKeyResponse {
            added: Some(to_pb(&new, version)),
            retiring: Some(to_pb(&old, version)),
        }))
    }
}
