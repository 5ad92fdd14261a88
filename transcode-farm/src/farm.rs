//! The transcode farm around the core: a queue of jobs on the state store, workers that
//! claim its tasks under a lease with fencing, segment-parallel encoding of each job's
//! parts on any worker, and exactly-once publishing to origin storage.
//!
//! A job goes `queued` -> `probing` (the `plan` task: probe and split) -> `transcoding`
//! (one task per part: the audio, and each run of whole video segments) -> `packaging`
//! and `publishing` (the `publish` task: stitch, write, switch the asset record) ->
//! `done`, or `failed` with a reason, or `cancelled`. [`schedule`] is the pure core that
//! says what work there is; [`queue`] holds the fenced store operations; [`worker::run`]
//! is the worker loop. See docs/FARM.md.

use prometheus::{CounterVec, Encoder, IntCounter, Opts, Registry, TextEncoder};
use streamgate_control::job::JobState;

pub mod admin;
mod config;
mod publish;
pub mod queue;
pub mod schedule;
pub mod source;
pub mod worker;

pub use worker::{WorkerConfig, WorkerError, run};

/// The farm's metrics (served on the farm admin port, 9102).
#[derive(Debug)]
pub struct FarmMetrics {
    registry: Registry,
    claims: IntCounter,
    retries: IntCounter,
    leases_lost: IntCounter,
    jobs: CounterVec,
    media_secs: prometheus::Counter,
    encode_secs: prometheus::Counter,
}

impl Default for FarmMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl FarmMetrics {
    /// A fresh set, registered in its own registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let float = |name: &str, help: &str| {
            let c = prometheus::Counter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let claims = counter(
            "streamgate_farm_claims_total",
            "Tasks claimed by this process.",
        );
        let retries = counter(
            "streamgate_farm_task_retries_total",
            "Failed task attempts that will be tried again.",
        );
        let leases_lost = counter(
            "streamgate_farm_leases_lost_total",
            "Times the worker's lease may have expired (every unit was stopped).",
        );
        let jobs = CounterVec::new(
            Opts::new(
                "streamgate_farm_jobs_total",
                "Jobs this process brought to a final state, by state.",
            ),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(jobs.clone()))
            .expect("unique metric");
        let media_secs = float(
            "streamgate_farm_encoded_media_seconds_total",
            "Seconds of media encoded by this process's parts.",
        );
        let encode_secs = float(
            "streamgate_farm_encode_seconds_total",
            "Wall-clock seconds spent encoding parts.",
        );
        Self {
            registry,
            claims,
            retries,
            leases_lost,
            jobs,
            media_secs,
            encode_secs,
        }
    }

    pub(crate) fn claimed(&self) {
        self.claims.inc();
    }

    pub(crate) fn retried(&self) {
        self.retries.inc();
    }

    pub(crate) fn lease_lost(&self) {
        self.leases_lost.inc();
    }

    pub(crate) fn job_final(&self, state: JobState) {
        self.jobs.with_label_values(&[state.as_str()]).inc();
    }

    pub(crate) fn encoded(&self, media_secs: f64, wall_secs: f64) {
        self.media_secs.inc_by(media_secs.max(0.0));
        self.encode_secs.inc_by(wall_secs.max(0.0));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        buf
    }
}
