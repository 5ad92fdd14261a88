//! The farm's faults on a real etcd, with `streamgate transcode` worker processes and the
//! real ffmpeg: a worker killed with SIGKILL mid-task is replaced once its lease expires;
//! etcd stopped for 20 s mid-job loses no job and publishes once; two workers racing for
//! one task: only the claim holder's commit lands (fencing).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Proc;
use streamgate_control::job::{self, JobDoc, JobId, JobSource, JobState, TaskDoc, TaskState};
use streamgate_control::store::etcd::EtcdStore;
use streamgate_control::store::{Event, PREFIX, Store};
use streamgate_store::testkit::start_etcd;
use streamgate_transcode::farm::queue::{self, QueueError};
use streamgate_transcode::verify_output;

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is not installed: run ./scripts/setup.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pattern(path: &Path, secs: u32, size: &str) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=48000",
        "-t",
        &secs.to_string(),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "30",
        "-c:a",
        "aac",
        "-movflags",
        "+faststart",
        path.to_str().unwrap(),
    ]);
}

struct Farm {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Farm {
    fn origin(&self) -> PathBuf {
        self.dir.path().join("origin")
    }

    /// A `streamgate transcode` process running one worker named `name`.
    fn worker(&self, name: &str, concurrency: u32) -> Proc {
        self.worker_with_admin(name, concurrency, common::free_port())
    }

    /// As [`Farm::worker`], with the farm admin port on `admin`.
    fn worker_with_admin(&self, name: &str, concurrency: u32, admin: u16) -> Proc {
        let cfg = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                r#"
[transcode]
store = "etcd"
etcd_endpoints = ["{endpoint}"]
data_dir = "{data}"

[transcode.worker]
name = "{name}"
concurrency = {concurrency}
lease_ttl = "3s"
segments_per_task = 2
x264_preset = "superfast"
threads = 1
retry_backoff = "200ms"
progress_interval = "500ms"
poll_interval = "500ms"
admin_listen = "127.0.0.1:{admin}"

[origin]
kind = "fs"
root = "{origin}"
"#,
                endpoint = self.endpoint,
                data = self.dir.path().join(name).display(),
                origin = self.origin().display(),
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["transcode", "--config"])
            .arg(&cfg)
            .env("STREAMGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap();
        Proc(child)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// Stages `src` in origin storage and submits it as `asset`.
async fn submit(store: &dyn Store, farm: &Farm, asset: &str, src: &Path) -> JobId {
    let bytes = std::fs::read(src).unwrap();
    let key = format!("in/{asset}.mp4");
    let to = farm.origin().join(&key);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::write(&to, &bytes).unwrap();
    let mut d = [0u8; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    let doc = JobDoc {
        id: JobId::derive(&d, "default"),
        asset: asset.into(),
        policy: None,
        ladder: "default".into(),
        source: JobSource::Origin { key },
        source_sha256: d.iter().map(|b| format!("{b:02x}")).collect(),
        filename: None,
        priority: 0,
        state: JobState::Queued,
        progress: 0.0,
        error: None,
        actor: "tester".into(),
        created_at: "2026-12-03T00:00:00Z".into(),
        updated_at: "2026-12-03T00:00:00Z".into(),
        farm: Default::default(),
        extra: Default::default(),
    };
    job::submit(store, doc).await.unwrap().doc.id
}

/// Polls `get` until it is `Some`, at most `limit`.
async fn until<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut get: impl FnMut() -> F,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = get().await {
            return v;
        }
        assert!(t0.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn final_doc(store: &dyn Store, id: &JobId, limit: Duration) -> JobDoc {
    until(limit, "the job ends", || async {
        job::get(store, id)
            .await
            .ok()
            .flatten()
            .map(|(d, _)| d)
            .filter(|d| d.state.is_final())
    })
    .await
}

/// Every claim ever written for `id` (etcd's history): (task, worker), in order.
async fn claim_history(store: &dyn Store, id: &JobId) -> Vec<(String, String)> {
    let prefix = format!("{PREFIX}claims/{id}/");
    let mut w = store.watch(&prefix, 0).await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(Ok(batch))) =
        tokio::time::timeout(Duration::from_millis(500), futures::StreamExt::next(&mut w)).await
    {
        for e in batch.events {
            if let Event::Put { key, value, .. } = e {
                let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
                out.push((
                    key[prefix.len()..].to_owned(),
                    v["worker"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    out
}

async fn audit_actions(store: &dyn Store, target: &str) -> Vec<String> {
    let (items, _) = store.list(&format!("{PREFIX}audit/")).await.unwrap();
    items
        .iter()
        .filter_map(|(_, v)| {
            let e: serde_json::Value = serde_json::from_slice(&v.value).ok()?;
            (e["target"] == target).then(|| e["action"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn setup() -> (Farm, streamgate_store::testkit::Etcd) {
    let etcd = start_etcd();
    let farm = Farm {
        dir: tempfile::tempdir().unwrap(),
        endpoint: etcd.endpoint.clone(),
    };
    (farm, etcd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_is_replaced_after_its_lease_expires() {
    let (farm, _etcd) = setup();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&farm.endpoint))
            .await
            .unwrap(),
    );
    let src = farm.dir.path().join("a.mp4");
    pattern(&src, 24, "1280x720");
    let id = submit(&*store, &farm, "killed", &src).await;
    let mut a = farm.worker("wa", 1);
    // Wait until A encodes a video run (not the plan, not the quick audio part).
    let (task, _) = until(
        Duration::from_secs(60),
        "worker A claims a video run",
        || async {
            let (claims, _) = store.list(&job::claims_prefix()).await.ok()?;
            claims.into_iter().find_map(|(k, v)| {
                let t = k.rsplit('/').next()?.to_owned();
                let w: serde_json::Value = serde_json::from_slice(&v.value).ok()?;
                (t.parse::<u32>().is_ok() && w["worker"] == "wa").then_some((t, w))
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SIGKILL: no cleanup, no revoke; its claim lives until the lease's TTL runs out.
    a.0.kill().unwrap();
    let _ = a.0.wait();
    let killed_at = Instant::now();
    let b_admin = common::free_port();
    let _b = farm.worker_with_admin("wb", 2, b_admin);
    let done = final_doc(&*store, &id, Duration::from_secs(180)).await;
    assert_eq!(
        done.state,
        JobState::Done,
        "{:?}\n{}",
        done.error,
        farm.log("wb")
    );
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "B could only take over after the TTL"
    );
    let history = claim_history(&*store, &id).await;
    assert!(
        history.contains(&(task.clone(), "wa".into())),
        "{history:?}"
    );
    assert!(
        history.contains(&(task.clone(), "wb".into())),
        "B redid task {task}: {history:?}"
    );
    assert_eq!(
        audit_actions(&*store, "assets/killed").await,
        ["asset.publish"],
        "published once"
    );
    verify_output(&farm.origin().join(format!("killed/{id}")))
        .expect("the published asset verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_for_20s_mid_job_loses_nothing_and_publishes_once() {
    let (farm, mut etcd) = setup();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&farm.endpoint))
            .await
            .unwrap(),
    );
    let src = farm.dir.path().join("b.mp4");
    pattern(&src, 30, "1280x720");
    let id = submit(&*store, &farm, "outage", &src).await;
    let _a = farm.worker("wa", 1);
    let _b = farm.worker("wb", 1);
    until(
        Duration::from_secs(60),
        "transcoding with a part done",
        || async {
            let (doc, _) = job::get(&*store, &id).await.ok()??;
            let tasks = job::tasks(&*store, &id).await.ok()?;
            (doc.state == JobState::Transcoding
                && tasks.iter().any(|(_, t, _)| t.state == TaskState::Done))
            .then_some(())
        },
    )
    .await;
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    etcd.start();
    let done = final_doc(&*store, &id, Duration::from_secs(240)).await;
    assert_eq!(
        done.state,
        JobState::Done,
        "{:?}\n{}\n{}",
        done.error,
        farm.log("wa"),
        farm.log("wb")
    );
    assert_eq!(
        audit_actions(&*store, "assets/outage").await,
        ["asset.publish"],
        "published once"
    );
    let rec = store
        .get(&format!("{PREFIX}assets/outage"))
        .await
        .unwrap()
        .unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
    assert_eq!(rec["origin_prefix"], format!("outage/{id}"));
    verify_output(&farm.origin().join(format!("outage/{id}"))).unwrap();
    // The workers noticed: their leases were lost and they stopped their units.
    let logs = farm.log("wa") + &farm.log("wb");
    assert!(logs.contains("lease lost"), "{logs}");
}

#[tokio::test]
async fn two_workers_race_for_one_task_and_only_the_holder_commits() {
    let etcd = start_etcd();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
            .await
            .unwrap(),
    );
    let id = JobId::derive(&[7; 32], "default");
    let (la, lb) = (
        store.grant(Duration::from_secs(30)).await.unwrap(),
        store.grant(Duration::from_secs(30)).await.unwrap(),
    );
    // Both claim at once: exactly one gets it.
    let (ca, cb) = tokio::join!(
        queue::claim(&*store, la, "wa", &id, "3", 0),
        queue::claim(&*store, lb, "wb", &id, "3", 0)
    );
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.is_some() as u8 + cb.is_some() as u8, 1, "one claim wins");
    let (winner, winner_lease, loser_lease) = match ca {
        Some(c) => (c, la, lb),
        None => (cb.unwrap(), lb, la),
    };
    // The winner's lease expires (revoked here, as etcd does at the TTL): the claim goes.
    store.revoke(winner_lease).await.unwrap();
    let other = queue::claim(&*store, loser_lease, "wb", &id, "3", 0)
        .await
        .unwrap()
        .expect("the task is free once the lease is gone");
    assert!(other.token > winner.token, "a newer fencing token");
    let done = TaskDoc {
        state: TaskState::Done,
        worker: Some("late".into()),
        ..TaskDoc::new()
    };
    // The old holder comes back and tries to commit: fenced, nothing lands.
    match queue::put_task(&*store, &winner, &done, true).await {
        Err(QueueError::Fenced { token, .. }) => assert_eq!(token, winner.token),
        other => panic!("the stale commit was not fenced: {other:?}"),
    }
    assert!(store.get(&job::task_key(&id, "3")).await.unwrap().is_none());
    // The current holder commits.
    let ok = TaskDoc {
        worker: Some("current".into()),
        ..done
    };
    queue::put_task(&*store, &other, &ok, true).await.unwrap();
    let (rec, _) = queue::get_task(&*store, &id, "3").await.unwrap();
    assert_eq!(rec.worker.as_deref(), Some("current"));
    assert!(
        store
            .get(&job::claim_key(&id, "3"))
            .await
            .unwrap()
            .is_none(),
        "released"
    );
    // A claim on a record that changed since it was read is refused too.
    assert!(
        queue::claim(&*store, loser_lease, "wb", &id, "3", 1)
            .await
            .unwrap()
            .is_none()
    );
}
