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
    // Under an absolute BaseURL, relative segment URIs resolve to the other host.
    assert!(out.contains(r#"sourceURL="i.mp4?a=1&amp;b=2""#), "{out}");
    assert!(out.contains(r#"media="s1.m4s""#), "{out}");
    assert!(!out.contains("s1.m4s?token"), "{out}");
    assert!(rewrite_mpd(b"<MPD><BaseURL>x", P).is_err());
}

/// References that browsers resolve to another host never get the token, however they
/// are spelled.
#[test]
fn other_hosts_in_disguise() {
    for uri in [
        "\\\\evil.example/x.m4s",
        "/\\evil.example/x.m4s",
        "\\/evil.example/x.m4s",
        "/\t/evil.example/x.m4s",
        "/\n/evil.example/x.m4s",
        "\t//evil.example/x.m4s",
        " //evil.example/x.m4s",
        "\u{1}//evil.example/x.m4s",
        "h\tttps://evil.example/x.m4s",
        "HTTPS://evil.example/x.m4s",
        "http:evil.example/x.m4s",
    ] {
        assert!(add_param(uri, P).is_none(), "{uri:?}");
        if uri.contains(['\n', '\r']) {
            continue; // a playlist line cannot hold a line break
        }
        let playlist = format!("#EXTM3U\n#EXT-X-MAP:URI=\"{uri}\"\n#EXTINF:1,\n{uri}\n");
        assert!(!rewrite_hls(&playlist, P).contains("token="), "{uri:?}");
    }
    for uri in [
        "seg.m4s",
        "/v/a/seg.m4s",
        "../b/seg.m4s",
        "b/a:c",
        "1a:b",
        "?x=1",
        "%2F%2Fevil/x",
    ] {
        assert!(add_param(uri, P).is_some(), "{uri:?}");
    }
}

#[test]
fn mpd_base_url_scopes() {
    // An absolute BaseURL at the top: nothing below it resolves to the edge.
    let top = br#"<MPD><BaseURL>https://cdn.other/a/</BaseURL><Period><AdaptationSet>
<SegmentTemplate media="s$Number$.m4s" initialization="i.mp4"/>
<Representation id="1"><BaseURL>v/</BaseURL></Representation></AdaptationSet></Period></MPD>"#;
    let out = String::from_utf8(rewrite_mpd(top, P).unwrap()).unwrap();
    assert!(!out.contains("token="), "{out}");
    // A template at the AdaptationSet applies to every Representation; one of them has an
    // absolute BaseURL, so the shared template must not carry the token. A template of
    // its own in the other Representation may.
    let shared = br#"<MPD><Period><AdaptationSet>
<SegmentTemplate media="s$Number$.m4s" initialization="i.mp4"/>
<Representation id="1"><BaseURL>v1/</BaseURL></Representation>
<Representation id="2"><BaseURL>\\evil.example/v2/</BaseURL></Representation>
</AdaptationSet><AdaptationSet>
<Representation id="3"><BaseURL>a/</BaseURL><SegmentTemplate media="t$Number$.m4s"/></Representation>
</AdaptationSet></Period></MPD>"#;
    let out = String::from_utf8(rewrite_mpd(shared, P).unwrap()).unwrap();
    assert!(out.contains(r#"media="s$Number$.m4s""#), "{out}");
    assert!(out.contains(r#"initialization="i.mp4""#), "{out}");
    assert!(
        out.contains("<BaseURL>v1/?token=abc.def.ghi</BaseURL>"),
        "{out}"
    );
    assert!(
        out.contains("<BaseURL>\\\\evil.example/v2/</BaseURL>"),
        "{out}"
    );
    assert!(
        out.contains(r#"media="t$Number$.m4s?token=abc.def.ghi""#),
        "{out}"
    );
    // Relative BaseURLs all the way down keep the token everywhere.
    let local = br#"<MPD><BaseURL>a/</BaseURL><Period><BaseURL>b/</BaseURL><AdaptationSet>
<SegmentTemplate media="s.m4s"/></AdaptationSet></Period></MPD>"#;
    let out = String::from_utf8(rewrite_mpd(local, P).unwrap()).unwrap();
    assert!(out.contains(r#"media="s.m4s?token=abc.def.ghi""#), "{out}");
}

/// `same_origin` agrees with a WHATWG URL parser (the `url` crate): whatever it calls
/// same-origin resolves to the base's origin against two different bases (so it names no
/// host of its own); whatever the parser keeps on the base's origin and that has no scheme,
/// it calls same-origin.
fn whatwg_same_origin(uri: &str) -> bool {
    [
        "http://a.invalid/v/x/m.m3u8",
        "https://b.invalid:8443/v/x/m.m3u8",
    ]
    .iter()
    .all(|b| {
        let base = url::Url::parse(b).unwrap();
        base.join(uri).is_ok_and(|u| u.origin() == base.origin())
    })
}

fn has_scheme(uri: &str) -> bool {
    url::Url::parse(uri).is_ok()
}

#[test]
fn same_origin_matches_whatwg_on_known_tricks() {
    for uri in [
        "\\\\h/x",
        "/\\h/x",
        "/\t/h/x",
        "//h",
        "x",
        "/x",
        "\\x",
        "?q",
        "#f",
        "",
        "http:x",
        "javascript:alert(1)",
        "a\tb:c",
        " \u{0}/x",
        "\r\n//h/x",
    ] {
        assert!(
            !same_origin(uri) || whatwg_same_origin(uri),
            "same_origin({uri:?}) but a browser goes elsewhere"
        );
        if whatwg_same_origin(uri) && !has_scheme(uri) {
            assert!(same_origin(uri), "{uri:?}");
        }
    }
}

proptest::proptest! {
    #[test]
    fn same_origin_matches_whatwg(uri in "[ \\t\\n\\r\\\\/:.?#a-zA-Z0-9%+\\-@\\[\\]\\x00-\\x1f]{0,12}") {
        proptest::prop_assert!(!same_origin(&uri) || whatwg_same_origin(&uri), "{:?}", uri);
        if whatwg_same_origin(&uri) && !has_scheme(&uri) {
            proptest::prop_assert!(same_origin(&uri), "{:?}", uri);
        }
    }

    #[test]
    fn hls_rewrite_keeps_lines_and_never_panics(s in "\\PC{0,300}") {
        let out = rewrite_hls(&s, P);
        proptest::prop_assert_eq!(out.matches('\n').count(), s.matches('\n').count());
    }

    #[test]
    fn mpd_rewrite_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let _ = rewrite_mpd(&b, P);
    }

    #[test]
    fn hls_template_renders_what_the_rewriter_writes(
        lines in proptest::collection::vec(
            "(#EXT-X-MAP:URI=\"[a-z/.:?=&#]{0,12}\"|#EXTINF:4,|[a-z/.:?=&#\\\\]{0,16}|token=[a-z]{0,3}|sgT0ken)",
            0..12,
        ),
        crlf in proptest::bool::ANY,
        value in "[A-Za-z0-9._~%+-]{1,40}",
        sid in "[A-Za-z0-9_-]{22}",
    ) {
        let text = lines.join(if crlf { "\r\n" } else { "\n" });
        let want = rewrite_hls(&text, &format!("token={value}"));
        let t = Template::build(text.as_bytes(), false).unwrap().unwrap();
        proptest::prop_assert_eq!(&t.render(&value)[..], want.as_bytes());
        // With a session id, as the edge renders it for capped policies.
        let want = rewrite_hls(&text, &format!("token={value}&sg_sid={sid}"));
        proptest::prop_assert_eq!(
            &t.render_parts(&[&value, "&", "sg_sid", "=", &sid])[..],
            want.as_bytes()
        );
    }

    #[test]
    fn mpd_template_renders_what_the_rewriter_writes(
        base in "(|<BaseURL>[a-z/:.]{0,10}</BaseURL>)",
        media in "[a-z/.:?=&#$]{0,16}",
        init in "[a-z/.:?=#$]{0,10}",
        value in "[A-Za-z0-9._~%+-]{1,40}",
        sid in "[A-Za-z0-9_-]{22}",
    ) {
        let media = media.replace('&', "&amp;");
        let xml = format!(
            "<MPD><Period>{base}<AdaptationSet><SegmentTemplate media=\"{media}\" \
             initialization=\"{init}\"/><Representation id=\"a\">{base}</Representation>\
             </AdaptationSet></Period></MPD>"
        );
        let want = rewrite_mpd(xml.as_bytes(), &format!("token={value}")).unwrap();
        let t = Template::build(xml.as_bytes(), true).unwrap().unwrap();
        proptest::prop_assert_eq!(&t.render(&value)[..], &want[..]);
        let want = rewrite_mpd(xml.as_bytes(), &format!("token={value}&sg_sid={sid}")).unwrap();
        proptest::prop_assert_eq!(
            &t.render_parts(&[&value, "&amp;", "sg_sid", "=", &sid])[..],
            &want[..]
        );
    }
}

#[test]
fn templates_fall_back_where_they_cannot_be_exact() {
    // The placeholder itself in the source: no template, so the rewriter runs per request.
    assert!(
        Template::build(b"seg-sgT0kenSl0t7q.m4s\n", false)
            .unwrap()
            .is_none()
    );
    assert!(Template::build(b"<MPD></Period>", true).is_err());
    assert_eq!(SLOT_PARAM, format!("token={SLOT}"));
    for bad in ["", "a&b", "a#b", "a<b", "a\"b", "a'b", "a b"] {
        assert!(!template_safe(bad), "{bad:?}");
    }
    assert!(template_safe(
        "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln-_%2B"
    ));
    // No URI: the template is the playlist itself, shared, not copied.
    let t = Template::build(b"#EXTM3U\n#EXT-X-ENDLIST\n", false)
        .unwrap()
        .unwrap();
    assert_eq!(&t.render("abc")[..], b"#EXTM3U\n#EXT-X-ENDLIST\n");
}
