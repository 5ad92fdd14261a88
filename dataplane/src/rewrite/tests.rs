use super::*;

const P: &str = "token=abc.def.ghi";

#[test]
fn params() {
    assert_eq!(
        add_param("seg-1.m4s", P).unwrap(),
        "seg-1.m4s?token=abc.def.ghi"
    );
    assert_eq!(
        add_param("a.m3u8?x=1", P).unwrap(),
        "a.m3u8?x=1&token=abc.def.ghi"
    );
    assert_eq!(
        add_param("a.m3u8?token=old&x=1", P).unwrap(),
        "a.m3u8?x=1&token=abc.def.ghi"
    );
    assert_eq!(
        add_param("a.mp4#t=1", P).unwrap(),
        "a.mp4?token=abc.def.ghi#t=1"
    );
    assert_eq!(
        add_param("/v/demo/x.m4s", P).unwrap(),
        "/v/demo/x.m4s?token=abc.def.ghi"
    );
    assert!(add_param("https://cdn.other/x.m4s", P).is_none());
    assert!(add_param("//cdn.other/x.m4s", P).is_none());
    assert!(add_param("data:text/plain,hi", P).is_none());
    assert!(add_param("skd://key-id", P).is_none());
    assert!(add_param("", P).is_none());
}

#[test]
fn hls_every_uri() {
    let master = "#EXTM3U\r\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"en\",URI=\"audio/aac/index.m3u8\"\r\n\
#EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aac\"\r\n\
video/720p/index.m3u8\r\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=100,URI=\"video/720p/iframes.m3u8\"\r\n\
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"skd://abc\"\r\n";
    let out = rewrite_hls(master, P);
    assert!(out.contains("URI=\"audio/aac/index.m3u8?token=abc.def.ghi\""));
    assert!(out.contains("\r\nvideo/720p/index.m3u8?token=abc.def.ghi\r\n"));
    assert!(out.contains("URI=\"video/720p/iframes.m3u8?token=abc.def.ghi\""));
    assert!(
        out.contains("URI=\"skd://abc\""),
        "absolute key URI untouched"
    );
    assert!(
        out.contains("CODECS=\"avc1.64001f,mp4a.40.2\""),
        "other attributes untouched"
    );

    let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\",IV=0x1\n\
#EXTINF:3.2,\nseg-00001.m4s\n#EXT-X-PART:DURATION=1,URI=\"part1.m4s\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part2.m4s\"\n#EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=1\n\
#EXT-X-ENDLIST";
    let out = rewrite_hls(media, P);
    for u in [
        "init.mp4",
        "key.bin",
        "part1.m4s",
        "part2.m4s",
        "../480p/index.m3u8",
    ] {
        assert!(
            out.contains(&format!("URI=\"{u}?token=abc.def.ghi\"")),
            "{u}: {out}"
        );
    }
    assert!(out.contains("\nseg-00001.m4s?token=abc.def.ghi\n"));
    assert!(out.ends_with("#EXT-X-ENDLIST"));
    // An attribute that merely ends in URI is not a URI attribute.
    let odd = "#EXT-X-FOO:XURI=\"keep\"\n";
    assert_eq!(rewrite_hls(odd, P), odd);
}

#[test]
fn mpd_templates_and_base_urls() {
    let mpd = br#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">
  <Period>
    <AdaptationSet mimeType="video/mp4">
      <Representation id="720p" bandwidth="1">
        <BaseURL>video/720p/</BaseURL>
        <SegmentTemplate timescale="15360" media="seg-$Number%05d$.m4s" initialization="init.mp4" startNumber="1"/>
      </Representation>
      <Representation id="x" bandwidth="1">
        <BaseURL>https://cdn.other/x/</BaseURL>
        <SegmentList><Initialization sourceURL="i.mp4?a=1&amp;b=2"/><SegmentURL media="s1.m4s"/></SegmentList>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;
    let out = String::from_utf8(rewrite_mpd(mpd, P).unwrap()).unwrap();
    assert!(
        out.contains("<BaseURL>video/720p/?token=abc.def.ghi</BaseURL>"),
        "{out}"
    );
    assert!(
        out.contains(r#"media="seg-$Number%05d$.m4s?token=abc.def.ghi""#),
        "{out}"
    );
    assert!(out.contains(r#"initialization="init.mp4?token=abc.def.ghi""#));
    assert!(out.contains(r#"timescale="15360""#));
    assert!(
        out.contains("<BaseURL>https://cdn.other/x/</BaseURL>"),
        "absolute BaseURL untouched"
    );
    assert!(
        out.contains(r#"sourceURL="i.mp4?a=1&amp;b=2&amp;token=abc.def.ghi""#),
        "{out}"
    );
    assert!(out.contains(r#"media="s1.m4s?token=abc.def.ghi""#));
    assert!(rewrite_mpd(b"<MPD><BaseURL>x", P).is_err());
}

proptest::proptest! {
    #[test]
    fn hls_rewrite_keeps_lines_and_never_panics(s in "\\PC{0,300}") {
        let out = rewrite_hls(&s, P);
        proptest::prop_assert_eq!(out.matches('\n').count(), s.matches('\n').count());
    }

    #[test]
    fn mpd_rewrite_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let _ = rewrite_mpd(&b, P);
    }
}
