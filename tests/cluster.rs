//! StreamGate on a real cluster, as separate processes on one machine: a 3-member etcd
//! cluster, two `streamgate control` processes and three `streamgate edge` processes, all
//! given the three endpoints. While a client streams a gated segment from every edge and
//! changes go in through both control planes, the test kills each etcd member in turn (the
//! leader too), freezes one (SIGSTOP), kills the control plane holding the election, and
//! kills an edge. It asserts that every change is accepted on the first try and enforced
//! on every surviving edge, that no valid request fails for longer than an election, that
//! the other control plane takes the background work over within the election TTL, and
//! that a dead edge's record vanishes within its lease TTL. It prints what it measured
//! (docs/DEPLOY.md and docs/SCALE.md quote it).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{Proc, free_port, spawn_listening};
use streamgate_proto::control::v1 as pb;
use streamgate_store::etcd::EtcdStore;
use streamgate_store::testkit::start_cluster;
use streamgate_store::{PREFIX, Store};
use tonic::Request;

const TOKEN: &str = "operator-token-0123456789";
const ISSUER: &str = "https://issuer.test";
/// The control planes' election TTL in this test.
const ELECTION_TTL: Duration = Duration::from_secs(5);
/// The edges' record lease (dataplane's RECORD_TTL).
const EDGE_TTL: Duration = Duration::from_secs(10);

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|e| format!("\"{e}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A client that fetches `url` every 25 ms until stopped; remembers the longest time
/// between two successes and how many requests failed.
struct Streamer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, u64, u64)>,
}

impl Streamer {
    fn start(url: String, token: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let (mut last_ok, mut worst, mut ok, mut failed) =
                (Instant::now(), Duration::ZERO, 0u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                let good = c
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                let now = Instant::now();
                if good {
                    worst = worst.max(now - last_ok);
                    last_ok = now;
                    ok += 1;
                } else {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            worst = worst.max(Instant::now() - last_ok);
            (worst, ok, failed)
        });
        Self { stop, task }
    }

    async fn finish(self) -> (Duration, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Polls `url` until it answers 200; how long that took.
async fn until_200(c: &reqwest::Client, url: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if c.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{url} not enforced within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_loses_nothing_when_a_member_a_control_plane_or_an_edge_dies() {
    let t_start = Instant::now();
    let mut etcd = start_cluster(3);
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    for p in ["demo/master.m3u8", "demo/seg-1.m4s"] {
        let path = d.join("origin").join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"segment bytes").unwrap();
    }
    const CHANGES: usize = 40;
    for n in 0..CHANGES {
        let path = d.join(format!("origin/probe-{n}/master.m3u8"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"#EXTM3U\n").unwrap();
    }

    // Two control planes.
    let mut controls: Vec<Option<Proc>> = Vec::new();
    let mut grpc = Vec::new();
    for i in 0..2 {
        let port = free_port();
        let cfg = d.join(format!("control-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[control]\nadmin_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:{port}\"\nstore = \"etcd\"\nadmin_token_file = \"{}\"\n\
                 instance = \"cp-{i}\"\nelection_ttl = \"{}s\"\n[control.etcd]\nendpoints = {}\n",
                d.join("admin-token").display(),
                ELECTION_TTL.as_secs(),
                toml_list(&endpoints)
            ),
        )
        .unwrap();
        controls.push(Some(spawn_listening(
            &["control", "--config"],
            &cfg,
            port,
            "control plane",
        )));
        grpc.push(format!("http://127.0.0.1:{port}"));
    }
    // Three edges.
    let mut edges: Vec<Option<Proc>> = Vec::new();
    let mut edge_urls = Vec::new();
    for i in 0..3 {
        let (http, admin) = (free_port(), free_port());
        let cfg = d.join(format!("edge-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[edge]\nhttp_listen = \"127.0.0.1:{http}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 1\n\
                 [edge.gate]\nsnapshot = \"{}\"\nedge_id = \"e-{i}\"\n[edge.gate.etcd]\nendpoints = {}\n\
                 [origin]\nkind = \"fs\"\nroot = \"{}\"\n",
                d.join(format!("edge-{i}-lkg.json")).display(),
                toml_list(&endpoints),
                d.join("origin").display()
            ),
        )
        .unwrap();
        edges.push(Some(spawn_listening(
            &["edge", "--config"],
            &cfg,
            http,
            "edge",
        )));
        edge_urls.push(format!("http://127.0.0.1:{http}"));
    }

    // The operator's key, a gated policy, an open one, and the streamed asset.
    streamgate_control::token::SigningKey::generate_ed25519(&d.join("signing.pem"), "k1").unwrap();
    let ctl_mint = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["ctl", "token", "mint", "--key"])
            .arg(d.join("signing.pem"))
            .args(["--kid", "k1", "--iss", ISSUER])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let jwk = ctl_mint(&["--public-jwk"]);
    let token = ctl_mint(&["--aud", "streamgate", "--scope", "demo", "--ttl", "30m"]);
    let channel = |url: &str| {
        tonic::transport::Channel::from_shared(url.to_owned())
            .unwrap()
            .timeout(Duration::from_secs(30))
            .connect_lazy()
    };
    let chans: Vec<_> = grpc.iter().map(|u| channel(u)).collect();
    let mut keys = pb::key_service_client::KeyServiceClient::new(chans[0].clone());
    keys.add(authed(pb::AddKeyRequest { jwk_json: jwk }))
        .await
        .unwrap();
    let mut policies = pb::policy_service_client::PolicyServiceClient::new(chans[1].clone());
    for doc in [
        format!(
            "id: viewers\non_unavailable: fail_closed\nrule:\n  jwt: {{issuer: \"{ISSUER}\", audience: streamgate}}\n"
        ),
        "id: open\nrule: {public: true}\n".to_owned(),
    ] {
        policies
            .apply(authed(pb::ApplyPolicyRequest {
                document: doc,
                expected_version: 0,
            }))
            .await
            .unwrap();
    }
    let register = |ch: tonic::transport::Channel, id: String, policy: &'static str| async move {
        let mut assets = pb::asset_service_client::AssetServiceClient::new(ch);
        let t0 = Instant::now();
        let r = assets
            .register(authed(pb::RegisterAssetRequest {
                asset: Some(pb::Asset {
                    id: id.clone(),
                    policy_id: policy.into(),
                    description: String::new(),
                    version: 0,
                    ..Default::default()
                }),
            }))
            .await;
        (r.map(|_| ()), t0.elapsed())
    };
    register(chans[0].clone(), "demo".into(), "viewers")
        .await
        .0
        .unwrap();
    let c = reqwest::Client::new();
    let mut streamers = Vec::new();
    for e in &edge_urls {
        let seg = format!("{e}/v/demo/seg-1.m4s");
        let t0 = Instant::now();
        loop {
            let ok = c
                .get(&seg)
                .bearer_auth(&token)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{e} never served the demo"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        streamers.push(Some(Streamer::start(seg, token.clone())));
    }
    let store = EtcdStore::connect(&endpoints).await.unwrap();
    let election_key = streamgate_store::election::election_key("control");
    let holder = async |store: &EtcdStore| {
        store
            .get(&election_key)
            .await
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v.value).into_owned())
    };
    let t0 = Instant::now();
    while holder(&store).await.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no control plane elected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One change: register probe-n (public) through control plane `via`; every live edge
    // must serve it. Returns the API latency and each edge's time to enforce.
    let mut next = 0usize;
    let mut samples: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    let mut api: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    let live_edges = |edges: &Vec<Option<Proc>>| -> Vec<String> {
        edges
            .iter()
            .zip(&edge_urls)
            .filter(|(p, _)| p.is_some())
            .map(|(_, u)| u.clone())
            .collect()
    };
    macro_rules! change {
        ($kind:expr, $via:expr) => {{
            let n = next;
            next += 1;
            let via: usize = $via;
            let (r, took) = register(chans[via].clone(), format!("probe-{n}"), "open").await;
            r.unwrap_or_else(|e| panic!("{}: change {n} through cp-{via} failed on the first try: {e}", $kind));
            let t_api = Instant::now();
            let mut worst = Duration::ZERO;
            for e in live_edges(&edges) {
                let url = format!("{e}/v/probe-{n}/master.m3u8");
                until_200(&c, &url, Duration::from_secs(15)).await;
                let enforced = t_api.elapsed();
                worst = worst.max(enforced);
                samples.entry($kind).or_default().push(enforced);
            }
            api.entry($kind).or_default().push(took);
            eprintln!("{:>7.1?} {}: change {n} via cp-{via} accepted in {took:.1?}, enforced by every live edge {worst:.1?} later",
                t_start.elapsed(), $kind);
        }};
    }

    change!("no loss", 0);
    change!("no loss", 1);
    // Kill each member in turn, the leader first, twice over.
    for round in 0..2 {
        let leader = etcd.wait_leader(Duration::from_secs(30)).unwrap();
        for k in 0..3 {
            let i = (leader + k) % 3;
            let kind = if k == 0 {
                "etcd leader killed"
            } else {
                "etcd follower killed"
            };
            etcd.members[i].stop();
            change!(kind, (round + k) % 2);
            change!(kind, (round + k + 1) % 2);
            etcd.members[i].start();
            etcd.wait_leader(Duration::from_secs(30)).unwrap();
        }
    }
    // Freeze one member (the leader), then a follower.
    for k in 0..2 {
        let leader = etcd.wait_leader(Duration::from_secs(30)).unwrap();
        let i = (leader + k) % 3;
        etcd.members[i].freeze();
        change!("etcd member frozen", 0);
        change!("etcd member frozen", 1);
        etcd.members[i].thaw();
        etcd.wait_leader(Duration::from_secs(30)).unwrap();
    }

    // Kill the control plane holding the election: the other takes the role (and the
    // pruning it does) over within the TTL, and serves every change meanwhile.
    let leading = holder(&store).await.unwrap();
    let (dead, alive) = if leading == "cp-0" { (0, 1) } else { (1, 0) };
    let killed_at = Instant::now();
    drop(controls[dead].take());
    let ghost = format!("{PREFIX}edges/ghost");
    let old =
        humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(7200)).to_string();
    store
        .put(
            &ghost,
            format!("{{\"id\":\"ghost\",\"revision\":1,\"applied_at\":\"{old}\"}}").into_bytes(),
            0,
        )
        .await
        .unwrap();
    change!("control plane killed", alive);
    let takeover = loop {
        if holder(&store).await.as_deref() == Some(["cp-0", "cp-1"][alive]) {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < ELECTION_TTL + Duration::from_secs(5),
            "cp-{alive} did not take the election over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pruned = loop {
        if store.get(&ghost).await.unwrap().is_none() {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < ELECTION_TTL + Duration::from_secs(10),
            "the ghost record was not pruned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "control plane cp-{dead} killed: cp-{alive} elected {takeover:.1?} later (TTL {ELECTION_TTL:?}), its background work pruned a dead record {pruned:.1?} after the kill"
    );
    assert!(
        takeover <= ELECTION_TTL + Duration::from_secs(2),
        "takeover took {takeover:?}"
    );
    change!("control plane killed", alive);

    // Kill an edge: the others follow the next change, and its record vanishes within
    // its lease TTL.
    let (streamed_worst, _, _) = streamers[2].take().unwrap().finish().await;
    let killed_at = Instant::now();
    drop(edges[2].take());
    change!("edge killed", alive);
    let record = format!("{PREFIX}edges/e-2");
    let gone = loop {
        if store.get(&record).await.unwrap().is_none() {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < EDGE_TTL + Duration::from_secs(5),
            "the dead edge's record stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("edge e-2 killed: its record vanished {gone:.1?} later (lease TTL {EDGE_TTL:?})");
    assert!(gone <= EDGE_TTL + Duration::from_secs(2));
    assert!(streamed_worst < Duration::from_secs(3));
    change!("edge killed", alive);

    // Nothing lost: every change is enforced on every surviving edge, and listed.
    for e in live_edges(&edges) {
        for n in 0..next {
            let url = format!("{e}/v/probe-{n}/master.m3u8");
            assert_eq!(c.get(&url).send().await.unwrap().status(), 200, "{url}");
        }
    }
    let (items, _) = store.list(&format!("{PREFIX}assets/")).await.unwrap();
    assert_eq!(items.len(), next + 1, "assets lost or doubled");
    let survivors: Vec<String> = store
        .list(&format!("{PREFIX}edges/"))
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(survivors, ["e-0", "e-1"]);

    // No valid request failed for longer than an election on any surviving edge.
    for (i, s) in streamers.into_iter().enumerate() {
        let Some(s) = s else { continue };
        let (worst, ok, failed) = s.finish().await;
        eprintln!(
            "edge e-{i}: {ok} segment requests served, {failed} failed, longest gap between successes {worst:.0?}"
        );
        assert!(
            worst < Duration::from_secs(3),
            "e-{i} failed valid requests for {worst:?}"
        );
        assert_eq!(failed, 0, "e-{i} failed {failed} valid requests");
    }

    eprintln!(
        "\ntime to enforce a change on every live edge, after the API answered (p50 / max over the samples):"
    );
    for (kind, v) in &mut samples {
        let a = api.get_mut(kind).unwrap();
        eprintln!(
            "  {kind:<22} enforce p50 {:>6.1?}  max {:>6.1?}  ({} samples); API p50 {:>6.1?}  max {:>6.1?}",
            percentile(v, 0.5),
            percentile(v, 1.0),
            v.len(),
            percentile(a, 0.5),
            percentile(a, 1.0)
        );
    }
    eprintln!("the whole test took {:.0?}", t_start.elapsed());
    for (kind, v) in &mut samples {
        let max = percentile(v, 1.0);
        // Kills are met within 1 s in the runs docs/DEPLOY.md quotes; the bound here
        // leaves room for a loaded 2-core CI machine, a frozen member needs its detection.
        let bound = if kind.contains("frozen") {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(2)
        };
        assert!(max <= bound, "{kind}: enforced after {max:?}");
    }
}

/// Runs `streamgate <what> --config cfg` and waits for it to exit (it must, within 20 s).
fn exits(what: &str, cfg: &std::path::Path) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([what, "--config"])
        .arg(cfg)
        .env("STREAMGATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{what} kept running with refused etcd credentials");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn refused_etcd_credentials_fail_at_start_with_exit_69() {
    use streamgate_store::testkit::{ServerTls, pki, start_etcd_with};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ours = pki(&d.join("pki"));
    let stranger = pki(&d.join("other"));
    let etcd = start_etcd_with(ServerTls {
        cert: ours.server.0.clone(),
        key: ours.server.1.clone(),
        client_ca: ours.ca.clone(),
    });
    let etcdctl = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", etcd.endpoint))
            .arg(format!("--cacert={}", ours.ca.display()))
            .arg(format!("--cert={}", ours.client.0.display()))
            .arg(format!("--key={}", ours.client.1.display()))
            .args(args)
            .output()
            .expect("etcdctl runs (./scripts/setup.sh installs it)");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    };
    for args in [
        &["user", "add", "root:root-pass"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "streamgate-control"],
        &[
            "role",
            "grant-permission",
            "streamgate-control",
            "--prefix=true",
            "readwrite",
            PREFIX,
        ],
        &["user", "add", "control:control-pass"],
        &["user", "grant-role", "control", "streamgate-control"],
        &["auth", "enable"],
    ] {
        etcdctl(args);
    }
    std::fs::write(d.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(d.join("wrong-password"), "not-the-password\n").unwrap();
    std::fs::write(d.join("password"), "control-pass\n").unwrap();
    let etcd_table = |cert: &std::path::Path, key: &std::path::Path, pw: &str| {
        format!(
            "endpoints = [\"{}\"]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nusername = \"control\"\npassword_file = \"{}\"\n",
            etcd.endpoint,
            ours.ca.display(),
            cert.display(),
            key.display(),
            d.join(pw).display()
        )
    };
    let control = |name: &str, table: String| {
        let cfg = d.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[control]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:0\"\nstore = \"etcd\"\nadmin_token_file = \"{}\"\n[control.etcd]\n{table}",
                free_port(),
                d.join("admin-token").display()
            ),
        )
        .unwrap();
        cfg
    };
    let (cert, key) = (&ours.client.0, &ours.client.1);
    for (name, table, why) in [
        (
            "wrong-password",
            etcd_table(cert, key, "wrong-password"),
            "authentication failed",
        ),
        (
            "stranger-cert",
            etcd_table(&stranger.client.0, &stranger.client.1, "password"),
            "certificate",
        ),
    ] {
        let cfg = control(name, table);
        // The file itself is valid.
        let check = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["control", "--check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(check.status.success(), "{name}: {check:?}");
        let out = exits("control", &cfg);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{name}: {stderr}");
        assert!(
            stderr.to_ascii_lowercase().contains(why),
            "{name}: {stderr}"
        );
        assert!(
            !stderr.contains("control-pass"),
            "the password was printed: {stderr}"
        );
        eprintln!(
            "control, {name}: exit 69: {}",
            stderr.lines().last().unwrap_or_default()
        );
    }
    // An edge with a certificate from another CA.
    let edge_cfg = d.join("edge.toml");
    std::fs::write(
        &edge_cfg,
        format!(
            "[edge]\nhttp_listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n[edge.gate.etcd]\n{}[origin]\nkind = \"fs\"\nroot = \"{}\"\n",
            free_port(),
            free_port(),
            etcd_table(&stranger.client.0, &stranger.client.1, "password"),
            d.display()
        ),
    )
    .unwrap();
    let out = exits("edge", &edge_cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "edge: {stderr}");
    assert!(
        stderr.contains("certificate") || stderr.contains("alert"),
        "edge: {stderr}"
    );
    // The right credentials start.
    let good = control("good", etcd_table(cert, key, "password"));
    let port: u16 = std::fs::read_to_string(&good)
        .unwrap()
        .split("127.0.0.1:")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let _control = spawn_listening(&["control", "--config"], &good, port, "control plane");
}
