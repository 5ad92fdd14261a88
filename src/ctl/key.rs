//! `ctl key`: add, list, retire and rotate verification keys through `KeyService`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use streamgate_proto::control::v1 as pb;
use tonic::Status;

use super::Output;
use super::client::{Api, CtlError, Result, doc_json, listing, print_json, read_file};

#[derive(Subcommand)]
pub(crate) enum KeyCmd {
    /// Add a public key (JWK entry; HS256 by secret_ref only).
    Add(JwkSource),
    /// List keys.
    List,
    /// Retire a key: tokens it signed stay valid for the overlap.
    Retire {
        /// Key id.
        kid: String,
        /// How long tokens signed with it stay valid, e.g. 24h (up to 90 days).
        #[arg(long, value_parser = humantime::parse_duration)]
        overlap: Duration,
        /// The version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Add a new key and retire an old one, in one transaction.
    Rotate {
        #[command(flatten)]
        new: JwkSource,
        /// The key being replaced.
        #[arg(long)]
        old: String,
        /// How long tokens signed with the old key stay valid.
        #[arg(long, value_parser = humantime::parse_duration)]
        overlap: Duration,
        /// The old key's version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

/// A JWK entry from a file or the command line.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct JwkSource {
    /// A file holding the JWK entry (JSON).
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// The JWK entry itself (JSON).
    #[arg(long)]
    jwk: Option<String>,
}

/// The JWK entry, read and checked locally.
pub(super) fn jwk(src: &JwkSource) -> Result<String> {
    let text = match (&src.file, &src.jwk) {
        (Some(f), _) => read_file(f)?,
        (None, Some(j)) => j.clone(),
        (None, None) => return Err(CtlError::Local("pass -f FILE or --jwk JSON".into())),
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Local(format!("the JWK entry is not JSON: {e}")))?;
    streamgate_policy::KeyDoc::from_value(&v)
        .map_err(|e| CtlError::Local(format!("the JWK entry: {e}")))?;
    Ok(text)
}

fn key_json(k: &pb::Key) -> Value {
    json!({"kid": k.kid, "version": k.version, "retire_at": k.retire_at, "jwk": doc_json(&k.jwk_json)})
}

async fn current_key_version(api: &mut Api, kid: &str) -> Result<i64> {
    let keys = api
        .keys
        .list(pb::ListKeysRequest {})
        .await?
        .into_inner()
        .keys;
    keys.iter()
        .find(|k| k.kid == kid)
        .map(|k| k.version)
        .ok_or_else(|| CtlError::Server(Status::not_found(format!("no key {kid:?}"))))
}

fn overlap_secs(d: Duration) -> Result<i64> {
    i64::try_from(d.as_secs()).map_err(|_| CtlError::Local("--overlap is too long".into()))
}

/// Runs one `ctl key` command; `input` is the JWK entry that `add` and `rotate` read first.
pub(super) async fn run(
    api: &mut Api,
    out: Output,
    cmd: KeyCmd,
    input: Option<String>,
) -> Result<()> {
    let show = |k: &pb::Key, verb: &str| match out {
        Output::Json => print_json(&key_json(k)),
        Output::Human => println!(
            "key {} {verb} (version {}{})",
            k.kid,
            k.version,
            if k.retire_at.is_empty() {
                String::new()
            } else {
                format!(", retires at {}", k.retire_at)
            }
        ),
    };
    match cmd {
        KeyCmd::Add(_) => {
            let k = api
                .keys
                .add(pb::AddKeyRequest {
                    jwk_json: input.expect("read above"),
                })
                .await?
                .into_inner()
                .key
                .unwrap_or_default();
            show(&k, "added");
        }
        KeyCmd::List => {
            let keys = api
                .keys
                .list(pb::ListKeysRequest {})
                .await?
                .into_inner()
                .keys;
            listing(
                out,
                &keys,
                key_json,
                &["KID", "ALG", "VERSION", "STATE", "ISSUER"],
                |k| {
                    let j = doc_json(&k.jwk_json);
                    vec![
                        k.kid.clone(),
                        j["alg"].as_str().unwrap_or_default().to_owned(),
                        k.version.to_string(),
                        if k.retire_at.is_empty() {
                            "active".to_owned()
                        } else {
                            format!("retires {}", k.retire_at)
                        },
                        j["issuer"].as_str().unwrap_or_default().to_owned(),
                    ]
                },
            );
        }
        KeyCmd::Retire {
            kid,
            overlap,
            expected_version,
        } => {
            let expected = match expected_version {
                Some(v) => v,
                None => current_key_version(api, &kid).await?,
            };
            let k = api
                .keys
                .retire(pb::RetireKeyRequest {
                    kid,
                    overlap_seconds: overlap_secs(overlap)?,
                    expected_version: expected,
                })
                .await?
                .into_inner()
                .key
                .unwrap_or_default();
            show(&k, "retiring");
        }
        KeyCmd::Rotate {
            old,
            overlap,
            expected_version,
            ..
        } => {
            let expected = match expected_version {
                Some(v) => v,
                None => current_key_version(api, &old).await?,
            };
            let r = api
                .keys
                .rotate(pb::RotateKeyRequest {
                    new_jwk_json: input.expect("read above"),
                    old_kid: old,
                    overlap_seconds: overlap_secs(overlap)?,
                    expected_version: expected,
                })
                .await?
                .into_inner();
            let (added, retiring) = (r.added.unwrap_or_default(), r.retiring.unwrap_or_default());
            match out {
                Output::Json => {
                    print_json(&json!({"added": key_json(&added), "retiring": key_json(&retiring)}))
                }
                Output::Human => {
                    show(&added, "added");
                    show(&retiring, "retiring");
                }
            }
        }
    }
    Ok(())
}
