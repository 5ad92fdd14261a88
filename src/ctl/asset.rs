//! `ctl asset`: register, get, list, bind and delete through `AssetService`.

use clap::Subcommand;
use serde_json::{Value, json};
use streamgate_proto::control::v1 as pb;

use super::Output;
use super::client::{Api, Result, listing, print_json};

#[derive(Subcommand)]
pub(crate) enum AssetCmd {
    /// Register an asset, optionally bound to a policy.
    Register {
        /// Asset id (the first path segment under /v/).
        id: String,
        /// The policy that gates it.
        #[arg(long)]
        policy: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one asset.
    Get {
        /// Asset id.
        id: String,
    },
    /// List assets.
    List,
    /// Bind an asset to a policy ("" unbinds).
    Bind {
        /// Asset id.
        id: String,
        /// Policy id.
        policy: String,
        /// The version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Delete an asset.
    Delete {
        /// Asset id.
        id: String,
        /// The version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

fn asset_json(a: &pb::Asset) -> Value {
    json!({"id": a.id, "policy": a.policy_id, "description": a.description, "version": a.version, "origin_prefix": a.origin_prefix, "job": a.job_id})
}

async fn current_asset(api: &mut Api, id: &str) -> Result<pb::Asset> {
    Ok(api
        .assets
        .get(pb::GetAssetRequest { id: id.to_owned() })
        .await?
        .into_inner()
        .asset
        .unwrap_or_default())
}

/// Runs one `ctl asset` command.
pub(super) async fn run(api: &mut Api, out: Output, cmd: AssetCmd) -> Result<()> {
    let show = |a: &pb::Asset, verb: &str| match out {
        Output::Json => print_json(&asset_json(a)),
        Output::Human => println!(
            "asset {} {verb} (version {}{})",
            a.id,
            a.version,
            if a.policy_id.is_empty() {
                ", not bound: the edge refuses it".to_owned()
            } else {
                format!(", policy {}", a.policy_id)
            }
        ),
    };
    match cmd {
        AssetCmd::Register {
            id,
            policy,
            description,
        } => {
            let a = api
                .assets
                .register(pb::RegisterAssetRequest {
                    asset: Some(pb::Asset {
                        id,
                        policy_id: policy.unwrap_or_default(),
                        description,
                        version: 0,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner()
                .asset
                .unwrap_or_default();
            show(&a, "registered");
        }
        AssetCmd::Get { id } => {
            let a = current_asset(api, &id).await?;
            show(&a, "is");
        }
        AssetCmd::List => {
            let list = api
                .assets
                .list(pb::ListAssetsRequest {})
                .await?
                .into_inner()
                .assets;
            listing(
                out,
                &list,
                asset_json,
                &["ID", "VERSION", "POLICY", "DESCRIPTION"],
                |a| {
                    vec![
                        a.id.clone(),
                        a.version.to_string(),
                        a.policy_id.clone(),
                        a.description.clone(),
                    ]
                },
            );
        }
        AssetCmd::Bind {
            id,
            policy,
            expected_version,
        } => {
            let expected = match expected_version {
                Some(v) => v,
                None => current_asset(api, &id).await?.version,
            };
            let a = api
                .assets
                .bind(pb::BindAssetRequest {
                    asset_id: id,
                    policy_id: policy,
                    expected_version: expected,
                })
                .await?
                .into_inner()
                .asset
                .unwrap_or_default();
            show(&a, "bound");
        }
        AssetCmd::Delete {
            id,
            expected_version,
        } => {
            let expected = match expected_version {
                Some(v) => v,
                None => current_asset(api, &id).await?.version,
            };
            api.assets
                .delete(pb::DeleteAssetRequest {
                    id: id.clone(),
                    expected_version: expected,
                })
                .await?;
            match out {
                Output::Json => print_json(&json!({"id": id, "deleted": true})),
                Output::Human => println!("asset {id} deleted"),
            }
        }
    }
    Ok(())
}
