//! Wallet session tokens, as `/auth/verify` issues them and every edge verifies them.

// Public for the benchmarks (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::Ed25519KeyPair;
use serde_json::json;
use streamgate_policy::WALLET_ISSUER;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A wallet session token: an EdDSA JWT from `streamgate-wallet` whose subject and
/// `sg_wallet` are `account` (CAIP-10), signed with the session key `kid`.
pub fn session_token(
    key: &Ed25519KeyPair,
    kid: &str,
    account: &str,
    now: SystemTime,
    expires: SystemTime,
) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let claims = json!({
        "iss": WALLET_ISSUER,
        "sub": account,
        "aud": "streamgate",
        "iat": unix(now),
        "exp": unix(expires),
        "sg_wallet": account,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}
