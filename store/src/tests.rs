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
            vec![
                Op::Put {
                    key: a.into(),
                    value: b"A".to_vec(),
                },
                Op::Put {
                    key: audit.into(),
                    value: b"who".to_vec(),
                },
            ],
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
            vec![Op::Put {
                key: b.into(),
                value: b"B".to_vec(),
            }],
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
