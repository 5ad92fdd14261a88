//! The request pipeline shared by every front: route, gate, cache, origin.
//!
//! A front (Pingora for HTTP/1.1 and HTTP/2; the HTTP/3 listener) turns its request into
//! `http::request::Parts`, calls [`Pipeline::handle`], and writes the returned
//! `http::Response<Body>` as it is. Nothing about routing, gating or caching lives in a
//! front. This module keeps the flow; how responses look is [`crate::response`], and how
//! failures become statuses is [`crate::error`].

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, request::Parts};
use streamgate_origin::{ObjectKey, Origin, OriginError};

use crate::body::{Body, slice_stream};
use crate::cache::{Cache, Entry, Fill, FillError, FillResult, Filling, Lookup};
use crate::config::{CacheConfig, CorsConfig};
use crate::error::{ClientError, EdgeError, OriginFailure, Refusal};
use crate::gate::{Decision, Gate, RequestFacts, credential};
use crate::limit::{Class, RateLimits, Who, retry_after_secs};
use crate::metrics::{CacheStatus, Metrics, OriginResult, Proto};
use crate::request::{self, ObjectKind, RangeOutcome, Route, SignIn};
use crate::response::{self, BYTES, Shaper};
use crate::session::Sessions;

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
const POST_OPTIONS: HeaderValue = HeaderValue::from_static("POST, OPTIONS");

/// The shared request pipeline.
pub struct Pipeline {
    gate: Gate,
    auth: Option<Arc<crate::auth::Auth>>,
    cache: Arc<Cache>,
    origin: Origin,
    metrics: Arc<Metrics>,
    cfg: CacheConfig,
    shape: Shaper,
    limits: Option<RateLimits>,
    sessions: Option<Arc<Sessions>>,
    analytics: Option<Arc<crate::analytics::Analytics>>,
    sharing: Option<Arc<crate::sharing::SharingGuard>>,
    player: Option<crate::player::Libraries>,
    access_log: Option<crate::access_log::AccessLog>,
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
        Self {
            gate,
            auth: None,
            cache: Arc::new(Cache::new(cache.max_bytes, cache.not_found_ttl)),
            origin,
            metrics,
            shape: Shaper::new(&cache, cors),
            cfg: cache,
            limits: None,
            sessions: None,
            analytics: None,
            sharing: None,
            player: None,
            access_log: None,
        }
    }

    /// Tracks playback sessions and enforces policies' `max_streams`.
    pub fn set_sessions(&mut self, sessions: Arc<Sessions>) {
        self.sessions = Some(sessions);
    }

    /// The playback sessions, when tracked.
    pub fn sessions(&self) -> Option<&Arc<Sessions>> {
        self.sessions.as_ref()
    }

    /// Aggregates the CMCD of allowed requests (QoE per asset).
    pub fn set_analytics(&mut self, analytics: Arc<crate::analytics::Analytics>) {
        self.analytics = Some(analytics);
    }

    /// The QoE aggregates, when on.
    pub fn analytics(&self) -> Option<&Arc<crate::analytics::Analytics>> {
        self.analytics.as_ref()
    }

    /// Detects token sharing under policies with `limits.sharing`.
    pub fn set_sharing(&mut self, sharing: Arc<crate::sharing::SharingGuard>) {
        self.sharing = Some(sharing);
    }

    /// Writes one access-log line per request.
    pub(crate) fn set_access_log(&mut self, log: crate::access_log::AccessLog) {
        self.access_log = Some(log);
    }

    /// Serves the player page's libraries (`/player/hls.min.js`, `/player/dash.all.min.js`).
    pub fn set_player_libraries(&mut self, libs: crate::player::Libraries) {
        self.player = Some(libs);
    }

    /// Sharing detection, when on.
    pub fn sharing(&self) -> Option<&Arc<crate::sharing::SharingGuard>> {
        self.sharing.as_ref()
    }

    /// Counts the request for token-sharing detection when `viewer`'s policy asks for it;
    /// refuses a principal flagged with `deny_for`. `sid`: the request's session (its
    /// verified or newly minted `sg_sid`, else its CMCD `sid`), hashed.
    fn share_check(
        &self,
        conn: &Conn,
        viewer: &crate::gate::Viewer,
        sid: Option<u64>,
    ) -> Result<(), EdgeError> {
        let (Some(g), Some((rule, policy))) = (&self.sharing, viewer.sharing()) else {
            return Ok(());
        };
        let Some(principal) = viewer.principals().get(rule.per) else {
            return Ok(());
        };
        let seen = crate::sharing::Seen {
            principal,
            client: conn.client,
            sid,
        };
        g.check(rule, policy, || viewer.subject_name(), seen, Instant::now())
            .map_err(|_| EdgeError::Gate(Refusal::Denied("token_shared")))
    }

    /// Counts the request in its playback session when `viewer`'s policy caps streams,
    /// admitting a new session only under the cap. Returns the session id to write into
    /// a rewritten manifest (the one the request carries, or a new one for an entry
    /// manifest: `mint`), and the session's hash for sharing detection. `cmcd_sid`: the
    /// hash of the request's CMCD `sid`.
    fn session(
        &self,
        req: &Parts,
        conn: &Conn,
        viewer: &crate::gate::Viewer,
        mint: bool,
        cmcd_sid: Option<u64>,
    ) -> Result<(Option<String>, Option<u64>), EdgeError> {
        let (Some(s), Some((max, per, over))) = (&self.sessions, viewer.stream_cap()) else {
            return Ok((None, cmcd_sid));
        };
        // A token without a subject (or without a wallet, per wallet) names nobody to
        // count; such policies should require one.
        let Some(p) = viewer.principals().get(per) else {
            return Ok((None, cmcd_sid));
        };
        let given = req
            .uri
            .query()
            .and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix(crate::session::PARAM)?.strip_prefix('='))
            })
            .filter(|sid| s.verify(p, sid));
        let minted = (given.is_none() && cmcd_sid.is_none() && mint).then(|| s.mint(p));
        let sid = given
            .or(minted.as_deref())
            .map(crate::session::sid_hash)
            .or(cmcd_sid);
        let end_oldest = over == streamgate_policy::limits::OverCap::EndOldest;
        s.admit(p, sid, conn.client, max, end_oldest).map_err(|r| {
            EdgeError::Gate(Refusal::Denied(match r {
                crate::session::Refused::OverCap => "stream_limit",
                crate::session::Refused::Ended => "stream_ended",
            }))
        })?;
        Ok((given.map(str::to_owned).or(minted), sid))
    }

    /// Enforces rate limits: the edge's, and those of the policies in force.
    pub fn set_rate_limits(&mut self, limits: RateLimits) {
        self.limits = Some(limits);
    }

    /// Takes a request of `class` from the buckets of `who`, under `policy`'s overrides.
    fn limit(
        &self,
        class: Class,
        policy: Option<&streamgate_policy::limits::RateLimits>,
        who: Who,
    ) -> Result<(), EdgeError> {
        let Some(l) = &self.limits else {
            return Ok(());
        };
        l.check(class, policy, who, tokio::time::Instant::now())
            .map_err(|(space, wait)| EdgeError::RateLimited {
                retry_after: retry_after_secs(wait),
                space: space.as_str(),
            })
    }

    /// Announces HTTP/3 with `Alt-Svc` on every TLS response.
    pub fn set_alt_svc(&mut self, port: u16, max_age: Duration) {
        self.shape.set_alt_svc(port, max_age);
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

    /// The sign-in service, when on.
    pub fn auth(&self) -> Option<&Arc<crate::auth::Auth>> {
        self.auth.as_ref()
    }

    /// Whether the front must read this request's body (up to
    /// [`crate::auth::MAX_BODY_BYTES`]) and pass it to [`Pipeline::handle_with_body`].
    pub fn wants_body(&self, req: &Parts) -> bool {
        req.method == Method::POST
            && self.auth.is_some()
            && matches!(request::route(req.uri.path()), Ok(Route::SignIn(_)))
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
        let t0 = Instant::now();
        let (mut resp, cache, reason) = match self.dispatch(req, conn, body).await {
            Ok((r, c)) => (r, c, None),
            Err(e) => (self.fail(&e), CacheStatus::None, Some(e.reason())),
        };
        let h = resp.headers_mut();
        // x-cache says what the cache did; responses that never reached it carry none.
        if cache != CacheStatus::None {
            h.insert(X_CACHE.clone(), HeaderValue::from_static(cache.as_str()));
        }
        self.shape.cors(req, h);
        if let (true, Some(v)) = (conn.tls, self.shape.alt_svc()) {
            h.insert(header::ALT_SVC, v.clone());
        }
        let sent = match resp.body() {
            Body::Full(b) => b.len() as u64,
            Body::Stream(_) => content_length(resp.headers()),
            Body::Empty => 0,
        };
        self.metrics
            .record(conn.proto, resp.status().as_u16(), cache, sent);
        // Kind by the path's name, as the cache decides TTLs (no allocation).
        let kind = request::classify(req.uri.path()).0;
        let seconds = t0.elapsed().as_secs_f64();
        self.metrics.observe_request(kind, seconds);
        if let Some(log) = &self.access_log {
            let path = req.uri.path();
            let asset = path
                .strip_prefix("/v/")
                .and_then(|rest| rest.split('/').next());
            let entry = crate::access_log::Entry {
                method: req.method.as_str(),
                asset,
                path,
                status: resp.status().as_u16(),
                bytes: sent,
                cache: cache.as_str(),
                reason,
                proto: conn.proto.as_str(),
                client: conn.client,
                seconds,
            };
            log.record(&entry, SystemTime::now());
        }
        resp
    }

    /// The one place where a failure is counted and turned into a response.
    pub(crate) fn fail(&self, e: &EdgeError) -> Response<Body> {
        if let EdgeError::Gate(r) = e
            && !matches!(r, Refusal::SignIn(..))
        {
            self.metrics.gate_deny(e.reason());
        }
        self.metrics.error(e.class(), e.reason());
        response::failure(e)
    }

    async fn dispatch(
        &self,
        req: &Parts,
        conn: &Conn,
        body: Option<Bytes>,
    ) -> Result<(Response<Body>, CacheStatus), EdgeError> {
        let route = request::route(req.uri.path())
            .map_err(|e| EdgeError::Client(ClientError::BadPath(e)))?;
        let (asset, key) = match route {
            Route::Object { asset, key } => (asset, key),
            Route::SignIn(endpoint) => {
                if req.method == Method::POST {
                    let who = Who {
                        ip: conn.client,
                        ..Who::default()
                    };
                    self.limit(Class::SignIn, None, who)?;
                }
                return Ok((self.sign_in(endpoint, req, body).await?, CacheStatus::None));
            }
            Route::PlayerLib(lib) => {
                return match (&self.player, &req.method) {
                    (Some(libs), &Method::GET | &Method::HEAD) => Ok((
                        response::script(libs.get(lib), req.method == Method::HEAD),
                        CacheStatus::None,
                    )),
                    (Some(_), _) => Err(get_or_head()),
                    (None, _) => Err(EdgeError::Client(ClientError::NoRoute)),
                };
            }
            Route::Player | Route::NotFound => {
                return match req.method {
                    Method::GET | Method::HEAD if route == Route::Player => Ok((
                        response::player(req.method == Method::HEAD),
                        CacheStatus::None,
                    )),
                    Method::OPTIONS => Ok((self.shape.object_preflight(req), CacheStatus::None)),
                    _ if route == Route::Player => Err(get_or_head()),
                    _ => Err(EdgeError::Client(ClientError::NoRoute)),
                };
            }
        };
        let head = match req.method {
            Method::GET => false,
            Method::HEAD => true,
            Method::OPTIONS => return Ok((self.shape.object_preflight(req), CacheStatus::None)),
            _ => return Err(get_or_head()),
        };
        let facts = RequestFacts {
            asset: &asset,
            key: &key,
            query: req.uri.query(),
            headers: &req.headers,
            client: conn.client,
        };
        let (kind, ctype) = request::classify(&key);
        let class = match kind {
            ObjectKind::Manifest => Class::Playlist,
            ObjectKind::Segment | ObjectKind::Other => Class::Segment,
        };
        // HLS playlists get minted session ids. MPDs do not: ffmpeg's DASH demuxer hands
        // `BaseURL` text to libxml2 as markup and fails on the `&` before `sg_sid`, so a
        // DASH player is counted by its CMCD `sid`, or per client network.
        let mints = class == Class::Playlist && ctype == "application/vnd.apple.mpegurl";
        let (query_token, shared, prefix, session) =
            match self.gate.check(&facts, SystemTime::now()).await {
                Decision::Allow {
                    query_token,
                    shared,
                    prefix,
                    viewer,
                } => {
                    let who = Who {
                        ip: conn.client,
                        principals: viewer.principals(),
                    };
                    self.limit(class, viewer.rate_limits(), who)?;
                    // An entry playlist fetched with a query token starts a session whose id
                    // the rewritten playlist carries.
                    // CMCD is read once, for the session, sharing and the QoE aggregates.
                    let cmcd = if self.analytics.is_some()
                        || viewer.stream_cap().is_some()
                        || viewer.sharing().is_some()
                    {
                        crate::cmcd::read(req.uri.query(), &req.headers)
                    } else {
                        Ok(None)
                    };
                    let cmcd_sid = cmcd.as_ref().ok().and_then(|d| d.as_ref()?.sid);
                    let (session, sid) =
                        self.session(req, conn, &viewer, query_token && mints, cmcd_sid)?;
                    self.share_check(conn, &viewer, sid)?;
                    if let Some(a) = &self.analytics {
                        a.record(&asset, kind, cmcd, conn.client, Instant::now());
                    }
                    if self.gate.is_guarded() {
                        self.metrics.gate_allow();
                    }
                    (query_token, shared, prefix, session)
                }
                Decision::Deny(refusal) => {
                    // Refusals count against the client network too, so guessing tokens or
                    // asset ids from one network is limited like any other traffic.
                    let who = Who {
                        ip: conn.client,
                        ..Who::default()
                    };
                    self.limit(class, None, who)?;
                    return Err(EdgeError::Gate(refusal));
                }
            };
        let token = if query_token {
            req.uri.query().and_then(credential::raw_query_pair)
        } else {
            None
        };
        // A published version: `{asset}/{path}` is read (and cached) as `{prefix}/{path}`.
        let key = match prefix {
            Some(prefix) => Cow::Owned(format!("{prefix}{}", &key[asset.len()..])),
            None => key,
        };
        let rewrite = token.map(|t| (t, session.as_deref()));
        // The published prefix changes the asset part only, so the classification holds.
        self.serve_object(req, &key, (kind, ctype), head, rewrite, shared)
            .await
    }

    async fn serve_object(
        &self,
        req: &Parts,
        key: &str,
        (kind, ctype): (ObjectKind, &'static str),
        head: bool,
        rewrite: Option<(&str, Option<&str>)>,
        shared: bool,
    ) -> Result<(Response<Body>, CacheStatus), EdgeError> {
        let (entry, status) = match self.cache.lookup(key, Instant::now()) {
            Lookup::Fresh(e) => (e, CacheStatus::Hit),
            Lookup::Absent => {
                return Ok((
                    self.fail(&origin_failure(&FillError::NotFound)),
                    CacheStatus::Hit,
                ));
            }
            Lookup::Stale(old) => match self.fill(key, kind).await {
                (Ok(Fill::Stored(e)), _) => (e, CacheStatus::Miss),
                (Ok(Fill::Streaming(f)), leader) => match f.entry() {
                    // Joined a fill that has completed since: the object is in memory.
                    Some(e) if !leader => (e, CacheStatus::Hit),
                    _ => return self.streaming(req, &f, ctype, kind, head, shared),
                },
                (Ok(Fill::TooLarge), _) => {
                    self.cache.invalidate(key);
                    return self.bypass(req, key, ctype, kind, head, shared).await;
                }
                (Err(FillError::NotFound), _) => {
                    self.cache.invalidate(key);
                    return Ok((
                        self.fail(&origin_failure(&FillError::NotFound)),
                        CacheStatus::Miss,
                    ));
                }
                (Err(_), _) => (old, CacheStatus::Stale),
            },
            Lookup::Miss => match self.fill(key, kind).await {
                (Ok(Fill::Stored(e)), _) => (e, CacheStatus::Miss),
                (Ok(Fill::Streaming(f)), leader) => match f.entry() {
                    Some(e) if !leader => (e, CacheStatus::Hit),
                    _ => return self.streaming(req, &f, ctype, kind, head, shared),
                },
                (Ok(Fill::TooLarge), _) => {
                    return self.bypass(req, key, ctype, kind, head, shared).await;
                }
                (Err(e), _) => return Ok((self.fail(&origin_failure(&e)), CacheStatus::Miss)),
            },
        };
        if let (ObjectKind::Manifest, Some((param, session))) = (kind, rewrite) {
            let resp = response::rewritten_manifest(&entry, ctype, param, session, head)
                .unwrap_or_else(|e| self.fail(&e));
            return Ok((resp, status));
        }
        Ok((
            self.shape.entry(req, &entry, ctype, kind, head, shared),
            status,
        ))
    }

    /// Fills `key` (see [`Cache::fill`]); also says whether this request started the fill.
    async fn fill(&self, key: &str, kind: ObjectKind) -> (FillResult, bool) {
        let ttl = match kind {
            ObjectKind::Manifest => self.cfg.manifest_ttl,
            ObjectKind::Segment | ObjectKind::Other => self.cfg.segment_ttl,
        };
        let stale = self.cfg.stale_if_error;
        let max = self.cfg.max_object_bytes;
        let origin = self.origin.clone();
        let metrics = Arc::clone(&self.metrics);
        let Ok(okey) = ObjectKey::new(key) else {
            return (Err(FillError::NotFound), true);
        };
        let fetch = async move {
            let t0 = Instant::now();
            let failed = |e: OriginError| {
                let (result, err) = classify_origin_error(e);
                metrics.origin(result, t0.elapsed().as_secs_f64());
                if let FillError::Unavailable(msg) = &err {
                    tracing::warn!(key = %okey, error = %msg, "origin read failed");
                }
                err
            };
            let obj = origin.get(&okey).await.map_err(&failed)?;
            if obj.size > max {
                metrics.origin(OriginResult::Ok, t0.elapsed().as_secs_f64());
                return Ok(Fill::TooLarge);
            }
            let size = obj.size;
            let entry = move |body: Bytes| Arc::new(Entry::new(body, Instant::now(), ttl, stale));
            if kind == ObjectKind::Manifest {
                // Manifests are small and rewritten whole: read them whole.
                let body = obj.collect().await.map_err(&failed)?;
                metrics.origin(OriginResult::Ok, t0.elapsed().as_secs_f64());
                return Ok(Fill::Stored(entry(body)));
            }
            let mut body = obj.body;
            let first = match body.next().await {
                None => Bytes::new(),
                Some(chunk) => chunk.map_err(&failed)?,
            };
            if first.len() as u64 == size {
                // The whole object in one chunk (files): store it at once.
                metrics.origin(OriginResult::Ok, t0.elapsed().as_secs_f64());
                return Ok(Fill::Stored(entry(first)));
            }
            // Read-while-write: readers stream the chunks as the pump appends them.
            let filling = Arc::new(Filling::new(size));
            let pump = Pump {
                filling: Arc::clone(&filling),
                done: false,
            };
            tokio::spawn(pump.run(first, body, move |res| {
                let result = if res.is_ok() {
                    OriginResult::Ok
                } else {
                    OriginResult::Error
                };
                metrics.origin(result, t0.elapsed().as_secs_f64());
                res.map(entry)
            }));
            Ok(Fill::Streaming(filling))
        };
        self.cache.fill(key, fetch).await
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
    ) -> Result<(Response<Body>, CacheStatus), EdgeError> {
        let bypassed = |e: EdgeError| Ok((self.fail(&e), CacheStatus::Bypass));
        let Ok(okey) = ObjectKey::new(key) else {
            return bypassed(EdgeError::Origin(OriginFailure::NotFound));
        };
        let t0 = Instant::now();
        let obj = match self.origin.get(&okey).await {
            Ok(o) => o,
            Err(e) => {
                let (result, err) = classify_origin_error(e);
                self.metrics.origin(result, t0.elapsed().as_secs_f64());
                return bypassed(origin_failure(&err));
            }
        };
        self.metrics
            .origin(OriginResult::Ok, t0.elapsed().as_secs_f64());
        self.stream(
            req,
            ctype,
            kind,
            head,
            shared,
            obj.size,
            obj.body,
            CacheStatus::Bypass,
        )
    }

    /// A response streamed from a fill in flight.
    fn streaming(
        &self,
        req: &Parts,
        f: &Arc<Filling>,
        ctype: &'static str,
        kind: ObjectKind,
        head: bool,
        shared: bool,
    ) -> Result<(Response<Body>, CacheStatus), EdgeError> {
        let body = f.stream();
        let len = f.size();
        self.stream(req, ctype, kind, head, shared, len, body, CacheStatus::Miss)
    }

    /// A response whose body is a stream of `len` bytes (a fill in flight, or an object
    /// too large to cache), with ranges served from the stream.
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        req: &Parts,
        ctype: &'static str,
        kind: ObjectKind,
        head: bool,
        shared: bool,
        len: u64,
        body: futures::stream::BoxStream<'static, Result<Bytes, OriginError>>,
        cache: CacheStatus,
    ) -> Result<(Response<Body>, CacheStatus), EdgeError> {
        let range = response::range_of(req, len, None);
        let mut b = Response::builder()
            .header(header::CONTENT_TYPE, ctype)
            .header(header::ACCEPT_RANGES, BYTES)
            .header(
                header::CACHE_CONTROL,
                self.shape.cache_control(kind, shared),
            );
        let (status, body, n) = match range {
            RangeOutcome::Unsatisfiable => {
                return Ok((
                    self.fail(&EdgeError::Client(ClientError::Range { len })),
                    cache,
                ));
            }
            RangeOutcome::Full => (StatusCode::OK, body, len),
            RangeOutcome::Partial { start, end } => {
                b = b.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
                let n = end - start + 1;
                (StatusCode::PARTIAL_CONTENT, slice_stream(body, start, n), n)
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
        Ok((resp, cache))
    }

    async fn sign_in(
        &self,
        endpoint: SignIn,
        req: &Parts,
        body: Option<Bytes>,
    ) -> Result<Response<Body>, EdgeError> {
        let Some(auth) = &self.auth else {
            return Err(EdgeError::Client(ClientError::NoRoute));
        };
        match req.method {
            Method::POST => {
                let body = body.ok_or(EdgeError::Client(ClientError::TooLarge))?;
                let v = auth.serve(endpoint, &body, SystemTime::now()).await?;
                Ok(response::json(&v))
            }
            Method::OPTIONS => Ok(self.shape.preflight(req, POST_OPTIONS)),
            _ => Err(EdgeError::Client(ClientError::Method {
                allow: "POST, OPTIONS",
            })),
        }
    }
}

fn get_or_head() -> EdgeError {
    EdgeError::Client(ClientError::Method {
        allow: "GET, HEAD, OPTIONS",
    })
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

fn content_length(h: &http::HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn origin_failure(e: &FillError) -> EdgeError {
    EdgeError::Origin(match e {
        FillError::NotFound => OriginFailure::NotFound,
        FillError::Timeout => OriginFailure::Timeout,
        FillError::Unavailable(_) => OriginFailure::Unavailable,
    })
}

/// Reads the rest of a streaming fill's body from the origin into its [`Filling`], and
/// ends it: complete (with the entry `finish` makes) or broken. Dropped unfinished (a
/// panic, a runtime shutting down), it ends the fill as broken, so no reader waits for
/// ever.
struct Pump {
    filling: Arc<Filling>,
    done: bool,
}

impl Pump {
    async fn run(
        mut self,
        first: Bytes,
        mut body: futures::stream::BoxStream<'static, Result<Bytes, OriginError>>,
        finish: impl FnOnce(Result<Bytes, ()>) -> Result<Arc<Entry>, ()>,
    ) {
        let size = self.filling.size();
        let mut got = first.len() as u64;
        self.filling.push(first);
        let broken = loop {
            if got == size {
                // Complete: the entry is ready in the same step as the last chunk, so a
                // reader that has the whole body finds the object cached.
                let entry = finish(Ok(self.filling.assemble())).expect("a complete body");
                self.filling.finish(Ok(entry));
                self.done = true;
                return;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    got += chunk.len() as u64;
                    if got > size {
                        break format!("origin sent more than its {size} bytes");
                    }
                    self.filling.push(chunk);
                }
                Some(Err(e)) => break e.to_string(),
                None => break format!("origin ended after {got} of {size} bytes"),
            }
        };
        tracing::warn!(error = %broken, "origin read failed mid-body");
        let _ = finish(Err(()));
        self.filling.finish(Err(broken.into()));
        self.done = true;
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if !self.done {
            self.filling.finish(Err("fill abandoned".into()));
        }
    }
}
