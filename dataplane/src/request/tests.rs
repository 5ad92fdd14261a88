use super::*;
use proptest::prelude::*;

#[test]
fn routes() {
    assert_eq!(
        route("/v/demo/master.m3u8"),
        Ok(Route::Object {
            asset: "demo".into(),
            key: "demo/master.m3u8".into()
        })
    );
    assert_eq!(route("/"), Ok(Route::Player));
    assert_eq!(
        route("/player/hls.min.js"),
        Ok(Route::PlayerLib(crate::player::Lib::Hls))
    );
    assert_eq!(
        route("/player/dash.all.min.js"),
        Ok(Route::PlayerLib(crate::player::Lib::Dash))
    );
    assert_eq!(route("/player/other.js"), Ok(Route::NotFound));
    assert_eq!(route("/other"), Ok(Route::NotFound));
    assert_eq!(route("/v/demo"), Err(PathError::MissingObject));
    assert_eq!(
        route("/v/demo/%76ideo/a.m4s"),
        Ok(Route::Object {
            asset: "demo".into(),
            key: "demo/video/a.m4s".into()
        })
    );
}

#[test]
fn traversal_is_refused() {
    for p in [
        "/v/demo/../secret",
        "/v/demo/%2e%2e/secret",
        "/v/demo/%2E%2E/secret",
        "/v/demo/.%2e/x",
        "/v/../etc/passwd",
        "/v/demo/a%2f..%2f..%2fx",
        "/v/demo/a%00b",
        "/v/demo//x",
        "/v/demo/a\\..\\b",
        "/v/demo/%zz",
        "/v/demo/%c3%28",
    ] {
        assert!(route(p).is_err(), "{p} accepted");
    }
    assert_eq!(
        route(&format!("/v/demo/{}", "a".repeat(3000))),
        Err(PathError::TooLong)
    );
    assert_eq!(
        route(&format!("/v/demo/{}", "a".repeat(1100))),
        Err(PathError::TooLong)
    );
}

#[test]
fn ranges() {
    use RangeOutcome::*;
    assert_eq!(parse_range(b"bytes=0-9", 100), Partial { start: 0, end: 9 });
    assert_eq!(
        parse_range(b"bytes=90-", 100),
        Partial { start: 90, end: 99 }
    );
    assert_eq!(
        parse_range(b"bytes=-10", 100),
        Partial { start: 90, end: 99 }
    );
    assert_eq!(
        parse_range(b"bytes=-1000", 100),
        Partial { start: 0, end: 99 }
    );
    assert_eq!(
        parse_range(b"bytes=50-1000", 100),
        Partial { start: 50, end: 99 }
    );
    assert_eq!(parse_range(b"bytes=100-", 100), Unsatisfiable);
    assert_eq!(parse_range(b"bytes=-0", 100), Unsatisfiable);
    assert_eq!(parse_range(b"bytes=5-1", 100), Full);
    assert_eq!(parse_range(b"bytes=0-1,5-6", 100), Full);
    assert_eq!(parse_range(b"items=0-1", 100), Full);
    assert_eq!(parse_range(b"bytes=abc", 100), Full);
    assert_eq!(parse_range(b"bytes=99999999999999999999-", 100), Full);
}

#[test]
fn multiple_ranges() {
    use MultiRange::*;
    assert_eq!(
        parse_ranges(b"bytes=0-9, 20-29", 100),
        Ranges(vec![(0, 9), (20, 29)])
    );
    // Kept in the order asked when they do not overlap.
    assert_eq!(
        parse_ranges(b"bytes=50-59,0-0", 100),
        Ranges(vec![(50, 59), (0, 0)])
    );
    // Overlapping and adjacent ranges are merged, so no byte goes out twice.
    assert_eq!(
        parse_ranges(b"bytes=0-9,5-19,20-24,-10", 100),
        Ranges(vec![(0, 24), (90, 99)])
    );
    // Unsatisfiable members are dropped; all of them: 416.
    assert_eq!(
        parse_ranges(b"bytes=0-1,200-300", 100),
        Ranges(vec![(0, 1)])
    );
    assert_eq!(parse_ranges(b"bytes=100-,200-300", 100), Unsatisfiable);
    // A syntax error anywhere, or too many ranges: the whole object.
    assert_eq!(parse_ranges(b"bytes=0-1,x", 100), Full);
    assert_eq!(parse_ranges(b"bytes=0-1,5-2", 100), Full);
    assert_eq!(parse_ranges(b"bytes=,", 100), Full);
    let many = format!(
        "bytes={}",
        (0..=MAX_RANGES)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(parse_ranges(many.as_bytes(), 100), Full);
    assert_eq!(
        parse_ranges(b"bytes=0-1, ,3-4", 100),
        Ranges(vec![(0, 1), (3, 4)])
    );
}

#[test]
fn etags() {
    assert!(if_none_match(b"\"abc\"", b"\"abc\""));
    assert!(if_none_match(b"W/\"abc\", \"x\"", b"\"abc\""));
    assert!(if_none_match(b"*", b"\"abc\""));
    assert!(!if_none_match(b"\"abd\"", b"\"abc\""));
}

#[test]
fn content_types() {
    assert_eq!(classify("d/master.m3u8").1, "application/vnd.apple.mpegurl");
    assert_eq!(classify("d/manifest.mpd").1, "application/dash+xml");
    assert_eq!(
        classify("d/video/720p/seg-00001.m4s").1,
        "video/iso.segment"
    );
    assert_eq!(classify("d/video/720p/init.mp4").1, "video/mp4");
    assert_eq!(classify("d/audio/aac/init.mp4").1, "audio/mp4");
    assert_eq!(classify("d/x.bin").0, ObjectKind::Other);
    // Extensions match in any case; one longer than any known is Other, not a panic.
    assert_eq!(classify("d/MASTER.M3U8").0, ObjectKind::Manifest);
    assert_eq!(classify("d/seg-1.M4s").1, "video/iso.segment");
    assert_eq!(classify("d/x.m3u8m3u8m3u8").1, "application/octet-stream");
    assert_eq!(classify("d/x.é").0, ObjectKind::Other);
}

proptest! {
    #[test]
    fn route_never_panics_and_never_traverses(p in "\\PC{0,300}") {
        if let Ok(Route::Object { key, .. }) = route(&p) {
            prop_assert!(key.split('/').all(|s| s != ".." && s != "." && !s.is_empty()));
            prop_assert!(!key.contains('\0'));
        }
    }

    #[test]
    fn ranges_stay_in_bounds(h in proptest::collection::vec(any::<u8>(), 0..40), len in 0u64..10_000) {
        if let RangeOutcome::Partial { start, end } = parse_range(&h, len) {
            prop_assert!(start <= end && end < len);
        }
    }

    #[test]
    fn byte_ranges_in_bounds(a in 0u64..20_000, b in 0u64..20_000, len in 1u64..10_000) {
        let h = format!("bytes={a}-{b}");
        match parse_range(h.as_bytes(), len) {
            RangeOutcome::Partial { start, end } => prop_assert!(start == a && end == b.min(len - 1)),
            RangeOutcome::Unsatisfiable => prop_assert!(a >= len),
            RangeOutcome::Full => prop_assert!(a > b),
        }
    }

    #[test]
    fn multi_ranges_stay_in_bounds_and_never_repeat_a_byte(
        h in "bytes=[0-9, -]{0,40}",
        len in 0u64..10_000,
    ) {
        if let MultiRange::Ranges(rs) = parse_ranges(h.as_bytes(), len) {
            prop_assert!(!rs.is_empty() && rs.len() <= MAX_RANGES);
            for (i, &(a, b)) in rs.iter().enumerate() {
                prop_assert!(a <= b && b < len);
                for &(c, d) in &rs[i + 1..] {
                    prop_assert!(b < c || d < a, "{:?} overlaps", rs);
                }
            }
        }
    }
}
