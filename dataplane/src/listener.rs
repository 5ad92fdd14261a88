//! Listeners: the Pingora server with the TCP front (plain and TLS) and the admin port.
//! [`run`] blocks until shutdown; tests and `streamgate dev` stop it through [`Shutdown`].

mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
use streamgate_origin::Origin;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::EdgeConfig;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

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
    /// The TLS certificate or key could not be loaded.
    #[error("TLS certificate or key: {0}")]
    Tls(String),
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

/// A built edge, ready to run.
pub struct Edge {
    cfg: EdgeConfig,
    pipeline: Arc<Pipeline>,
    ready: Arc<AtomicBool>,
}

impl Edge {
    /// Builds the origin client, cache and pipeline, and checks the listen addresses.
    pub fn build(cfg: EdgeConfig) -> Result<Self, StartError> {
        let origin = Origin::from_config(&cfg.origin)?;
        let metrics = Arc::new(Metrics::new(origin.kind().as_str()));
        let pipeline = Pipeline::new(origin, cfg.cache.clone(), &cfg.cors, metrics);
        let mut addrs = vec![cfg.http_listen, cfg.admin_listen];
        if let Some(tls) = &cfg.tls {
            addrs.push(cfg.tls_listen);
            for p in [&tls.cert, &tls.key] {
                if !p.exists() {
                    return Err(StartError::Tls(format!("{} does not exist", p.display())));
                }
            }
        }
        for addr in addrs {
            // Pingora binds later and cannot report a taken port cleanly; check first.
            std::net::TcpListener::bind(addr)
                .map_err(|source| StartError::Bind { addr, source })?;
        }
        Ok(Self {
            cfg,
            pipeline: Arc::new(pipeline),
            ready: Arc::new(AtomicBool::new(false)),
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
        if let Some(tls) = &self.cfg.tls {
            let mut settings =
                TlsSettings::intermediate(&tls.cert.to_string_lossy(), &tls.key.to_string_lossy())
                    .map_err(|e| StartError::Tls(e.to_string()))?;
            settings.enable_h2();
            front.add_tls_with_settings(&self.cfg.tls_listen.to_string(), None, settings);
        }
        server.add_service(front);

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
            admin = %self.cfg.admin_listen,
            "edge listening"
        );
        server.run(RunArgs {
            shutdown_signal: Box::new(Signals(shutdown.subscribe())),
        });
        Ok(())
    }
}
