//! Token-sharing detection (`limits.sharing`): one principal (token subject or wallet)
//! seen from more client networks, or in more playback sessions, than the policy allows
//! within its window is *flagged*: counted, logged, and written to the audit log. With
//! `deny_for`, the principal is then refused (403 `token_shared`) for that long at every
//! edge: the edge that flagged it writes `/streamgate/v1/denials/<principal>` under a lease
//! of `deny_for`, and every edge follows that prefix through its state watch.
//!
//! A network is the client address cut to `edge.sessions.ipv4_prefix`/`ipv6_prefix`; a
//! session is the request's verified `sg_sid`, else its CMCD `sid`, else its network.
//! Each principal under a sharing policy keeps the networks and sessions of its window (at
//! most the threshold plus one of each), in a bounded cache: memory is bounded by
//! `edge.sessions.max_tracked` principals, whatever the traffic. Only requests under
//! policies with `sharing` pay for it.

// Public for the benchmarks (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use streamgate_policy::limits::Sharing as Rule;

use crate::config::SessionConfig;
use crate::session::Principal;

/// Events the edge writes to the audit log, at most this many queued.
const QUEUE: usize = 1024;

/// What one principal did within its window.
#[derive(Debug, Default)]
struct Window {
    networks: Vec<(u64, Instant)>,
    sessions: Vec<(u64, Instant)>,
    /// When it was last flagged (flagged again only a window later).
    flagged_at: Option<Instant>,
}

/// Remembers `key` at `now` in `seen` (forgetting what is older than `window`, keeping at
/// most `cap`); returns how many are remembered.
fn touch(
    seen: &mut Vec<(u64, Instant)>,
    key: u64,
    now: Instant,
    window: Duration,
    cap: usize,
) -> usize {
    seen.retain(|(_, t)| now.saturating_duration_since(*t) <= window);
    match seen.iter().position(|(k, _)| *k == key) {
        Some(i) => seen[i].1 = now,
        None if seen.len() < cap => seen.push((key, now)),
        None => {
            // Over the cap already: replace the oldest, the count stays over.
            if let Some(oldest) = seen.iter_mut().min_by_key(|(_, t)| *t) {
                *oldest = (key, now);
            }
        }
    }
    seen.len()
}

/// A principal flagged for sharing, for the audit log and the fleet-wide denial.
#[derive(Debug, Clone)]
pub struct Flagged {
    /// Whom (the hash every edge computes alike).
    pub principal: Principal,
    /// The token's subject as it reads, for the operator.
    pub subject: String,
    /// The policy whose thresholds were crossed.
    pub policy: String,
    /// Networks and sessions seen in the window when it was flagged.
    pub networks: usize,
    /// See `networks`.
    pub sessions: usize,
    /// The policy's window.
    pub window: Duration,
    /// How long it is refused (`None`: flagged only).
    pub deny_for: Option<Duration>,
}

/// One request's identity, as sharing detection sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// The principal the policy counts.
    pub principal: Principal,
    /// The client address.
    pub client: Option<IpAddr>,
    /// The session the request carries (verified `sg_sid` or CMCD `sid`), hashed.
    pub sid: Option<u64>,
}

/// The request's principal is refused for sharing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared;

/// Sharing detection and the denials in force.
pub struct SharingGuard {
    windows: moka::sync::Cache<Principal, Arc<Mutex<Window>>, ahash::RandomState>,
    denied: moka::sync::Cache<Principal, Instant, ahash::RandomState>,
    events: tokio::sync::mpsc::Sender<Flagged>,
    queue: Mutex<Option<tokio::sync::mpsc::Receiver<Flagged>>>,
    flagged: prometheus::IntCounterVec,
    dropped: prometheus::IntCounter,
    v4: u8,
    v6: u8,
}

impl std::fmt::Debug for SharingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharingGuard")
            .field("principals", &self.windows.entry_count())
            .finish_non_exhaustive()
    }
}

impl SharingGuard {
    /// Detection with the networks and the memory bound of `cfg`, metrics in `registry`.
    pub fn new(cfg: &SessionConfig, registry: &prometheus::Registry) -> Self {
        let flagged = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "streamgate_edge_sharing_flagged_total",
                "Principals flagged for token sharing (action: flag, or deny when the policy refuses them)",
            ),
            &["action"],
        )
        .expect("valid metric");
        let dropped = prometheus::IntCounter::new(
            "streamgate_edge_sharing_events_dropped_total",
            "Sharing events not written to the audit log (the queue was full)",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(flagged.clone()));
        let _ = registry.register(Box::new(dropped.clone()));
        let (events, rx) = tokio::sync::mpsc::channel(QUEUE);
        Self {
            windows: moka::sync::Cache::builder()
                .max_capacity(cfg.max_tracked)
                // The longest window a policy may set.
                .time_to_idle(Duration::from_secs(86_400))
                .build_with_hasher(ahash::RandomState::new()),
            denied: moka::sync::Cache::builder()
                .max_capacity(cfg.max_tracked)
                .time_to_live(Duration::from_secs(7 * 86_400))
                .build_with_hasher(ahash::RandomState::new()),
            events,
            queue: Mutex::new(Some(rx)),
            flagged,
            dropped,
            v4: cfg.ipv4_prefix,
            v6: cfg.ipv6_prefix,
        }
    }

    /// The flagged principals, once (for the task that writes them to the store).
    pub fn take_events(&self) -> Option<tokio::sync::mpsc::Receiver<Flagged>> {
        self.queue.lock().expect("sharing queue").take()
    }

    /// Whether `p` is refused now.
    pub fn is_denied(&self, p: Principal, now: Instant) -> bool {
        self.denied.get(&p).is_some_and(|until| until > now)
    }

    /// Refuses `p` until `until` (another edge flagged it, or this one did).
    pub fn deny(&self, p: Principal, until: Instant) {
        self.denied.insert(p, until);
    }

    /// Lifts the denial of `p` (its key is gone).
    pub fn lift(&self, p: Principal) {
        self.denied.invalidate(&p);
    }

    /// Counts one allowed request of `seen` under `rule` (of policy `policy`); `Err` when
    /// the principal is refused for sharing (already, or from this request on).
    pub fn check(
        &self,
        rule: &Rule,
        policy: &str,
        subject: impl FnOnce() -> String,
        seen: Seen,
        now: Instant,
    ) -> Result<(), Shared> {
        let p = seen.principal;
        if self.is_denied(p, now) {
            return Err(Shared);
        }
        let net = seen.client.map_or(0, |ip| {
            let (n, tag) = crate::limit::network(ip, self.v4, self.v6);
            xxhash_rust::xxh3::xxh3_64_with_seed(&n, u64::from(tag))
        });
        let session = seen.sid.unwrap_or(net ^ 0x5e55_1014);
        let window = self.windows.get_with(p, Arc::default);
        let mut w = window.lock().expect("sharing window");
        let cap = |max: Option<u32>| max.map_or(1, |m| m as usize + 1);
        let networks = touch(
            &mut w.networks,
            net,
            now,
            rule.window,
            cap(rule.max_networks),
        );
        let sessions = touch(
            &mut w.sessions,
            session,
            now,
            rule.window,
            cap(rule.max_sessions),
        );
        let over = |n: usize, max: Option<u32>| max.is_some_and(|m| n > m as usize);
        if !(over(networks, rule.max_networks) || over(sessions, rule.max_sessions)) {
            return Ok(());
        }
        if w.flagged_at
            .is_some_and(|t| now.saturating_duration_since(t) <= rule.window)
        {
            // Flagged already in this window (and not refused: flag only).
            return Ok(());
        }
        w.flagged_at = Some(now);
        drop(w);
        let action = if rule.deny_for.is_some() {
            "deny"
        } else {
            "flag"
        };
        self.flagged.with_label_values(&[action]).inc();
        let event = Flagged {
            principal: p,
            subject: subject(),
            policy: policy.to_owned(),
            networks,
            sessions,
            window: rule.window,
            deny_for: rule.deny_for,
        };
        tracing::warn!(subject = %event.subject, policy, networks, sessions, action,
            "token sharing: a principal was seen from more networks or sessions than its policy allows");
        if self.events.try_send(event).is_err() {
            self.dropped.inc();
        }
        match rule.deny_for {
            Some(d) => {
                self.deny(p, now + d);
                Err(Shared)
            }
            None => Ok(()),
        }
    }
}

/// The audit entry's target: who was flagged, on what evidence, under which policy.
pub fn audit_target(f: &Flagged) -> String {
    format!(
        "subject {:?}: {} networks, {} sessions within {} (policy {})",
        f.subject,
        f.networks,
        f.sessions,
        humantime::format_duration(f.window),
        f.policy
    )
}

/// The `denials/<principal>` document: `{"v": 1, "until": RFC 3339, "policy", "edge"}`.
pub fn denial_document(f: &Flagged, edge: &str, now: SystemTime) -> Option<serde_json::Value> {
    let until = now + f.deny_for?;
    Some(serde_json::json!({
        "v": 1,
        "until": humantime::format_rfc3339_seconds(until).to_string(),
        "policy": f.policy,
        "edge": edge,
    }))
}

/// Why a `denials/` document was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenialError {
    /// The key does not end in a principal (16 hex digits).
    #[error("the key does not name a principal")]
    Key,
    /// Not the document an edge writes.
    #[error("not a denial document: {0}")]
    Shape(&'static str),
}

/// The principal and end of a denial (`key` ends in `<principal:016x>`). Pure; the value
/// comes from the store.
pub fn parse_denial(key: &str, doc: &[u8]) -> Result<(Principal, SystemTime), DenialError> {
    let hex = key.rsplit('/').next().unwrap_or_default();
    if hex.len() != 16 {
        return Err(DenialError::Key);
    }
    let p = u64::from_str_radix(hex, 16).map_err(|_| DenialError::Key)?;
    let v: serde_json::Value =
        serde_json::from_slice(doc).map_err(|_| DenialError::Shape("not JSON"))?;
    let until = v["until"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .ok_or(DenialError::Shape("no RFC 3339 until"))?;
    Ok((p, until))
}

#[cfg(test)]
mod tests;
