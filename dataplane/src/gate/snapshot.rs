//! The policy snapshot an edge enforces: policies, asset bindings and verification keys at
//! one revision. It is immutable; a new revision is a new snapshot, swapped in atomically.
//! The same JSON form is what the edge writes to disk as its last known good state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use streamgate_policy::{KeyDoc, Policy, Reason};

use super::jwt::{KeySet, Verified, VerifyingKey};

/// A verification result cached per token string.
pub(crate) struct CachedVerify {
    pub(crate) result: Result<Verified, Reason>,
    ttl: Duration,
}

/// How long a refused token's verdict is remembered (a `nbf` token may become valid).
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Longest any verdict is remembered.
const MAX_TTL: Duration = Duration::from_secs(3600);

struct VerifyExpiry;

impl moka::Expiry<Box<str>, Arc<CachedVerify>> for VerifyExpiry {
    fn expire_after_create(
        &self,
        _k: &Box<str>,
        v: &Arc<CachedVerify>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// One revision of the gate's state.
pub struct Snapshot {
    /// The store revision this snapshot was built from.
    pub revision: i64,
    /// Policies by id.
    pub policies: HashMap<String, Arc<Policy>>,
    /// Assets by id, with the id of the policy they are bound to.
    pub assets: HashMap<String, Option<String>>,
    /// Where an asset's objects live when the farm published a version of it
    /// (`{asset}/{job}`); assets without one are read from `{asset}/`.
    pub origin_prefixes: HashMap<String, Arc<str>>,
    keys: KeySet,
    verified: moka::sync::Cache<Box<str>, Arc<CachedVerify>, ahash::RandomState>,
    source: Value,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("policies", &self.policies.len())
            .field("assets", &self.assets.len())
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Every problem in a snapshot document, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy snapshot: {}", .0.join("; "))]
pub struct SnapshotError(pub Vec<String>);

fn items<'v>(doc: &'v Value, key: &str, errs: &mut Vec<String>) -> &'v [Value] {
    match doc.get(key) {
        None => &[],
        Some(Value::Array(a)) => a,
        Some(_) => {
            errs.push(format!("{key}: expected a list"));
            &[]
        }
    }
}

impl Snapshot {
    /// Builds a snapshot from its JSON document, validating every policy, asset and key.
    /// Any problem refuses the whole document (a file an operator wrote).
    pub fn from_value(doc: Value, token_cache_entries: u64) -> Result<Self, SnapshotError> {
        match Self::build(doc, token_cache_entries, true) {
            Ok((s, _)) => Ok(s),
            Err(e) => Err(e),
        }
    }

    /// Builds a snapshot from state read from the store, leaving out each document that does
    /// not validate and returning the problems. An asset whose policy was left out (or is
    /// missing) stays known and is refused with 403: the gap fails closed.
    pub fn from_store(
        doc: Value,
        token_cache_entries: u64,
    ) -> Result<(Self, Vec<String>), SnapshotError> {
        Self::build(doc, token_cache_entries, false)
    }

    fn build(
        doc: Value,
        token_cache_entries: u64,
        strict: bool,
    ) -> Result<(Self, Vec<String>), SnapshotError> {
        let mut errs = Vec::new();
        if !doc.is_object() {
            return Err(SnapshotError(vec!["expected a JSON object".into()]));
        }
        let revision = doc.get("revision").and_then(Value::as_i64).unwrap_or(0);
        let mut policies = HashMap::new();
        for (i, p) in items(&doc, "policies", &mut errs).iter().enumerate() {
            match Policy::from_value(p) {
                Ok(p) => {
                    if policies
                        .insert(p.id.as_str().to_owned(), Arc::new(p))
                        .is_some()
                    {
                        errs.push(format!("policies[{i}].id: duplicate"));
                    }
                }
                Err(e) => errs.extend(e.0.iter().map(|e| format!("policies[{i}].{e}"))),
            }
        }
        let mut assets = HashMap::new();
        let mut origin_prefixes = HashMap::new();
        for (i, a) in items(&doc, "assets", &mut errs).iter().enumerate() {
            let id = a.get("id").and_then(Value::as_str);
            let policy = a.get("policy").and_then(Value::as_str).map(str::to_owned);
            match id {
                Some(id) if streamgate_origin::validate_key(id).is_ok() && !id.contains('/') => {
                    match a.get("origin_prefix") {
                        None | Some(Value::Null) => {}
                        // A version lives inside its asset's folder, one level down.
                        Some(Value::String(p))
                            if streamgate_origin::validate_key(p).is_ok()
                                && p.strip_prefix(id)
                                    .and_then(|r| r.strip_prefix('/'))
                                    .is_some_and(|v| !v.contains('/')) =>
                        {
                            origin_prefixes.insert(id.to_owned(), Arc::from(p.as_str()));
                        }
                        Some(_) => {
                            // Served from nowhere rather than from the wrong place.
                            errs.push(format!(
                                "assets[{i}].origin_prefix: must be \"{id}/<version>\""
                            ));
                            continue;
                        }
                    }
                    if let Some(p) = &policy
                        && !policies.contains_key(p)
                        && strict
                    {
                        errs.push(format!("assets[{i}].policy: unknown policy {p:?}"));
                    }
                    assets.insert(id.to_owned(), policy);
                }
                _ => errs.push(format!("assets[{i}].id: required, one path segment")),
            }
        }
        let mut keys = KeySet::new();
        for (i, k) in items(&doc, "keys", &mut errs).iter().enumerate() {
            match KeyDoc::from_value(k) {
                Ok(d) => match VerifyingKey::new(&d) {
                    Ok(v) => {
                        keys.insert(d.kid.clone(), v);
                    }
                    Err(e) => errs.push(format!("keys[{i}]: {e}")),
                },
                Err(e) => errs.extend(e.0.iter().map(|e| format!("keys[{i}].{e}"))),
            }
        }
        if strict && !errs.is_empty() {
            return Err(SnapshotError(errs));
        }
        let snapshot = Self {
            revision,
            policies,
            assets,
            origin_prefixes,
            keys,
            // aHash (randomly keyed) hashes a 300-byte token several times faster than SipHash.
            verified: moka::sync::Cache::builder()
                .max_capacity(token_cache_entries)
                .expire_after(VerifyExpiry)
                .build_with_hasher(ahash::RandomState::new()),
            source: doc,
        };
        Ok((snapshot, errs))
    }

    /// Reads and validates a snapshot file (JSON), refusing it whole on any problem.
    pub fn load(path: &std::path::Path, token_cache_entries: u64) -> Result<Self, SnapshotError> {
        let text = std::fs::read(path).map_err(|e| SnapshotError(vec![e.to_string()]))?;
        let doc = serde_json::from_slice(&text)
            .map_err(|e| SnapshotError(vec![format!("not JSON: {e}")]))?;
        Self::from_value(doc, token_cache_entries)
    }

    /// The document this snapshot was built from (for the last-known-good file).
    pub fn to_value(&self) -> &Value {
        &self.source
    }

    /// Verifies `token` (signature, `exp`, `nbf`, key issuer), remembering the verdict until
    /// the token expires or its key retires, whichever comes first (or briefly, for a
    /// refusal). A remembered verdict is checked against `now` on every use, so a key's
    /// `retire_at` ends it on time whatever the cache's own clock says. The cache is part
    /// of the snapshot, so any key change starts from scratch.
    pub(crate) fn verify(
        &self,
        token: &str,
        now: std::time::SystemTime,
        leeway: Duration,
        session: Option<&(String, VerifyingKey)>,
    ) -> Arc<CachedVerify> {
        if let Some(hit) = self.verified.get(token) {
            match &hit.result {
                Ok(v) if now >= v.valid_until => {}
                _ => return hit,
            }
        }
        let session = session.map(|(kid, key)| (kid.as_str(), key));
        let result = super::jwt::verify(token, &self.keys, session, now, leeway);
        let ttl = match &result {
            Ok(v) => v
                .valid_until
                .duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(MAX_TTL),
            Err(_) => NEGATIVE_TTL,
        };
        let entry = Arc::new(CachedVerify { result, ttl });
        if !ttl.is_zero() && token.len() <= super::jwt::MAX_TOKEN_LEN {
            self.verified.insert(token.into(), Arc::clone(&entry));
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_prefixes_must_be_a_version_inside_the_asset() {
        let doc = serde_json::json!({
            "revision": 7,
            "policies": [{"id": "open", "rule": {"public": true}}],
            "assets": [
                {"id": "a", "policy": "open", "origin_prefix": "a/j1"},
                {"id": "flat", "policy": "open"},
                {"id": "b", "policy": "open", "origin_prefix": "a/j1"},
                {"id": "c", "policy": "open", "origin_prefix": "c/j1/deeper"},
                {"id": "d", "policy": "open", "origin_prefix": "d/../x"},
            ],
        });
        let (s, problems) = Snapshot::from_store(doc.clone(), 10).unwrap();
        assert_eq!(s.origin_prefixes.get("a").map(|p| &**p), Some("a/j1"));
        assert!(s.assets.contains_key("flat") && !s.origin_prefixes.contains_key("flat"));
        for left_out in ["b", "c", "d"] {
            assert!(
                !s.assets.contains_key(left_out),
                "{left_out} is served from nowhere"
            );
        }
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            Snapshot::from_value(doc, 10).is_err(),
            "a file with them is refused"
        );
    }
}
