//! `AuditService`: the audit log, oldest first. Each entry was committed in the same store
//! transaction as the change it records, so its version is the change's revision.

use std::sync::Arc;

use serde_json::Value;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::status;
use crate::store::{PREFIX, Store};

/// Entries per call when the caller sets no limit, and the most it may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `AuditService` over a [`Store`].
pub struct AuditApi {
    store: Arc<dyn Store>,
}

impl AuditApi {
    /// Serves the audit log kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = req.into_inner();
        let limit = match usize::try_from(r.limit) {
            Ok(0) => DEFAULT_LIMIT,
            Ok(n) if n <= MAX_LIMIT => n,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "limit: 0 (default {DEFAULT_LIMIT}) to {MAX_LIMIT}"
                )));
            }
        };
        let (items, _) = self
            .store
            .list(&format!("{PREFIX}audit/"))
            .await
            .map_err(status)?;
        let mut entries: Vec<pb::AuditEntry> = items
            .into_iter()
            .filter(|(_, v)| v.version > r.after_seq)
            .filter_map(|(_, v)| {
                let d: Value = serde_json::from_slice(&v.value).ok()?;
                let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                Some(pb::AuditEntry {
                    seq: v.version,
                    time: s("time"),
                    actor: s("actor"),
                    action: s("action"),
                    target: s("target"),
                    old_version: d["old_version"].as_i64().unwrap_or(0),
                    new_version: v.version,
                })
            })
            .collect();
        entries.sort_by_key(|e| e.seq);
        entries.truncate(limit);
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }
}
