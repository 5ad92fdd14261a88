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

use super::config::ChainConfig;

/// The largest response body read from an endpoint.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Why a call did not produce a result.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// No endpoint produced an answer.
    #[error("every endpoint failed: {0}")]
    Unavailable(String),
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

/// One attempt's failure, for the summary in [`RpcError::Unavailable`].
enum Attempt {
    Ok(Value),
    Rejected(RpcError),
    Failed(String),
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

    fn failed(&self, e: &Endpoint, why: &str) {
        let n = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let was_trial = e.trial.swap(false, Ordering::AcqRel);
        if n >= self.breaker_failures || was_trial {
            let until = self.now_ms() + self.breaker_cooldown.as_millis() as u64;
            // A failed trial reopens the circuit: counted as an opening too.
            if e.open_until.swap(until.max(1), Ordering::AcqRel) == 0 || was_trial {
                e.opens.inc();
                tracing::warn!(chain = %self.chain, endpoint = %e.name, failures = n, error = why,
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
            return Err(RpcError::Unavailable(format!(
                "{}: every endpoint's circuit is open",
                self.chain
            )));
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
        let mut errors: Vec<String> = Vec::new();
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
                return Err(RpcError::Unavailable(format!(
                    "{}: {}",
                    self.chain,
                    errors.join("; ")
                )));
            };
            match res {
                Attempt::Ok(v) => return Ok(v),
                Attempt::Rejected(e) => return Err(e),
                Attempt::Failed(why) => {
                    errors.push(format!("{}: {why}", self.endpoints[i].name));
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
                return Attempt::Failed("circuit half-open, its trial call is in flight".into());
            }
            // If this attempt is dropped (it lost a hedge), the next caller may try.
            trial = Some(TrialGuard(&e.trial));
        }
        let t0 = Instant::now();
        let res = tokio::time::timeout(self.timeout, self.post(e, body)).await;
        e.latency.observe(t0.elapsed().as_secs_f64());
        let out = match res {
            Err(_) => Attempt::Failed(format!("no answer within {:?}", self.timeout)),
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

    async fn post(&self, e: &Endpoint, body: bytes::Bytes) -> Result<Value, String> {
        let mut resp = self
            .http
            .post(e.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            // The error's Display may hold the URL (and an API key in it): strip it.
            .map_err(|err| err.without_url().to_string())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|err| err.without_url().to_string())?
        {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(format!("response over {MAX_RESPONSE_BYTES} bytes"));
            }
            buf.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&buf).map_err(|err| format!("not JSON: {err}"))
    }
}

/// Frees an endpoint's half-open trial slot when its attempt ends without settling it.
struct TrialGuard<'a>(&'a AtomicBool);

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A JSON-RPC response: its result, the chain's refusal, or garbage.
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
        let data = err.get("data").and_then(|d| match d {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("data").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        });
        // Code 3 is EIP-1474's "execution reverted"; many nodes say it in the message only.
        if code == 3 || message.to_ascii_lowercase().contains("revert") {
            return Attempt::Rejected(RpcError::Rejected {
                code,
                message,
                data,
            });
        }
        return Attempt::Failed(format!("JSON-RPC error {code}: {message}"));
    }
    match v {
        Value::Object(mut m) if m.get("jsonrpc").and_then(Value::as_str) == Some("2.0") => {
            match m.remove("result") {
                Some(r) => Attempt::Ok(r),
                None => Attempt::Failed("a JSON-RPC response without a result".into()),
            }
        }
        _ => Attempt::Failed("not a JSON-RPC 2.0 response".into()),
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
        let revert2 = classify(json!({"jsonrpc": "2.0", "id": 1,
            "error": {"code": -32000, "message": "VM Exception: reverted with custom error"}}));
        assert!(matches!(revert2, Attempt::Rejected(_)));
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
}
