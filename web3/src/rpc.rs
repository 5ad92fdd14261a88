//! A JSON-RPC client over several endpoints of one chain: priority and weight, a circuit
//! breaker per endpoint, a hedged second request when the first is slow, and failover on
//! errors, timeouts and garbage. Per-endpoint calls, errors and latency go to Prometheus.
//!
//! An answer that is the chain's own (a reverted `eth_call`) is final: it is returned as
//! [`RpcError::Rejected`] and no other endpoint is asked. Anything else that goes wrong
//! with an endpoint (connection, HTTP status, a body that is not a JSON-RPC response, a
//! JSON-RPC error such as a rate limit) counts against that endpoint and the next is tried.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use serde_json::{Value, json};

use crate::config::ChainConfig;

/// The largest response body read from an endpoint.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Why a call did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The chain answered with an error of its own (a revert): final, not an outage.
    #[error("rejected by the chain: {message} (code {code})")]
    Rejected {
        /// The JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
        /// Its `data` (revert data), when given.
        data: Option<String>,
    },
    /// No endpoint produced an answer; what each one tried got.
    #[error("{chain}: every endpoint failed: {}", Attempts(.attempts))]
    Unavailable {
        /// The chain (CAIP-2).
        chain: String,
        /// Each attempt's failure, in the order they ended.
        attempts: Vec<AttemptError>,
    },
    /// An endpoint answered, but not with what the method or the ABI says it returns.
    #[error("malformed answer to {method}: {what}")]
    Malformed {
        /// The JSON-RPC method.
        method: &'static str,
        /// What was wrong with it.
        what: Malformed,
    },
}

/// What was wrong with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// A field that must be `0x` hex is not.
    #[error("a field is not 0x hex")]
    Hex,
    /// A quantity is not a hex number that fits 64 bits.
    #[error("a quantity is not a 64-bit hex number")]
    Quantity,
    /// A list or object is missing or has another shape.
    #[error("{0}")]
    Shape(&'static str),
    /// ABI-encoded return data does not decode.
    #[error("return data does not decode as {0}")]
    Abi(&'static str),
    /// A batch answered a different number of calls than it was asked.
    #[error("{got} results for {want} calls")]
    Count {
        /// Calls made.
        want: usize,
        /// Results returned.
        got: usize,
    },
    /// Multicall3's `aggregate3` reverted, which it never does when it is deployed.
    #[error("the Multicall3 call reverted (is it deployed on this chain?)")]
    MulticallReverted,
}

impl Malformed {
    /// The error for `method`.
    pub fn of(self, method: &'static str) -> RpcError {
        RpcError::Malformed { method, what: self }
    }
}

/// Codes providers answer when an `eth_getLogs` range or result set is over their cap:
/// EIP-1474's "limit exceeded" (Infura), "invalid params" (Alchemy), and QuickNode's own.
pub const RANGE_LIMIT_CODES: [i64; 3] = [-32005, -32602, -32614];

impl RpcError {
    /// Whether the call failed because some endpoint capped the range or the size of the
    /// answer (by JSON-RPC error code, see [`RANGE_LIMIT_CODES`]): a smaller request may
    /// pass.
    pub fn is_range_limit(&self) -> bool {
        match self {
            Self::Unavailable { attempts, .. } => attempts.iter().any(|a| {
                matches!(a.failure, Failure::JsonRpc { code, .. } if RANGE_LIMIT_CODES.contains(&code))
            }),
            Self::Rejected { .. } | Self::Malformed { .. } => false,
        }
    }
}

/// One endpoint's failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint}: {failure}")]
pub struct AttemptError {
    /// The endpoint's name (never its URL, which may hold an API key).
    pub endpoint: String,
    /// What went wrong.
    pub failure: Failure,
}

/// What went wrong with one endpoint.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// No answer within the attempt timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed (the text has the URL removed).
    #[error("{0}")]
    Transport(String),
    /// An HTTP status other than 2xx.
    #[error("HTTP {0}")]
    Status(u16),
    /// The body was larger than [`MAX_RESPONSE_BYTES`].
    #[error("response over {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The body is not JSON.
    #[error("not JSON")]
    NotJson,
    /// The body is JSON, but not a JSON-RPC 2.0 response with a result.
    #[error("not a JSON-RPC 2.0 response with a result")]
    NotJsonRpc,
    /// A JSON-RPC error that is the endpoint's, not the chain's (rate limits, caps).
    #[error("JSON-RPC error {code}: {message}")]
    JsonRpc {
        /// The code.
        code: i64,
        /// The message (at most 200 characters).
        message: String,
    },
    /// The endpoint's circuit is half-open and its one trial call is in flight.
    #[error("circuit half-open, its trial call is in flight")]
    TrialInFlight,
    /// Every endpoint's circuit was open: nothing was tried.
    #[error("circuit open")]
    CircuitOpen,
}

/// Displays attempts as `a: why; b: why`.
struct Attempts<'a>(&'a [AttemptError]);

impl std::fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Metrics of one chain's endpoints, registered once.
#[derive(Clone)]
pub(crate) struct RpcMetrics {
    calls: IntCounterVec,
    latency: HistogramVec,
    hedged: IntCounterVec,
    breaker_opens: IntCounterVec,
}

impl RpcMetrics {
    pub(crate) fn register(registry: &prometheus::Registry) -> Self {
        let calls = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_rpc_calls_total",
                "JSON-RPC calls by chain, endpoint and result (ok, rejected, error)",
            ),
            &["chain", "endpoint", "result"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "streamgate_edge_rpc_seconds",
                "JSON-RPC call latency by chain and endpoint",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["chain", "endpoint"],
        )
        .expect("valid metric");
        let hedged = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_rpc_hedged_total",
                "Calls that asked a second endpoint because the first was slow",
            ),
            &["chain"],
        )
        .expect("valid metric");
        let breaker_opens = IntCounterVec::new(
            Opts::new(
                "streamgate_edge_rpc_breaker_opens_total",
                "Times an endpoint's circuit opened",
            ),
            &["chain", "endpoint"],
        )
        .expect("valid metric");
        // Registering twice (a second edge in one process) fails harmlessly.
        let _ = registry.register(Box::new(calls.clone()));
        let _ = registry.register(Box::new(latency.clone()));
        let _ = registry.register(Box::new(hedged.clone()));
        let _ = registry.register(Box::new(breaker_opens.clone()));
        Self {
            calls,
            latency,
            hedged,
            breaker_opens,
        }
    }
}

struct Endpoint {
    name: String,
    url: reqwest::Url,
    priority: u32,
    weight: u32,
    /// Consecutive failures.
    failures: AtomicU32,
    /// While `now_ms < open_until`, the circuit is open.
    open_until: AtomicU64,
    /// One trial call is in flight after the cooldown.
    trial: AtomicBool,
    ok: IntCounter,
    rejected: IntCounter,
    error: IntCounter,
    latency: Histogram,
    opens: IntCounter,
}

/// The JSON-RPC client of one chain.
pub struct Rpc {
    chain: String,
    endpoints: Vec<Endpoint>,
    http: reqwest::Client,
    timeout: Duration,
    hedge_after: Duration,
    breaker_failures: u32,
    breaker_cooldown: Duration,
    epoch: Instant,
    ids: AtomicU64,
    rng: AtomicU64,
    hedged: IntCounter,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("chain", &self.chain)
            .field(
                "endpoints",
                &self.endpoints.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// One attempt's outcome.
enum Attempt {
    Ok(Value),
    Rejected(RpcError),
    Failed(Failure),
}

impl Rpc {
    /// A client for `cfg`'s endpoints (URLs were validated with the config).
    pub(crate) fn new(cfg: &ChainConfig, metrics: &RpcMetrics) -> Self {
        let chain = cfg.id.to_string();
        let endpoints = cfg
            .endpoints
            .iter()
            .filter_map(|e| {
                let url = reqwest::Url::parse(&e.url.0).ok()?;
                let l = |result: &str| metrics.calls.with_label_values(&[&chain, &e.name, result]);
                Some(Endpoint {
                    name: e.name.clone(),
                    url,
                    priority: e.priority,
                    weight: e.weight,
                    failures: AtomicU32::new(0),
                    open_until: AtomicU64::new(0),
                    trial: AtomicBool::new(false),
                    ok: l("ok"),
                    rejected: l("rejected"),
                    error: l("error"),
                    latency: metrics.latency.with_label_values(&[&chain, &e.name]),
                    opens: metrics.breaker_opens.with_label_values(&[&chain, &e.name]),
                })
            })
            .collect();
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(cfg.timeout)
            .build()
            .expect("a default HTTP client builds");
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Self {
            hedged: metrics.hedged.with_label_values(&[&chain]),
            chain,
            endpoints,
            http,
            timeout: cfg.timeout,
            hedge_after: cfg.hedge_after,
            breaker_failures: cfg.breaker_failures,
            breaker_cooldown: cfg.breaker_cooldown,
            epoch: Instant::now(),
            ids: AtomicU64::new(1),
            rng: AtomicU64::new(seed),
        }
    }

    /// The chain's CAIP-2 id.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn random(&self) -> u64 {
        // xorshift64*, good enough to spread calls by weight.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Whether the endpoint may be tried: its circuit is closed, or open past the cooldown
    /// (half-open: [`Rpc::attempt`] then lets one trial call through).
    fn admits(&self, e: &Endpoint) -> bool {
        let until = e.open_until.load(Ordering::Acquire);
        until == 0 || self.now_ms() >= until
    }

    fn succeeded(&self, e: &Endpoint) {
        e.failures.store(0, Ordering::Relaxed);
        if e.open_until.load(Ordering::Relaxed) != 0 {
            e.open_until.store(0, Ordering::Release);
            e.trial.store(false, Ordering::Release);
            tracing::info!(chain = %self.chain, endpoint = %e.name, "RPC endpoint recovered; circuit closed");
        }
    }

    fn failed(&self, e: &Endpoint, why: &Failure) {
        let n = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let was_trial = e.trial.swap(false, Ordering::AcqRel);
        if n >= self.breaker_failures || was_trial {
            let until = self.now_ms() + self.breaker_cooldown.as_millis() as u64;
            // A failed trial reopens the circuit: counted as an opening too.
            if e.open_until.swap(until.max(1), Ordering::AcqRel) == 0 || was_trial {
                e.opens.inc();
                tracing::warn!(chain = %self.chain, endpoint = %e.name, failures = n, error = %why,
                    "RPC endpoint failing; circuit open for {:?}", self.breaker_cooldown);
            }
        }
    }

    /// The endpoints to try, best first: by priority, and within one priority in a random
    /// order drawn by weight. Endpoints whose circuit is open (within the cooldown) are
    /// left out.
    fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.endpoints.len())
            .filter(|&i| self.admits(&self.endpoints[i]))
            .collect();
        // Weighted shuffle: sort by priority, then by -ln(u)/w (exponential keys).
        let mut keys: Vec<(u32, f64, usize)> = idx
            .iter()
            .map(|&i| {
                let e = &self.endpoints[i];
                let u = ((self.random() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                (e.priority, -u.ln() / f64::from(e.weight), i)
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        idx.clear();
        idx.extend(keys.into_iter().map(|k| k.2));
        idx
    }

    /// Calls `method` with `params`; see the module docs for what is retried where.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let order = self.order();
        if order.is_empty() {
            return Err(RpcError::Unavailable {
                chain: self.chain.clone(),
                attempts: self
                    .endpoints
                    .iter()
                    .map(|e| AttemptError {
                        endpoint: e.name.clone(),
                        failure: Failure::CircuitOpen,
                    })
                    .collect(),
            });
        }
        // Shared by every attempt without copying.
        let body = bytes::Bytes::from(
            json!({
                "jsonrpc": "2.0",
                "id": self.ids.fetch_add(1, Ordering::Relaxed),
                "method": method,
                "params": params,
            })
            .to_string(),
        );
        let mut next = 0;
        let mut running = FuturesUnordered::new();
        let mut errors: Vec<AttemptError> = Vec::new();
        let launch = |i: usize| {
            let body = body.clone();
            async move { (i, self.attempt(&self.endpoints[i], body).await) }
        };
        running.push(launch(order[next]));
        next += 1;
        loop {
            let hedge = next < order.len() && !self.hedge_after.is_zero();
            let res = if hedge {
                tokio::select! {
                    r = running.next() => r,
                    () = tokio::time::sleep(self.hedge_after) => {
                        self.hedged.inc();
                        running.push(launch(order[next]));
                        next += 1;
                        continue;
                    }
                }
            } else {
                running.next().await
            };
            let Some((i, res)) = res else {
                return Err(RpcError::Unavailable {
                    chain: self.chain.clone(),
                    attempts: errors,
                });
            };
            match res {
                Attempt::Ok(v) => return Ok(v),
                Attempt::Rejected(e) => return Err(e),
                Attempt::Failed(failure) => {
                    errors.push(AttemptError {
                        endpoint: self.endpoints[i].name.clone(),
                        failure,
                    });
                    if next < order.len() {
                        running.push(launch(order[next]));
                        next += 1;
                    }
                }
            }
        }
    }

    async fn attempt(&self, e: &Endpoint, body: bytes::Bytes) -> Attempt {
        // Half-open: only one trial call at a time; the others skip this endpoint.
        let mut trial = None;
        if e.open_until.load(Ordering::Acquire) != 0 {
            if e.trial
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return Attempt::Failed(Failure::TrialInFlight);
            }
            // If this attempt is dropped (it lost a hedge), the next caller may try.
            trial = Some(TrialGuard(&e.trial));
        }
        let t0 = Instant::now();
        let res = tokio::time::timeout(self.timeout, self.post(e, body)).await;
        e.latency.observe(t0.elapsed().as_secs_f64());
        let out = match res {
            Err(_) => Attempt::Failed(Failure::Timeout(self.timeout)),
            Ok(Err(why)) => Attempt::Failed(why),
            Ok(Ok(v)) => classify(v),
        };
        match &out {
            Attempt::Ok(_) => {
                e.ok.inc();
                self.succeeded(e);
            }
            Attempt::Rejected(_) => {
                e.rejected.inc();
                self.succeeded(e);
            }
            Attempt::Failed(why) => {
                e.error.inc();
                tracing::debug!(chain = %self.chain, endpoint = %e.name, error = %why, "RPC call failed");
                self.failed(e, why);
            }
        }
        // `succeeded` and `failed` settled the trial.
        std::mem::forget(trial);
        out
    }

    async fn post(&self, e: &Endpoint, body: bytes::Bytes) -> Result<Value, Failure> {
        // The error's Display may hold the URL (and an API key in it): strip it.
        let transport = |err: reqwest::Error| Failure::Transport(err.without_url().to_string());
        let mut resp = self
            .http
            .post(e.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Failure::Status(status.as_u16()));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Failure::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&buf).map_err(|_| Failure::NotJson)
    }
}

/// Frees an endpoint's half-open trial slot when its attempt ends without settling it.
struct TrialGuard<'a>(&'a AtomicBool);

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Whether a JSON-RPC error object carries revert data: a hex string in `data`, or in
/// `data.data` (Hardhat), the way nodes return a reverted call's output.
fn revert_data(err: &Value) -> Option<String> {
    let d = match err.get("data")? {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("data")?.as_str()?,
        _ => return None,
    };
    let hex = d.strip_prefix("0x")?;
    (hex.len().is_multiple_of(2) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| d.to_owned())
}

/// EIP-1474's code for a reverted execution (geth and most nodes).
const EXECUTION_REVERTED: i64 = 3;

/// A JSON-RPC response: its result, the chain's refusal, or the endpoint's failure. A
/// refusal is recognised by its code ([`EXECUTION_REVERTED`]) or by the revert data it
/// carries, never by the wording of its message.
fn classify(v: Value) -> Attempt {
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect::<String>();
        let data = revert_data(err);
        if code == EXECUTION_REVERTED || data.is_some() {
            return Attempt::Rejected(RpcError::Rejected {
                code,
                message,
                data,
            });
        }
        return Attempt::Failed(Failure::JsonRpc { code, message });
    }
    match v {
        Value::Object(mut m) if m.get("jsonrpc").and_then(Value::as_str) == Some("2.0") => {
            match m.remove("result") {
                Some(r) => Attempt::Ok(r),
                None => Attempt::Failed(Failure::NotJsonRpc),
            }
        }
        _ => Attempt::Failed(Failure::NotJsonRpc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified() {
        let ok = classify(json!({"jsonrpc": "2.0", "id": 1, "result": "0x01"}));
        assert!(matches!(ok, Attempt::Ok(v) if v == "0x01"));
        // A revert is the chain's answer.
        let revert = classify(json!({"jsonrpc": "2.0", "id": 1,
            "error": {"code": 3, "message": "execution reverted", "data": "0x7e273289"}}));
        assert!(
            matches!(revert, Attempt::Rejected(RpcError::Rejected { data: Some(d), .. }) if d == "0x7e273289")
        );
        // Hardhat: an internal-error code, with the revert data nested.
        let revert2 = classify(json!({"jsonrpc": "2.0", "id": 1,
            "error": {"code": -32603, "message": "Error: VM Exception while processing transaction",
                      "data": {"message": "reverted", "data": "0x7e273289"}}}));
        assert!(matches!(revert2, Attempt::Rejected(_)));
        // The word "revert" in a message proves nothing: no code, no data, not a refusal.
        let worded = classify(json!({"jsonrpc": "2.0", "id": 1,
            "error": {"code": -32000, "message": "node will revert to archive mode"}}));
        assert!(matches!(
            worded,
            Attempt::Failed(Failure::JsonRpc { code: -32000, .. })
        ));
        // Rate limits, wrong versions and missing results are the endpoint's failures.
        for v in [
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "rate limited"}}),
            json!({"jsonrpc": "1.0", "id": 1, "result": "0x"}),
            json!({"jsonrpc": "2.0", "id": 1}),
            json!(["not", "an", "object"]),
            json!("<html>"),
        ] {
            assert!(matches!(classify(v.clone()), Attempt::Failed(_)), "{v}");
        }
    }

    #[test]
    fn range_caps_are_recognised_by_code() {
        let unavailable = |failures: Vec<Failure>| RpcError::Unavailable {
            chain: "eip155:1".into(),
            attempts: failures
                .into_iter()
                .map(|failure| AttemptError {
                    endpoint: "e".into(),
                    failure,
                })
                .collect(),
        };
        for code in RANGE_LIMIT_CODES {
            let e = unavailable(vec![
                Failure::Status(503),
                Failure::JsonRpc {
                    code,
                    message: "whatever the provider says".into(),
                },
            ]);
            assert!(e.is_range_limit(), "{code}");
        }
        // Text that looks like a cap, under another code, is not one.
        let e = unavailable(vec![Failure::JsonRpc {
            code: -32000,
            message: "block range too large".into(),
        }]);
        assert!(!e.is_range_limit());
        assert!(!unavailable(vec![Failure::Timeout(Duration::from_secs(2))]).is_range_limit());
        let shown = unavailable(vec![Failure::Status(503), Failure::NotJson]).to_string();
        assert_eq!(
            shown,
            "eip155:1: every endpoint failed: e: HTTP 503; e: not JSON"
        );
    }
}
