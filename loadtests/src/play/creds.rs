//! Credentials as real viewers hold them: one fixed token, a token minted per viewer from
//! the operator's key (Ed25519 or ECDSA P-256 PKCS#8, as `streamgate ctl` keys are), or a
//! wallet sign-in per viewer with a freshly generated EVM key (EIP-191 `personal_sign`
//! over the edge's `/auth/challenge` message, then `/auth/verify`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use serde_json::{Value, json};

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

/// A key that mints viewer tokens.
pub(crate) struct Minter {
    pair: Pair,
    kid: String,
    issuer: String,
    audience: String,
    scope: Vec<String>,
    ttl: Duration,
}

impl Minter {
    /// Reads a PEM or DER PKCS#8 private key.
    pub(crate) fn load(
        path: &Path,
        kid: &str,
        issuer: &str,
        audience: &str,
        scope: Vec<String>,
        ttl: Duration,
    ) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let der = match rustls_pemfile::private_key(&mut bytes.as_slice()) {
            Ok(Some(k)) => k.secret_der().to_vec(),
            _ => bytes,
        };
        let rng = SystemRandom::new();
        let pair = if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
            Pair::Ed(k)
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        {
            Pair::Ec(k)
        } else {
            return Err(format!(
                "{}: no Ed25519 or ECDSA P-256 PKCS#8 private key",
                path.display()
            ));
        };
        Ok(Self {
            pair,
            kid: kid.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            scope,
            ttl,
        })
    }

    /// A token for viewer `n`, issued now.
    pub(crate) fn mint(&self, n: u64) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let alg = match self.pair {
            Pair::Ed(_) => "EdDSA",
            Pair::Ec(_) => "ES256",
        };
        let header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        let mut claims = json!({
            "iss": self.issuer, "aud": self.audience, "sub": format!("load-viewer-{n}"),
            "iat": now, "exp": now + self.ttl.as_secs().max(1),
        });
        if !self.scope.is_empty() {
            claims["sg_scope"] = json!(self.scope);
        }
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = match &self.pair {
            Pair::Ed(k) => k.sign(msg.as_bytes()).as_ref().to_vec(),
            Pair::Ec(k) => k
                .sign(&SystemRandom::new(), msg.as_bytes())
                .map_err(|_| "signing failed".to_owned())?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

fn keccak256(data: &[u8]) -> [u8; 32] {
    use tiny_keccak::Hasher;
    let mut k = tiny_keccak::Keccak::v256();
    let mut out = [0u8; 32];
    k.update(data);
    k.finalize(&mut out);
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An EVM account with its key.
pub(crate) struct Wallet {
    key: k256::ecdsa::SigningKey,
    /// EIP-55 address.
    pub(crate) address: String,
}

impl Wallet {
    /// A new random key.
    pub(crate) fn generate() -> Result<Self, String> {
        let rng = SystemRandom::new();
        loop {
            let mut raw = [0u8; 32];
            rng.fill(&mut raw).map_err(|_| "no system randomness")?;
            if let Ok(key) = k256::ecdsa::SigningKey::from_slice(&raw) {
                let point = key.verifying_key().to_encoded_point(false);
                let hash = keccak256(&point.as_bytes()[1..]);
                return Ok(Self {
                    address: eip55(&hash[12..]),
                    key,
                });
            }
        }
    }

    /// EIP-191 `personal_sign(message)`: `0x` r ‖ s ‖ v (27/28).
    pub(crate) fn personal_sign(&self, message: &str) -> Result<String, String> {
        let prefix = format!("\x19Ethereum Signed Message:\n{}", message.len());
        let digest = keccak256(&[prefix.as_bytes(), message.as_bytes()].concat());
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(&digest)
            .map_err(|e| format!("sign: {e}"))?;
        let (sig, recid) = match sig.normalize_s() {
            Some(low) => (low, recid.is_y_odd() ^ true),
            None => (sig, recid.is_y_odd()),
        };
        let mut out = sig.to_bytes().to_vec();
        out.push(27 + u8::from(recid));
        Ok(format!("0x{}", hex(&out)))
    }
}

/// The EIP-55 mixed-case checksum form of a 20-byte address.
fn eip55(addr: &[u8]) -> String {
    let lower = hex(addr);
    let hash = keccak256(lower.as_bytes());
    let mut out = String::from("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0xf;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// Signs in with a new wallet at `base` (`scheme://host:port`) on `chain` and returns the
/// session token. Errors carry the edge's reason.
pub(crate) async fn wallet_sign_in(
    http: &reqwest::Client,
    base: &str,
    chain: &str,
) -> Result<String, String> {
    let w = Wallet::generate()?;
    let ch = post(
        http,
        &format!("{base}/auth/challenge"),
        json!({"address": w.address, "chain": chain}),
    )
    .await?;
    let message = ch["message"]
        .as_str()
        .ok_or("the challenge has no message")?;
    let signature = w.personal_sign(message)?;
    let v = post(
        http,
        &format!("{base}/auth/verify"),
        json!({"message": message, "signature": signature}),
    )
    .await?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "the verify answer has no token".to_owned())
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value, String> {
    let r = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("sign-in: {e}"))?;
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let reason = v["reason"].as_str().unwrap_or("no_reason");
        return Err(format!("sign_in_{status}: {reason}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_matches_the_spec_vectors() {
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        ] {
            let raw: Vec<u8> = (0..20)
                .map(|i| u8::from_str_radix(&a[2 + 2 * i..4 + 2 * i], 16).unwrap())
                .collect();
            assert_eq!(eip55(&raw), a);
        }
    }

    #[test]
    fn personal_sign_recovers_to_the_address() {
        let w = Wallet::generate().unwrap();
        let sig = w.personal_sign("hello").unwrap();
        assert_eq!(sig.len(), 132);
        let raw: Vec<u8> = (0..65)
            .map(|i| u8::from_str_radix(&sig[2 + 2 * i..4 + 2 * i], 16).unwrap())
            .collect();
        let prefix = "\x19Ethereum Signed Message:\n5hello";
        let digest = keccak256(prefix.as_bytes());
        let s = k256::ecdsa::Signature::from_slice(&raw[..64]).unwrap();
        assert!(s.normalize_s().is_none(), "low s (EIP-2)");
        let rec = k256::ecdsa::RecoveryId::from_byte(raw[64] - 27).unwrap();
        let key = k256::ecdsa::VerifyingKey::recover_from_prehash(&digest, &s, rec).unwrap();
        let point = key.to_encoded_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        assert_eq!(eip55(&hash[12..]), w.address);
    }

    #[test]
    fn minted_tokens_carry_the_claims() {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let path = dir.path().join("k.der");
        std::fs::write(&path, pkcs8.as_ref()).unwrap();
        let m = Minter::load(
            &path,
            "k1",
            "iss",
            "aud",
            vec!["demo".into()],
            Duration::from_secs(60),
        )
        .unwrap();
        let t = m.mint(7).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "load-viewer-7");
        assert_eq!(claims["sg_scope"], json!(["demo"]));
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        assert!(
            Minter::load(
                &dir.path().join("none"),
                "k",
                "i",
                "a",
                vec![],
                Duration::ZERO
            )
            .is_err()
        );
    }
}
