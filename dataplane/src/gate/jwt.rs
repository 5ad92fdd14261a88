//! JWT (JWS compact) verification with `ring`. Pure: the token, the keys and `now` in;
//! verified claims or a [`Reason`] out.
//!
//! Each key verifies exactly one algorithm, and the token header must name it, so
//! `alg=none` and HS/RS confusion cannot happen: a token that says `HS256` is never checked
//! against an RSA key's bytes.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;
use streamgate_policy::{Alg, Claims, KeyDoc, KeyMaterial, Reason};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A key ready to verify.
pub struct VerifyingKey {
    alg: Alg,
    issuer: Option<String>,
    retire_at: Option<SystemTime>,
    inner: Inner,
}

enum Inner {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Point(UnparsedPublicKey<Vec<u8>>),
    Hmac(ring::hmac::Key),
}

/// Why a key entry could not be made usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyLoadError {
    /// An HMAC secret reference could not be resolved.
    #[error("key {kid}: secret {reference} unavailable: {why}")]
    Secret {
        /// The key id.
        kid: String,
        /// The reference.
        reference: String,
        /// What failed.
        why: String,
    },
}

impl VerifyingKey {
    /// Makes `doc` usable, resolving an HMAC secret reference (`file:` or `env:`).
    pub fn new(doc: &KeyDoc) -> Result<Self, KeyLoadError> {
        let inner = match &doc.material {
            KeyMaterial::Rsa { n, e } => Inner::Rsa {
                n: n.clone(),
                e: e.clone(),
            },
            KeyMaterial::P256 { x, y } => {
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                Inner::Point(UnparsedPublicKey::new(
                    &signature::ECDSA_P256_SHA256_FIXED,
                    point,
                ))
            }
            KeyMaterial::Ed25519 { x } => {
                Inner::Point(UnparsedPublicKey::new(&signature::ED25519, x.to_vec()))
            }
            KeyMaterial::SecretRef(r) => {
                let fail = |why: String| KeyLoadError::Secret {
                    kid: doc.kid.clone(),
                    reference: r.clone(),
                    why,
                };
                let secret = if let Some(path) = r.strip_prefix("file:") {
                    let mut b = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
                    while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                        b.pop();
                    }
                    b
                } else if let Some(var) = r.strip_prefix("env:") {
                    std::env::var(var)
                        .map_err(|e| fail(e.to_string()))?
                        .into_bytes()
                } else {
                    return Err(fail(
                        "only file: and env: references are supported by the edge".into(),
                    ));
                };
                if secret.len() < 32 {
                    return Err(fail("HS256 secrets must be at least 32 bytes".into()));
                }
                Inner::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
            }
        };
        Ok(Self {
            alg: doc.alg,
            issuer: doc.issuer.clone(),
            retire_at: doc.retire_at,
            inner,
        })
    }

    fn verify_sig(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.inner {
            Inner::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            Inner::Point(k) => k.verify(msg, sig).is_ok(),
            Inner::Hmac(k) => ring::hmac::verify(k, msg, sig).is_ok(),
        }
    }
}

/// Keys by `kid`.
pub type KeySet = HashMap<String, VerifyingKey>;

/// The verified claims and when they stop being valid.
#[derive(Debug)]
pub struct Verified {
    /// The token's claims.
    pub claims: Claims,
    /// When this verdict stops holding: `exp` plus the leeway, or the key's `retire_at`
    /// if that comes first. A cached verdict is never used from then on.
    pub valid_until: SystemTime,
    /// Verified with the edges' wallet-session key (a self-service sign-in), not with one
    /// of the deployment's keys.
    pub session: bool,
    /// The `sg_wallet` claim parsed once (a wallet session's account), so that `wallet`
    /// and `nft` conditions do not parse it on every request.
    pub wallet: Option<streamgate_policy::address::Account>,
    /// The subject and wallet hashed once, for rate limits and stream caps.
    pub principals: crate::session::Principals,
}

fn decode(part: &str) -> Result<Vec<u8>, Reason> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Reason::MalformedToken)
}

fn unix(v: Option<&Value>) -> Result<Option<SystemTime>, Reason> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_f64().ok_or(Reason::MalformedToken)?;
            if !(0.0..1e11).contains(&secs) {
                return Err(Reason::MalformedToken);
            }
            Ok(Some(UNIX_EPOCH + Duration::from_secs_f64(secs)))
        }
        Some(_) => Err(Reason::MalformedToken),
    }
}

/// Verifies `token` against `keys` at `now`, allowing `leeway` of clock skew on `exp`/`nbf`.
/// Tokens must carry `exp`.
pub fn verify(
    token: &str,
    keys: &KeySet,
    session: Option<(&str, &VerifyingKey)>,
    now: SystemTime,
    leeway: Duration,
) -> Result<Verified, Reason> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Reason::MalformedToken);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::MalformedToken);
    };
    let header: Value =
        serde_json::from_slice(&decode(h64)?).map_err(|_| Reason::MalformedToken)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Reason::MalformedToken)?;
    // Extensions we do not understand must not be ignored (RFC 7515 §4.1.11).
    if header.get("crit").is_some() {
        return Err(Reason::MalformedToken);
    }
    let alg = Alg::from_jose(alg).ok_or(Reason::AlgorithmNotAllowed)?;
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(Reason::UnknownKey)?;
    // The edge's own wallet-session key comes first, so no stored key can shadow it.
    let (key, is_session) = match session {
        Some((skid, skey)) if skid == kid => (skey, true),
        _ => (keys.get(kid).ok_or(Reason::UnknownKey)?, false),
    };
    if key.retire_at.is_some_and(|t| now >= t) {
        return Err(Reason::UnknownKey);
    }
    if key.alg != alg {
        return Err(Reason::AlgorithmNotAllowed);
    }
    let sig = decode(s64)?;
    let signed = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    if !key.verify_sig(signed, &sig) {
        return Err(Reason::BadSignature);
    }
    let claims = match serde_json::from_slice(&decode(p64)?) {
        Ok(Value::Object(m)) => m,
        _ => return Err(Reason::MalformedToken),
    };
    let expires = unix(claims.get("exp"))?.ok_or(Reason::MalformedToken)?;
    if now > expires + leeway {
        return Err(Reason::TokenExpired);
    }
    if let Some(nbf) = unix(claims.get("nbf"))?
        && now + leeway < nbf
    {
        return Err(Reason::TokenNotYetValid);
    }
    if let Some(iss) = &key.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
    {
        return Err(Reason::WrongIssuer);
    }
    let wallet = claims
        .get("sg_wallet")
        .and_then(Value::as_str)
        .and_then(|a| streamgate_policy::address::Account::parse(a).ok());
    let valid_until = match key.retire_at {
        Some(r) => r.min(expires + leeway),
        None => expires + leeway,
    };
    let principals = crate::session::Principals::of(&claims, wallet.as_ref());
    Ok(Verified {
        claims,
        valid_until,
        session: is_session,
        wallet,
        principals,
    })
}

#[cfg(test)]
mod tests;
