//! One connection per etcd member, with health, pinning and retries.
//!
//! etcd's own client (clientv3) keeps talking to one healthy member and moves to another
//! when that one fails; a balanced channel over every endpoint, by contrast, keeps sending
//! a share of the calls to a dead member. Here every member has its own client (its own
//! HTTP/2 connection and, with auth, its own token). Calls go to the pinned member; one
//! that fails to connect, breaks, or does not answer within the request timeout (a frozen
//! process) is marked down for a while, and the call moves on to the next member. The pin
//! moves to whichever member answered.
//!
//! What may be retried depends on what the failure says about the request ([`Fault`]): a
//! request that never reached the member is always retried; one whose answer was lost may
//! have taken effect, so reads are retried and writes are handed back to the caller to
//! resolve (see `txn` in the parent module); a refusal of our credentials is final.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use etcd_client::{Client, ConnectOptions};
use tokio::time::Instant;

use super::config::EtcdConfig;
use crate::StoreError;

/// What a failed attempt says about the request and the member.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The request did not reach the member (refused, unreachable, connect timed out), or
    /// the member refused it before acting (no leader, too many requests): retry anywhere.
    NotSent(String),
    /// The request may have been acted on and its answer is lost: the connection broke,
    /// the attempt timed out (a frozen member), or the leader changed while it waited.
    Lost(String),
    /// The member or its cluster refused our credentials, certificate or permissions.
    Denied(String),
    /// A definitive answer other than success (for example, an unknown lease).
    Final(etcd_client::Error),
}

impl Fault {
    /// Whether the member itself looks dead (as opposed to its cluster being busy).
    fn member_down(&self) -> bool {
        match self {
            Self::NotSent(m) | Self::Lost(m) => !m.starts_with("etcdserver: "),
            Self::Denied(_) | Self::Final(_) => false,
        }
    }
}

/// The messages of an error and its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Whether a transport failure happened before anything was sent.
fn before_sending(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    [
        "tcp connect error",
        "error trying to connect",
        "connection refused",
        "dns error",
        "failed to lookup",
        "connect timed out",
        "no route to host",
        "network is unreachable",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Whether a failure is TLS refusing a certificate (ours by them, or theirs by us).
fn tls_refusal(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    // Only TLS's own words: a handshake cut short by a restarting member is not a refusal.
    m.contains("certificate") || m.contains("fatal alert") || m.contains("unknownissuer")
}

/// Classifies an etcd client error.
pub(crate) fn classify(e: etcd_client::Error) -> Fault {
    use tonic::Code;
    let status = match e {
        etcd_client::Error::GRpcStatus(s) => s,
        etcd_client::Error::TransportError(t) => {
            let m = chain(&t);
            return if tls_refusal(&m) {
                Fault::Denied(format!("TLS: {m}"))
            } else if before_sending(&m) {
                Fault::NotSent(m)
            } else {
                Fault::Lost(m)
            };
        }
        etcd_client::Error::IoError(io) => return Fault::Lost(io.to_string()),
        etcd_client::Error::WatchError(m) | etcd_client::Error::LeaseKeepAliveError(m) => {
            return Fault::Lost(m);
        }
        other => return Fault::Final(other),
    };
    let msg = status.message().to_owned();
    let full = match std::error::Error::source(&status) {
        Some(src) => format!("{msg}: {}", chain(src)),
        None => msg.clone(),
    };
    if tls_refusal(&full) {
        return Fault::Denied(format!("TLS: {full}"));
    }
    match status.code() {
        Code::Unauthenticated if msg.contains("invalid auth token") => Fault::NotSent(msg),
        Code::Unauthenticated | Code::PermissionDenied => Fault::Denied(msg),
        Code::InvalidArgument | Code::FailedPrecondition
            if msg.contains("authentication")
                || msg.contains("user name")
                || msg.contains("auth: ")
                || msg.contains("not capable") =>
        {
            Fault::Denied(msg)
        }
        Code::Unavailable | Code::ResourceExhausted => {
            // etcd's own refusals before proposing, then its "maybe" answers.
            if msg.contains("no leader")
                || msg.contains("too many requests")
                || msg.contains("server stopped")
                || msg.contains("not capable")
                || msg.contains("unhealthy")
            {
                Fault::NotSent(msg)
            } else if msg.starts_with("etcdserver: ") {
                Fault::Lost(msg)
            } else if before_sending(&full) {
                Fault::NotSent(full)
            } else {
                Fault::Lost(full)
            }
        }
        Code::Unknown | Code::Cancelled | Code::Internal | Code::DeadlineExceeded
            if !msg.starts_with("etcdserver: ") || msg.contains("leader") =>
        {
            if before_sending(&full) {
                Fault::NotSent(full)
            } else {
                Fault::Lost(full)
            }
        }
        _ => Fault::Final(etcd_client::Error::GRpcStatus(status)),
    }
}

/// One member: its endpoint, its client once connected, and its health.
struct Member {
    endpoint: String,
    client: ArcSwapOption<Client>,
    /// One connection attempt at a time (each may authenticate).
    connecting: tokio::sync::Mutex<()>,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    /// Skipped (unless every member is) until then.
    down_until: Option<Instant>,
    /// Failures in a row, for the length of the next pause.
    failures: u32,
}

/// The members of one cluster.
pub(crate) struct Pool {
    members: Vec<Member>,
    options: ConnectOptions,
    pub(crate) cfg: EtcdConfig,
    pinned: AtomicUsize,
}

/// How a call may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, renewals and revocations: any failure but a refusal is retried.
    Idempotent,
    /// Writes: only failures before sending are retried; a lost answer is returned.
    UntilSent,
}

/// Why a call gave up.
#[derive(Debug)]
pub(crate) enum Gave {
    /// A write whose answer was lost; `String` says why.
    Ambiguous(String),
    /// A store error to report as is.
    Error(StoreError),
    /// A definitive etcd answer, for the caller to interpret.
    Final(etcd_client::Error),
}

impl Pool {
    /// Members for `cfg` (nothing is connected yet).
    pub(crate) fn new(cfg: EtcdConfig) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.dial_timeout)
            // Pings only while a stream is open, and no more often than etcd's default
            // `--grpc-keepalive-min-time` (5 s) allows: faster pings get the connection
            // closed with "too_many_pings". Watches probe liveness themselves (progress
            // requests), and every unary attempt has its own deadline.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false)
            .with_auto_token_refresh(true);
        if let Some(c) = &cfg.credentials {
            options = options.with_user(c.username.clone(), c.password.clone());
        }
        if let Some(t) = &cfg.tls {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&t.ca));
            if let Some((cert, key)) = &t.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            if let Some(name) = &t.server_name {
                tls = tls.domain_name(name.clone());
            }
            options = options.with_tls(tls);
        }
        if cfg.endpoints.is_empty() {
            return Err(StoreError::Unavailable(
                "no etcd endpoints configured".into(),
            ));
        }
        let members = cfg
            .endpoints
            .iter()
            .map(|e| Member {
                endpoint: e.clone(),
                client: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
                health: Mutex::new(Health::default()),
            })
            .collect();
        // Start at a random member, so a fleet's connections spread over the cluster
        // (the probe at connect then pins whichever member answers first).
        let n = cfg.endpoints.len();
        let start = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::process::id(),
        ) as usize
            % n;
        Ok(Self {
            members,
            options,
            cfg,
            pinned: AtomicUsize::new(start),
        })
    }

    /// The endpoints, in configuration order.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.endpoint.as_str())
    }

    /// The member's client, connecting (and authenticating) first if needed.
    async fn client(&self, i: usize) -> Result<Client, Fault> {
        let m = &self.members[i];
        if let Some(c) = m.client.load_full() {
            return Ok((*c).clone());
        }
        let _one = m.connecting.lock().await;
        if let Some(c) = m.client.load_full() {
            return Ok((*c).clone());
        }
        let connect = Client::connect([m.endpoint.as_str()], Some(self.options.clone()));
        let client = match tokio::time::timeout(self.cfg.request_timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(match classify(e) {
                    // Authentication answered something definitive: that is a refusal too.
                    Fault::Final(e) => Fault::Denied(e.to_string()),
                    // An answer lost while authenticating changed nothing.
                    Fault::Lost(m) => Fault::NotSent(m),
                    f => f,
                });
            }
            Err(_) => return Err(Fault::NotSent("connect timed out".into())),
        };
        m.client.store(Some(std::sync::Arc::new(client.clone())));
        Ok(client)
    }

    /// Forgets a member's client, so the next call connects (and authenticates) again.
    fn reset(&self, i: usize) {
        self.members[i].client.store(None);
    }

    fn mark_down(&self, i: usize, now: Instant) {
        // A fresh connection next time: a channel whose first connection failed may have
        // dropped its only endpoint, and one to a frozen process is worth nothing.
        self.reset(i);
        let mut h = self.members[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        h.failures = h.failures.saturating_add(1);
        let pause = Duration::from_millis(250).saturating_mul(1 << h.failures.min(4));
        h.down_until = Some(now + pause.min(Duration::from_secs(4)));
    }

    fn mark_up(&self, i: usize) {
        self.mark_healthy(i);
        self.pinned.store(i, Ordering::Relaxed);
    }

    fn is_up(&self, i: usize, now: Instant) -> bool {
        let h = self.members[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        h.down_until.is_none_or(|t| t <= now)
    }

    /// The order to try members in: the pinned one if it is up, the other healthy ones
    /// after it, then the ones marked down, soonest back first (still worth a try when
    /// nothing else answers).
    pub(crate) fn order(&self, now: Instant) -> Vec<usize> {
        let n = self.members.len();
        let pinned = self.pinned.load(Ordering::Relaxed) % n;
        let mut keyed: Vec<(Option<Instant>, usize, usize)> = (0..n)
            .map(|k| {
                let i = (pinned + k) % n;
                let h = self.members[i]
                    .health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                (h.down_until.filter(|t| *t > now), k, i)
            })
            .collect();
        // `None` (up) sorts first; then by when the pause ends; ties keep ring order.
        keyed.sort();
        keyed.into_iter().map(|(_, _, i)| i).collect()
    }

    /// Asks every member marked down whether it answers again, once per `every`, until the
    /// pool is dropped; one that answers is healthy again (the pin stays where it is).
    pub(crate) fn spawn_prober(pool: &std::sync::Arc<Self>, every: Duration) {
        let weak = std::sync::Arc::downgrade(pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = weak.upgrade() else { return };
                let now = Instant::now();
                let down: Vec<usize> = (0..pool.members.len())
                    .filter(|&i| !pool.is_up(i, now) || pool.failures(i) > 0)
                    .collect();
                let asks = down.into_iter().map(|i| {
                    let pool = std::sync::Arc::clone(&pool);
                    async move {
                        let ask = async {
                            let mut c = pool.client(i).await?;
                            let opts = etcd_client::GetOptions::new()
                                .with_keys_only()
                                .with_limit(1);
                            c.get(crate::PREFIX, Some(opts)).await.map_err(classify)
                        };
                        match tokio::time::timeout(pool.cfg.request_timeout, ask).await {
                            Ok(Ok(_)) => pool.mark_healthy(i),
                            _ => pool.reset(i),
                        }
                    }
                });
                futures::future::join_all(asks).await;
            }
        });
    }

    fn failures(&self, i: usize) -> u32 {
        self.members[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failures
    }

    fn mark_healthy(&self, i: usize) {
        let mut h = self.members[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if h.failures > 0 {
            tracing::debug!(endpoint = %self.members[i].endpoint, "etcd member answers again");
        }
        h.failures = 0;
        h.down_until = None;
    }

    /// Runs `f` against members until it succeeds, a failure may not be retried, or the
    /// retry timeout passes. Between rounds over every member it backs off briefly.
    pub(crate) async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, Gave>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let start = Instant::now();
        let deadline = start + self.cfg.retry_timeout;
        let mut errors: Vec<String> = Vec::new();
        let mut round = 0u32;
        loop {
            for i in self.order(Instant::now()) {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Gave::Error(self.unreachable(&errors, start)));
                }
                let attempt = async {
                    let c = self.client(i).await?;
                    f(c).await.map_err(classify)
                };
                let budget = self.cfg.request_timeout.min(deadline - now);
                let fault = match tokio::time::timeout(budget, attempt).await {
                    Ok(Ok(v)) => {
                        self.mark_up(i);
                        return Ok(v);
                    }
                    Ok(Err(f)) => f,
                    Err(_) => Fault::Lost(format!("no answer within {budget:?}")),
                };
                if fault.member_down() {
                    self.mark_down(i, Instant::now());
                }
                let endpoint = &self.members[i].endpoint;
                tracing::debug!(%endpoint, ?fault, "etcd attempt failed");
                match fault {
                    Fault::Denied(m) => {
                        self.reset(i);
                        return Err(Gave::Error(StoreError::Denied(format!("{endpoint}: {m}"))));
                    }
                    Fault::Final(e) => return Err(Gave::Final(e)),
                    Fault::Lost(m) if retry == Retry::UntilSent => {
                        return Err(Gave::Ambiguous(format!("{endpoint}: {m}")));
                    }
                    Fault::NotSent(m) | Fault::Lost(m) => {
                        if m.contains("invalid auth token") {
                            self.reset(i);
                        }
                        errors.push(format!("{endpoint}: {m}"));
                    }
                }
            }
            round = round.saturating_add(1);
            let pause = Duration::from_millis(50).saturating_mul(1 << round.min(4));
            let now = Instant::now();
            if now + pause >= deadline {
                tokio::time::sleep_until(deadline).await;
            } else {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// The error for a call that found no member able to answer.
    fn unreachable(&self, errors: &[String], start: Instant) -> StoreError {
        let mut last: Vec<&str> = Vec::new();
        for e in errors.iter().rev() {
            if last.len() == self.members.len() {
                break;
            }
            if !last.contains(&e.as_str()) {
                last.push(e);
            }
        }
        StoreError::Unavailable(format!(
            "etcd unreachable: no member of {} answered within {:.1?} ({})",
            self.members.len(),
            start.elapsed(),
            if last.is_empty() {
                "no attempt finished".to_owned()
            } else {
                last.join("; ")
            }
        ))
    }

    /// Marks member `i` as failed (a broken watch), so it is tried last for a while.
    pub(crate) fn failed(&self, i: usize) {
        self.mark_down(i, Instant::now());
    }

    /// The client of member `i`, for a watch (connecting within the request timeout).
    pub(crate) async fn client_of(&self, i: usize) -> Result<Client, Fault> {
        match tokio::time::timeout(self.cfg.request_timeout, self.client(i)).await {
            Ok(r) => r,
            Err(_) => Err(Fault::NotSent("connect timed out".into())),
        }
    }

    /// Records that member `i` answered.
    pub(crate) fn answered(&self, i: usize) {
        self.mark_up(i);
    }

    /// The member calls go to first.
    pub(crate) fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Relaxed) % self.members.len()
    }

    /// The endpoint of member `i`.
    pub(crate) fn endpoint(&self, i: usize) -> &str {
        &self.members[i].endpoint
    }

    /// Forgets member `i`'s client after a refusal (credentials may change).
    pub(crate) fn forget(&self, i: usize) {
        self.reset(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_classified_by_what_they_say_about_the_request() {
        let s =
            |code, m: &str| classify(etcd_client::Error::GRpcStatus(tonic::Status::new(code, m)));
        use tonic::Code;
        assert!(matches!(
            s(
                Code::Unavailable,
                "tcp connect error: Connection refused (os error 111)"
            ),
            Fault::NotSent(_)
        ));
        assert!(matches!(
            s(Code::Unavailable, "etcdserver: no leader"),
            Fault::NotSent(_)
        ));
        assert!(matches!(
            s(Code::Unavailable, "etcdserver: leader changed"),
            Fault::Lost(_)
        ));
        assert!(matches!(
            s(Code::Unavailable, "etcdserver: request timed out"),
            Fault::Lost(_)
        ));
        assert!(matches!(
            s(Code::Unknown, "transport error"),
            Fault::Lost(_)
        ));
        assert!(matches!(
            s(
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password"
            ),
            Fault::Denied(_)
        ));
        assert!(matches!(
            s(Code::PermissionDenied, "etcdserver: permission denied"),
            Fault::Denied(_)
        ));
        assert!(matches!(
            s(Code::Unauthenticated, "etcdserver: invalid auth token"),
            Fault::NotSent(_)
        ));
        assert!(matches!(
            s(Code::NotFound, "etcdserver: requested lease not found"),
            Fault::Final(_)
        ));
        assert!(matches!(
            s(
                Code::Unavailable,
                "error trying to connect: invalid peer certificate: UnknownIssuer"
            ),
            Fault::Denied(_)
        ));
        // A busy cluster is not a dead member; a broken connection is.
        assert!(!Fault::Lost("etcdserver: leader changed".into()).member_down());
        assert!(Fault::Lost("connection reset".into()).member_down());
    }
}
