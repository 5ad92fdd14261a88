//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (the edge can serve).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::pipeline::Pipeline;

/// Serves the admin endpoints.
pub(crate) struct Admin {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) ready: Arc<AtomicBool>,
}

fn text(status: StatusCode, ctype: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static headers are valid")
}

impl Admin {
    /// Ready once the listeners run and, on a guarded edge, a snapshot is in force.
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && (!self.pipeline.gate().is_guarded() || self.pipeline.gate().revision().is_some())
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => {
                let m = self.pipeline.metrics();
                let c = self.pipeline.cache();
                m.cache_bytes
                    .set(i64::try_from(c.weighted_size()).unwrap_or(i64::MAX));
                m.cache_entries
                    .set(i64::try_from(c.entry_count()).unwrap_or(i64::MAX));
                m.inflight_fills
                    .set(i64::try_from(c.inflight()).unwrap_or(i64::MAX));
                m.ready.set(i64::from(self.is_ready()));
                text(StatusCode::OK, "text/plain; version=0.0.4", m.render())
            }
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.is_ready() => text(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"not ready\n".to_vec(),
            ),
            _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
