//! `ctl purge`, `ctl audit`, `ctl edges`, `ctl analytics` and `ctl whoami`: the fleet's
//! cache, its history, its edges, how playback goes on them, and who is asking.

use clap::Args;
use serde_json::json;
use streamgate_proto::control::v1 as pb;

use super::Output;
use super::client::{Api, CtlError, Result, listing, print_json, table};

/// What to purge.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PurgeArgs {
    /// Every object of this asset.
    #[arg(long)]
    asset: Option<String>,
    /// Every object whose key starts with this, e.g. demo/video/720p/.
    #[arg(long)]
    prefix: Option<String>,
}

/// `ctl purge`.
pub(super) async fn purge(api: &mut Api, out: Output, args: PurgeArgs) -> Result<()> {
    let PurgeArgs { asset, prefix } = args;
    let target = match (asset, prefix) {
        (Some(a), _) => pb::purge_request::Target::AssetId(a),
        (None, Some(p)) => pb::purge_request::Target::Prefix(p),
        (None, None) => return Err(CtlError::Local("pass --asset or --prefix".into())),
    };
    let r = api
        .purges
        .purge(pb::PurgeRequest {
            target: Some(target),
        })
        .await?
        .into_inner();
    match out {
        Output::Json => print_json(&json!({"seq": r.seq, "revision": r.revision})),
        Output::Human => println!(
            "purge {} recorded at revision {}; every edge applies it when it reaches that revision (see `streamgate ctl edges`)",
            r.seq, r.revision
        ),
    }
    Ok(())
}

/// `ctl whoami`.
pub(super) async fn whoami(api: &mut Api, out: Output) -> Result<()> {
    let r = api
        .access
        .who_am_i(pb::WhoAmIRequest {})
        .await?
        .into_inner();
    match out {
        Output::Json => print_json(&json!({"name": r.name, "role": r.role,
            "asset_prefixes": r.asset_prefixes, "allowed": r.allowed})),
        Output::Human => {
            let scope = if r.asset_prefixes.is_empty() {
                "every asset".to_owned()
            } else {
                format!("assets {}", r.asset_prefixes.join(", "))
            };
            println!("{} ({}, {scope})", r.name, r.role);
            println!("may call: {}", r.allowed.join(" "));
        }
    }
    Ok(())
}

/// `ctl audit`.
pub(super) async fn audit(api: &mut Api, out: Output, after: i64, limit: i32) -> Result<()> {
    let entries = api
        .audit
        .list(pb::ListAuditRequest {
            after_seq: after,
            limit,
        })
        .await?
        .into_inner()
        .entries;
    listing(
        out,
        &entries,
        |e| {
            json!({"seq": e.seq, "time": e.time, "actor": e.actor, "action": e.action,
                           "target": e.target, "old_version": e.old_version, "new_version": e.new_version})
        },
        &["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "VERSION"],
        |e| {
            vec![
                e.seq.to_string(),
                e.time.clone(),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                format!("{} -> {}", e.old_version, e.new_version),
            ]
        },
    );
    Ok(())
}

/// `ctl edges`.
pub(super) async fn edges(api: &mut Api, out: Output) -> Result<()> {
    let r = api.edges.list(pb::ListEdgesRequest {}).await?.into_inner();
    match out {
        Output::Json => print_json(&json!({
            "store_revision": r.store_revision,
            "edges": r.edges.iter().map(|e| json!({
                "id": e.id, "revision": e.revision, "lag": e.lag, "stale": e.stale,
                "applied_at": e.applied_at, "started_at": e.started_at,
                "version": e.version, "hostname": e.hostname,
            })).collect::<Vec<_>>(),
        })),
        Output::Human => {
            println!("store revision {}", r.store_revision);
            let rows: Vec<Vec<String>> = r
                .edges
                .iter()
                .map(|e| {
                    vec![
                        e.id.clone(),
                        e.revision.to_string(),
                        e.lag.to_string(),
                        if e.stale { "stale".into() } else { "ok".into() },
                        e.applied_at.clone(),
                        e.hostname.clone(),
                    ]
                })
                .collect();
            table(
                &["EDGE", "REVISION", "LAG", "STATUS", "REPORTED", "HOST"],
                &rows,
            );
        }
    }
    Ok(())
}

/// `ctl analytics`.
pub(super) async fn analytics(
    api: &mut Api,
    out: Output,
    asset: Option<String>,
    limit: u32,
) -> Result<()> {
    let one = asset.clone();
    let r = api
        .analytics
        .get(pb::GetAnalyticsRequest {
            asset: asset.unwrap_or_default(),
            limit,
        })
        .await?
        .into_inner();
    let qoe = |a: &pb::AssetQoe| {
        json!({
            "asset": a.asset, "sessions": a.sessions, "requests": a.requests,
            "starved": a.starved, "edges": a.edges,
            "startup_s": {"count": a.startups, "mean": a.startup_mean_s,
                          "p50": a.startup_p50_s, "p90": a.startup_p90_s},
            "bitrate_kbps": {"count": a.bitrate_samples, "mean": a.bitrate_mean_kbps,
                             "p50": a.bitrate_p50_kbps},
            "throughput_kbps": {"count": a.throughput_samples, "mean": a.throughput_mean_kbps,
                                "p50": a.throughput_p50_kbps},
        })
    };
    match out {
        Output::Json => print_json(&json!({
            "edges": r.edges, "skipped": r.skipped,
            "assets": r.assets.iter().map(qoe).collect::<Vec<_>>(),
        })),
        Output::Human => {
            let skipped = if r.skipped > 0 {
                format!(" ({} unreadable documents skipped)", r.skipped)
            } else {
                String::new()
            };
            let edges = if r.edges == 1 { "edge" } else { "edges" };
            println!("figures of {} {edges} since they started{skipped}", r.edges);
            if let (Some(id), true) = (&one, r.assets.is_empty()) {
                println!("no CMCD has been seen for asset {id:?}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = r
                .assets
                .iter()
                .map(|a| {
                    let starved = if a.requests == 0 {
                        0.0
                    } else {
                        100.0 * a.starved as f64 / a.requests as f64
                    };
                    vec![
                        a.asset.clone(),
                        a.sessions.to_string(),
                        format!("{:.2}/{:.2}", a.startup_p50_s, a.startup_p90_s),
                        format!("{:.0}", a.bitrate_mean_kbps),
                        format!("{:.0}", a.throughput_p50_kbps),
                        format!("{starved:.2}%"),
                        a.requests.to_string(),
                        a.edges.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "ASSET",
                    "SESSIONS",
                    "STARTUP P50/P90 S",
                    "BITRATE KBPS",
                    "THROUGHPUT P50 KBPS",
                    "STARVED",
                    "CMCD REQUESTS",
                    "EDGES",
                ],
                &rows,
            );
        }
    }
    Ok(())
}
