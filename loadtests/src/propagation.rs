//! `streamgate load propagation`: how long a policy change takes to be enforced by every
//! edge. Each change goes through the control plane's gRPC API (`PolicyService.Apply`,
//! with the version last seen), alternating a policy that allows loopback clients and one
//! that denies them. After each Apply, one poller per edge requests the asset over a
//! keep-alive connection, back to back, until the edge answers with the new verdict (200
//! or 403). The time is measured from just before the Apply call, so it includes the etcd
//! commit, the watch delivery, the snapshot build and the swap.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use streamgate_proto::control::v1 as pb;
use tonic::transport::Channel;

/// Arguments of `streamgate load propagation`.
#[derive(Debug, clap::Args)]
pub struct PropagationArgs {
    /// The control plane's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub control: String,
    /// Admin bearer token.
    #[arg(long, env = "STREAMGATE_TOKEN")]
    pub token: String,
    /// Edge base URLs (repeat, or comma-separated).
    #[arg(long = "edge", value_delimiter = ',', required = true)]
    pub edges: Vec<String>,
    /// The asset the changes gate; it is registered (bound to `--policy`) if missing.
    #[arg(long, default_value = "propagation")]
    pub asset: String,
    /// The object path under the asset that the pollers request.
    #[arg(long, default_value = "master.m3u8")]
    pub object: String,
    /// The policy id the changes rewrite.
    #[arg(long, default_value = "propagation")]
    pub policy: String,
    /// How many changes to apply.
    #[arg(long, default_value_t = 100)]
    pub changes: u32,
    /// Give up on a change after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Write the JSON report here (it has a `distribution` for `load plot`).
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Client = pb::policy_service_client::PolicyServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Auth>,
>;

fn document(id: &str, allow: bool) -> String {
    let rule = if allow {
        json!({"public": true})
    } else {
        json!({"ip": {"deny": ["127.0.0.0/8", "::1/128"]}})
    };
    json!({"id": id, "description": "load propagation", "rule": rule}).to_string()
}

async fn poll_until(http: &reqwest::Client, url: &str, want: u16, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if let Ok(r) = http.get(url).send().await
            && r.status().as_u16() == want
        {
            return true;
        }
    }
    false
}

/// Latency percentiles in ms, with the `distribution` that `load plot` draws.
pub fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let distribution: Vec<(f64, f64)> = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
        .iter()
        .map(|&p| (p * 100.0, q(p)))
        .collect();
    json!({
        "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": h.max() as f64 / 1000.0,
        "distribution": distribution,
    })
}

/// Runs the measurement and prints the report.
pub async fn run(args: PropagationArgs) -> anyhow::Result<()> {
    let channel = Channel::from_shared(args.control.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", args.token).parse()?;
    let auth: Auth = Box::new(move |mut req| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    });
    let mut policies: Client =
        pb::policy_service_client::PolicyServiceClient::with_interceptor(channel.clone(), auth);
    let bearer2: tonic::metadata::MetadataValue<_> = format!("Bearer {}", args.token).parse()?;
    let mut assets = pb::asset_service_client::AssetServiceClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer2.clone());
            Ok(req)
        },
    );

    // Start allowed, with the asset bound to the policy.
    let mut version = match policies
        .get(pb::GetPolicyRequest {
            id: args.policy.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner().policy.map_or(0, |p| p.version),
        Err(s) if s.code() == tonic::Code::NotFound => 0,
        Err(s) => return Err(s.into()),
    };
    version = policies
        .apply(pb::ApplyPolicyRequest {
            document: document(&args.policy, true),
            expected_version: version,
        })
        .await?
        .into_inner()
        .policy
        .map_or(0, |p| p.version);
    let asset = pb::Asset {
        id: args.asset.clone(),
        policy_id: args.policy.clone(),
        description: "load propagation".into(),
        version: 0,
        ..Default::default()
    };
    if let Err(s) = assets
        .register(pb::RegisterAssetRequest { asset: Some(asset) })
        .await
        && s.code() != tonic::Code::AlreadyExists
        && s.code() != tonic::Code::FailedPrecondition
    {
        return Err(s.into());
    }

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .timeout(Duration::from_secs(2))
        .build()?;
    let urls: Vec<String> = args
        .edges
        .iter()
        .map(|e| {
            format!(
                "{}/v/{}/{}",
                e.trim_end_matches('/'),
                args.asset,
                args.object
            )
        })
        .collect();
    for u in &urls {
        if !poll_until(&http, u, 200, Instant::now() + Duration::from_secs(15)).await {
            anyhow::bail!("{u} never answered 200 with the allowing policy");
        }
    }

    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut commit = all.clone();
    let mut after_commit = all.clone();
    let mut per_edge = vec![all.clone(); urls.len()];
    let mut failed = 0u32;
    eprintln!(
        "applying {} policy changes, {} edges ...",
        args.changes,
        urls.len()
    );
    for i in 0..args.changes {
        let allow = i % 2 == 1;
        let want = if allow { 200 } else { 403 };
        let t0 = Instant::now();
        let deadline = t0 + args.timeout;
        // Pollers start with the Apply, so nothing that happens during the call is missed.
        let pollers = urls.iter().map(|u| {
            let (http, u) = (http.clone(), u.clone());
            tokio::spawn(async move {
                let ok = poll_until(&http, &u, want, deadline).await;
                (ok, t0.elapsed())
            })
        });
        let pollers: Vec<_> = pollers.collect();
        version = policies
            .apply(pb::ApplyPolicyRequest {
                document: document(&args.policy, allow),
                expected_version: version,
            })
            .await?
            .into_inner()
            .policy
            .map_or(0, |p| p.version);
        let committed = t0.elapsed();
        commit.record(committed.as_micros().max(1) as u64)?;
        let mut slowest = Duration::ZERO;
        for (e, p) in pollers.into_iter().enumerate() {
            let (ok, took) = p.await?;
            if !ok {
                failed += 1;
                eprintln!(
                    "change {i}: edge {} did not enforce it within {:?}",
                    urls[e], args.timeout
                );
            }
            per_edge[e].record(took.as_micros().max(1) as u64)?;
            slowest = slowest.max(took);
        }
        all.record(slowest.as_micros().max(1) as u64)?;
        after_commit.record(slowest.saturating_sub(committed).as_micros().max(1) as u64)?;
        if (i + 1) % 10 == 0 {
            eprintln!(
                "  {}/{} changes, p50 so far {:.2} ms",
                i + 1,
                args.changes,
                all.value_at_quantile(0.5) as f64 / 1000.0
            );
        }
    }
    let report = json!({
        "changes": args.changes,
        "edges": urls.len(),
        "failed": failed,
        "all_edges": summary(&all),
        "apply_call": summary(&commit),
        "after_apply_returned": summary(&after_commit),
        "per_edge": per_edge.iter().map(summary).collect::<Vec<_>>(),
        "distribution": summary(&all)["distribution"],
    });
    println!(
        "{} changes, {} edges: all edges enforce  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        args.changes,
        urls.len(),
        report["all_edges"]["p50_ms"].as_f64().unwrap_or_default(),
        report["all_edges"]["p90_ms"].as_f64().unwrap_or_default(),
        report["all_edges"]["p99_ms"].as_f64().unwrap_or_default(),
        report["all_edges"]["max_ms"].as_f64().unwrap_or_default(),
    );
    println!(
        "  Apply call (etcd commit) p50 {:.2} ms  p99 {:.2} ms; after it returned p50 {:.2} ms  p99 {:.2} ms; {failed} not enforced in time",
        report["apply_call"]["p50_ms"].as_f64().unwrap_or_default(),
        report["apply_call"]["p99_ms"].as_f64().unwrap_or_default(),
        report["after_apply_returned"]["p50_ms"]
            .as_f64()
            .unwrap_or_default(),
        report["after_apply_returned"]["p99_ms"]
            .as_f64()
            .unwrap_or_default(),
    );
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} change(s) were not enforced within {:?}",
            args.timeout
        );
    }
    Ok(())
}
