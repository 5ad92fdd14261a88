//! The farm's pure scheduling core: from the jobs, task records and claims read at one
//! instant, what work is there to take, in which order, and what a failure leads to.
//! No I/O and no clock: the caller passes `now_ms` (Unix milliseconds).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use streamgate_control::job::{JobDoc, JobId, JobState, TaskDoc, TaskState};

/// The task name of the once-only planning step (probe, split).
pub const PLAN: &str = "plan";
/// The task name of the once-only publishing step (stitch, write, register).
pub const PUBLISH: &str = "publish";

/// One unit of work a worker can claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Probe the source and split the job into parts.
    Plan,
    /// Encode one part (`audio` or a video run's number).
    Part(String),
    /// Stitch, write to origin storage, register the asset.
    Publish,
}

impl Work {
    /// The task name its claim and record use.
    pub fn task(&self) -> &str {
        match self {
            Self::Plan => PLAN,
            Self::Part(p) => p,
            Self::Publish => PUBLISH,
        }
    }
}

/// One job as read: its document, the names of its parts (from its plan, in order), its
/// task records and which of its tasks are claimed.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The document.
    pub doc: JobDoc,
    /// Part names in encoding order (empty until planned).
    pub parts: Vec<String>,
    /// Task records by task name.
    pub tasks: BTreeMap<String, TaskDoc>,
    /// Claimed task names.
    pub claims: BTreeSet<String>,
}

impl JobView {
    fn available(&self, task: &str, now_ms: u64) -> bool {
        if self.claims.contains(task) {
            return false;
        }
        match self.tasks.get(task) {
            Some(t) => t.state != TaskState::Done && t.not_before_ms <= now_ms,
            None => true,
        }
    }

    /// Whether every part is encoded.
    pub fn all_parts_done(&self) -> bool {
        !self.parts.is_empty()
            && self.parts.iter().all(|p| {
                self.tasks
                    .get(p)
                    .is_some_and(|t| t.state == TaskState::Done)
            })
    }
}

/// The work there is to take, best first: higher priority first, then older jobs, and
/// within a job in part order (the audio, then the runs in order).
pub fn pick(jobs: &[JobView], now_ms: u64) -> Vec<(JobId, Work)> {
    let mut order: Vec<&JobView> = jobs.iter().filter(|j| !j.doc.state.is_final()).collect();
    order.sort_by(|a, b| {
        b.doc
            .priority
            .cmp(&a.doc.priority)
            .then_with(|| a.doc.created_at.cmp(&b.doc.created_at))
            .then_with(|| a.doc.id.cmp(&b.doc.id))
    });
    let mut out = Vec::new();
    for j in order {
        let id = &j.doc.id;
        match j.doc.state {
            JobState::Queued | JobState::Probing => {
                if j.available(PLAN, now_ms) {
                    out.push((id.clone(), Work::Plan));
                }
            }
            JobState::Transcoding => {
                for p in &j.parts {
                    if j.available(p, now_ms) {
                        out.push((id.clone(), Work::Part(p.clone())));
                    }
                }
                if j.all_parts_done() && j.available(PUBLISH, now_ms) {
                    out.push((id.clone(), Work::Publish));
                }
            }
            // A publisher that died is replaced once its claim is gone.
            JobState::Packaging | JobState::Publishing => {
                if j.available(PUBLISH, now_ms) {
                    out.push((id.clone(), Work::Publish));
                }
            }
            JobState::Done | JobState::Failed | JobState::Cancelled => {}
        }
    }
    out
}

/// Whether a failure can be mended by trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The source itself is the problem (not a video, truncated, too small): every try
    /// would fail the same way.
    Permanent,
    /// Anything else: a tool that crashed, storage that failed, a full disk.
    Transient,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Record the attempt; any worker may try again from `not_before_ms`.
    Retry {
        /// Attempts so far, this one included.
        attempts: u32,
        /// The backoff's end.
        not_before_ms: u64,
    },
    /// Fail the job with the error.
    FailJob,
}

/// Retry policy: `max_attempts` tries in all, waiting `base` x 2^(n-1) after the n-th
/// failure, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all before the job fails.
    pub max_attempts: u32,
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
}

impl Retry {
    /// What follows a failure of kind `kind` of a task that had failed `attempts` times
    /// before, at `now_ms`.
    pub fn after(&self, attempts: u32, kind: Failure, now_ms: u64) -> AfterFailure {
        let attempts = attempts.saturating_add(1);
        if kind == Failure::Permanent || attempts >= self.max_attempts.max(1) {
            return AfterFailure::FailJob;
        }
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let wait = self.base.saturating_mul(factor).min(self.cap);
        AfterFailure::Retry {
            attempts,
            not_before_ms: now_ms
                .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_control::job::JobSource;

    fn view(n: u8, state: JobState, priority: i32, created: &str) -> JobView {
        JobView {
            doc: JobDoc {
                id: JobId::derive(&[n; 32], "default"),
                asset: format!("a{n}"),
                policy: None,
                ladder: "default".into(),
                source: JobSource::Origin {
                    key: "in.mp4".into(),
                },
                source_sha256: String::new(),
                filename: None,
                priority,
                state,
                progress: 0.0,
                error: None,
                actor: "t".into(),
                created_at: created.into(),
                updated_at: created.into(),
                farm: Default::default(),
                extra: Default::default(),
            },
            parts: Vec::new(),
            tasks: BTreeMap::new(),
            claims: BTreeSet::new(),
        }
    }

    fn done() -> TaskDoc {
        TaskDoc {
            state: TaskState::Done,
            ..TaskDoc::new()
        }
    }

    #[test]
    fn higher_priority_then_older_jobs_come_first() {
        let jobs = [
            view(1, JobState::Queued, 0, "2026-01-02"),
            view(2, JobState::Queued, 5, "2026-01-03"),
            view(3, JobState::Queued, 0, "2026-01-01"),
            view(4, JobState::Done, 9, "2026-01-01"),
        ];
        let picked: Vec<String> = pick(&jobs, 0)
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        let want: Vec<String> = [2u8, 3, 1]
            .iter()
            .map(|n| JobId::derive(&[*n; 32], "default").to_string())
            .collect();
        assert_eq!(picked, want);
    }

    #[test]
    fn claimed_done_and_backed_off_parts_are_not_offered() {
        let mut j = view(1, JobState::Transcoding, 0, "t");
        j.parts = ["audio", "0", "1", "2"].map(String::from).to_vec();
        j.tasks.insert("audio".into(), done());
        j.claims.insert("0".into());
        j.tasks.insert(
            "1".into(),
            TaskDoc {
                not_before_ms: 5_000,
                attempts: 1,
                ..TaskDoc::new()
            },
        );
        let at = |now| -> Vec<Work> {
            pick(std::slice::from_ref(&j), now)
                .into_iter()
                .map(|(_, w)| w)
                .collect()
        };
        assert_eq!(at(1_000), [Work::Part("2".into())]);
        assert_eq!(at(5_000), [Work::Part("1".into()), Work::Part("2".into())]);
    }

    #[test]
    fn publishing_follows_the_last_part_and_a_dead_publisher_is_replaced() {
        let mut j = view(1, JobState::Transcoding, 0, "t");
        j.parts = ["audio", "0"].map(String::from).to_vec();
        j.tasks.insert("audio".into(), done());
        assert_eq!(
            pick(std::slice::from_ref(&j), 0),
            [(j.doc.id.clone(), Work::Part("0".into()))]
        );
        j.tasks.insert("0".into(), done());
        assert_eq!(
            pick(std::slice::from_ref(&j), 0),
            [(j.doc.id.clone(), Work::Publish)]
        );
        j.doc.state = JobState::Publishing;
        j.claims.insert(PUBLISH.into());
        assert!(
            pick(std::slice::from_ref(&j), 0).is_empty(),
            "one publisher at a time"
        );
        j.claims.clear();
        assert_eq!(
            pick(std::slice::from_ref(&j), 0),
            [(j.doc.id.clone(), Work::Publish)]
        );
    }

    #[test]
    fn queued_jobs_are_planned_once() {
        let mut j = view(1, JobState::Queued, 0, "t");
        assert_eq!(pick(std::slice::from_ref(&j), 0)[0].1, Work::Plan);
        j.claims.insert(PLAN.into());
        assert!(pick(std::slice::from_ref(&j), 0).is_empty());
    }

    #[test]
    fn failures_back_off_then_fail_the_job() {
        let r = Retry {
            max_attempts: 3,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(3),
        };
        assert_eq!(
            r.after(0, Failure::Transient, 1_000),
            AfterFailure::Retry {
                attempts: 1,
                not_before_ms: 3_000
            }
        );
        assert_eq!(
            r.after(1, Failure::Transient, 1_000),
            AfterFailure::Retry {
                attempts: 2,
                not_before_ms: 4_000
            },
            "capped"
        );
        assert_eq!(r.after(2, Failure::Transient, 0), AfterFailure::FailJob);
        assert_eq!(r.after(0, Failure::Permanent, 0), AfterFailure::FailJob);
    }
}
