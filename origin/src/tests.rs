use super::*;

#[test]
fn keys_reject_traversal_and_junk() {
    for bad in [
        "",
        "/abs",
        "a//b",
        "a/../b",
        "..",
        "a/.",
        "a\\b",
        "a\0b",
        "a\nb",
        "trailing/",
    ] {
        assert!(ObjectKey::new(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        ObjectKey::new(&"a".repeat(MAX_KEY_LEN + 1)),
        Err(KeyError::TooLong)
    );
    for good in [
        "demo/master.m3u8",
        "demo/video/720p/seg-00001.m4s",
        "a..b/c.d",
    ] {
        assert_eq!(ObjectKey::new(good).unwrap().as_str(), good);
    }
}

#[tokio::test]
async fn fs_round_trip_and_not_found() {
    let dir = std::env::temp_dir().join(format!("sg-origin-test-{}", std::process::id()));
    let origin = Origin::from_config(&OriginConfig::Fs { root: dir.clone() }).unwrap();
    let key = ObjectKey::new("asset/video/seg-00001.m4s").unwrap();
    origin
        .put(&key, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert!(origin.exists(&key).await.unwrap());
    let obj = origin.get(&key).await.unwrap();
    assert_eq!(obj.size, 5);
    assert_eq!(&obj.collect().await.unwrap()[..], b"hello");
    let missing = ObjectKey::new("asset/nope.m4s").unwrap();
    assert!(matches!(
        origin.get(&missing).await,
        Err(OriginError::NotFound)
    ));
    assert!(!origin.exists(&missing).await.unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}
