//! The farm end to end on S3, as an operator runs it: etcd, `streamgate control`, a
//! `streamgate transcode` worker and a `streamgate edge`, both on moto's S3 server (PyPI,
//! an independent S3 implementation). `ctl job submit --wait` follows the job to `done`,
//! `ctl job list -o json` and `ctl asset get` show it, and ffmpeg plays the published
//! asset through the edge, HLS and DASH. An `s3://` source is fetched and checked against
//! its digest.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, free_port, spawn_listening};
use serde_json::Value;
use streamgate_origin::{ObjectKey, Origin, OriginConfig, S3Origin};
use streamgate_store::testkit::start_etcd;

const TOKEN: &str = "ops:operator-token-0123456789";

fn venv_bin(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("STREAMGATE_VENV").map_or_else(
        || std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/streamgate-venv"),
        std::path::PathBuf::from,
    );
    let bin = venv.join("bin").join(name);
    assert!(
        bin.exists(),
        "{name} not found at {}: run ./scripts/setup.sh (it installs the S3 test server)",
        bin.display()
    );
    bin
}

fn ffmpeg(args: &[&str]) -> std::process::Output {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is not installed: run ./scripts/setup.sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_published_to_s3_plays_through_the_edge() {
    let etcd = start_etcd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // moto's S3 server with a bucket.
    let s3_port = free_port();
    let _moto = Proc(
        Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &s3_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", s3_port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "moto_server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s3 = format!("http://127.0.0.1:{s3_port}");
    let made = reqwest::Client::new()
        .put(format!("{s3}/media"))
        .send()
        .await
        .unwrap();
    assert!(
        made.status().is_success(),
        "create bucket: {}",
        made.status()
    );
    let origin_toml = format!(
        "[origin]\nkind = \"s3\"\nbucket = \"media\"\nprefix = \"vod\"\nendpoint = \"{s3}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n"
    );

    // The source, put into the bucket as any S3 client would.
    let src = d.join("clip.mp4");
    let made = ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=854x480:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=48000",
        "-t",
        "12",
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
        "-c:a",
        "aac",
        src.to_str().unwrap(),
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let origin = Origin::from_config(&OriginConfig::S3(S3Origin {
        bucket: "media".into(),
        prefix: Some("vod".into()),
        endpoint: Some(s3.clone()),
        region: "us-east-1".into(),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: true,
        timeout: Duration::from_secs(10),
    }))
    .unwrap();
    origin
        .put(
            &ObjectKey::new("in/clip.mp4").unwrap(),
            std::fs::read(&src).unwrap().into(),
        )
        .await
        .unwrap();

    // Control plane, worker, edge.
    std::fs::write(d.join("admin-tokens"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(d.join("my-token"), "operator-token-0123456789\n").unwrap();
    let grpc = free_port();
    std::fs::write(
        d.join("control.toml"),
        format!(
            "[control]\nadmin_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:{grpc}\"\nstore = \"etcd\"\netcd_endpoints = [\"{}\"]\nadmin_token_file = \"{}\"\n",
            etcd.endpoint,
            d.join("admin-tokens").display()
        ),
    )
    .unwrap();
    let _control = spawn_listening(
        &["control", "--config"],
        &d.join("control.toml"),
        grpc,
        "control plane",
    );
    std::fs::write(
        d.join("farm.toml"),
        format!(
            "[transcode]\nstore = \"etcd\"\netcd_endpoints = [\"{}\"]\ndata_dir = \"{}\"\n\
             [transcode.worker]\nconcurrency = 2\nsegments_per_task = 2\nx264_preset = \"superfast\"\nthreads = 1\nadmin_listen = \"127.0.0.1:{}\"\n{origin_toml}",
            etcd.endpoint,
            d.join("farm").display(),
            free_port()
        ),
    )
    .unwrap();
    let _worker = Proc(
        Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["transcode", "--config"])
            .arg(d.join("farm.toml"))
            .env("STREAMGATE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (http, admin) = (free_port(), free_port());
    std::fs::write(
        d.join("edge.toml"),
        format!(
            "[edge]\nhttp_listen = \"127.0.0.1:{http}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 1\n\
             [edge.gate]\netcd = [\"{}\"]\nsnapshot = \"{}\"\nedge_id = \"farm-s3\"\n{origin_toml}",
            etcd.endpoint,
            d.join("edge-lkg.json").display()
        ),
    )
    .unwrap();
    let _edge = spawn_listening(&["edge", "--config"], &d.join("edge.toml"), http, "edge");

    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .arg("ctl")
            .args([
                "--endpoint",
                &format!("http://127.0.0.1:{grpc}"),
                "--token-file",
            ])
            .arg(d.join("my-token"))
            .args(args)
            .env_remove("STREAMGATE_TOKEN")
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let out = ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let policy = d.join("public.yaml");
    std::fs::write(&policy, "id: public\nrule:\n  public: true\n").unwrap();
    ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);

    // Submit and follow to the end; the exit code says done.
    let watched = ok(&[
        "job",
        "submit",
        "in/clip.mp4",
        "--asset",
        "clip",
        "--policy",
        "public",
        "--wait",
    ]);
    assert!(watched.contains("done"), "{watched}");
    let list: Value = serde_json::from_str(&ok(&["-o", "json", "job", "list"])).unwrap();
    let jobs = list.as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    let job = &jobs[0];
    assert_eq!(job["asset"], "clip");
    assert_eq!(job["state"], "done");
    assert_eq!(job["progress"], 1.0);
    let id = job["id"].as_str().unwrap();
    // Submitting the same source again returns the same job, and nothing runs again.
    let again = ok(&["job", "submit", "in/clip.mp4", "--asset", "clip"]);
    assert!(
        again.contains(id) && again.contains("exists already"),
        "{again}"
    );
    let asset: Value = serde_json::from_str(&ok(&["-o", "json", "asset", "get", "clip"])).unwrap();
    assert_eq!(asset["origin_prefix"], format!("clip/{id}"));
    assert_eq!(asset["policy"], "public");
    // The objects are in the bucket under the version prefix.
    let master = origin
        .get_bytes(&ObjectKey::new(&format!("clip/{id}/master.m3u8")).unwrap())
        .await
        .unwrap();
    assert!(master.starts_with(b"#EXTM3U"));

    // ffmpeg plays both manifests through the edge (the snapshot reaches it quickly).
    let url = |m: &str| format!("http://127.0.0.1:{http}/v/clip/{m}");
    let t0 = Instant::now();
    while reqwest::get(url("master.m3u8"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the edge never served the asset"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for m in ["master.m3u8", "manifest.mpd"] {
        let played = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-v",
                "error",
                "-xerror",
                "-i",
                &url(m),
                "-f",
                "null",
                "-",
            ])
            .output()
            .unwrap();
        assert!(
            played.status.success(),
            "{m}: {}",
            String::from_utf8_lossy(&played.stderr)
        );
    }
    // An s3:// source: read with the origin's endpoint and credentials, hashed, published.
    let sha: String = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(&src).unwrap())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let wrong = ctl(&[
        "job",
        "submit",
        "s3://media/vod/in/clip.mp4",
        "--asset",
        "clip3",
        "--sha256",
        &"0".repeat(64),
        "--wait",
    ]);
    assert!(
        !wrong.status.success(),
        "a source whose bytes do not match its digest fails"
    );
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("changed: its SHA-256 is"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let from_s3 = ok(&[
        "job",
        "submit",
        "s3://media/vod/in/clip.mp4",
        "--asset",
        "clip2",
        "--sha256",
        &sha,
        "--policy",
        "public",
        "--wait",
    ]);
    assert!(from_s3.contains("done"), "{from_s3}");
    let t0 = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{http}/v/clip2/manifest.mpd"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the edge never served clip2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            &url("master.m3u8"),
        ])
        .output()
        .unwrap();
    let secs: f64 = String::from_utf8_lossy(&probe.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    assert!((secs - 12.0).abs() < 0.5, "plays {secs} s of 12");
}
