//! The state `streamgate dev` starts from: a signing key, the demo policy bound to the demo
//! asset, an admin token for `streamgate ctl`, and a viewer token. The key, policy and asset
//! are written into the store the control plane serves and the edge watches; what an
//! operator changed since (through `streamgate ctl`) is kept across restarts, only missing
//! pieces are created again.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use streamgate_policy::Policy;
use streamgate_store::{Guard, Op, PREFIX, Store, StoreError};

use crate::token::{SigningKey, TokenError};

/// The issuer of dev tokens, bound to the dev key.
pub const DEV_ISSUER: &str = "streamgate-dev";
/// The audience the demo policy asks for.
pub const DEV_AUDIENCE: &str = "streamgate";
/// How long a printed viewer token is valid.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The dev signing key's id.
pub const DEV_KID: &str = "dev-1";
/// The demo policy's id.
pub const DEMO_POLICY: &str = "demo-viewers";

/// What `dev` prints.
#[derive(Debug)]
pub struct DevState {
    /// A viewer token for the demo asset.
    pub viewer_token: String,
    /// When the token expires.
    pub expires: SystemTime,
    /// The file holding the admin token for `streamgate ctl`.
    pub admin_token_file: PathBuf,
    /// The admin token itself (for the control plane's authenticator).
    pub admin_token: String,
}

/// Why the dev state could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The signing key could not be made or used.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
}

/// The demo policy: a token from the dev issuer, for the StreamGate audience, scoped to the
/// asset (`sg_scope`). It is also what `policies/examples/subscribers.yaml` shows in full.
pub fn demo_policy() -> Value {
    json!({
        "id": DEMO_POLICY,
        "description": "Viewers holding a token from the dev issuer, scoped to the asset",
        "on_unavailable": "fail_closed",
        "rule": {"jwt": {"issuer": DEV_ISSUER, "audience": DEV_AUDIENCE, "scope_claim": "sg_scope"}}
    })
}

/// Writes `key` if it is at `expected` (0: absent), audited as done by `streamgate-dev`.
/// Returns whether it wrote (false: someone else's version is there; keep theirs).
async fn write(
    store: &dyn Store,
    key: &str,
    value: &Value,
    expected: i64,
    action: &str,
) -> Result<bool, StoreError> {
    let target = key.strip_prefix(PREFIX).unwrap_or(key);
    let ops = vec![
        Op::put(key.to_owned(), value.to_string().into_bytes()),
        crate::api::audit_op("streamgate-dev", action, target, expected),
    ];
    let guard = Guard {
        key: key.to_owned(),
        expected,
    };
    match store.txn(&[guard], ops).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads the admin token from `path`, or makes a random one there (mode 0600).
fn admin_token(path: &Path) -> Result<String, DevError> {
    let io = |source| DevError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_owned();
        if t.len() >= 16 {
            return Ok(t);
        }
    }
    let mut raw = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| io(std::io::Error::other("no system randomness")))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    writeln!(f, "{token}").map_err(io)?;
    Ok(token)
}

/// Loads the dev signing key from `data_dir` (making it the first time).
fn dev_key(data_dir: &Path) -> Result<SigningKey, DevError> {
    let key_path = data_dir.join("keys/dev-signing.pem");
    Ok(if key_path.exists() {
        SigningKey::load(&key_path, DEV_KID)?
    } else {
        SigningKey::generate_ed25519(&key_path, DEV_KID)?
    })
}

/// Seeds `store` with the dev key, the demo policy and the demo `asset` (each only if
/// missing; the key is replaced when its file changed), and mints a viewer token at `now`.
pub async fn seed(
    store: &dyn Store,
    data_dir: &Path,
    asset: &str,
    now: SystemTime,
) -> Result<DevState, DevError> {
    let state = local_state(data_dir, asset, now)?;
    seed_store(store, data_dir, asset).await?;
    Ok(state)
}

/// Writes the dev key, the demo policy and the demo `asset` into `store` (each only if
/// missing; the key is replaced when its file changed). `dev` retries this in the
/// background while etcd is unreachable.
pub async fn seed_store(store: &dyn Store, data_dir: &Path, asset: &str) -> Result<(), DevError> {
    let key = dev_key(data_dir)?;
    let jwk = key.public_jwk(Some(DEV_ISSUER));
    let key_key = format!("{PREFIX}keys/{DEV_KID}");
    match store.get(&key_key).await? {
        Some(v) if serde_json::from_slice::<Value>(&v.value).ok().as_ref() == Some(&jwk) => {}
        current => {
            let version = current.map_or(0, |v| v.version);
            write(store, &key_key, &jwk, version, "key.add").await?;
        }
    }
    let policy = Policy::from_value(&demo_policy())
        .expect("the demo policy is valid")
        .to_value();
    write(
        store,
        &format!("{PREFIX}policies/{DEMO_POLICY}"),
        &policy,
        0,
        "policy.apply",
    )
    .await?;
    write(
        store,
        &format!("{PREFIX}assets/{asset}"),
        &json!({"id": asset, "policy": DEMO_POLICY, "description": "the dev demo: a generated test pattern"}),
        0,
        "asset.register",
    )
    .await?;
    Ok(())
}

/// What `dev` prints, made from files alone (the key, the admin token), so it is there
/// even while the store is unreachable: the admin token and a viewer token minted at `now`.
pub fn local_state(data_dir: &Path, asset: &str, now: SystemTime) -> Result<DevState, DevError> {
    let key = dev_key(data_dir)?;
    let admin_token_file = data_dir.join("admin.token");
    let admin_token = admin_token(&admin_token_file)?;
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expires = now + DEV_TOKEN_TTL;
    let claims = json!({
        "iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "dev-viewer",
        "iat": iat, "exp": iat + DEV_TOKEN_TTL.as_secs(), "sg_scope": [asset],
    });
    let viewer_token = key.mint(claims.as_object().expect("object"))?;
    Ok(DevState {
        viewer_token,
        expires,
        admin_token_file,
        admin_token,
    })
}
