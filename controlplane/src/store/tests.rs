//! The same contract tests for both stores: the embedded one, and a real etcd
//! (Debian's `etcd-server`, started on free loopback ports).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::embedded::EmbeddedStore;
use super::etcd::EtcdStore;
use super::*;

pub(crate) struct Etcd {
    child: Child,
    pub(crate) endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a single-node etcd; fails loudly when it is not installed.
pub(crate) fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("t={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("etcd is not installed ({e}): run ./scripts/setup.sh"));
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "etcd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Etcd {
        child,
        endpoint,
        _dir: dir,
    }
}

async fn contract(store: Arc<dyn Store>) {
    let k = "/streamgate/v1/policies/p1";
    assert!(store.get(k).await.unwrap().is_none());
    let v1 = store.put(k, b"one".to_vec(), 0).await.unwrap();
    assert!(v1 > 0);
    // Creating again, or writing from a stale version, is a conflict that names the current one.
    match store.put(k, b"x".to_vec(), 0).await {
        Err(StoreError::Conflict {
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
