//! StreamGate's control plane.
//!
//! Operators manage policies, assets, keys and purges here; edges enforce what it
//! publishes by watching the same store. [`api`] is the gRPC API (`PolicyService` with
//! Watch, `AssetService`, `KeyService`, `PurgeService`, `AuditService`, `EdgeService`)
//! behind [`api::AdminAuth`]; every mutation commits with its audit entry in one store
//! transaction. [`store`] is the versioned state store (etcd or embedded), [`config`] the
//! `[control]` section, [`token`] token minting, and [`dev`] what `streamgate dev` seeds.
//! [`metrics`] counts gRPC calls, store operations and background work, and [`admin`]
//! serves them on the admin port (9101) with `/healthz` and `/readyz`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod background;
pub mod config;
pub mod dev;
pub mod job;
pub mod metrics;
pub use streamgate_store as store;
pub mod token;

use std::sync::Arc;

/// Runs the control plane described by `cfg` until `shutdown` completes.
pub async fn run(
    cfg: config::ControlConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let store: Arc<dyn store::Store> = match &cfg.store {
        config::StoreConfig::Embedded { data_dir } => Arc::new(
            store::embedded::EmbeddedStore::open(&data_dir.join("store.log"))?,
        ),
        // Connecting never waits for etcd: started during an outage, the API serves with
        // health NOT_SERVING and UNAVAILABLE answers until a member answers. Refused
        // credentials are an error here, at start.
        config::StoreConfig::Etcd(etcd) => {
            Arc::new(store::etcd::EtcdStore::connect_with(etcd).await?)
        }
    };
    let metrics = Arc::new(metrics::ControlMetrics::new());
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|e| RunError::Bind(cfg.admin_listen, e))?;
    tracing::info!(listen = %cfg.admin_listen, "control plane admin listening");
    let raw_store = Arc::clone(&store);
    let store: Arc<dyn store::Store> =
        Arc::new(metrics::MeteredStore::new(store, Arc::clone(&metrics)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admin = {
        let mut stopped = stopped.clone();
        tokio::spawn(admin::serve(
            admin_listener,
            admin::Admin {
                metrics: Arc::clone(&metrics),
                store: raw_store,
            },
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ))
    };
    let background = tokio::spawn(background::run(
        Arc::clone(&store),
        background::Background {
            instance: cfg.instance.clone(),
            ttl: cfg.election_ttl,
            edge_prune_after: cfg.edge_prune_after,
            metrics: Arc::clone(&metrics),
        },
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| RunError::Bind(cfg.listen, e))?;
    let tls = cfg.tls.as_ref().map(|t| {
        let mut c = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&t.cert, &t.key));
        if let Some(ca) = &t.client_ca {
            c = c.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        c
    });
    let served = api::serve_with(
        listener,
        store,
        api::AdminAuth::new(cfg.admin_tokens),
        tls,
        cfg.chains,
        metrics,
        shutdown,
    )
    .await;
    // Hand the background work over (resign) before exiting.
    stop.send_replace(true);
    let _ = admin.await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), background).await;
    served.map_err(|e| RunError::Serve(e.to_string()))
}

impl RunError {
    /// Whether the store refused our credentials (exit 69, EX_UNAVAILABLE).
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Store(store::StoreError::Denied(_)))
    }
}

/// Why the control plane stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The store could not be opened or reached.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(String),
}
