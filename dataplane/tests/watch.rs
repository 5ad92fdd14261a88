//! The edge as a watcher of real etcd processes: changes apply without a restart, purges
//! reach the cache, the edge reports its revision, and it keeps enforcing its last known
//! state through etcd outages, restarts and compactions.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use streamgate_edge::EdgeConfig;
use streamgate_edge::config::GateConfig;
use streamgate_origin::OriginConfig;
use streamgate_store::etcd::EtcdStore;
use streamgate_store::testkit::{Etcd, start_etcd};
use streamgate_store::{PREFIX, Store};
use support::{TcpRelay, TestEdge, write};

const OPEN: &str = r#"{"id": "p", "rule": {"public": true}}"#;
const CLOSED: &str = r#"{"id": "p", "rule": {"ip": {"deny": ["127.0.0.0/8"]}}}"#;
const OPEN_Q: &str = r#"{"id": "q", "rule": {"public": true}}"#;
const CLOSED_Q: &str = r#"{"id": "q", "rule": {"ip": {"deny": ["127.0.0.0/8"]}}}"#;

fn origin(dir: &Path) {
    write(dir, "origin/demo/master.m3u8", b"#EXTM3U\n");
    write(dir, "origin/demo/seg-1.m4s", b"version one");
    write(dir, "origin/other/master.m3u8", b"#EXTM3U\n");
}

fn config(dir: &Path, endpoint: &str, edge_id: &str) -> EdgeConfig {
    EdgeConfig {
        origin: OriginConfig::Fs {
            root: dir.join("origin"),
        },
        gate: GateConfig {
            etcd: Some(streamgate_store::etcd::EtcdConfig::new(vec![
                endpoint.to_owned(),
            ])),
            snapshot: Some(dir.join(format!("{edge_id}-lkg.json"))),
            edge_id: Some(edge_id.to_owned()),
            initial_sync_timeout: Duration::from_secs(1),
            ..GateConfig::default()
        },
        ..EdgeConfig::default()
    }
}

async fn put(store: &EtcdStore, key: &str, value: &str) -> i64 {
    let key = format!("{PREFIX}{key}");
    let current = store.get(&key).await.unwrap().map_or(0, |v| v.version);
    store
        .put(&key, value.as_bytes().to_vec(), current)
        .await
        .unwrap()
}

async fn seed(store: &EtcdStore) -> i64 {
    put(store, "policies/p", OPEN).await;
    put(
        store,
        "policies/q",
        r#"{"id": "q", "rule": {"public": true}}"#,
    )
    .await;
    put(store, "assets/demo", r#"{"id": "demo", "policy": "p"}"#).await;
    put(store, "assets/other", r#"{"id": "other", "policy": "q"}"#).await
}

async fn status(url: &str) -> u16 {
    match reqwest::get(url).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls until `url` answers `want`; returns how long it took.
async fn until_status(url: &str, want: u16, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = status(url).await;
        if got == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{url}: still {got}, wanted {want} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn ready(edge: &TestEdge) {
    until_status(
        &format!("{}/readyz", edge.admin),
        200,
        Duration::from_secs(15),
    )
    .await;
}

fn lkg_revision(path: &PathBuf) -> i64 {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["revision"].as_i64().unwrap()
}

async fn connect(etcd: &Etcd) -> EtcdStore {
    EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_follows_etcd_changes_purges_and_reports_its_revision() {
    let etcd = start_etcd();
    let store = connect(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    origin(dir.path());
    let edge = TestEdge::start(config(dir.path(), &etcd.endpoint, "edge-a"));
    // Before the first sync nothing gated is served; after it, readiness turns true.
    seed(&store).await;
    ready(&edge).await;
    let master = edge.url("/v/demo/master.m3u8");
    until_status(&master, 200, Duration::from_secs(5)).await;
    // Without a credential an unknown asset answers as a gated one: 401.
    assert_eq!(status(&edge.url("/v/unknown/x.m3u8")).await, 401);

    // A policy change applies without a restart, both ways.
    put(&store, "policies/p", CLOSED).await;
    let took = until_status(&master, 403, Duration::from_secs(5)).await;
    eprintln!("deny applied after {took:?}");
    put(&store, "policies/p", OPEN).await;
    until_status(&master, 200, Duration::from_secs(5)).await;

    // A deleted policy fails closed (403), a deleted asset is unknown (404).
    let p = store
        .get(&format!("{PREFIX}policies/q"))
        .await
        .unwrap()
        .unwrap();
    store
        .delete(&format!("{PREFIX}policies/q"), p.version)
        .await
        .unwrap();
    until_status(
        &edge.url("/v/other/master.m3u8"),
        403,
        Duration::from_secs(5),
    )
    .await;
    // An invalid stored policy is left out and its assets fail closed, the rest still serve.
    put(&store, "policies/p", r#"{"id": "p", "rule": {"bogus": 1}}"#).await;
    until_status(&master, 403, Duration::from_secs(5)).await;
    assert!(
        edge.metric("streamgate_edge_state_invalid_documents_total")
            .await
            >= 1.0
    );
    let open_rev = put(&store, "policies/p", OPEN).await;
    until_status(&master, 200, Duration::from_secs(5)).await;

    // A purge reaches the cache: the next read goes to origin and sees the new bytes.
    let seg = edge.url("/v/demo/seg-1.m4s");
    reqwest::get(&seg).await.unwrap();
    let r = reqwest::get(&seg).await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    write(dir.path(), "origin/demo/seg-1.m4s", b"version two");
    assert_eq!(
        reqwest::get(&seg).await.unwrap().bytes().await.unwrap(),
        "version one",
        "cached until purged"
    );
    put(
        &store,
        "purges/00000000000000000001",
        r#"{"seq": 1, "asset": "demo"}"#,
    )
    .await;
    let t0 = Instant::now();
    loop {
        let r = reqwest::get(&seg).await.unwrap();
        let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
        let body = r.bytes().await.unwrap();
        if body == "version two" {
            assert_eq!(cache, "MISS");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "purge not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(edge.metric("streamgate_edge_purges_total").await, 1.0);

    // The edge reports what it applied, and keeps a last-known-good copy on disk.
    let t0 = Instant::now();
    loop {
        let rec = store.get(&format!("{PREFIX}edges/edge-a")).await.unwrap();
        if let Some(rec) = rec {
            let v: Value = serde_json::from_slice(&rec.value).unwrap();
            if v["revision"].as_i64().unwrap() >= open_rev {
                assert_eq!(v["id"], "edge-a");
                assert!(v["applied_at"].as_str().unwrap().ends_with('Z'));
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no edge status at {open_rev}: {:?}",
            store
                .get(&format!("{PREFIX}edges/edge-a"))
                .await
                .unwrap()
                .map(|v| String::from_utf8_lossy(&v.value).into_owned())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lkg = dir.path().join("edge-a-lkg.json");
    let rev = edge.metric("streamgate_edge_policy_revision").await as i64;
    let t0 = Instant::now();
    while lkg_revision(&lkg) != rev {
        assert!(t0.elapsed() < Duration::from_secs(5), "LKG not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(edge.metric("streamgate_edge_state_connected").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_down_for_30s_fails_no_valid_request_and_a_restarted_edge_serves_its_snapshot() {
    let mut etcd = start_etcd();
    let store = connect(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    origin(dir.path());
    seed(&store).await;
    put(&store, "policies/q", CLOSED_Q).await; // "other" is denied
    let edge = TestEdge::start(config(dir.path(), &etcd.endpoint, "edge-b"));
    ready(&edge).await;
    let master = edge.url("/v/demo/master.m3u8");
    let other = edge.url("/v/other/master.m3u8");
    until_status(&other, 403, Duration::from_secs(5)).await;
    let lkg = dir.path().join("edge-b-lkg.json");
    let want_rev = edge.metric("streamgate_edge_policy_revision").await as i64;
    let t0 = Instant::now();
    while !lkg.exists() || lkg_revision(&lkg) != want_rev {
        assert!(t0.elapsed() < Duration::from_secs(5), "LKG not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A client streams (a request every 20 ms) while etcd is down for 30 s.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, ok, bad, master) = (stop.clone(), ok.clone(), bad.clone(), master.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                match http.get(&master).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => bad.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    etcd.stop();
    let down = Instant::now();
    // Meanwhile a second edge starts with no etcd: it serves from its snapshot file.
    std::fs::copy(&lkg, dir.path().join("edge-c-lkg.json")).unwrap();
    let restarted = TestEdge::start(config(dir.path(), &etcd.endpoint, "edge-c"));
    ready(&restarted).await;
    assert_eq!(
        status(&restarted.url("/v/demo/master.m3u8")).await,
        200,
        "allowed by the last known state"
    );
    assert_eq!(
        status(&restarted.url("/v/other/master.m3u8")).await,
        403,
        "denied by the last known state"
    );
    assert_eq!(
        restarted.metric("streamgate_edge_policy_revision").await as i64,
        want_rev
    );
    assert_eq!(
        restarted.metric("streamgate_edge_state_connected").await,
        0.0
    );
    // A third starts with no etcd and no snapshot: not ready (503), and says so in its
    // metrics, which the StreamGateEdgeNotReady alert reads.
    let blind = TestEdge::start(config(dir.path(), &etcd.endpoint, "edge-d"));
    until_status(
        &format!("{}/readyz", blind.admin),
        503,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(blind.metric("streamgate_edge_ready").await, 0.0);
    assert_eq!(restarted.metric("streamgate_edge_ready").await, 1.0);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    assert_eq!(status(&other).await, 403, "still denied while etcd is down");
    assert_eq!(edge.metric("streamgate_edge_state_connected").await, 0.0);
    etcd.start();
    let up = Instant::now();
    // Both edges reconnect (the backoff is capped at 5 s) and pick up a new change.
    put(&connect(&etcd).await, "policies/q", OPEN_Q).await;
    until_status(&other, 200, Duration::from_secs(30)).await;
    until_status(
        &restarted.url("/v/other/master.m3u8"),
        200,
        Duration::from_secs(30),
    )
    .await;
    eprintln!("edges caught up {:?} after etcd returned", up.elapsed());
    ready(&blind).await;
    assert_eq!(blind.metric("streamgate_edge_ready").await, 1.0);
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();
    let (ok, bad) = (ok.load(Ordering::SeqCst), bad.load(Ordering::SeqCst));
    eprintln!("streaming client: {ok} ok, {bad} failed");
    assert_eq!(bad, 0, "a valid request failed while etcd was down");
    assert!(ok > 500, "the client kept streaming: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_while_disconnected_recovers_without_a_restart() {
    let etcd = start_etcd();
    let store = connect(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    origin(dir.path());
    seed(&store).await;
    let target: std::net::SocketAddr = etcd.endpoint.trim_start_matches("http://").parse().unwrap();
    let relay = TcpRelay::start(target).await;
    let edge = TestEdge::start(config(
        dir.path(),
        &format!("http://{}", relay.addr),
        "edge-d",
    ));
    ready(&edge).await;
    let master = edge.url("/v/demo/master.m3u8");
    assert_eq!(status(&master).await, 200);
    let reloads = edge.metric("streamgate_edge_state_reloads_total").await;

    // Disconnect the edge, change the policy, purge, and compact past everything it saw.
    relay.cut();
    let t0 = Instant::now();
    while edge.metric("streamgate_edge_state_connected").await != 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(15), "edge never noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put(&store, "policies/p", CLOSED).await;
    for i in 0..20 {
        put(&store, "jobs/noise", &format!("{{\"n\": {i}}}")).await;
    }
    let (_, rev) = store.list(PREFIX).await.unwrap();
    store
        .client()
        .await
        .unwrap()
        .compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    assert_eq!(status(&master).await, 200, "the edge cannot know yet");

    relay.restore();
    let took = until_status(&master, 403, Duration::from_secs(30)).await;
    eprintln!("recovered {took:?} after reconnecting");
    assert!(edge.metric("streamgate_edge_state_reloads_total").await > reloads);
    assert!(
        edge.metric("streamgate_edge_state_watch_errors_total")
            .await
            >= 1.0
    );
    assert!(edge.metric("streamgate_edge_policy_revision").await as i64 >= rev);
}
