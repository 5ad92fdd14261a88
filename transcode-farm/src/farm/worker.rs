//! The worker: one lease, a scan of the queue whenever it changes, up to `concurrency`
//! units of work at once, each fenced by its claim.
//!
//! The lease is kept alive in the background ([`KeptLease`]). When it may be lost, every
//! unit is dropped at once (dropping kills its ffmpeg) and nothing more is written for it;
//! its claims vanish with the lease and other workers take the work over. A unit whose job
//! was cancelled (or failed elsewhere) is dropped the same way and its claim released.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use streamgate_control::job::{self, JobDoc, JobId, JobState, TaskState};
use streamgate_control::store::{KeptLease, Op, Store, WatchStream};
use streamgate_origin::{ObjectKey, Origin};
use tokio::task::JoinSet;

use super::queue::{self, Claim, QueueError};
use super::schedule::{self, AfterFailure, Failure, JobView, Retry, Work};
use super::source::{self, SourceError};
use super::{FarmMetrics, publish};
use crate::config::LadderConfig;
use crate::error::TranscodeError;
use crate::segmented::{self, Part, Prepared};

/// How a worker runs. Every default is here, once.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker's name in claims and task records.
    pub name: String,
    /// Units of work at once (default: the machine's cores).
    pub concurrency: usize,
    /// TTL of the worker's lease (default 10 s).
    pub lease_ttl: Duration,
    /// Tries per task and the backoff between them (default 3 tries, 2 s doubling to 60 s).
    pub retry: Retry,
    /// Video segments per task (default 5: 16 s of video at 3.2 s segments).
    pub segments_per_task: u64,
    /// Local folder for sources and encoded parts.
    pub scratch: PathBuf,
    /// The `default` ladder.
    pub ladder: LadderConfig,
    /// Where parts are staged in origin storage before publishing (default `.farm`).
    pub staging_prefix: String,
    /// Shortest gap between two progress writes of a task (default 2 s).
    pub progress_interval: Duration,
    /// How often the queue is scanned when nothing changes (default 2 s, for backoffs).
    pub poll_interval: Duration,
    /// Endpoint and credentials for `s3://` sources (set from an S3 origin); without it
    /// such jobs fail with a reason.
    pub s3_sources: Option<streamgate_origin::S3Origin>,
    /// The farm admin port (`/metrics`, `/healthz`) of `streamgate transcode`
    /// (default `0.0.0.0:9102`; `None`: not served).
    pub admin_listen: Option<std::net::SocketAddr>,
}

impl WorkerConfig {
    /// Defaults, with scratch space in `scratch`.
    pub fn new(scratch: PathBuf) -> Self {
        Self {
            name: default_name(),
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lease_ttl: Duration::from_secs(10),
            retry: Retry {
                max_attempts: 3,
                base: Duration::from_secs(2),
                cap: Duration::from_secs(60),
            },
            segments_per_task: 5,
            scratch,
            ladder: LadderConfig::default(),
            staging_prefix: ".farm".to_owned(),
            progress_interval: Duration::from_secs(2),
            poll_interval: Duration::from_secs(2),
            s3_sources: None,
            admin_listen: Some(std::net::SocketAddr::from(([0, 0, 0, 0], 9102))),
        }
    }
}

/// `host-pid`.
fn default_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration cannot run.
    #[error("worker config: {0}")]
    Config(String),
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What units share.
pub(super) struct Ctx {
    pub(super) store: Arc<dyn Store>,
    pub(super) origin: Origin,
    pub(super) cfg: WorkerConfig,
    pub(super) http: reqwest::Client,
    pub(super) metrics: Arc<FarmMetrics>,
    /// One fetch of a job's source at a time on this worker.
    fetches: Mutex<HashMap<JobId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ctx {
    pub(super) fn job_dir(&self, id: &JobId) -> PathBuf {
        self.cfg.scratch.join(id.as_str())
    }

    /// The staging folder of job `id` in origin storage.
    pub(super) fn staging(&self, id: &JobId) -> String {
        format!("{}/{id}", self.cfg.staging_prefix)
    }

    /// The job's source on local disk, fetched once per worker.
    pub(super) async fn source(&self, doc: &JobDoc) -> Result<(PathBuf, String), SourceError> {
        let lock = {
            let mut m = self.fetches.lock().expect("fetch locks");
            Arc::clone(m.entry(doc.id.clone()).or_default())
        };
        let _held = lock.lock().await;
        source::fetch(
            doc,
            &self.origin,
            self.cfg.s3_sources.as_ref(),
            &self.http,
            &self.job_dir(&doc.id),
        )
        .await
    }
}

/// What a unit of work ended with.
#[derive(Debug)]
pub(super) enum UnitError {
    /// The claim or the lease is gone: stop, write nothing.
    Fenced,
    /// The job is no longer in a state this unit works in.
    Stale,
    /// A failure, with what kind it is and the message for people.
    Failed(Failure, String),
}

impl From<QueueError> for UnitError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Fenced { .. } => Self::Fenced,
            QueueError::NoJob(_) => Self::Stale,
            other => Self::Failed(Failure::Transient, other.to_string()),
        }
    }
}

impl UnitError {
    /// A transcode error, with the scratch path replaced by the source's name.
    pub(super) fn transcode(e: TranscodeError, input: &std::path::Path, name: &str) -> Self {
        let kind = match e {
            TranscodeError::NotVideo { .. }
            | TranscodeError::Truncated { .. }
            | TranscodeError::Ladder(_)
            | TranscodeError::Config(_)
            | TranscodeError::Output { .. }
            | TranscodeError::Verify(_) => Failure::Permanent,
            _ => Failure::Transient,
        };
        let text = e
            .to_string()
            .replace(&format!("{:?}", input.display().to_string()), name)
            .replace(&input.display().to_string(), name);
        Self::Failed(kind, text)
    }

    fn source(e: SourceError) -> Self {
        let kind = if e.is_permanent() {
            Failure::Permanent
        } else {
            Failure::Transient
        };
        Self::Failed(kind, e.to_string())
    }
}

/// Runs a worker on `store` and `origin` until `shutdown` completes; then its units stop
/// and its lease is revoked, so other workers take its claims over at once.
pub async fn run(
    store: Arc<dyn Store>,
    origin: Origin,
    cfg: WorkerConfig,
    metrics: Arc<FarmMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    if cfg.concurrency == 0 {
        return Err(WorkerError::Config("concurrency must be at least 1".into()));
    }
    tokio::fs::create_dir_all(&cfg.scratch)
        .await
        .map_err(|e| WorkerError::Config(format!("scratch {}: {e}", cfg.scratch.display())))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| WorkerError::Config(e.to_string()))?;
    let ctx = Arc::new(Ctx {
        store,
        origin,
        cfg,
        http,
        metrics,
        fetches: Mutex::new(HashMap::new()),
    });
    tracing::info!(worker = %ctx.cfg.name, concurrency = ctx.cfg.concurrency, "farm worker started");
    tokio::pin!(shutdown);
    let mut units: JoinSet<(Claim, Result<(), UnitError>)> = JoinSet::new();
    let mut running: HashMap<(JobId, String), (Claim, tokio::task::AbortHandle)> = HashMap::new();
    let mut lease: Option<KeptLease> = None;
    let mut changes: Option<WatchStream> = None;
    loop {
        if lease.as_ref().is_some_and(KeptLease::is_lost) {
            tracing::warn!(worker = %ctx.cfg.name, units = running.len(), "lease lost: stopping every unit, publishing nothing");
            for (_, (_, h)) in running.drain() {
                h.abort();
            }
            ctx.metrics.lease_lost();
            lease = None;
        }
        if lease.is_none() {
            match KeptLease::grant(Arc::clone(&ctx.store), ctx.cfg.lease_ttl).await {
                Ok(l) => lease = Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a lease; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        let l = lease.as_ref().expect("a lease");
        if changes.is_none() {
            changes = watch_queue(&*ctx.store).await;
        }
        match scan(&ctx).await {
            Ok(views) => {
                // Units of jobs that ended elsewhere (cancelled, failed) stop here.
                let finished: BTreeSet<&JobId> = views
                    .iter()
                    .filter(|(v, _)| v.doc.state.is_final())
                    .map(|(v, _)| &v.doc.id)
                    .collect();
                let stop: Vec<(JobId, String)> = running
                    .keys()
                    .filter(|(j, _)| finished.contains(j))
                    .cloned()
                    .collect();
                for k in stop {
                    if let Some((claim, h)) = running.remove(&k) {
                        tracing::info!(job = %k.0, task = %k.1, "job ended elsewhere: stopping its unit");
                        h.abort();
                        queue::release(&*ctx.store, &claim).await;
                    }
                }
                clean_scratch(&ctx, &views, &running).await;
                let free = ctx.cfg.concurrency.saturating_sub(running.len());
                if free > 0 {
                    take_work(&ctx, l, &views, free, &mut units, &mut running).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the queue"),
        }
        let mut lost = l.lost();
        tokio::select! {
            _ = &mut shutdown => break,
            Some(done) = units.join_next(), if !units.is_empty() => {
                if let Ok((claim, result)) = done {
                    running.remove(&(claim.job.clone(), claim.task.clone()));
                    if let Err(e) = &result {
                        tracing::debug!(job = %claim.job, task = %claim.task, error = ?e, "unit ended");
                    }
                }
            }
            event = next_change(&mut changes) => {
                if !event {
                    changes = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            _ = tokio::time::sleep(ctx.cfg.poll_interval) => {}
            _ = async { let _ = lost.wait_for(|l| *l).await; } => {}
        }
    }
    units.abort_all();
    while units.join_next().await.is_some() {}
    if let Some(l) = lease {
        let _ = l.revoke(&*ctx.store).await;
    }
    tracing::info!(worker = %ctx.cfg.name, "farm worker stopped");
    Ok(())
}

/// A watch of jobs and claims together (one prefix each, merged).
async fn watch_queue(store: &dyn Store) -> Option<WatchStream> {
    let (_, rev) = store.list(&job::claims_prefix()).await.ok()?;
    let jobs = store.watch(&job::jobs_prefix(), rev).await.ok()?;
    let claims = store.watch(&job::claims_prefix(), rev).await.ok()?;
    Some(Box::pin(futures::stream::select(jobs, claims)))
}

/// Waits for a change; false when the watch broke (or there is none).
async fn next_change(changes: &mut Option<WatchStream>) -> bool {
    match changes {
        Some(s) => matches!(s.next().await, Some(Ok(_))),
        None => {
            std::future::pending::<()>().await;
            false
        }
    }
}

/// Reads the whole queue: every job with its task records (and their versions) and claims.
async fn scan(ctx: &Ctx) -> Result<Vec<(JobView, BTreeMap<String, i64>)>, QueueError> {
    let docs = job::list(&*ctx.store).await?;
    let (claims, _) = ctx.store.list(&job::claims_prefix()).await?;
    let mut claimed: HashMap<String, BTreeSet<String>> = HashMap::new();
    let cp = job::claims_prefix();
    for (k, _) in claims {
        if let Some((j, t)) = k[cp.len()..].split_once('/') {
            claimed
                .entry(j.to_owned())
                .or_default()
                .insert(t.to_owned());
        }
    }
    let mut views = Vec::new();
    for (doc, _) in docs {
        let (tasks, versions) = if doc.state.is_final() {
            (BTreeMap::new(), BTreeMap::new())
        } else {
            let mut t = BTreeMap::new();
            let mut v = BTreeMap::new();
            for (name, d, ver) in job::tasks(&*ctx.store, &doc.id).await? {
                v.insert(name.clone(), ver);
                t.insert(name, d);
            }
            (t, v)
        };
        let parts = doc
            .farm
            .plan
            .as_ref()
            .and_then(|p| serde_json::from_value::<Prepared>(p.clone()).ok())
            .map(|p| p.parts().into_iter().map(part_name).collect())
            .unwrap_or_default();
        let claims = claimed.remove(doc.id.as_str()).unwrap_or_default();
        views.push((
            JobView {
                doc,
                parts,
                tasks,
                claims,
            },
            versions,
        ));
    }
    Ok(views)
}

/// The task name of a part: `audio` or the run's number.
pub fn part_name(p: Part) -> String {
    match p {
        Part::Audio => "audio".to_owned(),
        Part::Video(n) => n.to_string(),
    }
}

fn parse_part(name: &str) -> Option<Part> {
    if name == "audio" {
        Some(Part::Audio)
    } else {
        name.parse().ok().map(Part::Video)
    }
}

async fn take_work(
    ctx: &Arc<Ctx>,
    lease: &KeptLease,
    views: &[(JobView, BTreeMap<String, i64>)],
    mut free: usize,
    units: &mut JoinSet<(Claim, Result<(), UnitError>)>,
    running: &mut HashMap<(JobId, String), (Claim, tokio::task::AbortHandle)>,
) {
    let only: Vec<JobView> = views.iter().map(|(v, _)| v.clone()).collect();
    let versions: HashMap<&JobId, &BTreeMap<String, i64>> =
        views.iter().map(|(v, ver)| (&v.doc.id, ver)).collect();
    for (id, work) in schedule::pick(&only, now_ms()) {
        if free == 0 {
            break;
        }
        let task = work.task().to_owned();
        if running.contains_key(&(id.clone(), task.clone())) {
            continue;
        }
        let version = versions
            .get(&id)
            .and_then(|v| v.get(&task))
            .copied()
            .unwrap_or(0);
        let claim =
            match queue::claim(&*ctx.store, lease.id(), &ctx.cfg.name, &id, &task, version).await {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(job = %id, task, error = %e, "claim failed");
                    return;
                }
            };
        tracing::info!(job = %id, task, token = claim.token, worker = %ctx.cfg.name, "claimed");
        ctx.metrics.claimed();
        let lost = lease.lost();
        let c = claim.clone();
        let ctx2 = Arc::clone(ctx);
        let h = units.spawn(async move {
            let result = fenced_unit(&ctx2, &c, work, lost).await;
            (c, result)
        });
        running.insert((id, task), (claim, h));
        free -= 1;
    }
}

/// Runs one unit; the lease's loss drops it (and its ffmpeg) at once.
async fn fenced_unit(
    ctx: &Ctx,
    claim: &Claim,
    work: Work,
    mut lost: tokio::sync::watch::Receiver<bool>,
) -> Result<(), UnitError> {
    let unit = async {
        match &work {
            Work::Plan => plan(ctx, claim).await,
            Work::Part(name) => encode(ctx, claim, name).await,
            Work::Publish => publish::publish(ctx, claim).await,
        }
    };
    let result = tokio::select! {
        r = unit => r,
        _ = async { let _ = lost.wait_for(|l| *l).await; } => Err(UnitError::Fenced),
    };
    match &result {
        Ok(()) => {}
        Err(UnitError::Fenced) => {
            tracing::warn!(job = %claim.job, task = %claim.task, "claim lost: this attempt wrote nothing more");
        }
        Err(UnitError::Stale) => queue::release(&*ctx.store, claim).await,
        Err(UnitError::Failed(kind, msg)) => {
            if let Err(e) = failed(ctx, claim, *kind, msg).await {
                tracing::warn!(job = %claim.job, task = %claim.task, error = ?e, "could not record the failure");
            }
        }
    }
    result
}

/// Records a failed attempt: a retry after its backoff, or the job's failure.
async fn failed(ctx: &Ctx, claim: &Claim, kind: Failure, msg: &str) -> Result<(), UnitError> {
    let (mut task, _) = queue::get_task(&*ctx.store, &claim.job, &claim.task).await?;
    let step = match claim.task.as_str() {
        schedule::PLAN => "probing the source".to_owned(),
        schedule::PUBLISH => "publishing".to_owned(),
        "audio" => "encoding the audio".to_owned(),
        n => format!("encoding video run {n}"),
    };
    match ctx.cfg.retry.after(task.attempts, kind, now_ms()) {
        AfterFailure::Retry {
            attempts,
            not_before_ms,
        } => {
            tracing::warn!(job = %claim.job, task = %claim.task, attempts, error = msg, "attempt failed; will retry");
            ctx.metrics.retried();
            task.attempts = attempts;
            task.not_before_ms = not_before_ms;
            task.error = Some(msg.to_owned());
            task.worker = Some(ctx.cfg.name.clone());
            task.state = TaskState::Pending;
            queue::put_task(&*ctx.store, claim, &task, true).await?;
        }
        AfterFailure::FailJob => {
            let tries = task.attempts + 1;
            let reason = if kind == Failure::Permanent {
                format!("{step}: {msg}")
            } else {
                format!("{step} failed {tries} times; the last error: {msg}")
            };
            tracing::warn!(job = %claim.job, task = %claim.task, reason, "job failed");
            let key = claim.key();
            queue::update_job(
                &*ctx.store,
                claim,
                |d| {
                    if d.state.is_final() {
                        return false;
                    }
                    d.state = JobState::Failed;
                    d.error = Some(reason.clone());
                    true
                },
                || (Vec::new(), vec![Op::delete(key.clone())]),
            )
            .await?;
            ctx.metrics.job_final(JobState::Failed);
            if let Ok(p) = ObjectKey::new(&ctx.staging(&claim.job)) {
                let _ = ctx.origin.delete_prefix(&p).await;
            }
            // A failed job keeps no task records: resubmitting it starts from nothing.
            if let Ok(records) = job::tasks(&*ctx.store, &claim.job).await {
                for (n, _, v) in records {
                    let _ = ctx.store.delete(&job::task_key(&claim.job, &n), v).await;
                }
            }
        }
    }
    Ok(())
}

/// The plan step: probe, split, record the plan.
async fn plan(ctx: &Ctx, claim: &Claim) -> Result<(), UnitError> {
    let doc = queue::update_job(
        &*ctx.store,
        claim,
        |d| {
            if d.state == JobState::Queued {
                d.state = JobState::Probing;
                true
            } else {
                false
            }
        },
        || (Vec::new(), Vec::new()),
    )
    .await?;
    if doc.state != JobState::Probing {
        return Err(UnitError::Stale);
    }
    if doc.ladder != "default" {
        return Err(UnitError::Failed(
            Failure::Permanent,
            format!(
                "this farm has no ladder preset {:?}; submit with the \"default\" ladder",
                doc.ladder
            ),
        ));
    }
    let name = source::describe(&doc.source);
    let (input, sha) = ctx.source(&doc).await.map_err(UnitError::source)?;
    let prepared = segmented::prepare(&input, &ctx.cfg.ladder, ctx.cfg.segments_per_task)
        .await
        .map_err(|e| UnitError::transcode(e, &input, &name))?;
    // A job run again starts clean: earlier task records and staged parts go.
    let stale = job::tasks(&*ctx.store, &claim.job)
        .await
        .map_err(QueueError::from)?;
    for chunk in stale.chunks(64) {
        let ops = chunk
            .iter()
            .filter(|(n, _, _)| n != schedule::PLAN)
            .map(|(n, _, _)| Op::delete(job::task_key(&claim.job, n)))
            .collect::<Vec<_>>();
        if !ops.is_empty() {
            ctx.store
                .txn(&[claim.guard()], ops)
                .await
                .map_err(|e| claim.classify(e))?;
        }
    }
    if let Ok(p) = ObjectKey::new(&ctx.staging(&claim.job)) {
        ctx.origin.delete_prefix(&p).await.map_err(|e| {
            UnitError::Failed(Failure::Transient, format!("clearing staged parts: {e}"))
        })?;
    }
    let plan = serde_json::to_value(&prepared).expect("a plan serialises");
    let key = claim.key();
    let plan_key = job::task_key(&claim.job, schedule::PLAN);
    queue::update_job(
        &*ctx.store,
        claim,
        |d| {
            d.state = JobState::Transcoding;
            d.farm.plan = Some(plan.clone());
            d.farm.segments_total = prepared.planned_segments();
            d.farm.summary = Some(prepared.summary());
            d.farm.transcoding_since_ms = Some(now_ms());
            d.progress = 0.0;
            d.extra
                .insert("content_sha256".to_owned(), sha.clone().into());
            true
        },
        || {
            (
                Vec::new(),
                vec![Op::delete(plan_key.clone()), Op::delete(key.clone())],
            )
        },
    )
    .await?;
    tracing::info!(job = %claim.job, plan = %prepared.summary(), parts = prepared.parts().len(), "job planned");
    Ok(())
}

/// Encodes one part, stages its files in origin storage, records its output.
async fn encode(ctx: &Ctx, claim: &Claim, name: &str) -> Result<(), UnitError> {
    let (doc, _) = job::get(&*ctx.store, &claim.job)
        .await
        .map_err(QueueError::from)?
        .ok_or(UnitError::Stale)?;
    if doc.state != JobState::Transcoding {
        return Err(UnitError::Stale);
    }
    let prepared: Prepared = doc
        .farm
        .plan
        .as_ref()
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .ok_or_else(|| {
            UnitError::Failed(Failure::Permanent, "the job's plan is unreadable".into())
        })?;
    let part = parse_part(name).ok_or(UnitError::Stale)?;
    let planned_segments = match part {
        Part::Audio => 0,
        Part::Video(n) => {
            let run = prepared.runs.get(n as usize).ok_or(UnitError::Stale)?;
            run.segments.unwrap_or_else(|| {
                prepared
                    .planned_segments()
                    .saturating_sub(run.first_segment)
                    .max(1)
            })
        }
    };
    let source_name = source::describe(&doc.source);
    let (input, _) = ctx.source(&doc).await.map_err(UnitError::source)?;
    let (mut record, _) = queue::get_task(&*ctx.store, &claim.job, name).await?;
    record.segments = planned_segments;
    record.worker = Some(ctx.cfg.name.clone());
    let out_dir = ctx
        .job_dir(&claim.job)
        .join(format!("{name}-{}", claim.token));
    let _ = tokio::fs::remove_dir_all(&out_dir).await;
    let shared = Arc::new(Mutex::new((0.0f64, 0.0f64)));
    let seen = Arc::clone(&shared);
    let t0 = std::time::Instant::now();
    let encoding = segmented::encode_part(
        &input,
        &prepared,
        part,
        &ctx.cfg.ladder,
        &out_dir,
        move |p| {
            let mut s = seen.lock().expect("progress");
            *s = (p.fraction().unwrap_or(0.0), p.encoded.as_secs_f64());
        },
    );
    tokio::pin!(encoding);
    let mut tick = tokio::time::interval(ctx.cfg.progress_interval);
    tick.tick().await;
    let output = loop {
        tokio::select! {
            r = &mut encoding => break r,
            _ = tick.tick() => {
                let (fraction, secs) = *shared.lock().expect("progress");
                record.segments_done = (fraction * planned_segments as f64).floor() as u64;
                record.encoded_secs = if part == Part::Audio { 0.0 } else { secs };
                queue::put_task(&*ctx.store, claim, &record, false).await?;
            }
        }
    };
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&out_dir).await;
            return Err(UnitError::transcode(e, &input, &source_name));
        }
    };
    ctx.metrics
        .encoded(output.media_secs, t0.elapsed().as_secs_f64());
    let staged = format!("{}/{name}-{}", ctx.staging(&claim.job), claim.token);
    for t in &output.tracks {
        for rel in t.files() {
            let path = out_dir.join(&rel);
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                UnitError::Failed(Failure::Transient, format!("{}: {e}", path.display()))
            })?;
            let key = ObjectKey::new(&format!("{staged}/{rel}")).map_err(|e| {
                UnitError::Failed(
                    Failure::Permanent,
                    format!("staging key {staged}/{rel}: {e}"),
                )
            })?;
            ctx.origin.put(&key, bytes.into()).await.map_err(|e| {
                UnitError::Failed(Failure::Transient, format!("staging {key}: {e}"))
            })?;
        }
    }
    let made: u64 = output.tracks.first().map_or(0, |t| t.segments.len() as u64);
    record.state = TaskState::Done;
    if part != Part::Audio {
        record.segments = made;
        record.segments_done = made;
        record.encoded_secs = output.media_secs;
    }
    record.error = None;
    record.staged = Some(staged);
    record.output = Some(serde_json::to_value(&output).expect("an output serialises"));
    queue::put_task(&*ctx.store, claim, &record, true).await?;
    let _ = tokio::fs::remove_dir_all(&out_dir).await;
    tracing::info!(job = %claim.job, task = name, segments = made, media_secs = output.media_secs, "part encoded");
    Ok(())
}

/// Removes the scratch folders of jobs that ended and have no unit running here.
async fn clean_scratch(
    ctx: &Ctx,
    views: &[(JobView, BTreeMap<String, i64>)],
    running: &HashMap<(JobId, String), (Claim, tokio::task::AbortHandle)>,
) {
    for (v, _) in views {
        if !v.doc.state.is_final() || running.keys().any(|(j, _)| *j == v.doc.id) {
            continue;
        }
        let dir = ctx.job_dir(&v.doc.id);
        if tokio::fs::metadata(&dir).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            ctx.fetches.lock().expect("fetch locks").remove(&v.doc.id);
        }
    }
}
