//! `streamgate dev` runs a farm worker: a video copied into the dev origin and submitted
//! with `ctl job submit --wait` is transcoded, published and played through the dev edge
//! by ffmpeg, as the README tells a newcomer to do; and a video uploaded with `ctl upload`
//! (tus, then following the job) plays at the URL it prints.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Proc, free_port};

#[tokio::test(flavor = "multi_thread")]
async fn dev_transcodes_a_submitted_video_and_the_edge_plays_it() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let (http, tls, admin, control, ingest) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["dev", "--data-dir"])
        .arg(d)
        .args([
            "--http-port",
            &http.to_string(),
            "--tls-port",
            &tls.to_string(),
        ])
        .args([
            "--admin-port",
            &admin.to_string(),
            "--control-port",
            &control.to_string(),
        ])
        .args(["--ingest-port", &ingest.to_string()])
        .args(["--control-admin-port", &free_port().to_string()])
        .args(["--farm-admin-port", &free_port().to_string()])
        .env("STREAMGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("streamgate dev starts");
    let stdout = child.stdout.take().unwrap();
    let _dev = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(240))
            .expect("dev printed its banner within 4 minutes");
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    common::wait_ready(admin, Duration::from_secs(10)).await;

    // The newcomer's video, copied into the dev origin.
    let src = d.join("origin/in/talk.mp4");
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    make_video(&src, 500);
    // Another, to upload over tus (a different tone: another source, another job).
    let upload = d.join("upload.mp4");
    make_video(&upload, 700);

    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .arg("ctl")
            .args([
                "--endpoint",
                &format!("http://127.0.0.1:{control}"),
                "--token-file",
            ])
            .arg(d.join("admin.token"))
            .args(args)
            .env_remove("STREAMGATE_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/examples/public.yaml");
    ctl(&["policy", "apply", "-f", policy]);
    let out = ctl(&[
        "job",
        "submit",
        "in/talk.mp4",
        "--asset",
        "talk",
        "--policy",
        "public",
        "--wait",
    ]);
    assert!(out.contains("done"), "{out}");

    let url = format!("http://127.0.0.1:{http}/v/talk/master.m3u8");
    let t0 = std::time::Instant::now();
    while reqwest::get(&url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the edge never served talk"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let played = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-xerror",
            "-i",
            &url,
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        played.status.success(),
        "{}",
        String::from_utf8_lossy(&played.stderr)
    );

    // `ctl upload` sends the file to the ingest, follows the job to `done` and prints the
    // playback URLs; the first one plays.
    let out = ctl(&[
        "upload",
        upload.to_str().unwrap(),
        "--asset",
        "upload",
        "--policy",
        "public",
        "--ingest",
        &format!("http://127.0.0.1:{ingest}"),
        "--edge",
        &format!("http://127.0.0.1:{http}"),
    ]);
    let printed = out
        .lines()
        .find(|l| l.ends_with("/v/upload/master.m3u8"))
        .unwrap_or_else(|| panic!("no playback URL in {out}"))
        .to_owned();
    assert!(out.contains("done"), "{out}");
    let played = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-xerror", "-i", &printed])
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        played.status.success(),
        "{}",
        String::from_utf8_lossy(&played.stderr)
    );
}

/// An 8 s test pattern with a tone of `freq` Hz.
fn make_video(path: &std::path::Path, freq: u32) {
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:sample_rate=44100"))
        .args([
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac"])
        .arg(path)
        .output()
        .expect("ffmpeg is not installed: run ./scripts/setup.sh");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}
