//! `streamgate transcode --config FILE`: the farm process. It runs the tus ingest
//! (`[transcode.ingest]`) and the workers (`[transcode.worker]`), each when its table is
//! present, over one state store and one origin.

pub mod config;

use std::sync::Arc;

use streamgate_control::auth::AdminTokens;
use streamgate_control::config::StoreConfig;
use streamgate_control::store::{self, Store, StoreError};
use streamgate_origin::{Staging, StagingError};

pub use config::{LoadError, TranscodeConfig, WorkerConfig};

use crate::ingest::Ingest;

/// Why the farm stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The state store could not be opened or reached.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// The origin's staging area cannot be used.
    #[error("origin staging area: {0}")]
    Staging(#[from] StagingError),
    /// A listen address is taken or not allowed.
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    /// A server failed.
    #[error("{0}")]
    Serve(std::io::Error),
    /// The configuration runs nothing.
    #[error("nothing to run: add [transcode.ingest] and/or [transcode.worker]")]
    Nothing,
}

/// Opens the configured state store.
pub async fn open_store(cfg: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match cfg {
        StoreConfig::Embedded { data_dir } => Arc::new(store::embedded::EmbeddedStore::open(
            &data_dir.join("store.log"),
        )?),
        StoreConfig::Etcd(etcd) => Arc::new(store::etcd::EtcdStore::connect_with(etcd).await?),
    })
}

/// Runs what `cfg` configures until `shutdown` completes.
pub async fn run(
    cfg: TranscodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    if cfg.ingest.is_none() && cfg.worker.is_none() {
        return Err(RunError::Nothing);
    }
    let store = open_store(&cfg.store).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(ingest_cfg) = cfg.ingest.clone() {
        let staging = Staging::from_config(&cfg.origin, ingest_cfg.s3_part_size)?
            .with_fsync(ingest_cfg.fsync);
        let listener = tokio::net::TcpListener::bind(ingest_cfg.listen)
            .await
            .map_err(|e| RunError::Bind(ingest_cfg.listen, e))?;
        tracing::info!(listen = %ingest_cfg.listen, origin = staging.kind().as_str(), "tus ingest listening");
        let ingest = Ingest::new(
            Arc::clone(&store),
            staging,
            AdminTokens::new(&cfg.admin_tokens),
            ingest_cfg,
        );
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            ingest
                .run(listener, async move {
                    let _ = stop.changed().await;
                })
                .await
        });
    }
    if let Some(mut worker) = cfg.worker.clone() {
        // `s3://` sources are read with the S3 origin's endpoint and credentials.
        if let streamgate_origin::OriginConfig::S3(s3) = &cfg.origin {
            worker.s3_sources = Some(s3.clone());
        }
        let origin = streamgate_origin::Origin::from_config(&cfg.origin)
            .map_err(|e| RunError::Serve(std::io::Error::other(e.to_string())))?;
        let store = Arc::clone(&store);
        let metrics = Arc::new(crate::farm::FarmMetrics::new());
        if let Some(addr) = worker.admin_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Bind(addr, e))?;
            tracing::info!(listen = %addr, "farm admin listening");
            let mut stop = stop_rx.clone();
            let m = Arc::clone(&metrics);
            tasks.spawn(async move {
                crate::farm::admin::serve(listener, m, async move {
                    let _ = stop.changed().await;
                })
                .await;
                Ok(())
            });
        }
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            crate::farm::run(store, origin, worker, metrics, async move {
                let _ = stop.changed().await;
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    let mut result = Ok(());
    tokio::select! {
        _ = shutdown => {}
        Some(done) = tasks.join_next() => {
            if let Ok(Err(e)) = done {
                result = Err(RunError::Serve(e));
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done
            && result.is_ok()
        {
            result = Err(RunError::Serve(e));
        }
    }
    result
}
