//! Token verification keys: JWKS-style entries with a `kid`, an algorithm allowlist of one,
//! an optional issuer binding and an optional retirement time (the end of a rotation overlap).
//! Public keys travel as JWK fields; HMAC secrets only by reference, never by value.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::parse::{PolicyError, PolicyErrors};

/// The one algorithm a key may verify. Anything else in a token header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
    /// HMAC with SHA-256 (secret held by reference).
    Hs256,
}

impl Alg {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    /// Parses a JOSE name; `none` and everything unsupported give `None`.
    pub fn from_jose(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "HS256" => Some(Self::Hs256),
            _ => None,
        }
    }
}

/// Key material.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// RSA public modulus and exponent, big-endian.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Exponent.
        e: Vec<u8>,
    },
    /// A P-256 public point.
    P256 {
        /// X coordinate.
        x: [u8; 32],
        /// Y coordinate.
        y: [u8; 32],
    },
    /// An Ed25519 public key.
    Ed25519 {
        /// The key.
        x: [u8; 32],
    },
    /// Where an HMAC secret lives: `file:/path` or `env:NAME` (or a Vault path later).
    SecretRef(String),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rsa { n, .. } => write!(f, "Rsa({} bits)", n.len() * 8),
            Self::P256 { .. } => f.write_str("P256"),
            Self::Ed25519 { .. } => f.write_str("Ed25519"),
            Self::SecretRef(r) => write!(f, "SecretRef({r})"),
        }
    }
}

/// A verification key entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// Key id, matched against the token header's `kid`.
    pub kid: String,
    /// The only algorithm this key verifies.
    pub alg: Alg,
    /// The key.
    pub material: KeyMaterial,
    /// When set, tokens verified by this key must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, the key stops verifying at this instant (the end of its rotation overlap).
    pub retire_at: Option<SystemTime>,
}

fn b64(errs: &mut Vec<PolicyError>, m: &Map<String, Value>, field: &str) -> Option<Vec<u8>> {
    let err = |errs: &mut Vec<PolicyError>, msg: &str| {
        errs.push(PolicyError {
            path: field.to_owned(),
            message: msg.to_owned(),
        })
    };
    match m.get(field) {
        None => {
            err(errs, "required");
            None
        }
        Some(Value::String(s)) => match URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                err(errs, "expected base64url");
                None
            }
        },
        Some(_) => {
            err(errs, "expected a base64url string");
            None
        }
    }
}

fn fixed32(errs: &mut Vec<PolicyError>, field: &str, v: Option<Vec<u8>>) -> Option<[u8; 32]> {
    let v = v?;
    match <[u8; 32]>::try_from(v.as_slice()) {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(PolicyError {
                path: field.to_owned(),
                message: format!("expected 32 bytes, got {}", v.len()),
            });
            None
        }
    }
}

impl KeyDoc {
    /// Parses a JWK-style key entry, reporting every error with its field.
    pub fn from_value(v: &Value) -> Result<Self, PolicyErrors> {
        let mut errs = Vec::new();
        let push = |errs: &mut Vec<PolicyError>, p: &str, m: String| {
            errs.push(PolicyError {
                path: p.to_owned(),
                message: m,
            })
        };
        let Value::Object(m) = v else {
            return Err(PolicyErrors(vec![PolicyError {
                path: String::new(),
                message: "expected a mapping".into(),
            }]));
        };
        let known = [
            "kid",
            "alg",
            "kty",
            "crv",
            "use",
            "n",
            "e",
            "x",
            "y",
            "secret_ref",
            "issuer",
            "retire_at",
        ];
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                push(&mut errs, k, "unknown field".into());
            }
        }
        if m.contains_key("d") || m.contains_key("k") {
            push(
                &mut errs,
                "",
                "private key material is never accepted; HS256 secrets go by secret_ref".into(),
            );
        }
        let kid = match m.get("kid").and_then(Value::as_str) {
            Some(k)
                if !k.is_empty() && k.len() <= 128 && k.chars().all(|c| c.is_ascii_graphic()) =>
            {
                Some(k.to_owned())
            }
            _ => {
                push(
                    &mut errs,
                    "kid",
                    "required: 1 to 128 printable ASCII characters".into(),
                );
                None
            }
        };
        let alg = match m.get("alg").and_then(Value::as_str).map(Alg::from_jose) {
            Some(Some(a)) => Some(a),
            _ => {
                push(
                    &mut errs,
                    "alg",
                    "required: one of RS256, ES256, EdDSA, HS256".into(),
                );
                None
            }
        };
        let material = match alg {
            Some(Alg::Rs256) => {
                let n = b64(&mut errs, m, "n");
                let e = b64(&mut errs, m, "e");
                if let Some(n) = &n
                    && n.len() < 256
                {
                    push(
                        &mut errs,
                        "n",
                        format!("RSA keys must be at least 2048 bits, got {}", n.len() * 8),
                    );
                }
                n.zip(e).map(|(n, e)| KeyMaterial::Rsa { n, e })
            }
            Some(Alg::Es256) => {
                if m.get("crv")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c != "P-256")
                {
                    push(&mut errs, "crv", "ES256 keys use crv P-256".into());
                }
                let x = b64(&mut errs, m, "x");
                let x = fixed32(&mut errs, "x", x);
                let y = b64(&mut errs, m, "y");
                let y = fixed32(&mut errs, "y", y);
                x.zip(y).map(|(x, y)| KeyMaterial::P256 { x, y })
            }
            Some(Alg::EdDsa) => {
                if m.get("crv")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c != "Ed25519")
                {
                    push(&mut errs, "crv", "EdDSA keys use crv Ed25519".into());
                }
                let x = b64(&mut errs, m, "x");
                fixed32(&mut errs, "x", x).map(|x| KeyMaterial::Ed25519 { x })
            }
            Some(Alg::Hs256) => match m.get("secret_ref").and_then(Value::as_str) {
                Some(r)
                    if r.starts_with("file:")
                        || r.starts_with("env:")
                        || r.starts_with("vault:") =>
                {
                    Some(KeyMaterial::SecretRef(r.to_owned()))
                }
                _ => {
                    push(
                        &mut errs,
                        "secret_ref",
                        "required for HS256: file:/path, env:NAME or vault:path".into(),
                    );
                    None
                }
            },
            None => None,
        };
        let issuer = match m.get("issuer") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                push(&mut errs, "issuer", "expected a string".into());
                None
            }
        };
        let retire_at = match m.get("retire_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match humantime::parse_rfc3339_weak(s) {
                Ok(t) => Some(t),
                Err(_) => {
                    push(
                        &mut errs,
                        "retire_at",
                        format!("{s:?} is not an RFC 3339 time"),
                    );
                    None
                }
            },
            Some(_) => {
                push(&mut errs, "retire_at", "expected an RFC 3339 time".into());
                None
            }
        };
        match (kid, alg, material) {
            (Some(kid), Some(alg), Some(material)) if errs.is_empty() => Ok(Self {
                kid,
                alg,
                material,
                issuer,
                retire_at,
            }),
            _ => Err(PolicyErrors(errs)),
        }
    }

    /// The public JWK form. Secrets appear only as their reference.
    pub fn to_value(&self) -> Value {
        let e = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
        let mut m = Map::new();
        m.insert("kid".into(), self.kid.clone().into());
        m.insert("alg".into(), self.alg.as_str().into());
        match &self.material {
            KeyMaterial::Rsa { n, e: ex } => {
                m.insert("kty".into(), "RSA".into());
                m.insert("n".into(), e(n));
                m.insert("e".into(), e(ex));
            }
            KeyMaterial::P256 { x, y } => {
                m.insert("kty".into(), "EC".into());
                m.insert("crv".into(), "P-256".into());
                m.insert("x".into(), e(x));
                m.insert("y".into(), e(y));
            }
            KeyMaterial::Ed25519 { x } => {
                m.insert("kty".into(), "OKP".into());
                m.insert("crv".into(), "Ed25519".into());
                m.insert("x".into(), e(x));
            }
            KeyMaterial::SecretRef(r) => {
                m.insert("kty".into(), "oct".into());
                m.insert("secret_ref".into(), r.clone().into());
            }
        }
        if let Some(i) = &self.issuer {
            m.insert("issuer".into(), i.clone().into());
        }
        if let Some(t) = self.retire_at {
            m.insert(
                "retire_at".into(),
                humantime::format_rfc3339_seconds(t).to_string().into(),
            );
        }
        Value::Object(m)
    }

    /// Whether the key still verifies at `now`.
    pub fn active_at(&self, now: SystemTime) -> bool {
        self.retire_at.is_none_or(|t| now < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_round_trips_each_kind() {
        let x = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let n = URL_SAFE_NO_PAD.encode([0xabu8; 256]);
        for v in [
            json!({"kid": "ed", "alg": "EdDSA", "crv": "Ed25519", "x": x}),
            json!({"kid": "ec", "alg": "ES256", "crv": "P-256", "x": x, "y": x, "issuer": "https://i"}),
            json!({"kid": "rsa", "alg": "RS256", "n": n, "e": "AQAB", "retire_at": "2030-01-01T00:00:00Z"}),
            json!({"kid": "hs", "alg": "HS256", "secret_ref": "file:/etc/sg/hs.key"}),
        ] {
            let k = KeyDoc::from_value(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(KeyDoc::from_value(&k.to_value()).unwrap(), k);
        }
    }

    #[test]
    fn refuses_bad_keys_with_every_error() {
        let errs = KeyDoc::from_value(&json!({"alg": "none", "x": 1, "k": "c2VjcmV0"}))
            .unwrap_err()
            .0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"kid")
                && paths.contains(&"alg")
                && paths.contains(&"k")
                && paths.contains(&""),
            "{errs:?}"
        );
        let short = json!({"kid": "r", "alg": "RS256", "n": URL_SAFE_NO_PAD.encode([1u8; 128]), "e": "AQAB"});
        assert!(
            KeyDoc::from_value(&short)
                .unwrap_err()
                .to_string()
                .contains("2048")
        );
        let hs = json!({"kid": "h", "alg": "HS256"});
        assert!(
            KeyDoc::from_value(&hs)
                .unwrap_err()
                .to_string()
                .contains("secret_ref")
        );
    }
}
