//! `JobService`: submit, read, list, cancel and watch transcode jobs. Workers of the farm
//! do the work (`streamgate-transcode`); this service only writes job documents and reads
//! what the workers report in their task records.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use super::assets::{ASSET_ID_RULE, is_asset_id};
use super::{caller, check_id, status};
use crate::auth::Actor;
use crate::job::{self, JobDoc, JobError, JobId, JobSource, JobState, TaskDoc};
use crate::store::Store;

/// The ladder used when a submission names none.
pub const DEFAULT_LADDER: &str = "default";

/// Fewest milliseconds between two updates a Watch sends for progress alone.
const WATCH_MIN_GAP: Duration = Duration::from_millis(250);

/// `JobService` over a [`Store`].
pub struct JobApi {
    store: Arc<dyn Store>,
}

impl JobApi {
    /// Serves the jobs kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn job_status(e: JobError) -> Status {
    match e {
        JobError::Store(e) => status(e),
        other => Status::internal(other.to_string()),
    }
}

/// How a source string reads: `s3://bucket/key`, `https://...`, or an origin key.
fn parse_source(s: &str) -> Result<JobSource, Status> {
    let bad = |why: &str| Status::invalid_argument(format!("source {s:?}: {why}"));
    if let Some(rest) = s.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| bad("an S3 URL is s3://bucket/key"))?;
        if bucket.is_empty() || key.is_empty() {
            return Err(bad("an S3 URL is s3://bucket/key"));
        }
        return Ok(JobSource::S3 { url: s.to_owned() });
    }
    if s.starts_with("https://") {
        if s.len() <= "https://".len() || s.chars().any(char::is_whitespace) {
            return Err(bad("not a URL"));
        }
        return Ok(JobSource::Https { url: s.to_owned() });
    }
    if s.contains("://") {
        return Err(bad(
            "only origin keys, s3:// and https:// sources are accepted",
        ));
    }
    streamgate_origin::validate_key(s).map_err(|e| bad(&format!("not an origin key: {e}")))?;
    Ok(JobSource::Origin { key: s.to_owned() })
}

/// The digest a job id is derived from: the content's SHA-256 when the caller gives it,
/// else the SHA-256 of the source's location (idempotent per location, not per content).
fn source_digest(sha256: &str, source: &str) -> Result<([u8; 32], String), Status> {
    if sha256.is_empty() {
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            format!("location\0{source}").as_bytes(),
        );
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        return Ok((out, String::new()));
    }
    let lower = sha256.to_ascii_lowercase();
    if lower.len() != 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "sha256 must be 64 hexadecimal digits",
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&lower[2 * i..2 * i + 2], 16).expect("hex checked");
    }
    Ok((out, lower))
}

fn describe(source: &JobSource) -> String {
    match source {
        JobSource::Upload { upload, .. } => format!("upload:{upload}"),
        JobSource::Origin { key } => key.clone(),
        JobSource::S3 { url } | JobSource::Https { url } => url.clone(),
    }
}

/// The API view of a job and its task records at `now_ms`.
pub fn to_pb(doc: &JobDoc, version: i64, tasks: &[TaskDoc], now_ms: u64) -> pb::Job {
    let live = job::live(doc, tasks, now_ms);
    pb::Job {
        id: doc.id.to_string(),
        asset: doc.asset.clone(),
        policy: doc.policy.clone().unwrap_or_default(),
        ladder: doc.ladder.clone(),
        state: doc.state.as_str().to_owned(),
        progress: live.progress,
        segments_done: live.segments_done,
        segments_total: live.segments_total,
        speed: live.speed,
        error: doc.error.clone().unwrap_or_default(),
        source: describe(&doc.source),
        source_sha256: doc.source_sha256.clone(),
        priority: doc.priority,
        filename: doc.filename.clone().unwrap_or_default(),
        actor: doc.actor.clone(),
        created_at: doc.created_at.clone(),
        updated_at: doc.updated_at.clone(),
        origin_prefix: doc.farm.origin_prefix.clone().unwrap_or_default(),
        version,
    }
}

fn parse_id(id: &str) -> Result<JobId, Status> {
    JobId::parse(id).map_err(|e| Status::invalid_argument(e.to_string()))
}

async fn read(store: &dyn Store, id: &JobId) -> Result<pb::Job, Status> {
    let (doc, version) = job::get(store, id)
        .await
        .map_err(job_status)?
        .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
    let tasks: Vec<TaskDoc> = job::tasks(store, id)
        .await
        .map_err(job_status)?
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    Ok(to_pb(&doc, version, &tasks, now_ms()))
}

/// Checks that a tenant's token may touch job `id` (by the job's asset); a job that does
/// not exist passes, and the call answers NOT_FOUND.
async fn check_job(store: &dyn Store, who: &Actor, method: &str, id: &JobId) -> Result<(), Status> {
    if !who.is_tenant() {
        return Ok(());
    }
    match job::get(store, id).await.map_err(job_status)? {
        Some((doc, _)) => check_id(store, who, method, "assets", &doc.asset).await,
        None => Ok(()),
    }
}

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::Job, Status>> + Send>>;

#[tonic::async_trait]
impl pb::job_service_server::JobService for JobApi {
    async fn submit(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        if !is_asset_id(&r.asset) {
            return Err(Status::invalid_argument(format!(
                "asset {:?}: {ASSET_ID_RULE}",
                r.asset
            )));
        }
        check_id(&*self.store, &who, "JobService/Submit", "assets", &r.asset).await?;
        if !r.policy.is_empty() {
            check_id(
                &*self.store,
                &who,
                "JobService/Submit",
                "policies",
                &r.policy,
            )
            .await?;
        }
        let ladder = if r.ladder.is_empty() {
            DEFAULT_LADDER.to_owned()
        } else {
            r.ladder.clone()
        };
        if !ladder
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || ladder.len() > 64
        {
            return Err(Status::invalid_argument(
                "ladder: a preset name of a-z, 0-9 and '-'",
            ));
        }
        let source = parse_source(&r.source)?;
        let (digest, sha_hex) = source_digest(&r.sha256, &r.source)?;
        let now = rfc3339_now();
        let doc = JobDoc {
            id: JobId::derive(&digest, &ladder),
            asset: r.asset,
            policy: (!r.policy.is_empty()).then_some(r.policy),
            ladder,
            source,
            source_sha256: sha_hex,
            filename: None,
            priority: r.priority,
            state: JobState::Queued,
            progress: 0.0,
            error: None,
            actor: who.name,
            created_at: now.clone(),
            updated_at: now,
            farm: Default::default(),
            extra: Default::default(),
        };
        let s = job::submit(&*self.store, doc).await.map_err(job_status)?;
        let tasks: Vec<TaskDoc> = job::tasks(&*self.store, &s.doc.id)
            .await
            .map_err(job_status)?
            .into_iter()
            .map(|(_, t, _)| t)
            .collect();
        Ok(Response::new(pb::SubmitJobResponse {
            job: Some(to_pb(&s.doc, s.version, &tasks, now_ms())),
            created: s.created,
            requeued: s.requeued,
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let who = caller(&req);
        let id = parse_id(&req.into_inner().id)?;
        check_job(&*self.store, &who, "JobService/Get", &id).await?;
        let job = read(&*self.store, &id).await?;
        Ok(Response::new(pb::GetJobResponse { job: Some(job) }))
    }

    async fn list(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        if !r.state.is_empty() && !JobState::ALL.iter().any(|s| s.as_str() == r.state) {
            return Err(Status::invalid_argument(format!(
                "state {:?}: one of queued, probing, transcoding, packaging, publishing, done, failed, cancelled",
                r.state
            )));
        }
        let docs = job::list(&*self.store).await.map_err(job_status)?;
        let now = now_ms();
        let mut jobs = Vec::new();
        for (doc, version) in docs {
            if (!r.state.is_empty() && doc.state.as_str() != r.state)
                || (!r.asset.is_empty() && doc.asset != r.asset)
                || !who.may_touch(&doc.asset)
            {
                continue;
            }
            // Finished jobs' task records are gone; only running ones are read.
            let tasks: Vec<TaskDoc> = if doc.state.is_final() {
                Vec::new()
            } else {
                job::tasks(&*self.store, &doc.id)
                    .await
                    .map_err(job_status)?
                    .into_iter()
                    .map(|(_, t, _)| t)
                    .collect()
            };
            jobs.push(to_pb(&doc, version, &tasks, now));
        }
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let who = caller(&req);
        let id = parse_id(&req.into_inner().id)?;
        check_job(&*self.store, &who, "JobService/Cancel", &id).await?;
        match job::cancel(&*self.store, &id, &who.name, &rfc3339_now()).await {
            Ok(_) => {}
            Err(job::CancelError::NotFound(id)) => {
                return Err(Status::not_found(format!("no job {id}")));
            }
            Err(e @ job::CancelError::Final { .. }) => {
                return Err(Status::failed_precondition(e.to_string()));
            }
            Err(job::CancelError::Job(e)) => return Err(job_status(e)),
        }
        let job = read(&*self.store, &id).await?;
        Ok(Response::new(pb::CancelJobResponse { job: Some(job) }))
    }

    type WatchStream = JobStream;

    async fn watch(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = caller(&req);
        let id = parse_id(&req.into_inner().id)?;
        check_job(&*self.store, &who, "JobService/Watch", &id).await?;
        let store = Arc::clone(&self.store);
        // Fails with NOT_FOUND before the stream starts.
        let first = read(&*store, &id).await?;
        let (_, revision) = store.list(&job::job_key(&id)).await.map_err(status)?;
        let jobs = store
            .watch(&job::job_key(&id), revision)
            .await
            .map_err(status)?;
        let tasks = store
            .watch(&job::tasks_prefix(&id), revision)
            .await
            .map_err(status)?;
        let changes = futures::stream::select(jobs, tasks);
        let stream = async_stream(store, id, first, changes);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The job now, then after every change (progress at most every [`WATCH_MIN_GAP`]), until
/// it reaches a final state.
fn async_stream(
    store: Arc<dyn Store>,
    id: JobId,
    first: pb::Job,
    changes: impl Stream<Item = Result<crate::store::Batch, crate::store::StoreError>>
    + Send
    + Unpin
    + 'static,
) -> impl Stream<Item = Result<pb::Job, Status>> + Send {
    let state = (Some(first), changes, None::<pb::Job>, false);
    futures::stream::unfold(state, move |(pending, mut changes, last, ended)| {
        let store = Arc::clone(&store);
        let id = id.clone();
        async move {
            if ended {
                return None;
            }
            if let Some(job) = pending {
                let done = JobState::ALL
                    .iter()
                    .any(|s| s.is_final() && s.as_str() == job.state);
                return Some((Ok(job.clone()), (None, changes, Some(job), done)));
            }
            loop {
                match changes.next().await {
                    None => {
                        return Some((
                            Err(Status::unavailable("the store's watch ended; watch again")),
                            (None, changes, last, true),
                        ));
                    }
                    Some(Err(e)) => {
                        return Some((Err(status(e)), (None, changes, last, true)));
                    }
                    Some(Ok(batch)) if batch.events.is_empty() => continue,
                    Some(Ok(_)) => {}
                }
                // Let a burst of task reports settle into one update.
                tokio::time::sleep(WATCH_MIN_GAP).await;
                let job = match read(&*store, &id).await {
                    Ok(j) => j,
                    Err(e) => return Some((Err(e), (None, changes, last, true))),
                };
                let same = last.as_ref().is_some_and(|l| {
                    l.version == job.version
                        && l.segments_done == job.segments_done
                        && l.state == job.state
                });
                if same {
                    continue;
                }
                let done = JobState::ALL
                    .iter()
                    .any(|s| s.is_final() && s.as_str() == job.state);
                return Some((Ok(job.clone()), (None, changes, Some(job), done)));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_or_say_why_not() {
        assert_eq!(
            parse_source("in/a.mp4").unwrap(),
            JobSource::Origin {
                key: "in/a.mp4".into()
            }
        );
        assert!(matches!(
            parse_source("s3://b/k.mp4").unwrap(),
            JobSource::S3 { .. }
        ));
        assert!(matches!(
            parse_source("https://example.org/v.mp4").unwrap(),
            JobSource::Https { .. }
        ));
        for bad in [
            "",
            "../etc/passwd",
            "s3://bucket",
            "ftp://x/y",
            "http://x/y",
            "a//b",
        ] {
            assert!(parse_source(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_digest_is_the_content_s_when_given() {
        let sha = "AB".repeat(32);
        let (d, hex) = source_digest(&sha, "in/a.mp4").unwrap();
        assert_eq!(d, [0xab; 32]);
        assert_eq!(hex, "ab".repeat(32));
        let (a, none) = source_digest("", "in/a.mp4").unwrap();
        let (b, _) = source_digest("", "in/b.mp4").unwrap();
        assert!(none.is_empty());
        assert_ne!(a, b, "location digests differ by location");
        assert!(source_digest("abc", "x").is_err());
    }
}
