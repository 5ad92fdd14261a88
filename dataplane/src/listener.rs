//! Listeners: the Pingora server with the TCP front (plain and TLS) and the admin port.
//! [`run`] blocks until shutdown; tests and `streamgate dev` stop it through [`Shutdown`].

mod quic;
mod reload;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use streamgate_origin::Origin;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::EdgeConfig;
use crate::gate::{Gate, Snapshot};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::source::watch::{Source, StateWatcher};
use crate::tls::CertStore;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The origin could not be set up.
    #[error(transparent)]
    Origin(#[from] streamgate_origin::BuildError),
    /// A listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The policy snapshot could not be loaded.
    #[error("policy snapshot {path}: {message}")]
    Snapshot {
        /// The file.
        path: String,
        /// Every problem found.
        message: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS certificate or key: {0}")]
    Tls(String),
    /// A signing key (wallet sign-in, session ids) could not be loaded.
    #[error("{0}")]
    Auth(String),
    /// The player page's libraries could not be read.
    #[error("{0}")]
    Player(String),
    /// The access log could not be opened.
    #[error("{0}")]
    AccessLog(String),
}

/// A handle that stops a running edge gracefully.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Shutdown {
    /// A new handle; nothing is stopped until [`Shutdown::trigger`].
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    /// Starts a graceful shutdown.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// SIGTERM or [`Shutdown::trigger`] stop gracefully, SIGINT at once, as in Pingora.
struct Signals(watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        let mut int = signal(SignalKind::interrupt()).expect("signal handler");
        let mut rx = self.0.clone();
        tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = rx.wait_for(|v| *v) => ShutdownSignal::GracefulTerminate,
        }
    }
}

/// `<hostname>-<http port>`: stable across restarts, distinct for edges sharing a host.
fn default_edge_id(port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edge".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{port}")
}

/// A built edge, ready to run.
pub struct Edge {
    cfg: EdgeConfig,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    certs: Option<Arc<CertStore>>,
    quic: Option<(quinn::ServerConfig, std::net::UdpSocket)>,
    source: Option<Source>,
}

impl Edge {
    /// Builds the origin client, cache and pipeline, loads the certificate, and checks the
    /// listen addresses (binding the UDP socket for HTTP/3).
    pub fn build(cfg: EdgeConfig) -> Result<Self, StartError> {
        Self::build_with_store(cfg, None)
    }

    /// As [`Edge::build`], watching `store` for state (as `streamgate dev` does with its
    /// embedded store) instead of the configured etcd endpoints or snapshot file.
    pub fn build_with_store(
        cfg: EdgeConfig,
        store: Option<Arc<dyn streamgate_store::Store>>,
    ) -> Result<Self, StartError> {
        let origin = Origin::from_config(&cfg.origin)?;
        let metrics = Arc::new(Metrics::new(origin.kind().as_str()));
        let source = match store {
            Some(s) => Some(Source::Store(s)),
            None => cfg.gate.etcd.clone().map(|e| Source::Etcd(Box::new(e))),
        };
        let mut gate = match (&source, &cfg.gate.snapshot) {
            // Watching: start empty (503, not ready) until the store or the
            // last-known-good file provides a snapshot.
            (Some(_), _) => Gate::waiting(cfg.gate.leeway),
            (None, None) => Gate::open(),
            (None, Some(path)) => Gate::guarded(
                Snapshot::load(path, cfg.gate.token_cache_entries).map_err(|e| {
                    StartError::Snapshot {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    }
                })?,
                cfg.gate.leeway,
            ),
        };
        gate.set_unknown_asset(cfg.gate.unknown_asset);
        if let Some(rev) = gate.revision() {
            metrics.policy_revision.set(rev);
        }
        let chains = (!cfg.chains.is_empty()).then(|| {
            Arc::new(streamgate_web3::Chains::new(
                &cfg.chains,
                metrics.registry(),
            ))
        });
        if let Some(c) = &chains {
            gate.set_chains(Arc::clone(c));
        }
        let mut pipeline = Pipeline::new(
            gate,
            origin,
            cfg.cache.clone(),
            &cfg.cors,
            Arc::clone(&metrics),
        );
        pipeline.set_rate_limits(crate::limit::RateLimits::new(
            &cfg.rate_limit,
            metrics.registry(),
        ));
        let secret = cfg.sessions.secret().map_err(StartError::Auth)?;
        pipeline.set_sessions(Arc::new(crate::session::Sessions::new(
            &cfg.sessions,
            &secret,
            metrics.registry(),
        )));
        pipeline.set_sharing(Arc::new(crate::sharing::SharingGuard::new(
            &cfg.sessions,
            metrics.registry(),
        )));
        if cfg.access_log.path.is_some() {
            pipeline.set_access_log(
                crate::access_log::AccessLog::open(&cfg.access_log, metrics.registry())
                    .map_err(StartError::AccessLog)?,
            );
        }
        if let Some(dir) = &cfg.player.libraries {
            pipeline.set_player_libraries(
                crate::player::Libraries::load(dir).map_err(StartError::Player)?,
            );
        }
        if cfg.analytics.enabled {
            pipeline.set_analytics(Arc::new(crate::analytics::Analytics::new(
                &cfg.analytics,
                metrics.registry(),
            )));
        }
        if let Some(a) = &cfg.auth {
            let mut auth =
                crate::auth::Auth::new(a.clone()).map_err(|e| StartError::Auth(e.to_string()))?;
            if let Some(c) = &chains {
                auth.set_chains(Arc::clone(c));
            }
            pipeline.set_auth(Arc::new(auth));
        }
        let mut addrs = vec![cfg.http_listen, cfg.admin_listen];
        let mut certs = None;
        let mut quic = None;
        if let Some(files) = &cfg.tls {
            addrs.push(cfg.tls_listen);
            let store =
                CertStore::load(files.clone()).map_err(|e| StartError::Tls(e.to_string()))?;
            if cfg.http3.enabled {
                let server =
                    quic::server_config(Arc::clone(&store), &cfg.http3).map_err(StartError::Tls)?;
                let socket =
                    quic::bind_udp(cfg.tls_listen, cfg.http3.socket_buffer).map_err(|source| {
                        StartError::Bind {
                            addr: cfg.tls_listen,
                            source,
                        }
                    })?;
                pipeline.set_alt_svc(cfg.tls_listen.port(), cfg.http3.alt_svc_max_age);
                quic = Some((server, socket));
            }
            certs = Some(store);
        }
        for addr in addrs {
            // Pingora binds later and cannot report a taken port cleanly; check first.
            std::net::TcpListener::bind(addr)
                .map_err(|source| StartError::Bind { addr, source })?;
        }
        Ok(Self {
            cfg,
            pipeline: Arc::new(pipeline),
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            certs,
            quic,
            source,
        })
    }

    /// The request pipeline (for the HTTP/3 front and tests).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Runs until SIGTERM, SIGINT or `shutdown` fires. Blocks the calling thread.
    pub fn run(self, shutdown: &Shutdown) -> Result<(), StartError> {
        let conf = ServerConf {
            threads: self.cfg.threads,
            grace_period_seconds: Some(self.cfg.shutdown_grace.as_secs()),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);

        let mut front = Service::new(
            "edge".to_owned(),
            tcp::TcpFront::new(Arc::clone(&self.pipeline)),
        );
        front.add_tcp(&self.cfg.http_listen.to_string());
        if let (Some(tls), Some(store)) = (&self.cfg.tls, &self.certs) {
            let mut settings =
                TlsSettings::intermediate(&tls.cert.to_string_lossy(), &tls.key.to_string_lossy())
                    .map_err(|e| StartError::Tls(e.to_string()))?;
            // The resolver serves the current certificate, so reloads need no restart.
            settings.set_cert_resolver(Arc::clone(store) as _);
            settings.enable_h2();
            front.add_tls_with_settings(&self.cfg.tls_listen.to_string(), None, settings);
            let reloader = reload::CertReloader {
                store: Arc::clone(store),
                interval: self.cfg.tls_reload_interval,
            };
            let mut reloader = background_service("tls-reload", reloader);
            reloader.threads = Some(1);
            server.add_service(reloader);
        }
        server.add_service(front);
        if let Some((config, socket)) = self.quic {
            let front = quic::QuicFront {
                pipeline: Arc::clone(&self.pipeline),
                metrics: Arc::clone(&self.metrics),
                cfg: self.cfg.http3.clone(),
                server: config,
                socket: std::sync::Mutex::new(Some(socket)),
                grace: self.cfg.shutdown_grace,
            };
            let mut h3 = background_service("http3", front);
            h3.threads = Some(self.cfg.threads);
            server.add_service(h3);
        }

        if let Some(source) = self.source.clone() {
            let edge_id = self
                .cfg
                .gate
                .edge_id
                .clone()
                .unwrap_or_else(|| default_edge_id(self.cfg.http_listen.port()));
            let watcher = StateWatcher {
                pipeline: Arc::clone(&self.pipeline),
                source,
                lkg: self.cfg.gate.snapshot.clone(),
                edge_id,
                token_cache_entries: self.cfg.gate.token_cache_entries,
                initial_sync_timeout: self.cfg.gate.initial_sync_timeout,
            };
            let mut watcher = background_service("state-watch", watcher);
            watcher.threads = Some(1);
            server.add_service(watcher);
        } else if let Some(path) = &self.cfg.gate.snapshot {
            let reloader = crate::source::file::SnapshotReloader {
                pipeline: Arc::clone(&self.pipeline),
                path: path.clone(),
                interval: self.cfg.gate.reload_interval,
                token_cache_entries: self.cfg.gate.token_cache_entries,
            };
            let mut reloader = background_service("snapshot-reload", reloader);
            reloader.threads = Some(1);
            server.add_service(reloader);
        }

        if let Some(chains) = self.pipeline.gate().chains() {
            // The cursor sits next to the last-known-good snapshot, where there is one.
            let cursor_file = self.cfg.gate.snapshot.as_ref().map(|p| {
                let mut name = p.file_name().unwrap_or_default().to_os_string();
                name.push(".chains.json");
                p.with_file_name(name)
            });
            let indexer = ChainIndexer(streamgate_web3::index::Indexer {
                chains: Arc::clone(chains),
                cursor_file,
            });
            let mut indexer = background_service("chain-index", indexer);
            indexer.threads = Some(1);
            server.add_service(indexer);
        }

        let admin = Admin {
            pipeline: Arc::clone(&self.pipeline),
            ready: Arc::clone(&self.ready),
        };
        let mut admin = Service::new("admin".to_owned(), HttpServer::new_app(admin));
        admin.add_tcp(&self.cfg.admin_listen.to_string());
        admin.threads = Some(1);
        server.add_service(admin);

        server.bootstrap();
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            http = %self.cfg.http_listen,
            tls = ?self.cfg.tls.as_ref().map(|_| self.cfg.tls_listen),
            http3 = self.cfg.tls.is_some() && self.cfg.http3.enabled,
            admin = %self.cfg.admin_listen,
            "edge listening"
        );
        server.run(RunArgs {
            shutdown_signal: Box::new(Signals(shutdown.subscribe())),
        });
        Ok(())
    }
}

/// Runs the chain indexer as a Pingora background service.
struct ChainIndexer(streamgate_web3::index::Indexer);

#[async_trait]
impl pingora_core::services::background::BackgroundService for ChainIndexer {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        // Pingora's shutdown watch turns true on shutdown, as the indexer expects.
        let stop = shutdown.clone();
        let _ = &mut shutdown;
        self.0.run(stop).await;
    }
}
