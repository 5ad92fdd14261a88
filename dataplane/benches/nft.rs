//! What NFT gating costs, measured on the edge's own gate against a real chain (a hardhat
//! node that `loadtests/bench_web3.py` starts and fills, then runs this with
//! `cargo bench -p streamgate-edge --features internals --bench nft -- <args>`).
//!
//! 1. Warm decision: `Gate::check` on an `nft` policy whose answer is cached, against the
//!    same check on a `wallet` policy (same session token, no chain) — the peer.
//! 2. Cold decision: the first check of fresh wallets (one `eth_call` each), against a raw
//!    `eth_call` round trip to the same node from the same process — the peer.
//! 3. RPC calls for one viewer watching 10 minutes of 2-second segments.
//! 4. Time to revoke: the holder's access after a Transfer, with the indexer polling.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use hdrhistogram::Histogram;
use http::HeaderMap;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use streamgate_edge::internals::jwt::VerifyingKey;
use streamgate_edge::internals::{Decision, Gate, RequestFacts, Snapshot};
use streamgate_policy::address::ChainId;
use streamgate_policy::{KeyDoc, WALLET_ISSUER};
use streamgate_web3::config::{ChainConfig, EndpointConfig, Secret};
use streamgate_web3::{Chains, index};

use streamgate_load::propagation::summary;

/// The benchmark's arguments.
#[derive(Debug, Clone, Parser)]
#[command(about = "NFT gating cost on the edge's own gate against a real chain")]
struct NftArgs {
    /// The chain's JSON-RPC URL (a hardhat node: its accounts are unlocked).
    #[arg(long)]
    pub rpc: String,
    /// The CAIP-2 chain id.
    #[arg(long, default_value = "eip155:31337")]
    pub chain: String,
    /// The ERC-721 contract.
    #[arg(long)]
    pub erc721: String,
    /// The ERC-1155 contract (for the two-contract, Multicall3 case).
    #[arg(long)]
    pub erc1155: String,
    /// The Multicall3 contract.
    #[arg(long)]
    pub multicall3: String,
    /// An account that holds ERC-721 token `--token`.
    #[arg(long)]
    pub holder: String,
    /// An account that holds ERC-721 token `--viewer-token`, not yet looked up.
    #[arg(long)]
    pub viewer: String,
    /// Another unlocked account; the token moves there and back.
    #[arg(long)]
    pub other: String,
    /// The token id the holder holds.
    #[arg(long, default_value_t = 1)]
    pub token: u64,
    /// Warm checks per round (5 rounds each).
    #[arg(long, default_value_t = 200_000)]
    pub warm: u32,
    /// Fresh wallets for the cold decisions.
    #[arg(long, default_value_t = 300)]
    pub cold: u32,
    /// Transfers timed for revocation.
    #[arg(long, default_value_t = 5)]
    pub transfers: u32,
    /// Blocks a Transfer must be under before it revokes.
    #[arg(long, default_value_t = 0)]
    pub confirmations: u64,
    /// The indexer's poll interval.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Write the JSON report here (its `distribution` is the cold decisions', for `load plot`).
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

struct Signer {
    key: Ed25519KeyPair,
}

impl Signer {
    fn new() -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("keygen"))?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("key"))?;
        Ok(Self { key })
    }

    fn verifying_key(&self) -> anyhow::Result<(String, VerifyingKey)> {
        let x = URL_SAFE_NO_PAD.encode(self.key.public_key().as_ref());
        let doc = KeyDoc::from_value(&json!({
            "kid": "bench", "alg": "EdDSA", "crv": "Ed25519", "x": x, "issuer": WALLET_ISSUER,
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok((
            "bench".into(),
            VerifyingKey::new(&doc).map_err(|e| anyhow::anyhow!("{e}"))?,
        ))
    }

    /// A wallet session token for `account` (CAIP-10), as `/auth/verify` issues them.
    fn session(&self, account: &str) -> String {
        let now = SystemTime::now();
        streamgate_edge::internals::session_token(
            &self.key,
            "bench",
            account,
            now,
            now + Duration::from_secs(3600),
        )
    }
}

fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a valid header"),
    );
    h
}

async fn check(gate: &Gate, asset: &str, h: &HeaderMap) -> Decision {
    // The object key is the asset and a path; only the asset matters to these policies
    // (the pipeline has the key at hand; the benchmark does not build one per request).
    gate.check(
        &RequestFacts {
            asset,
            key: asset,
            query: None,
            headers: h,
            client: None,
        },
        SystemTime::now(),
    )
    .await
}

fn allowed(d: Decision) -> bool {
    matches!(d, Decision::Allow { .. })
}

async fn rpc(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> anyhow::Result<Value> {
    let v: Value = http
        .post(url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await?
        .json()
        .await?;
    match v.get("result") {
        Some(r) if v.get("error").is_none() => Ok(r.clone()),
        _ => bail!("{method}: {v}"),
    }
}

fn word_addr(a: &str) -> String {
    format!("{:0>64}", a.trim_start_matches("0x").to_lowercase())
}

/// Runs the measurements and prints the report.
fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; everything else is ours.
    let args = NftArgs::parse_from(std::env::args().filter(|a| a != "--bench"));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: NftArgs) -> anyhow::Result<()> {
    let chain_id = ChainId::parse(&args.chain).map_err(anyhow::Error::msg)?;
    let mut cfg = ChainConfig::new(chain_id);
    cfg.endpoints = vec![EndpointConfig {
        name: "node".into(),
        url: Secret(args.rpc.clone()),
        priority: 0,
        weight: 1,
    }];
    cfg.confirmations = args.confirmations;
    cfg.poll_interval = args.poll_interval;
    cfg.multicall3 =
        streamgate_policy::address::parse_evm(&args.multicall3).map_err(anyhow::Error::msg)?;
    let registry = prometheus::Registry::new();
    let chains = Arc::new(Chains::new(&[cfg], &registry));
    let signer = Signer::new()?;
    let nft = |extra: Value| {
        let mut n = json!({"chain": args.chain, "standard": "erc721", "contract": args.erc721});
        n.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        json!({"nft": n})
    };
    let snapshot = Snapshot::from_value(
        json!({
            "revision": 1,
            "policies": [
                {"id": "holders", "rule": nft(json!({}))},
                {"id": "wallets", "rule": {"wallet": {}}},
                {"id": "two", "rule": {"any_of": [
                    {"nft": {"chain": args.chain, "standard": "erc1155", "contract": args.erc1155, "token_ids": [7]}},
                    nft(json!({"token_ids": [args.token]})),
                ]}},
            ],
            "assets": [
                {"id": "holders", "policy": "holders"},
                {"id": "wallets", "policy": "wallets"},
                {"id": "two", "policy": "two"},
            ],
            "keys": [],
        }),
        100_000,
    )
    .map_err(|e| anyhow::anyhow!("{:?}", e.0))?;
    let mut gate = Gate::guarded(snapshot, Duration::from_secs(30));
    gate.set_session_key(signer.verifying_key()?);
    gate.set_chains(Arc::clone(&chains));
    let gate = Arc::new(gate);
    let holder = headers(&signer.session(&format!("{}:{}", args.chain, args.holder)));

    // 1. Warm decisions.
    if !allowed(check(&gate, "holders", &holder).await) {
        bail!(
            "{} does not hold a token of {}: run loadtests/bench_web3.py",
            args.holder,
            args.erc721
        );
    }
    let mut rounds = Vec::new();
    for round in 0..5 {
        let mut per = Vec::new();
        for asset in ["wallets", "holders"] {
            let t0 = Instant::now();
            for _ in 0..args.warm {
                std::hint::black_box(check(&gate, asset, &holder).await);
            }
            per.push(t0.elapsed().as_nanos() as f64 / f64::from(args.warm));
        }
        eprintln!(
            "warm round {round}: wallet policy {:.0} ns, nft policy {:.0} ns per decision",
            per[0], per[1]
        );
        rounds.push((per[0], per[1]));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let warm_wallet = median(rounds.iter().map(|r| r.0).collect());
    let warm_nft = median(rounds.iter().map(|r| r.1).collect());

    // 2. Cold decisions: fresh wallets, one lookup each; and the raw round trip, alternated.
    let http = reqwest::Client::new();
    let mut cold = Histogram::<u64>::new(3)?;
    let mut cold_two = Histogram::<u64>::new(3)?;
    let mut raw = Histogram::<u64>::new(3)?;
    let calls_before = rpc_calls(&registry);
    for i in 0..args.cold {
        let wallet = format!("0x{:040x}", 0xbe00_0000_u64 + u64::from(i));
        let h = headers(&signer.session(&format!("{}:{wallet}", args.chain)));
        let t0 = Instant::now();
        let d = check(&gate, "holders", &h).await;
        cold.record(t0.elapsed().as_micros() as u64)?;
        if allowed(d) {
            bail!("a fresh wallet was allowed");
        }
        let t0 = Instant::now();
        check(&gate, "two", &h).await;
        cold_two.record(t0.elapsed().as_micros() as u64)?;
        let data = format!("0x70a08231{}", word_addr(&wallet));
        let t0 = Instant::now();
        rpc(
            &http,
            &args.rpc,
            "eth_call",
            json!([{"to": args.erc721, "data": data}, "latest"]),
        )
        .await?;
        raw.record(t0.elapsed().as_micros() as u64)?;
    }
    let cold_calls = rpc_calls(&registry) - calls_before;

    // 3. One viewer, 10 minutes: a master playlist, 300 two-second segments, and a media
    //    playlist refresh every 4 s.
    let viewer = &args.viewer;
    let h = headers(&signer.session(&format!("{}:{viewer}", args.chain)));
    let before = rpc_calls(&registry);
    let mut requests = 0;
    for i in 0..300 {
        check(&gate, "holders", &h).await;
        requests += 1;
        if i % 2 == 0 {
            check(&gate, "holders", &h).await;
            requests += 1;
        }
    }
    let viewer_calls = rpc_calls(&registry) - before;
    if !allowed(check(&gate, "holders", &h).await) {
        bail!("the viewer {viewer} holds no token of {}", args.erc721);
    }

    // 4. Time to revoke, with the indexer polling as the edge's does.
    let indexer = {
        let chains = Arc::clone(&chains);
        tokio::spawn(async move {
            let chain = Arc::clone(&chains.all()[0]);
            let mut cursor = None;
            let mut tick = tokio::time::interval(chain.cfg.poll_interval);
            loop {
                tick.tick().await;
                if let Ok(c) = index::poll_once(&chain, cursor).await {
                    cursor = c;
                }
            }
        })
    };
    tokio::time::sleep(args.poll_interval * 2).await;
    let other = headers(&signer.session(&format!("{}:{}", args.chain, args.other)));
    let mut revoke = Histogram::<u64>::new(3)?;
    let mut grant = Histogram::<u64>::new(3)?;
    for _ in 0..args.transfers {
        for (from, to, from_h, to_h) in [
            (&args.holder, &args.other, &holder, &other),
            (&args.other, &args.holder, &other, &holder),
        ] {
            // Both answers are cached before the move.
            if !allowed(check(&gate, "holders", from_h).await)
                || allowed(check(&gate, "holders", to_h).await)
            {
                bail!("unexpected state before a transfer");
            }
            let data = format!(
                "0x23b872dd{}{}{:064x}",
                word_addr(from),
                word_addr(to),
                args.token
            );
            rpc(
                &http,
                &args.rpc,
                "eth_sendTransaction",
                json!([{"from": from, "to": args.erc721, "data": data}]),
            )
            .await
            .context("transfer")?;
            let t0 = Instant::now();
            let (mut revoked, mut granted) = (None, None);
            while revoked.is_none() || granted.is_none() {
                if revoked.is_none() && !allowed(check(&gate, "holders", from_h).await) {
                    revoked = Some(t0.elapsed());
                }
                if granted.is_none() && allowed(check(&gate, "holders", to_h).await) {
                    granted = Some(t0.elapsed());
                }
                if t0.elapsed() > Duration::from_secs(60) {
                    bail!("no revocation within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            revoke.record(revoked.unwrap_or_default().as_micros() as u64)?;
            grant.record(granted.unwrap_or_default().as_micros() as u64)?;
        }
    }
    indexer.abort();

    let report = json!({
        "warm_ns": {"wallet_policy": warm_wallet, "nft_policy": warm_nft, "ratio": warm_nft / warm_wallet},
        "cold": summary(&cold),
        "cold_two_contracts_multicall": summary(&cold_two),
        "raw_eth_call": summary(&raw),
        "cold_rpc_calls_per_decision": cold_calls as f64 / f64::from(args.cold * 2),
        "viewer_10min": {"requests": requests, "rpc_calls": viewer_calls},
        "revoke": summary(&revoke),
        "grant": summary(&grant),
        "confirmations": args.confirmations,
        "poll_interval_ms": args.poll_interval.as_millis() as u64,
        "distribution": summary(&cold)["distribution"],
    });
    println!(
        "warm decision: nft policy {warm_nft:.0} ns, wallet policy {warm_wallet:.0} ns (ratio {:.2})",
        warm_nft / warm_wallet
    );
    println!(
        "cold decision p50 {:.2} ms p99 {:.2} ms; two contracts (Multicall3) p50 {:.2} ms; raw eth_call p50 {:.2} ms (ratio {:.2})",
        cold.value_at_quantile(0.5) as f64 / 1000.0,
        cold.value_at_quantile(0.99) as f64 / 1000.0,
        cold_two.value_at_quantile(0.5) as f64 / 1000.0,
        raw.value_at_quantile(0.5) as f64 / 1000.0,
        cold.value_at_quantile(0.5) as f64 / raw.value_at_quantile(0.5).max(1) as f64
    );
    println!(
        "RPC calls per cold decision: {:.2}; one viewer, 10 minutes ({requests} requests): {viewer_calls} RPC calls",
        cold_calls as f64 / f64::from(args.cold * 2)
    );
    println!(
        "time to revoke (confirmations {}, poll {:?}): p50 {:.0} ms max {:.0} ms; new owner admitted p50 {:.0} ms",
        args.confirmations,
        args.poll_interval,
        revoke.value_at_quantile(0.5) as f64 / 1000.0,
        revoke.max() as f64 / 1000.0,
        grant.value_at_quantile(0.5) as f64 / 1000.0,
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// JSON-RPC calls made so far, from the chain clients' metrics.
fn rpc_calls(registry: &prometheus::Registry) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "streamgate_edge_rpc_calls_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() as u64)
                .collect::<Vec<_>>()
        })
        .sum()
}
