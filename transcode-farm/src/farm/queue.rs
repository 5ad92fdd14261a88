//! The queue on the state store: claiming a task under a lease, and the fenced writes that
//! follow. A claim is `claims/<job>/<task>`, written under the worker's lease only if it is
//! absent and the task record is as the worker read it; the revision of that write is the
//! claim's fencing token. Every later write of the task (progress, output, the job's state,
//! the asset record) is a transaction guarded by `claims/<job>/<task>` being at exactly that
//! version: once the lease expired (the claim vanished) or another worker holds the task
//! (a newer version), the write is refused with [`QueueError::Fenced`] and nothing lands.

use std::time::SystemTime;

use serde_json::json;
use streamgate_control::job::{self, JobDoc, JobError, JobId, TaskDoc};
use streamgate_control::store::{Guard, LeaseId, Op, Store, StoreError};

/// A task this worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The job.
    pub job: JobId,
    /// The task name.
    pub task: String,
    /// The revision of the claim: the fencing token.
    pub token: i64,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The claim is gone or held by another worker: this worker must stop and write nothing.
    #[error("claim on {job}/{task} lost (fencing token {token} is no longer current)")]
    Fenced {
        /// The job.
        job: JobId,
        /// The task.
        task: String,
        /// The token that no longer holds.
        token: i64,
    },
    /// The job document is gone.
    #[error("job {0} does not exist")]
    NoJob(JobId),
    /// The store failed, or a record does not parse.
    #[error(transparent)]
    Job(#[from] JobError),
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        Self::Job(JobError::Store(e))
    }
}

impl Claim {
    /// The claim's key.
    pub fn key(&self) -> String {
        job::claim_key(&self.job, &self.task)
    }

    /// The guard every fenced write carries.
    pub fn guard(&self) -> Guard {
        Guard {
            key: self.key(),
            expected: self.token,
        }
    }

    fn fenced(&self) -> QueueError {
        QueueError::Fenced {
            job: self.job.clone(),
            task: self.task.clone(),
            token: self.token,
        }
    }

    /// Maps a failed guard on the claim to [`QueueError::Fenced`].
    pub fn classify(&self, e: StoreError) -> QueueError {
        match e {
            StoreError::Conflict { ref key, .. } if *key == self.key() => self.fenced(),
            // A lease that expired took the claim with it.
            StoreError::LeaseExpired(_) => self.fenced(),
            other => other.into(),
        }
    }
}

/// Claims `task` of `job` for `worker` under `lease`, if nobody holds it and its record is
/// still at `task_version` (0: no record). `Ok(None)`: someone else was first.
pub async fn claim(
    store: &dyn Store,
    lease: LeaseId,
    worker: &str,
    job: &JobId,
    task: &str,
    task_version: i64,
) -> Result<Option<Claim>, QueueError> {
    let key = job::claim_key(job, task);
    let value = json!({
        "worker": worker,
        "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    });
    let guards = [
        Guard {
            key: key.clone(),
            expected: 0,
        },
        Guard {
            key: job::task_key(job, task),
            expected: task_version,
        },
    ];
    let ops = vec![Op::put_leased(key, value.to_string(), lease)];
    match store.txn(&guards, ops).await {
        Ok(token) => Ok(Some(Claim {
            job: job.clone(),
            task: task.to_owned(),
            token,
        })),
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes the task's record, fenced; with `release` the claim goes in the same commit.
pub async fn put_task(
    store: &dyn Store,
    claim: &Claim,
    doc: &TaskDoc,
    release: bool,
) -> Result<i64, QueueError> {
    let mut ops = vec![Op::put(
        job::task_key(&claim.job, &claim.task),
        serde_json::to_vec(doc).expect("a task serialises"),
    )];
    if release {
        ops.push(Op::delete(claim.key()));
    }
    store
        .txn(&[claim.guard()], ops)
        .await
        .map_err(|e| claim.classify(e))
}

/// Reads the task's record and its version (a new record and 0 when there is none).
pub async fn get_task(
    store: &dyn Store,
    job: &JobId,
    task: &str,
) -> Result<(TaskDoc, i64), QueueError> {
    let key = job::task_key(job, task);
    match store.get(&key).await? {
        None => Ok((TaskDoc::new(), 0)),
        Some(v) => serde_json::from_slice(&v.value)
            .map(|d| (d, v.version))
            .map_err(|e| {
                QueueError::Job(JobError::Corrupt {
                    key,
                    message: e.to_string(),
                })
            }),
    }
}

/// Gives the claim up (an absent or newer claim is left alone).
pub async fn release(store: &dyn Store, claim: &Claim) {
    if let Err(e) = store
        .txn(&[claim.guard()], vec![Op::delete(claim.key())])
        .await
    {
        tracing::debug!(job = %claim.job, task = %claim.task, error = %e, "claim not released");
    }
}

/// Changes the job document with `change`, fenced by `claim`, retrying when the document
/// moved underneath (other workers report too). `change` returns false to write nothing.
/// `extra` ops commit in the same transaction.
pub async fn update_job(
    store: &dyn Store,
    claim: &Claim,
    mut change: impl FnMut(&mut JobDoc) -> bool,
    extra: impl Fn() -> (Vec<Guard>, Vec<Op>),
) -> Result<JobDoc, QueueError> {
    let key = job::job_key(&claim.job);
    loop {
        let (mut doc, version) = job::get(store, &claim.job)
            .await?
            .ok_or_else(|| QueueError::NoJob(claim.job.clone()))?;
        if !change(&mut doc) {
            return Ok(doc);
        }
        doc.updated_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let (mut guards, mut ops) = extra();
        guards.push(claim.guard());
        guards.push(Guard {
            key: key.clone(),
            expected: version,
        });
        ops.insert(
            0,
            Op::put(
                key.clone(),
                serde_json::to_vec(&doc).expect("a job serialises"),
            ),
        );
        match store.txn(&guards, ops).await {
            Ok(_) => return Ok(doc),
            Err(StoreError::Conflict { key: k, .. }) if k == key => continue,
            Err(e) => return Err(claim.classify(e)),
        }
    }
}
