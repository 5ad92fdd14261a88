use std::fs;
use std::path::Path;

use super::*;
use crate::manifest::{Presentation, render, testing};

/// Writes the manifests of `p` and a small non-empty file for every segment.
fn write_output(root: &Path, p: &Presentation) {
    for t in p.video.iter().chain(p.audio.as_ref()) {
        let dir = root.join(&t.dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("init.mp4"), b"init").unwrap();
        for i in 1..=t.segments.len() {
            fs::write(dir.join(format!("seg-{i:05}.m4s")), b"media").unwrap();
        }
    }
    for (rel, text) in render(p) {
        fs::write(root.join(rel), text).unwrap();
    }
}

#[test]
fn accepts_a_complete_output() {
    let dir = tempfile::tempdir().unwrap();
    write_output(dir.path(), &testing::presentation());
    let report = verify_output(dir.path()).unwrap();
    assert_eq!(report.playlists, 4);
    assert_eq!(report.representations, 3);
    // 3 renditions x (init + 3 segments)
    assert_eq!(report.media_files, 12);
}

#[test]
fn lists_missing_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    write_output(dir.path(), &testing::presentation());
    fs::remove_file(dir.path().join("video/360p/seg-00002.m4s")).unwrap();
    fs::write(dir.path().join("audio/aac/init.mp4"), b"").unwrap();
    match verify_output(dir.path()) {
        Err(VerifyError::Missing { count, first }) => {
            assert_eq!(count, 2);
            assert_eq!(first, ["audio/aac/init.mp4", "video/360p/seg-00002.m4s"]);
        }
        other => panic!("expected Missing, got {other:?}"),
    }
}

#[test]
fn missing_media_playlist_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_output(dir.path(), &testing::presentation());
    fs::remove_file(dir.path().join("video/720p/index.m3u8")).unwrap();
    let err = verify_output(dir.path()).unwrap_err();
    assert!(err.to_string().contains("video/720p/index.m3u8"), "{err}");
}

#[test]
fn rejects_uris_escaping_the_folder() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("out");
    fs::create_dir(&root).unwrap();
    write_output(&root, &testing::presentation());
    fs::write(outer.path().join("secret.m3u8"), "#EXTM3U\n").unwrap();
    let master = fs::read_to_string(root.join("master.m3u8")).unwrap();
    fs::write(
        root.join("master.m3u8"),
        master.replace("video/360p/index.m3u8", "../secret.m3u8"),
    )
    .unwrap();
    match verify_output(&root) {
        Err(VerifyError::Escapes { manifest, uri }) => {
            assert_eq!(manifest, "master.m3u8");
            assert_eq!(uri, "../secret.m3u8");
        }
        other => panic!("expected Escapes, got {other:?}"),
    }

    write_output(&root, &testing::presentation());
    let mpd = fs::read_to_string(root.join("manifest.mpd")).unwrap();
    fs::write(
        root.join("manifest.mpd"),
        mpd.replace("<BaseURL>audio/aac/", "<BaseURL>../../"),
    )
    .unwrap();
    assert!(matches!(
        verify_output(&root),
        Err(VerifyError::Escapes { .. })
    ));
}

#[cfg(unix)]
#[test]
fn rejects_symlinks_leading_outside() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("out");
    fs::create_dir(&root).unwrap();
    write_output(&root, &testing::presentation());
    fs::write(outer.path().join("elsewhere"), b"data").unwrap();
    let seg = root.join("video/720p/seg-00001.m4s");
    fs::remove_file(&seg).unwrap();
    std::os::unix::fs::symlink(outer.path().join("elsewhere"), &seg).unwrap();
    assert!(matches!(
        verify_output(&root),
        Err(VerifyError::Escapes { .. })
    ));
}

#[test]
fn hls_and_dash_must_name_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = testing::presentation();
    write_output(dir.path(), &p);
    // An MPD that lists one segment fewer for the audio.
    let mut shorter = p.clone();
    if let Some(a) = shorter.audio.as_mut() {
        a.segments.pop();
    }
    let mpd = crate::manifest::dash::mpd(&shorter);
    fs::write(dir.path().join("manifest.mpd"), mpd).unwrap();
    match verify_output(dir.path()) {
        Err(VerifyError::Mismatch {
            only_hls,
            only_dash,
        }) => {
            assert_eq!(only_hls, ["audio/aac/seg-00003.m4s"]);
            assert!(only_dash.is_empty());
        }
        other => panic!("expected Mismatch, got {other:?}"),
    }
}

#[test]
fn rejects_playlists_that_are_not_finished_vod() {
    let dir = tempfile::tempdir().unwrap();
    write_output(dir.path(), &testing::presentation());
    let path = dir.path().join("audio/aac/index.m3u8");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("#EXT-X-ENDLIST\n", "")).unwrap();
    let err = verify_output(dir.path()).unwrap_err();
    assert!(err.to_string().contains("ENDLIST"), "{err}");
    fs::write(&path, text.replace("#EXT-X-PLAYLIST-TYPE:VOD\n", "")).unwrap();
    let err = verify_output(dir.path()).unwrap_err();
    assert!(err.to_string().contains("VOD"), "{err}");
}

#[test]
fn missing_folder_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify_output(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, VerifyError::Read { .. }), "{err}");
}
