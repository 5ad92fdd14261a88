//! Every way the edge refuses or fails a request, classified once: the client's mistake,
//! the gate's refusal (with the policy's reason), the origin's failure, a chain RPC's
//! failure, or the edge's own. [`EdgeError::status`], [`EdgeError::body`] and
//! [`EdgeError::class`] are the one place where a failure becomes an HTTP status, a JSON
//! body (`{"error", "reason"}`, and a `message` where a person needs more) and a metric
//! label. The table in docs/ARCHITECTURE.md lists them all.

// Public for the fuzz targets and benchmarks (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use bytes::Bytes;
use http::StatusCode;

use crate::request::PathError;

/// A request that did not get what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EdgeError {
    /// The request itself is wrong (4xx).
    Client(ClientError),
    /// The gate refused it.
    Gate(Refusal),
    /// The origin could not provide the object.
    Origin(OriginFailure),
    /// A chain RPC that the answer needs failed.
    Chain,
    /// Something of the edge's own failed (its state store, for sign-in nonces).
    Internal(Internal),
    /// A rate limit is reached (429); the client may try again after `retry_after` seconds.
    RateLimited {
        /// Whole seconds for `Retry-After`, at least 1.
        retry_after: u64,
        /// Which limit: the key space (`ip`, `subject`, `wallet`).
        space: &'static str,
    },
}

/// What was wrong with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientError {
    /// A path that is not a safe object key (400).
    BadPath(PathError),
    /// No route matches (404).
    NoRoute,
    /// A method the route does not take (405); `allow` lists the ones it does.
    Method {
        /// The `Allow` header.
        allow: &'static str,
    },
    /// A request body over the limit (413).
    TooLarge,
    /// A range that starts past the end (416); `len` is the object's length.
    Range {
        /// The object's length, for `Content-Range: bytes */len`.
        len: u64,
    },
    /// HTTP that does not parse (400).
    Malformed,
    /// A sign-in request that is malformed (400), with the reason and a sentence.
    SignIn(&'static str, String),
}

/// The gate's refusal. The reasons are the policy language's ([`streamgate_policy::Reason`])
/// or the gate's own (`unknown_asset`, `asset_has_no_policy`, `no_policy_snapshot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A credential is needed and none came (401).
    NoCredential,
    /// The credential, or the request's facts, do not satisfy the policy (403).
    Denied(&'static str),
    /// The asset is unknown (404; without a valid credential the gate answers
    /// [`Refusal::NoCredential`] or [`Refusal::Denied`] instead, unless configured not to).
    UnknownAsset,
    /// Something the decision needs is unreachable and the policy fails closed (503).
    Unavailable(&'static str),
    /// A sign-in that is well-formed but refused (401): a bad signature, an expired or
    /// replayed nonce, another domain.
    SignIn(&'static str, String),
}

/// The origin's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginFailure {
    /// No such object (404).
    NotFound,
    /// No answer in time (504).
    Timeout,
    /// Unreachable or failing (502).
    Unavailable,
    /// A manifest that cannot be rewritten for a query token (502).
    BadManifest,
}

/// The edge's own failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Internal {
    /// The state store could not record a sign-in nonce (503).
    StateUnavailable,
}

impl EdgeError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Client(c) => match c {
                ClientError::BadPath(_) | ClientError::Malformed | ClientError::SignIn(..) => {
                    StatusCode::BAD_REQUEST
                }
                ClientError::NoRoute => StatusCode::NOT_FOUND,
                ClientError::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
                ClientError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ClientError::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            },
            Self::Gate(r) => match r {
                Refusal::NoCredential | Refusal::SignIn(..) => StatusCode::UNAUTHORIZED,
                Refusal::Denied(_) => StatusCode::FORBIDDEN,
                Refusal::UnknownAsset => StatusCode::NOT_FOUND,
                Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            Self::Origin(o) => match o {
                OriginFailure::NotFound => StatusCode::NOT_FOUND,
                OriginFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
                OriginFailure::Unavailable | OriginFailure::BadManifest => StatusCode::BAD_GATEWAY,
            },
            Self::Chain | Self::Internal(Internal::StateUnavailable) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `error` field: what kind of failure, for programs.
    pub(crate) fn error(&self) -> &'static str {
        match self {
            Self::Client(c) => match c {
                ClientError::BadPath(_) | ClientError::Malformed => "bad_request",
                ClientError::NoRoute => "not_found",
                ClientError::Method { .. } => "method_not_allowed",
                ClientError::TooLarge => "payload_too_large",
                ClientError::Range { .. } => "range_not_satisfiable",
                ClientError::SignIn(..) => "sign_in_refused",
            },
            Self::Gate(r) => match r {
                Refusal::NoCredential | Refusal::Denied(_) => "access_denied",
                Refusal::UnknownAsset => "not_found",
                Refusal::Unavailable(_) => "unavailable",
                Refusal::SignIn(..) => "sign_in_refused",
            },
            Self::Origin(o) => match o {
                OriginFailure::NotFound => "not_found",
                OriginFailure::Timeout => "origin_timeout",
                OriginFailure::Unavailable => "origin_unavailable",
                OriginFailure::BadManifest => "bad_manifest",
            },
            Self::Chain => "sign_in_refused",
            Self::Internal(_) => "sign_in_refused",
            Self::RateLimited { .. } => "too_many_requests",
        }
    }

    /// The `reason` field: why, machine-readable; also the metric label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Client(c) => match c {
                ClientError::BadPath(p) => p.reason(),
                ClientError::NoRoute => "no_route",
                ClientError::Method { .. } => "method_not_allowed",
                ClientError::TooLarge => "payload_too_large",
                ClientError::Range { .. } => "range_not_satisfiable",
                ClientError::Malformed => "malformed_http",
                ClientError::SignIn(reason, _) => reason,
            },
            Self::Gate(r) => match r {
                Refusal::NoCredential => streamgate_policy::Reason::NoCredential.as_str(),
                Refusal::Denied(reason) | Refusal::Unavailable(reason) => reason,
                Refusal::UnknownAsset => "unknown_asset",
                Refusal::SignIn(reason, _) => reason,
            },
            Self::Origin(o) => match o {
                OriginFailure::NotFound => "object_not_found",
                OriginFailure::Timeout => "origin_timeout",
                OriginFailure::Unavailable => "origin_unavailable",
                OriginFailure::BadManifest => "manifest_not_rewritable",
            },
            Self::Chain => "chain_unavailable",
            Self::Internal(Internal::StateUnavailable) => "state_unavailable",
            Self::RateLimited { .. } => "rate_limited",
        }
    }

    /// A sentence for people, where the reason alone does not say enough.
    fn message(&self) -> Option<&str> {
        match self {
            Self::RateLimited { space, .. } => Some(match *space {
                "subject" => {
                    "too many requests for this token; slow down and retry after Retry-After seconds"
                }
                "wallet" => {
                    "too many requests for this wallet; slow down and retry after Retry-After seconds"
                }
                _ => {
                    "too many requests from this network; slow down and retry after Retry-After seconds"
                }
            }),
            Self::Client(ClientError::SignIn(_, m)) | Self::Gate(Refusal::SignIn(_, m)) => Some(m),
            Self::Client(ClientError::TooLarge) => Some("sign-in requests are at most 16 KiB"),
            Self::Chain => Some("cannot reach the chain to check a contract wallet's signature"),
            Self::Internal(Internal::StateUnavailable) => {
                Some("sign-in is unavailable for a moment; try again")
            }
            _ => None,
        }
    }

    /// The metric label of the failure's class.
    pub(crate) fn class(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::Gate(_) => "gate",
            Self::Origin(_) => "origin",
            Self::Chain => "chain",
            Self::Internal(_) => "internal",
            Self::RateLimited { .. } => "limit",
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Bytes {
        let mut v = serde_json::json!({ "error": self.error(), "reason": self.reason() });
        if let Some(m) = self.message() {
            v["message"] = m.into();
        }
        Bytes::from(v.to_string())
    }
}

/// Every reason the gate's refusals carry, for pre-registering metric labels.
pub(crate) const GATE_REASONS: [&str; 4] = [
    "unknown_asset",
    "asset_has_no_policy",
    "no_policy_snapshot",
    "stream_limit",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Each class maps to its statuses, and every body is the contract's JSON.
    #[test]
    fn statuses_bodies_and_classes() {
        let cases = [
            (
                EdgeError::Client(ClientError::BadPath(PathError::TooLong)),
                400,
                "client",
            ),
            (EdgeError::Client(ClientError::Malformed), 400, "client"),
            (
                EdgeError::Client(ClientError::Method { allow: "GET" }),
                405,
                "client",
            ),
            (
                EdgeError::Client(ClientError::Range { len: 5 }),
                416,
                "client",
            ),
            (EdgeError::Gate(Refusal::NoCredential), 401, "gate"),
            (
                EdgeError::Gate(Refusal::Denied("scope_mismatch")),
                403,
                "gate",
            ),
            (EdgeError::Gate(Refusal::UnknownAsset), 404, "gate"),
            (
                EdgeError::Gate(Refusal::Unavailable("dependency_unavailable")),
                503,
                "gate",
            ),
            (EdgeError::Origin(OriginFailure::Timeout), 504, "origin"),
            (EdgeError::Origin(OriginFailure::Unavailable), 502, "origin"),
            (EdgeError::Chain, 503, "chain"),
            (
                EdgeError::RateLimited {
                    retry_after: 2,
                    space: "ip",
                },
                429,
                "limit",
            ),
            (
                EdgeError::Internal(Internal::StateUnavailable),
                503,
                "internal",
            ),
        ];
        for (e, status, class) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.class(), class);
            let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(body["error"], e.error());
            assert_eq!(body["reason"], e.reason());
        }
        let signed = EdgeError::Gate(Refusal::SignIn("bad_signature", "not yours".into()));
        let body: serde_json::Value = serde_json::from_slice(&signed.body()).unwrap();
        assert_eq!(body["message"], "not yours");
        assert_eq!(signed.status(), 401);
    }
}
