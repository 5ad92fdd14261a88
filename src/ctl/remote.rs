//! The `ctl` commands that go through the control plane's gRPC API.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use streamgate_proto::control::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::diff;
use super::{
    AssetCmd, CtlCmd, EX_UNAVAILABLE, EX_USAGE, Global, JwkSource, KeyCmd, Output, PolicyCmd,
    PurgeArgs,
};

/// Why a command failed, and so its exit code.
pub(crate) enum CtlError {
    /// Bad local input (64).
    Local(String),
    /// The endpoint could not be reached (69).
    Unreachable(String),
    /// The control plane refused (1).
    Server(Status),
}

impl From<Status> for CtlError {
    fn from(s: Status) -> Self {
        // A call that could not reach the server is reported as unreachable.
        if s.code() == Code::Unavailable && s.message().contains("transport") {
            Self::Unreachable(s.message().to_owned())
        } else {
            Self::Server(s)
        }
    }
}

fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl CtlError {
    pub(crate) fn report(self) -> ExitCode {
        match self {
            Self::Local(m) => {
                eprintln!("error: {m}");
                ExitCode::from(EX_USAGE)
            }
            Self::Unreachable(m) => {
                eprintln!("error: control plane unreachable: {m}");
                ExitCode::from(EX_UNAVAILABLE)
            }
            Self::Server(s) => {
                eprintln!("error: {}: {}", code_name(s.code()), s.message());
                match s.code() {
                    Code::Unauthenticated => eprintln!(
                        "hint: pass the admin token with --token, --token-file or STREAMGATE_TOKEN"
                    ),
                    Code::FailedPrecondition if s.message().contains("version conflict") => {
                        eprintln!(
                            "hint: someone changed it since you read it; get it again and retry"
                        )
                    }
                    _ => {}
                }
                ExitCode::FAILURE
            }
        }
    }
}

pub(super) type Result<T> = std::result::Result<T, CtlError>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Bearer>;

pub(super) struct Api {
    policies: pb::policy_service_client::PolicyServiceClient<Svc>,
    assets: pb::asset_service_client::AssetServiceClient<Svc>,
    keys: pb::key_service_client::KeyServiceClient<Svc>,
    purges: pb::purge_service_client::PurgeServiceClient<Svc>,
    audit: pb::audit_service_client::AuditServiceClient<Svc>,
    edges: pb::edge_service_client::EdgeServiceClient<Svc>,
    /// `ctl job` (src/ctl/job.rs).
    pub(super) jobs: pb::job_service_client::JobServiceClient<Svc>,
}

fn token(g: &Global) -> Result<Option<String>> {
    if let Some(t) = &g.token {
        return Ok(Some(t.trim().to_owned()));
    }
    match &g.token_file {
        Some(p) => std::fs::read_to_string(p)
            .map(|t| t.lines().next().map(|l| l.trim().to_owned()))
            .map_err(|e| CtlError::Local(format!("{}: {e}", p.display()))),
        None => Ok(None),
    }
}

pub(super) async fn connect(g: &Global) -> Result<Api> {
    let bearer = match token(g)? {
        Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
            CtlError::Local("the token has characters a header cannot carry".into())
        })?),
        None => None,
    };
    let mut endpoint = Channel::from_shared(g.endpoint.clone())
        .map_err(|e| CtlError::Local(format!("--endpoint {:?}: {e}", g.endpoint)))?;
    if g.endpoint.starts_with("https://") {
        let ca = g.ca.as_ref().ok_or_else(|| {
            CtlError::Local(
                "an https:// endpoint needs --ca (the CA that signed its certificate)".into(),
            )
        })?;
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read_bytes(ca)?));
        if let (Some(cert), Some(key)) = (&g.cert, &g.key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read_bytes(cert)?,
                read_bytes(key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| CtlError::Local(format!("TLS settings: {e}")))?;
    } else if g.ca.is_some() || g.cert.is_some() {
        return Err(CtlError::Local(
            "--ca and --cert need an https:// endpoint".into(),
        ));
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| {
            // The transport error's source says what failed (refused, TLS handshake, ...).
            let mut msg = format!("{}: {e}", g.endpoint);
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            CtlError::Unreachable(msg)
        })?;
    let b = Bearer(bearer);
    let c = channel;
    Ok(Api {
        policies: pb::policy_service_client::PolicyServiceClient::with_interceptor(
            c.clone(),
            b.clone(),
        ),
        assets: pb::asset_service_client::AssetServiceClient::with_interceptor(
            c.clone(),
            b.clone(),
        ),
        keys: pb::key_service_client::KeyServiceClient::with_interceptor(c.clone(), b.clone()),
        purges: pb::purge_service_client::PurgeServiceClient::with_interceptor(
            c.clone(),
            b.clone(),
        ),
        audit: pb::audit_service_client::AuditServiceClient::with_interceptor(c.clone(), b.clone()),
        edges: pb::edge_service_client::EdgeServiceClient::with_interceptor(c.clone(), b.clone()),
        jobs: pb::job_service_client::JobServiceClient::with_interceptor(c, b),
    })
}

fn read_bytes(p: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| CtlError::Local(format!("{}: {e}", p.display())))
}

fn read_file(p: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| CtlError::Local(format!("{}: {e}", p.display())))
}

/// Reads and validates a policy file locally, so errors come with paths before any call.
fn policy_file(p: &std::path::Path) -> Result<(String, streamgate_policy::Policy)> {
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

fn jwk(src: &JwkSource) -> Result<String> {
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

fn doc_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

fn policy_json(p: &pb::Policy) -> Value {
    json!({"id": p.id, "version": p.version, "document": doc_json(&p.document_json)})
}

fn asset_json(a: &pb::Asset) -> Value {
    json!({"id": a.id, "policy": a.policy_id, "description": a.description, "version": a.version, "origin_prefix": a.origin_prefix, "job": a.job_id})
}

fn key_json(k: &pb::Key) -> Value {
    json!({"kid": k.kid, "version": k.version, "retire_at": k.retire_at, "jwk": doc_json(&k.jwk_json)})
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialise")
    );
}

/// Prints rows as aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Prints a list: a JSON array, or a table with `header` and one row per item.
fn listing<T>(
    out: Output,
    items: &[T],
    to_json: impl Fn(&T) -> Value,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) {
    match out {
        Output::Json => print_json(&Value::Array(items.iter().map(to_json).collect())),
        Output::Human => table(header, &items.iter().map(row).collect::<Vec<_>>()),
    }
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

async fn current_asset(api: &mut Api, id: &str) -> Result<pb::Asset> {
    Ok(api
        .assets
        .get(pb::GetAssetRequest { id: id.to_owned() })
        .await?
        .into_inner()
        .asset
        .unwrap_or_default())
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

pub(crate) async fn run(g: &Global, cmd: CtlCmd) -> Result<ExitCode> {
    let out = g.output;
    // Validate local input before connecting, so a bad file is reported as such.
    let policy_input = match &cmd {
        CtlCmd::Policy(PolicyCmd::Apply { file, .. } | PolicyCmd::Diff { file }) => {
            Some(policy_file(file)?)
        }
        _ => None,
    };
    let key_input = match &cmd {
        CtlCmd::Key(KeyCmd::Add(src)) => Some(jwk(src)?),
        CtlCmd::Key(KeyCmd::Rotate { new, .. }) => Some(jwk(new)?),
        _ => None,
    };
    let mut api = connect(g).await?;
    match cmd {
        CtlCmd::Token(_)
        | CtlCmd::Policy(PolicyCmd::Check { .. })
        | CtlCmd::Job(_)
        | CtlCmd::Upload(_) => {
            unreachable!("local commands run without the API")
        }
        CtlCmd::Policy(PolicyCmd::Apply {
            expected_version, ..
        }) => {
            let (text, policy) = policy_input.expect("read above");
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
        CtlCmd::Policy(PolicyCmd::Get { id }) => {
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
        CtlCmd::Policy(PolicyCmd::List) => {
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
        CtlCmd::Policy(PolicyCmd::Diff { .. }) => {
            let (_, policy) = policy_input.expect("read above");
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
        CtlCmd::Policy(PolicyCmd::Delete {
            id,
            expected_version,
        }) => {
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
        CtlCmd::Asset(cmd) => asset(&mut api, out, cmd).await?,
        CtlCmd::Key(cmd) => key(&mut api, out, cmd, key_input).await?,
        CtlCmd::Purge(PurgeArgs { asset, prefix }) => {
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
        }
        CtlCmd::Audit { after, limit } => {
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
        }
        CtlCmd::Edges => {
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
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn asset(api: &mut Api, out: Output, cmd: AssetCmd) -> Result<()> {
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

fn overlap_secs(d: Duration) -> Result<i64> {
    i64::try_from(d.as_secs()).map_err(|_| CtlError::Local("--overlap is too long".into()))
}

async fn key(api: &mut Api, out: Output, cmd: KeyCmd, input: Option<String>) -> Result<()> {
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
