use super::dash::{TimelineEntry, timeline, xml_escape};
use super::testing::{presentation, segments};
use super::*;

#[test]
fn fixed_point_formatting() {
    assert_eq!(fixed_secs(49152, 15360, 6), "3.200000");
    assert_eq!(fixed_secs(77824, 48000, 6), "1.621333");
    assert_eq!(fixed_secs(1001, 30000, 6), "0.033367");
    assert_eq!(fixed_secs(u64::MAX, 1, 3), format!("{}.000", u64::MAX));
    assert_eq!(fixed_secs(5, 0, 2), "5.00");
    assert_eq!(fps_3(30000, 1001), "29.970");
    assert_eq!(fps_3(30, 1), "30.000");
}

#[test]
fn bandwidth_follows_rfc8216_peak_definition() {
    let p = presentation();
    let v = &p.video[0];
    assert_eq!(v.target_duration_secs(), 4);
    // 1.2 MB in the first 3.2 s segment.
    assert_eq!(v.peak_bps(), 3_000_000);
    assert_eq!(v.average_bps(), 2_600_000);
    let a = p.audio.as_ref().unwrap();
    // Segment 2 + the short segment 3 (4.82 s) is a qualifying window.
    assert_eq!(a.peak_bps(), 128_098);
    assert_eq!(a.average_bps(), 128_059);
    assert_eq!(v.frame_rate(), Some((30, 1)));
    assert_eq!(a.frame_rate(), None);
}

#[test]
fn short_track_peak_falls_back_to_average() {
    let mut t = presentation().video.remove(0);
    // One 1 s segment: shorter than half the target duration.
    t.segments = segments(&[(15360, 100_000)]);
    assert_eq!(t.target_duration_secs(), 1);
    assert_eq!(t.peak_bps(), 800_000);
    t.segments.clear();
    assert_eq!(t.peak_bps(), 0);
    assert_eq!(t.frame_rate(), None);
}

const MASTER: &str = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",LANGUAGE=\"en\",NAME=\"Audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/aac/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=3128098,AVERAGE-BANDWIDTH=2728059,RESOLUTION=1280x720,FRAME-RATE=30.000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aac\"
video/720p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=928098,AVERAGE-BANDWIDTH=848059,RESOLUTION=640x360,FRAME-RATE=30.000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aac\"
video/360p/index.m3u8
";

const MEDIA_AUDIO: &str = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init.mp4\"
#EXTINF:3.200000,
seg-00001.m4s
#EXTINF:3.200000,
seg-00002.m4s
#EXTINF:1.621333,
seg-00003.m4s
#EXT-X-ENDLIST
";

const MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT8.021S" maxSegmentDuration="PT3.200S" minBufferTime="PT3.200S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1" maxWidth="1280" maxHeight="720">
      <Representation id="720p" bandwidth="3000000" width="1280" height="720" sar="1:1" frameRate="30" codecs="avc1.64001f">
        <BaseURL>video/720p/</BaseURL>
        <SegmentTemplate timescale="15360" initialization="init.mp4" media="seg-$Number%05d$.m4s" startNumber="1">
          <SegmentTimeline>
            <S t="0" d="49152" r="1"/>
            <S d="24576"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
      <Representation id="360p" bandwidth="800000" width="640" height="360" sar="1:1" frameRate="30" codecs="avc1.64001f">
        <BaseURL>video/360p/</BaseURL>
        <SegmentTemplate timescale="15360" initialization="init.mp4" media="seg-$Number%05d$.m4s" startNumber="1">
          <SegmentTimeline>
            <S t="0" d="49152" r="1"/>
            <S d="24576"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" lang="en" segmentAlignment="true" startWithSAP="1">
      <Representation id="aac" bandwidth="128098" codecs="mp4a.40.2" audioSamplingRate="48000">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
        <BaseURL>audio/aac/</BaseURL>
        <SegmentTemplate timescale="48000" initialization="init.mp4" media="seg-$Number%05d$.m4s" startNumber="1">
          <SegmentTimeline>
            <S t="0" d="153600" r="1"/>
            <S d="77824"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;

#[test]
fn golden_manifests() {
    let p = presentation();
    assert_eq!(hls::master_playlist(&p), MASTER);
    assert_eq!(hls::media_playlist(p.audio.as_ref().unwrap()), MEDIA_AUDIO);
    assert_eq!(dash::mpd(&p), MPD);
}

#[test]
fn manifests_are_deterministic_and_complete() {
    let a = render(&presentation());
    let b = render(&presentation());
    assert_eq!(a, b);
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "master.m3u8",
            "manifest.mpd",
            "video/720p/index.m3u8",
            "video/360p/index.m3u8",
            "audio/aac/index.m3u8"
        ]
    );
}

#[test]
fn no_audio_means_no_audio_group() {
    let mut p = presentation();
    p.audio = None;
    let master = hls::master_playlist(&p);
    assert!(!master.contains("EXT-X-MEDIA"));
    assert!(!master.contains("AUDIO="));
    assert!(master.contains("BANDWIDTH=3000000,AVERAGE-BANDWIDTH=2600000,"));
    assert!(master.contains("CODECS=\"avc1.64001f\""));
    let mpd = dash::mpd(&p);
    assert!(!mpd.contains("audio"));
    assert!(mpd.contains("mediaPresentationDuration=\"PT8.000S\""));
}

#[test]
fn playlists_parse_with_an_independent_reader() {
    let p = presentation();
    let master = m3u8_rs::parse_master_playlist_res(hls::master_playlist(&p).as_bytes()).unwrap();
    assert_eq!(master.variants.len(), 2);
    assert_eq!(master.variants[0].bandwidth, 3_128_098);
    assert_eq!(master.variants[0].average_bandwidth, Some(2_728_059));
    assert_eq!(master.variants[0].audio.as_deref(), Some("aac"));
    assert_eq!(
        master.alternatives[0].uri.as_deref(),
        Some("audio/aac/index.m3u8")
    );
    assert_eq!(master.alternatives[0].channels.as_deref(), Some("2"));
    let media =
        m3u8_rs::parse_media_playlist_res(hls::media_playlist(&p.video[0]).as_bytes()).unwrap();
    assert_eq!(media.target_duration, 4);
    assert_eq!(media.media_sequence, 1);
    assert!(media.end_list);
    assert_eq!(media.segments.len(), 3);
    assert!((media.segments[2].duration - 1.6).abs() < 1e-6);
    assert_eq!(media.segments[0].map.as_ref().unwrap().uri, "init.mp4");
}

#[test]
fn mpd_parses_with_an_independent_reader() {
    let reps = crate::verify::mpd_references(&dash::mpd(&presentation())).unwrap();
    assert_eq!(reps.len(), 3);
    assert_eq!(reps[0].init.as_deref(), Some("video/720p/init.mp4"));
    assert_eq!(
        reps[2].media,
        [
            "audio/aac/seg-00001.m4s",
            "audio/aac/seg-00002.m4s",
            "audio/aac/seg-00003.m4s"
        ]
    );
}

#[test]
fn timeline_marks_gaps_with_explicit_times() {
    let mut segs = segments(&[(10, 1), (10, 1), (10, 1), (7, 1)]);
    segs[2].base_media_decode_time = 25;
    segs[3].base_media_decode_time = 35;
    assert_eq!(
        timeline(&segs),
        [
            TimelineEntry {
                t: Some(0),
                d: 10,
                r: 1
            },
            TimelineEntry {
                t: Some(25),
                d: 10,
                r: 0
            },
            TimelineEntry {
                t: None,
                d: 7,
                r: 0
            },
        ]
    );
    let mut shifted = segments(&[(10, 1)]);
    shifted[0].base_media_decode_time = 99;
    let mut p = presentation();
    p.video[0].segments = shifted;
    assert!(dash::mpd(&p).contains("presentationTimeOffset=\"99\""));
}

#[test]
fn xml_escaping() {
    assert_eq!(
        xml_escape(r#"a&b<c>"d"'e"#),
        "a&amp;b&lt;c&gt;&quot;d&quot;&apos;e"
    );
    let mut p = presentation();
    p.video[0].name = "7<2\"&".to_owned();
    let mpd = dash::mpd(&p);
    assert!(mpd.contains("id=\"7&lt;2&quot;&amp;\""));
    let reps = crate::verify::mpd_references(&mpd).unwrap();
    assert_eq!(reps[0].id, "7<2\"&");
}
