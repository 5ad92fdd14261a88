//! `AuditService`: the audit log, oldest first. Each entry was committed in the same store
//! transaction as the change it records, so its version is the change's revision.

use std::sync::Arc;

use serde_json::Value;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::{caller, status};
use crate::auth::Actor;
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
        let who = caller(&req);
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
                if !visible(&who, d["actor"].as_str()?, d["target"].as_str()?) {
                    return None;
                }
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

/// The asset (or policy) id an audit target names: `assets/<id>`, `policies/<id>`,
/// `asset:<id>`, `prefix:<id>/...`, `... asset=<id>` (jobs and uploads), and for a refused
/// call (`Service/Method <target>`) that of the target. `None` for fleet-wide objects
/// (`keys/...`) and a refused call that names none.
fn scope_of(target: &str) -> Option<&str> {
    if let Some((_, a)) = target.split_once(" asset=") {
        return a.split(' ').next();
    }
    if let Some((method, rest)) = target.split_once(' ')
        && method.contains('/')
        && !method.contains(':')
    {
        return scope_of(rest);
    }
    for p in ["assets/", "policies/", "asset:"] {
        if let Some(id) = target.strip_prefix(p) {
            return Some(id);
        }
    }
    target.strip_prefix("prefix:")?.split('/').next()
}

/// Whether `who` may read an entry: everything for a token with no prefixes; for a
/// tenant, the entries that name one of its assets or policies, and its own.
fn visible(who: &Actor, actor: &str, target: &str) -> bool {
    !who.is_tenant() || actor == who.name || scope_of(target).is_some_and(|id| who.may_touch(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_scoped_by_what_they_name() {
        for (t, id) in [
            ("assets/acme-1", Some("acme-1")),
            ("policies/acme-p", Some("acme-p")),
            ("asset:acme-1", Some("acme-1")),
            ("prefix:acme-1/video/", Some("acme-1")),
            ("jobs/abc asset=acme-2", Some("acme-2")),
            ("uploads/u1 asset=acme-3 size=10 sha256=ff", Some("acme-3")),
            ("AssetService/Get assets/globex", Some("globex")),
            ("KeyService/Add", None),
            ("keys/k1", None),
        ] {
            assert_eq!(scope_of(t), id, "{t}");
        }
    }
}
