use super::*;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

struct Ed {
    pair: Ed25519KeyPair,
}

impl Ed {
    fn new() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Self {
            pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        }
    }

    fn doc(&self, kid: &str) -> KeyDoc {
        KeyDoc::from_value(&json!({"kid": kid, "alg": "EdDSA", "crv": "Ed25519",
            "x": b64(self.pair.public_key().as_ref())}))
        .unwrap()
    }

    fn sign(&self, header: Value, claims: Value) -> String {
        let msg = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.pair.sign(msg.as_bytes());
        format!("{msg}.{}", b64(sig.as_ref()))
    }
}

fn keys(docs: &[KeyDoc]) -> KeySet {
    docs.iter()
        .map(|d| (d.kid.clone(), VerifyingKey::new(d).unwrap()))
        .collect()
}

fn claims(exp: u64) -> Value {
    json!({"sub": "viewer", "exp": exp, "sg_scope": ["demo"]})
}

#[test]
fn valid_ed25519_token() {
    let k = Ed::new();
    let set = keys(&[k.doc("a")]);
    let t = k.sign(
        json!({"alg": "EdDSA", "kid": "a", "typ": "JWT"}),
        claims(NOW + 60),
    );
    let v = verify(&t, &set, None, now(), Duration::ZERO).unwrap();
    assert_eq!(v.claims["sub"], "viewer");
    assert_eq!(v.valid_until, UNIX_EPOCH + Duration::from_secs(NOW + 60));
}

#[test]
fn refusals() {
    let k = Ed::new();
    let other = Ed::new();
    let set = keys(&[k.doc("a")]);
    let h = json!({"alg": "EdDSA", "kid": "a"});
    let leeway = Duration::from_secs(30);
    let check = |t: &str| verify(t, &set, None, now(), leeway).unwrap_err();
    assert_eq!(
        check(&k.sign(h.clone(), claims(NOW - 31))),
        Reason::TokenExpired
    );
    assert!(
        verify(
            &k.sign(h.clone(), claims(NOW - 29)),
            &set,
            None,
            now(),
            leeway
        )
        .is_ok(),
        "inside leeway"
    );
    let mut nbf = claims(NOW + 600);
    nbf["nbf"] = json!(NOW + 31);
    assert_eq!(check(&k.sign(h.clone(), nbf)), Reason::TokenNotYetValid);
    assert_eq!(
        check(&other.sign(h.clone(), claims(NOW + 60))),
        Reason::BadSignature
    );
    assert_eq!(
        check(&k.sign(json!({"alg": "EdDSA", "kid": "zz"}), claims(NOW + 60))),
        Reason::UnknownKey
    );
    assert_eq!(
        check(&k.sign(json!({"alg": "EdDSA"}), claims(NOW + 60))),
        Reason::UnknownKey
    );
    assert_eq!(
        check(&k.sign(
            json!({"alg": "EdDSA", "kid": "a", "crit": ["x"]}),
            claims(NOW + 60)
        )),
        Reason::MalformedToken
    );
    let mut no_exp = claims(0);
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(check(&k.sign(h.clone(), no_exp)), Reason::MalformedToken);
    // alg=none with an empty signature.
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "a"}).to_string().as_bytes()),
        b64(claims(NOW + 60).to_string().as_bytes())
    );
    assert_eq!(check(&none), Reason::AlgorithmNotAllowed);
    // The header claims HS256 for an EdDSA key: refused before any MAC is computed.
    let msg = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "kid": "a"}).to_string().as_bytes()),
        b64(claims(NOW + 60).to_string().as_bytes())
    );
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.pair.public_key().as_ref()),
        msg.as_bytes(),
    );
    assert_eq!(
        check(&format!("{msg}.{}", b64(mac.as_ref()))),
        Reason::AlgorithmNotAllowed
    );
    for junk in [
        "",
        "a.b",
        "a.b.c.d",
        "!!!.###.$$$",
        &"x".repeat(MAX_TOKEN_LEN + 1),
    ] {
        assert_eq!(check(junk), Reason::MalformedToken, "{junk:.20}");
    }
}

#[test]
fn retired_keys_and_issuer_binding() {
    let k = Ed::new();
    let mut doc = k.doc("a");
    doc.retire_at = Some(now() - Duration::from_secs(1));
    doc.issuer = Some("https://auth".into());
    let set = keys(&[doc.clone()]);
    let mut c = claims(NOW + 60);
    c["iss"] = json!("https://auth");
    let t = k.sign(json!({"alg": "EdDSA", "kid": "a"}), c.clone());
    assert_eq!(
        verify(&t, &set, None, now(), Duration::ZERO).unwrap_err(),
        Reason::UnknownKey
    );
    doc.retire_at = Some(now() + Duration::from_secs(60));
    let set = keys(&[doc]);
    assert!(
        verify(&t, &set, None, now(), Duration::ZERO).is_ok(),
        "inside the overlap"
    );
    c["iss"] = json!("https://evil");
    let t = k.sign(json!({"alg": "EdDSA", "kid": "a"}), c);
    assert_eq!(
        verify(&t, &set, None, now(), Duration::ZERO).unwrap_err(),
        Reason::WrongIssuer
    );
}

#[test]
fn hs256_by_reference() {
    let dir = std::env::temp_dir().join(format!("sg-hs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("hs.key");
    std::fs::write(&secret, b"0123456789abcdef0123456789abcdef\n").unwrap();
    let doc = KeyDoc::from_value(&json!({"kid": "h", "alg": "HS256",
        "secret_ref": format!("file:{}", secret.display())}))
    .unwrap();
    let set = keys(&[doc]);
    let msg = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "kid": "h"}).to_string().as_bytes()),
        b64(claims(NOW + 60).to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
    let t = format!(
        "{msg}.{}",
        b64(ring::hmac::sign(&key, msg.as_bytes()).as_ref())
    );
    assert!(verify(&t, &set, None, now(), Duration::ZERO).is_ok());
    std::fs::write(&secret, b"short").unwrap();
    let doc = KeyDoc::from_value(&json!({"kid": "h", "alg": "HS256",
        "secret_ref": format!("file:{}", secret.display())}))
    .unwrap();
    assert!(VerifyingKey::new(&doc).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}
