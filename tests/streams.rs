//! Concurrent-stream caps across edges (issue 13): real etcd, one `streamgate control`,
//! three `streamgate edge` processes, a policy with `max_streams: 2`, and viewers that play
//! through different edges. The third session is refused fleet-wide within a second, a
//! session that ends frees its slot within the idle timeout, and a killed edge's sessions
//! are released when its lease expires.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, free_port, output_ok, spawn_listening, wait_ready};

const ADMIN: &str = "streams-test-token-0123456789";
const ISSUER: &str = "https://issuer.test";
const IDLE: Duration = Duration::from_secs(4);
const LEASE: Duration = Duration::from_secs(2);

struct Edge {
    proc: Option<Proc>,
    url: String,
}

/// One viewer's session: the sid its master playlist carried.
struct Session {
    base: String,
    query: String,
}

impl Session {
    async fn segment(&self, c: &reqwest::Client) -> u16 {
        let url = format!("{}/v/demo/video/seg-1.m4s?{}", self.base, self.query);
        c.get(url).send().await.unwrap().status().as_u16()
    }
}

/// Starts a session at `edge`: its master playlist. `Ok` with the session, or `Err` with
/// the status and reason.
async fn start(c: &reqwest::Client, edge: &str, token: &str) -> Result<Session, (u16, String)> {
    let r = c
        .get(format!("{edge}/v/demo/master.m3u8?token={token}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    if status != 200 {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err((status, reason));
    }
    let at = body
        .find("sg_sid=")
        .expect("the playlist carries a session id")
        + 7;
    let sid = &body[at..at + 22];
    assert!(
        body.lines()
            .filter(|l| l.ends_with(".m3u8") || l.contains(".m3u8?"))
            .all(|l| l.contains(&format!("token={token}&sg_sid={sid}"))),
        "every URI carries the token and the session: {body}"
    );
    Ok(Session {
        base: edge.to_owned(),
        query: format!("token={token}&sg_sid={sid}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_per_viewer_hold_across_three_edges() {
    let mut etcd = streamgate_store::testkit::start_etcd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("admin-token"), format!("{ADMIN}\n")).unwrap();
    std::fs::write(d.join("session.secret"), [42u8; 32]).unwrap();
    for (p, body) in [
        (
            "demo/master.m3u8",
            &b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nvideo/index.m3u8\n"[..],
        ),
        (
            "demo/video/index.m3u8",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg-1.m4s\n#EXT-X-ENDLIST\n",
        ),
        ("demo/video/seg-1.m4s", b"segment bytes"),
    ] {
        let path = d.join("origin").join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let endpoints = format!("[\"{}\"]", etcd.endpoint);

    let grpc = free_port();
    let cfg = d.join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nadmin_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:{grpc}\"\nstore = \"etcd\"\n\
             admin_token_file = \"{}\"\n[control.etcd]\nendpoints = {endpoints}\n",
            d.join("admin-token").display()
        ),
    )
    .unwrap();
    let _control = spawn_listening(&["control", "--config"], &cfg, grpc, "control plane");

    let mut edges = Vec::new();
    for i in 0..3 {
        let (http, admin) = (free_port(), free_port());
        let cfg = d.join(format!("edge-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[edge]\nhttp_listen = \"127.0.0.1:{http}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 1\n\
                 [edge.gate]\nedge_id = \"e-{i}\"\n[edge.gate.etcd]\nendpoints = {endpoints}\n\
                 [edge.sessions]\nidle_timeout = \"{}s\"\nlease_ttl = \"{}s\"\npublish_interval = \"200ms\"\nsecret_file = \"{}\"\n\
                 [origin]\nkind = \"fs\"\nroot = \"{}\"\n",
                IDLE.as_secs(),
                LEASE.as_secs(),
                d.join("session.secret").display(),
                d.join("origin").display()
            ),
        )
        .unwrap();
        let proc = spawn_listening(&["edge", "--config"], &cfg, http, "edge");
        wait_ready(admin, Duration::from_secs(20)).await;
        edges.push(Edge {
            proc: Some(proc),
            url: format!("http://127.0.0.1:{http}"),
        });
    }

    // The viewer's key, the shipped two-streams policy (with this test's issuer), the asset.
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamgate"));
        cmd.args(["ctl", "--endpoint", &format!("http://127.0.0.1:{grpc}")])
            .args(["--token-file"])
            .arg(d.join("admin-token"))
            .args(args);
        String::from_utf8(output_ok(&mut cmd).stdout).unwrap()
    };
    streamgate_control::token::SigningKey::generate_ed25519(&d.join("signing.pem"), "k1").unwrap();
    let mint = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamgate"));
        cmd.args(["ctl", "token", "mint", "--key"])
            .arg(d.join("signing.pem"))
            .args(["--kid", "k1", "--iss", ISSUER])
            .args(extra);
        String::from_utf8(output_ok(&mut cmd).stdout)
            .unwrap()
            .trim()
            .to_owned()
    };
    let jwk = mint(&["--public-jwk"]);
    ctl(&["key", "add", "--jwk", &jwk]);
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/examples/two-streams.yaml"
    ))
    .unwrap();
    assert!(shipped.contains("max_streams: 2"), "{shipped}");
    let policy = shipped.replace("issuer: streamgate-dev", &format!("issuer: \"{ISSUER}\""));
    std::fs::write(d.join("two-streams.yaml"), policy).unwrap();
    ctl(&[
        "policy",
        "apply",
        "-f",
        d.join("two-streams.yaml").to_str().unwrap(),
    ]);
    ctl(&["asset", "register", "demo", "--policy", "two-streams"]);
    let token = mint(&[
        "--aud",
        "streamgate",
        "--sub",
        "alice",
        "--scope",
        "demo",
        "--ttl",
        "30m",
    ]);
    let other = mint(&[
        "--aud",
        "streamgate",
        "--sub",
        "bob",
        "--scope",
        "demo",
        "--ttl",
        "30m",
    ]);

    let c = reqwest::Client::new();
    for e in &edges {
        let t0 = Instant::now();
        while c
            .get(format!("{}/v/demo/master.m3u8", e.url))
            .send()
            .await
            .unwrap()
            .status()
            != 401
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{} never synced",
                e.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Two sessions through two edges play.
    let a = start(&c, &edges[0].url, &token).await.unwrap();
    assert_eq!(a.segment(&c).await, 200);
    let b = start(&c, &edges[1].url, &token).await.unwrap();
    let admitted_b = Instant::now();
    assert_eq!(b.segment(&c).await, 200);
    // How soon b's count is in etcd for the other edges to see.
    let store = streamgate_store::etcd::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    let streams = format!("{}streams/", streamgate_store::PREFIX);
    loop {
        let (keys, _) = streamgate_store::Store::list(&store, &streams)
            .await
            .unwrap();
        if keys.iter().any(|(k, _)| k.ends_with("/e-1")) {
            break;
        }
        assert!(
            admitted_b.elapsed() < Duration::from_secs(1),
            "e-1 never published"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "the second session's count was in etcd {:.0?} after its admission",
        admitted_b.elapsed()
    );
    // A third, on the third edge, a second later: refused for the cap.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(admitted_b.elapsed())).await;
    assert_eq!(
        start(&c, &edges[2].url, &token).await.err(),
        Some((403, "stream_limit".to_owned()))
    );
    let (keys, _) = streamgate_store::Store::list(&store, &streams)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "one key per edge with sessions: {keys:?}");
    // Sessions already playing are never cut, even over the cap; another viewer is not
    // affected.
    for _ in 0..3 {
        assert_eq!(a.segment(&c).await, 200);
        assert_eq!(b.segment(&c).await, 200);
    }
    let bob = start(&c, &edges[2].url, &other).await.unwrap();
    assert_eq!(bob.segment(&c).await, 200);
    // A session's id is the viewer's: bob's id with alice's token is no session of hers.
    let stolen = Session {
        base: edges[2].url.clone(),
        query: format!("token={token}&{}", bob.query.split('&').nth(1).unwrap()),
    };
    assert_eq!(stolen.segment(&c).await, 403);

    // Session a ends (its player stops); b keeps playing. A new session is admitted
    // once a has been idle for the timeout.
    let t0 = Instant::now();
    let c_session = loop {
        assert_eq!(b.segment(&c).await, 200);
        match start(&c, &edges[2].url, &token).await {
            Ok(s) => break s,
            Err(e) => assert_eq!(e, (403, "stream_limit".to_owned())),
        }
        assert!(
            t0.elapsed() < IDLE + Duration::from_secs(3),
            "the ended session was never released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let freed = t0.elapsed();
    eprintln!("an ended session's slot was free again after {freed:.1?} (idle timeout {IDLE:?})");
    assert!(
        freed >= IDLE - Duration::from_millis(500),
        "released before its idle timeout: {freed:?}"
    );

    // Once the counts have gone round (a second), b and c fill the cap everywhere.
    for _ in 0..5 {
        assert_eq!(b.segment(&c).await, 200);
        assert_eq!(c_session.segment(&c).await, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        start(&c, &edges[0].url, &token).await.err(),
        Some((403, "stream_limit".to_owned()))
    );

    // Kill -9 the edge that plays b: its sessions go with its lease, not its idle timeout.
    let mut dead = edges[1].proc.take().unwrap();
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    let t0 = Instant::now();
    loop {
        assert_eq!(c_session.segment(&c).await, 200);
        match start(&c, &edges[0].url, &token).await {
            Ok(s) => {
                assert_eq!(s.segment(&c).await, 200);
                break;
            }
            Err(e) => assert_eq!(e, (403, "stream_limit".to_owned())),
        }
        assert!(
            t0.elapsed() < LEASE + Duration::from_secs(3),
            "the killed edge's sessions were never released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let released = t0.elapsed();
    eprintln!(
        "a killed edge's session was released after {released:.1?} (lease {LEASE:?}, idle timeout {IDLE:?})"
    );
    // The lease was last renewed up to a third of its TTL before the kill.
    assert!(
        released >= LEASE / 2,
        "released before the lease expired: {released:?}"
    );
    etcd.stop();
}
