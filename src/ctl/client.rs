//! What every remote `ctl` command shares: the connection to the control plane (TLS, the
//! bearer token), the error that decides the exit code, and printing (JSON or tables).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use streamgate_proto::control::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::{EX_UNAVAILABLE, EX_USAGE, Global, Output};

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

pub(crate) type Result<T> = std::result::Result<T, CtlError>;

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

pub(crate) type Svc = InterceptedService<Channel, Bearer>;

pub(crate) struct Api {
    pub(super) policies: pb::policy_service_client::PolicyServiceClient<Svc>,
    pub(super) assets: pb::asset_service_client::AssetServiceClient<Svc>,
    pub(super) keys: pb::key_service_client::KeyServiceClient<Svc>,
    pub(super) purges: pb::purge_service_client::PurgeServiceClient<Svc>,
    pub(super) audit: pb::audit_service_client::AuditServiceClient<Svc>,
    pub(super) edges: pb::edge_service_client::EdgeServiceClient<Svc>,
    /// `ctl analytics`.
    pub(super) analytics: pb::analytics_service_client::AnalyticsServiceClient<Svc>,
    /// `ctl job` (src/ctl/job.rs).
    pub(super) jobs: pb::job_service_client::JobServiceClient<Svc>,
    /// `ctl whoami`.
    pub(super) access: pb::access_service_client::AccessServiceClient<Svc>,
}

/// The admin token from `--token`, `--token-file` or `STREAMGATE_TOKEN`, if any.
pub(super) fn token(g: &Global) -> Result<Option<String>> {
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

/// Connects to the control plane, over TLS for `https://` endpoints.
pub(crate) async fn connect(g: &Global) -> Result<Api> {
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
        analytics: pb::analytics_service_client::AnalyticsServiceClient::with_interceptor(
            c.clone(),
            b.clone(),
        ),
        jobs: pb::job_service_client::JobServiceClient::with_interceptor(c.clone(), b.clone()),
        access: pb::access_service_client::AccessServiceClient::with_interceptor(c, b),
    })
}

pub(super) fn read_bytes(p: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| CtlError::Local(format!("{}: {e}", p.display())))
}

pub(super) fn read_file(p: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| CtlError::Local(format!("{}: {e}", p.display())))
}

pub(super) fn doc_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

pub(super) fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialise")
    );
}

/// Prints rows as aligned columns under a header.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) {
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
pub(super) fn listing<T>(
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
