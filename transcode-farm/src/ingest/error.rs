//! Every way an ingest request is refused, mapped in one place to its tus status code and
//! the contract's JSON body `{"error": "...", "reason": "..."}`.

use http::StatusCode;

/// Why an ingest request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TusError {
    /// `Tus-Resumable` is missing or names another version (412).
    #[error("Tus-Resumable: 1.0.0 is required")]
    Version,
    /// No admin token (401).
    #[error("admin token required: Authorization: Bearer <token>")]
    Unauthenticated,
    /// A token that is not an admin token, or one whose role or asset prefixes do not
    /// allow the request (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such upload (404).
    #[error("no such upload")]
    NotFound,
    /// The upload expired and was or will be removed (410).
    #[error("the upload expired at {0}")]
    Gone(String),
    /// A method the resource does not have (405).
    #[error("method not allowed")]
    Method,
    /// A malformed or missing header (400).
    #[error("{0}")]
    BadRequest(String),
    /// `Upload-Metadata` that cannot be used (400).
    #[error("Upload-Metadata: {0}")]
    BadMetadata(String),
    /// The body is not `application/offset+octet-stream` (415).
    #[error("Content-Type must be application/offset+octet-stream")]
    MediaType,
    /// `Upload-Offset` is not the upload's offset (409).
    #[error("Upload-Offset is {got}, the upload is at {expected}")]
    Offset {
        /// The offset the server has.
        expected: u64,
        /// The offset the client sent.
        got: u64,
    },
    /// The request would make the upload larger than its length or the server's maximum (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body does not match `Upload-Checksum`; nothing of it was kept (460).
    #[error("the {0} checksum of the body does not match Upload-Checksum; the offset did not move")]
    Checksum(&'static str),
    /// Another request holds the upload and did not let go in time (423).
    #[error("another request is writing this upload")]
    Locked,
    /// The upload is complete, so it can no longer change (409).
    #[error("{0}")]
    Complete(String),
    /// The state store or the staging storage cannot be reached (503).
    #[error("{0}")]
    Unavailable(String),
    /// A fault of this server (500).
    #[error("{0}")]
    Internal(String),
}

impl TusError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Version => StatusCode::PRECONDITION_FAILED,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Gone(_) => StatusCode::GONE,
            Self::Method => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest(_) | Self::BadMetadata(_) => StatusCode::BAD_REQUEST,
            Self::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Offset { .. } | Self::Complete(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Checksum(_) => StatusCode::from_u16(460).expect("460 is a valid status"),
            Self::Locked => StatusCode::LOCKED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` field of the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Version => "unsupported_version",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden(_) => "access_denied",
            Self::NotFound => "not_found",
            Self::Gone(_) => "upload_expired",
            Self::Method => "method_not_allowed",
            Self::BadRequest(_) => "bad_request",
            Self::BadMetadata(_) => "bad_metadata",
            Self::MediaType => "unsupported_media_type",
            Self::Offset { .. } => "offset_mismatch",
            Self::TooLarge(_) => "too_large",
            Self::Checksum(_) => "checksum_mismatch",
            Self::Locked => "locked",
            Self::Complete(_) => "upload_complete",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({"error": self.code(), "reason": self.to_string()}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_tus() {
        for (e, s) in [
            (TusError::Version, 412),
            (
                TusError::Offset {
                    expected: 1,
                    got: 2,
                },
                409,
            ),
            (TusError::Gone("x".into()), 410),
            (TusError::TooLarge("x".into()), 413),
            (TusError::MediaType, 415),
            (TusError::Checksum("sha1"), 460),
            (TusError::Locked, 423),
        ] {
            assert_eq!(e.status().as_u16(), s, "{e:?}");
            let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
            assert_eq!(v["error"], e.code());
            assert!(!v["reason"].as_str().unwrap().is_empty());
        }
    }
}
