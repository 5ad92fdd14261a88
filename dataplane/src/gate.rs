//! The access gate: every object request passes here before the cache is consulted.
//!
//! This is the seam that policies fill in (tokens, wallet sign-in, NFT ownership). For now
//! it allows everything, and the pipeline already routes every request through it, on the
//! hit path as on the miss path, so gating a cached object cannot be skipped.

use http::HeaderMap;

/// What the gate knows about a request.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The asset id, the first path segment after `/v/`.
    pub asset: &'a str,
    /// The object key, `{asset}/{path}`.
    pub key: &'a str,
    /// The raw query string, where a `?token=` may sit.
    pub query: Option<&'a str>,
    /// The request headers (`Authorization`, `Cookie`, `Origin`, ...).
    pub headers: &'a HeaderMap,
    /// The client address, when the transport knows it.
    pub client: Option<std::net::IpAddr>,
}

/// The gate's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve the object.
    Allow,
    /// Refuse with `status` (401, 403 or 503) and a machine-readable `reason`.
    Deny {
        /// HTTP status.
        status: u16,
        /// Reason for the JSON body.
        reason: &'static str,
    },
}

/// The gate. Today every request is public.
#[derive(Debug, Default)]
pub struct Gate {}

impl Gate {
    /// Decides whether the request may be served.
    pub async fn check(&self, _facts: &RequestFacts<'_>) -> Decision {
        Decision::Allow
    }
}
