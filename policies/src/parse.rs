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

struct Ctx {
    errors: Vec<PolicyError>,
}

impl Ctx {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(PolicyError {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

fn join(path: &str, key: &str) -> String {
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
        Value::Object(m)
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

/// The most ERC-721 ids or ERC-1155 ids one condition may list.
pub const MAX_TOKEN_IDS: usize = 64;

/// A token id as decimal text.
pub fn token_id_text(id: &TokenId) -> String {
    // Repeated division of the big-endian number by 10.
    let mut n = *id;
    let mut digits = Vec::new();
    loop {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
        if n.iter().all(|&b| b == 0) {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

/// Parses a token id: a non-negative integer, as a JSON number, decimal text or `0x` hex,
/// below 2^256.
pub fn parse_token_id(v: &Value) -> Result<TokenId, String> {
    let text = match v {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()).ok_or_else(|| {
            format!("{n} is not a non-negative integer (write big ids as strings)")
        })?,
        Value::String(s) => s.clone(),
        _ => return Err("a token id is an integer or a string of digits".into()),
    };
    let mut out = [0u8; 32];
    if let Some(hex) = text.strip_prefix("0x") {
        if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{text:?}: 0x and 1 to 64 hex digits"));
        }
        let padded = format!("{hex:0>64}");
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        return Ok(out);
    }
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a token id (decimal digits or 0x hex)"
        ));
    }
    for d in text.bytes() {
        // out = out * 10 + d, failing on overflow past 2^256.
        let mut carry = u32::from(d - b'0');
        for b in out.iter_mut().rev() {
            let cur = u32::from(*b) * 10 + carry;
            *b = cur as u8;
            carry = cur >> 8;
        }
        if carry != 0 {
            return Err(format!("{text:?} does not fit in 256 bits"));
        }
    }
    Ok(out)
}

fn object<'v>(cx: &mut Ctx, path: &str, v: &'v Value) -> Option<&'v Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => {
            cx.err(path, "expected a mapping");
            None
        }
    }
}

fn unknown_keys(cx: &mut Ctx, path: &str, m: &Map<String, Value>, known: &[&str]) {
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
    unknown_keys(cx, "", m, &["id", "description", "on_unavailable", "rule"]);
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
    Some(Policy {
        id: id?,
        description,
        on_unavailable,
        rule: rule?,
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
            "nft" => nft(cx, &p, v).map(|n| Rule::Cond(Condition::Nft(n))),
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

fn nft(cx: &mut Ctx, path: &str, v: &Value) -> Option<NftCondition> {
    let m = object(cx, path, v)?;
    unknown_keys(
        cx,
        path,
        m,
        &[
            "chain",
            "standard",
            "contract",
            "collection",
            "mint",
            "token_ids",
            "min_balance",
            "issuer",
        ],
    );
    let chain = match m.get("chain") {
        None => {
            cx.err(
                &join(path, "chain"),
                "required (a CAIP-2 id such as eip155:1)",
            );
            None
        }
        Some(v) => string(cx, &join(path, "chain"), v).and_then(|s| {
            crate::address::ChainId::parse(&s)
                .map_err(|e| cx.err(&join(path, "chain"), e.to_string()))
                .ok()
        }),
    };
    let standard = match m.get("standard").map(|v| (v, v.as_str())) {
        None => {
            cx.err(
                &join(path, "standard"),
                "required: erc721, erc1155 or metaplex",
            );
            None
        }
        Some((_, Some("erc721"))) => Some(NftStandard::Erc721),
        Some((_, Some("erc1155"))) => Some(NftStandard::Erc1155),
        Some((_, Some("metaplex"))) => Some(NftStandard::Metaplex),
        Some((v, _)) => {
            cx.err(
                &join(path, "standard"),
                format!("{v} is not one of erc721, erc1155, metaplex"),
            );
            None
        }
    };
    use crate::address::Namespace;
    if let (Some(c), Some(s)) = (&chain, standard) {
        let want = if s == NftStandard::Metaplex {
            Namespace::Solana
        } else {
            Namespace::Eip155
        };
        if c.namespace != want {
            cx.err(
                &join(path, "chain"),
                format!(
                    "{} tokens live on {} chains, not {c}",
                    s.as_str(),
                    if want == Namespace::Solana {
                        "solana"
                    } else {
                        "eip155"
                    }
                ),
            );
        }
    }
    let present: Vec<&str> = ["contract", "collection", "mint"]
        .into_iter()
        .filter(|k| m.contains_key(*k))
        .collect();
    let target = match (standard, present.as_slice()) {
        (Some(NftStandard::Erc721 | NftStandard::Erc1155), ["contract"]) => {
            let p = join(path, "contract");
            string(cx, &p, &m["contract"]).and_then(|s| {
                crate::address::parse_evm(&s)
                    .map(NftTarget::Contract)
                    .map_err(|e| cx.err(&p, e.to_string()))
                    .ok()
            })
        }
        (Some(NftStandard::Metaplex), [k @ ("collection" | "mint")]) => {
            let p = join(path, k);
            string(cx, &p, &m[*k]).and_then(|s| {
                crate::address::parse_solana(&s)
                    .map(|b| {
                        if *k == "mint" {
                            NftTarget::Mint(b)
                        } else {
                            NftTarget::Collection(b)
                        }
                    })
                    .map_err(|e| cx.err(&p, e.to_string()))
                    .ok()
            })
        }
        (Some(NftStandard::Metaplex), _) => {
            cx.err(
                path,
                "a metaplex condition names exactly one of collection, mint",
            );
            None
        }
        (Some(_), _) => {
            cx.err(
                path,
                "an erc721 or erc1155 condition names its contract (and only that)",
            );
            None
        }
        (None, _) => None,
    };
    let mut token_ids = Vec::new();
    if let Some(v) = m.get("token_ids") {
        let p = join(path, "token_ids");
        match v {
            Value::Array(items) if items.len() <= MAX_TOKEN_IDS => {
                for (i, item) in items.iter().enumerate() {
                    match parse_token_id(item) {
                        Ok(id) if !token_ids.contains(&id) => token_ids.push(id),
                        Ok(_) => cx.err(&format!("{p}[{i}]"), "listed twice"),
                        Err(e) => cx.err(&format!("{p}[{i}]"), e),
                    }
                }
            }
            Value::Array(_) => cx.err(&p, format!("at most {MAX_TOKEN_IDS} ids")),
            _ => cx.err(&p, "expected a list of token ids"),
        }
        if standard == Some(NftStandard::Metaplex) {
            cx.err(
                &p,
                "metaplex conditions take no token ids (name a mint instead)",
            );
        }
    }
    if standard == Some(NftStandard::Erc1155) && token_ids.is_empty() {
        cx.err(
            &join(path, "token_ids"),
            "erc1155 needs at least one token id",
        );
    }
    let min_balance = match m.get("min_balance") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                cx.err(&join(path, "min_balance"), "an integer of at least 1");
                1
            }
        },
    };
    if standard == Some(NftStandard::Metaplex) && min_balance != 1 {
        cx.err(
            &join(path, "min_balance"),
            "a metaplex NFT has a supply of 1",
        );
    }
    if standard == Some(NftStandard::Erc721)
        && !token_ids.is_empty()
        && min_balance > token_ids.len() as u64
    {
        cx.err(
            &join(path, "min_balance"),
            format!("asks for {min_balance} of {} listed ids", token_ids.len()),
        );
    }
    let issuer = session_issuer(cx, path, m);
    Some(NftCondition {
        chain: chain?,
        standard: standard?,
        target: target?,
        token_ids,
        min_balance,
        issuer,
    })
}

#[cfg(test)]
mod tests;
