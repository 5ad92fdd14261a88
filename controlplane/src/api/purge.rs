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

use super::assets::{ASSET_ID_RULE, is_asset_id};
use super::{Change, caller, check_id, guard, status};
use crate::store::{Op, PREFIX, Store};

/// How many purge records are kept.
pub(crate) const KEEP: usize = 1000;

fn counter_key() -> String {
    format!("{PREFIX}counters/purge")
}

/// Longest prefix accepted, in bytes.
const MAX_PREFIX: usize = 1024;

/// Tries per purge: the first, and up to 5 retries when another purge took the number.
const ATTEMPTS: usize = 6;

/// Checks a purge target; returns the JSON field and value of the record. Errors name the
/// request field (`asset_id`, `prefix` or `target`).
fn target(t: Option<pb::purge_request::Target>) -> Result<(&'static str, String), Status> {
    let bad = |field: &str, why: &str| Status::invalid_argument(format!("{field}: {why}"));
    match t {
        Some(pb::purge_request::Target::AssetId(a)) => {
            if !is_asset_id(&a) {
                return Err(bad("asset_id", ASSET_ID_RULE));
            }
            Ok(("asset", a))
        }
        Some(pb::purge_request::Target::Prefix(p)) => {
            if p.is_empty() || p.len() > MAX_PREFIX {
                return Err(bad("prefix", "1 to 1024 bytes"));
            }
            if p.starts_with('/') || p.contains('\0') || p.contains('\\') {
                return Err(bad(
                    "prefix",
                    "an object key prefix such as demo/video/720p/ (no leading '/', NUL or backslash)",
                ));
            }
            if p.split('/').any(|s| s == ".." || s == ".") {
                return Err(bad("prefix", "'.' and '..' segments are not allowed"));
            }
            // The asset id and its '/': "demo" alone would also purge "demo2/...".
            match p.split_once('/') {
                Some((asset, _)) if is_asset_id(asset) => Ok(("prefix", p)),
                Some(_) => Err(bad(
                    "prefix",
                    &format!("must start with an asset id ({ASSET_ID_RULE}) and '/'"),
                )),
                None => Err(bad(
                    "prefix",
                    "must start with an asset id and '/' (purge a whole asset with asset_id)",
                )),
            }
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

    /// One attempt: the next number after the counter (and after the newest record, should
    /// the counter have been lost), committed with the record, the pruning and the audit
    /// entry, guarded on the counter's version.
    async fn once(&self, who: &str, field: &str, value: &str) -> Result<(i64, i64), Status> {
        let ckey = counter_key();
        let (last, cver) = match self.store.get(&ckey).await.map_err(status)? {
            Some(v) => {
                let text = String::from_utf8_lossy(&v.value);
                let n = text.trim().parse::<i64>().map_err(|_| {
                    Status::internal(format!("{ckey} holds {text:?}, not a purge number"))
                })?;
                (n, v.version)
            }
            None => (0, 0),
        };
        let (old, _) = self
            .store
            .list(&format!("{PREFIX}purges/"))
            .await
            .map_err(status)?;
        let newest = old
            .last()
            .and_then(|(k, _)| k.rsplit('/').next()?.parse::<i64>().ok())
            .unwrap_or(0);
        let seq = last.max(newest) + 1;
        let record = json!({
            "seq": seq,
            field: value,
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "actor": who,
        });
        let mut ops = vec![
            Op::put(ckey.clone(), seq.to_string().into_bytes()),
            Op::put(
                format!("{PREFIX}purges/{seq:020}"),
                record.to_string().into_bytes(),
            ),
        ];
        // Prune what falls out of the newest `keep`. The listing is current when this
        // commits: another purge in between would have moved the counter guarded here.
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
        let who = caller(&req);
        let (field, value) = target(req.into_inner().target)?;
        // A prefix starts with its asset id (checked above); a tenant keeps to its own.
        let asset = value.split('/').next().unwrap_or_default();
        check_id(&*self.store, &who, "PurgeService/Purge", "assets", asset).await?;
        let who = who.name;
        // The counter is the only contended key; concurrent purges retry on it.
        for _ in 0..ATTEMPTS {
            match self.once(&who, field, &value).await {
                Ok((seq, revision)) => {
                    return Ok(Response::new(pb::PurgeResponse { seq, revision }));
                }
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
                Err(s) => return Err(s),
            }
        }
        Err(Status::aborted(format!(
            "purge: the sequence counter changed under {ATTEMPTS} attempts (many concurrent purges); retry"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::purge_request::Target;

    fn field_of(t: Target) -> String {
        let e = target(Some(t)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        e.message().split(':').next().unwrap().to_owned()
    }

    #[test]
    fn targets_are_checked_and_errors_name_the_field() {
        assert_eq!(
            target(Some(Target::AssetId("demo".into()))).unwrap(),
            ("asset", "demo".to_owned())
        );
        assert_eq!(
            target(Some(Target::Prefix("demo/video/720p/".into()))).unwrap(),
            ("prefix", "demo/video/720p/".to_owned())
        );
        assert_eq!(
            target(Some(Target::Prefix("demo/".into()))).unwrap().1,
            "demo/"
        );
        for bad in ["", "Demo", "a b", "a/b", ".", "..", &"x".repeat(129)] {
            assert_eq!(field_of(Target::AssetId(bad.into())), "asset_id", "{bad:?}");
        }
        let long = format!("demo/{}", "x".repeat(1020));
        for bad in [
            "",
            "/demo/x",
            "demo/\0x",
            "demo\\x/",
            "demo/../x/",
            "demo/./x",
            "demo/x/..",
            "..",
            "demo",
            "Demo/x/",
            "a b/x",
            "../etc/",
            "/",
            long.as_str(),
        ] {
            assert_eq!(field_of(Target::Prefix(bad.into())), "prefix", "{bad:?}");
        }
        assert_eq!(
            target(Some(Target::Prefix(format!("demo/{}", "x".repeat(1019)))))
                .unwrap()
                .1
                .len(),
            MAX_PREFIX
        );
        let none = target(None).unwrap_err();
        assert!(none.message().starts_with("target:"), "{}", none.message());
    }
}
