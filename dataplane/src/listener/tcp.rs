//! The Pingora front: HTTP/1.1 and h2c on the plain port, HTTP/1.1 and h2 over TLS.
//! It reads a request, hands it to the shared [`Pipeline`], and writes what comes back.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use pingora_core::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream,
};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;

use crate::body::Body;
use crate::metrics::Proto;
use crate::pipeline::{Conn, Pipeline};

/// The Pingora application behind both TCP listeners (plain and TLS).
pub(crate) struct TcpFront {
    pipeline: Arc<Pipeline>,
    options: HttpServerOptions,
}

impl TcpFront {
    pub(crate) fn new(pipeline: Arc<Pipeline>) -> Self {
        let mut options = HttpServerOptions::default();
        // h2c with prior knowledge on the plain port; Pingora turns it off on TLS
        // streams, where ALPN picks h2 or HTTP/1.1.
        options.h2c = true;
        Self { pipeline, options }
    }
}

#[async_trait]
impl HttpServerApp for TcpFront {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // Requests a client pipelines behind this one are answered next, in order
        // (RFC 9112 §9.3.2), rather than dropped with the connection.
        session.set_pipelining_enabled(true);
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "reading request failed");
                if *e.etype() == pingora_error::ErrorType::InvalidHTTPHeader && !session.is_http2()
                {
                    // A request that does not parse gets a 400 with the usual JSON body;
                    // the connection then closes, since what follows cannot be framed.
                    self.bad_request(&mut session).await;
                }
                return None;
            }
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(60));
        }
        let conn = Conn {
            proto: if session.is_http2() {
                Proto::H2
            } else {
                Proto::H1
            },
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        };
        let resp = if self.pipeline.wants_body(session.req_header()) {
            let body = read_body(&mut session).await;
            self.pipeline
                .handle_with_body(session.req_header(), &conn, body)
                .await
        } else {
            self.pipeline.handle(session.req_header(), &conn).await
        };
        let (parts, body) = resp.into_parts();
        let header = Box::new(ResponseHeader::from(parts));
        if let Err(e) = session.write_response_header(header).await {
            tracing::debug!(error = %e, "writing response header failed");
            return None;
        }
        let written = match body {
            Body::Empty => session.finish_body().await,
            Body::Full(bytes) => session.write_response_body(bytes, true).await,
            Body::Stream(mut stream) => loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = session.write_response_body(chunk, false).await {
                            break Err(e);
                        }
                    }
                    Some(Err(e)) => {
                        // Headers are out; the only honest signal left is to cut the connection.
                        tracing::warn!(error = %e, "origin stream failed mid-body");
                        return None;
                    }
                    None => break session.finish_body().await,
                }
            },
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "writing response body failed");
            return None;
        }
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(_) => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}

impl TcpFront {
    async fn bad_request(&self, session: &mut ServerSession) {
        let resp = self.pipeline.fail(&crate::error::EdgeError::Client(
            crate::error::ClientError::Malformed,
        ));
        self.pipeline
            .metrics()
            .record(Proto::H1, 400, crate::metrics::CacheStatus::None, 0);
        let (parts, body) = resp.into_parts();
        let header = ResponseHeader::from(parts);
        let body = match body {
            Body::Full(b) => b,
            Body::Empty | Body::Stream(_) => bytes::Bytes::new(),
        };
        if let Err(e) = session.write_error_response(header, body).await {
            tracing::debug!(error = %e, "writing the 400 failed");
        }
    }
}

/// Reads a request body of at most [`crate::auth::MAX_BODY_BYTES`]; `None` when larger (or
/// broken).
async fn read_body(session: &mut ServerSession) -> Option<bytes::Bytes> {
    let mut buf = bytes::BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > crate::auth::MAX_BODY_BYTES {
                    return None;
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(buf.freeze()),
            Err(e) => {
                tracing::debug!(error = %e, "reading request body failed");
                return None;
            }
        }
    }
}
