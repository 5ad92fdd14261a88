//! `PurgeService`: drop cached objects on every edge, by asset or by key prefix.
//!
//! A purge is a record `purges/<seq>` (`{"seq", "asset"|"prefix", "time", "actor"}`) that
//! every edge applies when its watch reaches it, or when it reloads after missing it. The
//! sequence comes from the counter `counters/purge`, incremented in the same transaction as
//! the record and its audit entry. The newest [`KEEP`] records are kept; older ones are
//! deleted by the purge that pushes them out.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Change, actor, guard, status};
use crate::store::{Op, PREFIX, Store, StoreError};

/// How many purge records are kept.
pub(crate) const KEEP: usize = 1000;

fn counter_key() -> String {
    format!("{PREFIX}counters/purge")
}

/// Checks a purge target; returns the JSON field and value of the record.
fn target(t: Option<pb::purge_request::Target>) -> Result<(&'static str, String), Status> {
    let bad = |field: &str, why: &str| Status::invalid_argument(format!("{field}: {why}"));
    match t {
        Some(pb::purge_request::Target::AssetId(a)) => {
            if a.is_empty()
                || a.len() > 128
                || a == "."
                || a == ".."
                || !a
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            {
                return Err(bad(
                    "asset_id",
                    "1 to 128 characters of a-z, 0-9, '.', '_', '-'",
                ));
            }
            Ok(("asset", a))
        }
        Some(pb::purge_request::Target::Prefix(p)) => {
            if p.is_empty() || p.len() > 1024 {
                return Err(bad("prefix", "1 to 1024 bytes"));
            }
            if p.starts_with('/') || p.contains('\0') || p.contains('\\') {
                return Err(bad(
                    "prefix",
                    "an object key prefix such as demo/video/720p/ (no leading '/', NUL or '\\\\')",
                ));
            }
            if p.split('/').any(|s| s == ".." || s == ".") {
                return Err(bad("prefix", "'.' and '..' segments are not allowed"));
            }
            if !p.contains('/') {
                return Err(bad(
                    "prefix",
                    "must start with an asset id and '/' (purge a whole asset with asset_id)",
                ));
            }
            Ok(("prefix", p))
        }
        None => Err(bad("target", "asset_id or prefix is required")),
    }
}

/// `PurgeService` over a [`Store`].
pub struct PurgeApi {
    store: Arc<dyn Store>,
    keep: usize,
}

impl PurgeApi {
    /// Serves purges kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, keep: KEEP }
    }

    #[cfg(test)]
    pub(crate) fn with_keep(store: Arc<dyn Store>, keep: usize) -> Self {
        Self { store, keep }
    }

    async fn once(&self, who: &str, field: &str, value: &str) -> Result<(i64, i64), Status> {
        let ckey = counter_key();
        let current = self.store.get(&ckey).await.map_err(status)?;
        let (seq, cver) = match &current {
            Some(v) => (
                String::from_utf8_lossy(&v.value)
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(0)
                    + 1,
                v.version,
            ),
            None => (1, 0),
        };
        let record = json!({
            "seq": seq,
            field: value,
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "actor": who,
        });
        let mut ops = vec![
            Op::Put {
                key: ckey.clone(),
                value: seq.to_string().into_bytes(),
            },
            Op::Put {
                key: format!("{PREFIX}purges/{seq:020}"),
                value: record.to_string().into_bytes(),
            },
        ];
        // Prune what falls out of the newest `keep` (best effort: a listing slightly out of
        // date only delays the pruning to a later purge).
        let (old, _) = self
            .store
            .list(&format!("{PREFIX}purges/"))
            .await
            .map_err(status)?;
        let excess = (old.len() + 1).saturating_sub(self.keep);
        ops.extend(
            old.into_iter()
                .take(excess)
                .map(|(key, _)| Op::Delete { key }),
        );
        let revision = Change {
            actor: who,
            action: "purge",
            target: format!("{field}:{value}"),
            old_version: 0,
            guards: vec![guard(ckey, cver)],
            ops,
        }
        .commit(&*self.store)
        .await?;
        Ok((seq, revision))
    }
}

#[tonic::async_trait]
impl pb::purge_service_server::PurgeService for PurgeApi {
    async fn purge(
        &self,
        req: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let who = actor(&req);
        let (field, value) = target(req.into_inner().target)?;
        // The counter is the only contended key; concurrent purges retry on it.
        let mut last = None;
        for _ in 0..8 {
            match self.once(&who, field, &value).await {
                Ok((seq, revision)) => {
                    return Ok(Response::new(pb::PurgeResponse { seq, revision }));
                }
                Err(s) if s.code() == tonic::Code::FailedPrecondition => last = Some(s),
                Err(s) => return Err(s),
            }
        }
        Err(last.unwrap_or_else(|| status(StoreError::Unavailable("purge contended".into()))))
    }
}
