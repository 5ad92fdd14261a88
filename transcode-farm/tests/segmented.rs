//! Segment-parallel encoding against the real ffmpeg: parts encoded in separate folders
//! (as separate workers would), stitched into one output that the verifier accepts, with a
//! continuous timeline and keyframes on the grid, and that ffmpeg plays from start to end.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use streamgate_transcode::cmaf;
use streamgate_transcode::segmented::{self, Part};
use streamgate_transcode::{LadderConfig, make_test_pattern, verify_output};

fn cfg() -> LadderConfig {
    LadderConfig {
        x264_preset: "superfast".to_owned(),
        threads: Some(1),
        ..LadderConfig::default()
    }
}

fn require_ffmpeg() {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "ffmpeg is not installed: run ./scripts/setup.sh");
}

/// Encodes every part into its own folder, then copies them into `out` and writes the
/// manifests, as the farm does through origin storage.
async fn encode_all(
    input: &Path,
    scratch: &Path,
    out: &Path,
    per_task: u64,
) -> segmented::Assembled {
    let cfg = cfg();
    let prepared = segmented::prepare(input, &cfg, per_task).await.unwrap();
    // Through JSON, as the plan travels between workers in the job's tasks.
    let prepared: segmented::Prepared =
        serde_json::from_str(&serde_json::to_string(&prepared).unwrap()).unwrap();
    let mut parts = BTreeMap::new();
    let mut inits = BTreeMap::new();
    let jobs = prepared.parts().into_iter().map(|part| {
        let dir = scratch.join(part.to_string().replace(' ', "-"));
        let (prepared, cfg) = (&prepared, &cfg);
        async move {
            let out = segmented::encode_part(input, prepared, part, cfg, &dir, |_| {})
                .await
                .unwrap();
            (part, dir, out)
        }
    });
    for (part, dir, output) in one_after_another(jobs).await {
        for t in &output.tracks {
            let init_bytes = fs::read(dir.join(&t.dir).join("init.mp4")).unwrap();
            inits.insert(
                t.dir.clone(),
                (
                    cmaf::parse_init(&init_bytes).unwrap(),
                    init_bytes.len() as u64,
                ),
            );
            for rel in t.files() {
                let to = out.join(&rel);
                fs::create_dir_all(to.parent().unwrap()).unwrap();
                fs::copy(dir.join(&rel), &to).unwrap();
            }
        }
        parts.insert(part, output);
    }
    let assembled = segmented::assemble(&prepared, &parts, &inits, input).unwrap();
    for (rel, text) in &assembled.manifests {
        fs::write(out.join(rel), text).unwrap();
    }
    assembled
}

async fn one_after_another<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.collect();
    let mut out = Vec::new();
    for f in handles {
        out.push(f.await);
    }
    out
}

#[tokio::test]
async fn parts_stitch_into_one_verified_timeline() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mp4");
    make_test_pattern(&src, 23, &cfg()).await.unwrap();
    let out = dir.path().join("out");
    let assembled = encode_all(&src, &dir.path().join("scratch"), &out, 2).await;
    verify_output(&out).expect("the existing verifier accepts the stitched output");
    assert_eq!(assembled.report.verified.media_files, assembled.media.len());
    // 23 s at 3.2 s per segment: 8 segments, made by 4 runs of 2 (the last has the rest).
    let runs: std::collections::BTreeSet<_> = assembled
        .made_by
        .values()
        .filter(|p| matches!(p, Part::Video(_)))
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    for rendition in ["video/720p", "video/480p", "video/360p", "audio/aac"] {
        let folder = out.join(rendition);
        let init = cmaf::parse_init(&fs::read(folder.join("init.mp4")).unwrap()).unwrap();
        let mut next = 0u64;
        let mut n = 0;
        while let Ok(bytes) = fs::read(folder.join(format!("seg-{:05}.m4s", n + 1))) {
            let seg = cmaf::parse_segment(&bytes, &init).unwrap();
            assert_eq!(
                seg.base_media_decode_time,
                next,
                "{rendition} segment {}",
                n + 1
            );
            assert!(seg.starts_with_sync_sample, "{rendition} segment {}", n + 1);
            next += seg.duration;
            n += 1;
        }
        assert_eq!(n, 8, "{rendition}");
        let secs = next as f64 / f64::from(init.timescale);
        assert!((secs - 23.0).abs() < 0.1, "{rendition}: {secs} s");
        if rendition.starts_with("video") {
            // Every segment but the last is exactly 96 frames at 30 fps.
            let bytes = fs::read(folder.join("seg-00003.m4s")).unwrap();
            assert_eq!(cmaf::parse_segment(&bytes, &init).unwrap().sample_count, 96);
        }
    }
    // ffmpeg plays the whole HLS presentation through, without a decode error.
    let play = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-xerror", "-i"])
        .arg(out.join("master.m3u8"))
        .args(["-map", "0:v:0", "-map", "0:a:0", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        play.status.success(),
        "{}",
        String::from_utf8_lossy(&play.stderr)
    );
}

#[tokio::test]
async fn a_missing_part_is_refused_by_name() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.mp4");
    make_test_pattern(&src, 8, &cfg()).await.unwrap();
    let prepared = segmented::prepare(&src, &cfg(), 1).await.unwrap();
    assert_eq!(prepared.parts().len(), 1 + 3, "audio and three runs");
    let err = segmented::assemble(&prepared, &BTreeMap::new(), &BTreeMap::new(), &src)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audio") && err.contains("video run 2"),
        "{err}"
    );
}
