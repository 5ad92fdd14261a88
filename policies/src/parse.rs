//! Parsing and validation: YAML or JSON text in, a [`Policy`] or every error with its path out.

use std::fmt;

use serde_json::{Map, Value};

use crate::model::*;

/// The largest policy document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// The deepest nesting of rules accepted.
pub const MAX_DEPTH: usize = 16;

/// One problem in a policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Field path such as `rule.any_of[1].jwt.audience`; empty for the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a policy document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

pub(crate) struct Ctx {
    errors: Vec<PolicyError>,
}

impl Ctx {
    pub(crate) fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(PolicyError {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Policy {
    /// Parses a YAML or JSON policy document (JSON is YAML) and validates it.
    pub fn parse(text: &str) -> Result<Self, PolicyErrors> {
        let one = |m: String| {
            PolicyErrors(vec![PolicyError {
                path: String::new(),
                message: m,
            }])
        };
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(one(format!(
                "document larger than {MAX_DOCUMENT_BYTES} bytes"
            )));
        }
        let value: Value =
            serde_yaml::from_str(text).map_err(|e| one(format!("not valid YAML or JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Validates an already parsed document.
    pub fn from_value(v: &Value) -> Result<Self, PolicyErrors> {
        let mut cx = Ctx { errors: Vec::new() };
        let policy = document(&mut cx, v);
        match policy {
            Some(p) if cx.errors.is_empty() => Ok(p),
            _ => Err(PolicyErrors(cx.errors)),
        }
    }

    /// The canonical JSON form of this policy, as stored and as `ctl policy get` shows it.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.as_str().into());
        if !self.description.is_empty() {
            m.insert("description".into(), self.description.clone().into());
        }
        m.insert(
            "on_unavailable".into(),
            match self.on_unavailable {
                FailMode::Closed => "fail_closed",
                FailMode::Open => "fail_open",
            }
            .into(),
        );
        m.insert("rule".into(), rule_value(&self.rule));
        if let Some(l) = crate::limits::limits_value(&self.limits) {
            m.insert("limits".into(), l);
        }
        Value::Object(m)
    }
}

/// Reads one rate class (`{per_ip, per_subject, per_wallet}`, each `"off"` or
/// `{rate, burst}`) from outside the policy language, such as the edge's configuration;
/// errors carry `path`.
pub fn parse_rate_class(path: &str, v: &Value) -> Result<crate::limits::RateClass, PolicyErrors> {
    let mut cx = Ctx { errors: Vec::new() };
    let c = crate::limits::rate_class(&mut cx, path, v);
    if cx.errors.is_empty() {
        Ok(c)
    } else {
        Err(PolicyErrors(cx.errors))
    }
}

fn rule_value(r: &Rule) -> Value {
    let one = |k: &str, v: Value| Value::Object(Map::from_iter([(k.to_owned(), v)]));
    match r {
        Rule::AnyOf(rs) => one("any_of", rs.iter().map(rule_value).collect()),
        Rule::AllOf(rs) => one("all_of", rs.iter().map(rule_value).collect()),
        Rule::Not(r) => one("not", rule_value(r)),
        Rule::Cond(Condition::Public) => one("public", true.into()),
        Rule::Cond(Condition::Jwt(j)) => {
            let mut m = Map::new();
            if let Some(i) = &j.issuer {
                m.insert("issuer".into(), i.clone().into());
            }
            if let Some(a) = &j.audience {
                m.insert("audience".into(), a.clone().into());
            }
            if !j.required_claims.is_empty() {
                m.insert(
                    "required_claims".into(),
                    Value::Object(j.required_claims.clone()),
                );
            }
            match &j.scope_claim {
                Some(s) => m.insert("scope_claim".into(), s.clone().into()),
                None => m.insert("scope_claim".into(), Value::Null),
            };
            one("jwt", Value::Object(m))
        }
        Rule::Cond(Condition::Time(t)) => {
            let mut m = Map::new();
            let fmt = |t: &std::time::SystemTime| humantime::format_rfc3339_seconds(*t).to_string();
            if let Some(t) = &t.not_before {
                m.insert("not_before".into(), fmt(t).into());
            }
            if let Some(t) = &t.not_after {
                m.insert("not_after".into(), fmt(t).into());
            }
            one("time", Value::Object(m))
        }
        Rule::Cond(Condition::Ip(c)) => {
            let list = |v: &[ipnet::IpNet]| {
                Value::from(v.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            };
            let mut m = Map::new();
            m.insert("allow".into(), list(&c.allow));
            m.insert("deny".into(), list(&c.deny));
            one("ip", Value::Object(m))
        }
        Rule::Cond(Condition::Origin(o)) => one(
            "origin",
            Value::Object(Map::from_iter([(
                "allow".to_owned(),
                Value::from(o.allow.clone()),
            )])),
        ),
        Rule::Cond(Condition::Wallet(w)) => {
            let list = |v: &[crate::address::Account]| {
                Value::from(v.iter().map(ToString::to_string).collect::<Vec<_>>())
            };
            let mut m = Map::new();
            m.insert("issuer".into(), w.issuer.clone().into());
            m.insert("allow".into(), list(&w.allow));
            m.insert("deny".into(), list(&w.deny));
            one("wallet", Value::Object(m))
        }
        Rule::Cond(Condition::Nft(n)) => {
            let mut m = Map::new();
            m.insert("chain".into(), n.chain.to_string().into());
            m.insert("standard".into(), n.standard.as_str().into());
            let (k, v) = match n.target {
                NftTarget::Contract(a) => ("contract", crate::address::eip55(&a)),
                NftTarget::Collection(c) => ("collection", bs58::encode(c).into_string()),
                NftTarget::Mint(c) => ("mint", bs58::encode(c).into_string()),
            };
            m.insert(k.into(), v.into());
            if !n.token_ids.is_empty() {
                m.insert(
                    "token_ids".into(),
                    n.token_ids
                        .iter()
                        .map(token_id_text)
                        .collect::<Vec<_>>()
                        .into(),
                );
            }
            m.insert("min_balance".into(), n.min_balance.into());
            if n.issuer != WALLET_ISSUER {
                m.insert("issuer".into(), n.issuer.clone().into());
            }
            one("nft", Value::Object(m))
        }
    }
}

pub(crate) fn object<'v>(cx: &mut Ctx, path: &str, v: &'v Value) -> Option<&'v Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => {
            cx.err(path, "expected a mapping");
            None
        }
    }
}

pub(crate) fn unknown_keys(cx: &mut Ctx, path: &str, m: &Map<String, Value>, known: &[&str]) {
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            cx.err(
                &join(path, k),
                format!("unknown field (expected one of: {})", known.join(", ")),
            );
        }
    }
}

fn string(cx: &mut Ctx, path: &str, v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::String(_) => {
            cx.err(path, "must not be empty");
            None
        }
        _ => {
            cx.err(path, "expected a string");
            None
        }
    }
}

fn strings(cx: &mut Ctx, path: &str, v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .filter_map(|(i, x)| string(cx, &format!("{path}[{i}]"), x))
            .collect(),
        _ => {
            cx.err(path, "expected a list of strings");
            Vec::new()
        }
    }
}

fn document(cx: &mut Ctx, v: &Value) -> Option<Policy> {
    let m = object(cx, "", v)?;
    unknown_keys(
        cx,
        "",
        m,
        &["id", "description", "on_unavailable", "rule", "limits"],
    );
    let id = match m.get("id") {
        None => {
            cx.err("id", "required");
            None
        }
        Some(v) => string(cx, "id", v).and_then(|s| match PolicyId::new(&s) {
            Ok(id) => Some(id),
            Err(e) => {
                cx.err("id", e);
                None
            }
        }),
    };
    let description = match m.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            cx.err("description", "expected a string");
            String::new()
        }
    };
    let on_unavailable = match m.get("on_unavailable").map(Value::as_str) {
        None | Some(Some("fail_closed")) => FailMode::Closed,
        Some(Some("fail_open")) => FailMode::Open,
        Some(_) => {
            cx.err(
                "on_unavailable",
                "expected \"fail_closed\" or \"fail_open\"",
            );
            FailMode::Closed
        }
    };
    let rule = match m.get("rule") {
        None => {
            cx.err("rule", "required");
            None
        }
        Some(r) => rule(cx, "rule", r, 0),
    };
    let limits = m
        .get("limits")
        .map(|l| crate::limits::limits(cx, "limits", l))
        .unwrap_or_default();
    Some(Policy {
        id: id?,
        description,
        on_unavailable,
        rule: rule?,
        limits,
    })
}

const RULE_KEYS: &[&str] = &[
    "any_of", "all_of", "not", "public", "jwt", "time", "ip", "origin", "wallet", "nft",
];

fn rule(cx: &mut Ctx, path: &str, v: &Value, depth: usize) -> Option<Rule> {
    if depth > MAX_DEPTH {
        cx.err(path, format!("rules nest deeper than {MAX_DEPTH} levels"));
        return None;
    }
    let m = object(cx, path, v)?;
    if m.len() != 1 {
        cx.err(
            path,
            format!(
                "a rule has exactly one of: {} (found {})",
                RULE_KEYS.join(", "),
                m.len()
            ),
        );
        // Still look inside, so that errors below are reported too.
    }
    let mut out = None;
    for (k, v) in m {
        let p = join(path, k);
        let r = match k.as_str() {
            "any_of" | "all_of" => {
                let Value::Array(items) = v else {
                    cx.err(&p, "expected a list of rules");
                    continue;
                };
                if items.is_empty() {
                    cx.err(&p, "must hold at least one rule");
                }
                let rules: Vec<Option<Rule>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, r)| rule(cx, &format!("{p}[{i}]"), r, depth + 1))
                    .collect();
                let rules: Option<Vec<Rule>> = rules.into_iter().collect();
                rules.map(|rs| {
                    if k == "any_of" {
                        Rule::AnyOf(rs)
                    } else {
                        Rule::AllOf(rs)
                    }
                })
            }
            "not" => rule(cx, &p, v, depth + 1).map(|r| Rule::Not(Box::new(r))),
            "public" => match v {
                Value::Bool(true) => Some(Rule::Cond(Condition::Public)),
                _ => {
                    cx.err(&p, "expected true");
                    None
                }
            },
            "jwt" => jwt(cx, &p, v).map(|j| Rule::Cond(Condition::Jwt(j))),
            "time" => time(cx, &p, v).map(|t| Rule::Cond(Condition::Time(t))),
            "ip" => ip(cx, &p, v).map(|c| Rule::Cond(Condition::Ip(c))),
            "origin" => origin(cx, &p, v).map(|o| Rule::Cond(Condition::Origin(o))),
            "wallet" => wallet(cx, &p, v).map(|w| Rule::Cond(Condition::Wallet(w))),
            "nft" => nft::nft(cx, &p, v).map(|n| Rule::Cond(Condition::Nft(n))),
            _ => {
                cx.err(
                    &p,
                    format!("unknown rule (expected one of: {})", RULE_KEYS.join(", ")),
                );
                None
            }
        };
        if out.is_none() {
            out = r;
        }
    }
    if m.len() == 1 { out } else { None }
}

fn jwt(cx: &mut Ctx, path: &str, v: &Value) -> Option<JwtCondition> {
    // `jwt: {}` is allowed: any valid token.
    let m = object(cx, path, v)?;
    unknown_keys(
        cx,
        path,
        m,
        &["issuer", "audience", "required_claims", "scope_claim"],
    );
    let mut j = JwtCondition {
        scope_claim: Some("sg_scope".to_owned()),
        ..JwtCondition::default()
    };
    if let Some(v) = m.get("issuer") {
        j.issuer = string(cx, &join(path, "issuer"), v);
    }
    if let Some(v) = m.get("audience") {
        j.audience = string(cx, &join(path, "audience"), v);
    }
    if let Some(v) = m.get("required_claims") {
        match v {
            Value::Object(c) => {
                for (k, cv) in c {
                    if cv.is_null() || cv.is_object() {
                        cx.err(
                            &format!("{path}.required_claims.{k}"),
                            "expected a string, number, boolean or list",
                        );
                    }
                }
                j.required_claims = c.clone();
            }
            _ => cx.err(
                &join(path, "required_claims"),
                "expected a mapping of claim to value",
            ),
        }
    }
    match m.get("scope_claim") {
        None => {}
        Some(Value::Null) => j.scope_claim = None,
        Some(v) => j.scope_claim = string(cx, &join(path, "scope_claim"), v),
    }
    Some(j)
}

fn timestamp(cx: &mut Ctx, path: &str, v: &Value) -> Option<std::time::SystemTime> {
    let s = string(cx, path, v)?;
    match humantime::parse_rfc3339_weak(&s) {
        Ok(t) => Some(t),
        Err(_) => {
            cx.err(
                path,
                format!("{s:?} is not an RFC 3339 time like 2027-01-01T00:00:00Z"),
            );
            None
        }
    }
}

fn time(cx: &mut Ctx, path: &str, v: &Value) -> Option<TimeWindow> {
    let m = object(cx, path, v)?;
    unknown_keys(cx, path, m, &["not_before", "not_after"]);
    let w = TimeWindow {
        not_before: m
            .get("not_before")
            .and_then(|v| timestamp(cx, &join(path, "not_before"), v)),
        not_after: m
            .get("not_after")
            .and_then(|v| timestamp(cx, &join(path, "not_after"), v)),
    };
    if !m.contains_key("not_before") && !m.contains_key("not_after") {
        cx.err(path, "set not_before, not_after or both");
    }
    if let (Some(a), Some(b)) = (w.not_before, w.not_after)
        && a > b
    {
        cx.err(&join(path, "not_after"), "is before not_before");
    }
    Some(w)
}

fn nets(cx: &mut Ctx, path: &str, v: &Value) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, s) in strings(cx, path, v).into_iter().enumerate() {
        // A bare address means a single host.
        let parsed = s
            .parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => out.push(n),
            Err(_) => cx.err(
                &format!("{path}[{i}]"),
                format!("{s:?} is not an address or CIDR like 10.0.0.0/8"),
            ),
        }
    }
    out
}

fn ip(cx: &mut Ctx, path: &str, v: &Value) -> Option<IpCondition> {
    let m = object(cx, path, v)?;
    unknown_keys(cx, path, m, &["allow", "deny"]);
    let c = IpCondition {
        allow: m
            .get("allow")
            .map(|v| nets(cx, &join(path, "allow"), v))
            .unwrap_or_default(),
        deny: m
            .get("deny")
            .map(|v| nets(cx, &join(path, "deny"), v))
            .unwrap_or_default(),
    };
    if !m.contains_key("allow") && !m.contains_key("deny") {
        cx.err(path, "set allow, deny or both");
    }
    Some(c)
}

fn origin(cx: &mut Ctx, path: &str, v: &Value) -> Option<OriginCondition> {
    let m = object(cx, path, v)?;
    unknown_keys(cx, path, m, &["allow"]);
    let p = join(path, "allow");
    let allow = match m.get("allow") {
        Some(v) => strings(cx, &p, v),
        None => {
            cx.err(&p, "required");
            Vec::new()
        }
    };
    for (i, o) in allow.iter().enumerate() {
        let host = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        let ok = host.is_some_and(|h| !h.is_empty() && !h.contains('/'));
        if !ok {
            cx.err(
                &format!("{p}[{i}]"),
                format!("{o:?} is not an origin like https://player.example.com"),
            );
        }
    }
    Some(OriginCondition { allow })
}

fn wallet(cx: &mut Ctx, path: &str, v: &Value) -> Option<WalletCondition> {
    let m = object(cx, path, v)?;
    unknown_keys(cx, path, m, &["issuer", "allow", "deny"]);
    let accounts = |cx: &mut Ctx, key: &str| {
        let p = join(path, key);
        let list = m.get(key).map(|v| strings(cx, &p, v)).unwrap_or_default();
        let mut out = Vec::with_capacity(list.len());
        for (i, a) in list.iter().enumerate() {
            match crate::address::Account::parse(a) {
                Ok(acc) => out.push(acc),
                Err(e) => cx.err(&format!("{p}[{i}]"), e.to_string()),
            }
        }
        out
    };
    let allow = accounts(cx, "allow");
    let deny = accounts(cx, "deny");
    let issuer = session_issuer(cx, path, m);
    Some(WalletCondition {
        issuer,
        allow,
        deny,
    })
}

/// The `issuer` of a `wallet` or `nft` condition: the edges' own sign-in unless named.
fn session_issuer(cx: &mut Ctx, path: &str, m: &Map<String, Value>) -> String {
    match m.get("issuer") {
        None => WALLET_ISSUER.to_owned(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            cx.err(&join(path, "issuer"), "a non-empty string");
            String::new()
        }
    }
}

mod nft;

pub use nft::{MAX_TOKEN_IDS, parse_token_id, token_id_text};

#[cfg(test)]
mod tests;
