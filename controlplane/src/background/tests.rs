use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use streamgate_store::embedded::EmbeddedStore;

fn record(id: &str, at: SystemTime) -> Vec<u8> {
    serde_json::json!({"id": id, "revision": 1,
        "applied_at": humantime::format_rfc3339_millis(at).to_string()})
    .to_string()
    .into_bytes()
}

#[test]
fn only_readable_old_records_expire() {
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    assert!(edge_record_expired(&record("a", now - hour), now, hour));
    assert!(!edge_record_expired(
        &record("a", now - hour + Duration::from_secs(1)),
        now,
        hour
    ));
    assert!(!edge_record_expired(b"not json", now, hour));
    assert!(!edge_record_expired(br#"{"id":"a"}"#, now, hour));
    // A clock ahead of ours is not old.
    assert!(!edge_record_expired(&record("a", now + hour), now, hour));
}

#[tokio::test]
async fn the_holder_prunes_old_records_and_keeps_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.log")).unwrap());
    let now = SystemTime::now();
    let old = format!("{PREFIX}edges/old");
    let fresh = format!("{PREFIX}edges/fresh");
    store
        .put(&old, record("old", now - Duration::from_secs(7200)), 0)
        .await
        .unwrap();
    store.put(&fresh, record("fresh", now), 0).await.unwrap();
    let metrics = Arc::new(ControlMetrics::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        Arc::clone(&store),
        Background {
            instance: "cp-1".into(),
            ttl: Duration::from_secs(2),
            edge_prune_after: Duration::from_secs(600),
            metrics: Arc::clone(&metrics),
        },
        async {
            let _ = stopped.await;
        },
    ));
    let t0 = std::time::Instant::now();
    while store.get(&old).await.unwrap().is_some() {
        assert!(t0.elapsed() < Duration::from_secs(5), "not pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.get(&fresh).await.unwrap().is_some());
    let holder = streamgate_store::election::election_key(ROLE);
    assert_eq!(store.get(&holder).await.unwrap().unwrap().value, b"cp-1");
    while metrics.prunes.get() < 1 {
        assert!(t0.elapsed() < Duration::from_secs(5), "prune not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.prunes.get(), 1, "one stale record pruned");
    assert_eq!(metrics.election_held.get(), 1);
    stop.send(()).unwrap();
    task.await.unwrap();
    // Resigned on shutdown.
    assert!(store.get(&holder).await.unwrap().is_none());
    assert_eq!(metrics.election_held.get(), 0);
}
