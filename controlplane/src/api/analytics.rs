//! `AnalyticsService`: the QoE per asset from the CMCD players sent, summed over the edges.
//!
//! Each edge keeps its aggregates since it started under
//! `/streamgate/analytics/v1/<edge-id>` (a lease: a dead edge's figures go with it):
//! `{"v": 1, "assets": {"<id>": {"sessions", "requests", "starved", "startup_s",
//! "bitrate_kbps", "throughput_kbps"}}}`, each histogram `{"le": [...], "counts":
//! [cumulative, per le], "count", "sum"}`. Histograms are summed bucket by bucket when their
//! bounds agree; quantiles are interpolated inside a bucket, as Prometheus'
//! `histogram_quantile` does.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::{caller, check_id, status};
use crate::store::{ANALYTICS_PREFIX, Store};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

/// A histogram summed over edges.
#[derive(Debug, Clone, Default, PartialEq)]
struct Hist {
    le: Vec<f64>,
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Hist {
    fn read(v: &Value) -> Result<Self, String> {
        let nums = |k: &str| -> Result<&Vec<Value>, String> {
            v[k].as_array().ok_or(format!("no array {k:?}"))
        };
        let le = nums("le")?
            .iter()
            .map(|x| x.as_f64().ok_or("a bound is not a number"))
            .collect::<Result<Vec<_>, _>>()?;
        let counts = nums("counts")?
            .iter()
            .map(|x| x.as_u64().ok_or("a count is not a whole number"))
            .collect::<Result<Vec<_>, _>>()?;
        if le.len() != counts.len() || le.windows(2).any(|w| w[0] >= w[1]) {
            return Err("bounds and counts do not line up".into());
        }
        let count = v["count"].as_u64().ok_or("no count")?;
        if counts.windows(2).any(|w| w[0] > w[1]) || counts.last().is_some_and(|c| *c > count) {
            return Err("counts are not cumulative".into());
        }
        let sum = v["sum"].as_f64().ok_or("no sum")?;
        Ok(Self {
            le,
            counts,
            count,
            sum,
        })
    }

    /// Adds `o`; `false` (and nothing added) when its bounds differ.
    fn add(&mut self, o: &Self) -> bool {
        if self.count == 0 && self.le.is_empty() {
            *self = o.clone();
            return true;
        }
        if self.le != o.le {
            return false;
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
        true
    }

    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket (0 without samples; the
    /// highest bound when it falls above every bound).
    fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = q * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (le, c) in self.le.iter().zip(&self.counts) {
            if (*c as f64) >= rank && *c > below {
                let within = (rank - below as f64) / (*c - below) as f64;
                return lower + (le - lower) * within.clamp(0.0, 1.0);
            }
            below = *c;
            lower = *le;
        }
        lower
    }
}

#[derive(Debug, Default)]
struct Sum {
    sessions: u64,
    requests: u64,
    starved: u64,
    startup: Hist,
    bitrate: Hist,
    throughput: Hist,
    edges: u32,
}

/// One edge's document, added into `into`.
fn add_edge(doc: &[u8], into: &mut BTreeMap<String, Sum>) -> Result<(), String> {
    let d: Value = serde_json::from_slice(doc).map_err(|e| format!("not JSON: {e}"))?;
    if d["v"] != 1 {
        return Err("not version 1".into());
    }
    let assets = d["assets"].as_object().ok_or("no assets object")?;
    // Read the whole document first: one bad asset skips the edge, never half of it.
    let mut read = Vec::with_capacity(assets.len());
    for (id, a) in assets {
        let n = |k: &str| a[k].as_u64().ok_or(format!("{id}: no whole number {k:?}"));
        let h = |k: &str| Hist::read(&a[k]).map_err(|e| format!("{id}.{k}: {e}"));
        read.push((
            id,
            n("sessions")?,
            n("requests")?,
            n("starved")?,
            h("startup_s")?,
            h("bitrate_kbps")?,
            h("throughput_kbps")?,
        ));
    }
    for (id, sessions, requests, starved, startup, bitrate, throughput) in read {
        let s = into.entry(id.clone()).or_default();
        s.sessions += sessions;
        s.requests += requests;
        s.starved += starved;
        let same =
            s.startup.add(&startup) & s.bitrate.add(&bitrate) & s.throughput.add(&throughput);
        if !same {
            tracing::warn!(asset = %id, "an edge's histogram bounds differ; its samples are left out");
        }
        s.edges += 1;
    }
    Ok(())
}

fn qoe(asset: String, s: &Sum) -> pb::AssetQoe {
    pb::AssetQoe {
        asset,
        sessions: s.sessions,
        requests: s.requests,
        starved: s.starved,
        startups: s.startup.count,
        startup_mean_s: s.startup.mean(),
        startup_p50_s: s.startup.quantile(0.5),
        startup_p90_s: s.startup.quantile(0.9),
        bitrate_samples: s.bitrate.count,
        bitrate_mean_kbps: s.bitrate.mean(),
        bitrate_p50_kbps: s.bitrate.quantile(0.5),
        throughput_samples: s.throughput.count,
        throughput_mean_kbps: s.throughput.mean(),
        throughput_p50_kbps: s.throughput.quantile(0.5),
        edges: s.edges,
    }
}

/// `AnalyticsService` over a [`Store`].
pub struct AnalyticsApi {
    store: Arc<dyn Store>,
}

impl AnalyticsApi {
    /// Serves the QoE the edges publish into `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl pb::analytics_service_server::AnalyticsService for AnalyticsApi {
    async fn get(
        &self,
        req: Request<pb::GetAnalyticsRequest>,
    ) -> Result<Response<pb::GetAnalyticsResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        if !r.asset.is_empty() {
            check_id(
                &*self.store,
                &who,
                "AnalyticsService/Get",
                "assets",
                &r.asset,
            )
            .await?;
        }
        let limit = match r.limit as usize {
            0 => DEFAULT_LIMIT,
            n if n <= MAX_LIMIT => n,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "limit: 0 (default {DEFAULT_LIMIT}) to {MAX_LIMIT}"
                )));
            }
        };
        let (items, _) = self.store.list(ANALYTICS_PREFIX).await.map_err(status)?;
        let mut sums = BTreeMap::new();
        let (mut edges, mut skipped) = (0, 0);
        for (key, v) in items {
            match add_edge(&v.value, &mut sums) {
                Ok(()) => edges += 1,
                Err(why) => {
                    skipped += 1;
                    tracing::warn!(%key, %why, "analytics document skipped");
                }
            }
        }
        let mut assets: Vec<pb::AssetQoe> = sums
            .into_iter()
            .filter(|(id, _)| (r.asset.is_empty() || *id == r.asset) && who.may_touch(id))
            .map(|(id, s)| qoe(id, &s))
            .collect();
        assets.sort_by(|a, b| {
            (b.sessions, b.requests)
                .cmp(&(a.sessions, a.requests))
                .then_with(|| a.asset.cmp(&b.asset))
        });
        assets.truncate(limit);
        Ok(Response::new(pb::GetAnalyticsResponse {
            assets,
            edges,
            skipped,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hist(le: &[f64], counts: &[u64], sum: f64) -> Value {
        json!({"le": le, "counts": counts, "count": counts.last().copied().unwrap_or(0), "sum": sum})
    }

    fn doc(sessions: u64, startup: Value) -> Vec<u8> {
        let empty = hist(&[1.0, 2.0], &[0, 0], 0.0);
        json!({"v": 1, "assets": {"demo": {
            "sessions": sessions, "requests": 10, "starved": 1,
            "startup_s": startup, "bitrate_kbps": empty, "throughput_kbps": empty,
        }}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn edges_are_summed_and_quantiles_interpolated() {
        let mut sums = BTreeMap::new();
        let le = [0.5, 1.0, 2.0];
        add_edge(&doc(3, hist(&le, &[1, 3, 4], 3.0)), &mut sums).unwrap();
        add_edge(&doc(1, hist(&le, &[0, 0, 4], 6.0)), &mut sums).unwrap();
        let q = qoe("demo".into(), &sums["demo"]);
        assert_eq!((q.sessions, q.requests, q.starved, q.edges), (4, 20, 2, 2));
        assert_eq!(q.startups, 8);
        assert!((q.startup_mean_s - 9.0 / 8.0).abs() < 1e-9);
        // 8 samples: cumulative 1, 3, 8; the median (rank 4) is the first in (1, 2].
        assert!((q.startup_p50_s - 1.2).abs() < 1e-9, "{}", q.startup_p50_s);
        assert!((q.startup_p90_s - 1.84).abs() < 1e-9, "{}", q.startup_p90_s);
    }

    #[test]
    fn unreadable_documents_are_skipped_whole() {
        let mut sums = BTreeMap::new();
        for bad in [
            &b"nope"[..],
            br#"{"v": 2, "assets": {}}"#,
            br#"{"v": 1}"#,
            br#"{"v": 1, "assets": {"demo": {"sessions": 1}}}"#,
        ] {
            assert!(add_edge(bad, &mut sums).is_err());
        }
        let not_cumulative = doc(1, hist(&[1.0, 2.0], &[3, 1], 1.0));
        assert!(add_edge(&not_cumulative, &mut sums).is_err());
        let unsorted = doc(1, hist(&[2.0, 1.0], &[1, 1], 1.0));
        assert!(add_edge(&unsorted, &mut sums).is_err());
        assert!(sums.is_empty(), "nothing half-added");
        // Bounds that differ from the first edge's leave that edge's samples out.
        add_edge(&doc(1, hist(&[1.0, 2.0], &[1, 1], 0.5)), &mut sums).unwrap();
        add_edge(&doc(1, hist(&[1.0, 3.0], &[1, 1], 0.5)), &mut sums).unwrap();
        assert_eq!(sums["demo"].startup.count, 1);
        assert_eq!(sums["demo"].sessions, 2);
    }
}
