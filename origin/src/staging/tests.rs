use bytes::Bytes;

use super::*;

fn fs(dir: &std::path::Path) -> Staging {
    Staging::from_config(
        &OriginConfig::Fs {
            root: dir.to_owned(),
        },
        MIN_PART,
    )
    .unwrap()
}

fn data(dir: &std::path::Path, id: &str) -> Vec<u8> {
    std::fs::read(dir.join(Staging::data_key(id).unwrap().as_str())).unwrap()
}

#[tokio::test]
async fn fs_writer_keeps_only_what_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let s = fs(dir.path());
    let id = "0123456789abcdef0123456789abcdef";
    let state = s.create(id, 100).await.unwrap();
    assert_eq!(state, StageState::Fs);

    let mut w = s.writer(id, &state, 0).await.unwrap();
    w.write(Bytes::from_static(b"hello ")).await.unwrap();
    assert!(w.checkpoint_due(1));
    assert!(!w.checkpoint_due(1 << 20));
    let (c, durable) = w.checkpoint().await.unwrap().unwrap();
    durable.await.unwrap();
    assert_eq!(c.offset, 6);
    // Written after the checkpoint, then the process "dies" (the writer is dropped).
    w.write(Bytes::from_static(b"unrecorded")).await.unwrap();
    drop(w);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    // A writer at the recorded offset cuts the unrecorded bytes off.
    let mut w = s.writer(id, &c.state, 6).await.unwrap();
    assert_eq!(data(dir.path(), id), b"hello ");
    w.write(Bytes::from_static(b"world")).await.unwrap();
    let c = w.commit(false).await.unwrap();
    assert_eq!(c.offset, 11);
    assert_eq!(data(dir.path(), id), b"hello world");

    // A rolled-back writer leaves the file as it found it.
    let mut w = s.writer(id, &c.state, 11).await.unwrap();
    w.write(Bytes::from_static(b"!!! bad checksum"))
        .await
        .unwrap();
    w.rollback().await.unwrap();
    assert_eq!(data(dir.path(), id), b"hello world");

    // A recorded offset past the file is a loss, not silently accepted.
    assert!(matches!(
        s.writer(id, &c.state, 50).await,
        Err(StagingError::Short {
            found: 11,
            expected: 50
        })
    ));
    s.remove(id, &c.state).await.unwrap();
    assert!(!dir.path().join("STAGING/uploads").join(id).exists());
    s.remove(id, &c.state).await.unwrap();
}

#[test]
fn staged_keys_are_never_asset_keys() {
    let k = Staging::data_key("0123456789abcdef0123456789abcdef").unwrap();
    assert!(k.as_str().starts_with("STAGING/"));
    // Asset ids are lower case, so the first segment can never name an asset.
    assert!(
        k.as_str()
            .split('/')
            .next()
            .unwrap()
            .chars()
            .any(|c| c.is_ascii_uppercase())
    );
    assert!(Staging::data_key("../x").is_err());
    assert!(matches!(
        Staging::from_config(
            &OriginConfig::Http(crate::HttpOrigin {
                base_url: "http://x/".into(),
                timeout: std::time::Duration::from_secs(1),
                connect_timeout: std::time::Duration::from_secs(1),
                pool_max_idle_per_host: 1,
                pool_idle_timeout: std::time::Duration::from_secs(1),
            }),
            MIN_PART
        ),
        Err(StagingError::ReadOnly)
    ));
}
