//! Control-plane configuration: the `[control]` table of the shared config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use streamgate_config::{ConfigErrors, Errors, Fields, socket_addr, string, strings};

/// Where state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded store: a log file under `data_dir` (single node; `dev`).
    Embedded {
        /// Folder of `store.log`.
        data_dir: PathBuf,
    },
    /// An etcd cluster: its endpoints, TLS, credentials and failover timeouts
    /// (`[control.etcd]`, or the short form `etcd_endpoints`).
    Etcd(Box<streamgate_store::etcd::EtcdConfig>),
}

/// The typed control-plane configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// The admin port: `/metrics`, `/healthz`, `/readyz` (default `0.0.0.0:9101`).
    pub admin_listen: SocketAddr,
    /// The state store.
    pub store: StoreConfig,
    /// Admin bearer token lines (from `admin_token_file`, one per line): `token`, or
    /// `name:token` to name the operator in the audit log, then optional `role=` and
    /// `assets=` (see [`crate::auth::parse_token_line`]). Tokens are at least 16 bytes.
    pub admin_tokens: Vec<String>,
    /// TLS for the gRPC API (and mTLS with `client_ca`); plaintext when unset.
    pub tls: Option<TlsFiles>,
    /// The chains the edges have RPC endpoints for. When set, a policy whose `nft`
    /// condition names another chain is refused at apply.
    pub chains: Vec<streamgate_policy::address::ChainId>,
    /// This process's name in elections (default `<hostname>-<pid>`).
    pub instance: String,
    /// The lease TTL of elected background work (default 10 s): when the process holding
    /// it dies, another takes the work over within this.
    pub election_ttl: std::time::Duration,
    /// Edge records not refreshed for this long are pruned by the elected control plane
    /// (default 10 min; edges refresh theirs every 30 s, and leased records vanish on
    /// their own, so this only removes records left by edges that kept no lease).
    pub edge_prune_after: std::time::Duration,
}

/// PEM contents of the API's certificate chain, key, and optional client CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: Vec<u8>,
    /// Private key (PEM).
    pub key: Vec<u8>,
    /// With it, clients must present a certificate this CA signed (mTLS), in addition to
    /// the bearer token.
    pub client_ca: Option<Vec<u8>>,
}

/// Reads a PEM file at config `field`, checking it holds what it should.
fn pem(errs: &mut Errors, field: &str, path: &str, want_key: bool) -> Vec<u8> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            errs.push(
                format!("control.{field}"),
                format!("cannot read {path}: {e}"),
            );
            return Vec::new();
        }
    };
    let ok = if want_key {
        matches!(
            rustls_pemfile::private_key(&mut bytes.as_slice()),
            Ok(Some(_))
        )
    } else {
        rustls_pemfile::certs(&mut bytes.as_slice()).any(|c| c.is_ok())
    };
    if !ok {
        let what = if want_key {
            "a PEM private key"
        } else {
            "PEM certificates"
        };
        errs.push(
            format!("control.{field}"),
            format!("{path} holds no {what}"),
        );
    }
    bytes
}

/// Sections of the shared file that belong to other components.
const OTHER_SECTIONS: &[&str] = &["edge", "origin", "transcode", "ingest", "load", "dev"];

/// Why the control config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// The file is not TOML.
    #[error("{0} is not valid TOML: {1}")]
    Syntax(String, String),
    /// Values are invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

impl ControlConfig {
    /// Loads `path` with `STREAMGATE_*` overrides and validates everything, token file included.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read(name.clone(), e))?;
        let mut doc: toml::Table =
            toml::from_str(&text).map_err(|e| LoadError::Syntax(name, e.to_string()))?;
        let mut errs = Errors::default();
        streamgate_config::apply_env(&mut doc, std::env::vars(), &mut errs);
        let cfg = Self::from_table(&doc, &mut errs);
        Ok(errs.finish(cfg)?)
    }

    /// Reads typed config from a parsed document, recording every problem.
    pub fn from_table(doc: &toml::Table, errs: &mut Errors) -> Self {
        let mut root = Fields::root(doc);
        let mut c = root.table(errs, "control");
        let listen = c.get(
            errs,
            "listen",
            SocketAddr::from(([0, 0, 0, 0], 50051)),
            socket_addr,
        );
        let admin_listen = c.get(
            errs,
            "admin_listen",
            SocketAddr::from(([0, 0, 0, 0], 9101)),
            socket_addr,
        );
        if admin_listen == listen && admin_listen.port() != 0 {
            errs.push(
                "control.admin_listen",
                format!("{admin_listen} is also control.listen; the admin port needs its own"),
            );
        }
        let kind = c.get(errs, "store", "embedded".to_owned(), string);
        let data_dir = c.get(errs, "data_dir", "data/control".to_owned(), string);
        let endpoints = c.opt(errs, "etcd_endpoints", |v| Ok(v.clone()));
        let etcd_table = c.opt(errs, "etcd", |v| Ok(v.clone()));
        let env = |k: &str| std::env::var(k).ok();
        let etcd = match (endpoints, etcd_table) {
            (Some(_), Some(_)) => {
                errs.push(
                    "control.etcd_endpoints",
                    "give the endpoints in [control.etcd] or here, not both",
                );
                None
            }
            (Some(list), None) => {
                if list.as_array().is_some_and(Vec::is_empty) {
                    errs.push("control.etcd_endpoints", "needs at least one endpoint");
                    None
                } else {
                    streamgate_store::etcd::EtcdConfig::read(
                        "control.etcd_endpoints",
                        &list,
                        &env,
                        errs,
                    )
                }
            }
            (None, Some(t)) => {
                streamgate_store::etcd::EtcdConfig::read("control.etcd", &t, &env, errs)
            }
            (None, None) => Some(streamgate_store::etcd::EtcdConfig::new(vec![
                "http://127.0.0.1:2379".to_owned(),
            ])),
        };
        let store = match kind.as_str() {
            "embedded" => StoreConfig::Embedded {
                data_dir: PathBuf::from(data_dir),
            },
            "etcd" => StoreConfig::Etcd(Box::new(
                etcd.unwrap_or_else(|| streamgate_store::etcd::EtcdConfig::new(Vec::new())),
            )),
            other => {
                errs.push(
                    "control.store",
                    format!("{other:?} is not \"embedded\" or \"etcd\""),
                );
                StoreConfig::Embedded {
                    data_dir: PathBuf::from(data_dir),
                }
            }
        };
        let token_file = c.opt(errs, "admin_token_file", string);
        let mut admin_tokens = Vec::new();
        match token_file {
            None => errs.push(
                "control.admin_token_file",
                "required: a file with one admin token per line",
            ),
            Some(f) => match std::fs::read_to_string(&f) {
                Err(e) => errs.push("control.admin_token_file", format!("cannot read {f}: {e}")),
                Ok(text) => match crate::auth::token_lines(&text) {
                    Ok(lines) => admin_tokens = lines,
                    Err(e) => errs.push("control.admin_token_file", format!("{f}: {e}")),
                },
            },
        }
        let cert = c.opt(errs, "tls_cert", string);
        let key = c.opt(errs, "tls_key", string);
        let client_ca = c.opt(errs, "client_ca", string);
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: pem(errs, "tls_cert", &cert, false),
                key: pem(errs, "tls_key", &key, true),
                client_ca: client_ca.map(|ca| pem(errs, "client_ca", &ca, false)),
            }),
            (None, None) => {
                if client_ca.is_some() {
                    errs.push("control.client_ca", "needs tls_cert and tls_key");
                }
                None
            }
            _ => {
                errs.push("control.tls_cert", "tls_cert and tls_key go together");
                None
            }
        };
        let mut chains = Vec::new();
        for (i, id) in c
            .get(errs, "chains", Vec::new(), strings)
            .iter()
            .enumerate()
        {
            match streamgate_policy::address::ChainId::parse(id) {
                Ok(id) => chains.push(id),
                Err(m) => errs.push(format!("control.chains[{i}]"), m),
            }
        }
        let instance = c.opt(errs, "instance", string).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default();
            format!(
                "{}-{}",
                if host.is_empty() { "control" } else { &host },
                std::process::id()
            )
        });
        let election_ttl = c.get(
            errs,
            "election_ttl",
            std::time::Duration::from_secs(10),
            streamgate_config::duration,
        );
        if election_ttl < std::time::Duration::from_secs(2)
            || election_ttl > std::time::Duration::from_secs(300)
        {
            errs.push("control.election_ttl", "must be from 2s to 5m");
        }
        let edge_prune_after = c.get(
            errs,
            "edge_prune_after",
            std::time::Duration::from_secs(600),
            streamgate_config::duration,
        );
        if edge_prune_after < std::time::Duration::from_secs(60) {
            errs.push(
                "control.edge_prune_after",
                "must be at least 1m (edges refresh their records every 30 s)",
            );
        }
        c.finish(errs);
        for s in OTHER_SECTIONS {
            let _ = root.table(errs, s);
        }
        root.finish(errs);
        Self {
            listen,
            admin_listen,
            store,
            admin_tokens,
            tls,
            chains,
            instance,
            election_ttl,
            edge_prune_after,
        }
    }
}
