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

#[tokio::test]
async fn fs_copy_list_and_delete_a_folder() {
    let dir = tempfile_dir("copy");
    let origin = Origin::from_config(&OriginConfig::Fs { root: dir.clone() }).unwrap();
    let staged = ObjectKey::new(".farm/j1/0-7/video/720p/seg-00001.m4s").unwrap();
    origin
        .put(&staged, Bytes::from_static(b"seg"))
        .await
        .unwrap();
    let other = ObjectKey::new(".farm/j1/0-7/video/720p/init.mp4").unwrap();
    origin
        .put(&other, Bytes::from_static(b"init"))
        .await
        .unwrap();
    let published = ObjectKey::new("a/j1/video/720p/seg-00001.m4s").unwrap();
    origin.copy(&staged, &published).await.unwrap();
    assert_eq!(&origin.get_bytes(&published).await.unwrap()[..], b"seg");
    let mut listed: Vec<String> = origin
        .list(&ObjectKey::new(".farm/j1").unwrap())
        .await
        .unwrap()
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ".farm/j1/0-7/video/720p/init.mp4",
            ".farm/j1/0-7/video/720p/seg-00001.m4s"
        ]
    );
    assert_eq!(
        origin
            .delete_prefix(&ObjectKey::new(".farm/j1").unwrap())
            .await
            .unwrap(),
        2
    );
    assert!(!origin.exists(&staged).await.unwrap());
    assert!(!dir.join(".farm/j1").exists(), "no empty folders are left");
    assert!(origin.exists(&published).await.unwrap(), "the copy stays");
    origin.delete(&published).await.unwrap();
    origin.delete(&published).await.unwrap();
    assert!(!origin.exists(&published).await.unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sg-origin-{name}-{}", std::process::id()))
}
