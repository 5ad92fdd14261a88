//! Rate limits: token buckets per client network, token subject and wallet.
//!
//! Every bucket is one `u64` in a fixed table, so memory is bounded by construction
//! (`edge.rate_limit.table_slots` × 8 bytes, whatever the number of distinct clients), and
//! a check is one hash and one compare-and-swap on one cache line: O(1) with no lock.
//!
//! A bucket is kept as GCRA's *theoretical arrival time* (TAT): the time at which it would
//! be full again. A request at `now` is allowed when `max(tat, now) + interval` is at most
//! `now + burst × interval`, and then stores that sum. A bucket whose TAT has passed is the
//! same as a fresh one, so forgetting it loses nothing.
//!
//! The table is 8-way set associative: the key's hash picks a set of 8 slots (one cache
//! line) and a 20-bit fingerprint of it finds the slot inside. A new key takes the slot
//! whose TAT is earliest, so idle clients are evicted first; only when all 8 are in debt
//! (a flood of distinct clients larger than the table, all over their limits) is an active
//! bucket dropped, which is counted. The hash is keyed per process (ahash), so a client
//! cannot aim its keys at one set.
//!
//! Slot layout: fingerprint in the top 20 bits (never 0), TAT in the low 44 bits, counted
//! in steps of 100 µs from the limiter's start (44 bits of them last 55 years).

// Public for the benchmarks (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use streamgate_policy::limits::{RateClass, RateLimits as RateLimitsDoc, RateRule};

use crate::config::RateLimitConfig;
use tokio::time::Instant;

/// Length of one step of the buckets' clock.
const STEP: Duration = Duration::from_micros(100);
const STEPS_PER_SEC: f64 = 10_000.0;
const TAT_BITS: u32 = 44;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;

/// What a limit is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Space {
    /// The client network.
    Ip,
    /// The token's `sub`.
    Subject,
    /// The signed-in wallet.
    Wallet,
}

impl Space {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Subject => "subject",
            Self::Wallet => "wallet",
        }
    }
}

/// The request classes limits are set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Class {
    /// Playlists and MPDs.
    Playlist,
    /// Segments and every other object.
    Segment,
    /// `/auth/challenge` and `/auth/verify`.
    SignIn,
}

impl Class {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Playlist => "playlist",
            Self::Segment => "segment",
            Self::SignIn => "sign_in",
        }
    }

    /// Every class, in metric order.
    pub const ALL: [Self; 3] = [Self::Playlist, Self::Segment, Self::SignIn];
}

/// A bucket's parameters in clock steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Steps between two requests at the sustained rate (at least 1).
    interval: u64,
    /// How far ahead of now the TAT may run: `burst × interval`.
    tolerance: u64,
}

impl From<RateRule> for Bucket {
    fn from(r: RateRule) -> Self {
        let interval = (STEPS_PER_SEC / r.per_second).round().max(1.0) as u64;
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(r.burst.max(1))),
        }
    }
}

/// The bucket table.
pub struct Limiter {
    sets: crate::table::Sets,
    hasher: ahash::RandomState,
    epoch: Instant,
    evicted_active: prometheus::IntCounter,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("slots", &self.slots())
            .finish_non_exhaustive()
    }
}

fn fingerprint(slot: u64) -> u64 {
    slot >> TAT_BITS
}

impl Limiter {
    /// A table of at least `slots` buckets (rounded up to a power of two, at least 8).
    pub fn new(slots: usize) -> Self {
        Self {
            sets: crate::table::Sets::new(slots),
            hasher: ahash::RandomState::new(),
            epoch: Instant::now(),
            evicted_active: prometheus::IntCounter::new(
                "streamgate_edge_rate_limit_evictions_total",
                "Rate-limit buckets dropped while in debt (the table is too small for the clients over their limits)",
            )
            .expect("valid metric"),
        }
    }

    /// Buckets in the table.
    pub fn slots(&self) -> usize {
        self.sets.slots()
    }

    /// Bytes the table takes.
    #[cfg(any(test, feature = "internals"))]
    pub fn table_bytes(&self) -> usize {
        self.sets.bytes()
    }

    /// Buckets dropped while still in debt since start (the table was too small for the
    /// number of clients over their limits).
    #[cfg(any(test, feature = "internals"))]
    pub fn evicted_active(&self) -> u64 {
        self.evicted_active.get()
    }

    fn steps(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch);
        (d.as_micros() / STEP.as_micros()) as u64 & TAT_MASK
    }

    /// Takes one request from the bucket of `key` (in `class` and `space`) at `now`.
    /// `Err` carries how long until the request would have been allowed.
    pub fn check(
        &self,
        class: Class,
        space: Space,
        key: impl Hash,
        bucket: Bucket,
        now: Instant,
    ) -> Result<(), Duration> {
        let h = self.hasher.hash_one((class, space, key));
        let set = self.sets.of(h);
        let fp = (h >> TAT_BITS).max(1);
        let now = self.steps(now);
        'retry: for _ in 0..4 {
            let mut victim = (0, u64::MAX, 0);
            for (i, slot) in set.iter().enumerate() {
                let cur = slot.load(Ordering::Acquire);
                if fingerprint(cur) == fp {
                    match take(slot, cur, fp, bucket, now) {
                        Some(verdict) => return verdict,
                        None => continue 'retry,
                    }
                }
                let tat = cur & TAT_MASK;
                if fingerprint(cur) == 0 || tat < victim.1 {
                    victim = (i, if fingerprint(cur) == 0 { 0 } else { tat }, cur);
                }
            }
            // A new key: a fresh (full) bucket always allows the first request.
            let (i, tat, cur) = victim;
            let next = (fp << TAT_BITS) | (now + bucket.interval).min(TAT_MASK);
            if set[i]
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue 'retry;
            }
            if tat > now {
                self.evicted_active.inc();
            }
            return Ok(());
        }
        // Four lost races on one set: let the request through rather than spin.
        Ok(())
    }
}

/// Who a request is, for the limits keyed by it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who {
    /// The client address.
    pub ip: Option<std::net::IpAddr>,
    /// The token's subject and wallet.
    pub principals: crate::session::Principals,
}

/// The edge's rate limits: its configuration, the bucket table and the counters.
pub struct RateLimits {
    table: Limiter,
    playlist: RateClass,
    segment: RateClass,
    sign_in: RateClass,
    v4: u8,
    v6: u8,
    /// Refusals by class and key space, in [`Class::ALL`] × [`SPACES`] order.
    refused: [[prometheus::IntCounter; 3]; 3],
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

const SPACES: [Space; 3] = [Space::Ip, Space::Subject, Space::Wallet];

impl RateLimits {
    /// The limits of `cfg`, with their metrics in `registry`.
    pub fn new(cfg: &RateLimitConfig, registry: &prometheus::Registry) -> Self {
        let table = Limiter::new(cfg.table_slots as usize);
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "streamgate_edge_rate_limited_total",
                "Requests refused with 429 by a rate limit, by request class and key space",
            ),
            &["class", "space"],
        )
        .expect("valid metric");
        let refused_by = std::array::from_fn(|c| {
            std::array::from_fn(|s| {
                refused.with_label_values(&[Class::ALL[c].as_str(), SPACES[s].as_str()])
            })
        });
        // A second edge in one process (tests) shares nothing; a registration conflict
        // only loses the export.
        let _ = registry.register(Box::new(refused));
        let _ = registry.register(Box::new(table.evicted_active.clone()));
        Self {
            table,
            playlist: cfg.playlist,
            segment: cfg.segment,
            sign_in: cfg.sign_in,
            v4: cfg.ipv4_prefix,
            v6: cfg.ipv6_prefix,
            refused: refused_by,
        }
    }

    /// Takes one request of `class` from every bucket in force for `who`: the policy's
    /// `limits.rate` where it sets them, else the edge's. `Err` is the refusal: the
    /// key space of the first bucket found empty and the wait until it has a token.
    pub fn check(
        &self,
        class: Class,
        policy: Option<&RateLimitsDoc>,
        who: Who,
        now: Instant,
    ) -> Result<(), (Space, Duration)> {
        let edge = match class {
            Class::Playlist => &self.playlist,
            Class::Segment => &self.segment,
            Class::SignIn => &self.sign_in,
        };
        let eff = match (class, policy) {
            (Class::Playlist, Some(p)) => p.playlist.or(edge),
            (Class::Segment, Some(p)) => p.segment.or(edge),
            _ => *edge,
        };
        let refuse = |space: Space, wait| {
            self.refused[class as usize][space as usize].inc();
            Err((space, wait))
        };
        if let (Some(r), Some(ip)) = (eff.per_ip.rule(), who.ip) {
            let net = network(ip, self.v4, self.v6);
            if let Err(w) = self.table.check(class, Space::Ip, net, r.into(), now) {
                return refuse(Space::Ip, w);
            }
        }
        if let (Some(r), Some(sub)) = (eff.per_subject.rule(), who.principals.subject)
            && let Err(w) = self.table.check(class, Space::Subject, sub, r.into(), now)
        {
            return refuse(Space::Subject, w);
        }
        if let (Some(r), Some(wallet)) = (eff.per_wallet.rule(), who.principals.wallet)
            && let Err(w) = self
                .table
                .check(class, Space::Wallet, wallet, r.into(), now)
        {
            return refuse(Space::Wallet, w);
        }
        Ok(())
    }
}

/// Takes one request from the bucket in `slot`, last seen as `cur`; `None` when the slot
/// went to another key meanwhile.
fn take(
    slot: &AtomicU64,
    mut cur: u64,
    fp: u64,
    b: Bucket,
    now: u64,
) -> Option<Result<(), Duration>> {
    loop {
        if fingerprint(cur) != fp {
            return None;
        }
        let tat = (cur & TAT_MASK).max(now) + b.interval;
        if tat > now + b.tolerance {
            let wait = tat - now - b.tolerance;
            return Some(Err(STEP * u32::try_from(wait).unwrap_or(u32::MAX)));
        }
        let next = (fp << TAT_BITS) | tat.min(TAT_MASK);
        match slot.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(Ok(())),
            Err(actual) => cur = actual,
        }
    }
}

/// `Retry-After` in whole seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The client network of `ip`: the address cut to `v4` or `v6` leading bits (IPv4-mapped
/// IPv6 addresses count as IPv4), as 16 bytes plus the prefix length.
pub fn network(ip: std::net::IpAddr, v4: u8, v6: u8) -> ([u8; 16], u8) {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (mut bytes, bits) = match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, v4.min(32))
        }
        IpAddr::V6(a) => (a.octets(), v6.min(128)),
    };
    let full = usize::from(bits / 8);
    if full < 16 {
        let rem = bits % 8;
        bytes[full] &= if rem == 0 { 0 } else { 0xff << (8 - rem) };
        for b in &mut bytes[full + 1..] {
            *b = 0;
        }
    }
    // The prefix length tells an IPv4 network from the IPv6 one with the same bytes.
    let tag = if ip.is_ipv4() { bits } else { 128 + bits / 2 };
    (bytes, tag)
}

#[cfg(test)]
mod tests;
