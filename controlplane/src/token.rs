//! Minting tokens with a key the operator holds (for `dev`, tests and `ctl token mint`).
//! Viewers normally get tokens from the operator's own account service; StreamGate only
//! verifies them.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Map, Value, json};

/// Why a signing key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// The file holds no PKCS#8 private key that is Ed25519, ECDSA P-256 or RSA.
    #[error("{0} holds no usable PKCS#8 private key (Ed25519, ECDSA P-256 or RSA)")]
    BadKey(String),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key with its key id.
pub struct SigningKey {
    kid: String,
    pair: Pair,
}

impl SigningKey {
    /// Reads a PEM (`PRIVATE KEY`) or DER PKCS#8 file.
    pub fn load(path: &Path, kid: &str) -> Result<Self, TokenError> {
        let bytes = std::fs::read(path).map_err(|source| TokenError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let der = match rustls_pemfile::private_key(&mut bytes.as_slice()) {
            Ok(Some(k)) => k.secret_der().to_vec(),
            _ => bytes,
        };
        Self::from_pkcs8(&der, kid).ok_or_else(|| TokenError::BadKey(path.display().to_string()))
    }

    /// Parses PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8], kid: &str) -> Option<Self> {
        let rng = SystemRandom::new();
        let pair = if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            Pair::Ed(k)
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        {
            Pair::Ec(k)
        } else if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            Pair::Rsa(k)
        } else {
            return None;
        };
        Some(Self {
            kid: kid.to_owned(),
            pair,
        })
    }

    /// Makes a new Ed25519 key, writes it to `path` as PEM (mode 0600), and returns it.
    pub fn generate_ed25519(path: &Path, kid: &str) -> Result<Self, TokenError> {
        let io = |source| TokenError::Io {
            path: path.display().to_string(),
            source,
        };
        let der =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| TokenError::Sign)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        write_private(path, pem.as_bytes()).map_err(io)?;
        Self::from_pkcs8(der.as_ref(), kid)
            .ok_or_else(|| TokenError::BadKey(path.display().to_string()))
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Ed(_) => "EdDSA",
            Pair::Ec(_) => "ES256",
            Pair::Rsa(_) => "RS256",
        }
    }

    /// The public key entry the edges verify with, optionally bound to `issuer`.
    pub fn public_jwk(&self, issuer: Option<&str>) -> Value {
        let b = |x: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(x));
        let mut v = match &self.pair {
            Pair::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": b(k.public_key().as_ref())}),
            Pair::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "x": b(&p[1..33]), "y": b(&p[33..65])})
            }
            Pair::Rsa(k) => {
                let c: signature::RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                json!({"kty": "RSA", "n": b(&c.n), "e": b(&c.e)})
            }
        };
        v["kid"] = self.kid.clone().into();
        v["alg"] = self.alg().into();
        if let Some(i) = issuer {
            v["issuer"] = i.into();
        }
        v
    }

    /// Signs `claims` into a compact JWS.
    pub fn mint(&self, claims: &Map<String, Value>) -> Result<String, TokenError> {
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
        );
        let rng = SystemRandom::new();
        let sig = match &self.pair {
            Pair::Ed(k) => k.sign(msg.as_bytes()).as_ref().to_vec(),
            Pair::Ec(k) => k
                .sign(&rng, msg.as_bytes())
                .map_err(|_| TokenError::Sign)?
                .as_ref()
                .to_vec(),
            Pair::Rsa(k) => {
                let mut s = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg.as_bytes(), &mut s)
                    .map_err(|_| TokenError::Sign)?;
                s
            }
        };
        Ok(format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_and_signs() {
        let dir = std::env::temp_dir().join(format!("sg-mint-{}", std::process::id()));
        let path = dir.join("k.pem");
        let k = SigningKey::generate_ed25519(&path, "dev-1").unwrap();
        let again = SigningKey::load(&path, "dev-1").unwrap();
        assert_eq!(k.public_jwk(None), again.public_jwk(None));
        let doc = streamgate_policy::KeyDoc::from_value(&k.public_jwk(Some("iss"))).unwrap();
        assert_eq!(doc.kid, "dev-1");
        let t = k
            .mint(json!({"sub": "x", "exp": 1}).as_object().unwrap())
            .unwrap();
        assert_eq!(t.split('.').count(), 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
