//! The chain registry in the edge's config: `[edge.chains."<CAIP-2 id>"]`.
//!
//! ```toml
//! [edge.chains."eip155:1"]
//! confirmations = 2
//! poll_interval = "4s"
//! endpoints = [
//!   { name = "primary", url_file = "/run/secrets/rpc-primary", priority = 0, weight = 3 },
//!   { name = "backup", url = "https://rpc.example.net", priority = 1 },
//! ]
//! ```
//!
//! An endpoint's URL comes from `url`, or from a file (`url_file`, for secrets rendered by
//! Vault Agent or mounted by Kubernetes) or an environment variable (`url_env`), since
//! provider URLs often carry an API key. The URL is never logged nor exported: logs and
//! metrics use the endpoint's `name` (by default the URL's host and port).

use std::time::Duration;

use streamgate_policy::address::{ChainId, Namespace};

use streamgate_config::{self as reader, Errors, Fields};

/// Multicall3's address, the same on every chain it is deployed to.
pub const MULTICALL3: [u8; 20] = [
    0xca, 0x11, 0xbd, 0xe0, 0x59, 0x77, 0xb3, 0x63, 0x11, 0x67, 0x02, 0x88, 0x62, 0xbe, 0x2a, 0x17,
    0x39, 0x76, 0xca, 0x11,
];

/// A value that must not be printed: `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One RPC endpoint of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The name in logs and metrics.
    pub name: String,
    /// The URL (it may hold credentials).
    pub url: Secret,
    /// Lower is preferred; endpoints of the next priority are used when these fail.
    pub priority: u32,
    /// Share of calls among endpoints of the same priority.
    pub weight: u32,
}

/// One chain's RPC endpoints and the edge's use of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    /// The CAIP-2 id.
    pub id: ChainId,
    /// Its endpoints.
    pub endpoints: Vec<EndpointConfig>,
    /// Per attempt.
    pub timeout: Duration,
    /// A second endpoint is asked when the first has not answered after this long (zero:
    /// never hedge, only fail over on errors).
    pub hedge_after: Duration,
    /// Consecutive failures that open an endpoint's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit keeps the endpoint out before one trial call.
    pub breaker_cooldown: Duration,
    /// How long a "holds" answer is cached (revocation evicts it sooner on EVM chains).
    pub positive_ttl: Duration,
    /// How long a "does not hold" answer is cached.
    pub negative_ttl: Duration,
    /// Ownership answers cached (positive and negative each).
    pub cache_entries: u64,
    /// Blocks a Transfer log must be under before it revokes (EVM).
    pub confirmations: u64,
    /// How often the Transfer logs are polled (EVM).
    pub poll_interval: Duration,
    /// The most blocks one `eth_getLogs` call spans.
    pub max_log_range: u64,
    /// The Multicall3 contract that batches several reads into one `eth_call` (EVM).
    pub multicall3: [u8; 20],
}

impl ChainConfig {
    /// The defaults for `id`, with no endpoints.
    pub fn new(id: ChainId) -> Self {
        Self {
            id,
            endpoints: Vec::new(),
            timeout: Duration::from_secs(2),
            hedge_after: Duration::from_millis(300),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(10),
            positive_ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(30),
            cache_entries: 1_000_000,
            confirmations: 2,
            poll_interval: Duration::from_secs(2),
            max_log_range: 1000,
            multicall3: MULTICALL3,
        }
    }
}

/// Reads `[edge.chains]`.
/// Reads `[<section>.chains."<CAIP-2 id>"]` tables from `e`, recording every problem.
pub fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Vec<ChainConfig> {
    use reader::*;
    let mut out: Vec<ChainConfig> = Vec::new();
    for (name, mut c) in e.named_tables(errs, "chains") {
        let cpath = c.path().to_owned();
        let id = match ChainId::parse(&name) {
            Ok(id) => id,
            Err(m) => {
                errs.push(&cpath, m);
                continue;
            }
        };
        let d = ChainConfig::new(id.clone());
        let mut endpoints = Vec::new();
        for mut ep in c.table_list(errs, "endpoints") {
            let ep_path = ep.path().to_owned();
            let url = ep.opt(errs, "url", string);
            let file = ep.opt(errs, "url_file", path);
            let env = ep.opt(errs, "url_env", string);
            let url = match (url, file, env) {
                (Some(u), None, None) => Some(u),
                (None, Some(f), None) => match std::fs::read_to_string(&f) {
                    Ok(s) => Some(s.trim().to_owned()),
                    Err(err) => {
                        errs.push(
                            format!("{ep_path}.url_file"),
                            format!("{}: {err}", f.display()),
                        );
                        None
                    }
                },
                (None, None, Some(v)) => match std::env::var(&v) {
                    Ok(s) => Some(s.trim().to_owned()),
                    Err(_) => {
                        errs.push(format!("{ep_path}.url_env"), format!("{v} is not set"));
                        None
                    }
                },
                _ => {
                    errs.push(&ep_path, "needs exactly one of url, url_file, url_env");
                    None
                }
            };
            // The message never quotes the URL: it may hold an API key.
            let parsed = url.as_deref().map(reqwest::Url::parse);
            let host = match &parsed {
                Some(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(match u.port() {
                        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                        None => u.host_str().unwrap_or_default().to_owned(),
                    })
                }
                Some(_) => {
                    errs.push(
                        &ep_path,
                        "the URL is not an http:// or https:// URL with a host",
                    );
                    None
                }
                None => None,
            };
            let name = ep.opt(errs, "name", string);
            let priority = ep.get(errs, "priority", 0, int_in(0, 1000)) as u32;
            let weight = ep.get(errs, "weight", 1, int_in(1, 1000)) as u32;
            ep.finish(errs);
            if let (Some(url), Some(host)) = (url, host) {
                endpoints.push(EndpointConfig {
                    name: name.unwrap_or(host),
                    url: Secret(url),
                    priority,
                    weight,
                });
            }
        }
        if endpoints.is_empty() {
            errs.push(
                format!("{cpath}.endpoints"),
                "at least one endpoint is needed",
            );
        }
        for (i, a) in endpoints.iter().enumerate() {
            if endpoints[..i].iter().any(|b| b.name == a.name) {
                errs.push(
                    format!("{cpath}.endpoints[{i}].name"),
                    format!("{:?} names another endpoint too", a.name),
                );
            }
        }
        let positive_ttl = c.get(errs, "positive_ttl", d.positive_ttl, duration);
        let negative_ttl = c.get(errs, "negative_ttl", d.negative_ttl, duration);
        let multicall3 = match c.opt(errs, "multicall3", string) {
            None => d.multicall3,
            Some(_) if id.namespace == Namespace::Solana => {
                errs.push(
                    format!("{cpath}.multicall3"),
                    "only EVM chains have Multicall3",
                );
                d.multicall3
            }
            Some(s) => streamgate_policy::address::parse_evm(&s).unwrap_or_else(|m| {
                errs.push(format!("{cpath}.multicall3"), m);
                d.multicall3
            }),
        };
        let cfg = ChainConfig {
            endpoints,
            timeout: c.get(errs, "timeout", d.timeout, duration),
            hedge_after: c.get(errs, "hedge_after", d.hedge_after, duration),
            breaker_failures: c.get(
                errs,
                "breaker_failures",
                u64::from(d.breaker_failures),
                int_in(1, 1000),
            ) as u32,
            breaker_cooldown: c.get(errs, "breaker_cooldown", d.breaker_cooldown, duration),
            positive_ttl,
            negative_ttl,
            cache_entries: c.get(
                errs,
                "cache_entries",
                d.cache_entries,
                int_in(1, 100_000_000),
            ),
            confirmations: c.get(errs, "confirmations", d.confirmations, int_in(0, 1000)),
            poll_interval: c.get(errs, "poll_interval", d.poll_interval, duration),
            max_log_range: c.get(errs, "max_log_range", d.max_log_range, int_in(1, 1_000_000)),
            multicall3,
            id,
        };
        for (field, v) in [
            ("timeout", cfg.timeout),
            ("poll_interval", cfg.poll_interval),
            ("positive_ttl", cfg.positive_ttl),
            ("negative_ttl", cfg.negative_ttl),
        ] {
            if v.is_zero() {
                errs.push(format!("{cpath}.{field}"), "must be more than zero");
            }
        }
        c.finish(errs);
        out.push(cfg);
    }
    out
}
