//! The tus server: hyper glue around the pure core. It authenticates, loads the upload
//! record, streams PATCH bodies into the staging area while hashing them, records durable
//! offsets, and submits the job when an upload completes.
//!
//! One request writes an upload at a time. A second request for the same upload (a client
//! that resumed before the server noticed its old connection died) asks the holder to
//! stop; the holder keeps what it received, records it, and lets go; the newcomer then
//! sees the recorded offset (tusd's lock release request, done in process). Record writes
//! are guarded by the version last read, so two ingest processes can never both advance
//! one upload: the loser gets 423.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use streamgate_control::auth::{Actor, AdminTokens, AuthError, Role};
use streamgate_control::job::{self, JobDoc, JobId, JobSource, JobState};
use streamgate_control::store::{Guard, Op, Store, StoreError};
use streamgate_origin::{Staging, StagingError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::config::IngestConfig;
use super::digest::{Hasher, Sha256};
use super::error::TusError;
use super::headers::{self, Checksum, EXTENSIONS, TUS_VERSION};
use super::record::{self, UploadRecord, UploadState, record_key};

/// The job id of a completed upload, on the final PATCH (and on HEAD).
pub const JOB_HEADER: &str = "stream-gate-job";

/// The tus headers a browser page may read.
const EXPOSE: &str = "Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, \
     Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, \
     Stream-Gate-Job";
/// The request headers a browser page may send.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Tus-Resumable, Upload-Length, \
     Upload-Metadata, Upload-Offset, Upload-Checksum, Upload-Defer-Length, Upload-Concat, \
     X-HTTP-Method-Override, X-Requested-With";
const ALLOW_METHODS: &str = "POST, HEAD, PATCH, DELETE, OPTIONS";

/// The actor that removes expired uploads in the audit log.
const SWEEPER: &str = "ingest";

type Body = Full<Bytes>;

/// The tus ingest server. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    sh: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    staging: Staging,
    tokens: AdminTokens,
    cfg: IngestConfig,
    max_size: HeaderValue,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// The per-upload lock, and a way to ask its holder to stop.
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    stop: Mutex<Option<watch::Sender<bool>>>,
}

/// A held upload lock; released (and the slot forgotten when idle) on drop.
struct Held {
    sh: Arc<Shared>,
    id: String,
    slot: Arc<Slot>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    stop: watch::Receiver<bool>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.guard.take();
        let mut slots = self.sh.slots.lock().expect("slot map");
        // The map's reference and ours: nobody else waits for this upload.
        if Arc::strong_count(&self.slot) == 2 {
            slots.remove(&self.id);
        }
    }
}

fn store_err(e: StoreError) -> TusError {
    match e {
        StoreError::Conflict { .. } => TusError::Locked,
        other => TusError::Unavailable(format!("state store: {other}")),
    }
}

fn staging_err(e: StagingError) -> TusError {
    match e {
        e @ (StagingError::Short { .. } | StagingError::WrongBackend(_)) => {
            TusError::Internal(e.to_string())
        }
        e @ StagingError::TooLarge(_) => TusError::TooLarge(e.to_string()),
        other => TusError::Unavailable(other.to_string()),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    h.get(name).map(HeaderValue::as_bytes)
}

fn http_date(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).expect("an HTTP date is a header value")
}

/// How a PATCH body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// All of it arrived.
    Done,
    /// The client went away or the body broke.
    Broken,
    /// Nothing arrived for `idle_timeout`.
    Idle,
    /// Another request for the upload asked us to stop.
    Superseded,
    /// More bytes than the upload's length.
    Overflow,
}

impl Ingest {
    /// An ingest over `store` (records and jobs) and `staging` (bytes), accepting `tokens`.
    pub fn new(
        store: Arc<dyn Store>,
        staging: Staging,
        tokens: AdminTokens,
        cfg: IngestConfig,
    ) -> Self {
        let max_size = HeaderValue::from(cfg.max_size);
        Self {
            sh: Arc::new(Shared {
                store,
                staging,
                tokens,
                cfg,
                max_size,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Serves tus on `listener` until `shutdown` completes, then lets requests in flight
    /// finish (at most 10 s). Also finishes completed uploads whose job was not submitted
    /// (a crash between the two) and removes expired uploads every `sweep_interval`.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let maintenance = tokio::spawn(self.clone().maintain(stop_rx.clone()));
        let mut conns = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (tcp, _) = match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "ingest accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let this = self.clone();
                    let mut stop = stop_rx.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let this = this.clone();
                            async move { Ok::<_, Infallible>(this.handle(req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            // Read large bodies in large reads.
                            .max_buf_size(1 << 20)
                            .header_read_timeout(Duration::from_secs(30))
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            conns.abort_all();
        }
        maintenance.abort();
        Ok(())
    }

    async fn maintain(self, mut stop: watch::Receiver<bool>) {
        if let Err(e) = self.recover().await {
            tracing::warn!(error = %e, "ingest recovery pass failed; retried at the next sweep");
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.sh.cfg.sweep_interval) => {}
                _ = stop.changed() => return,
            }
            match self.sweep(SystemTime::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired uploads removed"),
                Err(e) => tracing::warn!(error = %e, "expired-upload sweep failed"),
            }
            if let Err(e) = self.recover().await {
                tracing::warn!(error = %e, "ingest recovery pass failed");
            }
        }
    }

    async fn records(&self) -> Result<Vec<(UploadRecord, i64)>, TusError> {
        let prefix = record_key("");
        let (items, _) = self.sh.store.list(&prefix).await.map_err(store_err)?;
        Ok(items
            .into_iter()
            .filter_map(|(k, v)| match serde_json::from_slice(&v.value) {
                Ok(r) => Some((r, v.version)),
                Err(e) => {
                    tracing::warn!(key = %k, error = %e, "skipping an upload record that does not parse");
                    None
                }
            })
            .collect())
    }

    /// Submits the jobs of complete uploads that have none yet. Returns how many.
    pub async fn recover(&self) -> Result<usize, TusError> {
        let mut n = 0;
        for (mut rec, mut ver) in self.records().await? {
            if rec.state == UploadState::Complete && rec.job.is_none() {
                let Ok(_held) = self.try_lock(&rec.id) else {
                    continue;
                };
                self.finalize(&mut rec, &mut ver).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes uploads unfinished past their expiry at `now`. Returns how many.
    pub async fn sweep(&self, now: SystemTime) -> Result<usize, TusError> {
        let mut n = 0;
        for (rec, ver) in self.records().await? {
            if !rec.is_expired(now) {
                continue;
            }
            let Ok(_held) = self.try_lock(&rec.id) else {
                continue;
            };
            self.sh
                .staging
                .remove(&rec.id, &rec.stage)
                .await
                .map_err(staging_err)?;
            let key = record_key(&rec.id);
            let ops = vec![
                Op::delete(key.clone()),
                streamgate_control::api::audit_op(
                    SWEEPER,
                    "upload.expire",
                    &rec.audit_target(),
                    ver,
                ),
            ];
            match self
                .sh
                .store
                .txn(&[Guard { key, expected: ver }], ops)
                .await
            {
                Ok(_) => n += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(n)
    }

    fn try_lock(&self, id: &str) -> Result<Held, TusError> {
        let slot = self.slot(id);
        let guard = Arc::clone(&slot.lock)
            .try_lock_owned()
            .map_err(|_| TusError::Locked)?;
        Ok(self.held(id, slot, guard))
    }

    fn slot(&self, id: &str) -> Arc<Slot> {
        let mut slots = self.sh.slots.lock().expect("slot map");
        Arc::clone(slots.entry(id.to_owned()).or_insert_with(|| {
            Arc::new(Slot {
                lock: Arc::new(tokio::sync::Mutex::new(())),
                stop: Mutex::new(None),
            })
        }))
    }

    fn held(&self, id: &str, slot: Arc<Slot>, guard: tokio::sync::OwnedMutexGuard<()>) -> Held {
        let (tx, rx) = watch::channel(false);
        *slot.stop.lock().expect("stop slot") = Some(tx);
        Held {
            sh: Arc::clone(&self.sh),
            id: id.to_owned(),
            slot,
            guard: Some(guard),
            stop: rx,
        }
    }

    /// Takes upload `id`'s lock, asking a holder to stop and waiting up to `lock_wait`.
    async fn lock(&self, id: &str) -> Result<Held, TusError> {
        let slot = self.slot(id);
        let guard = match Arc::clone(&slot.lock).try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                if let Some(tx) = slot.stop.lock().expect("stop slot").as_ref() {
                    tx.send_replace(true);
                }
                tokio::time::timeout(self.sh.cfg.lock_wait, Arc::clone(&slot.lock).lock_owned())
                    .await
                    .map_err(|_| TusError::Locked)?
            }
        };
        Ok(self.held(id, slot, guard))
    }

    /// Audits a refused request (`denied`, as the control API does) and returns the 403.
    async fn deny(&self, who: &Actor, target: &str, why: String) -> TusError {
        streamgate_control::api::access::audit_denial(&*self.sh.store, &who.name, target).await;
        TusError::Forbidden(why)
    }

    /// Refuses a tenant's token an upload outside its asset prefixes.
    async fn check_asset(&self, who: &Actor, target: &str, asset: &str) -> Result<(), TusError> {
        if who.may_touch(asset) {
            return Ok(());
        }
        Err(self
            .deny(
                who,
                target,
                format!(
                    "token {:?} is limited to assets {}; asset {asset:?} is outside them",
                    who.name,
                    who.assets.join(", ")
                ),
            )
            .await)
    }

    /// Upload `id`'s record, once `who` may touch its asset.
    async fn load(&self, id: &str, who: &Actor) -> Result<(UploadRecord, i64), TusError> {
        let v = self
            .sh
            .store
            .get(&record_key(id))
            .await
            .map_err(store_err)?
            .ok_or(TusError::NotFound)?;
        let rec: UploadRecord = serde_json::from_slice(&v.value)
            .map_err(|e| TusError::Internal(format!("upload record {id}: {e}")))?;
        self.check_asset(who, &rec.audit_target(), &rec.asset)
            .await?;
        Ok((rec, v.version))
    }

    async fn save(
        &self,
        rec: &UploadRecord,
        ver: &mut i64,
        audit: Option<&str>,
    ) -> Result<(), TusError> {
        let key = record_key(&rec.id);
        let value = serde_json::to_vec(rec).expect("a record serialises");
        let mut ops = vec![Op::put(key.clone(), value)];
        if let Some(action) = audit {
            ops.push(streamgate_control::api::audit_op(
                &rec.actor,
                action,
                &rec.audit_target(),
                *ver,
            ));
        }
        let guard = Guard {
            key,
            expected: *ver,
        };
        *ver = self.sh.store.txn(&[guard], ops).await.map_err(store_err)?;
        Ok(())
    }

    /// Submits the job of a complete upload and records it (`upload.complete`).
    async fn finalize(&self, rec: &mut UploadRecord, ver: &mut i64) -> Result<JobId, TusError> {
        if let Some(j) = &rec.job
            && let Ok(id) = JobId::parse(j)
        {
            return Ok(id);
        }
        let sha_hex = rec
            .sha256
            .clone()
            .ok_or_else(|| TusError::Internal("complete upload without a digest".into()))?;
        let mut sha = [0u8; 32];
        for (i, b) in sha.iter_mut().enumerate() {
            *b = sha_hex
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| TusError::Internal("stored digest is not hex".into()))?;
        }
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let doc = JobDoc {
            id: JobId::derive(&sha, &rec.ladder),
            asset: rec.asset.clone(),
            policy: rec.policy.clone(),
            ladder: rec.ladder.clone(),
            source: JobSource::Upload {
                upload: rec.id.clone(),
                key: rec.staged_key.clone(),
                size: rec.size,
            },
            source_sha256: sha_hex,
            filename: rec.filename.clone(),
            priority: 0,
            state: JobState::Queued,
            progress: 0.0,
            error: None,
            actor: rec.actor.clone(),
            created_at: now.clone(),
            updated_at: now,
            farm: Default::default(),
            extra: Default::default(),
        };
        let submitted = job::submit(&*self.sh.store, doc)
            .await
            .map_err(|e| TusError::Unavailable(format!("job submission: {e}")))?;
        let id = submitted.doc.id;
        rec.job = Some(id.to_string());
        self.save(rec, ver, Some("upload.complete")).await?;
        tracing::info!(upload = %rec.id, job = %id, asset = %rec.asset, created = submitted.created, "upload complete");
        Ok(id)
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let is_head = req.method() == Method::HEAD;
        let mut resp = match self.route(req).await {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, TusError::NotFound | TusError::Gone(_)) {
                    tracing::debug!(error = %e, "ingest request refused");
                }
                let mut r = Response::new(if is_head {
                    Body::default()
                } else {
                    Body::from(e.body())
                });
                *r.status_mut() = e.status();
                if let TusError::Checksum(_) = e {
                    // 460 has no standard reason phrase; tus names it.
                    r.extensions_mut()
                        .insert(hyper::ext::ReasonPhrase::from_static(b"Checksum Mismatch"));
                }
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if e == TusError::Version {
                    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
                }
                if e == TusError::Unauthenticated {
                    h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                r
            }
        };
        let h = resp.headers_mut();
        h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
        self.cors(origin.as_ref(), h);
        resp
    }

    fn cors(&self, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
        let allowed = &self.sh.cfg.cors_allow_origins;
        let Some(origin) = origin else { return };
        let value = if allowed.iter().any(|o| o == "*") {
            HeaderValue::from_static("*")
        } else if allowed.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
            origin.clone()
        } else {
            return;
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, TusError> {
        // X-HTTP-Method-Override, for clients that cannot send PATCH or DELETE.
        let method = match header(req.headers(), "x-http-method-override") {
            Some(m) => Method::from_bytes(m.trim_ascii())
                .map_err(|_| TusError::BadRequest("X-HTTP-Method-Override: not a method".into()))?,
            None => req.method().clone(),
        };
        let path = req.uri().path();
        let id = match path {
            "/uploads" | "/uploads/" => None,
            p => match p.strip_prefix("/uploads/") {
                Some(id) if record::is_upload_id(id) => Some(id.to_owned()),
                _ => return Err(TusError::NotFound),
            },
        };
        if method == Method::OPTIONS {
            return Ok(self.options(req.headers()));
        }
        headers::check_resumable(header(req.headers(), "tus-resumable"))
            .map_err(|_| TusError::Version)?;
        let actor = self
            .sh
            .tokens
            .authorize(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
            )
            .map_err(|e| match e {
                AuthError::Missing => TusError::Unauthenticated,
                e => TusError::Forbidden(e.to_string()),
            })?
            .clone();
        if actor.role < Role::Operator {
            return Err(self
                .deny(
                    &actor,
                    "uploads",
                    format!(
                        "uploading needs the operator role; token {:?} has {}",
                        actor.name,
                        actor.role.as_str()
                    ),
                )
                .await);
        }
        match (id, method) {
            (None, Method::POST) => self.create(req, &actor).await,
            (Some(id), Method::HEAD) => self.head(&id, &actor).await,
            (Some(id), Method::PATCH) => self.patch(req, &id, &actor).await,
            (Some(id), Method::DELETE) => self.delete(&id, &actor).await,
            _ => Err(TusError::Method),
        }
    }

    fn options(&self, req: &HeaderMap) -> Response<Body> {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
        h.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
        h.insert("tus-max-size", self.sh.max_size.clone());
        h.insert(
            "tus-checksum-algorithm",
            HeaderValue::from_static(headers::CHECKSUM_ALGORITHMS),
        );
        if req.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            && !self.sh.cfg.cors_allow_origins.is_empty()
        {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
        }
        r
    }

    fn upload_headers(&self, rec: &UploadRecord, h: &mut HeaderMap) {
        h.insert("upload-offset", HeaderValue::from(rec.offset));
        if rec.state == UploadState::Uploading
            && let Some(t) = rec.expires()
        {
            h.insert("upload-expires", http_date(t));
        }
        if let Some(j) = rec
            .job
            .as_deref()
            .and_then(|j| HeaderValue::from_str(j).ok())
        {
            h.insert(HeaderName::from_static(JOB_HEADER), j);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }

    async fn create(
        &self,
        req: Request<Incoming>,
        actor: &Actor,
    ) -> Result<Response<Body>, TusError> {
        let h = req.headers();
        if h.contains_key("upload-concat") {
            return Err(TusError::BadRequest(
                "Upload-Concat: the concatenation extension is not supported".into(),
            ));
        }
        let size = match header(h, "upload-length") {
            Some(v) => headers::parse_u64(v)
                .map_err(|e| TusError::BadRequest(format!("Upload-Length: {e}")))?,
            None if h.contains_key("upload-defer-length") => {
                return Err(TusError::BadRequest(
                    "Upload-Defer-Length is not supported: send Upload-Length".into(),
                ));
            }
            None => return Err(TusError::BadRequest("Upload-Length is required".into())),
        };
        if size > self.sh.cfg.max_size {
            return Err(TusError::TooLarge(format!(
                "Upload-Length {size} is over this server's maximum of {} bytes (Tus-Max-Size)",
                self.sh.cfg.max_size
            )));
        }
        let raw_meta = header(h, "upload-metadata").unwrap_or_default();
        let meta =
            record::validate_metadata(raw_meta, &self.sh.cfg.ladders, &self.sh.cfg.default_ladder)?;
        self.check_asset(actor, &format!("uploads asset={}", meta.asset), &meta.asset)
            .await?;
        if let Some(p) = &meta.policy {
            self.check_asset(actor, &format!("policies/{p}"), p).await?;
            let key = format!("{}policies/{p}", streamgate_control::store::PREFIX);
            if self.sh.store.get(&key).await.map_err(store_err)?.is_none() {
                return Err(TusError::BadMetadata(format!(
                    "policy {p:?} does not exist (apply it first: streamgate ctl policy apply)"
                )));
            }
        }
        let body_len = content_length(h)?;
        let has_body = body_len.is_some_and(|n| n > 0) || h.contains_key(header::TRANSFER_ENCODING);
        if has_body && !headers::is_offset_stream(header(h, "content-type")) {
            return Err(TusError::MediaType);
        }
        if let Some(n) = body_len
            && n > size
        {
            return Err(TusError::TooLarge(format!(
                "a {n}-byte body for an upload of {size} bytes"
            )));
        }
        let checksum = checksum_header(h)?;
        let id = record::new_upload_id()?;
        let staged_key = Staging::data_key(&id)
            .map_err(|e| TusError::Internal(e.to_string()))?
            .to_string();
        let stage = self
            .sh
            .staging
            .create(&id, size)
            .await
            .map_err(staging_err)?;
        let raw_meta = String::from_utf8_lossy(raw_meta).into_owned();
        let mut rec = UploadRecord::new(
            id.clone(),
            size,
            meta,
            raw_meta,
            actor.name.clone(),
            staged_key,
            stage,
            SystemTime::now(),
            self.sh.cfg.expire_after,
        );
        let mut ver = 0;
        self.save(&rec, &mut ver, Some("upload.create")).await?;
        tracing::info!(upload = %id, asset = %rec.asset, size, actor = %rec.actor, "upload created");
        let held = self.lock(&id).await?;
        let mut outcome = Ok(());
        if size == 0 {
            self.complete_empty(&mut rec, &mut ver).await?;
        } else if has_body {
            outcome = self
                .write_body(
                    &mut rec,
                    &mut ver,
                    req.into_body(),
                    checksum,
                    held.stop.clone(),
                )
                .await;
        }
        drop(held);
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::CREATED;
        let loc =
            HeaderValue::from_str(&format!("/uploads/{id}")).expect("an id is a header value");
        r.headers_mut().insert(header::LOCATION, loc);
        self.upload_headers(&rec, r.headers_mut());
        match outcome {
            Ok(()) => Ok(r),
            // The upload exists; the client resumes it with HEAD at its Location.
            Err(e) => {
                tracing::debug!(upload = %id, error = %e, "creation-with-upload body not kept");
                Ok(r)
            }
        }
    }

    async fn complete_empty(&self, rec: &mut UploadRecord, ver: &mut i64) -> Result<(), TusError> {
        let w = self
            .sh
            .staging
            .writer(&rec.id, &rec.stage, 0)
            .await
            .map_err(staging_err)?;
        let c = w.commit(true).await.map_err(staging_err)?;
        let now = SystemTime::now();
        let sha = Sha256::new();
        rec.advance(0, c.state, sha.state(), now, self.sh.cfg.expire_after);
        rec.complete(sha.finish(), now);
        self.save(rec, ver, None).await?;
        self.finalize(rec, ver).await?;
        Ok(())
    }

    async fn head(&self, id: &str, who: &Actor) -> Result<Response<Body>, TusError> {
        let (mut rec, mut ver) = self.load(id, who).await?;
        rec.check_live(SystemTime::now())?;
        if rec.state == UploadState::Complete
            && rec.job.is_none()
            && let Ok(_held) = self.try_lock(id)
        {
            self.finalize(&mut rec, &mut ver).await?;
        }
        let mut r = Response::new(Body::default());
        let h = r.headers_mut();
        h.insert("upload-length", HeaderValue::from(rec.size));
        if !rec.upload_metadata.is_empty()
            && let Ok(v) = HeaderValue::from_str(&rec.upload_metadata)
        {
            h.insert("upload-metadata", v);
        }
        self.upload_headers(&rec, h);
        Ok(r)
    }

    async fn patch(
        &self,
        req: Request<Incoming>,
        id: &str,
        who: &Actor,
    ) -> Result<Response<Body>, TusError> {
        let h = req.headers();
        if !headers::is_offset_stream(header(h, "content-type")) {
            return Err(TusError::MediaType);
        }
        let offset = header(h, "upload-offset")
            .ok_or_else(|| TusError::BadRequest("Upload-Offset is required".into()))
            .and_then(|v| {
                headers::parse_u64(v)
                    .map_err(|e| TusError::BadRequest(format!("Upload-Offset: {e}")))
            })?;
        let len = content_length(h)?;
        let checksum = checksum_header(h)?;
        let held = self.lock(id).await?;
        let (mut rec, mut ver) = self.load(id, who).await?;
        rec.check_patch(SystemTime::now(), offset, len)?;
        if rec.state == UploadState::Complete {
            self.finalize(&mut rec, &mut ver).await?;
        } else {
            self.write_body(
                &mut rec,
                &mut ver,
                req.into_body(),
                checksum,
                held.stop.clone(),
            )
            .await?;
        }
        drop(held);
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        self.upload_headers(&rec, r.headers_mut());
        Ok(r)
    }

    /// Streams `body` into the upload at its recorded offset, hashing as it goes, and
    /// records what was kept. Without a checksum every byte that arrived is kept, even if
    /// the body breaks; with one, the body is kept only whole and matching.
    async fn write_body(
        &self,
        rec: &mut UploadRecord,
        ver: &mut i64,
        mut body: Incoming,
        checksum: Option<Checksum>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), TusError> {
        let cfg = &self.sh.cfg;
        let mut sha = Sha256::from_state(&rec.sha256_state)
            .map_err(|e| TusError::Internal(format!("upload {}: {e}", rec.id)))?;
        if sha.len() != rec.offset {
            return Err(TusError::Internal(format!(
                "upload {}: hash state at {} bytes, offset {}",
                rec.id,
                sha.len(),
                rec.offset
            )));
        }
        let mut w = self
            .sh
            .staging
            .writer(&rec.id, &rec.stage, rec.offset)
            .await
            .map_err(staging_err)?;
        let mut ck = checksum.as_ref().map(|c| Hasher::new(c.algorithm));
        let mut pending: Option<tokio::task::JoinHandle<Result<i64, TusError>>> = None;
        let end = loop {
            let frame = tokio::select! {
                f = tokio::time::timeout(cfg.idle_timeout, body.frame()) => f,
                _ = stop.changed() => break End::Superseded,
            };
            let frame = match frame {
                Err(_) => break End::Idle,
                Ok(None) => break End::Done,
                Ok(Some(Err(_))) => break End::Broken,
                Ok(Some(Ok(f))) => f,
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            let room = rec.size - w.written();
            let over = data.len() as u64 > room;
            if over {
                data.truncate(room as usize);
            }
            sha.update(&data);
            if let Some(c) = ck.as_mut() {
                c.update(&data);
            }
            w.write(data).await.map_err(staging_err)?;
            if over {
                break End::Overflow;
            }
            if ck.is_none()
                && w.written() < rec.size
                && w.checkpoint_due(cfg.checkpoint_every)
                && pending
                    .as_ref()
                    .is_none_or(tokio::task::JoinHandle::is_finished)
            {
                if let Some(p) = pending.take() {
                    settle(p, ver).await;
                }
                if let Some((c, durable)) = w.checkpoint().await.map_err(staging_err)? {
                    // Recorded once durable, while the body keeps streaming in.
                    let mut snap = rec.clone();
                    snap.advance(
                        c.offset,
                        c.state,
                        sha.state(),
                        SystemTime::now(),
                        cfg.expire_after,
                    );
                    let (this, mut v) = (self.clone(), *ver);
                    pending = Some(tokio::spawn(async move {
                        durable.await.map_err(staging_err)?;
                        this.save(&snap, &mut v, None).await?;
                        Ok(v)
                    }));
                }
            }
        };
        if let Some(p) = pending.take() {
            settle(p, ver).await;
        }
        if let (Some(want), Some(c)) = (checksum, ck) {
            let alg = want.algorithm.as_str();
            let refusal = match end {
                End::Done if c.finish() == want.digest => None,
                End::Done => Some(TusError::Checksum(alg)),
                End::Overflow => Some(TusError::TooLarge(format!(
                    "the body goes past Upload-Length {}",
                    rec.size
                ))),
                _ => Some(TusError::BadRequest(format!(
                    "the body ended before it was complete; a body with Upload-Checksum ({alg}) is kept only whole"
                ))),
            };
            if let Some(e) = refusal {
                w.rollback().await.map_err(staging_err)?;
                return Err(e);
            }
        }
        let last = w.written() == rec.size;
        let c = w.commit(last).await.map_err(staging_err)?;
        let now = SystemTime::now();
        rec.advance(c.offset, c.state, sha.state(), now, cfg.expire_after);
        if last {
            rec.complete(sha.finish(), now);
        }
        self.save(rec, ver, None).await?;
        if let Err(e) = self.sh.staging.discard(&rec.id, &c.obsolete).await {
            tracing::warn!(upload = %rec.id, error = %e, "could not delete an old tail object");
        }
        if last {
            self.finalize(rec, ver).await?;
        }
        match end {
            End::Done => Ok(()),
            End::Overflow => Err(TusError::TooLarge(format!(
                "the body goes past Upload-Length {}; the bytes up to it were kept",
                rec.size
            ))),
            End::Superseded => Err(TusError::Locked),
            End::Idle => Err(TusError::BadRequest(format!(
                "no bytes for {:?}; what arrived was kept",
                cfg.idle_timeout
            ))),
            End::Broken => Err(TusError::BadRequest(
                "the body broke off; what arrived was kept".into(),
            )),
        }
    }

    async fn delete(&self, id: &str, who: &Actor) -> Result<Response<Body>, TusError> {
        let actor = who.name.as_str();
        let _held = self.lock(id).await?;
        let (rec, ver) = self.load(id, who).await?;
        if rec.state == UploadState::Complete {
            return Err(TusError::Complete(format!(
                "the upload is complete and its job {} owns the staged source; cancel the job instead",
                rec.job.as_deref().unwrap_or("(being submitted)")
            )));
        }
        self.sh
            .staging
            .remove(id, &rec.stage)
            .await
            .map_err(staging_err)?;
        let key = record_key(id);
        let ops = vec![
            Op::delete(key.clone()),
            streamgate_control::api::audit_op(actor, "upload.delete", &rec.audit_target(), ver),
        ];
        self.sh
            .store
            .txn(&[Guard { key, expected: ver }], ops)
            .await
            .map_err(store_err)?;
        tracing::info!(upload = %id, actor, "upload deleted");
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        Ok(r)
    }
}

/// Waits for a checkpoint's record write and takes its version. A failed one is only
/// logged: the record keeps its earlier offset, and the next write finds out.
async fn settle(p: tokio::task::JoinHandle<Result<i64, TusError>>, ver: &mut i64) {
    match p.await {
        Ok(Ok(v)) => *ver = v,
        Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint not recorded"),
        Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
    }
}

fn content_length(h: &HeaderMap) -> Result<Option<u64>, TusError> {
    header(h, "content-length")
        .map(|v| {
            headers::parse_u64(v).map_err(|e| TusError::BadRequest(format!("Content-Length: {e}")))
        })
        .transpose()
}

fn checksum_header(h: &HeaderMap) -> Result<Option<Checksum>, TusError> {
    header(h, "upload-checksum")
        .map(|v| {
            headers::parse_checksum(v)
                .map_err(|e| TusError::BadRequest(format!("Upload-Checksum: {e}")))
        })
        .transpose()
}
