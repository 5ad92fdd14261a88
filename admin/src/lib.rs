//! The admin port of the control plane (9101) and the farm (9102): `/metrics` (Prometheus
//! text), `/healthz` (the process runs) and, where the component has a notion of it,
//! `/readyz`. Each component says what to serve through [`Endpoints`]; [`serve`] is the
//! HTTP/1 server around it, shaped `serve(listener, endpoints, shutdown)` so tests bind
//! port 0. The edge serves the same paths from its Pingora server (`streamgate-edge`'s
//! `admin` module), since it already runs one.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

/// What `/readyz` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The component has no readiness check: `/readyz` is not served (404).
    NotServed,
    /// Ready (200).
    Ready,
    /// Not ready (503), with the reason shown in the body.
    NotReady(&'static str),
}

/// What one component's admin port serves.
pub trait Endpoints: Send + Sync + 'static {
    /// The Prometheus text exposition of the component's metrics.
    fn metrics(&self) -> impl Future<Output = Vec<u8>> + Send;
    /// Whether the component can do its work now.
    fn ready(&self) -> impl Future<Output = Readiness> + Send;
}

/// The Prometheus text format's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

fn reply(status: StatusCode, ctype: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}

fn json_error(status: StatusCode, error: &str, reason: &str) -> Response<Full<Bytes>> {
    let body = format!("{{\"error\":\"{error}\",\"reason\":\"{reason}\"}}");
    reply(status, "application/json", Bytes::from(body))
}

/// Answers one admin request.
pub async fn respond<E: Endpoints>(method: &Method, path: &str, e: &E) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET or HEAD",
        );
    }
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            Bytes::from(e.metrics().await),
        ),
        "/healthz" => reply(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(b"{\"status\":\"ok\"}"),
        ),
        "/readyz" => match e.ready().await {
            Readiness::Ready => reply(
                StatusCode::OK,
                "application/json",
                Bytes::from_static(b"{\"status\":\"ready\"}"),
            ),
            Readiness::NotReady(reason) => {
                json_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason)
            }
            Readiness::NotServed => json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "this admin port serves /metrics and /healthz",
            ),
        },
        _ => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this admin port serves /metrics, /healthz and /readyz",
        ),
    }
}

/// Serves the admin endpoints of `endpoints` on `listener` until `shutdown` completes.
pub async fn serve<E: Endpoints>(
    listener: tokio::net::TcpListener,
    endpoints: Arc<E>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let endpoints = Arc::clone(&endpoints);
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let endpoints = Arc::clone(&endpoints);
                        async move {
                            Ok::<_, Infallible>(respond(req.method(), req.uri().path(), &*endpoints).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    struct Fixed(Readiness);

    impl Endpoints for Fixed {
        async fn metrics(&self) -> Vec<u8> {
            b"up 1\n".to_vec()
        }

        async fn ready(&self) -> Readiness {
            self.0
        }
    }

    async fn get(e: &Fixed, method: Method, path: &str) -> (StatusCode, String, String) {
        let r = respond(&method, path, e).await;
        let ctype = r.headers()[hyper::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes_each_path_and_readiness() {
        let ready = Fixed(Readiness::Ready);
        let (s, ct, body) = get(&ready, Method::GET, "/metrics").await;
        assert_eq!(
            (s, ct.as_str(), body.as_str()),
            (StatusCode::OK, METRICS_CONTENT_TYPE, "up 1\n")
        );
        assert_eq!(
            get(&ready, Method::HEAD, "/healthz").await.0,
            StatusCode::OK
        );
        assert_eq!(get(&ready, Method::GET, "/readyz").await.0, StatusCode::OK);
        assert_eq!(
            get(&ready, Method::GET, "/other").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&ready, Method::POST, "/metrics").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (s, _, body) = get(
            &Fixed(Readiness::NotReady("store down")),
            Method::GET,
            "/readyz",
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("store down"), "{body}");
        let not_served = Fixed(Readiness::NotServed);
        assert_eq!(
            get(&not_served, Method::GET, "/readyz").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&not_served, Method::GET, "/healthz").await.0,
            StatusCode::OK
        );
    }
}
