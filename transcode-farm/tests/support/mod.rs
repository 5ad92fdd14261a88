//! Shared helpers of the farm tests: sources made with the real ffmpeg, job submission,
//! workers in this process, waiting for a job's end.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamgate_control::job::{self, JobDoc, JobId, JobSource, JobState};
use streamgate_control::store::Store;
use streamgate_origin::{ObjectKey, Origin, OriginConfig};
use streamgate_transcode::LadderConfig;
use streamgate_transcode::farm::{FarmMetrics, WorkerConfig};

pub(crate) fn require_ffmpeg() {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "ffmpeg is not installed: run ./scripts/setup.sh");
}

/// Runs ffmpeg with `args` (after `-y`), panicking with its stderr.
pub(crate) fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test pattern with a tone, `secs` long, `size` (`WxH`), as an MP4 at `path`.
pub(crate) fn pattern(path: &Path, secs: u32, size: &str) {
    let t = secs.to_string();
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
        &t,
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

/// Fast ladder settings for tests.
pub(crate) fn ladder() -> LadderConfig {
    LadderConfig {
        x264_preset: "superfast".to_owned(),
        threads: Some(1),
        ..LadderConfig::default()
    }
}

/// A worker config for tests: short TTL, quick retries, small tasks.
pub(crate) fn worker_cfg(name: &str, scratch: PathBuf) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(scratch);
    cfg.name = name.to_owned();
    cfg.concurrency = 2;
    cfg.ladder = ladder();
    cfg.segments_per_task = 2;
    cfg.lease_ttl = Duration::from_secs(3);
    cfg.retry.base = Duration::from_millis(200);
    cfg.retry.cap = Duration::from_secs(1);
    cfg.progress_interval = Duration::from_millis(300);
    cfg.poll_interval = Duration::from_millis(300);
    cfg
}

pub(crate) fn fs_origin(root: &Path) -> Origin {
    Origin::from_config(&OriginConfig::Fs {
        root: root.to_path_buf(),
    })
    .unwrap()
}

/// Puts the file at `path` into origin storage at `key`.
pub(crate) async fn stage(origin: &Origin, key: &str, path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    origin
        .put(&ObjectKey::new(key).unwrap(), bytes.into())
        .await
        .unwrap();
}

/// Submits a job for origin object `key` as `asset`, content-addressed by `path`'s bytes.
pub(crate) async fn submit(store: &dyn Store, asset: &str, key: &str, path: &Path) -> JobId {
    let bytes = std::fs::read(path).unwrap();
    let sha = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut d = [0u8; 32];
    d.copy_from_slice(sha.as_ref());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    let doc = JobDoc {
        id: JobId::derive(&d, "default"),
        asset: asset.into(),
        policy: None,
        ladder: "default".into(),
        source: JobSource::Origin { key: key.into() },
        source_sha256: hex,
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

/// Waits until job `id` is in a final state, at most `limit`.
pub(crate) async fn wait_final(store: &dyn Store, id: &JobId, limit: Duration) -> JobDoc {
    let t0 = Instant::now();
    loop {
        if let Ok(Some((doc, _))) = job::get(store, id).await
            && doc.state.is_final()
        {
            return doc;
        }
        assert!(
            t0.elapsed() < limit,
            "job {id} did not finish within {limit:?}: {:?}",
            job::get(store, id)
                .await
                .ok()
                .flatten()
                .map(|(d, _)| (d.state, d.error))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` holds for job `id`.
pub(crate) async fn wait_for(
    store: &dyn Store,
    id: &JobId,
    limit: Duration,
    check: impl Fn(&JobDoc) -> bool,
) -> JobDoc {
    let t0 = Instant::now();
    loop {
        if let Ok(Some((doc, _))) = job::get(store, id).await
            && check(&doc)
        {
            return doc;
        }
        assert!(
            t0.elapsed() < limit,
            "job {id}: condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a worker in this process; dropping the sender stops it.
pub(crate) fn spawn_worker(
    store: Arc<dyn Store>,
    origin: Origin,
    cfg: WorkerConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        streamgate_transcode::farm::run(store, origin, cfg, Arc::new(FarmMetrics::new()), async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (tx, h)
}

/// Audit actions recorded for `target` (e.g. `assets/a`).
pub(crate) async fn audit_actions(store: &dyn Store, target: &str) -> Vec<String> {
    let (items, _) = store
        .list(&format!("{}audit/", streamgate_control::store::PREFIX))
        .await
        .unwrap();
    items
        .iter()
        .filter_map(|(_, v)| {
            let e: serde_json::Value = serde_json::from_slice(&v.value).ok()?;
            (e["target"] == target).then(|| e["action"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}
