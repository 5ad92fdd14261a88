//! End-to-end tests against the real ffmpeg and ffprobe (no mocks).
//!
//! They fail, loudly, when FFmpeg is not installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use streamgate_transcode::cmaf;
use streamgate_transcode::{
    LadderConfig, Progress, Rendition, RenditionKind, Report, TranscodeError, make_test_pattern,
    transcode, transcode_with_progress, verify_output,
};

/// Checks that the real tools are there; these tests must never pass without them.
fn require_ffmpeg() {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "`{tool}` is not installed or not on PATH. These tests run the real FFmpeg: \
             run the project's setup script (it installs ffmpeg), or `apt-get install -y ffmpeg`."
        );
    }
}

/// Fast settings for tests; `superfast` is the fastest preset that still
/// produces High profile (ultrafast drops to Constrained Baseline).
fn cfg() -> LadderConfig {
    LadderConfig {
        x264_preset: "superfast".to_owned(),
        threads: Some(1),
        ..LadderConfig::default()
    }
}

/// Runs ffmpeg directly, for fixtures `make_test_pattern` does not make.
fn ffmpeg(args: &[&str]) {
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

fn cut_in_half(from: &Path, to: &Path) {
    let bytes = fs::read(from).unwrap();
    fs::write(to, &bytes[..bytes.len() / 2]).unwrap();
}

/// Measures every segment of a rendition folder with the public CMAF reader:
/// (timescale, durations in ticks, starts-with-keyframe flags, codecs).
fn measure(dir: &Path) -> (u32, Vec<u64>, Vec<bool>, String) {
    let init = cmaf::parse_init(&fs::read(dir.join("init.mp4")).unwrap()).unwrap();
    let mut durations = Vec::new();
    let mut sync = Vec::new();
    for n in 1.. {
        let path = dir.join(format!("seg-{n:05}.m4s"));
        let Ok(bytes) = fs::read(&path) else { break };
        let seg = cmaf::parse_segment(&bytes, &init).unwrap();
        durations.push(seg.duration);
        sync.push(seg.starts_with_sync_sample);
    }
    (init.timescale, durations, sync, init.codecs)
}

fn manifests(out: &Path, report: &Report) -> Vec<(PathBuf, Vec<u8>)> {
    let mut names = vec![PathBuf::from("master.m3u8"), PathBuf::from("manifest.mpd")];
    names.extend(report.renditions.iter().map(|r| PathBuf::from(&r.playlist)));
    names
        .into_iter()
        .map(|n| {
            let bytes = fs::read(out.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

fn is_hex6(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn ladder_from_test_pattern() {
    require_ffmpeg();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pattern.mp4");
    make_test_pattern(&input, 7, &cfg()).await.unwrap();
    let out = tmp.path().join("asset");

    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let report =
        transcode_with_progress(&input, &out, &cfg(), move |p| sink.lock().unwrap().push(p))
            .await
            .unwrap();

    // Source and ladder: 720p source, never upscaled, at least 3 renditions.
    assert_eq!((report.source.width, report.source.height), (1280, 720));
    assert!(report.source.has_audio);
    let video: Vec<&Rendition> = report.video().collect();
    let heights: Vec<u32> = video.iter().filter_map(|v| v.height).collect();
    assert_eq!(heights, [720, 480, 360, 240]);
    assert!(video.len() >= 3);
    for v in &video {
        let (w, h) = (v.width.unwrap(), v.height.unwrap());
        assert!(h <= 720 && w <= 1280, "{v:?}");
        assert_eq!(w % 2, 0);
        assert_eq!(v.name, format!("{h}p"));
        assert_eq!(v.path, format!("video/{}", v.name));
        let (prefix, hex) = v.codecs.split_once('.').unwrap();
        assert_eq!(prefix, "avc1");
        assert!(
            is_hex6(hex) && hex.starts_with("64"),
            "High profile expected: {}",
            v.codecs
        );
        assert!((v.frame_rate.unwrap() - 30.0).abs() < 1e-9);
        assert!(v.bandwidth >= v.average_bandwidth && v.average_bandwidth > 0);
    }
    assert_eq!(video[1].width, Some(854));
    let audio = report.audio().expect("audio rendition");
    assert_eq!(audio.kind, RenditionKind::Audio);
    assert_eq!(audio.path, "audio/aac");
    assert_eq!(audio.codecs, "mp4a.40.2");
    assert_eq!((audio.channels, audio.sample_rate), (Some(2), Some(48000)));
    assert_eq!(report.renditions.len(), 5);
    assert!(report.notes.is_empty(), "{:?}", report.notes);

    // Layout the edge depends on, with no ffmpeg playlists left behind.
    for rel in [
        "master.m3u8",
        "manifest.mpd",
        "video/720p/init.mp4",
        "video/720p/seg-00001.m4s",
        "video/720p/index.m3u8",
        "video/240p/seg-00003.m4s",
        "audio/aac/init.mp4",
        "audio/aac/seg-00001.m4s",
        "audio/aac/index.m3u8",
    ] {
        assert!(out.join(rel).is_file(), "missing {rel}");
    }
    for v in &video {
        let names: Vec<String> = fs::read_dir(out.join(&v.path))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n == "init.mp4" || n == "index.m3u8" || n.ends_with(".m4s")),
            "{names:?}"
        );
    }
    let siblings: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !siblings.iter().any(|n| n.contains(".partial-")),
        "{siblings:?}"
    );

    // Segment timing, measured independently of the report: every segment
    // but the last lasts 3.2 s within one frame, and starts on a keyframe.
    let mut video_counts = Vec::new();
    for v in &video {
        let (timescale, durations, sync, codecs) = measure(&out.join(&v.path));
        assert_eq!(codecs, v.codecs);
        assert_eq!(durations.len(), v.segment_count);
        let frame = f64::from(timescale) / 30.0;
        for d in &durations[..durations.len() - 1] {
            assert!(
                (*d as f64 - 3.2 * f64::from(timescale)).abs() <= frame,
                "{} segment of {d} ticks",
                v.name
            );
        }
        assert!(sync.iter().all(|s| *s), "{}: {sync:?}", v.name);
        video_counts.push(durations.len());
        let total: u64 = durations.iter().sum();
        assert!(
            (total as f64 / f64::from(timescale) - 7.0).abs() < 0.1,
            "{} lasts {total}",
            v.name
        );
    }
    assert!(video_counts.iter().all(|c| *c == 3), "{video_counts:?}");
    let (timescale, durations, _, _) = measure(&out.join("audio/aac"));
    assert_eq!(
        durations.len(),
        video_counts[0],
        "audio and video segment counts differ"
    );
    let aac_frame = 1024.0 * f64::from(timescale) / 48000.0;
    for d in &durations[..durations.len() - 1] {
        assert!(
            (*d as f64 - 3.2 * f64::from(timescale)).abs() <= aac_frame,
            "audio segment of {d} ticks"
        );
    }

    // Manifests: written by us, no wall clock, all URIs resolvable.
    let master = fs::read_to_string(out.join("master.m3u8")).unwrap();
    assert_eq!(master.matches("#EXT-X-STREAM-INF:").count(), 4);
    assert!(master.contains("CODECS=\"avc1.64"));
    assert!(master.contains(",mp4a.40.2\",AUDIO=\"aac\""));
    assert!(master.contains("URI=\"audio/aac/index.m3u8\""));
    let media = fs::read_to_string(out.join("video/720p/index.m3u8")).unwrap();
    assert!(media.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
    assert!(media.contains("#EXTINF:3.200000,\nseg-00001.m4s\n"));
    assert!(media.contains("#EXT-X-TARGETDURATION:4\n"));
    for (name, bytes) in manifests(&out, &report) {
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains("PROGRAM-DATE-TIME"), "{}", name.display());
    }
    let mpd = fs::read_to_string(out.join("manifest.mpd")).unwrap();
    assert!(mpd.contains("<BaseURL>video/720p/</BaseURL>"));
    assert!(mpd.contains("media=\"seg-$Number%05d$.m4s\""));
    let verified = verify_output(&out).unwrap();
    assert_eq!(verified, report.verified);
    assert_eq!(verified.representations, 5);
    assert_eq!(verified.media_files, 5 * 4);

    // Progress went forward and ended.
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(seen.windows(2).all(|w| w[0].encoded <= w[1].encoded));
    assert!(seen.last().unwrap().finished);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["renditions"][0]["name"], "720p");
    assert_eq!(json["renditions"][0]["kind"], "video");
    assert_eq!(json["renditions"][4]["kind"], "audio");
    assert_eq!(json["segment_duration"], 3.2);
}

#[tokio::test]
async fn manifests_are_byte_identical_across_runs() {
    require_ffmpeg();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pattern.mp4");
    make_test_pattern(&input, 4, &cfg()).await.unwrap();
    let cfg = LadderConfig {
        rungs: vec![
            streamgate_transcode::Rung::new(360, 800),
            streamgate_transcode::Rung::new(240, 400),
        ],
        ..cfg()
    };
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let ra = transcode(&input, &a, &cfg).await.unwrap();
    let rb = transcode(&input, &b, &cfg).await.unwrap();
    assert_eq!(ra, rb);
    let (ma, mb) = (manifests(&a, &ra), manifests(&b, &rb));
    assert_eq!(ma.len(), 6);
    for ((name, x), (_, y)) in ma.iter().zip(&mb) {
        assert!(x == y, "{} differs between runs", name.display());
    }
    // With one x264 thread the media bytes are reproducible too.
    let seg = "video/360p/seg-00001.m4s";
    assert_eq!(
        fs::read(a.join(seg)).unwrap(),
        fs::read(b.join(seg)).unwrap()
    );
}

#[tokio::test]
async fn small_silent_source_gets_derived_rungs_and_no_audio() {
    require_ffmpeg();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("small.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25",
        "-t",
        "3",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        input.to_str().unwrap(),
    ]);
    let out = tmp.path().join("small");
    let report = transcode(&input, &out, &cfg()).await.unwrap();
    let heights: Vec<u32> = report.video().filter_map(|v| v.height).collect();
    assert_eq!(heights, [180, 134, 90]);
    assert!(report.audio().is_none());
    assert_eq!(report.renditions.len(), 3);
    assert!(
        report.notes.iter().any(|n| n.contains("no audio")),
        "{:?}",
        report.notes
    );
    assert!(!out.join("audio").exists());
    let master = fs::read_to_string(out.join("master.m3u8")).unwrap();
    assert!(!master.contains("EXT-X-MEDIA"));
    assert!(master.contains("FRAME-RATE=25.000"));

    // A second run replaces the first output whole.
    fs::write(out.join("stale.txt"), b"old").unwrap();
    transcode(&input, &out, &cfg()).await.unwrap();
    assert!(!out.join("stale.txt").exists());
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn text_and_audio_only_files_are_not_video() {
    require_ffmpeg();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("notes.mp4");
    fs::write(&text, "this is not a video\n".repeat(100)).unwrap();
    let out = tmp.path().join("out");
    match transcode(&text, &out, &cfg()).await {
        Err(TranscodeError::NotVideo { reason, .. }) => {
            assert!(reason.contains("ffprobe"), "{reason}")
        }
        other => panic!("expected NotVideo, got {other:?}"),
    }
    let tone = tmp.path().join("tone.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=1",
        "-c:a",
        "aac",
        tone.to_str().unwrap(),
    ]);
    match transcode(&tone, &out, &cfg()).await {
        Err(TranscodeError::NotVideo { reason, .. }) => {
            assert!(reason.contains("no video stream"), "{reason}")
        }
        other => panic!("expected NotVideo, got {other:?}"),
    }
    match transcode(&tmp.path().join("absent.mp4"), &out, &cfg()).await {
        Err(e @ TranscodeError::Input { .. }) => assert!(e.to_string().contains("absent.mp4")),
        other => panic!("expected Input, got {other:?}"),
    }
    assert!(!out.exists());
}

#[tokio::test]
async fn truncated_uploads_are_refused() {
    require_ffmpeg();
    let tmp = tempfile::tempdir().unwrap();
    let faststart = tmp.path().join("faststart.mp4");
    make_test_pattern(&faststart, 4, &cfg()).await.unwrap();
    let moov_last = tmp.path().join("moov-last.mp4");
    ffmpeg(&[
        "-i",
        faststart.to_str().unwrap(),
        "-c",
        "copy",
        moov_last.to_str().unwrap(),
    ]);

    // Matroska declares its duration up front and ffmpeg decodes a cut one
    // without an error: the decoded-duration check has to catch it.
    let mkv = tmp.path().join("whole.mkv");
    ffmpeg(&[
        "-i",
        faststart.to_str().unwrap(),
        "-c",
        "copy",
        mkv.to_str().unwrap(),
    ]);

    for (name, source) in [
        ("cut-faststart.mp4", &faststart),
        ("cut-moov-last.mp4", &moov_last),
        ("cut.mkv", &mkv),
    ] {
        let cut = tmp.path().join(name);
        cut_in_half(source, &cut);
        let out = tmp.path().join(format!("out-{name}"));
        match transcode(&cut, &out, &cfg()).await {
            Err(e @ TranscodeError::Truncated { .. }) => {
                assert!(e.to_string().contains("truncated"), "{e}");
            }
            other => panic!("{name}: expected Truncated, got {other:?}"),
        }
        assert!(
            !out.exists(),
            "{name}: a failed transcode left output behind"
        );
    }

    // Cut exactly where the trailing index starts: every box is whole, but
    // there is no moov, so ffprobe fails; that too is a truncation.
    let whole = fs::read(&moov_last).unwrap();
    let moov_at = top_level_box_offset(&whole, b"moov").expect("moov box");
    let no_index = tmp.path().join("no-index.mp4");
    fs::write(&no_index, &whole[..moov_at]).unwrap();
    match transcode(&no_index, &tmp.path().join("out-no-index"), &cfg()).await {
        Err(e @ TranscodeError::Truncated { .. }) => assert!(e.to_string().contains("moov"), "{e}"),
        other => panic!("expected Truncated, got {other:?}"),
    }

    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Offset of the first top-level box of type `kind` (32-bit sizes only).
fn top_level_box_offset(data: &[u8], kind: &[u8; 4]) -> Option<usize> {
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        if &data[at + 4..at + 8] == kind {
            return Some(at);
        }
        if size < 8 {
            return None;
        }
        at += size;
    }
    None
}

#[tokio::test]
async fn missing_binaries_are_named() {
    require_ffmpeg();
    let tmp = tempfile::tempdir().unwrap();
    let no_probe = LadderConfig {
        ffprobe: PathBuf::from("/nonexistent/bin/ffprobe"),
        ..cfg()
    };
    let input = tmp.path().join("in.mp4");
    fs::write(&input, b"whatever").unwrap();
    let err = transcode(&input, &tmp.path().join("out"), &no_probe)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TranscodeError::ToolNotFound {
                tool: "ffprobe",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent/bin/ffprobe") && text.contains("apt-get install ffmpeg"),
        "{text}"
    );

    let no_ffmpeg = LadderConfig {
        ffmpeg: PathBuf::from("/nonexistent/bin/ffmpeg"),
        ..cfg()
    };
    let err = make_test_pattern(&input, 1, &no_ffmpeg).await.unwrap_err();
    assert!(
        matches!(err, TranscodeError::ToolNotFound { tool: "ffmpeg", .. }),
        "{err:?}"
    );

    // ffprobe works, ffmpeg is missing: fails after probing, leaves nothing.
    make_test_pattern(&input, 1, &cfg()).await.unwrap();
    let out = tmp.path().join("out");
    let err = transcode(&input, &out, &no_ffmpeg).await.unwrap_err();
    assert!(
        matches!(err, TranscodeError::ToolNotFound { tool: "ffmpeg", .. }),
        "{err:?}"
    );
    assert!(!out.exists());
}

#[tokio::test]
async fn cancelled_transcode_leaves_nothing_behind() {
    require_ffmpeg();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pattern.mp4");
    make_test_pattern(&input, 4, &cfg()).await.unwrap();
    let out = tmp.path().join("asset");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let cfg = cfg();
    let job = transcode_with_progress(&input, &out, &cfg, move |_| {
        if let Some(tx) = tx.take() {
            let _ = tx.send(());
        }
    });
    tokio::select! {
        biased;
        _ = rx => {}
        r = job => panic!("finished before it could be cancelled: {r:?}"),
    }
    // The job future is dropped: ffmpeg is killed, staging removed in the background.
    let hidden = || {
        fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if hidden().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(hidden().is_empty(), "{:?}", hidden());
    assert!(!out.exists());
}
