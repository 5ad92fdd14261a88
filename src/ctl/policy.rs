//! `ctl policy`: check a document locally; apply, get, list, diff and delete through
//! `PolicyService`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};
use streamgate_proto::control::v1 as pb;
use tonic::{Code, Status};

use super::client::{Api, CtlError, Result, connect, doc_json, listing, print_json, read_file};
use super::{Global, Output, diff};

/// `ctl policy`: a local check, and the commands that go to the control plane.
#[derive(Subcommand)]
pub(crate) enum PolicyCmd {
    /// Validate a policy document locally; list every error with its field path.
    Check {
        /// The policy file (YAML or JSON).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// The chain registry (CAIP-2 ids, comma-separated): `nft` conditions must name
        /// one of these chains.
        #[arg(long, value_delimiter = ',')]
        chains: Vec<String>,
    },
    #[command(flatten)]
    Remote(PolicyRemote),
}

/// The `ctl policy` commands that go to the control plane.
#[derive(Subcommand)]
pub(crate) enum PolicyRemote {
    /// Create or update a policy from a file.
    Apply {
        /// The policy file (YAML or JSON).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// The version you last saw (0: create). Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Show one policy.
    Get {
        /// Policy id.
        id: String,
    },
    /// List policies.
    List,
    /// Show how a file differs from the stored policy (exit 1 when it does).
    Diff {
        /// The policy file (YAML or JSON).
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Delete a policy (refused while assets are bound to it).
    Delete {
        /// Policy id.
        id: String,
        /// The version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

/// Reads and validates a policy file locally, so errors come with paths before any call.
pub(super) fn policy_file(p: &std::path::Path) -> Result<(String, streamgate_policy::Policy)> {
    let text = read_file(p)?;
    match streamgate_policy::Policy::parse(&text) {
        Ok(policy) => Ok((text, policy)),
        Err(errs) => {
            let list: Vec<String> = errs.0.iter().map(|e| format!("  {e}")).collect();
            Err(CtlError::Local(format!(
                "{}: {} error(s):\n{}",
                p.display(),
                list.len(),
                list.join("\n")
            )))
        }
    }
}

fn policy_json(p: &pb::Policy) -> Value {
    json!({"id": p.id, "version": p.version, "document": doc_json(&p.document_json)})
}

async fn current_policy(api: &mut Api, id: &str) -> Result<Option<pb::Policy>> {
    match api
        .policies
        .get(pb::GetPolicyRequest { id: id.to_owned() })
        .await
    {
        Ok(r) => Ok(r.into_inner().policy),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s.into()),
    }
}

/// Runs a remote `ctl policy` command; local input is read and checked before connecting.
pub(super) async fn run(g: &Global, cmd: PolicyRemote) -> Result<ExitCode> {
    let out = g.output;
    match cmd {
        PolicyRemote::Apply {
            file,
            expected_version,
        } => {
            let (text, policy) = policy_file(&file)?;
            let mut api = connect(g).await?;
            let id = policy.id.as_str().to_owned();
            let expected = match expected_version {
                Some(v) => v,
                None => current_policy(&mut api, &id)
                    .await?
                    .map_or(0, |p| p.version),
            };
            let p = api
                .policies
                .apply(pb::ApplyPolicyRequest {
                    document: text,
                    expected_version: expected,
                })
                .await?
                .into_inner()
                .policy
                .unwrap_or_default();
            match out {
                Output::Json => print_json(&policy_json(&p)),
                Output::Human => println!(
                    "policy {} {} (version {})",
                    p.id,
                    if expected == 0 { "created" } else { "updated" },
                    p.version
                ),
            }
        }
        PolicyRemote::Get { id } => {
            let mut api = connect(g).await?;
            let p = api
                .policies
                .get(pb::GetPolicyRequest { id })
                .await?
                .into_inner()
                .policy
                .unwrap_or_default();
            match out {
                Output::Json => print_json(&policy_json(&p)),
                Output::Human => {
                    println!("# policy {} version {}", p.id, p.version);
                    println!("{}", diff::pretty(&doc_json(&p.document_json)));
                }
            }
        }
        PolicyRemote::List => {
            let mut api = connect(g).await?;
            let list = api
                .policies
                .list(pb::ListPoliciesRequest {})
                .await?
                .into_inner()
                .policies;
            listing(
                out,
                &list,
                policy_json,
                &["ID", "VERSION", "DESCRIPTION"],
                |p| {
                    let d = doc_json(&p.document_json);
                    vec![
                        p.id.clone(),
                        p.version.to_string(),
                        d["description"].as_str().unwrap_or_default().to_owned(),
                    ]
                },
            );
        }
        PolicyRemote::Diff { file } => {
            let (_, policy) = policy_file(&file)?;
            let mut api = connect(g).await?;
            let id = policy.id.as_str().to_owned();
            let stored = current_policy(&mut api, &id)
                .await?
                .map(|p| doc_json(&p.document_json));
            let local = policy.to_value();
            let (old, new) = (
                stored.as_ref().map(diff::pretty).unwrap_or_default(),
                diff::pretty(&local),
            );
            let changes = diff::lines(&old, &new);
            let same = changes.iter().all(|l| l.starts_with(' '));
            match out {
                Output::Json => print_json(&json!({
                    "id": id, "exists": stored.is_some(), "equal": same,
                    "diff": changes,
                })),
                Output::Human if same => println!("policy {id}: no changes"),
                Output::Human => {
                    println!(
                        "--- stored policy {id}{}",
                        if stored.is_none() { " (absent)" } else { "" }
                    );
                    println!("+++ file");
                    for l in &changes {
                        println!("{l}");
                    }
                }
            }
            return Ok(if same {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        PolicyRemote::Delete {
            id,
            expected_version,
        } => {
            let mut api = connect(g).await?;
            let expected = match expected_version {
                Some(v) => v,
                None => {
                    current_policy(&mut api, &id)
                        .await?
                        .ok_or_else(|| {
                            CtlError::Server(Status::not_found(format!("no policy {id:?}")))
                        })?
                        .version
                }
            };
            api.policies
                .delete(pb::DeletePolicyRequest {
                    id: id.clone(),
                    expected_version: expected,
                })
                .await?;
            match out {
                Output::Json => print_json(&json!({"id": id, "deleted": true})),
                Output::Human => println!("policy {id} deleted"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
