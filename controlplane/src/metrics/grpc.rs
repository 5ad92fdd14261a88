//! A tower layer around the whole gRPC server: counts every call by method and status code
//! and times it to its response headers.
//!
//! The code comes from the response headers (a trailers-only answer, as for a refused
//! token) or else from the trailers at the end of the body; a body dropped before its
//! trailers (the client went away) counts as `CANCELLED`. Paths that name no method of the
//! server's services count under `unknown` (they are answered `UNIMPLEMENTED`, or
//! `UNAUTHENTICATED` first), so a client cannot grow the label set.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame};

use super::ControlMetrics;

/// The canonical gRPC status code names, by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

/// The code in a `grpc-status` header, if there is one (out-of-range values: `UNKNOWN`).
fn code_of(headers: &http::HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?;
    Some(
        v.to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&c| c < CODES.len())
            .unwrap_or(UNKNOWN),
    )
}

/// Every `package.Service/Method` of `sets` (encoded `FileDescriptorSet`s).
fn methods_of(sets: &[&[u8]]) -> HashSet<String> {
    use prost::Message;
    let mut out = HashSet::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                for m in service.method {
                    let method = m.name.unwrap_or_default();
                    out.insert(if package.is_empty() {
                        format!("{name}/{method}")
                    } else {
                        format!("{package}.{name}/{method}")
                    });
                }
            }
        }
    }
    out
}

/// Wraps every service with [`GrpcMetrics`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<ControlMetrics>,
    known: Arc<HashSet<String>>,
}

impl GrpcMetricsLayer {
    /// Records into `metrics`, labelling the methods of the control plane's services, gRPC
    /// health and reflection by name and any other path as `unknown`.
    pub fn new(metrics: Arc<ControlMetrics>) -> Self {
        let known = methods_of(&[
            streamgate_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        Self {
            metrics,
            known: Arc::new(known),
        }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: Arc::clone(&self.metrics),
            known: Arc::clone(&self.known),
        }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<ControlMetrics>,
    known: Arc<HashSet<String>>,
}

/// Records the call's code once, when it is known or when the body goes away.
struct Recorder {
    metrics: Arc<ControlMetrics>,
    method: String,
    done: bool,
}

impl Recorder {
    fn finish(&mut self, code: usize) {
        if self.done {
            return;
        }
        self.done = true;
        self.metrics
            .grpc_requests
            .with_label_values(&[self.method.as_str(), CODES[code]])
            .inc();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

pin_project_lite::pin_project! {
    /// The response body, watching for the trailers' `grpc-status`.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        recorder: Recorder,
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(code_of) {
                    this.recorder.finish(code);
                }
            }
            // A body that ends without a status is a broken call.
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.recorder.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S, ReqB, ResB> tower_service::Service<http::Request<ReqB>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<ReqB>, Response = http::Response<ResB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        // The clone is fresh and the ready one goes into the future (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = Arc::clone(&self.metrics);
        let path = req.uri().path().strip_prefix('/').unwrap_or_default();
        let method = if self.known.contains(path) {
            path.to_owned()
        } else {
            "unknown".to_owned()
        };
        let started = Instant::now();
        Box::pin(async move {
            let res = inner.call(req).await?;
            let header_code = code_of(res.headers());
            metrics
                .grpc_duration
                .with_label_values(&[method.as_str()])
                .observe(started.elapsed().as_secs_f64());
            let mut recorder = Recorder {
                metrics,
                method,
                done: false,
            };
            if let Some(code) = header_code {
                recorder.finish(code);
            }
            Ok(res.map(|inner| tonic::body::Body::new(MeteredBody { inner, recorder })))
        })
    }
}
