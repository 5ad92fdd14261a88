//! Audit-log entries: the control plane writes one with every change, in the change's
//! transaction; edges write one when they act on their own (a token flagged as shared).

use std::hash::{BuildHasher, Hasher};
use std::time::SystemTime;

use serde_json::json;

use crate::{Op, PREFIX};

/// The audit entry written with a change, under `audit/<unix nanos:020>-<4 random hex>`:
/// keys sort by time, and the random part keeps two writers from colliding.
pub fn audit_op(actor: &str, action: &str, target: &str, old_version: i64) -> Op {
    let now = SystemTime::now();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // A randomly keyed hasher: 16 bits no other writer can predict.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    let salt = h.finish() as u16;
    let entry = json!({
        "time": humantime::format_rfc3339_millis(now).to_string(),
        "actor": actor,
        "action": action,
        "target": target,
        "old_version": old_version,
    });
    Op::put(
        format!("{PREFIX}audit/{nanos:020}-{salt:04x}"),
        entry.to_string().into_bytes(),
    )
}
