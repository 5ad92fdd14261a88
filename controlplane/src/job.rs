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
    /// What the farm recorded as it worked on the job.
    #[serde(flatten)]
    pub farm: FarmFields,
    /// Fields of other versions.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The part of a job document the farm's workers write (flattened into the document),
/// apart so that code which creates jobs needs only `farm: Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FarmFields {
    /// Video segments of the whole output, known once the source is probed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub segments_total: u64,
    /// When transcoding began, Unix milliseconds (for the speed factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoding_since_ms: Option<u64>,
    /// The farm's plan of the job (opaque here: what every task encodes alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Value>,
    /// What the source is, for people: `1920x1080@30/1, 5 video renditions, audio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The origin prefix the job publishes under (`{asset}/{id}`), once publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_prefix: Option<String>,
}

impl JobDoc {
    /// What the audit log names: `jobs/<id> asset=<asset>` (a tenant's audit listing keeps
    /// the entries of its own assets).
    pub fn audit_target(&self) -> String {
        format!("jobs/{} asset={}", self.id, self.asset)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The key of job `id`.
pub fn job_key(id: &JobId) -> String {
    format!("{PREFIX}jobs/{id}")
}

/// The prefix of every job.
pub fn jobs_prefix() -> String {
    format!("{PREFIX}jobs/")
}

/// The record of task `task` of job `id` (`tasks/<job>/<task>`): a video run's number,
/// `audio`, or one of the once-only steps `plan` and `publish`.
pub fn task_key(id: &JobId, task: &str) -> String {
    format!("{PREFIX}tasks/{id}/{task}")
}

/// The prefix of job `id`'s task records.
pub fn tasks_prefix(id: &JobId) -> String {
    format!("{PREFIX}tasks/{id}/")
}

/// The claim on task `task` of job `id` (`claims/<job>/<task>`), bound to the claiming
/// worker's lease. Its version is the fencing token every later write of the task guards.
pub fn claim_key(id: &JobId, task: &str) -> String {
    format!("{PREFIX}claims/{id}/{task}")
}

/// The prefix of every claim.
pub fn claims_prefix() -> String {
    format!("{PREFIX}claims/")
}

/// Where a task is. A task that is being worked on is `pending` with a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not done yet (maybe claimed, maybe waiting for its backoff to pass).
    Pending,
    /// Done; its output is recorded.
    Done,
}

/// A task record (`tasks/<job>/<task>`). It exists once a worker reported on the task:
/// progress, a failed attempt, or its output. Every write is guarded by the claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDoc {
    /// The state.
    pub state: TaskState,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// No worker takes it again before this instant (Unix milliseconds): the backoff.
    #[serde(default)]
    pub not_before_ms: u64,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Video segments it makes (0 for audio and the steps).
    #[serde(default)]
    pub segments: u64,
    /// Of those, encoded so far.
    #[serde(default)]
    pub segments_done: u64,
    /// Media seconds encoded so far.
    #[serde(default)]
    pub encoded_secs: f64,
    /// What it made (opaque here; the farm reads it when it publishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Where in origin storage its files were staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
    /// The worker of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Fields of other versions.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl TaskDoc {
    /// A record with nothing reported yet.
    pub fn new() -> Self {
        Self {
            state: TaskState::Pending,
            attempts: 0,
            not_before_ms: 0,
            error: None,
            segments: 0,
            segments_done: 0,
            encoded_secs: 0.0,
            output: None,
            staged: None,
            worker: None,
            extra: Default::default(),
        }
    }
}

impl Default for TaskDoc {
    fn default() -> Self {
        Self::new()
    }
}

/// A job's progress as its task records tell it, at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Live {
    /// Video segments encoded (done tasks, and what running ones reported).
    pub segments_done: u64,
    /// Video segments in all (0 until probed).
    pub segments_total: u64,
    /// Done fraction of the whole job, 0 to 1.
    pub progress: f64,
    /// Media seconds encoded per second since transcoding began.
    pub speed: f64,
}

/// Share of the progress bar that encoding fills; packaging and publishing take the rest.
const ENCODE_SHARE: f64 = 0.9;

/// The progress of `doc` from its task records (`tasks`, the steps included) at `now_ms`.
pub fn live(doc: &JobDoc, tasks: &[TaskDoc], now_ms: u64) -> Live {
    let total = doc.farm.segments_total;
    let mut done = 0u64;
    let mut media = 0.0f64;
    for t in tasks.iter().filter(|t| t.segments > 0) {
        done += if t.state == TaskState::Done {
            t.segments
        } else {
            t.segments_done.min(t.segments)
        };
        media += t.encoded_secs.max(0.0);
    }
    let done = done.min(total);
    let encoded = if total == 0 {
        0.0
    } else {
        done as f64 / total as f64
    };
    let progress = match doc.state {
        JobState::Queued | JobState::Probing => 0.0,
        JobState::Transcoding => ENCODE_SHARE * encoded,
        JobState::Packaging => ENCODE_SHARE,
        JobState::Publishing => ENCODE_SHARE + (1.0 - ENCODE_SHARE) / 2.0,
        JobState::Done => 1.0,
        JobState::Failed | JobState::Cancelled => doc.progress.clamp(0.0, 1.0),
    };
    let speed = match doc.farm.transcoding_since_ms {
        Some(since) if now_ms > since => media / ((now_ms - since) as f64 / 1000.0),
        _ => 0.0,
    };
    Live {
        segments_done: done,
        segments_total: total,
        progress,
        speed,
    }
}

/// Reads every job, in id order.
pub async fn list(store: &dyn Store) -> Result<Vec<(JobDoc, i64)>, JobError> {
    let (items, _) = store.list(&jobs_prefix()).await?;
    items
        .into_iter()
        .map(|(key, v)| {
            serde_json::from_slice(&v.value)
                .map(|d| (d, v.version))
                .map_err(|e| JobError::Corrupt {
                    key,
                    message: e.to_string(),
                })
        })
        .collect()
}

/// Reads job `id`'s task records.
pub async fn tasks(store: &dyn Store, id: &JobId) -> Result<Vec<(String, TaskDoc, i64)>, JobError> {
    let prefix = tasks_prefix(id);
    let (items, _) = store.list(&prefix).await?;
    items
        .into_iter()
        .map(|(key, v)| {
            let name = key[prefix.len()..].to_owned();
            serde_json::from_slice(&v.value)
                .map(|d| (name, d, v.version))
                .map_err(|e| JobError::Corrupt {
                    key,
                    message: e.to_string(),
                })
        })
        .collect()
}

/// Why a job could not be cancelled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// No such job.
    #[error("no job {0}")]
    NotFound(JobId),
    /// The job is done or failed already.
    #[error("job {id} is {state} already; only a job that has not finished can be cancelled")]
    Final {
        /// The job.
        id: JobId,
        /// Its state.
        state: &'static str,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Marks job `id` cancelled (workers see it, kill their ffmpeg and publish nothing), with
/// an audit entry. Cancelling a cancelled job returns it as it is.
pub async fn cancel(
    store: &dyn Store,
    id: &JobId,
    actor: &str,
    now: &str,
) -> Result<JobDoc, CancelError> {
    loop {
        let (mut doc, version) = get(store, id)
            .await?
            .ok_or_else(|| CancelError::NotFound(id.clone()))?;
        match doc.state {
            JobState::Cancelled => return Ok(doc),
            JobState::Done | JobState::Failed => {
                return Err(CancelError::Final {
                    id: id.clone(),
                    state: doc.state.as_str(),
                });
            }
            _ => {}
        }
        doc.state = JobState::Cancelled;
        doc.error = Some(format!("cancelled by {actor}"));
        doc.updated_at = now.to_owned();
        let key = job_key(id);
        let ops = vec![
            Op::put(
                key.clone(),
                serde_json::to_vec(&doc).expect("a job serialises"),
            ),
            crate::api::audit_op(actor, "job.cancel", &doc.audit_target(), version),
        ];
        match store
            .txn(
                &[Guard {
                    key,
                    expected: version,
                }],
                ops,
            )
            .await
        {
            Ok(_) => return Ok(doc),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(JobError::Store(e).into()),
        }
    }
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
    /// True when the job existed, had failed or was cancelled, and is queued again.
    pub requeued: bool,
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
        if let Some((mut existing, version)) = get(store, &doc.id).await? {
            if !matches!(existing.state, JobState::Failed | JobState::Cancelled) {
                return Ok(Submitted {
                    doc: existing,
                    version,
                    created: false,
                    requeued: false,
                });
            }
            // A failed or cancelled job runs again from the start: what failed may have
            // been mended (a missing tool, a full disk), and a source that is bad fails
            // again at once with the same reason. The asset and policy stay the job's.
            existing.state = JobState::Queued;
            existing.error = None;
            existing.progress = 0.0;
            existing.farm.plan = None;
            existing.farm.segments_total = 0;
            existing.farm.transcoding_since_ms = None;
            existing.priority = doc.priority;
            existing.updated_at = doc.updated_at.clone();
            let ops = vec![
                Op::put(
                    key.clone(),
                    serde_json::to_vec(&existing).expect("a job serialises"),
                ),
                // The planning step starts afresh, with no attempts or backoff carried
                // over (it clears the other task records itself).
                Op::delete(task_key(&doc.id, "plan")),
                crate::api::audit_op(&doc.actor, "job.requeue", &doc.audit_target(), version),
            ];
            let guard = Guard {
                key: key.clone(),
                expected: version,
            };
            match store.txn(&[guard], ops).await {
                Ok(version) => {
                    return Ok(Submitted {
                        doc: existing,
                        version,
                        created: false,
                        requeued: true,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let value = serde_json::to_vec(&doc).expect("a job serialises");
        let ops = vec![
            Op::put(key.clone(), value),
            crate::api::audit_op(&doc.actor, "job.submit", &doc.audit_target(), 0),
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
                    requeued: false,
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
            farm: Default::default(),
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

    #[tokio::test]
    async fn failed_and_cancelled_jobs_run_again_when_resubmitted() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.log")).unwrap();
        let first = submit(&store, doc([5; 32], "default")).await.unwrap();
        let cancelled = cancel(&store, &first.doc.id, "bob", "t1").await.unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        // Cancelling again is a no-op; a done job cannot be cancelled.
        assert_eq!(
            cancel(&store, &first.doc.id, "bob", "t2")
                .await
                .unwrap()
                .state,
            JobState::Cancelled
        );
        let again = submit(&store, doc([5; 32], "default")).await.unwrap();
        assert!(again.requeued && !again.created);
        assert_eq!(again.doc.state, JobState::Queued);
        assert_eq!(again.doc.error, None);
        let (mut d, v) = get(&store, &first.doc.id).await.unwrap().unwrap();
        d.state = JobState::Done;
        store
            .put(&job_key(&d.id), serde_json::to_vec(&d).unwrap(), v)
            .await
            .unwrap();
        assert!(matches!(
            cancel(&store, &d.id, "bob", "t3").await,
            Err(CancelError::Final { state: "done", .. })
        ));
        let done = submit(&store, doc([5; 32], "default")).await.unwrap();
        assert!(
            !done.requeued && done.doc.state == JobState::Done,
            "a done job stays done"
        );
        let (audit, _) = store.list(&format!("{PREFIX}audit/")).await.unwrap();
        let actions: Vec<String> = audit
            .iter()
            .map(|(_, v)| {
                serde_json::from_slice::<Value>(&v.value).unwrap()["action"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(actions, ["job.submit", "job.cancel", "job.requeue"]);
    }

    #[test]
    fn live_progress_counts_done_and_running_video_tasks() {
        let mut d = doc([1; 32], "default");
        d.state = JobState::Transcoding;
        d.farm.segments_total = 10;
        d.farm.transcoding_since_ms = Some(1_000);
        let task = |state, segments, segments_done, encoded_secs| TaskDoc {
            state,
            segments,
            segments_done,
            encoded_secs,
            ..TaskDoc::new()
        };
        let tasks = [
            task(TaskState::Done, 4, 4, 12.8),
            task(TaskState::Pending, 4, 2, 6.4),
            task(TaskState::Pending, 2, 0, 0.0),
            // Audio and the steps make no video segments.
            task(TaskState::Done, 0, 0, 30.0),
        ];
        let l = live(&d, &tasks, 11_000);
        assert_eq!((l.segments_done, l.segments_total), (6, 10));
        assert!((l.progress - 0.9 * 0.6).abs() < 1e-9);
        assert!((l.speed - 19.2 / 10.0).abs() < 1e-9, "{}", l.speed);
        d.state = JobState::Done;
        assert_eq!(live(&d, &tasks, 11_000).progress, 1.0);
        d.state = JobState::Queued;
        assert_eq!(live(&d, &[], 0).progress, 0.0);
    }
}
