//! The upload record stored at `/streamgate/v1/uploads/<id>`, what `Upload-Metadata` must
//! hold, and the checks a request passes before it touches the bytes. Pure: the caller
//! passes `now` and the facts.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use streamgate_origin::StageState;

use super::digest::Sha256State;
use super::error::TusError;
use super::headers::parse_metadata;

/// The store key of upload `id`.
pub fn record_key(id: &str) -> String {
    format!("{}uploads/{id}", streamgate_control::store::PREFIX)
}

/// Whether `s` is an upload id: 32 lower-case hex digits (128 random bits).
pub fn is_upload_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new random upload id.
pub fn new_upload_id() -> Result<String, TusError> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| TusError::Internal("no system randomness".into()))?;
    Ok(super::digest::hex(&b))
}

/// Where an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    /// Bytes are still coming.
    Uploading,
    /// Every byte is staged and hashed; `job` names its job once it is submitted.
    Complete,
}

/// What the uploader asked for in `Upload-Metadata`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadMeta {
    /// The asset id to publish as.
    pub asset: String,
    /// The policy to bind, if any.
    pub policy: Option<String>,
    /// The ladder preset.
    pub ladder: String,
    /// The uploader's file name.
    pub filename: Option<String>,
}

/// The longest `filename` kept.
pub const MAX_FILENAME: usize = 255;

/// Validates `Upload-Metadata` for StreamGate: `asset` is required and must be an asset
/// id, `policy` a policy id, `ladder` one of `ladders` (`default_ladder` when absent),
/// `filename` printable UTF-8. Other keys are allowed and kept in the raw header.
pub fn validate_metadata(
    raw: &[u8],
    ladders: &[String],
    default_ladder: &str,
) -> Result<UploadMeta, TusError> {
    let pairs = parse_metadata(raw).map_err(|e| TusError::BadMetadata(e.to_string()))?;
    let text = |key: &str| -> Result<Option<String>, TusError> {
        match pairs.iter().find(|(k, _)| k == key) {
            None => Ok(None),
            Some((_, v)) => String::from_utf8(v.clone())
                .map(Some)
                .map_err(|_| TusError::BadMetadata(format!("{key} is not UTF-8"))),
        }
    };
    let asset = text("asset")?.ok_or_else(|| {
        TusError::BadMetadata("asset is required: the asset id to publish the video as".into())
    })?;
    if !streamgate_control::api::is_asset_id(&asset) {
        return Err(TusError::BadMetadata(format!(
            "asset {asset:?} is not an asset id ({})",
            streamgate_control::api::ASSET_ID_RULE
        )));
    }
    let policy = match text("policy")? {
        None => None,
        Some(p) if p.is_empty() => None,
        Some(p) => {
            streamgate_policy::PolicyId::new(&p)
                .map_err(|why| TusError::BadMetadata(format!("policy {p:?}: {why}")))?;
            Some(p)
        }
    };
    let ladder = match text("ladder")? {
        None => default_ladder.to_owned(),
        Some(l) if l.is_empty() => default_ladder.to_owned(),
        Some(l) => {
            if !ladders.contains(&l) {
                return Err(TusError::BadMetadata(format!(
                    "ladder {l:?} is not a ladder preset (known: {})",
                    ladders.join(", ")
                )));
            }
            l
        }
    };
    let filename = match text("filename")? {
        None => None,
        Some(f) => {
            if f.len() > MAX_FILENAME || f.chars().any(char::is_control) {
                return Err(TusError::BadMetadata(
                    "filename must be at most 255 bytes without control characters".into(),
                ));
            }
            Some(f)
        }
    };
    Ok(UploadMeta {
        asset,
        policy,
        ladder,
        filename,
    })
}

/// The upload record, as stored (JSON). Fields of other versions are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The upload id.
    pub id: String,
    /// Uploading or complete.
    pub state: UploadState,
    /// Bytes staged durably.
    pub offset: u64,
    /// `Upload-Length`.
    pub size: u64,
    /// The asset to publish as.
    pub asset: String,
    /// The policy to bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The ladder preset.
    pub ladder: String,
    /// The uploader's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// `Upload-Metadata` as the client sent it, echoed by HEAD.
    pub upload_metadata: String,
    /// Who created it (the admin token's name).
    pub actor: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: an upload not completed by then is refused (410) and removed.
    pub expires_at: String,
    /// The origin key of the staged data.
    pub staged_key: String,
    /// How far the staging storage has got (S3 parts and tail).
    pub stage: StageState,
    /// The source's SHA-256 state at `offset`.
    pub sha256_state: Sha256State,
    /// The source's SHA-256, hex, once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The job, once submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// RFC 3339, once complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Fields of other versions.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl UploadRecord {
    /// A new upload of `size` bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        size: u64,
        meta: UploadMeta,
        upload_metadata: String,
        actor: String,
        staged_key: String,
        stage: StageState,
        now: SystemTime,
        expire_after: Duration,
    ) -> Self {
        Self {
            id,
            state: UploadState::Uploading,
            offset: 0,
            size,
            asset: meta.asset,
            policy: meta.policy,
            ladder: meta.ladder,
            filename: meta.filename,
            upload_metadata,
            actor,
            created_at: rfc3339(now),
            expires_at: rfc3339(now + expire_after),
            staged_key,
            stage,
            sha256_state: super::digest::Sha256::new().state(),
            sha256: None,
            job: None,
            completed_at: None,
            extra: Default::default(),
        }
    }

    /// When an unfinished upload expires (`None` if the stored time does not parse, which
    /// is treated as expired).
    pub fn expires(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.expires_at).ok()
    }

    /// Whether the upload is unfinished and past its expiry at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.state == UploadState::Uploading && self.expires().is_none_or(|e| now >= e)
    }

    /// Refuses requests to an expired upload (410).
    pub fn check_live(&self, now: SystemTime) -> Result<(), TusError> {
        if self.is_expired(now) {
            return Err(TusError::Gone(self.expires_at.clone()));
        }
        Ok(())
    }

    /// Checks a PATCH at `offset` with a body of `len` bytes (if known) before any byte is
    /// read: live, the offset matches (409), and the body fits the length (413).
    pub fn check_patch(
        &self,
        now: SystemTime,
        offset: u64,
        len: Option<u64>,
    ) -> Result<(), TusError> {
        self.check_live(now)?;
        if offset != self.offset {
            return Err(TusError::Offset {
                expected: self.offset,
                got: offset,
            });
        }
        if self.state == UploadState::Complete && len.unwrap_or(0) > 0 {
            return Err(TusError::TooLarge(format!(
                "the upload is complete at {} bytes",
                self.size
            )));
        }
        if let Some(len) = len
            && offset.saturating_add(len) > self.size
        {
            return Err(TusError::TooLarge(format!(
                "{len} bytes at offset {offset} go past Upload-Length {}",
                self.size
            )));
        }
        Ok(())
    }

    /// Records `offset` as durable, with the stage and hash state that go with it; an
    /// unfinished upload's expiry moves to `now + expire_after`.
    pub fn advance(
        &mut self,
        offset: u64,
        stage: StageState,
        sha: Sha256State,
        now: SystemTime,
        expire_after: Duration,
    ) {
        self.offset = offset;
        self.stage = stage;
        self.sha256_state = sha;
        self.expires_at = rfc3339(now + expire_after);
    }

    /// Marks the upload complete with its digest.
    pub fn complete(&mut self, sha256: [u8; 32], now: SystemTime) {
        self.state = UploadState::Complete;
        self.sha256 = Some(super::digest::hex(&sha256));
        self.completed_at = Some(rfc3339(now));
    }

    /// The audit target naming what was uploaded.
    pub fn audit_target(&self) -> String {
        let mut t = format!(
            "uploads/{} asset={} size={}",
            self.id, self.asset, self.size
        );
        if let Some(sha) = &self.sha256 {
            t.push_str(&format!(" sha256={sha}"));
        }
        if let Some(job) = &self.job {
            t.push_str(&format!(" job={job}"));
        }
        if let Some(f) = &self.filename {
            t.push_str(&format!(" filename={f:?}"));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladders() -> Vec<String> {
        vec!["default".into(), "mobile".into()]
    }

    fn meta(raw: &str) -> Result<UploadMeta, TusError> {
        validate_metadata(raw.as_bytes(), &ladders(), "default")
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn metadata_needs_a_valid_asset_and_known_names() {
        let m = meta(&format!(
            "asset {},filename {}",
            b64("talk-1"),
            b64("talk.mp4")
        ))
        .unwrap();
        assert_eq!(m.asset, "talk-1");
        assert_eq!(m.ladder, "default");
        assert_eq!(m.filename.as_deref(), Some("talk.mp4"));
        let m = meta(&format!(
            "asset {},policy {},ladder {}",
            b64("a"),
            b64("premium"),
            b64("mobile")
        ))
        .unwrap();
        assert_eq!(m.policy.as_deref(), Some("premium"));
        assert_eq!(m.ladder, "mobile");
        for (raw, says) in [
            (format!("filename {}", b64("x.mp4")), "asset is required"),
            (format!("asset {}", b64("Bad Asset")), "not an asset id"),
            (format!("asset {}", b64("STAGING")), "not an asset id"),
            (
                format!("asset {},policy {}", b64("a"), b64("-x")),
                "policy \"-x\"",
            ),
            (
                format!("asset {},ladder {}", b64("a"), b64("4k")),
                "not a ladder preset",
            ),
            (
                format!("asset {},filename {}", b64("a"), b64("a\nb")),
                "filename",
            ),
            ("asset !!".to_owned(), "not base64"),
        ] {
            let e = meta(&raw).unwrap_err();
            assert!(
                matches!(e, TusError::BadMetadata(_)) && e.to_string().contains(says),
                "{raw}: {e}"
            );
        }
    }

    fn record(now: SystemTime) -> UploadRecord {
        UploadRecord::new(
            "0".repeat(32),
            100,
            meta(&format!("asset {}", b64("a"))).unwrap(),
            String::new(),
            "alice".into(),
            "STAGING/uploads/x/data".into(),
            StageState::Fs,
            now,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn patch_checks() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut r = record(t0);
        assert_eq!(r.check_patch(t0, 0, Some(100)), Ok(()));
        assert_eq!(r.check_patch(t0, 0, None), Ok(()));
        assert_eq!(
            r.check_patch(t0, 5, Some(1)),
            Err(TusError::Offset {
                expected: 0,
                got: 5
            })
        );
        assert!(matches!(
            r.check_patch(t0, 0, Some(101)),
            Err(TusError::TooLarge(_))
        ));
        // Expired a minute later; a PATCH moves the expiry.
        let later = t0 + Duration::from_secs(60);
        assert!(matches!(
            r.check_patch(later, 0, Some(1)),
            Err(TusError::Gone(_))
        ));
        r.advance(
            40,
            StageState::Fs,
            super::super::digest::Sha256::new().state(),
            t0 + Duration::from_secs(30),
            Duration::from_secs(60),
        );
        assert_eq!(r.check_patch(later, 40, Some(60)), Ok(()));
        // A complete upload never expires, and takes no more bytes.
        r.offset = 100;
        r.complete([0; 32], later);
        assert!(!r.is_expired(later + Duration::from_secs(3600)));
        assert_eq!(r.check_patch(later, 100, Some(0)), Ok(()));
        assert!(matches!(
            r.check_patch(later, 100, Some(1)),
            Err(TusError::TooLarge(_))
        ));
    }

    #[test]
    fn ids() {
        let id = new_upload_id().unwrap();
        assert!(is_upload_id(&id), "{id}");
        assert_ne!(id, new_upload_id().unwrap());
        for bad in ["", "..", &"A".repeat(32), &"0".repeat(31), "../etc/passwd"] {
            assert!(!is_upload_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn records_round_trip_with_unknown_fields() {
        let r = record(SystemTime::UNIX_EPOCH);
        let mut v = serde_json::to_value(&r).unwrap();
        v["from_the_future"] = 1.into();
        let back: UploadRecord = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
    }
}
