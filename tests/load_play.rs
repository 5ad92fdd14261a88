//! `streamgate load play` against the real edge: `streamgate dev` serving the gated demo
//! asset (real ffmpeg-made CMAF, HLS and DASH), driven over the network by the binary's
//! `load play`, judged from its JSON report and its per-request trace.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

mod common;

use common::{Proc, free_port, output_ok};

/// The demo asset, made once per test binary (and kept across runs) by a throwaway dev.
fn demo_origin() -> PathBuf {
    static MADE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*made {
        return p.clone();
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("load-play-demo");
    let demo = dir.join("origin/demo");
    if !(demo.join("master.m3u8").exists() && demo.join("manifest.mpd").exists()) {
        let ok = Command::new("ffmpeg")
            .arg("-version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ffmpeg is not installed: run ./scripts/setup.sh");
        let _ = std::fs::remove_dir_all(&dir);
        let dev = Dev::start(&dir);
        drop(dev);
    }
    *made = Some(demo.clone());
    demo
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A running `streamgate dev`.
struct Dev {
    proc: Proc,
    http: u16,
    admin: u16,
    tls: u16,
    control: u16,
    data: PathBuf,
    token: String,
}

impl Dev {
    fn start(data: &Path) -> Self {
        let (http, tls, admin, control) = (free_port(), free_port(), free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["dev", "--data-dir"])
            .arg(data)
            .args(["--http-port", &http.to_string()])
            .args(["--tls-port", &tls.to_string()])
            .args(["--admin-port", &admin.to_string()])
            .args(["--control-port", &control.to_string()])
            .args(["--ingest-port", &free_port().to_string()])
            .args(["--control-admin-port", &free_port().to_string()])
            .args(["--farm-admin-port", &free_port().to_string()])
            .env("STREAMGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("streamgate dev starts");
        let stdout = child.stdout.take().unwrap();
        let proc = Proc(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let token = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(240))
                .expect("dev printed its URLs within 4 minutes");
            if let Some((_, t)) = line.split_once(".m3u8?token=") {
                break t.to_owned();
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(common::wait_ready(admin, Duration::from_secs(20)));
        Self {
            proc,
            http,
            admin,
            tls,
            control,
            data: data.to_owned(),
            token,
        }
    }

    /// A dev on a copy of the demo asset, in its own temp dir.
    fn with_demo(tmp: &Path) -> Self {
        copy_dir(&demo_origin(), &tmp.join("origin/demo"));
        Self::start(tmp)
    }

    fn hls(&self) -> String {
        format!("http://127.0.0.1:{}/v/demo/master.m3u8", self.http)
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let admin = std::fs::read_to_string(self.data.join("admin.token")).unwrap();
        output_ok(
            Command::new(env!("CARGO_BIN_EXE_streamgate"))
                .arg("ctl")
                .args(args)
                .env(
                    "STREAMGATE_ENDPOINT",
                    format!("http://127.0.0.1:{}", self.control),
                )
                .env("STREAMGATE_TOKEN", admin.trim()),
        )
    }
}

/// Runs `load play` with `args`, returning the report and the trace lines.
fn play(dir: &Path, name: &str, args: &[&str]) -> (Value, Vec<Value>) {
    let report = dir.join(format!("{name}.json"));
    let trace = dir.join(format!("{name}.jsonl"));
    let html = dir.join(format!("{name}.html"));
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["load", "play"])
        .args(args)
        .args(["--quiet", "--report"])
        .arg(&report)
        .arg("--trace")
        .arg(&trace)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "load play {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&html).unwrap();
    assert!(html.contains("<svg") && !html.contains("http-equiv") && !html.contains("<script"));
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let lines = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, lines)
}

/// Every viewer started, completed and never stalled; the report has the contract's fields.
fn assert_clean(r: &Value, viewers: u64) {
    assert_clean_kinds(r, viewers, &["master", "playlist", "init", "segment"]);
}

/// [`assert_clean`] for the object kinds a manifest type has (DASH: no media playlists).
fn assert_clean_kinds(r: &Value, viewers: u64, kinds: &[&str]) {
    assert_eq!(r["viewers"]["started"], viewers, "{r:#}");
    assert_eq!(r["viewers"]["completed"], viewers, "{r:#}");
    assert_eq!(r["viewers"]["failed"], 0, "{r:#}");
    assert_eq!(r["stalls"], 0, "{r:#}");
    assert_eq!(r["rebuffer_ratio"], 0.0);
    assert_eq!(r["errors"], serde_json::json!({}));
    for kind in kinds {
        for m in ["ttfb_ms", "ttlb_ms"] {
            let h = &r[m][kind];
            for p in ["p50", "p90", "p99", "p999", "max"] {
                assert!(h[p].as_f64().is_some(), "{m}.{kind}.{p}: {r:#}");
            }
            assert!(h["count"].as_u64().unwrap() > 0, "{m}.{kind}");
        }
    }
    assert!(r["startup_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(r["bitrate_kbps"]["mean"].as_f64().unwrap() > 0.0);
    assert!(r["generator_cpu"].as_f64().unwrap() >= 0.0);
    // Whether the generator kept up depends on the machine (a loaded CI box may delay its
    // timers); the verdict must be there, with its reasons when it is false.
    assert!(r["valid"].is_boolean(), "{r:#}");
    assert_eq!(
        r["valid"] == false,
        !r["invalid_because"].as_array().unwrap().is_empty(),
        "{r:#}"
    );
}

/// The trace of one viewer follows hls.js: the master, then the selected video rendition's
/// playlist and the audio playlist, each track's init before its segments, and no object
/// twice; every segment number of the content once per track.
fn assert_hls_js_order(trace: &[Value], viewer: u64) {
    // The trace is written as answers complete; the order that matters is the requests'.
    let mut reqs: Vec<&Value> = trace.iter().filter(|l| l["viewer"] == viewer).collect();
    reqs.sort_by(|a, b| {
        a["sent_ms"]
            .as_f64()
            .unwrap()
            .total_cmp(&b["sent_ms"].as_f64().unwrap())
    });
    let kinds: Vec<(&str, &str)> = reqs
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["media"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds[0], ("master", "manifest"), "{kinds:?}");
    let first_two: BTreeSet<(&str, &str)> = kinds[1..3].iter().copied().collect();
    assert_eq!(
        first_two,
        [("playlist", "audio"), ("playlist", "video")].into(),
        "{kinds:?}"
    );
    for media in ["video", "audio"] {
        let init = kinds.iter().position(|k| *k == ("init", media)).unwrap();
        let seg = kinds.iter().position(|k| *k == ("segment", media)).unwrap();
        assert!(init < seg, "{media}: {kinds:?}");
    }
    let mut seen = BTreeSet::new();
    let mut numbers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for l in &reqs {
        let path = l["path"].as_str().unwrap();
        if l["kind"] == "segment" || l["kind"] == "init" {
            assert!(seen.insert(path.to_owned()), "fetched twice: {path}");
        }
        if l["kind"] == "playlist" {
            // One media playlist per selected rendition: never the same one twice (VOD).
            assert!(seen.insert(path.to_owned()), "playlist twice: {path}");
        }
        if l["kind"] == "segment" {
            let file = path.rsplit('/').next().unwrap().to_owned();
            numbers
                .entry(l["media"].as_str().unwrap())
                .or_default()
                .push(file);
        }
    }
    let mut demo: Vec<String> = std::fs::read_dir(demo_origin().join("audio/aac"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".m4s"))
        .collect();
    demo.sort();
    for (media, mut files) in numbers {
        files.sort();
        assert_eq!(files, demo, "{media}: every segment once");
    }
}

#[test]
fn idle_edge_every_viewer_plays_to_the_end_with_each_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Dev::with_demo(tmp.path());
    let dir = tmp.path();
    // A fixed token in the query, HTTP/1.1, three viewers at once.
    let (r, trace) = play(
        dir,
        "query",
        &[
            &dev.hls(),
            "--viewers",
            "3",
            "--duration",
            "1s",
            "--token",
            &dev.token,
        ],
    );
    assert_clean(&r, 3);
    assert_eq!(r["model"]["kind"], "closed");
    assert!(r["requests"]["200"].as_u64().unwrap() >= 3 * 13, "{r:#}");
    assert_hls_js_order(&trace, 0);
    // The token in the Authorization header, h2 over TLS, with CMCD headers.
    let https = format!("https://127.0.0.1:{}/v/demo/master.m3u8", dev.tls);
    let (r, _) = play(
        dir,
        "header",
        &[
            &https,
            "--viewers",
            "2",
            "--duration",
            "1s",
            "--token",
            &dev.token,
            "--token-in",
            "header",
            "--protocol",
            "h2",
            "--server-name",
            "localhost",
            "--cmcd",
            "header",
        ],
    );
    assert_clean(&r, 2);
    // A token minted per viewer from the dev key, DASH over HTTP/3, CMCD in the query.
    let mpd = format!("https://127.0.0.1:{}/v/demo/manifest.mpd", dev.tls);
    let key = dev.data.join("keys/dev-signing.pem");
    let (r, trace) = play(
        dir,
        "mint",
        &[
            &mpd,
            "--rate",
            "4",
            "--arrivals",
            "constant",
            "--duration",
            "1s",
            "--mint-key",
            key.to_str().unwrap(),
            "--mint-scope",
            "demo",
            "--protocol",
            "h3",
            "--server-name",
            "localhost",
            "--cmcd",
            "query",
        ],
    );
    // Constant arrivals every 0.25 s within 1 s: at 0.25, 0.5 and 0.75 s.
    assert_clean_kinds(&r, 3, &["master", "init", "segment"]);
    assert_eq!(r["model"]["kind"], "open");
    assert!(
        trace.iter().all(|l| l["kind"] != "playlist"),
        "DASH has no playlists"
    );
    // Per-viewer wallet sign-in: the demo takes dev tokens or any wallet session.
    let policy = dir.join("wallets.yaml");
    std::fs::write(
        &policy,
        "id: demo-wallets\ndescription: dev tokens or any signed-in wallet\non_unavailable: fail_closed\nrule:\n  any_of:\n    - jwt: {issuer: streamgate-dev, audience: streamgate, scope_claim: sg_scope}\n    - jwt: {issuer: streamgate-wallet, audience: streamgate, scope_claim: null}\n",
    )
    .unwrap();
    dev.ctl(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    dev.ctl(&["asset", "bind", "demo", "demo-wallets"]);
    // The edge applies the binding from its watch within moments.
    let t0 = Instant::now();
    let r = loop {
        let (r, _) = play(
            dir,
            "wallet",
            &[
                &dev.hls(),
                "--viewers",
                "2",
                "--duration",
                "1s",
                "--wallet",
                "--token-in",
                "header",
            ],
        );
        if r["viewers"]["failed"] == 0 || t0.elapsed() > Duration::from_secs(15) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_clean(&r, 2);
}

fn freeze(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

#[test]
fn a_two_second_freeze_shows_in_the_tail_of_every_request_scheduled_during_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Dev::with_demo(tmp.path());
    let pid = dev.proc.0.id();
    let url = dev.hls();
    let dir = tmp.path().to_owned();
    let token = dev.token.clone();
    // Viewers arriving 4 a second for 4 s with a small buffer: masters and segments keep
    // being scheduled while the edge (the whole dev process) is stopped.
    let load = std::thread::spawn(move || {
        play(
            &dir,
            "freeze",
            &[
                &url,
                "--rate",
                "4",
                "--arrivals",
                "constant",
                "--duration",
                "4s",
                "--target-buffer",
                "3",
                "--token",
                &token,
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let from = unix_ms();
    freeze(pid, "-STOP");
    std::thread::sleep(Duration::from_secs(2));
    freeze(pid, "-CONT");
    let to = unix_ms();
    let (r, trace) = load.join().unwrap();
    let start = r["started_unix_ms"].as_f64().unwrap();
    let (from, to) = (from - start, to - start);
    let during: Vec<&Value> = trace
        .iter()
        .filter(|l| {
            let n = l["needed_ms"].as_f64().unwrap();
            // 100 ms margins: the two processes' clocks and the signal's delivery.
            n >= from + 100.0 && n < to - 100.0
        })
        .collect();
    assert!(
        during.len() >= 3,
        "requests scheduled in the freeze: {}",
        during.len()
    );
    for l in &during {
        let waited = l["ttlb_ms"].as_f64().unwrap();
        let rest = to - l["needed_ms"].as_f64().unwrap();
        assert!(waited >= rest - 150.0, "{l}: waited {waited} ms of {rest}");
    }
    let total = trace.len() as f64;
    // The requests caught in the freeze are more than 0.1 % of all, so p99.9 (and max) of
    // the objects they were shows at least most of the freeze.
    assert!(during.len() as f64 / total > 0.001);
    let worst = ["master", "playlist", "init", "segment"]
        .iter()
        .map(|k| r["ttlb_ms"][k]["p999"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(worst >= 1500.0, "p99.9 {worst} ms: {r:#}");
    let seg = &r["ttlb_ms"]["segment"];
    assert!(
        seg["p50"].as_f64().unwrap() < 500.0,
        "the median is not the freeze: {seg}"
    );
}

#[test]
fn a_slow_link_lowers_the_bitrate_and_stalls_and_a_revoked_key_fails_viewers() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Dev::with_demo(tmp.path());
    let dir = tmp.path();
    let (fast, _) = play(
        dir,
        "fast",
        &[
            &dev.hls(),
            "--viewers",
            "1",
            "--duration",
            "1s",
            "--token",
            &dev.token,
        ],
    );
    assert_clean(&fast, 1);
    // 350 kbit/s for a ladder whose lowest rung is ~530 kbit/s of video plus audio.
    let (slow, trace) = play(
        dir,
        "slow",
        &[
            &dev.hls(),
            "--viewers",
            "1",
            "--duration",
            "1s",
            "--token",
            &dev.token,
            "--link-kbps",
            "350",
        ],
    );
    assert_eq!(slow["viewers"]["completed"], 1, "{slow:#}");
    assert!(slow["stalls"].as_u64().unwrap() > 0, "{slow:#}");
    assert!(slow["rebuffer_ratio"].as_f64().unwrap() > 0.0);
    assert!(slow["late_segment_ratio"].as_f64().unwrap() > 0.0);
    let (f, s) = (
        fast["bitrate_kbps"]["mean"].as_f64().unwrap(),
        slow["bitrate_kbps"]["mean"].as_f64().unwrap(),
    );
    assert!(s < f, "slow {s} kbit/s vs fast {f}");
    let video: Vec<&str> = trace
        .iter()
        .filter(|l| l["kind"] == "segment" && l["media"] == "video")
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert!(video.iter().all(|p| p.contains("/240p/")), "{video:?}");

    // Retiring the dev key mid-session: the viewer's next request is denied, and the
    // report counts the failure with the edge's reason.
    let url = dev.hls();
    let (d, token) = (dir.to_owned(), dev.token.clone());
    let load = std::thread::spawn(move || {
        play(
            &d,
            "revoked",
            &[
                &url,
                "--viewers",
                "1",
                "--duration",
                "1s",
                "--target-buffer",
                "3",
                "--token",
                &token,
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    dev.ctl(&["key", "retire", "dev-1", "--overlap", "1s"]);
    let (r, _) = load.join().unwrap();
    assert_eq!(r["viewers"]["failed"], 1, "{r:#}");
    assert_eq!(r["viewers"]["completed"], 0, "{r:#}");
    let reasons: Vec<&String> = r["errors"].as_object().unwrap().keys().collect();
    assert_eq!(reasons.len(), 1, "{r:#}");
    assert!(
        !reasons[0].starts_with("http_"),
        "the edge's JSON reason: {reasons:?}"
    );
    assert_eq!(r["failures"][0]["status"], 403, "{r:#}");
    assert!(r["requests"]["403"].as_u64().unwrap() >= 1);
}

#[test]
fn bad_flags_and_unusable_manifests_are_clear_errors() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["load", "play"])
            .args(args)
            .output()
            .unwrap()
    };
    for (args, want) in [
        (vec!["http://127.0.0.1:1/m.m3u8"], "--viewers N"),
        (vec!["ftp://x/m.m3u8", "--viewers", "1"], "scheme"),
        (
            vec!["http://127.0.0.1:1/m.m3u8", "--viewers", "0"],
            "at least 1",
        ),
        (vec!["http://127.0.0.1:1/m.m3u8", "--rate", "0"], "positive"),
        (
            vec![
                "http://127.0.0.1:1/m.m3u8",
                "--viewers",
                "1",
                "--session",
                "soon",
            ],
            "soon",
        ),
        (
            vec![
                "http://127.0.0.1:1/m.m3u8",
                "--viewers",
                "1",
                "--protocol",
                "h3",
            ],
            "https",
        ),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A server that answers junk: the viewer fails with the parse error, counted.
    let srv = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = srv.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in srv.incoming() {
            let mut s = s.unwrap();
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=x\nv.m3u8\n";
            let _ = std::io::Write::write_all(
                &mut s,
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("r.json");
    let out = run(&[
        &format!("http://127.0.0.1:{port}/m.m3u8"),
        "--rate",
        "2",
        "--duration",
        "1s",
        "--quiet",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(r["viewers"]["failed"].as_u64().unwrap() >= 1, "{r:#}");
    let reason = r["failures"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("BANDWIDTH"), "{reason}");
}

/// One sample of the edge's metrics: the value of `name{asset="demo"}` (`_count` and `_sum`
/// for histograms).
fn demo_metric(admin: u16, name: &str) -> f64 {
    let out =
        output_ok(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{admin}/metrics")]));
    let text = String::from_utf8(out.stdout).unwrap();
    let want = format!("{name}{{asset=\"demo\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[test]
fn the_cmcd_players_send_is_what_the_edge_aggregates_and_ctl_analytics_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Dev::with_demo(tmp.path());
    let dir = tmp.path();
    let dash = format!("http://127.0.0.1:{}/v/demo/manifest.mpd", dev.http);
    // hls.js and dash.js both send CMCD in the query by default; the header mode is the
    // other one players offer. The slow link makes the buffer starve (`bs`). Each run has
    // its own seed: session ids are `<seed>-<viewer>`.
    let runs: [(&str, &str, &str, &[&str]); 4] = [
        (
            "hls-query",
            &dev.hls(),
            "query",
            &["--seed", "11", "--session", "6s"],
        ),
        (
            "dash-query",
            &dash,
            "query",
            &["--seed", "12", "--session", "6s"],
        ),
        (
            "hls-header",
            &dev.hls(),
            "header",
            &["--seed", "13", "--session", "6s"],
        ),
        (
            "hls-starved",
            &dev.hls(),
            "query",
            &["--seed", "14", "--link-kbps", "350"],
        ),
    ];
    let mut sent = serde_json::Map::new();
    for (name, url, mode, extra) in runs {
        let mut args = vec![url, "--viewers", "3", "--duration", "1s"];
        args.extend(["--token", &dev.token, "--cmcd", mode]);
        args.extend(extra);
        let (r, _) = play(dir, name, &args);
        assert_eq!(r["viewers"]["failed"], 0, "{name}: {r:#}");
        let c = r["cmcd_sent"].as_object().unwrap();
        assert_eq!(c["sessions"], 3, "{name}: {r:#}");
        for (k, v) in c {
            let total = sent.get(k).and_then(Value::as_u64).unwrap_or(0) + v.as_u64().unwrap();
            sent.insert(k.clone(), total.into());
        }
        if name == "hls-starved" {
            assert!(
                c["starved"].as_u64().unwrap() > 0,
                "the slow link starves: {r:#}"
            );
        }
    }
    let sent = |k: &str| sent[k].as_u64().unwrap() as f64;
    let m = |n: &str| demo_metric(dev.admin, n);
    assert_eq!(
        m("streamgate_edge_qoe_cmcd_requests_total"),
        sent("requests")
    );
    assert_eq!(
        m("streamgate_edge_qoe_starved_requests_total"),
        sent("starved")
    );
    assert_eq!(
        m("streamgate_edge_qoe_sessions_started_total"),
        sent("sessions")
    );
    assert_eq!(
        m("streamgate_edge_qoe_bitrate_kbps_count"),
        sent("video_br_count")
    );
    assert_eq!(
        m("streamgate_edge_qoe_bitrate_kbps_sum"),
        sent("video_br_sum_kbps")
    );
    assert_eq!(
        m("streamgate_edge_qoe_throughput_kbps_count"),
        sent("mtp_count")
    );
    // Every session reached its first segment, within a few seconds.
    assert_eq!(
        m("streamgate_edge_qoe_startup_seconds_count"),
        sent("sessions")
    );
    let startup_mean = m("streamgate_edge_qoe_startup_seconds_sum") / sent("sessions");
    assert!(startup_mean > 0.0 && startup_mean < 10.0, "{startup_mean}");
    assert_eq!(m("streamgate_edge_cmcd_malformed_total"), 0.0);

    // The control plane sums what the edge published (every 10 s by default).
    let deadline = Instant::now() + Duration::from_secs(30);
    let demo = loop {
        let out = dev.ctl(&["analytics", "--output", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let demo = v["assets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["asset"] == "demo")
            .cloned();
        if let Some(d) = demo.filter(|d| d["requests"].as_f64() == Some(sent("requests"))) {
            assert_eq!(v["edges"], 1, "{v:#}");
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "ctl analytics never caught up: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        demo["sessions"].as_f64(),
        Some(sent("sessions")),
        "{demo:#}"
    );
    assert_eq!(demo["starved"].as_f64(), Some(sent("starved")), "{demo:#}");
    assert_eq!(
        demo["bitrate_kbps"]["count"].as_f64(),
        Some(sent("video_br_count"))
    );
    let mean = sent("video_br_sum_kbps") / sent("video_br_count");
    assert!(
        (demo["bitrate_kbps"]["mean"].as_f64().unwrap() - mean).abs() < 1e-6,
        "{demo:#}"
    );
    let p50 = demo["startup_s"]["p50"].as_f64().unwrap();
    assert!(
        p50 > 0.0 && p50 <= demo["startup_s"]["p90"].as_f64().unwrap(),
        "{demo:#}"
    );
    let human = String::from_utf8(dev.ctl(&["analytics"]).stdout).unwrap();
    assert!(
        human.contains("STARTUP P50/P90 S") && human.contains("demo"),
        "{human}"
    );
    let none = String::from_utf8(dev.ctl(&["analytics", "--asset", "nope"]).stdout).unwrap();
    assert!(
        none.contains("no CMCD has been seen for asset \"nope\""),
        "{none}"
    );
}
