//! The `/player` page in a real browser: Debian's headless **Chromium**, driven over the
//! DevTools protocol by `tests/player/play.mjs`, plays the gated demo of `streamgate dev`
//! with hls.js and with dash.js, both served by the edge itself (`scripts/setup-player.sh`
//! installs them), with every host but 127.0.0.1 unresolvable. Both players send CMCD in
//! their default mode (the query), and the edge's QoE aggregates count each playback.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::{dev_admin_urls, dev_command, free_port, output_ok, spawn_with_lines};

/// How long each player plays.
const SECONDS: u64 = 6;

fn chromium() -> PathBuf {
    let found = ["chromium", "chromium-browser"].into_iter().find_map(|c| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    found.expect("chromium is not installed: run ./scripts/setup.sh")
}

/// Plays `src` (a path with its token) on the page; returns the script's report.
fn play(http: u16, src: &str, shot: Option<&std::path::Path>) -> Value {
    let enc: String = src
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let page = format!("http://127.0.0.1:{http}/player?src={enc}");
    let mut cmd = Command::new("node");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/player/play.mjs"
    ))
    .arg(chromium())
    .arg(&page)
    .arg(SECONDS.to_string());
    if let Some(p) = shot {
        cmd.arg(p);
    }
    let out = output_ok(&mut cmd);
    serde_json::from_slice(&out.stdout).expect("play.mjs prints one JSON line")
}

fn qoe(admin: &str, name: &str) -> f64 {
    let out = output_ok(Command::new("curl").args(["-sf", admin]));
    let want = format!("{name}{{asset=\"demo\"}} ");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&want).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

#[test]
fn hls_js_and_dash_js_play_the_gated_demo_from_the_edge_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let http = free_port();
    let (_dev, lines) = spawn_with_lines(&mut dev_command(
        &tmp.path().join("data"),
        [http, free_port(), free_port(), free_port()],
    ));
    let token = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(240))
            .expect("dev printed its URLs within 4 minutes");
        if let Some((_, t)) = line.split_once("/v/demo/master.m3u8?token=") {
            break t.to_owned();
        }
    };
    let mut said_served = false;
    let admin = loop {
        let line = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        said_served |= line.contains("hls.js and dash.js, served by this edge");
        if line.starts_with("Admin ports") {
            break dev_admin_urls(&lines)[0].1.clone();
        }
    };
    assert!(
        said_served,
        "dev found the players installed by setup-player.sh"
    );
    let edge = format!("http://127.0.0.1:{http}");

    // The page and the libraries come from the edge; the page may load nothing else.
    let page = output_ok(Command::new("curl").args(["-sf", &format!("{edge}/player")]));
    let page = String::from_utf8(page.stdout).unwrap();
    assert!(!page.contains("https://"), "no third-party URL in the page");
    let csp = output_ok(Command::new("curl").args(["-sfI", &format!("{edge}/player")]));
    let head = String::from_utf8(csp.stdout).unwrap().to_ascii_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    for lib in ["hls.min.js", "dash.all.min.js"] {
        let out = output_ok(Command::new("curl").args([
            "-sf",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{content_type} %{size_download}",
            &format!("{edge}/player/{lib}"),
        ]));
        let said = String::from_utf8(out.stdout).unwrap();
        assert!(said.starts_with("200 text/javascript"), "{lib}: {said}");
    }

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (name, src, engine) in [
        (
            "hls",
            format!("/v/demo/master.m3u8?token={token}"),
            "hls.js ",
        ),
        (
            "dash",
            format!("/v/demo/manifest.mpd?token={token}"),
            "dash.js ",
        ),
    ] {
        let before = qoe(&admin, "streamgate_edge_qoe_sessions_started_total");
        let startups = qoe(&admin, "streamgate_edge_qoe_startup_seconds_count");
        let shot = shots.join(format!("player-{name}.png"));
        let r = play(http, &src, Some(&shot));
        let state = &r["state"];
        assert!(
            state["engine"].as_str().unwrap().starts_with(engine),
            "{name}: {r:#}"
        );
        assert_eq!(state["errors"], serde_json::json!([]), "{name}: {r:#}");
        // Played most of the time it had (the demo is 10 s long).
        let t = state["time"].as_f64().unwrap();
        assert!(t >= SECONDS as f64 / 2.0, "{name} played {t} s: {r:#}");
        assert_eq!(state["width"], 1280, "{name}: decoded video");
        // Every request went to this edge, and none failed.
        let requests: Vec<&str> = r["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|u| u.starts_with("http"))
            .collect();
        assert!(requests.len() > 5, "{requests:?}");
        assert!(
            requests.iter().all(|u| u.starts_with(&format!("{edge}/"))),
            "{name}: a request left the edge: {requests:?}"
        );
        assert_eq!(r["failed"], serde_json::json!([]), "{name}: {r:#}");
        // CMCD in the query (the players' default mode) on the media requests.
        let with_cmcd = requests.iter().filter(|u| u.contains("CMCD=")).count();
        assert!(with_cmcd > 3, "{name}: {with_cmcd} requests carried CMCD");
        // The edge counted one playback session for this player, and its startup.
        let after = qoe(&admin, "streamgate_edge_qoe_sessions_started_total");
        assert_eq!(after - before, 1.0, "{name}: sessions {before} -> {after}");
        let timed = qoe(&admin, "streamgate_edge_qoe_startup_seconds_count") - startups;
        let first: Vec<&&str> = requests.iter().take(4).collect();
        assert_eq!(
            timed, 1.0,
            "{name}: its startup was timed; first requests {first:#?}"
        );
        assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    }
    assert!(qoe(&admin, "streamgate_edge_qoe_bitrate_kbps_count") > 4.0);
    assert!(qoe(&admin, "streamgate_edge_qoe_throughput_kbps_count") > 4.0);
}
