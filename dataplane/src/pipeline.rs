//! The request pipeline shared by every front: parse and validate, gate, cache, origin.
//!
//! A front (Pingora for HTTP/1.1 and HTTP/2; the HTTP/3 listener) turns its request into
//! `http::request::Parts`, calls [`Pipeline::handle`], and writes the returned
//! `http::Response<Body>` as it is. Nothing about routing, gating or caching lives in a front.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, request::Parts};
use streamgate_origin::{ObjectKey, Origin, OriginError};

use crate::body::{Body, slice_stream};
use crate::cache::{Cache, Entry, Fill, FillError, FillResult, Lookup};
use crate::config::{CacheConfig, CorsConfig};
use crate::gate::{Decision, Gate, RequestFacts, credential};
use crate::metrics::{CacheStatus, Metrics, OriginResult, Proto};
use crate::request::{self, ObjectKind, PathError, RangeOutcome, Route};

/// What the transport knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// HTTP version of the front.
    pub proto: Proto,
    /// Whether the connection is TLS (or QUIC).
    pub tls: bool,
    /// Client address.
    pub client: Option<IpAddr>,
}

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const PLAYER_HTML: &str = include_str!("player.html");

/// Response headers computed once from configuration.
struct Fixed {
    manifest_cc: HeaderValue,
    segment_cc: HeaderValue,
    manifest_cc_private: HeaderValue,
    segment_cc_private: HeaderValue,
    cors_any: bool,
    cors_origins: Vec<HeaderValue>,
    cors_max_age: HeaderValue,
    alt_svc: Option<HeaderValue>,
}

/// The shared request pipeline.
pub struct Pipeline {
    gate: Gate,
    auth: Option<Arc<crate::auth::Auth>>,
    cache: Arc<Cache>,
    origin: Origin,
    metrics: Arc<Metrics>,
    cfg: CacheConfig,
    fixed: Fixed,
}

impl Pipeline {
    /// Builds the pipeline over `origin` with a cache sized by `cache`.
    pub fn new(
        gate: Gate,
        origin: Origin,
        cache: CacheConfig,
        cors: &CorsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cc = |scope: &str, ttl: Duration| {
            HeaderValue::try_from(format!("{scope}, max-age={}", ttl.as_secs()))
                .expect("digits are a valid header")
        };
        let fixed = Fixed {
            manifest_cc: cc("public", cache.manifest_ttl),
            segment_cc: cc("public", cache.segment_ttl),
            manifest_cc_private: cc("private", cache.manifest_ttl),
            segment_cc_private: cc("private", cache.segment_ttl),
            cors_any: cors.allow_origins.iter().any(|o| o == "*"),
            cors_origins: cors
                .allow_origins
                .iter()
                .filter_map(|o| HeaderValue::try_from(o.as_str()).ok())
                .collect(),
            cors_max_age: HeaderValue::from(cors.max_age.as_secs()),
            alt_svc: None,
        };
        Self {
            gate,
            auth: None,
            cache: Arc::new(Cache::new(cache.max_bytes)),
            origin,
            metrics,
            cfg: cache,
            fixed,
        }
    }

    /// Announces HTTP/3 with `Alt-Svc` on every TLS response.
    pub fn set_alt_svc(&mut self, port: u16, max_age: Duration) {
        self.fixed.alt_svc =
            HeaderValue::try_from(format!("h3=\":{port}\"; ma={}", max_age.as_secs())).ok();
    }

    /// The gate, for installing new policy snapshots.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The cache, for purges and metrics.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The metrics this pipeline records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Turns on wallet sign-in (`/auth/challenge`, `/auth/verify`); the gate accepts its
    /// session tokens.
    pub fn set_auth(&mut self, auth: Arc<crate::auth::Auth>) {
        self.gate.set_session_key(auth.verifying_key());
        self.auth = Some(auth);
    }

    /// Whether the front must read this request's body (up to
    /// [`crate::auth::MAX_BODY_BYTES`]) and pass it to [`Pipeline::handle_with_body`].
    pub fn wants_body(&self, req: &Parts) -> bool {
        req.method == Method::POST
            && self.auth.is_some()
            && crate::auth::Auth::handles(req.uri.path())
    }

    /// Handles one request and records it in the metrics.
    pub async fn handle(&self, req: &Parts, conn: &Conn) -> Response<Body> {
        self.handle_with_body(req, conn, None).await
    }

    /// As [`Pipeline::handle`], with the request body the front read (`None`: too large).
    pub async fn handle_with_body(
        &self,
        req: &Parts,
        conn: &Conn,
        body: Option<Bytes>,
    ) -> Response<Body> {
        let (mut resp, cache) = match &self.auth {
            Some(auth) if crate::auth::Auth::handles(req.uri.path()) => {
                (self.sign_in(auth, req, body).await, CacheStatus::None)
            }
            _ => self.dispatch(req, conn).await,
        };
        let h = resp.headers_mut();
        // x-cache says what the cache did; responses that never reached it carry none.
        if cache != CacheStatus::None {
            h.insert(X_CACHE.clone(), HeaderValue::from_static(cache.as_str()));
        }
        self.cors(req, h);
        if let (true, Some(v)) = (conn.tls, &self.fixed.alt_svc) {
            h.insert(header::ALT_SVC, v.clone());
        }
        let sent = match resp.body() {
            Body::Full(b) => b.len() as u64,
            Body::Stream(_) => content_length(resp.headers()),
            Body::Empty => 0,
        };
        self.metrics
            .record(conn.proto, resp.status().as_u16(), cache, sent);
        resp
    }

    async fn dispatch(&self, req: &Parts, conn: &Conn) -> (Response<Body>, CacheStatus) {
        let head = match req.method {
            Method::GET => false,
            Method::HEAD => true,
            Method::OPTIONS => return (self.preflight(req), CacheStatus::None),
            _ => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET or HEAD",
                );
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, OPTIONS"),
                );
                return (r, CacheStatus::None);
            }
        };
        let (asset, key) = match request::route(req.uri.path()) {
            Ok(Route::Object { asset, key }) => (asset, key),
            Ok(Route::Player) => return (player(head), CacheStatus::None),
            Ok(Route::NotFound) => {
                return (
                    error(StatusCode::NOT_FOUND, "not_found", "no such route"),
                    CacheStatus::None,
                );
            }
            Err(e) => return (bad_path(e), CacheStatus::None),
        };
        let facts = RequestFacts {
            asset: &asset,
            key: &key,
            query: req.uri.query(),
            headers: &req.headers,
            client: conn.client,
        };
        let (query_token, shared) = match self.gate.check(&facts, SystemTime::now()).await {
            Decision::Allow {
                query_token,
                shared,
            } => {
                if self.gate.is_guarded() {
                    self.metrics.gate_allow();
                }
                (query_token, shared)
            }
            Decision::Deny { status, reason } => {
                self.metrics.gate_deny(reason);
                let (status, kind) = match status {
                    401 => (StatusCode::UNAUTHORIZED, "access_denied"),
                    404 => (StatusCode::NOT_FOUND, "not_found"),
                    503 => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                    _ => (StatusCode::FORBIDDEN, "access_denied"),
                };
                return (error(status, kind, reason), CacheStatus::None);
            }
        };
        let token = if query_token {
            req.uri.query().and_then(credential::raw_query_pair)
        } else {
            None
        };
        // A published version: `{asset}/{path}` is read (and cached) as `{prefix}/{path}`.
        let key = match self.gate.origin_prefix(&asset) {
            Some(prefix) => Cow::Owned(format!("{prefix}{}", &key[asset.len()..])),
            None => key,
        };
        self.serve_object(req, &key, head, token, shared).await
    }

    async fn serve_object(
        &self,
        req: &Parts,
        key: &str,
        head: bool,
        token: Option<&str>,
        shared: bool,
    ) -> (Response<Body>, CacheStatus) {
        let (kind, ctype) = request::classify(key);
        let (entry, status) = match self.cache.lookup(key, Instant::now()) {
            Lookup::Fresh(e) => (e, CacheStatus::Hit),
            Lookup::Stale(old) => match self.fill(key, kind).await {
                Ok(Fill::Stored(e)) => (e, CacheStatus::Miss),
                Ok(Fill::TooLarge) => {
                    self.cache.invalidate(key);
                    return self.bypass(req, key, ctype, kind, head, shared).await;
                }
                Err(FillError::NotFound) => {
                    self.cache.invalidate(key);
                    return (not_found(), CacheStatus::Miss);
                }
                Err(_) => (old, CacheStatus::Stale),
            },
            Lookup::Miss => match self.fill(key, kind).await {
                Ok(Fill::Stored(e)) => (e, CacheStatus::Miss),
                Ok(Fill::TooLarge) => {
                    return self.bypass(req, key, ctype, kind, head, shared).await;
                }
                Err(e) => return (fill_error(&e), CacheStatus::Miss),
            },
        };
        if let (ObjectKind::Manifest, Some(param)) = (kind, token) {
            return (rewritten_manifest(&entry, ctype, param, head), status);
        }
        (
            self.entry_response(req, &entry, ctype, kind, head, shared),
            status,
        )
    }

    async fn fill(&self, key: &str, kind: ObjectKind) -> FillResult {
        let ttl = match kind {
            ObjectKind::Manifest => self.cfg.manifest_ttl,
            ObjectKind::Segment | ObjectKind::Other => self.cfg.segment_ttl,
        };
        let stale = self.cfg.stale_if_error;
        let max = self.cfg.max_object_bytes;
        let origin = self.origin.clone();
        let metrics = Arc::clone(&self.metrics);
        let okey = ObjectKey::new(key).map_err(|_| FillError::NotFound)?;
        let fetch = async move {
            let t0 = Instant::now();
            let res = async {
                let obj = origin.get(&okey).await?;
                if obj.size > max {
                    return Ok(None);
                }
                obj.collect().await.map(Some)
            }
            .await;
            let secs = t0.elapsed().as_secs_f64();
            match res {
                Ok(Some(body)) => {
                    metrics.origin(OriginResult::Ok, secs);
                    Ok(Fill::Stored(Arc::new(Entry::new(
                        body,
                        Instant::now(),
                        ttl,
                        stale,
                    ))))
                }
                Ok(None) => {
                    metrics.origin(OriginResult::Ok, secs);
                    Ok(Fill::TooLarge)
                }
                Err(e) => {
                    let (result, err) = classify_origin_error(e);
                    metrics.origin(result, secs);
                    if let FillError::Unavailable(msg) = &err {
                        tracing::warn!(key = %okey, error = %msg, "origin read failed");
                    }
                    Err(err)
                }
            }
        };
        self.cache.fill(key, fetch).await.0
    }

    /// Streams an object that is too large to cache straight from origin.
    async fn bypass(
        &self,
        req: &Parts,
        key: &str,
        ctype: &'static str,
        kind: ObjectKind,
        head: bool,
        shared: bool,
    ) -> (Response<Body>, CacheStatus) {
        let Ok(okey) = ObjectKey::new(key) else {
            return (not_found(), CacheStatus::Bypass);
        };
        let t0 = Instant::now();
        let obj = match self.origin.get(&okey).await {
            Ok(o) => o,
            Err(e) => {
                let (result, err) = classify_origin_error(e);
                self.metrics.origin(result, t0.elapsed().as_secs_f64());
                return (fill_error(&err), CacheStatus::Bypass);
            }
        };
        self.metrics
            .origin(OriginResult::Ok, t0.elapsed().as_secs_f64());
        let len = obj.size;
        let range = range_of(req, len, None);
        let mut b = Response::builder()
            .header(header::CONTENT_TYPE, ctype)
            .header(header::ACCEPT_RANGES, BYTES)
            .header(header::CACHE_CONTROL, self.cache_control(kind, shared));
        let (status, body, n) = match range {
            RangeOutcome::Unsatisfiable => return (unsatisfiable(len), CacheStatus::Bypass),
            RangeOutcome::Full => (StatusCode::OK, obj.body, len),
            RangeOutcome::Partial { start, end } => {
                b = b.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
                let n = end - start + 1;
                (
                    StatusCode::PARTIAL_CONTENT,
                    slice_stream(obj.body, start, n),
                    n,
                )
            }
        };
        let body = if head {
            Body::Empty
        } else {
            Body::Stream(body)
        };
        let resp = b
            .status(status)
            .header(header::CONTENT_LENGTH, n)
            .body(body)
            .expect("static headers are valid");
        (resp, CacheStatus::Bypass)
    }

    /// `public, max-age` for assets anyone may fetch; `private, max-age` for gated ones, so
    /// that no shared cache downstream stores what the gate allowed for one viewer.
    fn cache_control(&self, kind: ObjectKind, shared: bool) -> HeaderValue {
        let f = &self.fixed;
        match (kind, shared) {
            (ObjectKind::Manifest, true) => f.manifest_cc.clone(),
            (ObjectKind::Manifest, false) => f.manifest_cc_private.clone(),
            (ObjectKind::Segment | ObjectKind::Other, true) => f.segment_cc.clone(),
            (ObjectKind::Segment | ObjectKind::Other, false) => f.segment_cc_private.clone(),
        }
    }

    fn entry_response(
        &self,
        req: &Parts,
        e: &Entry,
        ctype: &'static str,
        kind: ObjectKind,
        head: bool,
        shared: bool,
    ) -> Response<Body> {
        let mut h = HeaderMap::with_capacity(10);
        h.insert(header::ETAG, e.etag.clone());
        h.insert(header::CACHE_CONTROL, self.cache_control(kind, shared));
        h.insert(header::ACCEPT_RANGES, BYTES);
        if let Some(inm) = req.headers.get(header::IF_NONE_MATCH)
            && request::if_none_match(inm.as_bytes(), e.etag.as_bytes())
        {
            return with_headers(StatusCode::NOT_MODIFIED, h, Body::Empty);
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        let len = e.body.len() as u64;
        let (status, body) = match range_of(req, len, Some(&e.etag)) {
            RangeOutcome::Full => (StatusCode::OK, e.body.clone()),
            RangeOutcome::Partial { start, end } => {
                let cr = format!("bytes {start}-{end}/{len}");
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::try_from(cr).expect("digits"),
                );
                (
                    StatusCode::PARTIAL_CONTENT,
                    e.body.slice(start as usize..=end as usize),
                )
            }
            RangeOutcome::Unsatisfiable => return unsatisfiable(len),
        };
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let body = if head { Body::Empty } else { Body::Full(body) };
        with_headers(status, h, body)
    }

    async fn sign_in(
        &self,
        auth: &crate::auth::Auth,
        req: &Parts,
        body: Option<Bytes>,
    ) -> Response<Body> {
        match req.method {
            Method::POST => match body {
                Some(b) => auth.serve(req.uri.path(), &b, SystemTime::now()).await,
                None => error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "sign-in requests are at most 16 KiB",
                ),
            },
            Method::OPTIONS => {
                let mut r = self.preflight(req);
                let h = r.headers_mut();
                h.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
                if h.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS) {
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_METHODS,
                        HeaderValue::from_static("POST, OPTIONS"),
                    );
                }
                r
            }
            _ => {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use POST",
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
                r
            }
        }
    }

    fn preflight(&self, req: &Parts) -> Response<Body> {
        let mut h = HeaderMap::with_capacity(6);
        h.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        if self.allowed_origin(req).is_some() {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            let allow_headers = req
                .headers
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
                .unwrap_or(HeaderValue::from_static("authorization, range"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                self.fixed.cors_max_age.clone(),
            );
        }
        with_headers(StatusCode::NO_CONTENT, h, Body::Empty)
    }

    fn allowed_origin(&self, req: &Parts) -> Option<HeaderValue> {
        let origin = req.headers.get(header::ORIGIN)?;
        if self.fixed.cors_any {
            return Some(HeaderValue::from_static("*"));
        }
        self.fixed
            .cors_origins
            .iter()
            .find(|o| *o == origin)
            .cloned()
    }

    fn cors(&self, req: &Parts, h: &mut HeaderMap) {
        if let Some(allow) = self.allowed_origin(req) {
            if allow != "*" {
                h.append(header::VARY, HeaderValue::from_static("origin"));
            }
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("content-length, content-range, x-cache, etag"),
            );
        }
    }
}

fn classify_origin_error(e: OriginError) -> (OriginResult, FillError) {
    match e {
        OriginError::NotFound => (OriginResult::NotFound, FillError::NotFound),
        OriginError::Timeout(_) => (OriginResult::Timeout, FillError::Timeout),
        other => (
            OriginResult::Error,
            FillError::Unavailable(other.to_string().into()),
        ),
    }
}

/// The range to serve; an `If-Range` that does not match the validator disables it.
fn range_of(req: &Parts, len: u64, etag: Option<&HeaderValue>) -> RangeOutcome {
    let Some(range) = req.headers.get(header::RANGE) else {
        return RangeOutcome::Full;
    };
    if let Some(ir) = req.headers.get(header::IF_RANGE)
        && etag != Some(ir)
    {
        return RangeOutcome::Full;
    }
    request::parse_range(range.as_bytes(), len)
}

fn content_length(h: &HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// A JSON error response: `{"error": ..., "reason": ...}`.
pub fn error(status: StatusCode, error: &str, reason: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": error, "reason": reason }).to_string();
    let mut h = HeaderMap::with_capacity(3);
    h.insert(header::CONTENT_TYPE, JSON);
    h.insert(header::CACHE_CONTROL, NO_STORE);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    with_headers(status, h, Body::Full(Bytes::from(body)))
}

fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not_found", "object not found")
}

fn bad_path(e: PathError) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "bad_request", e.reason())
}

fn unsatisfiable(len: u64) -> Response<Body> {
    let mut r = error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        "range starts past the end of the object",
    );
    r.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::try_from(format!("bytes */{len}")).expect("digits"),
    );
    r
}

fn fill_error(e: &FillError) -> Response<Body> {
    match e {
        FillError::NotFound => not_found(),
        FillError::Timeout => error(
            StatusCode::GATEWAY_TIMEOUT,
            "origin_timeout",
            "origin did not answer in time",
        ),
        FillError::Unavailable(_) => error(
            StatusCode::BAD_GATEWAY,
            "origin_unavailable",
            "origin unreachable or failing",
        ),
    }
}

/// A manifest with the viewer's `token=` added to every URI. It is made per request from the
/// cached original, so the cache never holds a credential, and it is marked so that no
/// downstream cache stores it.
fn rewritten_manifest(e: &Entry, ctype: &'static str, param: &str, head: bool) -> Response<Body> {
    let body = if ctype == "application/dash+xml" {
        crate::rewrite::rewrite_mpd(&e.body, param).map(Bytes::from)
    } else {
        std::str::from_utf8(&e.body)
            .map(|t| Bytes::from(crate::rewrite::rewrite_hls(t, param)))
            .map_err(|_| crate::rewrite::RewriteError::Xml("playlist is not UTF-8".into()))
    };
    let body = match body {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(error = %err, "manifest could not be rewritten");
            return error(
                StatusCode::BAD_GATEWAY,
                "bad_manifest",
                "manifest could not be rewritten",
            );
        }
    };
    let mut h = HeaderMap::with_capacity(5);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let body = if head { Body::Empty } else { Body::Full(body) };
    with_headers(StatusCode::OK, h, body)
}

fn player(head: bool) -> Response<Body> {
    let mut h = HeaderMap::with_capacity(3);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(PLAYER_HTML.len()));
    let body = if head {
        Body::Empty
    } else {
        Body::Full(Bytes::from_static(PLAYER_HTML.as_bytes()))
    };
    with_headers(StatusCode::OK, h, body)
}
