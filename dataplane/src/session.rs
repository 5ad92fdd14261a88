//! Playback sessions and concurrent-stream caps (`limits.max_streams`), across edges.
//!
//! A session is one player playing: when the edge rewrites an entry manifest (a master
//! playlist or MPD fetched without a session) for a viewer under a capped policy, it mints
//! a session id into every URI next to the token (`sg_sid`). The id is signed (HMAC-SHA256
//! with the fleet's session secret, over the viewer's principal), so it is only valid for
//! the viewer it was minted for and at any edge that shares the secret. A player that
//! sends CMCD `sid` (and got no `sg_sid`) is counted by it; a player with neither counts as
//! one session per client network. Every session is also bound to the client network it
//! plays from, so one id shared with others elsewhere counts once per network.
//!
//! A session is active while requests carrying it keep coming: it is forgotten after
//! `idle_timeout` without one. Each edge counts its active sessions per principal (token
//! subject or wallet), publishes the counts of capped principals to
//! `/streamgate/v1/streams/<edge-id>` (one key per edge, under a lease, at most once per
//! `publish_interval`, only when they changed), and follows the other edges' keys through
//! its state watch. A new session is admitted when this edge's count plus the others'
//! is below the cap; sessions already admitted are never refused for it.

// Public for the fuzz targets (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use streamgate_policy::limits::StreamsPer;

use crate::config::SessionConfig;

/// The query parameter the edge mints session ids into.
pub const PARAM: &str = "sg_sid";

/// A principal: whose sessions a cap counts, as a hash every edge computes alike.
pub type Principal = u64;

/// The principals a verified token names, hashed once when it is verified (the same at
/// every edge): its `sub`, and its signed-in wallet's address whatever chain it signed in
/// on. Rate limits and stream caps key on these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Principals {
    /// The token's `sub`.
    pub subject: Option<Principal>,
    /// The signed-in wallet.
    pub wallet: Option<Principal>,
}

impl Principals {
    /// The principals of a token with `claims` and the parsed `sg_wallet`.
    pub fn of(
        claims: &streamgate_policy::Claims,
        wallet: Option<&streamgate_policy::address::Account>,
    ) -> Self {
        use xxhash_rust::xxh3::xxh3_64_with_seed;
        Self {
            subject: claims
                .get("sub")
                .and_then(|s| s.as_str())
                .map(|s| xxh3_64_with_seed(s.as_bytes(), 1)),
            wallet: wallet.map(|w| {
                let mut b = [0u8; 33];
                b[0] = w.namespace as u8;
                b[1..].copy_from_slice(&w.raw);
                xxh3_64_with_seed(&b, 2)
            }),
        }
    }

    /// The one a stream cap counts under `per`.
    pub fn get(self, per: StreamsPer) -> Option<Principal> {
        match per {
            StreamsPer::Subject => self.subject,
            StreamsPer::Wallet => self.wallet,
        }
    }
}

/// The playback sessions this edge serves, and the other edges' counts.
pub struct Sessions {
    active: moka::sync::Cache<u128, Principal, ahash::RandomState>,
    /// Each principal's sessions here, oldest first (their count is what is published).
    local: Arc<Mutex<HashMap<Principal, Vec<u128>>>>,
    /// Sessions ended for a newer one (`on_stream_limit: end_oldest`), refused from then on.
    ended: moka::sync::Cache<u128, (), ahash::RandomState>,
    remote_by_edge: Mutex<HashMap<String, HashMap<Principal, u32>>>,
    remote: ArcSwap<HashMap<Principal, u32>>,
    changed: Arc<AtomicBool>,
    secret: ring::hmac::Key,
    v4: u8,
    v6: u8,
    started: prometheus::IntCounter,
    ended_count: prometheus::IntCounter,
    gauge: prometheus::IntGauge,
    cfg: SessionConfig,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("active", &self.active.entry_count())
            .finish_non_exhaustive()
    }
}

/// Why a request's session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A new session over its principal's cap.
    OverCap,
    /// The session was ended for a newer one of the same principal.
    Ended,
}

impl Sessions {
    /// Sessions per `cfg`, signed with `secret`, with their metrics in `registry`.
    pub fn new(cfg: &SessionConfig, secret: &[u8], registry: &prometheus::Registry) -> Self {
        let local: Arc<Mutex<HashMap<Principal, Vec<u128>>>> = Arc::default();
        let changed = Arc::new(AtomicBool::new(false));
        let gauge = prometheus::IntGauge::new(
            "streamgate_edge_sessions_active",
            "Playback sessions of capped policies active on this edge",
        )
        .expect("valid metric");
        let (l, c, g) = (Arc::clone(&local), Arc::clone(&changed), gauge.clone());
        let active = moka::sync::Cache::builder()
            .max_capacity(cfg.max_tracked)
            .time_to_idle(cfg.idle_timeout)
            .eviction_listener(move |k: Arc<u128>, principal: Principal, _cause| {
                let mut m = l.lock().expect("session counts");
                if let Some(keys) = m.get_mut(&principal) {
                    if let Some(i) = keys.iter().position(|x| *x == *k) {
                        keys.remove(i);
                    }
                    if keys.is_empty() {
                        m.remove(&principal);
                    }
                }
                g.dec();
                c.store(true, Ordering::Release);
            })
            .build_with_hasher(ahash::RandomState::new());
        let started = prometheus::IntCounter::new(
            "streamgate_edge_sessions_started_total",
            "Playback sessions of capped policies admitted on this edge",
        )
        .expect("valid metric");
        let ended_count = prometheus::IntCounter::new(
            "streamgate_edge_sessions_ended_total",
            "Playback sessions ended for a newer one of the same principal (on_stream_limit: end_oldest)",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(started.clone()));
        let _ = registry.register(Box::new(ended_count.clone()));
        let _ = registry.register(Box::new(gauge.clone()));
        Self {
            active,
            local,
            ended: moka::sync::Cache::builder()
                .max_capacity(cfg.max_tracked)
                .time_to_live(cfg.idle_timeout)
                .build_with_hasher(ahash::RandomState::new()),
            remote_by_edge: Mutex::default(),
            remote: ArcSwap::default(),
            changed,
            secret: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            v4: cfg.ipv4_prefix,
            v6: cfg.ipv6_prefix,
            started,
            ended_count,
            gauge,
            cfg: cfg.clone(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    fn tag(&self, principal: Principal, nonce: &[u8; 8]) -> [u8; 8] {
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&principal.to_le_bytes());
        msg[8..].copy_from_slice(nonce);
        let t = ring::hmac::sign(&self.secret, &msg);
        t.as_ref()[..8].try_into().expect("8 bytes")
    }

    /// A new session id for `principal`: 8 random bytes and 8 bytes of their HMAC.
    pub fn mint(&self, principal: Principal) -> String {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut b[..8])
            .expect("system randomness");
        let nonce: [u8; 8] = b[..8].try_into().expect("8 bytes");
        b[8..].copy_from_slice(&self.tag(principal, &nonce));
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Whether `sid` was minted for `principal` (with this fleet's secret).
    pub fn verify(&self, principal: Principal, sid: &str) -> bool {
        let mut b = [0u8; 16];
        if sid.len() != 22 || URL_SAFE_NO_PAD.decode_slice(sid, &mut b) != Ok(16) {
            return false;
        }
        let nonce: [u8; 8] = b[..8].try_into().expect("8 bytes");
        // Compared without an early exit, so the time says nothing about the tag.
        let tag = self.tag(principal, &nonce);
        tag.iter()
            .zip(&b[8..])
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    fn key(&self, principal: Principal, sid: Option<u64>, client: Option<IpAddr>) -> u128 {
        // principal, sid (flag + hash), network (16 bytes + tag): one fixed buffer, one
        // one-shot hash.
        let mut b = [0u8; 8 + 9 + 17];
        b[..8].copy_from_slice(&principal.to_le_bytes());
        if let Some(s) = sid {
            b[8] = 1;
            b[9..17].copy_from_slice(&s.to_le_bytes());
        }
        if let Some(ip) = client {
            let (net, tag) = crate::limit::network(ip, self.v4, self.v6);
            b[17..33].copy_from_slice(&net);
            b[33] = tag.wrapping_add(1);
        }
        xxhash_rust::xxh3::xxh3_128(&b)
    }

    /// Counts a request of the session (`principal`, `sid` as [`sid_hash`] or the CMCD
    /// reader hashed it, client network): an active one is kept alive; a new one is
    /// admitted if the principal's sessions, here and at the other edges, are fewer than
    /// `max`. Over the cap with `end_oldest`, the principal's oldest session *here* is
    /// ended (its next request is [`Refused::Ended`]) to make room.
    pub fn admit(
        &self,
        principal: Principal,
        sid: Option<u64>,
        client: Option<IpAddr>,
        max: u32,
        end_oldest: bool,
    ) -> Result<(), Refused> {
        let key = self.key(principal, sid, client);
        if self.active.get(&key).is_some() {
            return Ok(());
        }
        if self.ended.contains_key(&key) {
            return Err(Refused::Ended);
        }
        // Over the cap by the counts: end idle sessions first (moka expires them lazily),
        // then (with `end_oldest`) the oldest one here, counting again after each.
        let mut step = 0;
        loop {
            let oldest = {
                let mut local = self.local.lock().expect("session counts");
                let keys = local.entry(principal).or_default();
                let here = u32::try_from(keys.len()).unwrap_or(u32::MAX);
                let there = self.remote.load().get(&principal).copied().unwrap_or(0);
                if here.saturating_add(there) < max {
                    // Counted before it is inserted: the listener's removal (on expiry, or
                    // on a replace by a concurrent first request of the same session)
                    // always follows.
                    keys.push(key);
                    break;
                }
                let oldest = keys.first().copied();
                if keys.is_empty() {
                    local.remove(&principal);
                }
                oldest
            };
            match (step, oldest) {
                (0, _) => self.active.run_pending_tasks(),
                (1, Some(old)) if end_oldest => {
                    // Outside the lock: the eviction listener takes it.
                    self.ended.insert(old, ());
                    self.active.invalidate(&old);
                    self.active.run_pending_tasks();
                    self.ended_count.inc();
                }
                _ => return Err(Refused::OverCap),
            }
            step += 1;
        }
        self.active.insert(key, principal);
        self.gauge.inc();
        self.started.inc();
        self.changed.store(true, Ordering::Release);
        Ok(())
    }

    /// Expires idle sessions now (moka does it lazily otherwise).
    pub fn tick(&self) {
        self.active.run_pending_tasks();
    }

    /// This edge's counts as published: `{"v": 1, "sessions": {"<principal hex>": n}}`.
    pub fn document(&self) -> Value {
        let local = self.local.lock().expect("session counts");
        let sessions: serde_json::Map<String, Value> = local
            .iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(p, keys)| (format!("{p:016x}"), Value::from(keys.len())))
            .collect();
        json!({"v": 1, "sessions": sessions})
    }

    /// Another edge's published counts (`None`: its key is gone).
    pub fn set_remote(&self, edge: &str, doc: Option<&[u8]>) {
        let counts = doc.and_then(|d| parse_counts(d).ok());
        let mut by = self.remote_by_edge.lock().expect("remote sessions");
        match counts {
            Some(c) => {
                by.insert(edge.to_owned(), c);
            }
            None => {
                by.remove(edge);
            }
        }
        let mut sum: HashMap<Principal, u32> = HashMap::new();
        for c in by.values() {
            for (p, n) in c {
                let e = sum.entry(*p).or_insert(0);
                *e = e.saturating_add(*n);
            }
        }
        self.remote.store(Arc::new(sum));
    }

    /// Forgets every other edge's counts (before a full reload of the prefix).
    pub fn clear_remote(&self) {
        self.remote_by_edge.lock().expect("remote sessions").clear();
        self.remote.store(Arc::default());
    }
}

impl crate::source::Publish for Sessions {
    /// This edge's counts, if they changed since the last call: the value of its
    /// `streams/<edge-id>` key.
    fn changes(&self) -> Option<Value> {
        if !self.changed.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(Self::document(self))
    }

    fn document(&self) -> Value {
        Self::document(self)
    }

    fn tick(&self) {
        Self::tick(self);
    }
}

/// The hash a minted session id (`sg_sid`) is counted by.
pub fn sid_hash(sid: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(sid.as_bytes(), 4)
}

/// Why a published session document was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountsError {
    /// Not the document an edge writes.
    #[error("not a sessions document: {0}")]
    Shape(&'static str),
}

/// The counts of a `streams/<edge-id>` document. Pure; the value comes from the store.
pub fn parse_counts(doc: &[u8]) -> Result<HashMap<Principal, u32>, CountsError> {
    let v: Value = serde_json::from_slice(doc).map_err(|_| CountsError::Shape("not JSON"))?;
    let m = v
        .get("sessions")
        .and_then(Value::as_object)
        .ok_or(CountsError::Shape("no sessions object"))?;
    let mut out = HashMap::with_capacity(m.len());
    for (k, n) in m {
        let p = u64::from_str_radix(k, 16).map_err(|_| CountsError::Shape("bad principal"))?;
        let n = n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(CountsError::Shape("bad count"))?;
        out.insert(p, n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
