//! On-chain ownership for `nft` policy conditions: the chain registry (one [`Rpc`] per
//! configured chain), the ownership cache, and the Transfer-log indexer that revokes.
//!
//! A decision that needs an `nft` condition runs in two steps (in the edge's gate):
//! the policy is evaluated with an oracle that answers from the cache; if the verdict
//! depends on something the cache does not hold, [`Chains::resolve`] looks it up (every
//! question of the request on one chain in one `eth_call`, through Multicall3 when there
//! are several; identical questions from concurrent requests share one lookup), and the
//! policy is evaluated again with the answers.
//!
//! Answers are cached per (chain, contract, owner, question): "holds" for `positive_ttl`,
//! "does not hold" for `negative_ttl`. When an NFT moves, the indexer evicts the sender's
//! positive answers and the receiver's negative ones, so access follows the token within
//! `confirmations` blocks and one poll interval (EVM). Solana answers are bounded by the
//! TTLs alone.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::Shared;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};
use streamgate_policy::address::{Account, ChainId, Namespace};
use streamgate_policy::{
    Claims, Holding, NftCondition, NftOracle, NftStandard, NftTarget, Policy, session_wallet,
};

use crate::config::ChainConfig;
use crate::rpc::{self, Rpc};
use crate::{evm, solana};

/// What a cached answer is about: the contract (or collection, or mint), the owner, and a
/// fingerprint of the question (standard, token ids, minimum balance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    target: [u8; 32],
    owner: [u8; 32],
    question: u128,
}

fn target_bytes(t: &NftTarget) -> [u8; 32] {
    match *t {
        NftTarget::Contract(c) => {
            let mut w = [0u8; 32];
            w[12..].copy_from_slice(&c);
            w
        }
        NftTarget::Collection(b) | NftTarget::Mint(b) => b,
    }
}

fn question(cond: &NftCondition) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[match (cond.standard, cond.target) {
        (NftStandard::Erc721, _) => 1u8,
        (NftStandard::Erc1155, _) => 2,
        (NftStandard::Metaplex, NftTarget::Mint(_)) => 3,
        (NftStandard::Metaplex, _) => 4,
    }]);
    h.update(&cond.min_balance.to_be_bytes());
    for id in &cond.token_ids {
        h.update(id);
    }
    h.digest128()
}

type Lookup = Shared<Pin<Box<dyn Future<Output = Arc<HashMap<Key, Holding>>> + Send>>>;

/// One chain: its client, its caches and what live policies ask of it.
pub struct Chain {
    /// Its settings.
    pub cfg: ChainConfig,
    /// Its JSON-RPC client.
    pub rpc: Rpc,
    positive: moka::sync::Cache<Key, (), ahash::RandomState>,
    negative: moka::sync::Cache<Key, (), ahash::RandomState>,
    inflight: Mutex<HashMap<Key, Lookup>>,
    /// Bumped by every eviction: a lookup that started before one does not cache its answer.
    generation: AtomicU64,
    /// The questions live policies ask, by target, for eviction and the indexer.
    live: ArcSwap<HashMap<[u8; 32], Vec<u128>>>,
    revoked: IntCounter,
    pub(crate) index_block: prometheus::IntGauge,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("id", &self.cfg.id)
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// The contracts live policies name on this chain (EVM), sorted.
    pub fn live_contracts(&self) -> Vec<[u8; 20]> {
        let mut v: Vec<[u8; 20]> = self
            .live
            .load()
            .keys()
            .filter(|t| t[..12].iter().all(|&b| b == 0))
            .map(|t| t[12..].try_into().expect("20 bytes"))
            .collect();
        v.sort_unstable();
        v
    }

    /// A token of `contract` moved from `from` to `to`: the sender's cached "holds" and the
    /// receiver's cached "does not hold" answers go. Returns how many positives went.
    pub fn moved(&self, contract: [u8; 20], from: [u8; 20], to: [u8; 20]) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut target = [0u8; 32];
        target[12..].copy_from_slice(&contract);
        let word = |a: [u8; 20]| {
            let mut w = [0u8; 32];
            w[12..].copy_from_slice(&a);
            w
        };
        let live = self.live.load();
        let Some(questions) = live.get(&target) else {
            return 0;
        };
        let mut evicted = 0;
        for &q in questions {
            let sender = Key {
                target,
                owner: word(from),
                question: q,
            };
            if self.positive.remove(&sender).is_some() {
                evicted += 1;
            }
            self.negative.invalidate(&Key {
                target,
                owner: word(to),
                question: q,
            });
        }
        self.revoked.inc_by(evicted);
        evicted
    }
}

/// Every configured chain.
pub struct Chains {
    chains: Vec<Arc<Chain>>,
    hits: IntCounter,
    lookups: IntCounter,
}

impl std::fmt::Debug for Chains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.chains.iter().map(|c| c.cfg.id.to_string()))
            .finish()
    }
}

impl Chains {
    /// Clients and caches for `cfgs`, with metrics in `registry`.
    pub fn new(cfgs: &[ChainConfig], registry: &prometheus::Registry) -> Self {
        let rpc_metrics = rpc::RpcMetrics::register(registry);
        let revoked = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_nft_revocations_total",
                "Cached ownership answers evicted because the token moved",
            ),
            &["chain"],
        )
        .expect("valid metric");
        let index_block = IntGaugeVec::new(
            Opts::new(
                "streamgate_edge_nft_indexed_block",
                "The last block whose Transfer logs were applied",
            ),
            &["chain"],
        )
        .expect("valid metric");
        let hits = IntCounter::new(
            "streamgate_edge_nft_cache_hits_total",
            "Ownership questions answered from the cache",
        )
        .expect("valid metric");
        let lookups = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_nft_lookups_total",
                "Ownership questions looked up on chain, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(revoked.clone()));
        let _ = registry.register(Box::new(index_block.clone()));
        let _ = registry.register(Box::new(hits.clone()));
        let _ = registry.register(Box::new(lookups.clone()));
        let chains = cfgs
            .iter()
            .map(|cfg| {
                let id = cfg.id.to_string();
                let cache = |ttl| {
                    moka::sync::Cache::builder()
                        .max_capacity(cfg.cache_entries)
                        .time_to_live(ttl)
                        .build_with_hasher(ahash::RandomState::new())
                };
                Arc::new(Chain {
                    rpc: Rpc::new(cfg, &rpc_metrics),
                    positive: cache(cfg.positive_ttl),
                    negative: cache(cfg.negative_ttl),
                    inflight: Mutex::new(HashMap::new()),
                    generation: AtomicU64::new(0),
                    live: ArcSwap::from_pointee(HashMap::new()),
                    revoked: revoked.with_label_values(&[&id]),
                    index_block: index_block.with_label_values(&[&id]),
                    cfg: cfg.clone(),
                })
            })
            .collect();
        Self {
            chains,
            hits,
            lookups: lookups.with_label_values(&["started"]),
        }
    }

    /// The configured chains.
    pub fn all(&self) -> &[Arc<Chain>] {
        &self.chains
    }

    /// The chain `id`, if configured.
    pub fn get(&self, id: &ChainId) -> Option<&Arc<Chain>> {
        self.chains.iter().find(|c| &c.cfg.id == id)
    }

    fn locate(&self, cond: &NftCondition, owner: &Account) -> Option<(usize, Key)> {
        let i = self.chains.iter().position(|c| c.cfg.id == cond.chain)?;
        Some((
            i,
            Key {
                target: target_bytes(&cond.target),
                owner: owner.raw,
                question: question(cond),
            },
        ))
    }

    /// Records what the policies in force ask, so that movements evict the right answers
    /// and the indexer follows the right contracts. Called on every snapshot install.
    pub fn set_live<'p>(&self, policies: impl IntoIterator<Item = &'p Policy>) {
        let mut per: Vec<HashMap<[u8; 32], Vec<u128>>> = vec![HashMap::new(); self.chains.len()];
        for p in policies {
            for cond in p.nft_conditions() {
                match self.chains.iter().position(|c| c.cfg.id == cond.chain) {
                    Some(i) => {
                        let qs = per[i].entry(target_bytes(&cond.target)).or_default();
                        let q = question(cond);
                        if !qs.contains(&q) {
                            qs.push(q);
                        }
                    }
                    None => tracing::warn!(
                        policy = %p.id, chain = %cond.chain,
                        "policy names a chain this edge has no RPC endpoints for; its nft conditions are unavailable"
                    ),
                }
            }
        }
        for (c, live) in self.chains.iter().zip(per) {
            c.live.store(Arc::new(live));
        }
    }

    /// An oracle answering from the cache (and from `fresh` answers first).
    pub fn oracle<'a>(&'a self, fresh: Option<&'a Answers>) -> Oracle<'a> {
        Oracle {
            chains: self,
            fresh,
        }
    }

    /// Looks up the questions `policy` asks about the wallet of the session token with
    /// `claims` that the cache cannot answer.
    pub async fn resolve(&self, policy: &Policy, claims: &Claims) -> Answers {
        let mut by_chain: Vec<Vec<(&NftCondition, Key)>> = vec![Vec::new(); self.chains.len()];
        let mut owners: Vec<Option<Account>> = vec![None; self.chains.len()];
        let mut cached = Vec::new();
        for cond in policy.nft_conditions() {
            let Ok(owner) = session_wallet(claims, &cond.issuer) else {
                continue;
            };
            if cond.chain.namespace != owner.namespace {
                continue;
            }
            if let Some((i, key)) = self.locate(cond, &owner) {
                // One owner per chain and request (a policy with several issuers whose
                // wallets differ asks the first; the rest are answered unavailable).
                if owners[i].get_or_insert_with(|| owner.clone()) != &owner {
                    continue;
                }
                let c = &self.chains[i];
                // What the cache holds now is kept with the answers, so that an entry
                // expiring before the second evaluation does not make it unavailable.
                if c.positive.contains_key(&key) {
                    cached.push(((i, key), Holding::Yes));
                } else if c.negative.contains_key(&key) {
                    cached.push(((i, key), Holding::No));
                } else if !by_chain[i].iter().any(|(_, k)| *k == key) {
                    by_chain[i].push((cond, key));
                }
            }
        }
        let mut waits: Vec<(usize, Key, Lookup)> = Vec::new();
        for (i, asks) in by_chain.into_iter().enumerate() {
            if asks.is_empty() {
                continue;
            }
            let chain = &self.chains[i];
            let mut inflight = chain.inflight.lock().expect("not poisoned");
            let mine: Vec<(NftCondition, Key)> = asks
                .iter()
                .filter(|(_, k)| !inflight.contains_key(k))
                .map(|(c, k)| ((*c).clone(), *k))
                .collect();
            if !mine.is_empty() {
                self.lookups.inc();
                let owner = owners[i].clone().expect("set with the asks");
                let fut = lookup(Arc::clone(chain), owner, mine.clone())
                    .boxed()
                    .shared();
                for (_, k) in &mine {
                    inflight.insert(*k, fut.clone());
                }
            }
            for (_, k) in &asks {
                let fut = inflight.get(k).expect("registered above").clone();
                waits.push((i, *k, fut));
            }
        }
        let mut out = Answers(cached.into_iter().collect());
        for (i, key, fut) in waits {
            let answers = fut.await;
            let h = answers.get(&key).copied().unwrap_or(Holding::Unavailable);
            out.0.insert((i, key), h);
        }
        out
    }
}

/// Looks up `asks` on `chain` in one round trip, caches the answers unless a movement
/// happened meanwhile, and leaves the in-flight table.
async fn lookup(
    chain: Arc<Chain>,
    owner: Account,
    asks: Vec<(NftCondition, Key)>,
) -> Arc<HashMap<Key, Holding>> {
    let generation = chain.generation.load(Ordering::Acquire);
    let holdings = match owner.namespace {
        Namespace::Eip155 => {
            let questions: Vec<(&NftCondition, [u8; 20])> = asks
                .iter()
                .map(|(c, k)| (c, k.owner[12..].try_into().expect("20 bytes")))
                .collect();
            evm::holdings(&chain.rpc, chain.cfg.multicall3, &questions).await
        }
        Namespace::Solana => {
            let conds: Vec<&NftCondition> = asks.iter().map(|(c, _)| c).collect();
            solana::holdings(&chain.rpc, &conds, asks[0].1.owner).await
        }
    };
    let mut out = HashMap::with_capacity(asks.len());
    let unchanged = chain.generation.load(Ordering::Acquire) == generation;
    for ((_, key), h) in asks.iter().zip(holdings) {
        if unchanged {
            match h {
                Holding::Yes => chain.positive.insert(*key, ()),
                Holding::No => chain.negative.insert(*key, ()),
                Holding::Unavailable | Holding::Pending => {}
            }
        }
        out.insert(*key, h);
    }
    let mut inflight = chain.inflight.lock().expect("not poisoned");
    for (_, key) in &asks {
        inflight.remove(key);
    }
    Arc::new(out)
}

/// Answers looked up for one request.
#[derive(Debug, Default)]
pub struct Answers(HashMap<(usize, Key), Holding>);

/// The evaluator's view of ownership: fresh answers, then the cache; what neither holds is
/// [`Holding::Pending`] before a lookup and [`Holding::Unavailable`] after one.
#[derive(Debug)]
pub struct Oracle<'a> {
    chains: &'a Chains,
    fresh: Option<&'a Answers>,
}

impl NftOracle for Oracle<'_> {
    fn holds(&self, cond: &NftCondition, owner: &Account) -> Holding {
        let Some((i, key)) = self.chains.locate(cond, owner) else {
            return Holding::Unavailable;
        };
        if let Some(h) = self.fresh.and_then(|f| f.0.get(&(i, key))) {
            return *h;
        }
        let c = &self.chains.chains[i];
        if c.positive.contains_key(&key) {
            self.chains.hits.inc();
            return Holding::Yes;
        }
        if c.negative.contains_key(&key) {
            self.chains.hits.inc();
            return Holding::No;
        }
        if self.fresh.is_some() {
            Holding::Unavailable
        } else {
            Holding::Pending
        }
    }
}
