//! Edge configuration: read from TOML and `STREAMGATE_*` variables into typed values.
//!
//! Every default is written once, in [`EdgeConfig::default`] and the `Default`
//! impls below. Validation reports every error with its field path.

pub use streamgate_config as reader;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use streamgate_origin::{HttpOrigin, OriginConfig, S3Origin};

use reader::{ConfigErrors, Errors, Fields};

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

/// HTTP/3 (QUIC) listener settings. Every default is written here once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http3Config {
    /// Serve HTTP/3 on UDP `tls_listen` when TLS is configured.
    pub enabled: bool,
    /// `ma` of the `Alt-Svc` header sent on every TLS response over TCP.
    pub alt_svc_max_age: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive PING interval, so NATs keep the path open during player pauses.
    pub keep_alive: Duration,
    /// Concurrent request streams a client may open on one connection.
    pub max_concurrent_streams: u32,
    /// New connections beyond this many open ones are refused.
    pub max_connections: usize,
    /// Per-stream receive window (also the window a client gets for uploads).
    pub stream_receive_window: u64,
    /// Per-connection receive window.
    pub receive_window: u64,
    /// Per-connection send window: bytes in flight to one client, across streams.
    pub send_window: u64,
    /// UDP socket send and receive buffer size (SO_SNDBUF / SO_RCVBUF).
    pub socket_buffer: u64,
    /// Use generic segmentation offload where the kernel has it.
    pub gso: bool,
    /// Upper bound of path MTU discovery, as a UDP payload size. 1452 fits any Ethernet
    /// path; loopback and jumbo-frame networks gain from more (up to 65527). Probing above
    /// the real path MTU is safe: lost probes only stop the search.
    pub max_udp_payload: u16,
    /// Ask clients to acknowledge less often (the ACK frequency extension), which saves
    /// packets and CPU on both ends for large downloads.
    pub ack_frequency: bool,
    /// Largest request header section accepted; larger ones are refused.
    pub max_header_bytes: u64,
    /// Time a client gets to send its request headers after opening a stream.
    pub request_header_timeout: Duration,
}

impl Default for Http3Config {
    fn default() -> Self {
        Self {
            enabled: true,
            alt_svc_max_age: Duration::from_secs(86400),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            max_concurrent_streams: 256,
            max_connections: 10_000,
            stream_receive_window: 4 << 20,
            receive_window: 16 << 20,
            send_window: 16 << 20,
            socket_buffer: 4 << 20,
            gso: true,
            max_udp_payload: 1452,
            ack_frequency: false,
            max_header_bytes: 16 << 10,
            request_header_timeout: Duration::from_secs(10),
        }
    }
}

/// Which browser origins may read responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Allowed `Origin` values; `"*"` allows any. Empty turns CORS off.
    pub allow_origins: Vec<String>,
    /// `Access-Control-Max-Age` of preflight answers.
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
}

/// Wallet sign-in settings (`[edge.auth]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// PKCS#8 Ed25519 private key (PEM) that signs session tokens; every edge of a
    /// deployment holds the same one, so any edge accepts any edge's session.
    pub session_key: PathBuf,
    /// The `kid` of session tokens.
    pub session_kid: String,
    /// The host[:port] named in sign-in messages; a message for another domain is refused.
    pub domain: String,
    /// The URI named in sign-in messages.
    pub uri: String,
    /// The chains wallets may sign in on.
    pub chains: Vec<streamgate_policy::address::ChainId>,
    /// The statement shown in the wallet.
    pub statement: String,
    /// How long a challenge's nonce is valid.
    pub nonce_ttl: Duration,
    /// How long a session token is valid.
    pub session_ttl: Duration,
}

/// Access control settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// A policy snapshot file (JSON: policies, assets, keys). Without one the edge is open
    /// and every asset is public.
    pub snapshot: Option<PathBuf>,
    /// Clock skew allowed on token `exp` and `nbf`.
    pub leeway: Duration,
    /// Verified tokens remembered (each until it expires).
    pub token_cache_entries: u64,
    /// How often the snapshot file is checked for changes (file mode).
    pub reload_interval: Duration,
    /// The etcd cluster to watch (endpoints, TLS, credentials: `etcd = [URLs]` or an
    /// `[edge.gate.etcd]` table, see [`streamgate_store::etcd::EtcdConfig`]). With it the
    /// edge follows the control plane's state, and `snapshot` is its last-known-good file:
    /// written after every applied revision and loaded at start when etcd cannot be reached.
    pub etcd: Option<streamgate_store::etcd::EtcdConfig>,
    /// This edge's name in `/streamgate/v1/edges/` (default: `<hostname>-<http port>`).
    pub edge_id: Option<String>,
    /// How long a starting edge waits for etcd before it falls back to the snapshot file.
    pub initial_sync_timeout: Duration,
    /// What a request for an asset the snapshot does not know gets.
    pub unknown_asset: UnknownAsset,
}

/// The answer to a request for an asset the edge does not know (guarded edges only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownAsset {
    /// Answer as a gated asset would, so asset ids cannot be enumerated: 401 without a
    /// credential, 403 with the token's reason for an invalid one, and 404 only for a
    /// valid credential (`conceal`, the default).
    #[default]
    Conceal,
    /// 404 `unknown_asset` whatever the request carries (`not_found`).
    NotFound,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            snapshot: None,
            leeway: Duration::from_secs(30),
            token_cache_entries: 100_000,
            reload_interval: Duration::from_secs(2),
            etcd: None,
            edge_id: None,
            initial_sync_timeout: Duration::from_secs(3),
            unknown_asset: UnknownAsset::Conceal,
        }
    }
}

/// Cache sizes and lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Byte budget of the in-memory cache (bodies and keys).
    pub max_bytes: u64,
    /// Objects larger than this stream from origin without being cached (`x-cache: BYPASS`).
    pub max_object_bytes: u64,
    /// Freshness of playlists and MPDs.
    pub manifest_ttl: Duration,
    /// Freshness of segments and init segments.
    pub segment_ttl: Duration,
    /// How long past freshness an object may still be served when the origin fails.
    pub stale_if_error: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 512 << 20,
            max_object_bytes: 64 << 20,
            manifest_ttl: Duration::from_secs(2),
            segment_ttl: Duration::from_secs(24 * 3600),
            stale_if_error: Duration::from_secs(3600),
        }
    }
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

        let mut q = e.table(errs, "http3");
        let h = d.http3;
        let http3 = Http3Config {
            enabled: q.get(errs, "enabled", h.enabled, boolean),
            alt_svc_max_age: q.get(errs, "alt_svc_max_age", h.alt_svc_max_age, duration),
            idle_timeout: q.get(errs, "idle_timeout", h.idle_timeout, duration),
            keep_alive: q.get(errs, "keep_alive", h.keep_alive, duration),
            max_concurrent_streams: q.get(
                errs,
                "max_concurrent_streams",
                u64::from(h.max_concurrent_streams),
                int_in(1, 65_536),
            ) as u32,
            max_connections: q.get(
                errs,
                "max_connections",
                h.max_connections as u64,
                int_in(1, 10_000_000),
            ) as usize,
            stream_receive_window: q.get(
                errs,
                "stream_receive_window",
                h.stream_receive_window,
                byte_size,
            ),
            receive_window: q.get(errs, "receive_window", h.receive_window, byte_size),
            send_window: q.get(errs, "send_window", h.send_window, byte_size),
            socket_buffer: q.get(errs, "socket_buffer", h.socket_buffer, byte_size),
            gso: q.get(errs, "gso", h.gso, boolean),
            max_udp_payload: q.get(
                errs,
                "max_udp_payload",
                u64::from(h.max_udp_payload),
                int_in(1200, 65527),
            ) as u16,
            ack_frequency: q.get(errs, "ack_frequency", h.ack_frequency, boolean),
            max_header_bytes: q.get(errs, "max_header_bytes", h.max_header_bytes, byte_size),
            request_header_timeout: q.get(
                errs,
                "request_header_timeout",
                h.request_header_timeout,
                duration,
            ),
        };
        // QUIC varints cap flow-control windows at 2^62 - 1; keep them sane and non-zero.
        for (name, v) in [
            ("stream_receive_window", http3.stream_receive_window),
            ("receive_window", http3.receive_window),
            ("send_window", http3.send_window),
        ] {
            if !(16 << 10..=1 << 32).contains(&v) {
                errs.push(
                    format!("edge.http3.{name}"),
                    "must be between 16KiB and 4GiB",
                );
            }
        }
        // quinn sends up to 10 segments per GSO batch, and Linux refuses UDP sends over
        // 65507 bytes: larger payloads make every batch fail and throughput collapse.
        if http3.gso && u32::from(http3.max_udp_payload) * 10 > 65_507 {
            errs.push(
                "edge.http3.max_udp_payload",
                "must be at most 6550 while edge.http3.gso is on (10 segments per batch, 65507 bytes per send)",
            );
        }
        if http3.idle_timeout.is_zero() || http3.keep_alive >= http3.idle_timeout {
            errs.push(
                "edge.http3.keep_alive",
                "must be shorter than edge.http3.idle_timeout",
            );
        }
        q.finish(errs);

        let mut c = e.table(errs, "cors");
        let cors = CorsConfig {
            allow_origins: c.get(errs, "allow_origins", d.cors.allow_origins, strings),
            max_age: c.get(errs, "max_age", d.cors.max_age, duration),
        };
        c.finish(errs);

        let mut k = e.table(errs, "cache");
        let cache = CacheConfig {
            max_bytes: k.get(errs, "max_bytes", d.cache.max_bytes, byte_size),
            max_object_bytes: k.get(
                errs,
                "max_object_bytes",
                d.cache.max_object_bytes,
                byte_size,
            ),
            manifest_ttl: k.get(errs, "manifest_ttl", d.cache.manifest_ttl, duration),
            segment_ttl: k.get(errs, "segment_ttl", d.cache.segment_ttl, duration),
            stale_if_error: k.get(errs, "stale_if_error", d.cache.stale_if_error, duration),
        };
        if cache.max_object_bytes > cache.max_bytes {
            errs.push(
                "edge.cache.max_object_bytes",
                "must not exceed edge.cache.max_bytes",
            );
        }
        if cache.max_object_bytes > u64::from(u32::MAX) {
            errs.push("edge.cache.max_object_bytes", "must be below 4GiB");
        }
        k.finish(errs);

        let mut a = e.table(errs, "auth");
        let auth = match a.opt(errs, "session_key", path) {
            None => None,
            Some(session_key) => {
                let domain = a.opt(errs, "domain", string).unwrap_or_else(|| {
                    errs.push(
                        "edge.auth.domain",
                        "required with session_key: the host[:port] viewers sign in to",
                    );
                    String::new()
                });
                let uri = a
                    .opt(errs, "uri", string)
                    .unwrap_or_else(|| format!("https://{domain}"));
                let chains = a.get(errs, "chains", vec!["eip155:1".to_owned()], strings);
                let mut parsed = Vec::new();
                for (i, c) in chains.iter().enumerate() {
                    match streamgate_policy::address::ChainId::parse(c) {
                        Ok(c) => parsed.push(c),
                        Err(m) => errs.push(format!("edge.auth.chains[{i}]"), m),
                    }
                }
                Some(AuthConfig {
                    session_key,
                    session_kid: a.get(errs, "session_kid", "wallet-session".to_owned(), string),
                    domain,
                    uri,
                    chains: parsed,
                    statement: a.get(
                        errs,
                        "statement",
                        "Sign in to watch with this wallet.".to_owned(),
                        string,
                    ),
                    nonce_ttl: a.get(errs, "nonce_ttl", Duration::from_secs(300), duration),
                    session_ttl: a.get(errs, "session_ttl", Duration::from_secs(3600), duration),
                })
            }
        };
        a.finish(errs);

        let chains = streamgate_web3::config::read(&mut e, errs);

        let mut g = e.table(errs, "gate");
        let gate = GateConfig {
            snapshot: g.opt(errs, "snapshot", path),
            leeway: g.get(errs, "leeway", d.gate.leeway, duration),
            token_cache_entries: g.get(
                errs,
                "token_cache_entries",
                d.gate.token_cache_entries,
                int_in(1, 100_000_000),
            ),
            reload_interval: g.get(errs, "reload_interval", d.gate.reload_interval, duration),
            etcd: None,
            edge_id: g.opt(errs, "edge_id", string),
            initial_sync_timeout: g.get(
                errs,
                "initial_sync_timeout",
                d.gate.initial_sync_timeout,
                duration,
            ),
            unknown_asset: match g.opt(errs, "unknown_asset", string).as_deref() {
                None | Some("conceal") => UnknownAsset::Conceal,
                Some("not_found") => UnknownAsset::NotFound,
                Some(other) => {
                    errs.push(
                        "edge.gate.unknown_asset",
                        format!("{other:?} is not one of \"conceal\", \"not_found\""),
                    );
                    UnknownAsset::Conceal
                }
            },
        };
        let mut gate = gate;
        if let Some(v) = g.opt(errs, "etcd", |v| Ok(v.clone())) {
            let env = |k: &str| std::env::var(k).ok();
            gate.etcd = streamgate_store::etcd::EtcdConfig::read("edge.gate.etcd", &v, &env, errs);
        }
        if let Some(id) = &gate.edge_id
            && (id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
        {
            errs.push(
                "edge.gate.edge_id",
                "1-128 characters: letters, digits, '-', '_', '.', ':'",
            );
        }
        g.finish(errs);
        e.finish(errs);

        let mut o = root.table(errs, "origin");
        let origin = read_origin(&mut o, errs, d.origin);
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
            auth,
            chains,
            origin,
        }
    }
}

fn read_origin(o: &mut Fields<'_>, errs: &mut Errors, default: OriginConfig) -> OriginConfig {
    use reader::*;
    let kind = o.get(errs, "kind", "fs".to_owned(), string);
    let secs = |n| Duration::from_secs(n);
    match kind.as_str() {
        "fs" => {
            let root = o.opt(errs, "root", path);
            match (root, default) {
                (Some(root), _) => OriginConfig::Fs { root },
                (None, d) => d,
            }
        }
        "http" => {
            let base_url = o.opt(errs, "base_url", string).unwrap_or_default();
            if base_url.is_empty() {
                errs.push("origin.base_url", "required when origin.kind = \"http\"");
            } else if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                errs.push("origin.base_url", "must start with http:// or https://");
            }
            OriginConfig::Http(HttpOrigin {
                base_url,
                timeout: o.get(errs, "timeout", secs(10), duration),
                connect_timeout: o.get(errs, "connect_timeout", secs(2), duration),
                pool_max_idle_per_host: o.get(errs, "pool_max_idle_per_host", 64, int_in(0, 65536))
                    as usize,
                pool_idle_timeout: o.get(errs, "pool_idle_timeout", secs(90), duration),
            })
        }
        "s3" => {
            let bucket = o.opt(errs, "bucket", string).unwrap_or_default();
            if bucket.is_empty() {
                errs.push("origin.bucket", "required when origin.kind = \"s3\"");
            }
            OriginConfig::S3(S3Origin {
                bucket,
                prefix: o.opt(errs, "prefix", string),
                endpoint: o.opt(errs, "endpoint", string),
                region: o.get(errs, "region", "us-east-1".to_owned(), string),
                access_key_id: o.opt(errs, "access_key_id", string),
                secret_access_key: o.opt(errs, "secret_access_key", string),
                allow_http: o.get(errs, "allow_http", false, boolean),
                timeout: o.get(errs, "timeout", secs(10), duration),
            })
        }
        other => {
            errs.push(
                "origin.kind",
                format!("{other:?} is not one of \"fs\", \"http\", \"s3\""),
            );
            default
        }
    }
}

#[cfg(test)]
mod tests;
