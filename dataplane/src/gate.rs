//! The access gate: every object request passes here before the cache is consulted, on
//! hits as on misses, so a cached object is never served without an allow decision.
//!
//! Without a policy snapshot the edge is open (every asset public), as a plain CDN edge.
//! With one, an asset must be known (else 404) and its policy decides: the token is taken
//! from the request ([`credential`]), verified once and cached ([`jwt`], [`snapshot`]), and
//! the policy is evaluated on the request's facts.
//!
//! Snapshots come from a file or from the state store ([`crate::source`]).

// Public for the fuzz targets and benchmarks (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

pub mod credential;
pub mod jwt;
pub mod snapshot;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use http::header::{ORIGIN, REFERER};
use streamgate_policy::{Decision as PolicyDecision, Facts, NftOracle, Policy, TokenFacts};

use crate::config::UnknownAsset;
pub(crate) use crate::error::Refusal;
use streamgate_web3::Chains;

pub use snapshot::Snapshot;

/// What the gate knows about a request.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The asset id, the first path segment after `/v/`.
    pub asset: &'a str,
    /// The object key, `{asset}/{path}`.
    pub key: &'a str,
    /// The raw query string, where a `?token=` may sit.
    pub query: Option<&'a str>,
    /// The request headers (`Authorization`, `Cookie`, `Origin`, ...).
    pub headers: &'a HeaderMap,
    /// The client address, when the transport knows it.
    pub client: Option<IpAddr>,
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve the object. `query_token` says the token came in the query, so manifests are
    /// rewritten to carry it.
    Allow {
        /// The credential came as `?token=`.
        query_token: bool,
        /// The asset is public to everyone, so shared downstream caches may keep it;
        /// otherwise responses are `Cache-Control: private`.
        shared: bool,
        /// Where the asset's published version lives (`{asset}/{version}`), from the same
        /// snapshot as the decision: its objects are read and cached as
        /// `{prefix}/{path}`, so a republished asset is never served from the old version.
        prefix: Option<Arc<str>>,
        /// Who was allowed, for the limits applied after the decision.
        viewer: Viewer,
    },
    /// Refuse; [`crate::error`] turns the refusal into a status and a body.
    Deny(Refusal),
}

/// Who an allow decision admitted: the asset's policy and the verified token, both from
/// the decision's snapshot. Compared by identity.
#[derive(Clone, Default)]
pub struct Viewer {
    policy: Option<Arc<Policy>>,
    verified: Option<Arc<snapshot::CachedVerify>>,
}

impl PartialEq for Viewer {
    fn eq(&self, other: &Self) -> bool {
        fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        same(&self.policy, &other.policy) && same(&self.verified, &other.verified)
    }
}

impl Eq for Viewer {}

impl std::fmt::Debug for Viewer {
    // Never the claims: they may identify the viewer, and Debug output reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("policy", &self.policy.as_ref().map(|p| p.id.as_str()))
            .field("verified", &self.verified.is_some())
            .finish()
    }
}

impl Viewer {
    /// The policy's rate limits, if a policy decided.
    pub fn rate_limits(&self) -> Option<&streamgate_policy::limits::RateLimits> {
        self.policy.as_deref().map(|p| &p.limits.rate)
    }

    /// The policy's concurrent-stream cap, whose sessions it counts, and what a new one
    /// over it does.
    pub fn stream_cap(
        &self,
    ) -> Option<(
        u32,
        streamgate_policy::limits::StreamsPer,
        streamgate_policy::limits::OverCap,
    )> {
        let l = &self.policy.as_deref()?.limits;
        Some((l.max_streams?, l.streams_per, l.on_stream_limit))
    }

    /// The policy's token-sharing thresholds, and the policy's id.
    pub fn sharing(&self) -> Option<(&streamgate_policy::limits::Sharing, &str)> {
        let p = self.policy.as_deref()?;
        Some((p.limits.sharing.as_ref()?, p.id.as_str()))
    }

    /// The verified token's `sub` as it reads (for the audit log), or its wallet.
    pub fn subject_name(&self) -> String {
        match self.verified.as_deref().map(|v| &v.result) {
            Some(Ok(v)) => v
                .claims
                .get("sub")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
                .or_else(|| v.wallet.as_ref().map(ToString::to_string))
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// The verified token's principals (none without a valid token).
    pub fn principals(&self) -> crate::session::Principals {
        match self.verified.as_deref().map(|v| &v.result) {
            Some(Ok(v)) => v.principals,
            _ => crate::session::Principals::default(),
        }
    }
}

/// The gate.
pub struct Gate {
    /// `None`: open edge. Loads are lock-free; a new revision is one atomic swap.
    state: ArcSwapOption<Snapshot>,
    /// The key of this deployment's wallet session tokens, by `kid`, when sign-in is on.
    session: Option<(String, jwt::VerifyingKey)>,
    guarded: bool,
    leeway: Duration,
    unknown_asset: UnknownAsset,
    /// The chain registry, for `nft` conditions.
    chains: Option<Arc<Chains>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("guarded", &self.guarded)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// An open gate: every asset is public.
    pub fn open() -> Self {
        Self {
            state: ArcSwapOption::empty(),
            session: None,
            guarded: false,
            leeway: Duration::ZERO,
            unknown_asset: UnknownAsset::Conceal,
            chains: None,
        }
    }

    /// A guarded gate enforcing `snapshot`, allowing `leeway` of clock skew on tokens.
    pub fn guarded(snapshot: Snapshot, leeway: Duration) -> Self {
        Self {
            state: ArcSwapOption::from_pointee(snapshot),
            session: None,
            guarded: true,
            leeway,
            unknown_asset: UnknownAsset::Conceal,
            chains: None,
        }
    }

    /// A guarded gate with no snapshot yet: every gated request gets 503 until one is
    /// installed (an edge waiting for its state store).
    pub fn waiting(leeway: Duration) -> Self {
        Self {
            state: ArcSwapOption::empty(),
            session: None,
            guarded: true,
            leeway,
            unknown_asset: UnknownAsset::Conceal,
            chains: None,
        }
    }

    /// Sets what requests for unknown assets get.
    pub fn set_unknown_asset(&mut self, mode: UnknownAsset) {
        self.unknown_asset = mode;
    }

    /// Accepts tokens signed with the wallet session key `kid` (besides the snapshot's keys).
    pub fn set_session_key(&mut self, key: (String, jwt::VerifyingKey)) {
        self.session = Some(key);
    }

    /// Answers `nft` conditions with these chains; the snapshot in force tells them what
    /// to follow.
    pub fn set_chains(&mut self, chains: Arc<Chains>) {
        if let Some(s) = self.state.load().as_ref() {
            chains.set_live(s.policies.values().map(|p| &**p));
        }
        self.chains = Some(chains);
    }

    /// The chain registry, if any.
    pub fn chains(&self) -> Option<&Arc<Chains>> {
        self.chains.as_ref()
    }

    fn follow(&self, snapshot: &Snapshot) {
        if let Some(c) = &self.chains {
            c.set_live(snapshot.policies.values().map(|p| &**p));
        }
    }

    /// Installs a new snapshot (a guarded gate only); requests see it from the next load.
    pub fn install(&self, snapshot: impl Into<Arc<Snapshot>>) {
        if self.guarded {
            let snapshot = snapshot.into();
            self.follow(&snapshot);
            self.state.store(Some(snapshot));
        }
    }

    /// Installs `snapshot` only if none is in force yet (a last-known-good file must never
    /// replace fresher state). Returns whether it was installed.
    pub fn install_if_empty(&self, snapshot: impl Into<Arc<Snapshot>>) -> bool {
        if !self.guarded {
            return false;
        }
        let snapshot = snapshot.into();
        let prev = self
            .state
            .compare_and_swap(&None::<Arc<Snapshot>>, Some(Arc::clone(&snapshot)));
        let installed = prev.is_none();
        if installed {
            self.follow(&snapshot);
        }
        installed
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.state.load_full()
    }

    /// Whether the gate enforces a snapshot (false: an open edge).
    pub fn is_guarded(&self) -> bool {
        self.guarded
    }

    /// The revision in force, if guarded.
    pub fn revision(&self) -> Option<i64> {
        self.state.load().as_ref().map(|s| s.revision)
    }

    /// Decides whether the request may be served, at time `now`. Answers from the
    /// caches; only a policy whose verdict hangs on an NFT the ownership cache does not
    /// know awaits a chain lookup.
    pub async fn check(&self, f: &RequestFacts<'_>, now: SystemTime) -> Decision {
        match self.first_pass(f, now) {
            Ok(d) => d,
            Err(lookup) => self.second_pass(f, now, lookup).await,
        }
    }

    /// The decision from what is known now, or what a lookup needs.
    fn first_pass(&self, f: &RequestFacts<'_>, now: SystemTime) -> Result<Decision, NeedsLookup> {
        let guard = self.state.load();
        let Some(snap) = guard.as_ref() else {
            return Ok(if self.guarded {
                Decision::Deny(Refusal::Unavailable("no_policy_snapshot"))
            } else {
                Decision::Allow {
                    query_token: false,
                    shared: true,
                    prefix: None,
                    viewer: Viewer::default(),
                }
            });
        };
        let Some(binding) = snap.assets.get(f.asset) else {
            return Ok(self.unknown_asset(snap, f, now));
        };
        let Some(policy) = binding.as_ref().and_then(|p| snap.policies.get(p)) else {
            return Ok(Decision::Deny(Refusal::Denied("asset_has_no_policy")));
        };
        let credential = if policy.uses_token() {
            credential::find(f.headers, f.query)
        } else {
            None
        };
        let verified = credential
            .as_ref()
            .map(|(t, _)| snap.verify(t, now, self.leeway, self.session.as_ref()));
        let query_token = matches!(credential, Some((_, credential::Source::Query)));
        let oracle = self.chains.as_deref().map(|c| c.oracle(None));
        let facts = facts(
            policy,
            f,
            now,
            verified.as_deref(),
            oracle.as_ref().map(|o| o as &dyn NftOracle),
        );
        let prefix = || snap.origin_prefixes.get(f.asset).cloned();
        match policy.evaluate(&facts) {
            PolicyDecision::Pending => match verified {
                Some(verified) => Err(NeedsLookup {
                    policy: Arc::clone(policy),
                    verified,
                    query_token,
                    prefix: prefix(),
                }),
                None => Ok(verdict(
                    policy,
                    PolicyDecision::Pending,
                    query_token,
                    None,
                    None,
                )),
            },
            d @ PolicyDecision::Allow => Ok(verdict(policy, d, query_token, prefix(), verified)),
            d => Ok(verdict(policy, d, query_token, None, None)),
        }
    }

    /// An asset the snapshot does not know. Concealed, it answers as a token-gated asset
    /// would, so that a request without a valid credential cannot tell whether it exists.
    fn unknown_asset(&self, snap: &Snapshot, f: &RequestFacts<'_>, now: SystemTime) -> Decision {
        if self.unknown_asset == UnknownAsset::NotFound {
            return Decision::Deny(Refusal::UnknownAsset);
        }
        let Some((token, _)) = credential::find(f.headers, f.query) else {
            return Decision::Deny(Refusal::NoCredential);
        };
        match &snap
            .verify(&token, now, self.leeway, self.session.as_ref())
            .result
        {
            Ok(_) => Decision::Deny(Refusal::UnknownAsset),
            Err(why) => Decision::Deny(Refusal::Denied(why.as_str())),
        }
    }

    /// Looks up what the first pass lacked, then decides with the answers.
    async fn second_pass(&self, f: &RequestFacts<'_>, now: SystemTime, l: NeedsLookup) -> Decision {
        let (Some(chains), Ok(v)) = (self.chains.as_deref(), &l.verified.result) else {
            return verdict(
                &l.policy,
                PolicyDecision::Pending,
                l.query_token,
                None,
                None,
            );
        };
        let answers = chains.resolve(&l.policy, &v.claims).await;
        let oracle = chains.oracle(Some(&answers));
        let facts = facts(&l.policy, f, now, Some(&l.verified), Some(&oracle));
        let d = l.policy.evaluate(&facts);
        verdict(&l.policy, d, l.query_token, l.prefix, Some(l.verified))
    }
}

/// What a decision waiting for a chain lookup holds on to.
struct NeedsLookup {
    policy: Arc<Policy>,
    verified: Arc<snapshot::CachedVerify>,
    query_token: bool,
    prefix: Option<Arc<str>>,
}

/// The facts of a request for `policy`.
fn facts<'a>(
    policy: &Policy,
    f: &'a RequestFacts<'_>,
    now: SystemTime,
    verified: Option<&'a snapshot::CachedVerify>,
    nft: Option<&'a dyn NftOracle>,
) -> Facts<'a> {
    let (token, wallet) = match verified {
        None => (TokenFacts::Absent, None),
        Some(v) => match &v.result {
            Ok(ok) if ok.session => (TokenFacts::Session(&ok.claims), ok.wallet.as_ref()),
            Ok(ok) => (TokenFacts::Valid(&ok.claims), ok.wallet.as_ref()),
            Err(why) => (TokenFacts::Invalid(*why), None),
        },
    };
    // Header lookups hash the name; skip the two a policy without origin rules ignores.
    let reads_origin = policy.uses_origin();
    let header = |name| {
        if reads_origin {
            f.headers.get(name).and_then(|v| v.to_str().ok())
        } else {
            None
        }
    };
    Facts {
        now,
        key: f.key,
        client_ip: f.client,
        origin: header(ORIGIN),
        referer: header(REFERER),
        token,
        nft,
        wallet,
    }
}

/// The gate's verdict from the policy's.
fn verdict(
    policy: &Arc<Policy>,
    d: PolicyDecision,
    query_token: bool,
    prefix: Option<Arc<str>>,
    verified: Option<Arc<snapshot::CachedVerify>>,
) -> Decision {
    match d {
        PolicyDecision::Allow => Decision::Allow {
            query_token,
            shared: policy.always_allows(),
            prefix,
            viewer: Viewer {
                policy: Some(Arc::clone(policy)),
                verified,
            },
        },
        PolicyDecision::Deny {
            reason: streamgate_policy::Reason::NoCredential,
        } => Decision::Deny(Refusal::NoCredential),
        PolicyDecision::Deny { reason } => Decision::Deny(Refusal::Denied(reason.as_str())),
        PolicyDecision::Unavailable { reason } => {
            Decision::Deny(Refusal::Unavailable(reason.as_str()))
        }
        // Still unknown after a lookup (or nothing to look up with): unavailable.
        PolicyDecision::Pending => Decision::Deny(Refusal::Unavailable(
            streamgate_policy::Reason::DependencyUnavailable.as_str(),
        )),
    }
}

#[cfg(test)]
mod tests;
