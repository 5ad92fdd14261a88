//! The evaluator: request facts in, a decision and a machine-readable reason out.

use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::Value;

use crate::model::*;

/// What the edge learned about the request's token before evaluating a policy.
#[derive(Debug, Clone, Copy)]
pub enum TokenFacts<'a> {
    /// No credential was presented.
    Absent,
    /// A credential was presented and failed verification for this reason.
    Invalid(Reason),
    /// A credential was presented and verified (signature, `exp`, `nbf`) with one of the
    /// deployment's keys; these are its claims.
    Valid(&'a Claims),
    /// A wallet session token, verified with the edges' own session key. Anyone can get
    /// one by signing in with any wallet, so it satisfies `wallet` and `nft` conditions,
    /// and a `jwt` condition only when that condition names the session issuer.
    Session(&'a Claims),
}

/// Everything a decision may depend on. The caller supplies `now`.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The time of the request.
    pub now: SystemTime,
    /// The object key, `{asset}/{path}`.
    pub key: &'a str,
    /// The client address.
    pub client_ip: Option<IpAddr>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Referer` header.
    pub referer: Option<&'a str>,
    /// The token, if any.
    pub token: TokenFacts<'a>,
    /// What is known of wallets' NFTs; `None` makes every `nft` condition unavailable.
    pub nft: Option<&'a dyn NftOracle>,
    /// The token's `sg_wallet`, already parsed (an optimisation: when `None` the claim is
    /// parsed where a condition needs it).
    pub wallet: Option<&'a crate::address::Account>,
}

/// Why a request was refused (or which dependency was unavailable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The policy needs a credential and none came.
    NoCredential,
    /// The token is not a well-formed JWT.
    MalformedToken,
    /// The token's algorithm is not allowed for its key (`alg=none`, HS/RS confusion).
    AlgorithmNotAllowed,
    /// No key has the token's `kid`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is past (beyond the leeway).
    TokenExpired,
    /// `nbf` is in the future (beyond the leeway).
    TokenNotYetValid,
    /// `iss` is not the one required.
    WrongIssuer,
    /// `aud` does not hold the one required.
    WrongAudience,
    /// A required claim is missing or has another value.
    ClaimMismatch,
    /// The token is scoped to other assets or paths.
    ScopeMismatch,
    /// The request is outside the policy's time window.
    OutsideTimeWindow,
    /// The client address is not on the allow list.
    IpNotAllowed,
    /// The client address is on the deny list.
    IpDenied,
    /// The page origin is not allowed.
    OriginNotAllowed,
    /// A `not` rule's inner rule matched.
    NegatedRuleMatched,
    /// Something the decision needs could not be reached.
    DependencyUnavailable,
    /// The policy needs a signed-in wallet and the token carries none.
    WalletRequired,
    /// The signed-in wallet is not allowed (or is denied).
    WalletNotAllowed,
    /// The signed-in wallet does not hold the NFT the policy asks for.
    NftNotHeld,
}

impl Reason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [Self; 20] = [
        Self::NoCredential,
        Self::MalformedToken,
        Self::AlgorithmNotAllowed,
        Self::UnknownKey,
        Self::BadSignature,
        Self::TokenExpired,
        Self::TokenNotYetValid,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::ClaimMismatch,
        Self::ScopeMismatch,
        Self::OutsideTimeWindow,
        Self::IpNotAllowed,
        Self::IpDenied,
        Self::OriginNotAllowed,
        Self::NegatedRuleMatched,
        Self::DependencyUnavailable,
        Self::WalletRequired,
        Self::WalletNotAllowed,
        Self::NftNotHeld,
    ];

    /// The reason as it appears in JSON error bodies and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCredential => "no_credential",
            Self::MalformedToken => "malformed_token",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::ClaimMismatch => "claim_mismatch",
            Self::ScopeMismatch => "scope_mismatch",
            Self::OutsideTimeWindow => "outside_time_window",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::IpDenied => "ip_denied",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::NegatedRuleMatched => "negated_rule_matched",
            Self::DependencyUnavailable => "dependency_unavailable",
            Self::WalletRequired => "wallet_required",
            Self::WalletNotAllowed => "wallet_not_allowed",
            Self::NftNotHeld => "nft_not_held",
        }
    }

    fn is_credential(self) -> bool {
        matches!(
            self,
            Self::NoCredential
                | Self::MalformedToken
                | Self::AlgorithmNotAllowed
                | Self::UnknownKey
                | Self::BadSignature
                | Self::TokenExpired
                | Self::TokenNotYetValid
                | Self::WrongIssuer
                | Self::WrongAudience
                | Self::ClaimMismatch
                | Self::ScopeMismatch
                | Self::WalletRequired
        )
    }
}

/// A policy's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve.
    Allow,
    /// Refuse, for `reason` ([`Reason::NoCredential`] when a credential would be needed and
    /// none came). The evaluator knows no HTTP: the edge maps reasons to statuses.
    Deny {
        /// Why.
        reason: Reason,
    },
    /// A dependency was unreachable and the policy fails closed.
    Unavailable {
        /// Why.
        reason: Reason,
    },
    /// The verdict depends on an `nft` condition the oracle answered
    /// [`Holding::Pending`]: look it up, then evaluate again.
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    True,
    False(Reason),
    Unknown(Reason),
    /// Needs a lookup first; outranks `Unknown` (the lookup may make it true).
    Pending,
}

impl Policy {
    /// Decides a request. Pure: no I/O, no clock.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Decision {
        match eval(&self.rule, facts) {
            Outcome::True => Decision::Allow,
            Outcome::False(reason) => Decision::Deny { reason },
            Outcome::Unknown(reason) => match self.on_unavailable {
                FailMode::Closed => Decision::Unavailable { reason },
                FailMode::Open => Decision::Allow,
            },
            Outcome::Pending => Decision::Pending,
        }
    }

    /// Checks that every `nft` condition names one of `known` chains (the deployment's
    /// chain registry); each one that does not is an error at its field path.
    pub fn check_chains(&self, known: &[crate::address::ChainId]) -> Vec<crate::PolicyError> {
        fn walk(
            r: &Rule,
            path: String,
            known: &[crate::address::ChainId],
            out: &mut Vec<crate::PolicyError>,
        ) {
            match r {
                Rule::AnyOf(rs) | Rule::AllOf(rs) => {
                    let k = if matches!(r, Rule::AnyOf(_)) {
                        "any_of"
                    } else {
                        "all_of"
                    };
                    for (i, r) in rs.iter().enumerate() {
                        walk(r, format!("{path}.{k}[{i}]"), known, out);
                    }
                }
                Rule::Not(r) => walk(r, format!("{path}.not"), known, out),
                Rule::Cond(Condition::Nft(n)) if !known.contains(&n.chain) => {
                    out.push(crate::PolicyError {
                        path: format!("{path}.nft.chain"),
                        message: format!(
                            "{} is not in the chain registry ({})",
                            n.chain,
                            known
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
                Rule::Cond(_) => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.rule, "rule".into(), known, &mut out);
        out
    }

    /// The `nft` conditions anywhere in the rule, in document order.
    pub fn nft_conditions(&self) -> Vec<&NftCondition> {
        fn walk<'p>(r: &'p Rule, out: &mut Vec<&'p NftCondition>) {
            match r {
                Rule::AnyOf(rs) | Rule::AllOf(rs) => rs.iter().for_each(|r| walk(r, out)),
                Rule::Not(r) => walk(r, out),
                Rule::Cond(Condition::Nft(n)) => out.push(n),
                Rule::Cond(_) => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.rule, &mut out);
        out
    }

    /// Whether this policy allows every request whatever its facts (`public`, or rules that
    /// reduce to it). Only such assets may be stored by shared downstream caches.
    pub fn always_allows(&self) -> bool {
        fn walk(r: &Rule) -> bool {
            match r {
                Rule::AnyOf(rs) => rs.iter().any(walk),
                Rule::AllOf(rs) => rs.iter().all(walk),
                Rule::Cond(Condition::Public) => true,
                Rule::Not(_) | Rule::Cond(_) => false,
            }
        }
        walk(&self.rule)
    }

    /// Whether any branch of this policy can look at a token; tokens are verified only then.
    pub fn uses_token(&self) -> bool {
        self.any_condition(&|c| {
            matches!(
                c,
                Condition::Jwt(_) | Condition::Wallet(_) | Condition::Nft(_)
            )
        })
    }

    /// Whether any branch looks at the `Origin` or `Referer` header; they are read only then.
    pub fn uses_origin(&self) -> bool {
        self.any_condition(&|c| matches!(c, Condition::Origin(_)))
    }

    fn any_condition(&self, f: &dyn Fn(&Condition) -> bool) -> bool {
        fn walk(r: &Rule, f: &dyn Fn(&Condition) -> bool) -> bool {
            match r {
                Rule::AnyOf(rs) | Rule::AllOf(rs) => rs.iter().any(|r| walk(r, f)),
                Rule::Not(r) => walk(r, f),
                Rule::Cond(c) => f(c),
            }
        }
        walk(&self.rule, f)
    }
}

fn eval(rule: &Rule, f: &Facts<'_>) -> Outcome {
    match rule {
        Rule::AnyOf(rs) => {
            let mut unknown = None;
            let mut pending = false;
            let mut first_false = None;
            let mut credential_false = None;
            let mut wallet_false = None;
            for r in rs {
                match eval(r, f) {
                    Outcome::True => return Outcome::True,
                    Outcome::Pending => pending = true,
                    Outcome::Unknown(why) => unknown = unknown.or(Some(why)),
                    Outcome::False(why) => {
                        first_false = first_false.or(Some(why));
                        if matches!(why, Reason::WalletNotAllowed | Reason::NftNotHeld) {
                            wallet_false = wallet_false.or(Some(why));
                        }
                        if why.is_credential() {
                            credential_false = credential_false.or(Some(why));
                        }
                    }
                }
            }
            if pending {
                return Outcome::Pending;
            }
            if let Some(why) = unknown {
                return Outcome::Unknown(why);
            }
            // The most useful answer to a viewer is about their credential; for a
            // signed-in wallet, what the wallet lacks.
            Outcome::False(
                wallet_false
                    .or(credential_false)
                    .or(first_false)
                    .unwrap_or(Reason::NegatedRuleMatched),
            )
        }
        Rule::AllOf(rs) => {
            let mut unknown = None;
            let mut pending = false;
            for r in rs {
                match eval(r, f) {
                    Outcome::True => {}
                    Outcome::False(why) => return Outcome::False(why),
                    Outcome::Pending => pending = true,
                    Outcome::Unknown(why) => unknown = unknown.or(Some(why)),
                }
            }
            if pending {
                return Outcome::Pending;
            }
            unknown.map_or(Outcome::True, Outcome::Unknown)
        }
        Rule::Not(r) => match eval(r, f) {
            Outcome::True => Outcome::False(Reason::NegatedRuleMatched),
            Outcome::False(_) => Outcome::True,
            u @ (Outcome::Unknown(_) | Outcome::Pending) => u,
        },
        Rule::Cond(c) => cond(c, f),
    }
}

fn bool_outcome(ok: bool, why: Reason) -> Outcome {
    if ok {
        Outcome::True
    } else {
        Outcome::False(why)
    }
}

fn cond(c: &Condition, f: &Facts<'_>) -> Outcome {
    match c {
        Condition::Public => Outcome::True,
        Condition::Time(w) => bool_outcome(
            w.not_before.is_none_or(|t| f.now >= t) && w.not_after.is_none_or(|t| f.now <= t),
            Reason::OutsideTimeWindow,
        ),
        Condition::Ip(c) => match f.client_ip {
            None => Outcome::False(Reason::IpNotAllowed),
            Some(ip) => {
                let ip = canonical(ip);
                if c.deny.iter().any(|n| n.contains(&ip)) {
                    Outcome::False(Reason::IpDenied)
                } else {
                    bool_outcome(
                        c.allow.is_empty() || c.allow.iter().any(|n| n.contains(&ip)),
                        Reason::IpNotAllowed,
                    )
                }
            }
        },
        Condition::Origin(o) => {
            let ok = match (f.origin, f.referer) {
                (Some(origin), _) => o.allow.iter().any(|a| a == origin),
                (None, Some(referer)) => o.allow.iter().any(|a| {
                    referer.len() > a.len()
                        && referer.starts_with(a.as_str())
                        && referer.as_bytes()[a.len()] == b'/'
                }),
                (None, None) => false,
            };
            bool_outcome(ok, Reason::OriginNotAllowed)
        }
        Condition::Jwt(j) => match f.token {
            TokenFacts::Absent => Outcome::False(Reason::NoCredential),
            TokenFacts::Invalid(why) => Outcome::False(why),
            TokenFacts::Valid(claims) => jwt(j, claims, f.key),
            // Self-service sessions are not the operator's tokens: only a condition that
            // names their issuer accepts them.
            TokenFacts::Session(claims) => match (&j.issuer, claims.get("iss")) {
                (Some(want), Some(Value::String(iss))) if want == iss => jwt(j, claims, f.key),
                _ => Outcome::False(Reason::WrongIssuer),
            },
        },
        Condition::Wallet(w) => match f.token {
            TokenFacts::Absent => Outcome::False(Reason::NoCredential),
            TokenFacts::Invalid(why) => Outcome::False(why),
            TokenFacts::Valid(claims) | TokenFacts::Session(claims) => wallet(w, f, claims),
        },
        Condition::Nft(n) => match f.token {
            TokenFacts::Absent => Outcome::False(Reason::NoCredential),
            TokenFacts::Invalid(why) => Outcome::False(why),
            TokenFacts::Valid(claims) | TokenFacts::Session(claims) => {
                match session_account(f, claims, &n.issuer) {
                    Err(why) => Outcome::False(why),
                    Ok(account) if account.namespace != n.chain.namespace => {
                        Outcome::False(Reason::NftNotHeld)
                    }
                    Ok(account) => match f.nft.map(|o| o.holds(n, account.as_ref())) {
                        Some(Holding::Yes) => Outcome::True,
                        Some(Holding::No) => Outcome::False(Reason::NftNotHeld),
                        Some(Holding::Pending) => Outcome::Pending,
                        Some(Holding::Unavailable) | None => {
                            Outcome::Unknown(Reason::DependencyUnavailable)
                        }
                    },
                }
            }
        },
    }
}

/// The wallet of a session token from `issuer` (`sg_wallet`, CAIP-10).
pub fn session_wallet(claims: &Claims, issuer: &str) -> Result<crate::address::Account, Reason> {
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(Reason::WalletRequired);
    }
    claims
        .get("sg_wallet")
        .and_then(Value::as_str)
        .and_then(|a| crate::address::Account::parse(a).ok())
        .ok_or(Reason::WalletRequired)
}

/// The session wallet, pre-parsed when the edge has it.
fn session_account<'f>(
    f: &Facts<'f>,
    claims: &Claims,
    issuer: &str,
) -> Result<std::borrow::Cow<'f, crate::address::Account>, Reason> {
    match f.wallet {
        Some(w) if claims.get("iss").and_then(Value::as_str) == Some(issuer) => {
            Ok(std::borrow::Cow::Borrowed(w))
        }
        Some(_) => Err(Reason::WalletRequired),
        None => session_wallet(claims, issuer).map(std::borrow::Cow::Owned),
    }
}

/// The session token's wallet (`sg_wallet`, CAIP-10) against the lists.
fn wallet(w: &WalletCondition, f: &Facts<'_>, claims: &Claims) -> Outcome {
    let account = match session_account(f, claims, &w.issuer) {
        Ok(a) => a,
        Err(why) => return Outcome::False(why),
    };
    if w.deny.iter().any(|d| d.covers(&account)) {
        return Outcome::False(Reason::WalletNotAllowed);
    }
    bool_outcome(
        w.allow.is_empty() || w.allow.iter().any(|a| a.covers(&account)),
        Reason::WalletNotAllowed,
    )
}

/// IPv4-mapped IPv6 addresses are compared as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn jwt(j: &JwtCondition, claims: &Claims, key: &str) -> Outcome {
    if let Some(iss) = &j.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
    {
        return Outcome::False(Reason::WrongIssuer);
    }
    if let Some(aud) = &j.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == aud,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud.as_str())),
            _ => false,
        };
        if !ok {
            return Outcome::False(Reason::WrongAudience);
        }
    }
    for (name, want) in &j.required_claims {
        if !claim_matches(claims.get(name), want) {
            return Outcome::False(Reason::ClaimMismatch);
        }
    }
    if let Some(scope) = &j.scope_claim {
        let ok = match claims.get(scope) {
            Some(Value::String(s)) => scope_matches(s, key),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|s| scope_matches(s, key)),
            // A policy that scopes tokens refuses unscoped ones.
            _ => false,
        };
        if !ok {
            return Outcome::False(Reason::ScopeMismatch);
        }
    }
    Outcome::True
}

/// A required value matches an equal claim, or a list claim that contains it. A required
/// list matches when the claim (or one of its items) equals any of its items.
fn claim_matches(got: Option<&Value>, want: &Value) -> bool {
    let Some(got) = got else { return false };
    let one = |w: &Value| match got {
        Value::Array(items) => items.contains(w),
        g => g == w,
    };
    match want {
        Value::Array(options) => options.iter().any(one),
        w => one(w),
    }
}

/// `*` matches everything; `demo` matches the asset `demo`; `demo/video/` (or `demo/video`)
/// matches keys below that prefix.
pub(crate) fn scope_matches(scope: &str, key: &str) -> bool {
    if scope == "*" {
        return true;
    }
    let scope = scope.trim_end_matches('/');
    !scope.is_empty()
        && key.len() > scope.len()
        && key.starts_with(scope)
        && key.as_bytes()[scope.len()] == b'/'
}

#[cfg(test)]
mod tests;
