//! The etcd store on a real 3-member cluster: calls and watches go on through the loss of
//! any member (killed, the leader too, or frozen with SIGSTOP), and a write whose answer
//! is lost is neither reported as a conflict nor written twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::testkit::start_cluster;
use crate::{Event, PREFIX};

fn fast(endpoints: Vec<String>) -> EtcdConfig {
    let mut cfg = EtcdConfig::new(endpoints);
    cfg.request_timeout = Duration::from_secs(1);
    cfg.keepalive_interval = Duration::from_millis(500);
    cfg.keepalive_timeout = Duration::from_millis(500);
    cfg
}

/// Waits for the watch to deliver a put of `key`; returns how long it took.
async fn until_seen(w: &mut WatchStream, key: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let left = within.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, w.next()).await {
            Ok(Some(Ok(b))) => {
                if b.events
                    .iter()
                    .any(|e| matches!(e, Event::Put { key: k, .. } if k == key))
                {
                    return t0.elapsed();
                }
            }
            Ok(Some(Err(e))) => panic!("the watch failed: {e}"),
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("{key} not seen within {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_watches_survive_the_loss_of_any_member() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("STREAMGATE_LOG").unwrap_or_else(|_| "streamgate_store=info".into()),
        )
        .with_test_writer()
        .try_init();
    let mut cluster = start_cluster(3);
    let store = EtcdStore::connect_with(&fast(cluster.endpoints()))
        .await
        .unwrap();
    let (_, rev) = store.list(PREFIX).await.unwrap();
    let mut w = store.watch(PREFIX, rev).await.unwrap();
    let mut n = 0;
    let mut write = async |store: &EtcdStore, what: &str| -> (String, Duration) {
        n += 1;
        let key = format!("{PREFIX}policies/{what}-{n}");
        let t0 = Instant::now();
        store
            .put(&key, b"{}".to_vec(), 0)
            .await
            .unwrap_or_else(|e| panic!("{what}: the write failed: {e}"));
        (key, t0.elapsed())
    };
    let (k, _) = write(&store, "warm").await;
    until_seen(&mut w, &k, Duration::from_secs(5)).await;

    // Kill each member in turn, the leader first; the store keeps answering, and the
    // watch resumes on another member.
    let leader = cluster.wait_leader(Duration::from_secs(10)).unwrap();
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    for (round, &i) in order.iter().enumerate() {
        let what = if round == 0 {
            "leader-killed"
        } else {
            "member-killed"
        };
        cluster.members[i].stop();
        let (key, took) = write(&store, what).await;
        let seen = until_seen(&mut w, &key, Duration::from_secs(10)).await;
        eprintln!(
            "{what} ({}): write took {took:?}, watch saw it {seen:?} later",
            cluster.members[i].name()
        );
        cluster.members[i].start();
        cluster.wait_leader(Duration::from_secs(30)).unwrap();
    }

    // Freeze the member the store is using: calls time out there and move on; the
    // watch notices the silence (no answer to its progress request) and moves too.
    let pinned = store.current_endpoint();
    let i = cluster
        .members
        .iter()
        .position(|m| m.endpoint == pinned)
        .unwrap();
    cluster.members[i].freeze();
    let (key, took) = write(&store, "frozen").await;
    let seen = until_seen(&mut w, &key, Duration::from_secs(10)).await;
    eprintln!("member frozen: write took {took:?}, watch saw it {seen:?} later");
    assert_ne!(
        store.current_endpoint(),
        pinned,
        "still pinned to the frozen member"
    );
    // Reads too.
    let t0 = Instant::now();
    assert!(store.get(&key).await.unwrap().is_some());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    cluster.members[i].thaw();

    // Nothing written was lost.
    let (items, _) = store.list(&format!("{PREFIX}policies/")).await.unwrap();
    assert_eq!(
        items.len(),
        5,
        "{:?}",
        items.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
}

/// A TCP relay that can stop passing the server's answers on (the requests still go
/// through): a member that acts on a request whose answer is then lost.
struct AnswerEater {
    addr: std::net::SocketAddr,
    eat: Arc<AtomicBool>,
}

impl AnswerEater {
    async fn start(target: String) -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let eat = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&eat);
        tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if !flag.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, eat }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_was_lost_is_neither_a_conflict_nor_written_twice() {
    let cluster = start_cluster(3);
    let first = cluster.members[0]
        .endpoint
        .trim_start_matches("http://")
        .to_owned();
    let relay = AnswerEater::start(first).await;
    let mut endpoints = vec![format!("http://{}", relay.addr)];
    endpoints.extend(cluster.endpoints().into_iter().skip(1));
    let store = EtcdStore::connect_with(&fast(endpoints)).await.unwrap();
    let key = format!("{PREFIX}policies/p");
    // Calls go to the relay's member first (the probe at connect pinned whichever
    // answered first).
    store.pool.answered(0);
    let v1 = store.put(&key, b"one".to_vec(), 0).await.unwrap();
    assert!(store.current_endpoint().contains(&relay.addr.to_string()));

    // Guarded: the update commits through the relay, its answer is eaten, and the retry
    // on another member fails its guard on the commit it made itself.
    relay.eat.store(true, Ordering::SeqCst);
    let audit = format!("{PREFIX}audit/1");
    let v2 = store
        .txn(
            &[Guard {
                key: key.clone(),
                expected: v1,
            }],
            vec![
                Op::put(key.as_str(), b"two".to_vec()),
                Op::put(audit.as_str(), b"a1".to_vec()),
            ],
        )
        .await
        .expect("the write is reported done, not a conflict");
    let now = store.get(&key).await.unwrap().unwrap();
    assert_eq!((now.value.as_slice(), now.version), (&b"two"[..], v2));
    assert!(!store.current_endpoint().contains(&relay.addr.to_string()));

    // Unguarded: read back before writing again, so it is written once.
    relay.eat.store(false, Ordering::SeqCst);
    let edge = format!("{PREFIX}edges/e1");
    // Back to the relay's member (it was marked down when its answer did not come).
    store.pool.answered(0);
    relay.eat.store(true, Ordering::SeqCst);
    let r = store
        .txn(&[], vec![Op::put(edge.as_str(), b"status".to_vec())])
        .await
        .unwrap();
    let mut client = store.client().await.unwrap();
    let got = client.get(edge.as_str(), None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!(kv.mod_revision(), r);
    assert_eq!(kv.version(), 1, "written twice");

    // A real conflict is still one.
    relay.eat.store(false, Ordering::SeqCst);
    assert!(matches!(
        store.put(&key, b"x".to_vec(), v1).await,
        Err(StoreError::Conflict { .. })
    ));
}
