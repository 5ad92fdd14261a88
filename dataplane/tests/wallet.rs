//! Wallet sign-in end to end: the real edge, challenges signed by independent libraries
//! (eth-account for EIP-191, PyNaCl for Solana, in `tests/clients/wallet_sign.py`), session
//! tokens used against a `wallet` policy, and every refusal the issue names.

mod support;

use serde_json::{Value, json};
use streamgate_edge::EdgeConfig;
use streamgate_edge::config::{AuthConfig, GateConfig};
use streamgate_origin::OriginConfig;
use support::{TestEdge, run_client, write};

const KEY1: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const KEY2: &str = "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f";
const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

fn sign(jobs: Value) -> Vec<String> {
    run_client("eth_account", "wallet_sign.py", &json!({ "jobs": jobs }))["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Sign-in on `chains` for `watch.test`, with the session key in `dir` (made the first
/// time, so edges configured from one `dir` share it).
fn auth_config(dir: &std::path::Path, chains: &[&str]) -> AuthConfig {
    if !dir.join("session.der").exists() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        std::fs::write(dir.join("session.der"), pkcs8.as_ref()).unwrap();
    }
    AuthConfig {
        session_key: dir.join("session.der"),
        session_kid: "wallet-session".into(),
        domain: "watch.test".into(),
        uri: "https://watch.test".into(),
        chains: chains
            .iter()
            .map(|c| streamgate_policy::address::ChainId::parse(c).unwrap())
            .collect(),
        statement: "Sign in to watch.".into(),
        nonce_ttl: std::time::Duration::from_secs(300),
        session_ttl: std::time::Duration::from_secs(600),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wallets_sign_in_and_policies_see_them() {
    let addrs = sign(json!([
        {"op": "address", "kind": "evm", "key": KEY1},
        {"op": "address", "kind": "evm", "key": KEY2},
        {"op": "address", "kind": "solana", "seed": SEED},
    ]));
    let (holder, stranger, sol) = (&addrs[0], &addrs[1], &addrs[2]);

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "origin/demo/master.m3u8", b"#EXTM3U\n");
    let snapshot = json!({
        "revision": 1,
        "policies": [{"id": "holders", "rule": {"wallet": {"allow": [holder, format!("solana:mainnet:{sol}")]}}}],
        "assets": [{"id": "demo", "policy": "holders"}],
        "keys": [],
    });
    std::fs::write(dir.path().join("snap.json"), snapshot.to_string()).unwrap();
    let edge = TestEdge::start(EdgeConfig {
        origin: OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        gate: GateConfig {
            snapshot: Some(dir.path().join("snap.json")),
            ..GateConfig::default()
        },
        auth: Some(auth_config(dir.path(), &["eip155:1", "solana:mainnet"])),
        ..EdgeConfig::default()
    });
    let c = reqwest::Client::new();
    let challenge = edge.url("/auth/challenge");
    let verify = edge.url("/auth/verify");
    let video = edge.url("/v/demo/master.m3u8");

    // An EVM wallet: challenge (lower-case address in, EIP-55 out), personal_sign, verify.
    let (s, ch) = post(
        &c,
        challenge.clone(),
        json!({"address": holder.to_lowercase(), "chain": "eip155:1"}),
    )
    .await;
    assert_eq!(s, 200, "{ch}");
    let message = ch["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("watch.test wants you to sign in with your Ethereum account:\n"));
    assert!(message.contains(&format!("\n{holder}\n")), "{message}");
    assert!(
        message.contains("\nChain ID: 1\n")
            && message.contains(&format!("Nonce: {}", ch["nonce"].as_str().unwrap()))
    );
    let sig =
        sign(json!([{"op": "sign", "kind": "evm", "key": KEY1, "message": message}])).remove(0);
    let (s, session) = post(
        &c,
        verify.clone(),
        json!({"message": message, "signature": sig}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(session["account"], format!("eip155:1:{holder}"));
    let token = session["token"].as_str().unwrap().to_owned();
    let r = c.get(&video).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private")
    );
    assert_eq!(c.get(&video).send().await.unwrap().status(), 401);

    // The same signed message again: the nonce is single-use.
    let (s, body) = post(
        &c,
        verify.clone(),
        json!({"message": message, "signature": sig}),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str().unwrap()),
        (401, "nonce_replayed")
    );

    // A wallet that signs in fine but is not on the policy's list: 403.
    let (_, ch2) = post(
        &c,
        challenge.clone(),
        json!({"address": stranger, "chain": "eip155:1"}),
    )
    .await;
    let m2 = ch2["message"].as_str().unwrap().to_owned();
    let sig2 = sign(json!([{"op": "sign", "kind": "evm", "key": KEY2, "message": m2}])).remove(0);
    let (s, sess2) = post(
        &c,
        verify.clone(),
        json!({"message": m2, "signature": sig2}),
    )
    .await;
    assert_eq!(s, 200);
    let r = c
        .get(&video)
        .bearer_auth(sess2["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["reason"],
        "wallet_not_allowed"
    );

    // Refusals, each with its reason. Every tampered message is signed by the real key.
    let fresh = |c: reqwest::Client| {
        let challenge = challenge.clone();
        let holder = holder.clone();
        async move {
            post(
                &c,
                challenge,
                json!({"address": holder, "chain": "eip155:1"}),
            )
            .await
            .1["message"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let signed = |m: &str, key: &str| json!({"message": m, "signature": sign(json!([{"op": "sign", "kind": "evm", "key": key, "message": m}])).remove(0)});
    let m = fresh(c.clone()).await;
    let wrong_domain = m.replacen("watch.test wants", "evil.test wants", 1);
    let expired = {
        let at = m.find("Expiration Time: ").unwrap();
        format!("{}Expiration Time: 2020-01-01T00:00:00Z", &m[..at])
    };
    let other_nonce = {
        let at = m.find("Nonce: ").unwrap() + 7;
        format!("{}{}{}", &m[..at], "0".repeat(64), &m[at + 64..])
    };
    for (body, status, reason) in [
        (signed(&wrong_domain, KEY1), 401, "wrong_domain"),
        (signed(&expired, KEY1), 401, "message_expired"),
        (signed(&other_nonce, KEY1), 401, "bad_nonce"),
        (signed(&m, KEY2), 401, "bad_signature"),
        (
            json!({"message": m, "signature": "0x1234"}),
            400,
            "malformed_signature",
        ),
        (
            json!({"message": "hello", "signature": "0x00"}),
            400,
            "malformed_message",
        ),
        (json!({"message": m}), 400, "malformed_request"),
    ] {
        let (s, b) = post(&c, verify.clone(), body).await;
        assert_eq!((s, b["reason"].as_str().unwrap()), (status, reason), "{b}");
    }
    // Every letter's case flipped: still mixed case, so the EIP-55 checksum must fail.
    let mixed_bad: String = "0x"
        .chars()
        .chain(holder[2..].chars().map(|ch| {
            if ch.is_ascii_uppercase() {
                ch.to_ascii_lowercase()
            } else {
                ch.to_ascii_uppercase()
            }
        }))
        .collect();
    for (body, reason) in [
        (
            json!({"address": "0xZZ", "chain": "eip155:1"}),
            "bad_address",
        ),
        (
            json!({"address": mixed_bad, "chain": "eip155:1"}),
            "bad_address",
        ),
        (
            json!({"address": holder, "chain": "eip155:137"}),
            "unsupported_chain",
        ),
        (
            json!({"address": holder, "chain": "bitcoin:1"}),
            "bad_chain",
        ),
        (json!({"address": holder}), "malformed_request"),
    ] {
        let (s, b) = post(&c, challenge.clone(), body.clone()).await;
        assert_eq!(
            (s, b["reason"].as_str().unwrap_or_else(|| panic!("{b}"))),
            (400, reason),
            "{body} -> {b}"
        );
    }
    let huge = c
        .post(&verify)
        .body(vec![b'x'; 20 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(c.get(&verify).send().await.unwrap().status(), 405);

    // EIP-712: the challenge's typed data, signed with eth_signTypedData_v4 semantics.
    let (_, cht) = post(
        &c,
        challenge.clone(),
        json!({"address": holder, "chain": "eip155:1"}),
    )
    .await;
    let typed = cht["typed_data"].clone();
    assert_eq!(typed["message"]["nonce"], cht["nonce"]);
    assert_eq!(typed["domain"]["chainId"], 1);
    let tsig = sign(json!([{"op": "sign_typed", "kind": "evm", "key": KEY1, "typed_data": typed}]))
        .remove(0);
    // The typed signature is not a personal_sign of the text.
    let (s, b) = post(
        &c,
        verify.clone(),
        json!({"message": cht["message"], "signature": tsig}),
    )
    .await;
    assert_eq!((s, b["reason"].as_str().unwrap()), (401, "bad_signature"));
    // Typed data with another nonce than the message's does not verify either.
    let mut forged = typed.clone();
    forged["message"]["nonce"] = json!("0".repeat(64));
    let fsig =
        sign(json!([{"op": "sign_typed", "kind": "evm", "key": KEY1, "typed_data": forged}]))
            .remove(0);
    let (s, b) = post(
        &c,
        verify.clone(),
        json!({"message": cht["message"], "signature": fsig, "signature_type": "eip712"}),
    )
    .await;
    assert_eq!((s, b["reason"].as_str().unwrap()), (401, "bad_signature"));
    let (s, tsess) = post(
        &c,
        verify.clone(),
        json!({"message": cht["message"], "signature": tsig, "signature_type": "eip712"}),
    )
    .await;
    assert_eq!(s, 200, "{tsess}");
    let r = c
        .get(&video)
        .bearer_auth(tsess["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Solana: ed25519 signMessage over the same message shape.
    let (s, chs) = post(
        &c,
        challenge.clone(),
        json!({"address": sol, "chain": "solana:mainnet"}),
    )
    .await;
    assert_eq!(s, 200, "{chs}");
    let ms = chs["message"].as_str().unwrap().to_owned();
    assert!(ms.starts_with("watch.test wants you to sign in with your Solana account:\n"));
    let ssig =
        sign(json!([{"op": "sign", "kind": "solana", "seed": SEED, "message": ms}])).remove(0);
    let (s, ssess) = post(
        &c,
        verify.clone(),
        json!({"message": ms, "signature": ssig}),
    )
    .await;
    assert_eq!(s, 200, "{ssess}");
    let r = c
        .get(&video)
        .bearer_auth(ssess["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A Solana signature over a different message does not verify.
    let (_, chs2) = post(
        &c,
        challenge.clone(),
        json!({"address": sol, "chain": "solana:mainnet"}),
    )
    .await;
    let (s, b) = post(
        &c,
        verify.clone(),
        json!({"message": chs2["message"], "signature": ssig}),
    )
    .await;
    assert_eq!((s, b["reason"].as_str().unwrap()), (401, "bad_signature"));
}

/// A signed sign-in message is usable once across the fleet: two edges share one etcd,
/// the message verified at one is refused at the other, and the used nonce is kept under
/// a lease (it vanishes on its own). With the store gone, sign-in fails closed (503)
/// rather than accept a nonce it cannot record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nonces_are_single_use_across_edges() {
    use streamgate_store::{PREFIX, Store};
    let mut etcd = streamgate_store::testkit::start_etcd();
    let store = streamgate_store::etcd::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    let holder = sign(json!([{"op": "address", "kind": "evm", "key": KEY1}])).remove(0);
    let policy = json!({"id": "holders", "rule": {"wallet": {"allow": [holder]}}});
    store
        .put(
            &format!("{PREFIX}policies/holders"),
            policy.to_string().into_bytes(),
            0,
        )
        .await
        .unwrap();
    store
        .put(
            &format!("{PREFIX}assets/demo"),
            br#"{"id": "demo", "policy": "holders"}"#.to_vec(),
            0,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "origin/demo/master.m3u8", b"#EXTM3U\n");
    let edge = |id: &str| {
        TestEdge::start(EdgeConfig {
            origin: OriginConfig::Fs {
                root: dir.path().join("origin"),
            },
            gate: GateConfig {
                etcd: Some(streamgate_store::etcd::EtcdConfig::new(vec![
                    etcd.endpoint.clone(),
                ])),
                edge_id: Some(id.into()),
                ..GateConfig::default()
            },
            auth: Some(auth_config(dir.path(), &["eip155:1"])),
            ..EdgeConfig::default()
        })
    };
    let (a, b) = (edge("edge-a"), edge("edge-b"));
    let c = reqwest::Client::new();
    for e in [&a, &b] {
        let t0 = std::time::Instant::now();
        while c
            .get(e.url("/v/demo/master.m3u8"))
            .send()
            .await
            .unwrap()
            .status()
            != 401
        {
            assert!(t0.elapsed().as_secs() < 20, "edge never synced");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let signed_challenge = |e: &TestEdge| {
        let url = e.url("/auth/challenge");
        let c = c.clone();
        let holder = holder.clone();
        async move {
            let (s, ch) = post(&c, url, json!({"address": holder, "chain": "eip155:1"})).await;
            assert_eq!(s, 200, "{ch}");
            let m = ch["message"].as_str().unwrap().to_owned();
            let sig =
                sign(json!([{"op": "sign", "kind": "evm", "key": KEY1, "message": m}])).remove(0);
            (
                json!({"message": m, "signature": sig}),
                ch["nonce"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (body, nonce) = signed_challenge(&a).await;
    let (s, session) = post(&c, a.url("/auth/verify"), body.clone()).await;
    assert_eq!(s, 200, "{session}");
    // Captured and replayed at another edge within the nonce's lifetime: refused.
    let (s, replay) = post(&c, b.url("/auth/verify"), body.clone()).await;
    assert_eq!(
        (s, replay["reason"].as_str()),
        (401, Some("nonce_replayed"))
    );
    // The record is leased: etcd holds it with a lease, and it lives no longer than that.
    let raw = store.client().await.unwrap();
    let got = raw
        .clone()
        .get(format!("{PREFIX}nonces/{nonce}"), None)
        .await
        .unwrap();
    let lease = got.kvs().first().expect("the nonce is recorded").lease();
    assert_ne!(lease, 0, "recorded under a lease");
    let ttl = raw.clone().lease_time_to_live(lease, None).await.unwrap();
    assert!(
        (300..=500).contains(&ttl.ttl()),
        "the lease outlives the nonce, briefly: {}",
        ttl.ttl()
    );
    // A fresh message the other way round works once.
    let (body2, _) = signed_challenge(&b).await;
    assert_eq!(post(&c, b.url("/auth/verify"), body2.clone()).await.0, 200);
    assert_eq!(post(&c, a.url("/auth/verify"), body2).await.0, 401);

    // The store is gone: a sign-in that cannot be recorded is refused, not accepted.
    let (body3, _) = signed_challenge(&a).await;
    etcd.stop();
    let (s, down) = post(&c, a.url("/auth/verify"), body3.clone()).await;
    assert_eq!(
        (s, down["reason"].as_str()),
        (503, Some("state_unavailable")),
        "{down}"
    );
    // Back up, the same message goes through (it was not burnt by the failed attempt).
    etcd.start();
    let t0 = std::time::Instant::now();
    loop {
        let (s, r) = post(&c, a.url("/auth/verify"), body3.clone()).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 503, "{r}");
        assert!(t0.elapsed().as_secs() < 30, "sign-in did not come back");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sign-in is limited per client network (it comes before any token), and a policy can
/// limit a signed-in wallet whatever network or session it uses.
#[tokio::test(flavor = "multi_thread")]
async fn sign_in_and_wallets_are_rate_limited() {
    let holder = sign(json!([{"op": "address", "kind": "evm", "key": KEY1}])).remove(0);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "origin/demo/master.m3u8", b"#EXTM3U\n");
    let snapshot = json!({
        "revision": 1,
        "policies": [{"id": "holders", "rule": {"wallet": {"allow": [holder]}},
                      "limits": {"rate": {"playlist": {"per_wallet": {"rate": 0.1, "burst": 2}}}}}],
        "assets": [{"id": "demo", "policy": "holders"}],
        "keys": [],
    });
    std::fs::write(dir.path().join("snap.json"), snapshot.to_string()).unwrap();
    let mut cfg = EdgeConfig {
        origin: OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        gate: GateConfig {
            snapshot: Some(dir.path().join("snap.json")),
            ..GateConfig::default()
        },
        auth: Some(auth_config(dir.path(), &["eip155:1"])),
        ..EdgeConfig::default()
    };
    cfg.rate_limit.sign_in = streamgate_policy::parse_rate_class(
        "sign_in",
        &json!({"per_ip": {"rate": 0.2, "burst": 4}}),
    )
    .unwrap();
    let edge = TestEdge::start(cfg);
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let (a, b) = (from(1), from(2));
    let challenge = edge.url("/auth/challenge");
    let body = json!({"address": holder, "chain": "eip155:1"});
    // Two sign-ins from network a: four requests, the burst.
    let mut tokens = vec![];
    for _ in 0..2 {
        let (s, ch) = post(&a, challenge.clone(), body.clone()).await;
        assert_eq!(s, 200, "{ch}");
        let message = ch["message"].as_str().unwrap().to_owned();
        let sig =
            sign(json!([{"op": "sign", "kind": "evm", "key": KEY1, "message": message}])).remove(0);
        let (s, session) = post(
            &a,
            edge.url("/auth/verify"),
            json!({"message": message, "signature": sig}),
        )
        .await;
        assert_eq!(s, 200, "{session}");
        tokens.push(session["token"].as_str().unwrap().to_owned());
    }
    let r = a.post(&challenge).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 429);
    // One token every 5 s; the signing took some of that already.
    let wait = retry_after(&r);
    assert!((1..=5).contains(&wait), "Retry-After {wait}");
    assert_eq!(post(&b, challenge.clone(), body.clone()).await.0, 200);
    // CORS preflights are not sign-ins.
    let r = a
        .request(reqwest::Method::OPTIONS, &challenge)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 429);

    // The wallet's playlist bucket holds 2, shared by both sessions and both networks.
    let video = edge.url("/v/demo/master.m3u8");
    let get = |c: &reqwest::Client, t: &str| c.get(&video).bearer_auth(t).send();
    assert_eq!(get(&a, &tokens[0]).await.unwrap().status(), 200);
    assert_eq!(get(&b, &tokens[1]).await.unwrap().status(), 200);
    let r = get(&b, &tokens[0]).await.unwrap();
    assert_eq!(r.status(), 429);
    let wait = retry_after(&r);
    assert!((8..=10).contains(&wait), "Retry-After {wait}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("wallet"),
        "{body}"
    );
    assert_eq!(
        edge.metric("streamgate_edge_rate_limited_total{class=\"playlist\",space=\"wallet\"}")
            .await,
        1.0
    );
    assert_eq!(
        edge.metric("streamgate_edge_rate_limited_total{class=\"sign_in\",space=\"ip\"}")
            .await,
        1.0
    );
}
