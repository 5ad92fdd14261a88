//! `EdgeService`: which edges run which revision. Edges write `edges/<id>` themselves on
//! every new snapshot and every 30 s.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::status;
use crate::store::{PREFIX, Store};

/// An edge that has not reported for this long is shown as stale.
const STALE_AFTER: Duration = Duration::from_secs(90);

/// `EdgeService` over a [`Store`].
pub struct EdgeApi {
    store: Arc<dyn Store>,
}

impl EdgeApi {
    /// Serves the edge status records kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl pb::edge_service_server::EdgeService for EdgeApi {
    async fn list(
        &self,
        _req: Request<pb::ListEdgesRequest>,
    ) -> Result<Response<pb::ListEdgesResponse>, Status> {
        let (items, store_revision) = self
            .store
            .list(&format!("{PREFIX}edges/"))
            .await
            .map_err(status)?;
        let now = SystemTime::now();
        let mut edges = Vec::with_capacity(items.len());
        for (key, v) in items {
            let Ok(d) = serde_json::from_slice::<Value>(&v.value) else {
                tracing::warn!(%key, "edge status record is not JSON; skipped");
                continue;
            };
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            let revision = d["revision"].as_i64().unwrap_or(0);
            let applied_at = s("applied_at");
            let stale = humantime::parse_rfc3339_weak(&applied_at).map_or(true, |t| {
                now.duration_since(t).unwrap_or_default() >= STALE_AFTER
            });
            edges.push(pb::Edge {
                id: s("id"),
                revision,
                applied_at,
                started_at: s("started_at"),
                version: s("version"),
                hostname: s("hostname"),
                lag: (store_revision - revision).max(0),
                stale,
            });
        }
        Ok(Response::new(pb::ListEdgesResponse {
            edges,
            store_revision,
        }))
    }
}
