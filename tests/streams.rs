//! Concurrent-stream caps across edges (issue 13): real etcd, one `streamgate control`,
//! three `streamgate edge` processes, a policy with `max_streams: 2`, and viewers that play
//! through different edges. The third session is refused fleet-wide within a second, a
//! session that ends frees its slot within the idle timeout, and a killed edge's sessions
//! are released when its lease expires. Token-sharing detection on the same cluster: one
//! token from twenty loopback addresses is flagged, then refused at every edge.

mod common;

use std::net::IpAddr;
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

/// etcd, one control plane and `n` edges on a demo asset (a master playlist, one media
/// playlist, one segment), with this test's token issuer trusted.
struct Cluster {
    etcd: streamgate_store::testkit::Etcd,
    dir: tempfile::TempDir,
    grpc: u16,
    edges: Vec<Edge>,
    admins: Vec<u16>,
    _control: Proc,
}

impl Cluster {
    /// Starts it; `edge_toml` is added to each edge's `[edge.sessions]`.
    async fn start(n: usize, edge_toml: &str) -> Self {
        let etcd = streamgate_store::testkit::start_etcd();
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
        let control = spawn_listening(&["control", "--config"], &cfg, grpc, "control plane");

        let (mut edges, mut admins) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (http, admin) = (free_port(), free_port());
            let cfg = d.join(format!("edge-{i}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[edge]\nhttp_listen = \"127.0.0.1:{http}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 1\n\
                     [edge.gate]\nedge_id = \"e-{i}\"\n[edge.gate.etcd]\nendpoints = {endpoints}\n\
                     [edge.sessions]\nidle_timeout = \"{}s\"\nlease_ttl = \"{}s\"\npublish_interval = \"200ms\"\nsecret_file = \"{}\"\n{edge_toml}\n\
                     [edge.analytics]\npublish_interval = \"200ms\"\n\
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
            admins.push(admin);
        }
        let c = Self {
            etcd,
            dir,
            grpc,
            edges,
            admins,
            _control: control,
        };
        c.mint_key();
        c
    }

    fn ctl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamgate"));
        cmd.args([
            "ctl",
            "--endpoint",
            &format!("http://127.0.0.1:{}", self.grpc),
        ])
        .args(["--token-file"])
        .arg(self.dir.path().join("admin-token"))
        .args(args);
        String::from_utf8(output_ok(&mut cmd).stdout).unwrap()
    }

    fn mint(&self, extra: &[&str]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamgate"));
        cmd.args(["ctl", "token", "mint", "--key"])
            .arg(self.dir.path().join("signing.pem"))
            .args(["--kid", "k1", "--iss", ISSUER])
            .args(extra);
        String::from_utf8(output_ok(&mut cmd).stdout)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The viewers' signing key, trusted by the fleet.
    fn mint_key(&self) {
        let pem = self.dir.path().join("signing.pem");
        streamgate_control::token::SigningKey::generate_ed25519(&pem, "k1").unwrap();
        let jwk = self.mint(&["--public-jwk"]);
        self.ctl(&["key", "add", "--jwk", &jwk]);
    }

    /// A viewer token of `sub` for the demo.
    fn viewer(&self, sub: &str) -> String {
        self.mint(&[
            "--aud",
            "streamgate",
            "--sub",
            sub,
            "--scope",
            "demo",
            "--ttl",
            "30m",
        ])
    }

    /// Applies a policy given as YAML, and binds the demo to it.
    fn apply(&self, name: &str, yaml: &str) {
        let f = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        self.ctl(&["policy", "apply", "-f", f.to_str().unwrap()]);
        let assets = self.ctl(&["asset", "list", "--output", "json"]);
        if assets.contains("\"demo\"") {
            self.ctl(&["asset", "bind", "demo", name]);
        } else {
            self.ctl(&["asset", "register", "demo", "--policy", name]);
        }
    }

    /// Waits until every edge enforces the demo's policy (401 without a token).
    async fn synced(&self, c: &reqwest::Client) {
        for e in &self.edges {
            let url = format!("{}/v/demo/master.m3u8", e.url);
            let what = format!("{} synced", e.url);
            common::eventually(Duration::from_secs(20), &what, || async {
                c.get(&url).send().await.unwrap().status() == 401
            })
            .await;
        }
    }
}

/// The dev viewers' rule with this test's issuer, plus `limits`.
fn viewers_policy(id: &str, limits: &str) -> String {
    format!(
        "id: {id}\nrule:\n  jwt:\n    issuer: \"{ISSUER}\"\n    audience: streamgate\n    scope_claim: sg_scope\nlimits:\n{limits}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_per_viewer_hold_across_three_edges() {
    let mut cluster = Cluster::start(3, "").await;
    let urls: Vec<String> = cluster.edges.iter().map(|e| e.url.clone()).collect();
    // The shipped two-streams policy (with this test's issuer).
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/examples/two-streams.yaml"
    ))
    .unwrap();
    assert!(shipped.contains("max_streams: 2"), "{shipped}");
    let policy = shipped.replace("issuer: streamgate-dev", &format!("issuer: \"{ISSUER}\""));
    cluster.apply("two-streams", &policy);
    let token = cluster.viewer("alice");
    let other = cluster.viewer("bob");

    let c = reqwest::Client::new();
    cluster.synced(&c).await;
    // Two sessions through two edges play.
    let a = start(&c, &urls[0], &token).await.unwrap();
    assert_eq!(a.segment(&c).await, 200);
    let b = start(&c, &urls[1], &token).await.unwrap();
    let admitted_b = Instant::now();
    assert_eq!(b.segment(&c).await, 200);
    // How soon b's count is in etcd for the other edges to see.
    let store =
        streamgate_store::etcd::EtcdStore::connect(std::slice::from_ref(&cluster.etcd.endpoint))
            .await
            .unwrap();
    let streams = format!("{}streams/", streamgate_store::PREFIX);
    common::eventually_every(
        Duration::from_secs(1).saturating_sub(admitted_b.elapsed()),
        Duration::from_millis(10),
        "e-1 published its count",
        || async {
            let (keys, _) = streamgate_store::Store::list(&store, &streams)
                .await
                .unwrap();
            keys.iter().any(|(k, _)| k.ends_with("/e-1"))
        },
    )
    .await;
    eprintln!(
        "the second session's count was in etcd {:.0?} after its admission",
        admitted_b.elapsed()
    );
    // A third, on the third edge, a second later: refused for the cap.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(admitted_b.elapsed())).await;
    assert_eq!(
        start(&c, &urls[2], &token).await.err(),
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
    let bob = start(&c, &urls[2], &other).await.unwrap();
    assert_eq!(bob.segment(&c).await, 200);
    // A session's id is the viewer's: bob's id with alice's token is no session of hers.
    let stolen = Session {
        base: urls[2].clone(),
        query: format!("token={token}&{}", bob.query.split('&').nth(1).unwrap()),
    };
    assert_eq!(stolen.segment(&c).await, 403);

    // Session a ends (its player stops); b keeps playing. A new session is admitted
    // once a has been idle for the timeout.
    let t0 = Instant::now();
    let c_session = loop {
        assert_eq!(b.segment(&c).await, 200);
        match start(&c, &urls[2], &token).await {
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
        start(&c, &urls[0], &token).await.err(),
        Some((403, "stream_limit".to_owned()))
    );

    // Kill -9 the edge that plays b: its sessions go with its lease, not its idle timeout.
    let mut dead = cluster.edges[1].proc.take().unwrap();
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    let t0 = Instant::now();
    loop {
        assert_eq!(c_session.segment(&c).await, 200);
        match start(&c, &urls[0], &token).await {
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
    cluster.etcd.stop();
}

/// GETs the demo's master playlist at `edge` with `token`, from source address
/// 127.0.0.`from`: the status and the refusal's reason.
async fn master_from(edge: &str, token: &str, from: u8) -> (u16, String) {
    let c = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, from]))
        .build()
        .unwrap();
    let r = c
        .get(format!("{edge}/v/demo/master.m3u8?token={token}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, reason)
}

async fn metric(admin: u16, line: &str) -> u64 {
    common::metric_sum(admin, line).await as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_shared_from_twenty_addresses_is_flagged_then_refused_fleet_wide() {
    // One network per address, so that 127.0.0.x are twenty networks.
    let mut cluster = Cluster::start(2, "ipv4_prefix = 32").await;
    let urls: Vec<String> = cluster.edges.iter().map(|e| e.url.clone()).collect();
    let c = reqwest::Client::new();
    cluster.apply(
        "share-watch",
        &viewers_policy("share-watch", "  sharing: { window: 1m, max_networks: 10 }"),
    );
    cluster.synced(&c).await;

    // Flag only: all twenty play; the token is flagged once, counted and audited.
    let alice = cluster.viewer("alice");
    for from in 2..22 {
        assert_eq!(
            master_from(&urls[0], &alice, from).await,
            (200, String::new())
        );
    }
    let flagged = "streamgate_edge_sharing_flagged_total{action=\"flag\"} ";
    assert_eq!(metric(cluster.admins[0], flagged).await, 1);
    let t0 = Instant::now();
    let entry = loop {
        let audit: serde_json::Value =
            serde_json::from_str(&cluster.ctl(&["audit", "--output", "json"])).unwrap();
        if let Some(e) = audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "sharing.flag")
        {
            break e.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no audit entry: {audit:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["actor"], "edge:e-0", "{entry:#}");
    let target = entry["target"].as_str().unwrap();
    assert!(
        target.contains("\"alice\": 11 networks") && target.contains("share-watch"),
        "{target}"
    );

    // With deny_for: the eleventh network is refused, then every network at every edge.
    cluster.apply(
        "share-deny",
        &viewers_policy(
            "share-deny",
            "  sharing: { window: 1m, max_networks: 10, deny_for: 30s }",
        ),
    );
    let probe = cluster.viewer("probe");
    let t0 = Instant::now();
    'applied: loop {
        for from in 100..111 {
            if master_from(&urls[0], &probe, from).await.1 == "token_shared" {
                break 'applied;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "share-deny never applied"
        );
    }
    let carol = cluster.viewer("carol");
    for from in 2..12 {
        assert_eq!(master_from(&urls[0], &carol, from).await.0, 200, "{from}");
    }
    let refused = (403, "token_shared".to_owned());
    assert_eq!(master_from(&urls[0], &carol, 12).await, refused);
    assert_eq!(
        master_from(&urls[0], &carol, 2).await,
        refused,
        "from every network"
    );
    let took = common::eventually_every(
        Duration::from_secs(1),
        Duration::from_millis(20),
        "the other edge refused",
        || async { master_from(&urls[1], &carol, 2).await == refused },
    )
    .await;
    eprintln!("a denial reached the other edge in {took:.0?}");
    let bob = cluster.viewer("bob");
    for u in &urls {
        assert_eq!(master_from(u, &bob, 2).await.0, 200, "others play on");
    }
    assert_eq!(
        metric(
            cluster.admins[0],
            "streamgate_edge_sharing_flagged_total{action=\"deny\"} "
        )
        .await,
        2,
        "probe and carol"
    );
    let audit = cluster.ctl(&["audit", "--output", "json"]);
    assert!(
        audit.contains("sharing.deny") && audit.contains("carol"),
        "{audit}"
    );

    // The denial lives in etcd under its lease; deleting it lifts it everywhere.
    let store =
        streamgate_store::etcd::EtcdStore::connect(std::slice::from_ref(&cluster.etcd.endpoint))
            .await
            .unwrap();
    let denials = format!("{}denials/", streamgate_store::PREFIX);
    let (keys, _) = streamgate_store::Store::list(&store, &denials)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (k, v) in keys {
        streamgate_store::Store::delete(&store, &k, v.version)
            .await
            .unwrap();
    }
    common::eventually_every(
        Duration::from_secs(2),
        Duration::from_millis(20),
        "the lifted denial let the subject play",
        || async { master_from(&urls[1], &carol, 2).await.0 == 200 },
    )
    .await;
    for e in &mut cluster.edges {
        drop(e.proc.take());
    }
    cluster.etcd.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_play_viewers_over_the_cap_are_exactly_the_ones_refused() {
    let cluster = Cluster::start(3, "").await;
    cluster.apply(
        "two-streams",
        &viewers_policy("two-streams", "  max_streams: 2"),
    );
    let c = reqwest::Client::new();
    cluster.synced(&c).await;
    let token = cluster.viewer("dave");
    // One `load play` per edge, started 0.6 s apart, each with a viewer arriving every
    // 2 s (the first 2 s in): arrivals at 2.0, 2.6, 3.2, 4.0, 4.6 and 5.2 s, farther apart
    // than the counts take to go round, all within the first sessions' life. The first two
    // play; the four after them are over the cap.
    let d = cluster.dir.path();
    let mut runs = Vec::new();
    for (i, e) in cluster.edges.iter().enumerate() {
        let report = d.join(format!("play-{i}.json"));
        let child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["load", "play", &format!("{}/v/demo/master.m3u8", e.url)])
            .args([
                "--rate",
                "0.5",
                "--arrivals",
                "constant",
                "--duration",
                "4500ms",
            ])
            .args(["--token", &token, "--cmcd", "query", "--quiet", "--report"])
            .arg(&report)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        runs.push((child, report));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let mut outcomes = Vec::new();
    for (mut child, report) in runs {
        assert!(child.wait().unwrap().success());
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
        assert_eq!(r["viewers"]["started"], 2, "{r:#}");
        for f in r["failures"].as_array().unwrap() {
            assert_eq!(f["status"], 403, "{f:#}");
        }
        let reasons: Vec<&String> = r["errors"].as_object().unwrap().keys().collect();
        assert!(reasons.iter().all(|k| k.contains("stream_limit")), "{r:#}");
        outcomes.push((
            r["viewers"]["completed"].as_u64().unwrap(),
            r["viewers"]["failed"].as_u64().unwrap(),
        ));
    }
    // Edge 0's first viewer (2.0 s) and edge 1's (2.6 s) play; every later one is refused.
    assert_eq!(outcomes, [(1, 1), (1, 1), (0, 2)]);

    // What the players sent is summed over the fleet by `ctl analytics`.
    let t0 = Instant::now();
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&cluster.ctl(&["analytics", "--output", "json"])).unwrap();
        let demo = v["assets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["asset"] == "demo");
        if v["edges"] == 3 && demo.is_some_and(|d| d["sessions"] == 2 && d["edges"] == 2) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "ctl analytics: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut cluster = cluster;
    for e in &mut cluster.edges {
        drop(e.proc.take());
    }
    cluster.etcd.stop();
}
