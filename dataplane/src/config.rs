//! Edge configuration: read from TOML and `STREAMGATE_*` variables into typed values.
//!
//! Every default is written once, in [`EdgeConfig::default`] and the `Default` impls of
//! the sections. Each section (`[edge.http3]`, `[edge.cors]`, `[edge.cache]`,
//! `[edge.auth]`, `[edge.gate]`, `[edge.rate_limit]`, `[edge.sessions]`, `[edge.analytics]`, `[edge.player]`, `[edge.access_log]`; `[edge.chains]` in `streamgate-web3`, `[origin]` in
//! `streamgate-origin`) has its type and its reader in one module; [`EdgeConfig::from_table`]
//! reads the top-level keys and calls them in turn. Validation reports every error with its
//! field path.

pub use streamgate_config as reader;

mod access_log;
mod analytics;
mod auth;
mod cache;
mod cors;
mod gate;
mod http3;
mod limit;
mod player;
mod session;

pub use access_log::AccessLogConfig;
pub use analytics::AnalyticsConfig;
pub use auth::AuthConfig;
pub use cache::CacheConfig;
pub use cors::CorsConfig;
pub use gate::{GateConfig, UnknownAsset};
pub use http3::Http3Config;
pub use limit::RateLimitConfig;
pub use player::PlayerConfig;
pub use session::SessionConfig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use streamgate_origin::OriginConfig;

use reader::{ConfigErrors, Errors};

/// Sections of the shared config file that belong to other components; the edge skips them.
const OTHER_SECTIONS: &[&str] = &["control", "transcode", "ingest", "load", "dev"];

/// The whole typed configuration of one edge.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// Plain HTTP/1.1 and h2c listener.
    pub http_listen: SocketAddr,
    /// TLS listener (HTTP/1.1 and h2); enabled when `tls` is set.
    pub tls_listen: SocketAddr,
    /// Admin listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// Certificate and key for the TLS listener.
    pub tls: Option<TlsFiles>,
    /// Worker threads for the serving runtime.
    pub threads: usize,
    /// How often certificate files are checked for changes (SIGHUP checks at once).
    pub tls_reload_interval: Duration,
    /// HTTP/3 on UDP, on the TLS port.
    pub http3: Http3Config,
    /// How long in-flight requests may run after a graceful-shutdown signal.
    pub shutdown_grace: Duration,
    /// Cross-origin access for browser players.
    pub cors: CorsConfig,
    /// The in-memory cache.
    pub cache: CacheConfig,
    /// Access control.
    pub gate: GateConfig,
    /// Rate limits (`[edge.rate_limit]`); policies override them for their assets.
    pub rate_limit: RateLimitConfig,
    /// Playback sessions and stream caps (`[edge.sessions]`).
    pub sessions: SessionConfig,
    /// QoE aggregates from CMCD (`[edge.analytics]`).
    pub analytics: AnalyticsConfig,
    /// The player page's libraries (`[edge.player]`).
    pub player: PlayerConfig,
    /// One JSON line per request (`[edge.access_log]`).
    pub access_log: AccessLogConfig,
    /// Wallet sign-in (`[edge.auth]`); off unless a session key is set.
    pub auth: Option<AuthConfig>,
    /// The chain registry (`[edge.chains."<CAIP-2 id>"]`): RPC endpoints for `nft`
    /// conditions and ERC-1271 sign-in.
    pub chains: Vec<streamgate_web3::ChainConfig>,
    /// Origin storage.
    pub origin: OriginConfig,
}

/// Paths of a PEM certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tls_listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
            tls: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            tls_reload_interval: Duration::from_secs(10),
            http3: Http3Config::default(),
            shutdown_grace: Duration::from_secs(5),
            cors: CorsConfig::default(),
            cache: CacheConfig::default(),
            gate: GateConfig::default(),
            rate_limit: RateLimitConfig::default(),
            sessions: SessionConfig::default(),
            analytics: AnalyticsConfig::default(),
            player: PlayerConfig::default(),
            access_log: AccessLogConfig::default(),
            auth: None,
            chains: Vec::new(),
            origin: OriginConfig::Fs {
                root: PathBuf::from("data/origin"),
            },
        }
    }
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but has invalid values.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

impl EdgeConfig {
    /// Loads `path`, applies `STREAMGATE_*` environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, std::env::vars(), &path.display().to_string())
    }

    /// Parses `text`, applies overrides from `vars`, and validates. `name` appears in errors.
    pub fn from_toml_str(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        name: &str,
    ) -> Result<Self, LoadError> {
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| LoadError::Syntax {
            path: name.to_owned(),
            message: e.to_string(),
        })?;
        let mut errs = Errors::default();
        reader::apply_env(&mut doc, vars, &mut errs);
        let cfg = Self::from_table(&doc, &mut errs);
        Ok(errs.finish(cfg)?)
    }

    /// Reads typed config from a parsed document, recording every problem in `errs`.
    pub fn from_table(doc: &toml::Table, errs: &mut Errors) -> Self {
        use reader::*;
        let d = Self::default();
        let mut root = Fields::root(doc);
        let mut e = root.table(errs, "edge");
        let http_listen = e.get(errs, "http_listen", d.http_listen, socket_addr);
        let tls_listen = e.get(errs, "tls_listen", d.tls_listen, socket_addr);
        let admin_listen = e.get(errs, "admin_listen", d.admin_listen, socket_addr);
        let cert = e.opt(errs, "tls_cert", path);
        let key = e.opt(errs, "tls_key", path);
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                errs.push("edge.tls_key", "required when edge.tls_cert is set");
                None
            }
            (None, Some(_)) => {
                errs.push("edge.tls_cert", "required when edge.tls_key is set");
                None
            }
        };
        let threads = e.get(errs, "threads", d.threads as u64, int_in(1, 1024)) as usize;
        let tls_reload_interval =
            e.get(errs, "tls_reload_interval", d.tls_reload_interval, duration);
        let shutdown_grace = e.get(errs, "shutdown_grace", d.shutdown_grace, duration);

        let http3 = Http3Config::read(&mut e, errs);
        let cors = CorsConfig::read(&mut e, errs);
        let cache = CacheConfig::read(&mut e, errs);
        let auth = AuthConfig::read(&mut e, errs);
        let chains = streamgate_web3::config::read(&mut e, errs);
        let gate = GateConfig::read(&mut e, errs);
        let rate_limit = RateLimitConfig::read(&mut e, errs);
        let sessions = SessionConfig::read(&mut e, errs);
        let analytics = AnalyticsConfig::read(&mut e, errs);
        let player = PlayerConfig::read(&mut e, errs);
        let access_log = AccessLogConfig::read(&mut e, errs);

        e.finish(errs);

        let mut o = root.table(errs, "origin");
        let origin = streamgate_origin::read_origin(&mut o, errs, d.origin);
        o.finish(errs);

        for s in OTHER_SECTIONS {
            let _ = root.table(errs, s);
        }
        root.finish(errs);

        Self {
            http_listen,
            tls_listen,
            admin_listen,
            tls,
            threads,
            tls_reload_interval,
            http3,
            shutdown_grace,
            cors,
            cache,
            gate,
            rate_limit,
            sessions,
            analytics,
            player,
            access_log,
            auth,
            chains,
            origin,
        }
    }
}

#[cfg(test)]
mod tests;
