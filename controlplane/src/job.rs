//! Transcode jobs as stored under `/streamgate/v1/jobs/<id>`: the document, its states,
//! and idempotent submission. The control plane's job API, the tus ingest and the farm's
//! workers all read and write jobs through this module, so the layout is written once.
//!
//! A job's id is derived from the source's SHA-256 and the ladder, so submitting the same
//! source with the same ladder again finds the job that exists, forever (not for a
//! minute, as a client token would).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Guard, Op, PREFIX, Store, StoreError};

/// A job id: `j` and 32 hex digits (the first 16 bytes of SHA-256 over the source's
/// digest and the ladder name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

/// A string that is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a job id (j and 32 lowercase hex digits)")]
pub struct BadJobId(pub String);

impl JobId {
    /// The id of the job that transcodes a source with digest `source_sha256` with `ladder`.
    pub fn derive(source_sha256: &[u8; 32], ladder: &str) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"streamgate job v1\0");
        ctx.update(source_sha256);
        ctx.update(ladder.as_bytes());
        let d = ctx.finish();
        let mut id = String::with_capacity(33);
        id.push('j');
        for b in &d.as_ref()[..16] {
            id.push_str(&format!("{b:02x}"));
        }
        Self(id)
    }

    /// Validates `s` as a job id.
    pub fn parse(s: &str) -> Result<Self, BadJobId> {
        let ok = s.len() == 33
            && s.starts_with('j')
            && s[1..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadJobId(s.to_owned()))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = BadJobId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life. The last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker reads the source's streams.
    Probing,
    /// Segment tasks are being encoded.
    Transcoding,
    /// The encoded segments are stitched and the manifests written.
    Packaging,
    /// Objects are written to origin storage and the asset record switched.
    Publishing,
    /// Published.
    Done,
    /// Gave up, with a reason a person can act on.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [Self; 8] = [
        Self::Queued,
        Self::Probing,
        Self::Transcoding,
        Self::Packaging,
        Self::Publishing,
        Self::Done,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The name in documents, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Probing => "probing",
            Self::Transcoding => "transcoding",
            Self::Packaging => "packaging",
            Self::Publishing => "publishing",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more happens to the job.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// What a job transcodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSource {
    /// A completed tus upload, staged in origin storage under `key`.
    Upload {
        /// The upload id.
        upload: String,
        /// The staged object's key in origin storage.
        key: String,
        /// Its size in bytes.
        size: u64,
    },
    /// An object already in origin storage.
    Origin {
        /// Its key.
        key: String,
    },
    /// An object in an S3 bucket (`s3://bucket/key`).
    S3 {
        /// The URL.
        url: String,
    },
    /// A file served over HTTPS.
    Https {
        /// The URL.
        url: String,
    },
}

/// A job document, as stored at `jobs/<id>`. Fields this version does not know are kept
/// in `extra`, so an older process that rewrites a job loses nothing a newer one wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDoc {
    /// The id ([`JobId::derive`] of the source digest and the ladder).
    pub id: JobId,
    /// The asset id to publish as.
    pub asset: String,
    /// The policy to bind the asset to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The ladder preset name.
    pub ladder: String,
    /// The source.
    pub source: JobSource,
    /// The source's SHA-256, hex.
    pub source_sha256: String,
    /// The name the uploader gave the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// The state.
    pub state: JobState,
    /// Done fraction, 0 to 1.
    #[serde(default)]
    pub progress: f64,
    /// Why it failed (for people: the cause and, for ffmpeg, the tail of its stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who submitted it (the admin token's name).
    pub actor: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Fields of other versions.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The key of job `id`.
pub fn job_key(id: &JobId) -> String {
    format!("{PREFIX}jobs/{id}")
}

/// What [`submit`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The job as stored now.
    pub doc: JobDoc,
    /// Its version.
    pub version: i64,
    /// False when the job existed already (the same source and ladder).
    pub created: bool,
}

/// Why a job could not be submitted or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored job document does not parse.
    #[error("job {key}: stored document is not a job: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads job `id`.
pub async fn get(store: &dyn Store, id: &JobId) -> Result<Option<(JobDoc, i64)>, JobError> {
    let key = job_key(id);
    match store.get(&key).await? {
        None => Ok(None),
        Some(v) => {
            let doc = serde_json::from_slice(&v.value).map_err(|e| JobError::Corrupt {
                key,
                message: e.to_string(),
            })?;
            Ok(Some((doc, v.version)))
        }
    }
}

/// Creates `doc` unless a job with its id exists, with an audit entry (`job.submit`) in
/// the same transaction; a job that exists is returned as it is.
pub async fn submit(store: &dyn Store, doc: JobDoc) -> Result<Submitted, JobError> {
    let key = job_key(&doc.id);
    loop {
        if let Some((existing, version)) = get(store, &doc.id).await? {
            return Ok(Submitted {
                doc: existing,
                version,
                created: false,
            });
        }
        let value = serde_json::to_vec(&doc).expect("a job serialises");
        let ops = vec![
            Op::put(key.clone(), value),
            crate::api::audit_op(&doc.actor, "job.submit", &format!("jobs/{}", doc.id), 0),
        ];
        let guard = Guard {
            key: key.clone(),
            expected: 0,
        };
        match store.txn(&[guard], ops).await {
            Ok(version) => {
                return Ok(Submitted {
                    doc,
                    version,
                    created: true,
                });
            }
            // Another submitter won the race: return theirs.
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn doc(sha: [u8; 32], ladder: &str) -> JobDoc {
        JobDoc {
            id: JobId::derive(&sha, ladder),
            asset: "a".into(),
            policy: None,
            ladder: ladder.into(),
            source: JobSource::Origin {
                key: "in/a.mp4".into(),
            },
            source_sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
            filename: None,
            priority: 0,
            state: JobState::Queued,
            progress: 0.0,
            error: None,
            actor: "alice".into(),
            created_at: "2026-12-03T00:00:00Z".into(),
            updated_at: "2026-12-03T00:00:00Z".into(),
            extra: Default::default(),
        }
    }

    #[test]
    fn ids_depend_on_source_and_ladder_only() {
        let a = JobId::derive(&[1; 32], "default");
        assert_eq!(a, JobId::derive(&[1; 32], "default"));
        assert_ne!(a, JobId::derive(&[2; 32], "default"));
        assert_ne!(a, JobId::derive(&[1; 32], "mobile"));
        assert_eq!(JobId::parse(a.as_str()).unwrap(), a);
        for bad in [
            "",
            "j",
            "x0123456789abcdef0123456789abcdef",
            &a.as_str().to_uppercase(),
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let mut v = serde_json::to_value(doc([3; 32], "default")).unwrap();
        v["segments_done"] = 7.into();
        let d: JobDoc = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&d).unwrap(), v);
    }

    #[tokio::test]
    async fn submitting_again_returns_the_existing_job() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("s.log")).unwrap());
        let (a, b) = tokio::join!(
            submit(&*store, doc([9; 32], "default")),
            submit(&*store, doc([9; 32], "default"))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            a.created as u8 + b.created as u8,
            1,
            "exactly one creates it"
        );
        assert_eq!(a.version, b.version);
        let mut later = doc([9; 32], "default");
        later.asset = "other".into();
        let again = submit(&*store, later).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.doc.asset, "a", "the stored job is returned as it is");
        let (audit, _) = store.list(&format!("{PREFIX}audit/")).await.unwrap();
        assert_eq!(audit.len(), 1, "one submission, one audit entry");
    }
}
