//! The gate's decisions over a snapshot, with `now` passed in: cached verdicts end at a
//! key's retirement, and wallet sessions pass only the conditions meant for them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use super::jwt::VerifyingKey;
use super::*;

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

struct Signer(Ed25519KeyPair);

impl Signer {
    fn new() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Self(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn jwk(&self, kid: &str) -> Value {
        json!({"kid": kid, "alg": "EdDSA", "crv": "Ed25519",
               "x": URL_SAFE_NO_PAD.encode(self.0.public_key().as_ref())})
    }

    fn token(&self, kid: &str, claims: Value) -> String {
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let msg = format!(
            "{}.{}",
            b64(json!({"alg": "EdDSA", "kid": kid})),
            b64(claims)
        );
        let sig = self.0.sign(msg.as_bytes());
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn snapshot(policy: Value, keys: Vec<Value>) -> Snapshot {
    Snapshot::from_value(
        json!({"revision": 1, "policies": [policy],
               "assets": [{"id": "demo", "policy": policy["id"]}], "keys": keys}),
        1000,
    )
    .unwrap()
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    h
}

async fn decide(gate: &Gate, headers: &HeaderMap, now: SystemTime) -> Decision {
    let f = RequestFacts {
        asset: "demo",
        key: "demo/master.m3u8",
        query: None,
        headers,
        client: None,
    };
    // Who was admitted is compared by identity; these tests compare the verdict only.
    match gate.check(&f, now).await {
        Decision::Allow {
            query_token,
            shared,
            prefix,
            ..
        } => Decision::Allow {
            query_token,
            shared,
            prefix,
            viewer: Viewer::default(),
        },
        d => d,
    }
}

fn denied(status: u16, reason: &'static str) -> Decision {
    match status {
        403 => Decision::Deny(Refusal::Denied(reason)),
        other => panic!("no refusal for {other}"),
    }
}

const ALLOWED: Decision = Decision::Allow {
    query_token: false,
    shared: false,
    prefix: None,
    viewer: Viewer {
        policy: None,
        verified: None,
    },
};

/// The key the edges verify wallet sessions with, as `auth` makes it.
fn session_key(s: &Signer) -> VerifyingKey {
    let mut jwk = s.jwk("sess");
    jwk["issuer"] = streamgate_policy::WALLET_ISSUER.into();
    VerifyingKey::new(&streamgate_policy::KeyDoc::from_value(&jwk).unwrap()).unwrap()
}

/// A token seen (and its verdict cached) before its key's `retire_at` is refused from
/// `retire_at` on, like a token seen for the first time after it.
#[tokio::test]
async fn a_cached_verdict_ends_when_its_key_retires() {
    let k = Signer::new();
    let mut jwk = k.jwk("old");
    jwk["retire_at"] = humantime::format_rfc3339_seconds(at(T0 + 60))
        .to_string()
        .into();
    let policy = json!({"id": "p", "rule": {"jwt": {"scope_claim": null}}});
    let gate = Gate::guarded(snapshot(policy, vec![jwk]), Duration::ZERO);
    let token = k.token("old", json!({"sub": "v", "exp": T0 + 3600}));
    let h = bearer(&token);
    assert_eq!(decide(&gate, &h, at(T0)).await, ALLOWED);
    assert_eq!(decide(&gate, &h, at(T0 + 59)).await, ALLOWED, "cached");
    assert_eq!(
        decide(&gate, &h, at(T0 + 60)).await,
        denied(403, "unknown_key"),
        "retired while its verdict was cached"
    );
    let fresh = k.token("old", json!({"sub": "w", "exp": T0 + 3600}));
    assert_eq!(
        decide(&gate, &bearer(&fresh), at(T0 + 61)).await,
        denied(403, "unknown_key")
    );
}

/// The edge's wallet-session tokens pass `wallet` conditions, and `jwt` conditions only
/// where the policy names the session issuer.
#[tokio::test]
async fn wallet_sessions_are_not_operator_tokens() {
    let session = Signer::new();
    let operator = Signer::new();
    let account = "eip155:1:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    let claims = json!({"iss": streamgate_policy::WALLET_ISSUER, "sub": account,
                        "aud": "streamgate", "exp": T0 + 600, "sg_wallet": account});
    let sess_token = session.token("sess", claims.clone());
    let cases = [
        (
            json!({"jwt": {"scope_claim": null}}),
            denied(403, "wrong_issuer"),
        ),
        (
            json!({"jwt": {"audience": "streamgate", "scope_claim": null}}),
            denied(403, "wrong_issuer"),
        ),
        (
            json!({"jwt": {"issuer": "streamgate-wallet", "scope_claim": null}}),
            ALLOWED,
        ),
        (json!({"wallet": {}}), ALLOWED),
    ];
    for (rule, want) in cases {
        let policy = json!({"id": "p", "rule": rule});
        let mut gate = Gate::guarded(snapshot(policy, vec![operator.jwk("op")]), Duration::ZERO);
        gate.set_session_key(("sess".into(), session_key(&session)));
        assert_eq!(
            decide(&gate, &bearer(&sess_token), at(T0)).await,
            want,
            "{rule}"
        );
    }
    // The same claims signed with an operator key satisfy a bare `jwt` condition.
    let policy = json!({"id": "p", "rule": {"jwt": {"scope_claim": null}}});
    let gate = Gate::guarded(snapshot(policy, vec![operator.jwk("op")]), Duration::ZERO);
    assert_eq!(
        decide(&gate, &bearer(&operator.token("op", claims)), at(T0)).await,
        ALLOWED
    );
}
