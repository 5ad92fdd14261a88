//! The same contract tests for both stores: the embedded one, and a real etcd
//! (Debian's `etcd-server`, started on free loopback ports).

use std::sync::Arc;
use std::time::Duration;

use super::embedded::EmbeddedStore;
use super::etcd::EtcdStore;
use super::*;

use super::testkit::start_etcd;

async fn contract(store: Arc<dyn Store>) {
    let k = "/streamgate/v1/policies/p1";
    assert!(store.get(k).await.unwrap().is_none());
    let v1 = store.put(k, b"one".to_vec(), 0).await.unwrap();
    assert!(v1 > 0);
    // Creating again, or writing from a stale version, is a conflict that names the current one.
    match store.put(k, b"x".to_vec(), 0).await {
        Err(StoreError::Conflict {
            key: _,
            expected: 0,
            current,
        }) => assert_eq!(current, v1),
        other => panic!("{other:?}"),
    }
    let v2 = store.put(k, b"two".to_vec(), v1).await.unwrap();
    assert!(v2 > v1);
    assert!(matches!(
        store.put(k, b"x".to_vec(), v1).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.get(k).await.unwrap().unwrap(),
        Versioned {
            value: b"two".to_vec(),
            version: v2
        }
    );

    // Two concurrent applies from the same base: exactly one wins.
    let (a, b) = tokio::join!(
        store.put(k, b"a".to_vec(), v2),
        store.put(k, b"b".to_vec(), v2)
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{a:?} {b:?}");

    store
        .put("/streamgate/v1/policies/p2", b"p2".to_vec(), 0)
        .await
        .unwrap();
    store
        .put("/streamgate/v1/assets/a1", b"a1".to_vec(), 0)
        .await
        .unwrap();
    let (items, rev) = store.list("/streamgate/v1/policies/").await.unwrap();
    assert_eq!(
        items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [k, "/streamgate/v1/policies/p2"]
    );
    assert!(rev >= items.iter().map(|(_, v)| v.version).max().unwrap());

    let cur = store.get(k).await.unwrap().unwrap().version;
    assert!(matches!(
        store.delete(k, cur - 1).await,
        Err(StoreError::Conflict { .. })
    ));
    store.delete(k, cur).await.unwrap();
    assert!(store.get(k).await.unwrap().is_none());
}

#[tokio::test]
async fn embedded_store_keeps_the_contract_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/store.log");
    contract(Arc::new(EmbeddedStore::open(&path).unwrap())).await;
    let reopened = EmbeddedStore::open(&path).unwrap();
    let (items, rev) = reopened.list(PREFIX).await.unwrap();
    assert_eq!(items.len(), 2, "p2 and a1 survive, p1 was deleted");
    // A torn last line (a crash mid-write) is dropped; revisions continue after it.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"rev\": 99, \"op\": \"put\", \"ke").unwrap();
    drop(f);
    let again = EmbeddedStore::open(&path).unwrap();
    assert_eq!(again.list(PREFIX).await.unwrap().1, rev);
    let next = again
        .put("/streamgate/v1/keys/k", b"k".to_vec(), 0)
        .await
        .unwrap();
    assert_eq!(next, rev + 1);
    assert_eq!(
        EmbeddedStore::open(&path)
            .unwrap()
            .list(PREFIX)
            .await
            .unwrap()
            .0
            .len(),
        3
    );
}

#[tokio::test]
async fn etcd_store_keeps_the_contract() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    contract(Arc::new(store)).await;
}

#[tokio::test]
async fn etcd_down_is_unavailable_not_a_conflict() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    drop(etcd);
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        store.put("/streamgate/v1/x", b"x".to_vec(), 0),
    )
    .await;
    assert!(matches!(r, Ok(Err(StoreError::Unavailable(_)))), "{r:?}");
}

/// Transactions commit all or nothing; a watch from a listed revision sees every later
/// change in order, and only under its prefix.
async fn txn_and_watch(store: Arc<dyn Store>) {
    use futures::StreamExt;
    let (_, r0) = store.list(PREFIX).await.unwrap();
    let mut w = store.watch("/streamgate/v1/policies/", r0).await.unwrap();
    let a = "/streamgate/v1/policies/a";
    let b = "/streamgate/v1/policies/b";
    let audit = "/streamgate/v1/audit/1";
    let rev = store
        .txn(
            &[Guard {
                key: a.into(),
                expected: 0,
            }],
            vec![Op::put(a, b"A".to_vec()), Op::put(audit, b"who".to_vec())],
        )
        .await
        .unwrap();
    assert_eq!(store.get(audit).await.unwrap().unwrap().version, rev);
    // A failed guard writes nothing and names the key that moved.
    let err = store
        .txn(
            &[
                Guard {
                    key: b.into(),
                    expected: 0,
                },
                Guard {
                    key: a.into(),
                    expected: 0,
                },
            ],
            vec![Op::put(b, b"B".to_vec())],
        )
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            key,
            expected: 0,
            current,
        } => {
            assert_eq!(key, a);
            assert_eq!(current, rev);
        }
        other => panic!("{other:?}"),
    }
    assert!(store.get(b).await.unwrap().is_none());
    let r2 = store.put(b, b"B".to_vec(), 0).await.unwrap();
    let r3 = store.delete(a, rev).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("watch delivers")
            .expect("stream open")
            .unwrap();
        seen.extend(batch.events);
    }
    assert_eq!(
        seen,
        [
            Event::Put {
                key: a.into(),
                value: b"A".to_vec(),
                version: rev
            },
            Event::Put {
                key: b.into(),
                value: b"B".to_vec(),
                version: r2
            },
            Event::Delete {
                key: a.into(),
                version: r3
            },
        ],
        "the audit key is outside the watched prefix"
    );
    // Resuming after a revision replays only what came later.
    let mut w2 = store.watch("/streamgate/v1/policies/", r2).await.unwrap();
    let mut later = Vec::new();
    while later.is_empty() {
        let batch = tokio::time::timeout(Duration::from_secs(10), w2.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        later.extend(batch.events);
    }
    assert_eq!(
        later,
        [Event::Delete {
            key: a.into(),
            version: r3
        }]
    );
}

#[tokio::test]
async fn embedded_store_transactions_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.log");
    txn_and_watch(Arc::new(EmbeddedStore::open(&path).unwrap())).await;
    // The transaction's two writes replay as one revision.
    let again = EmbeddedStore::open(&path).unwrap();
    let audit = again.get("/streamgate/v1/audit/1").await.unwrap().unwrap();
    assert_eq!(again.list(PREFIX).await.unwrap().0.len(), 2);
    // History starts at open: an older revision is compacted, so the watcher must list.
    match again.watch(PREFIX, audit.version - 1).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, audit.version - 1),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("watch from before the open should be compacted"),
    }
}

#[tokio::test]
async fn embedded_store_history_is_bounded() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.log")).unwrap();
    let (_, r0) = store.list(PREFIX).await.unwrap();
    let mut version = 0;
    for _ in 0..embedded::HISTORY + 10 {
        version = store
            .put("/streamgate/v1/purges/x", b"x".to_vec(), version)
            .await
            .unwrap();
    }
    assert!(matches!(
        store.watch(PREFIX, r0).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut w = store.watch(PREFIX, version - 5).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(first.events.len(), 5);
    assert_eq!(first.revision, version);
}

#[tokio::test]
async fn etcd_store_transactions_and_watches() {
    use futures::StreamExt;
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    txn_and_watch(Arc::new(store.clone())).await;
    // After a compaction, a watch from before it fails with Compacted, not silence.
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
    let mut w = store.watch(PREFIX, 1).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(StoreError::Compacted { compacted, .. }))) => {
            assert!(compacted >= rev, "{compacted}");
        }
        other => panic!("watch from a compacted revision should fail: {other:?}"),
    }
    assert!(w.next().await.is_none(), "the stream ends after the error");
    assert!(store.watch(PREFIX, rev).await.is_ok());
}

/// Leased keys vanish, with a delete event, when the lease is revoked or expires; a
/// renewed lease keeps them; a put under a gone lease is refused and writes nothing.
async fn leases(store: Arc<dyn Store>) {
    use futures::StreamExt;
    let (_, r0) = store.list(PREFIX).await.unwrap();
    let mut w = store.watch("/streamgate/v1/edges/", r0).await.unwrap();
    let a = "/streamgate/v1/edges/a";
    let b = "/streamgate/v1/edges/b";
    let short = store.grant(Duration::from_secs(1)).await.unwrap();
    let kept = store.grant(Duration::from_secs(2)).await.unwrap();
    store
        .txn(&[], vec![Op::put_leased(a, "A", short)])
        .await
        .unwrap();
    store
        .txn(&[], vec![Op::put_leased(b, "B", kept)])
        .await
        .unwrap();
    // Renew `kept` past its own TTL; let `short` lapse.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.keep_alive(kept).await.unwrap();
    }
    assert!(
        store.get(a).await.unwrap().is_none(),
        "a expired with its lease"
    );
    assert!(
        store.get(b).await.unwrap().is_some(),
        "b's lease was renewed"
    );
    let renewed = store.keep_alive(short).await;
    assert!(
        matches!(renewed, Err(StoreError::LeaseExpired(l)) if l == short),
        "{renewed:?}"
    );
    assert!(matches!(
        store
            .txn(&[], vec![Op::put_leased(a, "again", short)])
            .await,
        Err(StoreError::LeaseExpired(_))
    ));
    assert!(store.get(a).await.unwrap().is_none());
    // A plain put detaches the key: it outlives the lease.
    let c = "/streamgate/v1/edges/c";
    store
        .txn(&[], vec![Op::put_leased(c, "C", kept)])
        .await
        .unwrap();
    store.txn(&[], vec![Op::put(c, "C2")]).await.unwrap();
    store.revoke(kept).await.unwrap();
    store.revoke(kept).await.unwrap();
    assert!(
        store.get(b).await.unwrap().is_none(),
        "b went with the revoke"
    );
    assert_eq!(store.get(c).await.unwrap().unwrap().value, b"C2");
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("watch delivers")
            .expect("stream open")
            .unwrap();
        deleted.extend(batch.events.into_iter().filter_map(|e| match e {
            Event::Delete { key, .. } => Some(key),
            Event::Put { .. } => None,
        }));
    }
    assert_eq!(deleted, [a, b]);
}

#[tokio::test]
async fn embedded_store_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.log");
    leases(Arc::new(EmbeddedStore::open(&path).unwrap())).await;
    // A lease granted before a restart gets a fresh TTL, then expires unless renewed.
    let store = EmbeddedStore::open(&path).unwrap();
    let l = store.grant(Duration::from_secs(1)).await.unwrap();
    let k = "/streamgate/v1/nonces/n";
    store
        .txn(&[], vec![Op::put_leased(k, "1", l)])
        .await
        .unwrap();
    drop(store);
    let again = EmbeddedStore::open(&path).unwrap();
    assert!(
        again.get(k).await.unwrap().is_some(),
        "alive right after the restart"
    );
    let l2 = again.grant(Duration::from_secs(1)).await.unwrap();
    assert!(l2 > l, "lease ids are not reused");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        again.get(k).await.unwrap().is_none(),
        "expired one TTL after the restart"
    );
    drop(again);
    let third = EmbeddedStore::open(&path).unwrap();
    assert!(
        third.get(k).await.unwrap().is_none(),
        "the expiry was logged"
    );
}

#[tokio::test]
async fn etcd_store_leases() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    leases(Arc::new(store)).await;
}

/// A kept lease outlives its TTL; it reports itself lost once the store is gone for
/// longer than the TTL, and its keys are gone when the store comes back.
#[tokio::test]
async fn kept_lease_reports_loss() {
    let mut etcd = start_etcd();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
            .await
            .unwrap(),
    );
    let lease = KeptLease::grant(Arc::clone(&store), Duration::from_secs(2))
        .await
        .unwrap();
    let k = "/streamgate/v1/claims/j/0";
    store
        .txn(&[], vec![Op::put_leased(k, "w1", lease.id())])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!lease.is_lost());
    assert!(store.get(k).await.unwrap().is_some());
    let t0 = std::time::Instant::now();
    etcd.stop();
    let mut lost = lease.lost();
    tokio::time::timeout(Duration::from_secs(5), lost.wait_for(|l| *l))
        .await
        .expect("loss reported")
        .unwrap();
    assert!(
        t0.elapsed() <= Duration::from_millis(2100),
        "reported at most one TTL after the last renewal: {:?}",
        t0.elapsed()
    );
    etcd.start();
    // etcd restarts leases' TTLs after a restart; without renewals the key goes.
    let mut gone = false;
    for _ in 0..100 {
        if matches!(store.get(k).await, Ok(None)) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the claim vanished with the lost lease");
}
