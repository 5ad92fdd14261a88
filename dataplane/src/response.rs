//! Response shaping, shared by every route: cache-control per object kind and audience,
//! CORS and preflight, ranges and validators on cached objects, rewritten manifests, the
//! player page, and failures turned into the contract's JSON body ([`failure`]).
//! Everything here is computed from the request and the entry; nothing does I/O.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, request::Parts};

use crate::body::Body;
use crate::cache::Entry;
use crate::config::{CacheConfig, CorsConfig};
use crate::error::{ClientError, EdgeError, OriginFailure};
use crate::request::{self, ObjectKind, RangeOutcome};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub(crate) const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const PLAYER_HTML: &str = include_str!("player.html");
const GET_HEAD_OPTIONS: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");

/// Response headers computed once from configuration.
pub(crate) struct Shaper {
    manifest_cc: HeaderValue,
    segment_cc: HeaderValue,
    manifest_cc_private: HeaderValue,
    segment_cc_private: HeaderValue,
    cors_any: bool,
    cors_origins: Vec<HeaderValue>,
    cors_max_age: HeaderValue,
    alt_svc: Option<HeaderValue>,
}

impl Shaper {
    pub(crate) fn new(cache: &CacheConfig, cors: &CorsConfig) -> Self {
        let cc = |scope: &str, ttl: Duration| {
            HeaderValue::try_from(format!("{scope}, max-age={}", ttl.as_secs()))
                .expect("digits are a valid header")
        };
        Self {
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
        }
    }

    /// Announces HTTP/3 with `Alt-Svc` on every TLS response.
    pub(crate) fn set_alt_svc(&mut self, port: u16, max_age: Duration) {
        self.alt_svc =
            HeaderValue::try_from(format!("h3=\":{port}\"; ma={}", max_age.as_secs())).ok();
    }

    pub(crate) fn alt_svc(&self) -> Option<&HeaderValue> {
        self.alt_svc.as_ref()
    }

    /// `public, max-age` for assets anyone may fetch; `private, max-age` for gated ones, so
    /// that no shared cache downstream stores what the gate allowed for one viewer.
    pub(crate) fn cache_control(&self, kind: ObjectKind, shared: bool) -> HeaderValue {
        match (kind, shared) {
            (ObjectKind::Manifest, true) => self.manifest_cc.clone(),
            (ObjectKind::Manifest, false) => self.manifest_cc_private.clone(),
            (ObjectKind::Segment | ObjectKind::Other, true) => self.segment_cc.clone(),
            (ObjectKind::Segment | ObjectKind::Other, false) => self.segment_cc_private.clone(),
        }
    }

    /// A cached object, with its validators, the range asked for, and HEAD handled.
    pub(crate) fn entry(
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
        let len = e.body.len() as u64;
        let outcome = match multi_range(req, &e.etag).map(|l| request::parse_ranges(l, len)) {
            Some(request::MultiRange::Ranges(rs)) if rs.len() > 1 => {
                return multipart(h, e, ctype, &rs, head);
            }
            // One range left after merging: a plain 206.
            Some(request::MultiRange::Ranges(rs)) => RangeOutcome::Partial {
                start: rs[0].0,
                end: rs[0].1,
            },
            Some(request::MultiRange::Unsatisfiable) => RangeOutcome::Unsatisfiable,
            Some(request::MultiRange::Full) => RangeOutcome::Full,
            None => range_of(req, len, Some(&e.etag)),
        };
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        let (status, body) = match outcome {
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
            RangeOutcome::Unsatisfiable => {
                return failure(&EdgeError::Client(ClientError::Range { len }));
            }
        };
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let body = if head { Body::Empty } else { Body::Full(body) };
        with_headers(status, h, body)
    }

    /// The answer to a CORS preflight, allowing `allow` (the methods of the route).
    pub(crate) fn preflight(&self, req: &Parts, allow: HeaderValue) -> Response<Body> {
        let mut h = HeaderMap::with_capacity(6);
        h.insert(header::ALLOW, allow.clone());
        if self.allowed_origin(req).is_some() {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow);
            let allow_headers = req
                .headers
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
                .unwrap_or(HeaderValue::from_static("authorization, range"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
            h.insert(header::ACCESS_CONTROL_MAX_AGE, self.cors_max_age.clone());
        }
        with_headers(StatusCode::NO_CONTENT, h, Body::Empty)
    }

    /// The preflight of object routes.
    pub(crate) fn object_preflight(&self, req: &Parts) -> Response<Body> {
        self.preflight(req, GET_HEAD_OPTIONS)
    }

    fn allowed_origin(&self, req: &Parts) -> Option<HeaderValue> {
        let origin = req.headers.get(header::ORIGIN)?;
        if self.cors_any {
            return Some(HeaderValue::from_static("*"));
        }
        self.cors_origins.iter().find(|o| *o == origin).cloned()
    }

    /// Adds the CORS headers the request's `Origin` earns.
    pub(crate) fn cors(&self, req: &Parts, h: &mut HeaderMap) {
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

/// The range to serve; an `If-Range` that does not match the validator disables it.
/// The `Range` header when it lists several ranges and `If-Range` (if any) matches `etag`.
fn multi_range<'a>(req: &'a Parts, etag: &HeaderValue) -> Option<&'a [u8]> {
    let range = req.headers.get(header::RANGE)?.as_bytes();
    if !range.contains(&b',') {
        return None;
    }
    if let Some(ir) = req.headers.get(header::IF_RANGE)
        && ir != etag
    {
        return None;
    }
    Some(range)
}

/// A `multipart/byteranges` answer (RFC 9110 §14.6) with one part per range. The
/// boundary comes from the entry's ETag (128 bits of hash), so it is stable per object.
fn multipart(
    mut h: HeaderMap,
    e: &Entry,
    ctype: &'static str,
    ranges: &[(u64, u64)],
    head: bool,
) -> Response<Body> {
    let len = e.body.len();
    let boundary = format!("SG{}", e.etag.to_str().unwrap_or("").trim_matches('"'));
    let mut body = bytes::BytesMut::with_capacity(
        ranges
            .iter()
            .map(|(a, b)| (b - a + 1) as usize + 128)
            .sum::<usize>()
            + 64,
    );
    for &(a, b) in ranges {
        body.extend_from_slice(b"\r\n--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: ");
        body.extend_from_slice(ctype.as_bytes());
        body.extend_from_slice(
            format!("\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&e.body[a as usize..=b as usize]);
    }
    body.extend_from_slice(b"\r\n--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    let ct = format!("multipart/byteranges; boundary={boundary}");
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::try_from(ct).expect("hex boundary"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let body = if head {
        Body::Empty
    } else {
        Body::Full(body.freeze())
    };
    with_headers(StatusCode::PARTIAL_CONTENT, h, body)
}

pub(crate) fn range_of(req: &Parts, len: u64, etag: Option<&HeaderValue>) -> RangeOutcome {
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

pub(crate) fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// A JSON document with 200 (sign-in answers).
pub(crate) fn json(v: &serde_json::Value) -> Response<Body> {
    let body = Bytes::from(v.to_string());
    let mut h = HeaderMap::with_capacity(3);
    h.insert(header::CONTENT_TYPE, JSON);
    h.insert(header::CACHE_CONTROL, NO_STORE);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    with_headers(StatusCode::OK, h, Body::Full(body))
}

/// The response to a failure: its status, the JSON body, and the headers it calls for
/// (`Allow` on 405, `Content-Range` on 416).
pub(crate) fn failure(e: &EdgeError) -> Response<Body> {
    let body = e.body();
    let mut h = HeaderMap::with_capacity(4);
    h.insert(header::CONTENT_TYPE, JSON);
    h.insert(header::CACHE_CONTROL, NO_STORE);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    match e {
        EdgeError::Client(ClientError::Method { allow }) => {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        EdgeError::Client(ClientError::Range { len }) => {
            let v = HeaderValue::try_from(format!("bytes */{len}")).expect("digits");
            h.insert(header::CONTENT_RANGE, v);
        }
        EdgeError::RateLimited { retry_after, .. } => {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        _ => {}
    }
    with_headers(e.status(), h, Body::Full(body))
}

/// A manifest with the viewer's `token=` added to every URI that stays on the edge. It is
/// made per request from the cached original, so the cache never holds a credential, and
/// it is marked so that no downstream cache stores it.
/// With `session`, every such URI also carries the playback session (`sg_sid=`).
pub(crate) fn rewritten_manifest(
    e: &Entry,
    ctype: &'static str,
    param: &str,
    session: Option<&str>,
    head: bool,
) -> Result<Response<Body>, EdgeError> {
    let mpd = ctype == "application/dash+xml";
    // The common case: a token made of URL-safe characters, and a manifest parsed once
    // into a template; the rewrite is one copy. Anything else takes the full rewriter.
    // Session ids are URL-safe base64; the separator is what the rewriter would write
    // (`&amp;` in XML).
    let sep = if mpd { "&amp;" } else { "&" };
    let templated = param
        .strip_prefix("token=")
        .filter(|v| crate::rewrite::template_safe(v))
        .and_then(|v| {
            let t = e.template(mpd)?;
            Some(match session {
                None => t.render(v),
                Some(sid) => t.render_parts(&[v, sep, crate::session::PARAM, "=", sid]),
            })
        });
    let full;
    let param = match session {
        None => param,
        Some(sid) => {
            full = format!("{param}&{}={sid}", crate::session::PARAM);
            &full
        }
    };
    let body = if let Some(body) = templated {
        Ok(body)
    } else if mpd {
        crate::rewrite::rewrite_mpd(&e.body, param).map(Bytes::from)
    } else {
        std::str::from_utf8(&e.body)
            .map(|t| Bytes::from(crate::rewrite::rewrite_hls(t, param)))
            .map_err(|_| crate::rewrite::RewriteError::Xml("playlist is not UTF-8".into()))
    };
    let body = body.map_err(|err| {
        tracing::warn!(error = %err, "manifest could not be rewritten");
        EdgeError::Origin(OriginFailure::BadManifest)
    })?;
    let mut h = HeaderMap::with_capacity(5);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let body = if head { Body::Empty } else { Body::Full(body) };
    Ok(with_headers(StatusCode::OK, h, body))
}

/// What the player page may load: this edge only (hls.js runs its transmuxer in a
/// `blob:` worker, and both players feed `blob:` media sources).
const PLAYER_CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
     worker-src 'self' blob:; media-src 'self' blob:; connect-src 'self'; img-src 'self' data:; \
     frame-ancestors 'none'",
);

/// One of the player page's libraries (the same bytes until the edge restarts).
pub(crate) fn script(js: &Bytes, head: bool) -> Response<Body> {
    let mut h = HeaderMap::with_capacity(3);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(js.len()));
    let body = if head {
        Body::Empty
    } else {
        Body::Full(js.clone())
    };
    with_headers(StatusCode::OK, h, body)
}

/// The built-in player page.
pub(crate) fn player(head: bool) -> Response<Body> {
    let mut h = HeaderMap::with_capacity(4);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, PLAYER_CSP);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(PLAYER_HTML.len()));
    let body = if head {
        Body::Empty
    } else {
        Body::Full(Bytes::from_static(PLAYER_HTML.as_bytes()))
    };
    with_headers(StatusCode::OK, h, body)
}
