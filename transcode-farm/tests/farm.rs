//! The farm on the embedded store and a filesystem origin, with the real ffmpeg: two
//! workers share a job's parts and publish it once; a republish switches versions and
//! purges the old one; cancellation stops the work; bad sources end as a playable ladder
//! or a failed job with a reason, and nothing is ever half-published.

mod support;

use std::sync::Arc;
use std::time::Duration;

use streamgate_control::job::{self, JobState};
use streamgate_control::store::embedded::EmbeddedStore;
use streamgate_control::store::{PREFIX, Store};
use streamgate_transcode::verify_output;
use support::*;

async fn asset_record(store: &dyn Store, id: &str) -> Option<serde_json::Value> {
    store
        .get(&format!("{PREFIX}assets/{id}"))
        .await
        .unwrap()
        .map(|v| serde_json::from_slice(&v.value).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_publish_a_job_once_and_a_republish_purges_the_old_version() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("origin");
    let origin = fs_origin(&root);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.log")).unwrap());
    let src = dir.path().join("a.mp4");
    pattern(&src, 20, "640x360");
    stage(&origin, "in/a.mp4", &src).await;
    let id = submit(&*store, "film", "in/a.mp4", &src).await;

    let workers: Vec<_> = ["w1", "w2"]
        .iter()
        .map(|n| {
            spawn_worker(
                Arc::clone(&store),
                origin.clone(),
                worker_cfg(n, dir.path().join(n)),
            )
        })
        .collect();
    // Progress is reported while transcoding.
    let seen = wait_for(&*store, &id, Duration::from_secs(60), |d| {
        d.state == JobState::Transcoding
    })
    .await;
    assert_eq!(seen.farm.segments_total, 7, "20 s in 3.2 s segments");
    let done = wait_final(&*store, &id, Duration::from_secs(120)).await;
    assert_eq!(done.state, JobState::Done, "{:?}", done.error);
    let prefix = format!("film/{id}");
    assert_eq!(done.farm.origin_prefix.as_deref(), Some(prefix.as_str()));
    let report = verify_output(&root.join(&prefix)).expect("the published version verifies");
    assert!(report.media_files > 20, "{report:?}");
    let rec = asset_record(&*store, "film").await.unwrap();
    assert_eq!(rec["origin_prefix"], prefix);
    assert_eq!(rec["job"], id.as_str());
    assert_eq!(
        audit_actions(&*store, "assets/film").await,
        ["asset.publish"]
    );
    // Staged parts and task records go right after the switch; claims are gone.
    let t0 = std::time::Instant::now();
    while root.join(".farm").join(id.as_str()).exists()
        || !store
            .list(&job::tasks_prefix(&id))
            .await
            .unwrap()
            .0
            .is_empty()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "staging or task records left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store
            .list(&job::claims_prefix())
            .await
            .unwrap()
            .0
            .is_empty()
    );

    // A new source for the same asset: a new version, then the old one is purged.
    let src2 = dir.path().join("b.mp4");
    pattern(&src2, 7, "640x360");
    stage(&origin, "in/b.mp4", &src2).await;
    let id2 = submit(&*store, "film", "in/b.mp4", &src2).await;
    let done2 = wait_final(&*store, &id2, Duration::from_secs(120)).await;
    assert_eq!(done2.state, JobState::Done, "{:?}", done2.error);
    let prefix2 = format!("film/{id2}");
    verify_output(&root.join(&prefix2)).unwrap();
    assert_eq!(
        asset_record(&*store, "film").await.unwrap()["origin_prefix"],
        prefix2
    );
    let t0 = std::time::Instant::now();
    while root.join(&prefix).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the replaced version is not purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        audit_actions(&*store, "assets/film").await,
        ["asset.publish", "asset.republish"]
    );
    // Submitting the first source again returns the done job: nothing runs again.
    let again = submit(&*store, "film", "in/a.mp4", &src).await;
    assert_eq!(again, id);
    assert_eq!(
        job::get(&*store, &id).await.unwrap().unwrap().0.state,
        JobState::Done
    );
    for (tx, h) in workers {
        drop(tx);
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_job_stops_publishes_nothing_and_runs_again_when_resubmitted() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("origin");
    let origin = fs_origin(&root);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.log")).unwrap());
    let src = dir.path().join("long.mp4");
    pattern(&src, 40, "1280x720");
    stage(&origin, "in/long.mp4", &src).await;
    let id = submit(&*store, "long", "in/long.mp4", &src).await;
    let mut cfg = worker_cfg("w1", dir.path().join("w1"));
    cfg.segments_per_task = 20;
    let (tx, h) = spawn_worker(Arc::clone(&store), origin.clone(), cfg);
    wait_for(&*store, &id, Duration::from_secs(60), |d| {
        d.state == JobState::Transcoding
    })
    .await;
    // Wait until a part is being encoded (it holds a claim), then cancel.
    let t0 = std::time::Instant::now();
    while store
        .list(&job::claims_prefix())
        .await
        .unwrap()
        .0
        .is_empty()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no part was claimed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    job::cancel(&*store, &id, "tester", "now").await.unwrap();
    // The worker drops its units and releases their claims.
    let t0 = std::time::Instant::now();
    while !store
        .list(&job::claims_prefix())
        .await
        .unwrap()
        .0
        .is_empty()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "claims were not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (doc, _) = job::get(&*store, &id).await.unwrap().unwrap();
    assert_eq!(doc.state, JobState::Cancelled);
    assert!(
        asset_record(&*store, "long").await.is_none(),
        "nothing published"
    );
    assert!(!root.join("long").exists(), "no object under the asset");
    // No ffmpeg of this test is left running.
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &dir.path().join("w1").display().to_string()])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "ffmpeg still runs: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    // Submitted again, the cancelled job is queued again and runs to the end.
    let again = job::submit(&*store, {
        let (mut d, _) = job::get(&*store, &id).await.unwrap().unwrap();
        d.state = JobState::Queued;
        d
    })
    .await
    .unwrap();
    assert!(again.requeued && again.doc.id == id);
    let done = wait_final(&*store, &id, Duration::from_secs(240)).await;
    assert_eq!(done.state, JobState::Done, "{:?}", done.error);
    verify_output(&root.join(format!("long/{id}"))).unwrap();
    drop(tx);
    h.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_sources_end_playable_or_failed_with_a_reason_never_half_published() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("origin");
    let origin = fs_origin(&root);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&d.join("s.log")).unwrap());

    let p = |n: &str| d.join(n);
    std::fs::write(p("notes.txt"), "this is not a video\n".repeat(100)).unwrap();
    std::fs::write(p("empty.mp4"), b"").unwrap();
    pattern(&p("whole.mp4"), 6, "640x360");
    let whole = std::fs::read(p("whole.mp4")).unwrap();
    std::fs::write(p("truncated.mp4"), &whole[..whole.len() / 2]).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "5",
        "-c:a",
        "aac",
        p("audio.m4a").to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        p("silent.mp4").to_str().unwrap(),
    ]);
    pattern(&p("odd.mp4"), 5, "1922x1081");
    // Variable frame rate: 30 fps for 2 s, then 10 fps.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "7",
        "-vf",
        "select='lt(n\\,60)+not(mod(n\\,3))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        p("vfr.mp4").to_str().unwrap(),
    ]);
    // A phone-style portrait video: landscape pixels with a 90° rotation in the metadata.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        p("landscape.mp4").to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-i",
        p("landscape.mp4").to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        p("rotated.mp4").to_str().unwrap(),
    ]);

    // (asset, file, Ok(expected height of the top rendition) | Err(words in the reason))
    type Case<'a> = (&'a str, &'a str, Result<u32, &'a [&'a str]>);
    let cases: Vec<Case> = vec![
        ("text", "notes.txt", Err(&["not a video"])),
        ("empty", "empty.mp4", Err(&["empty"])),
        ("cut", "truncated.mp4", Err(&["truncated"])),
        ("audio-only", "audio.m4a", Err(&["no video stream"])),
        ("video-only", "silent.mp4", Ok(360)),
        ("odd", "odd.mp4", Ok(1080)),
        ("vfr", "vfr.mp4", Ok(360)),
        ("rotated", "rotated.mp4", Ok(480)),
    ];
    let mut ids = Vec::new();
    for (asset, file, _) in &cases {
        let key = format!("in/{file}");
        stage(&origin, &key, &p(file)).await;
        ids.push(submit(&*store, asset, &key, &p(file)).await);
    }
    let workers: Vec<_> = ["w1", "w2"]
        .iter()
        .map(|n| spawn_worker(Arc::clone(&store), origin.clone(), worker_cfg(n, d.join(n))))
        .collect();
    let mut problems = Vec::new();
    for ((asset, file, want), id) in cases.iter().zip(&ids) {
        let doc = wait_final(&*store, id, Duration::from_secs(240)).await;
        let rec = asset_record(&*store, asset).await;
        match want {
            Ok(height) => {
                if doc.state != JobState::Done {
                    problems.push(format!("{file}: {:?} {:?}", doc.state, doc.error));
                    continue;
                }
                let out = root.join(format!("{asset}/{id}"));
                if let Err(e) = verify_output(&out) {
                    problems.push(format!("{file}: {e}"));
                }
                let master = std::fs::read_to_string(out.join("master.m3u8")).unwrap();
                if !master.contains(&format!("x{height},"))
                    && !master.contains(&format!("x{height}\n"))
                {
                    problems.push(format!("{file}: no {height}-high rendition in\n{master}"));
                }
                if *asset == "video-only" && out.join("audio").exists() {
                    problems.push("video-only: an audio folder".into());
                }
                if *asset == "rotated" && !master.contains("RESOLUTION=270x480") {
                    problems.push(format!("rotated: not portrait\n{master}"));
                }
                if rec.is_none() {
                    problems.push(format!("{file}: no asset record"));
                }
            }
            Err(words) => {
                let reason = doc.error.clone().unwrap_or_default();
                if doc.state != JobState::Failed || !words.iter().all(|w| reason.contains(w)) {
                    problems.push(format!(
                        "{file}: {:?} {reason:?}, wanted failed with {words:?}",
                        doc.state
                    ));
                }
                // The reason names the source as submitted, not a worker's scratch path.
                if reason.contains("/source") {
                    problems.push(format!("{file}: the reason shows a scratch path: {reason}"));
                }
                if rec.is_some() || root.join(asset).exists() {
                    problems.push(format!("{file}: something was published"));
                }
            }
        }
    }
    for (tx, h) in workers {
        drop(tx);
        h.await.unwrap();
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
