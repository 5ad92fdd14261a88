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

/// The status one edge reported (`value` under `key`), seen at `now` with the store at
/// `store_revision`. A record that is not such a status is an error saying why: records
/// are written by edges, possibly by other versions, so a bad one is skipped, not fatal.
fn edge(key: &str, value: &[u8], store_revision: i64, now: SystemTime) -> Result<pb::Edge, String> {
    let d: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let id = d["id"].as_str().ok_or("no string \"id\"")?;
    if key.rsplit('/').next() != Some(id) {
        return Err(format!("id {id:?} is not the key's"));
    }
    let revision = d["revision"]
        .as_i64()
        .filter(|r| *r >= 0)
        .ok_or("no revision (a non-negative integer)")?;
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
    let applied_at = s("applied_at");
    // An edge whose report time cannot be read is as good as silent.
    let stale = humantime::parse_rfc3339_weak(&applied_at).map_or(true, |t| {
        now.duration_since(t).unwrap_or_default() >= STALE_AFTER
    });
    Ok(pb::Edge {
        id: id.to_owned(),
        revision,
        applied_at,
        started_at: s("started_at"),
        version: s("version"),
        hostname: s("hostname"),
        lag: (store_revision - revision).max(0),
        stale,
    })
}

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
            match edge(&key, &v.value, store_revision, now) {
                Ok(e) => edges.push(e),
                Err(why) => tracing::warn!(%key, %why, "edge status record skipped"),
            }
        }
        Ok(Response::new(pb::ListEdgesResponse {
            edges,
            store_revision,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/streamgate/v1/edges/e1";

    fn at(t: SystemTime) -> String {
        humantime::format_rfc3339_millis(t).to_string()
    }

    #[test]
    fn lag_and_staleness() {
        let now = humantime::parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
        let rec = |applied: SystemTime| {
            serde_json::json!({"id": "e1", "revision": 40, "applied_at": at(applied),
                "started_at": "2026-01-01T00:00:00Z", "version": "0.1.0", "hostname": "h1"})
            .to_string()
        };
        let fresh = edge(KEY, rec(now - Duration::from_secs(89)).as_bytes(), 52, now).unwrap();
        assert_eq!(
            (fresh.id.as_str(), fresh.revision, fresh.lag, fresh.stale),
            ("e1", 40, 12, false)
        );
        assert_eq!(
            (
                fresh.version.as_str(),
                fresh.hostname.as_str(),
                fresh.started_at.as_str()
            ),
            ("0.1.0", "h1", "2026-01-01T00:00:00Z")
        );
        assert!(
            edge(KEY, rec(now - STALE_AFTER).as_bytes(), 52, now)
                .unwrap()
                .stale
        );
        // A clock ahead of ours is not stale; a revision ahead of the store is no lag.
        let ahead = edge(KEY, rec(now + Duration::from_secs(5)).as_bytes(), 30, now).unwrap();
        assert_eq!((ahead.stale, ahead.lag), (false, 0));
        let no_time = edge(KEY, br#"{"id": "e1", "revision": 1}"#, 1, now).unwrap();
        assert!(no_time.stale);
    }

    #[test]
    fn malformed_records_are_refused_with_a_reason() {
        let now = SystemTime::now();
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"id": 7, "revision": 1}"#,
            br#"{"id": "e1"}"#,
            br#"{"id": "e1", "revision": "3"}"#,
            br#"{"id": "e1", "revision": -1}"#,
            br#"{"id": "e2", "revision": 1}"#,
        ] {
            let why = edge(KEY, bad, 10, now).unwrap_err();
            assert!(!why.is_empty(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
