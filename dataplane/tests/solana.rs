//! Metaplex gating on Solana against a **stub** Solana JSON-RPC server.
//!
//! No real Solana validator can run here (surfpool needs a newer rustc; the
//! solana-test-validator binary is not on any registry this machine reaches), so this
//! test serves `getTokenAccountsByOwner` and `getMultipleAccounts` from a small HTTP server
//! (`SolanaRpcStub` below) in the response shapes Solana documents. The account data in
//! it is built with the official crates, not with StreamGate's decoders: `spl-token`'s
//! `Pack` for token accounts and `mpl-token-metadata`'s `Metadata` (Borsh) for metadata,
//! at the program-derived address `mpl-token-metadata` computes. What a real validator
//! would add: the programs themselves enforcing those layouts, `commitment` levels, and
//! real account ownership changes from signed transfers.
//!
//! Wallet signatures come from PyNaCl (`tests/clients/wallet_sign.py`).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use solana_program::program_pack::Pack;
use solana_program::pubkey::Pubkey;
use streamgate_edge::EdgeConfig;
use streamgate_edge::config::{AuthConfig, GateConfig};
use streamgate_origin::OriginConfig;
use streamgate_policy::address::ChainId;
use streamgate_web3::config::{ChainConfig, EndpointConfig, Secret};
use support::{TestEdge, run_client, write};

const SEED_A: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const SEED_B: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
const SEED_C: &str = "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7";

/// Accounts by address: (owning program, data).
type Accounts = HashMap<Pubkey, (Pubkey, Vec<u8>)>;

/// A stub of the two Solana RPC methods the edge uses, over accounts built with the
/// official crates. Counts calls; can be switched off (HTTP 503).
struct SolanaRpcStub {
    url: String,
    accounts: Arc<Mutex<Accounts>>,
    calls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn account_json(program: &Pubkey, data: &[u8]) -> Value {
    json!({
        "data": [b64(data), "base64"],
        "executable": false,
        "lamports": 2039280,
        "owner": program.to_string(),
        "rentEpoch": 18446744073709551615u64,
        "space": data.len(),
    })
}

fn answer(accounts: &Accounts, req: &Value) -> Value {
    let id = req["id"].clone();
    let ctx = json!({"apiVersion": "2.2.0", "slot": 341197053});
    let result = match req["method"].as_str() {
        Some("getTokenAccountsByOwner") => {
            let owner: Pubkey = req["params"][0].as_str().unwrap().parse().unwrap();
            let filter = &req["params"][1];
            let list: Vec<Value> = accounts
                .iter()
                .filter(|(_, (program, data))| {
                    *program == spl_token::id() && data.len() == spl_token::state::Account::LEN
                })
                .filter_map(|(addr, (program, data))| {
                    let acc = spl_token::state::Account::unpack(data).ok()?;
                    let keep = acc.owner == owner
                        && match (filter["mint"].as_str(), filter["programId"].as_str()) {
                            (Some(m), _) => acc.mint.to_string() == m,
                            (None, Some(p)) => p == spl_token::id().to_string(),
                            _ => false,
                        };
                    keep.then(|| json!({"pubkey": addr.to_string(), "account": account_json(program, data)}))
                })
                .collect();
            json!({"context": ctx, "value": list})
        }
        Some("getMultipleAccounts") => {
            let list: Vec<Value> = req["params"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let k: Pubkey = k.as_str().unwrap().parse().unwrap();
                    accounts
                        .get(&k)
                        .map_or(Value::Null, |(p, d)| account_json(p, d))
                })
                .collect();
            json!({"context": ctx, "value": list})
        }
        other => {
            return json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("Method not found: {other:?}")}});
        }
    };
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

impl SolanaRpcStub {
    async fn start() -> Self {
        use http_body_util::{BodyExt, Full};
        use hyper::body::{Bytes, Incoming};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let accounts: Arc<Mutex<Accounts>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (a, c, dn) = (accounts.clone(), calls.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let (a, c, dn) = (a.clone(), c.clone(), dn.clone());
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (a, c, dn) = (a.clone(), c.clone(), dn.clone());
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        c.fetch_add(1, Ordering::SeqCst);
                        let (status, out) = match body {
                            _ if dn.load(Ordering::SeqCst) => (503, "{}".to_owned()),
                            Ok(body) => {
                                let req: Value = serde_json::from_slice(&body).unwrap();
                                (200, answer(&a.lock().unwrap(), &req).to_string())
                            }
                            Err(e) => (400, e.to_string()),
                        };
                        let resp = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(out)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            url,
            accounts,
            calls,
            down,
        }
    }

    /// A token account (built with spl-token's `Pack`) holding `amount` of `mint` for `owner`.
    fn give(&self, owner: &Pubkey, mint: &Pubkey, amount: u64) -> Pubkey {
        let acc = spl_token::state::Account {
            mint: *mint,
            owner: *owner,
            amount,
            state: spl_token::state::AccountState::Initialized,
            ..Default::default()
        };
        let mut data = vec![0u8; spl_token::state::Account::LEN];
        spl_token::state::Account::pack(acc, &mut data).unwrap();
        let addr = Pubkey::new_unique();
        self.accounts
            .lock()
            .unwrap()
            .insert(addr, (spl_token::id(), data));
        addr
    }

    /// Moves a token account to another owner (as a transfer would).
    fn move_to(&self, token_account: &Pubkey, to: &Pubkey) {
        let mut all = self.accounts.lock().unwrap();
        let (_, data) = all.get_mut(token_account).unwrap();
        let mut acc = spl_token::state::Account::unpack(data).unwrap();
        acc.owner = *to;
        spl_token::state::Account::pack(acc, data).unwrap();
    }

    /// Metaplex metadata for `mint` (built with mpl-token-metadata's types, Borsh), at
    /// the PDA mpl-token-metadata derives; returns that address.
    fn describe(&self, mint: &Pubkey, collection: Option<(bool, Pubkey)>) -> Pubkey {
        use mpl_token_metadata::accounts::Metadata;
        use mpl_token_metadata::types::{Collection, Creator, Key, TokenStandard};
        let md = Metadata {
            key: Key::MetadataV1,
            update_authority: Pubkey::new_unique(),
            mint: *mint,
            // On chain the strings are padded with NULs to their maximum lengths.
            name: format!("{:\0<32}", "Backstage Pass #1"),
            symbol: format!("{:\0<10}", "PASS"),
            uri: format!("{:\0<200}", "https://example.com/pass/1.json"),
            seller_fee_basis_points: 500,
            creators: Some(vec![Creator {
                address: Pubkey::new_unique(),
                verified: true,
                share: 100,
            }]),
            primary_sale_happened: true,
            is_mutable: true,
            edition_nonce: Some(254),
            token_standard: Some(TokenStandard::NonFungible),
            collection: collection.map(|(verified, key)| Collection { verified, key }),
            uses: None,
            collection_details: None,
            programmable_config: None,
        };
        let data = borsh::BorshSerialize::try_to_vec(&md).unwrap();
        let (pda, _) = Metadata::find_pda(mint);
        assert_eq!(
            streamgate_web3::solana::metadata_address(&mint.to_bytes()),
            pda.to_bytes(),
            "the edge's PDA derivation must match mpl-token-metadata's"
        );
        self.accounts
            .lock()
            .unwrap()
            .insert(pda, (mpl_token_metadata::ID, data));
        pda
    }
}

fn wallet(seed: &str) -> (String, Pubkey) {
    let v = run_client(
        "nacl",
        "wallet_sign.py",
        &json!({"jobs": [{"op": "address", "kind": "solana", "seed": seed}]}),
    );
    let a = v["results"][0].as_str().unwrap().to_owned();
    let k = a.parse().unwrap();
    (a, k)
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn sign_in(c: &reqwest::Client, edge: &TestEdge, address: &str, seed: &str) -> String {
    let (s, ch) = post(
        c,
        edge.url("/auth/challenge"),
        json!({"address": address, "chain": "solana:devnet"}),
    )
    .await;
    assert_eq!(s, 200, "{ch}");
    let message = ch["message"].as_str().unwrap();
    let sig = run_client(
        "nacl",
        "wallet_sign.py",
        &json!({"jobs": [{"op": "sign", "kind": "solana", "seed": seed, "message": message}]}),
    )["results"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, session) = post(
        c,
        edge.url("/auth/verify"),
        json!({"message": message, "signature": sig}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    session["token"].as_str().unwrap().to_owned()
}

async fn status(c: &reqwest::Client, edge: &TestEdge, asset: &str, token: &str) -> u16 {
    c.get(edge.url(&format!("/v/{asset}/master.m3u8")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn metaplex_collections_and_mints_gate_solana_wallets() {
    let stub = SolanaRpcStub::start().await;
    let (a_addr, a) = wallet(SEED_A);
    let (b_addr, b) = wallet(SEED_B);
    let (c_addr, c_key) = wallet(SEED_C);
    let collection = Pubkey::new_unique();
    let (m1, m2, m3, fungible) = (
        Pubkey::new_unique(),
        Pubkey::new_unique(),
        Pubkey::new_unique(),
        Pubkey::new_unique(),
    );
    // A holds M1 of the verified collection; B holds M2, whose collection is claimed but
    // not verified, and the named mint M3; C holds a fungible token with no metadata.
    let a_m1 = stub.give(&a, &m1, 1);
    stub.describe(&m1, Some((true, collection)));
    stub.give(&b, &m2, 1);
    stub.describe(&m2, Some((false, collection)));
    stub.give(&b, &m3, 1);
    stub.describe(&m3, None);
    stub.give(&c_key, &fungible, 1_000_000);

    let dir = tempfile::tempdir().unwrap();
    for asset in ["members", "single"] {
        write(
            dir.path(),
            &format!("origin/{asset}/master.m3u8"),
            b"#EXTM3U\n",
        );
    }
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    std::fs::write(dir.path().join("session.der"), pkcs8.as_ref()).unwrap();
    let snapshot = json!({
        "revision": 1,
        "policies": [
            {"id": "members", "rule": {"nft": {"chain": "solana:devnet", "standard": "metaplex", "collection": collection.to_string()}}},
            {"id": "single", "rule": {"nft": {"chain": "solana:devnet", "standard": "metaplex", "mint": m3.to_string()}}},
        ],
        "assets": [{"id": "members", "policy": "members"}, {"id": "single", "policy": "single"}],
        "keys": [],
    });
    std::fs::write(dir.path().join("snap.json"), snapshot.to_string()).unwrap();
    let devnet = ChainId::parse("solana:devnet").unwrap();
    let mut chain = ChainConfig::new(devnet.clone());
    chain.endpoints = vec![EndpointConfig {
        name: "stub".into(),
        url: Secret(stub.url.clone()),
        priority: 0,
        weight: 1,
    }];
    chain.positive_ttl = Duration::from_secs(1);
    chain.negative_ttl = Duration::from_secs(1);
    chain.breaker_failures = 1000;
    let edge = TestEdge::start(EdgeConfig {
        origin: OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        gate: GateConfig {
            snapshot: Some(dir.path().join("snap.json")),
            ..GateConfig::default()
        },
        auth: Some(AuthConfig {
            session_key: dir.path().join("session.der"),
            session_kid: "wallet-session".into(),
            domain: "watch.test".into(),
            uri: "https://watch.test".into(),
            chains: vec![devnet],
            statement: "Sign in to watch.".into(),
            nonce_ttl: Duration::from_secs(300),
            session_ttl: Duration::from_secs(600),
        }),
        chains: vec![chain],
        ..EdgeConfig::default()
    });
    let c = reqwest::Client::new();
    let ta = sign_in(&c, &edge, &a_addr, SEED_A).await;
    let tb = sign_in(&c, &edge, &b_addr, SEED_B).await;
    let tc = sign_in(&c, &edge, &c_addr, SEED_C).await;

    assert_eq!(
        status(&c, &edge, "members", &ta).await,
        200,
        "verified member"
    );
    assert_eq!(
        status(&c, &edge, "members", &tb).await,
        403,
        "unverified collection"
    );
    assert_eq!(
        status(&c, &edge, "members", &tc).await,
        403,
        "fungible, no metadata"
    );
    assert_eq!(
        status(&c, &edge, "single", &tb).await,
        200,
        "holds the mint"
    );
    assert_eq!(status(&c, &edge, "single", &ta).await, 403);

    // Known viewers cost no RPC call while their answers are cached.
    let calls = stub.calls.load(Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(status(&c, &edge, "members", &ta).await, 200);
    }
    assert_eq!(stub.calls.load(Ordering::SeqCst), calls);

    // Solana has no log indexing here: a moved NFT stops counting when the cached answer's
    // TTL (1 s in this test) runs out. Measured.
    stub.move_to(&a_m1, &c_key);
    let t0 = Instant::now();
    while status(&c, &edge, "members", &ta).await == 200 {
        assert!(t0.elapsed() < Duration::from_secs(5), "never revoked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let revoked = t0.elapsed();
    eprintln!("Solana revocation by TTL: {revoked:?}");
    assert!(revoked <= Duration::from_millis(1300), "{revoked:?}");
    let t0 = Instant::now();
    while status(&c, &edge, "members", &tc).await != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the new holder never got in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The RPC down: the fail-closed policies refuse with 503 once the answers expire.
    stub.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c
        .get(edge.url("/v/single/master.m3u8"))
        .bearer_auth(&tb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("dependency_unavailable"));
}
