//! `streamgate ctl job list|get|watch|cancel|submit`: transcode jobs over `JobService`.
//!
//! `watch` draws a progress bar on a terminal (one line per change otherwise, or one JSON
//! object per line with `-o json`) and exits 0 when the job is done, 1 when it failed or
//! was cancelled, printing the reason.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};
use streamgate_proto::control::v1 as pb;

use super::client::{CtlError, Result, connect};
use super::{Global, Output};

#[derive(Subcommand)]
pub(crate) enum JobCmd {
    /// List jobs (newest state of each), optionally only those in one state or of one asset.
    List {
        /// Only jobs in this state (queued, probing, transcoding, packaging, publishing,
        /// done, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this asset.
        #[arg(long)]
        asset: Option<String>,
    },
    /// Show one job.
    Get {
        /// Job id.
        id: String,
    },
    /// Follow a job until it is done, failed or cancelled.
    Watch {
        /// Job id.
        id: String,
    },
    /// Cancel a job: its workers stop (ffmpeg is killed) and nothing is published.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Transcode a source already in origin storage (a key), an s3:// or an https:// URL.
    Submit {
        /// The source.
        source: String,
        /// The asset id to publish as.
        #[arg(long)]
        asset: String,
        /// The policy to bind the asset to.
        #[arg(long)]
        policy: Option<String>,
        /// The ladder preset.
        #[arg(long, default_value = "default")]
        ladder: String,
        /// The source's SHA-256 (hex), to make the job content-addressed.
        #[arg(long)]
        sha256: Option<String>,
        /// Higher runs first.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Follow the job to its end, as `job watch` does.
        #[arg(long)]
        wait: bool,
    },
}

/// The JSON form of a job (`progress` 0 to 1).
pub(crate) fn job_json(j: &pb::Job) -> Value {
    json!({
        "id": j.id,
        "asset": j.asset,
        "state": j.state,
        "progress": j.progress,
        "segments_done": j.segments_done,
        "segments_total": j.segments_total,
        "speed": j.speed,
        "error": j.error,
        "policy": j.policy,
        "ladder": j.ladder,
        "source": j.source,
        "source_sha256": j.source_sha256,
        "priority": j.priority,
        "actor": j.actor,
        "origin_prefix": j.origin_prefix,
        "created_at": j.created_at,
        "updated_at": j.updated_at,
        "version": j.version,
    })
}

/// `[#######.............]  35%`, `width` cells of bar.
pub(crate) fn bar(progress: f64, width: usize) -> String {
    let p = if progress.is_finite() {
        progress.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = (p * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        (p * 100.0).floor() as u32
    )
}

/// One status line: state, bar, segments and speed while transcoding.
pub(crate) fn status_line(j: &pb::Job) -> String {
    let mut s = format!("{:<11} {}", j.state, bar(j.progress, 30));
    if j.segments_total > 0 && !matches!(j.state.as_str(), "done" | "failed" | "cancelled") {
        s.push_str(&format!(
            "  {}/{} segments",
            j.segments_done, j.segments_total
        ));
    }
    if j.speed > 0.0 && j.state == "transcoding" {
        s.push_str(&format!("  {:.2}x realtime", j.speed));
    }
    s
}

fn is_final(state: &str) -> bool {
    matches!(state, "done" | "failed" | "cancelled")
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialise")
    );
}

fn describe(j: &pb::Job) {
    let rows = [
        ("id", j.id.clone()),
        ("asset", j.asset.clone()),
        ("policy", j.policy.clone()),
        ("state", j.state.clone()),
        ("progress", bar(j.progress, 30)),
        (
            "segments",
            format!("{}/{}", j.segments_done, j.segments_total),
        ),
        ("speed", format!("{:.2}x realtime", j.speed)),
        ("source", j.source.clone()),
        ("sha256", j.source_sha256.clone()),
        ("ladder", j.ladder.clone()),
        ("priority", j.priority.to_string()),
        ("published", j.origin_prefix.clone()),
        ("submitted", format!("{} by {}", j.created_at, j.actor)),
        ("updated", j.updated_at.clone()),
        ("error", j.error.clone()),
    ];
    for (k, v) in rows {
        if !v.is_empty() {
            println!("{k:<10} {v}");
        }
    }
}

/// Follows job `id`; the exit code says how it ended.
pub(crate) async fn watch(
    jobs: &mut pb::job_service_client::JobServiceClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            super::client::Bearer,
        >,
    >,
    id: &str,
    out: Output,
) -> Result<ExitCode> {
    let mut stream = jobs
        .watch(pb::WatchJobRequest { id: id.to_owned() })
        .await?
        .into_inner();
    let tty = std::io::stderr().is_terminal();
    let mut last: Option<pb::Job> = None;
    while let Some(j) = stream.message().await? {
        match out {
            Output::Json => println!("{}", job_json(&j)),
            Output::Human if tty => {
                let mut e = std::io::stderr();
                let _ = write!(e, "\r\x1b[2K{}", status_line(&j));
                let _ = e.flush();
            }
            Output::Human => eprintln!("{}", status_line(&j)),
        }
        let end = is_final(&j.state);
        last = Some(j);
        if end {
            break;
        }
    }
    if tty && out == Output::Human {
        eprintln!();
    }
    let Some(j) = last else {
        return Err(CtlError::Unreachable(
            "the watch ended before any update".into(),
        ));
    };
    if !is_final(&j.state) {
        return Err(CtlError::Unreachable(
            "the watch ended before the job did; run `ctl job watch` again".into(),
        ));
    }
    if j.state == "done" {
        if out == Output::Human {
            println!(
                "job {} done: asset {} published at {}",
                j.id, j.asset, j.origin_prefix
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("job {} {}: {}", j.id, j.state, j.error);
        Ok(ExitCode::FAILURE)
    }
}

pub(crate) async fn run(g: &Global, cmd: JobCmd) -> Result<ExitCode> {
    let out = g.output;
    let mut jobs = connect(g).await?.jobs;
    match cmd {
        JobCmd::List { state, asset } => {
            let r = jobs
                .list(pb::ListJobsRequest {
                    state: state.unwrap_or_default(),
                    asset: asset.unwrap_or_default(),
                })
                .await?
                .into_inner();
            match out {
                Output::Json => print_json(&Value::Array(r.jobs.iter().map(job_json).collect())),
                Output::Human => {
                    println!("{:<33}  {:<20}  STATUS", "ID", "ASSET");
                    for j in &r.jobs {
                        println!("{:<33}  {:<20}  {}", j.id, j.asset, status_line(j));
                    }
                }
            }
        }
        JobCmd::Get { id } => {
            let j = jobs
                .get(pb::GetJobRequest { id })
                .await?
                .into_inner()
                .job
                .unwrap_or_default();
            match out {
                Output::Json => print_json(&job_json(&j)),
                Output::Human => describe(&j),
            }
        }
        JobCmd::Watch { id } => return watch(&mut jobs, &id, out).await,
        JobCmd::Cancel { id } => {
            let j = jobs
                .cancel(pb::CancelJobRequest { id })
                .await?
                .into_inner()
                .job
                .unwrap_or_default();
            match out {
                Output::Json => print_json(&job_json(&j)),
                Output::Human => println!("job {} {}", j.id, j.state),
            }
        }
        JobCmd::Submit {
            source,
            asset,
            policy,
            ladder,
            sha256,
            priority,
            wait,
        } => {
            let r = jobs
                .submit(pb::SubmitJobRequest {
                    asset,
                    policy: policy.unwrap_or_default(),
                    ladder,
                    source,
                    sha256: sha256.unwrap_or_default(),
                    priority,
                })
                .await?
                .into_inner();
            let j = r.job.unwrap_or_default();
            match out {
                Output::Json if !wait => print_json(&json!({
                    "job": job_json(&j), "created": r.created, "requeued": r.requeued,
                })),
                Output::Json => {}
                Output::Human => {
                    let what = if r.created {
                        "submitted"
                    } else if r.requeued {
                        "queued again (it had failed or was cancelled)"
                    } else {
                        "exists already (the same source and ladder)"
                    };
                    println!("job {} {what}: {}", j.id, j.state);
                }
            }
            if wait {
                return watch(&mut jobs, &j.id, out).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_and_clamp() {
        assert_eq!(bar(0.0, 10), "[..........]   0%");
        assert_eq!(bar(0.456, 10), "[#####.....]  45%");
        assert_eq!(bar(1.0, 10), "[##########] 100%");
        assert_eq!(bar(7.0, 4), "[####] 100%");
        assert_eq!(bar(f64::NAN, 4), "[....]   0%");
    }

    #[test]
    fn status_lines_show_segments_and_speed_while_transcoding() {
        let j = pb::Job {
            state: "transcoding".into(),
            progress: 0.45,
            segments_done: 9,
            segments_total: 19,
            speed: 1.83,
            ..Default::default()
        };
        let s = status_line(&j);
        assert!(
            s.contains("9/19 segments") && s.contains("1.83x realtime"),
            "{s}"
        );
        let done = pb::Job {
            state: "done".into(),
            progress: 1.0,
            ..j
        };
        assert!(!status_line(&done).contains("segments"));
    }
}
