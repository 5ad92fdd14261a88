//! The state `streamgate dev` publishes to its edge: a signing key, the demo policy bound
//! to the demo asset, and a viewer token. Until the etcd store lands, it is handed to the
//! edge as a policy snapshot file, the same document an edge keeps as its last known good.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::token::{SigningKey, TokenError};

/// The issuer of dev tokens, bound to the dev key.
pub const DEV_ISSUER: &str = "streamgate-dev";
/// The audience the demo policy asks for.
pub const DEV_AUDIENCE: &str = "streamgate";
/// How long a printed viewer token is valid.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What `dev` hands to its edge and prints.
#[derive(Debug)]
pub struct DevState {
    /// The policy snapshot file for the edge.
    pub snapshot: PathBuf,
    /// A viewer token for the demo asset.
    pub viewer_token: String,
    /// When the token expires.
    pub expires: SystemTime,
}

/// The demo policy: a token from the dev issuer, for the StreamGate audience, scoped to the
/// asset (`sg_scope`). It is also what `policies/examples/subscribers.yaml` shows in full.
pub fn demo_policy() -> Value {
    json!({
        "id": "demo-viewers",
        "description": "Viewers holding a token from the dev issuer, scoped to the asset",
        "on_unavailable": "fail_closed",
        "rule": {"jwt": {"issuer": DEV_ISSUER, "audience": DEV_AUDIENCE, "scope_claim": "sg_scope"}}
    })
}

/// Writes (or refreshes) the dev state under `data_dir` for `asset`, at time `now`.
pub fn ensure(data_dir: &Path, asset: &str, now: SystemTime) -> Result<DevState, TokenError> {
    let key_path = data_dir.join("keys/dev-signing.pem");
    let key = if key_path.exists() {
        SigningKey::load(&key_path, "dev-1")?
    } else {
        SigningKey::generate_ed25519(&key_path, "dev-1")?
    };
    let snapshot = json!({
        "revision": 1,
        "policies": [demo_policy()],
        "assets": [{"id": asset, "policy": "demo-viewers"}],
        "keys": [key.public_jwk(Some(DEV_ISSUER))],
    });
    let path = data_dir.join("policy-snapshot.json");
    let io = |source| TokenError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&snapshot).expect("JSON")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;

    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expires = now + DEV_TOKEN_TTL;
    let claims = json!({
        "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "dev-viewer",
        "iat": iat, "exp": iat + DEV_TOKEN_TTL.as_secs(), "sg_scope": [asset],
    });
    let viewer_token = key.mint(claims.as_object().expect("object"))?;
    Ok(DevState {
        snapshot: path,
        viewer_token,
        expires,
    })
}
