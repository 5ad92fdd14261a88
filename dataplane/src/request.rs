//! Request parsing: routing, path validation, ranges and validators. Pure functions.

// Public for the fuzz targets and benchmarks (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::borrow::Cow;

use streamgate_origin::{KeyError, MAX_KEY_LEN, validate_key};

/// Longest raw request path accepted (before decoding).
pub const MAX_PATH_LEN: usize = 2048;

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v/{asset}/{path}`: an origin object. `key` is `{asset}/{path}`, decoded and validated.
    Object {
        /// The asset id (first segment).
        asset: Cow<'a, str>,
        /// The object key, `{asset}/{path}`.
        key: Cow<'a, str>,
    },
    /// `/` or `/player`: the built-in demo player page.
    Player,
    /// `/player/hls.min.js` or `/player/dash.all.min.js`: the page's libraries.
    PlayerLib(crate::player::Lib),
    /// `/auth/challenge` or `/auth/verify`: wallet sign-in (when the edge has it on).
    SignIn(SignIn),
    /// Anything else.
    NotFound,
}

/// The two sign-in endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// `POST /auth/challenge`.
    Challenge,
    /// `POST /auth/verify`.
    Verify,
}

/// Why a request path was refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The raw path is longer than [`MAX_PATH_LEN`] or the key longer than [`MAX_KEY_LEN`].
    #[error("path too long")]
    TooLong,
    /// A `%` escape is malformed or decodes to invalid UTF-8.
    #[error("malformed percent-encoding")]
    BadEncoding,
    /// The decoded path is not a safe object key.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// `/v/{asset}` with no object path.
    #[error("missing object path")]
    MissingObject,
}

impl PathError {
    /// Machine-readable reason for the JSON error body.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLong => "path_too_long",
            Self::BadEncoding => "bad_encoding",
            Self::Key(KeyError::Traversal) => "path_traversal",
            Self::Key(KeyError::ForbiddenChar) => "forbidden_character",
            Self::Key(_) => "bad_path",
            Self::MissingObject => "missing_object_path",
        }
    }
}

/// Routes a raw (still percent-encoded) request path. Allocates only when the path has escapes.
pub fn route(raw_path: &str) -> Result<Route<'_>, PathError> {
    if raw_path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let Some(rest) = raw_path.strip_prefix("/v/") else {
        return Ok(match raw_path {
            "/" | "/player" | "/player/" => Route::Player,
            "/player/hls.min.js" => Route::PlayerLib(crate::player::Lib::Hls),
            "/player/dash.all.min.js" => Route::PlayerLib(crate::player::Lib::Dash),
            "/auth/challenge" => Route::SignIn(SignIn::Challenge),
            "/auth/verify" => Route::SignIn(SignIn::Verify),
            _ => Route::NotFound,
        });
    };
    let key: Cow<'_, str> = if rest.contains('%') {
        Cow::Owned(percent_decode(rest)?)
    } else {
        Cow::Borrowed(rest)
    };
    if key.len() > MAX_KEY_LEN {
        return Err(PathError::TooLong);
    }
    validate_key(&key)?;
    let slash = key.find('/').ok_or(PathError::MissingObject)?;
    let asset = match &key {
        Cow::Borrowed(k) => Cow::Borrowed(&k[..slash]),
        Cow::Owned(k) => Cow::Owned(k[..slash].to_owned()),
    };
    Ok(Route::Object { asset, key })
}

fn percent_decode(s: &str) -> Result<String, PathError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(PathError::BadEncoding),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::BadEncoding)
}

/// The outcome of a `Range` header against an object of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable range: serve the whole object (200). Also used for multi-range requests.
    Full,
    /// Serve bytes `start..=end` (206).
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// The range starts past the end (416).
    Unsatisfiable,
}

/// Interprets a `Range` header (RFC 9110 §14.2). Syntax errors and multiple ranges fall back
/// to the full object, as the RFC allows; a well-formed range past the end is unsatisfiable.
pub fn parse_range(header: &[u8], len: u64) -> RangeOutcome {
    let Some(spec) = header.strip_prefix(b"bytes=") else {
        return RangeOutcome::Full;
    };
    let spec = trim(spec);
    if spec.contains(&b',') {
        return RangeOutcome::Full;
    }
    parse_spec(spec, len)
}

/// At most this many ranges are served in one multipart answer; more get the whole object.
pub const MAX_RANGES: usize = 16;

/// What a multi-range `Range` header asks of an object of known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiRange {
    /// Serve the whole object (a syntax error anywhere, or more than [`MAX_RANGES`]).
    Full,
    /// The satisfiable ranges, each `start..=end`, in the order asked; overlapping or
    /// adjacent ones are merged (in ascending order) so no byte is sent twice.
    Ranges(Vec<(u64, u64)>),
    /// None of the ranges is satisfiable (416).
    Unsatisfiable,
}

/// Interprets a `Range` header that may list several ranges (RFC 9110 §14.2):
/// unsatisfiable ranges are dropped, and a header whose ranges all are is unsatisfiable.
pub fn parse_ranges(header: &[u8], len: u64) -> MultiRange {
    let Some(list) = header.strip_prefix(b"bytes=") else {
        return MultiRange::Full;
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut specs = 0;
    for spec in list.split(|&c| c == b',').map(trim) {
        if spec.is_empty() {
            continue; // empty list elements are allowed
        }
        specs += 1;
        if specs > MAX_RANGES {
            return MultiRange::Full;
        }
        match parse_spec(spec, len) {
            RangeOutcome::Partial { start, end } => out.push((start, end)),
            RangeOutcome::Unsatisfiable => {}
            RangeOutcome::Full => return MultiRange::Full,
        }
    }
    if specs == 0 {
        return MultiRange::Full;
    }
    if out.is_empty() {
        return MultiRange::Unsatisfiable;
    }
    let overlaps = out.iter().enumerate().any(|(i, a)| {
        out[i + 1..]
            .iter()
            .any(|b| a.0 <= b.1.saturating_add(1) && b.0 <= a.1.saturating_add(1))
    });
    if overlaps {
        out.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
        for (a, b) in out {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        out = merged;
    }
    MultiRange::Ranges(out)
}

/// One range spec (`A-B`, `A-`, `-N`) against `len`; `Full` when it is not well-formed.
fn parse_spec(spec: &[u8], len: u64) -> RangeOutcome {
    let Some(dash) = spec.iter().position(|&c| c == b'-') else {
        return RangeOutcome::Full;
    };
    let (first, last) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    match (parse_u64(first), parse_u64(last)) {
        // bytes=-N: the last N bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || len == 0 {
                RangeOutcome::Unsatisfiable
            } else {
                RangeOutcome::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        // bytes=A-
        (Some(a), None) if last.is_empty() => {
            if a >= len {
                RangeOutcome::Unsatisfiable
            } else {
                RangeOutcome::Partial {
                    start: a,
                    end: len - 1,
                }
            }
        }
        (Some(a), Some(b)) if a <= b => {
            if a >= len {
                RangeOutcome::Unsatisfiable
            } else {
                RangeOutcome::Partial {
                    start: a,
                    end: b.min(len - 1),
                }
            }
        }
        _ => RangeOutcome::Full,
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, RFC 9110 §13.1.2).
pub fn if_none_match(header: &[u8], etag: &[u8]) -> bool {
    let strip_weak = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    let etag = etag.strip_prefix(b"W/").unwrap_or(etag);
    header
        .split(|&c| c == b',')
        .map(trim)
        .any(|t| t == b"*" || strip_weak(t) == etag)
}

/// What an object is, for TTLs and content types. Decided by the key's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// HLS playlists and DASH MPDs.
    Manifest,
    /// Media and init segments.
    Segment,
    /// Anything else.
    Other,
}

/// The content type and kind of an object, from its key.
pub fn classify(key: &str) -> (ObjectKind, &'static str) {
    let name = key.rsplit('/').next().unwrap_or(key);
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    let audio = key.contains("/audio/");
    // Lower-cased on the stack: this runs for every request (no known extension is longer).
    let mut buf = [0u8; 8];
    let lower = match buf.get_mut(..ext.len()) {
        Some(b) => {
            b.copy_from_slice(ext.as_bytes());
            b.make_ascii_lowercase();
            std::str::from_utf8(b).unwrap_or("")
        }
        None => "",
    };
    match lower {
        "m3u8" => (ObjectKind::Manifest, "application/vnd.apple.mpegurl"),
        "mpd" => (ObjectKind::Manifest, "application/dash+xml"),
        "m4s" => (ObjectKind::Segment, "video/iso.segment"),
        "mp4" | "cmfv" if audio => (ObjectKind::Segment, "audio/mp4"),
        "mp4" | "m4v" | "cmfv" => (ObjectKind::Segment, "video/mp4"),
        "m4a" | "cmfa" => (ObjectKind::Segment, "audio/mp4"),
        "ts" => (ObjectKind::Segment, "video/mp2t"),
        "aac" => (ObjectKind::Segment, "audio/aac"),
        "vtt" | "webvtt" => (ObjectKind::Segment, "text/vtt"),
        "json" => (ObjectKind::Other, "application/json"),
        "jpg" | "jpeg" => (ObjectKind::Other, "image/jpeg"),
        "png" => (ObjectKind::Other, "image/png"),
        _ => (ObjectKind::Other, "application/octet-stream"),
    }
}

#[cfg(test)]
mod tests;
