//! Certificate reloads: the files are checked every `tls_reload_interval`, and at once on
//! SIGHUP. A new pair goes into service for the next handshake on TCP and QUIC alike; a
//! broken pair is logged and the current certificate stays.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

use crate::tls::CertStore;

pub(crate) struct CertReloader {
    pub(crate) store: Arc<CertStore>,
    pub(crate) interval: Duration,
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; certificates reload on the timer only");
                None
            }
        };
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
                _ = shutdown.changed() => return,
            };
            match self.store.reload(force) {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed; keeping the current one")
                }
            }
        }
    }
}
