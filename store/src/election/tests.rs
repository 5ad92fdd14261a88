//! Elections on both stores: one holder at a time; resigning hands over at once; a holder
//! that dies (its lease no longer kept) hands over within the TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::embedded::EmbeddedStore;
use crate::etcd::EtcdStore;
use crate::testkit::start_etcd;

async fn one_holder_at_a_time(store: Arc<dyn Store>) {
    let ttl = Duration::from_secs(2);
    let a = Election::new(Arc::clone(&store), "t", "a", ttl);
    let b = Election::new(Arc::clone(&store), "t", "b", ttl);
    let la = a.campaign().await.unwrap();
    assert_eq!(a.holder().await.unwrap().as_deref(), Some("a"));
    // b waits while a holds the role.
    let mut pending = Box::pin(b.campaign());
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), &mut pending)
            .await
            .is_err(),
        "b was elected while a held the role and kept its lease"
    );
    // a resigns: b takes over at once.
    let t0 = Instant::now();
    la.resign(&*store).await.unwrap();
    let lb = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("b elected after a resigned")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(b.holder().await.unwrap().as_deref(), Some("b"));
    assert!(lb.revision() > 0 && !lb.is_lost());

    // b dies without resigning (its keep-alive stops): a is elected once the lease
    // expires, not before.
    let t0 = Instant::now();
    drop(lb);
    let la = tokio::time::timeout(Duration::from_secs(8), a.campaign())
        .await
        .expect("a elected after b's lease expired")
        .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "elected after {took:?}, before b's lease could expire"
    );
    assert_eq!(a.holder().await.unwrap().as_deref(), Some("a"));
    la.resign(&*store).await.unwrap();
    assert_eq!(a.holder().await.unwrap(), None);
}

#[tokio::test]
async fn embedded_store_elections() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.log")).unwrap();
    one_holder_at_a_time(Arc::new(store)).await;
}

#[tokio::test]
async fn etcd_store_elections() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    one_holder_at_a_time(Arc::new(store)).await;
}

#[tokio::test]
async fn run_elected_moves_the_work_when_its_holder_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.log")).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let spawn = |who: &'static str| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let e = Election::new(Arc::clone(&store), "work", who, Duration::from_secs(2));
        let tx = tx.clone();
        let task = tokio::spawn(run_elected(
            e,
            move |_rev| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(who);
                    std::future::pending::<()>().await;
                }
            },
            async {
                let _ = stopped.await;
            },
        ));
        (stop, task)
    };
    let (stop_a, task_a) = spawn("a");
    assert_eq!(rx.recv().await, Some("a"));
    let (_stop_b, _task_b) = spawn("b");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "only one runs the work");
    // a shuts down: it resigns, b runs the work.
    stop_a.send(()).unwrap();
    task_a.await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert_eq!(next.unwrap(), Some("b"));
}
