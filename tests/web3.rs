//! Web3 gating end to end, nothing mocked: a real `hardhat node`, ERC-721, ERC-1155,
//! ERC-1271 and Multicall3 contracts compiled from source and deployed by
//! `tests/chain/fixture.mjs`, every signature made by Python's eth-account
//! (`tests/clients/eth_sign.py`), and the `streamgate edge` binary configured with a chain
//! registry. The broken RPC providers of the failover test are small TCP servers here that
//! refuse, hang or answer garbage, in front of the real node.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::chain::{Chain, Deployment, start_chain};
use common::{Proc, free_port, run_client, spawn_listening};

/// transferFrom(address,address,uint256)
const TRANSFER_FROM: &str = "23b872dd";

fn word_addr(a: &str) -> String {
    format!("{:0>64}", a.trim_start_matches("0x").to_lowercase())
}

fn word(n: u64) -> String {
    format!("{n:064x}")
}

/// An edge process with a snapshot of policies and a chain registry.
struct Edge {
    http: u16,
    admin: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Edge {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// Sums the metric lines that start with `prefix` (a name and optional labels).
    async fn metric(&self, prefix: &str) -> f64 {
        common::metric_sum(self.admin, prefix).await
    }
}

/// The policies of these tests, over `d`'s contracts on chain 31337.
fn snapshot(d: &Deployment) -> Value {
    let nft = |standard: &str, extra: Value| {
        let mut n = json!({"chain": "eip155:31337", "standard": standard});
        n.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "nft": n })
    };
    json!({
        "revision": 1,
        "policies": [
            {"id": "holders", "rule": nft("erc721", json!({"contract": d.erc721}))},
            {"id": "token-one", "rule": nft("erc721", json!({"contract": d.erc721, "token_ids": [1]}))},
            {"id": "gold", "rule": nft("erc1155", json!({"contract": d.erc1155, "token_ids": ["7"], "min_balance": 3}))},
            {"id": "open-on-outage", "on_unavailable": "fail_open",
             "rule": nft("erc721", json!({"contract": d.erc721}))},
            {"id": "both", "rule": {"all_of": [
                nft("erc721", json!({"contract": d.erc721})),
                nft("erc1155", json!({"contract": d.erc1155, "token_ids": [7]})),
            ]}},
        ],
        "assets": [
            {"id": "club", "policy": "holders"},
            {"id": "one", "policy": "token-one"},
            {"id": "gold", "policy": "gold"},
            {"id": "open", "policy": "open-on-outage"},
            {"id": "both", "policy": "both"},
        ],
        "keys": [],
    })
}

/// Starts `streamgate edge` with sign-in on chain 31337 and `endpoints` (TOML inline
/// tables) as that chain's RPC providers.
fn start_edge(d: &Deployment, endpoints: &str, chain_extra: &str) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for asset in ["club", "one", "gold", "open", "both"] {
        std::fs::create_dir_all(root.join("origin").join(asset)).unwrap();
        std::fs::write(
            root.join("origin").join(asset).join("master.m3u8"),
            "#EXTM3U\n",
        )
        .unwrap();
    }
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    std::fs::write(root.join("session.der"), pkcs8.as_ref()).unwrap();
    std::fs::write(root.join("snap.json"), snapshot(d).to_string()).unwrap();
    let (http, admin) = (free_port(), free_port());
    let cfg = root.join("edge.toml");
    let p = |name: &str| root.join(name).display().to_string();
    std::fs::write(
        &cfg,
        format!(
            r#"[edge]
http_listen = "127.0.0.1:{http}"
admin_listen = "127.0.0.1:{admin}"
threads = 1

[edge.gate]
snapshot = "{snap}"

[edge.auth]
session_key = "{key}"
domain = "watch.test"
chains = ["eip155:31337"]

[edge.chains."eip155:31337"]
confirmations = 0
poll_interval = "200ms"
multicall3 = "{mc}"
{chain_extra}
endpoints = [{endpoints}]

[origin]
kind = "fs"
root = "{origin}"
"#,
            snap = p("snap.json"),
            key = p("session.der"),
            mc = d.multicall3,
            origin = p("origin"),
        ),
    )
    .unwrap();
    let proc = spawn_listening(&["edge", "--config"], &cfg, http, "edge");
    Edge {
        http,
        admin,
        _proc: proc,
        _dir: dir,
    }
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn personal_sign(key: &str, message: &str) -> String {
    let v = run_client(
        "eth_account",
        "eth_sign.py",
        &json!({"op": "personal_sign", "key": key, "message": message}),
    );
    v["signature"].as_str().unwrap().to_owned()
}

/// Signs in `address` (an EOA, or a contract wallet whose owner holds `key`) and returns
/// the session token.
async fn sign_in(c: &reqwest::Client, edge: &Edge, address: &str, key: &str) -> String {
    let (s, ch) = post(
        c,
        edge.url("/auth/challenge"),
        json!({"address": address, "chain": "eip155:31337"}),
    )
    .await;
    assert_eq!(s, 200, "{ch}");
    let message = ch["message"].as_str().unwrap();
    let signature = personal_sign(key, message);
    let (s, session) = post(
        c,
        edge.url("/auth/verify"),
        json!({"message": message, "signature": signature}),
    )
    .await;
    assert_eq!(s, 200, "{session}");
    assert_eq!(session["account"], format!("eip155:31337:{address}"));
    session["token"].as_str().unwrap().to_owned()
}

async fn get(c: &reqwest::Client, edge: &Edge, asset: &str, token: &str) -> (u16, String) {
    let r = c
        .get(edge.url(&format!("/v/{asset}/master.m3u8")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

async fn fixture(chain: &Chain, cmd: &str, args: &[&str]) {
    chain.fixture(cmd, args).await;
}

/// Mints ERC-721 token `id` to `to` (from the deployer).
async fn mint721(chain: &Chain, d: &Deployment, to: &str, id: u64) {
    let id = id.to_string();
    let args = [
        "--contract",
        d.erc721.as_str(),
        "--to",
        to,
        "--id",
        id.as_str(),
    ];
    fixture(chain, "mint721", &args).await;
}

/// Mints `amount` of ERC-1155 token `id` to `to` (from the deployer).
async fn mint1155(chain: &Chain, d: &Deployment, to: &str, id: u64, amount: u64) {
    let (id, amount) = (id.to_string(), amount.to_string());
    let args = [
        "--contract",
        d.erc1155.as_str(),
        "--to",
        to,
        "--id",
        &id,
        "--amount",
        &amount,
    ];
    fixture(chain, "mint1155", &args).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn holders_play_strangers_do_not_and_transfers_revoke() {
    let chain = start_chain().await;
    let d = chain.deploy().await;
    let (holder, stranger, fan) = (&d.accounts[2], &d.accounts[3], &d.accounts[4]);
    mint721(&chain, &d, &holder.address, 1).await;
    mint1155(&chain, &d, &fan.address, 7, 2).await;
    let edge = start_edge(
        &d,
        &format!("{{ name = \"hardhat\", url = \"{}\" }}", chain.url),
        "",
    );
    let c = reqwest::Client::new();

    // Mint, sign in, play.
    let holder_token = sign_in(&c, &edge, &holder.address, &holder.private_key).await;
    let stranger_token = sign_in(&c, &edge, &stranger.address, &stranger.private_key).await;
    let fan_token = sign_in(&c, &edge, &fan.address, &fan.private_key).await;
    assert_eq!(get(&c, &edge, "club", &holder_token).await.0, 200);
    assert_eq!(get(&c, &edge, "one", &holder_token).await.0, 200);
    let (s, body) = get(&c, &edge, "club", &stranger_token).await;
    assert_eq!((s, body.contains("nft_not_held")), (403, true), "{body}");
    assert_eq!(get(&c, &edge, "one", &stranger_token).await.0, 403);
    let r = c.get(edge.url("/v/club/master.m3u8")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token at all");

    // A viewer already known costs no RPC call: 200 more segment-rate requests.
    let lookups = edge.metric("streamgate_edge_nft_lookups_total").await;
    for _ in 0..200 {
        assert_eq!(get(&c, &edge, "club", &holder_token).await.0, 200);
    }
    assert_eq!(
        edge.metric("streamgate_edge_nft_lookups_total").await,
        lookups
    );
    assert!(edge.metric("streamgate_edge_nft_cache_hits_total").await >= 200.0);

    // ERC-1155 thresholds: 2 of id 7 is below 3; a mint of one more crosses it, and the
    // TransferSingle log evicts the cached "no".
    assert_eq!(get(&c, &edge, "gold", &fan_token).await.0, 403);
    mint1155(&chain, &d, &fan.address, 7, 1).await;
    let t0 = Instant::now();
    while get(&c, &edge, "gold", &fan_token).await.0 != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the fan never got in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("ERC-1155 mint → access in {:?}", t0.elapsed());
    // A batch transfer (one TransferBatch log) takes the fan below the threshold again.
    fixture(
        &chain,
        "batch1155",
        &[
            "--contract",
            &d.erc1155,
            "--from-key",
            &fan.private_key,
            "--to",
            &stranger.address,
            "--ids",
            "7",
            "--amounts",
            "1",
        ],
    )
    .await;
    let t0 = Instant::now();
    while get(&c, &edge, "gold", &fan_token).await.0 == 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the batch never revoked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("ERC-1155 batch transfer → revoked in {:?}", t0.elapsed());
    // all_of two contracts: the fan holds 1155 but no 721 → 403; the holder the reverse.
    assert_eq!(get(&c, &edge, "both", &fan_token).await.0, 403);
    assert_eq!(get(&c, &edge, "both", &holder_token).await.0, 403);

    // Transfer the NFT away: the holder is refused within confirmations (0) + one poll
    // interval (200 ms), measured from the block that moved it.
    let data = format!(
        "0x{TRANSFER_FROM}{}{}{}",
        word_addr(&holder.address),
        word_addr(&stranger.address),
        word(1)
    );
    chain
        .rpc(
            "eth_sendTransaction",
            json!([{"from": holder.address, "to": d.erc721, "data": data}]),
        )
        .await;
    // Hardhat mines each transaction before answering, so the clock starts at the block.
    let t0 = Instant::now();
    while get(&c, &edge, "club", &holder_token).await.0 == 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "access was never revoked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let revoked_in = t0.elapsed();
    eprintln!("time to revoke after the Transfer: {revoked_in:?}");
    assert!(
        revoked_in < Duration::from_millis(200 + 800),
        "revocation took {revoked_in:?}, over one poll interval (200 ms) plus slack"
    );
    assert_eq!(get(&c, &edge, "one", &holder_token).await.0, 403);
    // And the new owner, refused a moment ago (a cached "no"), gets in.
    let t0 = Instant::now();
    while get(&c, &edge, "club", &stranger_token).await.0 != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the new owner never got in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(edge.metric("streamgate_edge_nft_revocations_total").await >= 1.0);
    // The indexer's cursor is saved next to the snapshot, past the transfer's block, so a
    // restarted edge resumes from there.
    let head = u64::from_str_radix(
        chain
            .rpc("eth_blockNumber", json!([]))
            .await
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    let cursor: Value = serde_json::from_slice(
        &std::fs::read(edge._dir.path().join("snap.json.chains.json")).unwrap(),
    )
    .unwrap();
    let at = cursor["eip155:31337"].as_u64().unwrap();
    assert!(at + 1 >= head && at <= head, "cursor {at}, head {head}");

    // ERC-1271: the contract wallet owned by account #1 signs in with its owner's key.
    let owner = &d.accounts[1];
    let wallet = &d.wallet1271;
    let cw_token = sign_in(&c, &edge, wallet, &owner.private_key).await;
    assert_eq!(get(&c, &edge, "club", &cw_token).await.0, 403);
    mint721(&chain, &d, wallet, 2).await;
    let t0 = Instant::now();
    while get(&c, &edge, "club", &cw_token).await.0 != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the contract wallet never got in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Someone else's key does not sign for the contract wallet.
    let (_, ch) = post(
        &c,
        edge.url("/auth/challenge"),
        json!({"address": wallet, "chain": "eip155:31337"}),
    )
    .await;
    let message = ch["message"].as_str().unwrap();
    let forged = personal_sign(&stranger.private_key, message);
    let (s, body) = post(
        &c,
        edge.url("/auth/verify"),
        json!({"message": message, "signature": forged}),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (401, Some("bad_signature")),
        "{body}"
    );

    // Oversized signatures and malformed addresses get clear errors.
    let (_, ch) = post(
        &c,
        edge.url("/auth/challenge"),
        json!({"address": holder.address, "chain": "eip155:31337"}),
    )
    .await;
    let huge = format!("0x{}", "ab".repeat(4096));
    let (s, body) = post(
        &c,
        edge.url("/auth/verify"),
        json!({"message": ch["message"], "signature": huge}),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (400, Some("malformed_signature")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("at most 2048"),
        "{body}"
    );
    let (s, body) = post(
        &c,
        edge.url("/auth/challenge"),
        json!({"address": "0x12345", "chain": "eip155:31337"}),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (400, Some("bad_address")),
        "{body}"
    );
    let mixed = "0xF39fd6e51aad88F6F4ce6aB8827279cffFb92266";
    let (s, body) = post(
        &c,
        edge.url("/auth/challenge"),
        json!({"address": mixed, "chain": "eip155:31337"}),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (400, Some("bad_address")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("EIP-55"),
        "{body}"
    );
}

/// A TCP server that plays a broken RPC provider.
async fn broken_provider(kind: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    if kind == "dead" {
        drop(l);
        return format!("http://{addr}");
    }
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                match kind {
                    "slow" => tokio::time::sleep(Duration::from_secs(60)).await,
                    _ => {
                        let body = "<html>502 upstream gone</html>";
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_failover_and_fail_modes() {
    let chain = start_chain().await;
    let d = chain.deploy().await;
    let (holder, stranger) = (&d.accounts[2], &d.accounts[3]);
    mint721(&chain, &d, &holder.address, 1).await;
    let (dead, slow, garbage) = (
        broken_provider("dead").await,
        broken_provider("slow").await,
        broken_provider("garbage").await,
    );
    // The broken providers are preferred (priority 0); the node is the fallback. Answers
    // are cached for 1 ms only, so every request below goes to the chain.
    let tuning = "positive_ttl = \"1ms\"\nnegative_ttl = \"1ms\"\ntimeout = \"1s\"\nhedge_after = \"100ms\"\nbreaker_failures = 1000";
    for (name, url) in [("dead", &dead), ("slow", &slow), ("garbage", &garbage)] {
        let endpoints = format!(
            "{{ name = \"{name}\", url = \"{url}\", priority = 0 }}, {{ name = \"node\", url = \"{}\", priority = 1 }}",
            chain.url
        );
        let edge = start_edge(&d, &endpoints, tuning);
        let c = reqwest::Client::new();
        let holder_token = sign_in(&c, &edge, &holder.address, &holder.private_key).await;
        let stranger_token = sign_in(&c, &edge, &stranger.address, &stranger.private_key).await;
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(get(&c, &edge, "club", &holder_token).await.0, 200, "{name}");
            assert_eq!(
                get(&c, &edge, "club", &stranger_token).await.0,
                403,
                "{name}"
            );
        }
        eprintln!("{name} first: 10 decisions in {:?}", t0.elapsed());
        let errors = edge
            .metric(&format!(
                "streamgate_edge_rpc_calls_total{{chain=\"eip155:31337\",endpoint=\"{name}\",result=\"error\"}}"
            ))
            .await;
        // A slow endpoint loses the hedge (its attempt is dropped); the others fail.
        if name == "slow" {
            assert!(edge.metric("streamgate_edge_rpc_hedged_total").await >= 10.0);
        } else {
            assert!(errors >= 1.0, "{name}: no errors counted");
        }
        let ok = edge
            .metric("streamgate_edge_rpc_calls_total{chain=\"eip155:31337\",endpoint=\"node\",result=\"ok\"}")
            .await;
        assert!(ok >= 10.0, "{name}: the node answered {ok} calls");
    }

    // Every endpoint down: the fail-closed policy refuses with 503, the fail-open one plays.
    let endpoints = format!(
        "{{ name = \"dead\", url = \"{dead}\" }}, {{ name = \"garbage\", url = \"{garbage}\" }}"
    );
    let edge = start_edge(
        &d,
        &endpoints,
        "breaker_failures = 2\nbreaker_cooldown = \"1h\"",
    );
    let c = reqwest::Client::new();
    // Sign-in itself needs no chain for an EOA; a contract wallet's does: 503.
    let holder_token = sign_in(&c, &edge, &holder.address, &holder.private_key).await;
    let (_, ch) = post(
        &c,
        edge.url("/auth/challenge"),
        json!({"address": d.wallet1271, "chain": "eip155:31337"}),
    )
    .await;
    let message = ch["message"].as_str().unwrap();
    let signature = personal_sign(&d.accounts[1].private_key, message);
    let (s, body) = post(
        &c,
        edge.url("/auth/verify"),
        json!({"message": message, "signature": signature}),
    )
    .await;
    assert_eq!(
        (s, body["reason"].as_str()),
        (503, Some("chain_unavailable")),
        "{body}"
    );
    for _ in 0..3 {
        let (s, body) = get(&c, &edge, "club", &holder_token).await;
        assert_eq!(
            (s, body.contains("dependency_unavailable")),
            (503, true),
            "{body}"
        );
        assert_eq!(get(&c, &edge, "open", &holder_token).await.0, 200);
    }
    // The circuits opened, so later requests fail fast instead of waiting on timeouts
    // (2 s per attempt here; the bound leaves room for a loaded test machine).
    assert!(edge.metric("streamgate_edge_rpc_breaker_opens_total").await >= 2.0);
    let t0 = Instant::now();
    assert_eq!(get(&c, &edge, "club", &holder_token).await.0, 503);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}
