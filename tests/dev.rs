//! `streamgate dev` end to end, as a newcomer runs it: the binary makes the demo asset with
//! real ffmpeg, starts the edge, and prints the URLs. An independent player (ffmpeg's HLS
//! and DASH demuxers) then plays both manifests through the edge, every referenced object
//! loads with the right content type, and a second fetch of a segment is a cache HIT.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{Proc, dev_command, free_port, hls_uris, output_ok, resolve, spawn_with_lines};
use streamgate_proto::control::v1 as pb;

fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{tool} is not installed: run ./scripts/setup.sh");
}

fn play(url: &str) {
    let out = Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-i", url, "-map", "0", "-f", "null", "-",
        ])
        .output()
        .expect("ffmpeg runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ffmpeg could not play {url}:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "ffmpeg reported errors playing {url}:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_serves_a_playable_demo() {
    require("ffmpeg");
    let data = tempfile::tempdir().unwrap();
    let (http, tls, admin, control) = (free_port(), free_port(), free_port(), free_port());
    let (_dev, rx) = spawn_with_lines(&mut dev_command(data.path(), [http, tls, admin, control]));
    // `dev` prints the player URLs on their own lines once the edge is up.
    let mut urls = Vec::new();
    while urls.len() < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(240))
            .expect("dev printed its URLs within 4 minutes");
        if line.starts_with("http://")
            && (line.contains(".m3u8?token=") || line.contains(".mpd?token="))
        {
            urls.push(line);
        }
    }
    let token = urls[0].split_once("?token=").unwrap().1.to_owned();
    let hls = format!("http://127.0.0.1:{http}/v/demo/master.m3u8?token={token}");
    let dash = format!("http://127.0.0.1:{http}/v/demo/manifest.mpd?token={token}");
    assert_eq!(urls, [hls.clone(), dash.clone()]);
    // Then the three admin ports: edge, control plane, farm.
    let admins = common::dev_admin_urls(&rx);
    assert_eq!(
        admins[0].1,
        format!("http://127.0.0.1:{admin}/metrics"),
        "the edge's admin port is --admin-port"
    );
    let c = reqwest::Client::new();
    // Ready once the edge listens and has the state from the control plane's store.
    common::wait_ready(admin, Duration::from_secs(10)).await;
    // All three admin ports answer /healthz and serve their own metrics; the edge and the
    // control plane are ready.
    for (what, metrics_url) in &admins {
        let base = metrics_url.strip_suffix("/metrics").unwrap();
        let r = c.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{what} {base}/healthz");
        let text = c
            .get(metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let family = match *what {
            "edge:" => "streamgate_edge_",
            "control plane:" => "streamgate_control_store_up 1",
            _ => "streamgate_farm_",
        };
        assert!(
            text.contains(family),
            "{what} {metrics_url} lacks {family}:\n{text}"
        );
        if *what != "farm:" {
            let r = c.get(format!("{base}/readyz")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{what} {base}/readyz");
        }
    }
    // The demo is gated: no token, no bytes.
    let anon = c
        .get(format!("http://127.0.0.1:{http}/v/demo/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    // Walk the HLS tree; every URI carries the token, and nothing else authorises the requests.: master -> media playlists -> init and media segments.
    let master = c.get(&hls).send().await.unwrap();
    assert_eq!(master.status(), 200);
    assert_eq!(
        master.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let master = master.text().await.unwrap();
    assert!(master.contains("#EXT-X-STREAM-INF"), "{master}");
    let mut segments = BTreeSet::new();
    let playlists: Vec<String> = hls_uris(&master).iter().map(|u| resolve(&hls, u)).collect();
    assert!(
        playlists.len() >= 4,
        "expected >= 3 video renditions and audio: {playlists:?}"
    );
    for pl in &playlists {
        let r = c.get(pl).send().await.unwrap();
        assert_eq!(r.status(), 200, "{pl}");
        assert_eq!(r.headers()["content-type"], "application/vnd.apple.mpegurl");
        let text = r.text().await.unwrap();
        assert!(text.contains("#EXT-X-ENDLIST") && text.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        for u in hls_uris(&text) {
            segments.insert(resolve(pl, &u));
        }
    }
    for seg in &segments {
        let r = c.get(seg).send().await.unwrap();
        assert_eq!(r.status(), 200, "{seg}");
        assert!(seg.ends_with(&format!("?token={token}")), "{seg}");
        let want = if seg.contains(".m4s?") {
            "video/iso.segment"
        } else if seg.contains("/audio/") {
            "audio/mp4"
        } else {
            "video/mp4"
        };
        assert_eq!(r.headers()["content-type"], want, "{seg}");
        assert!(!r.bytes().await.unwrap().is_empty(), "{seg}");
    }
    // Second fetch of a segment comes from the cache.
    let seg = segments.iter().find(|s| s.contains(".m4s?")).unwrap();
    let r = c.get(seg).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");

    // The MPD loads and points at the same rendition folders as the HLS playlists.
    let mpd = c.get(&dash).send().await.unwrap();
    assert_eq!(mpd.status(), 200);
    assert_eq!(mpd.headers()["content-type"], "application/dash+xml");
    let mpd = mpd.text().await.unwrap();
    for pl in &playlists {
        let folder = pl.split_once("index.m3u8").unwrap().0;
        let rel = folder.trim_start_matches(&format!("http://127.0.0.1:{http}/v/demo/"));
        let want = format!("<BaseURL>{rel}?token={token}</BaseURL>");
        assert!(mpd.contains(&want), "MPD lacks {want}:\n{mpd}");
    }

    // An independent player plays every rendition of both manifests through the edge.
    let (h, d) = (hls.clone(), dash.clone());
    tokio::task::spawn_blocking(move || {
        play(&h);
        play(&d);
    })
    .await
    .unwrap();

    // The control plane runs in dev: a policy change through its API reaches the edge.
    let mut policies = policy_client(data.path(), control).await;
    let current = policies
        .get(pb::GetPolicyRequest {
            id: "demo-viewers".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    policies
        .apply(pb::ApplyPolicyRequest {
            document: r#"{"id": "demo-viewers", "rule": {"ip": {"deny": ["127.0.0.0/8"]}}}"#.into(),
            expected_version: current.version,
        })
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let status = c.get(&hls).send().await.unwrap().status();
        if status == 403 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the deny did not reach the edge: {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("policy change enforced {:?} after Apply", t0.elapsed());

    let player = c
        .get(format!("http://127.0.0.1:{http}/player"))
        .send()
        .await
        .unwrap();
    assert_eq!(player.status(), 200);
    assert!(player.text().await.unwrap().contains("hls.js"));
}

/// Kills the process whose pid is in a file (the node `scripts/dev-chain.sh` started).
struct KillPidFile(std::path::PathBuf);

impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// The documented way to try NFT gating (docs/WEB3.md): `scripts/dev-chain.sh`, then
/// `streamgate dev --chain-rpc`, then what the script printed, signing in with
/// `scripts/wallet-login.py` (eth-account), and moving the token away.
#[tokio::test(flavor = "multi_thread")]
async fn dev_gates_the_demo_on_an_nft_from_a_local_chain() {
    require("ffmpeg");
    let repo = env!("CARGO_MANIFEST_DIR");
    let data = tempfile::tempdir().unwrap();
    let chain_port = free_port();
    let out = Command::new(format!("{repo}/scripts/dev-chain.sh"))
        .env("CHAIN_PORT", chain_port.to_string())
        .env("STREAMGATE_DATA_DIR", data.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _node = KillPidFile(data.path().join("chain/hardhat.pid"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dev-chain.sh failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = |marker: &str| {
        let at = text
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker:?} in:\n{text}"));
        text[at + marker.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches(')')
            .to_owned()
    };
    let key = after("wallet-login.py --key ");
    let erc721 = after("--contract ");
    let policy = data.path().join("chain/nft-holders.yaml");
    assert!(policy.is_file());

    let (http, tls, admin, control) = (free_port(), free_port(), free_port(), free_port());
    let rpc = format!("http://127.0.0.1:{chain_port}");
    let child = dev_command(data.path(), [http, tls, admin, control])
        .args(["--chain-rpc", &rpc])
        .stdout(Stdio::null())
        .spawn()
        .expect("streamgate dev starts");
    let _dev = Proc(child);
    let c = reqwest::Client::new();
    common::wait_ready(admin, Duration::from_secs(240)).await;
    let token_file = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let ctl = |args: &[&str]| {
        output_ok(
            Command::new(env!("CARGO_BIN_EXE_streamgate"))
                .arg("ctl")
                .args(args)
                .env("STREAMGATE_ENDPOINT", format!("http://127.0.0.1:{control}"))
                .env("STREAMGATE_TOKEN", token_file.trim()),
        )
    };
    ctl(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    ctl(&["asset", "bind", "demo", "nft-holders"]);
    let login = |key: &str| {
        let out = output_ok(
            Command::new(common::venv_python("eth_account"))
                .arg(format!("{repo}/scripts/wallet-login.py"))
                .args(["--key", key, "--edge", &format!("http://127.0.0.1:{http}")]),
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let token = login(&key);
    let hls = format!("http://127.0.0.1:{http}/v/demo/master.m3u8?token={token}");
    assert_eq!(c.get(&hls).send().await.unwrap().status(), 200);
    // An independent player plays the NFT-gated demo.
    let h = hls.clone();
    tokio::task::spawn_blocking(move || play(&h)).await.unwrap();
    // Hardhat's account #5 holds nothing.
    let stranger = login("0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba");
    let r = c
        .get(format!(
            "http://127.0.0.1:{http}/v/demo/master.m3u8?token={stranger}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The transfer the script suggests revokes within a poll interval (500 ms) plus slack.
    let moved = common::chain::fixture(&[
        "transfer721",
        "--rpc",
        &rpc,
        "--contract",
        &erc721,
        "--from-key",
        &key,
        "--to",
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "--id",
        "1",
    ])
    .await;
    assert!(moved["block"].is_u64(), "{moved}");
    let t0 = std::time::Instant::now();
    while c.get(&hls).send().await.unwrap().status() == 200 {
        assert!(t0.elapsed() < Duration::from_secs(3), "not revoked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "dev: revoked {:?} after the transfer returned",
        t0.elapsed()
    );
}

/// Starts `dev` on `data` and returns it with the HLS URL it printed.
fn start_dev(data: &std::path::Path, ports: [u16; 4], etcd: &str) -> (Proc, String) {
    let (proc, rx) = spawn_with_lines(dev_command(data, ports).args(["--etcd", etcd]));
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(240))
            .expect("dev printed its URLs within 4 minutes");
        if line.starts_with("http://") && line.contains(".m3u8?token=") {
            return (proc, line);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_on_etcd_restarts_during_an_outage_and_catches_up_when_etcd_returns() {
    require("ffmpeg");
    let mut etcd = streamgate_store::testkit::start_etcd();
    let data = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let [http, _, admin, control] = ports;
    let (dev, hls) = start_dev(data.path(), ports, &etcd.endpoint);
    common::wait_ready(admin, Duration::from_secs(10)).await;
    let c = reqwest::Client::new();
    assert_eq!(c.get(&hls).send().await.unwrap().status(), 200);
    // Its edge wrote the state it enforces to its last-known-good file.
    let lkg = data.path().join("edge-snapshot.json");
    let t0 = std::time::Instant::now();
    while !lkg.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no last-known-good file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // etcd dies and dev restarts while it is down: the demo plays from the
    // last-known-good state.
    drop(dev);
    etcd.stop();
    let (_dev, hls) = start_dev(data.path(), ports, &etcd.endpoint);
    common::wait_ready(admin, Duration::from_secs(15)).await;
    let anon = format!("http://127.0.0.1:{http}/v/demo/master.m3u8");
    assert_eq!(
        c.get(&anon).send().await.unwrap().status(),
        401,
        "still gated"
    );
    let h = hls.clone();
    tokio::task::spawn_blocking(move || play(&h)).await.unwrap();

    // Mutations are refused with UNAVAILABLE, saying why.
    let mut policies = policy_client(data.path(), control).await;
    let deny = pb::ApplyPolicyRequest {
        document: r#"{"id": "demo-viewers", "rule": {"ip": {"deny": ["127.0.0.0/8"]}}}"#.into(),
        expected_version: 0,
    };
    let refused = policies.apply(deny.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("etcd unreachable"),
        "{refused:?}"
    );

    // etcd returns: a policy change applies without a restart.
    etcd.start();
    let t0 = std::time::Instant::now();
    let current = loop {
        match policies
            .get(pb::GetPolicyRequest {
                id: "demo-viewers".into(),
            })
            .await
        {
            Ok(r) => break r.into_inner().policy.unwrap(),
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "etcd never answered: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    policies
        .apply(pb::ApplyPolicyRequest {
            expected_version: current.version,
            ..deny
        })
        .await
        .unwrap();
    let t1 = std::time::Instant::now();
    loop {
        let status = c.get(&hls).send().await.unwrap().status();
        if status == 403 {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "the change did not reach the edge: {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "etcd back: the control plane answered {:?} after etcd started, the change was enforced {:?} after Apply",
        t0.elapsed() - t1.elapsed(),
        t1.elapsed()
    );
}

/// A PolicyService client of dev's control plane on `port`, with dev's admin token.
async fn policy_client(
    data: &std::path::Path,
    port: u16,
) -> pb::policy_service_client::PolicyServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
    >,
> {
    let admin_token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", admin_token.trim()).parse().unwrap();
    pb::policy_service_client::PolicyServiceClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        },
    )
}
