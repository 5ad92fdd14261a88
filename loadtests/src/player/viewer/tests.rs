//! The viewer against a simulated network with fake time: a link of some bandwidth and
//! round-trip time, optional freezes and failures, and HLS or DASH content.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::player::ByteRange;

const MASTER: &str = "https://edge.test/v/demo/master.m3u8?token=t";

/// A live playlist at a time: URL, now -> text.
type LiveFn = dyn Fn(&str, f64) -> Option<String>;

/// A simulated server and link.
struct Sim {
    /// URL -> body text (manifests) ; anything else is a segment of `seg_bytes(url)`.
    texts: HashMap<String, String>,
    /// Link bandwidth, bits per second.
    bps: f64,
    rtt: f64,
    /// Requests answered inside [from, to) wait until `to`.
    freeze: Option<(f64, f64)>,
    /// Fail the request whose URL contains this, with this status and reason, `times` times.
    fail: Option<(String, u16, String, u32)>,
    /// The master answers from this URL (a redirect was followed).
    master_final: Option<String>,
    /// Live: a playlist generator (URL -> text at time t).
    live: Option<Box<LiveFn>>,
}

impl Sim {
    fn new(texts: HashMap<String, String>, bps: f64) -> Self {
        Self {
            texts,
            bps,
            rtt: 0.02,
            freeze: None,
            fail: None,
            master_final: None,
            live: None,
        }
    }

    fn seg_bytes(url: &str) -> u64 {
        // Size from the bandwidth encoded in the path: /<kbps>k/; 2 s segments.
        let kbps = url
            .split('/')
            .find_map(|p| p.strip_suffix('k').and_then(|n| n.parse::<u64>().ok()))
            .unwrap_or(128);
        if url.contains("init") {
            800
        } else {
            kbps * 1000 * 2 / 8
        }
    }

    fn answer(&mut self, r: &Request, now: f64) -> (f64, Response) {
        if let Some((pat, status, reason, times)) = &mut self.fail
            && *times > 0
            && r.res.url.contains(pat.as_str())
        {
            *times -= 1;
            let retryable = *status >= 500;
            return (
                now + self.rtt,
                Response::Failed {
                    status: Some(*status),
                    reason: reason.clone(),
                    retryable,
                },
            );
        }
        let text = match &self.live {
            Some(f) => f(&r.res.url, now).or_else(|| self.texts.get(&r.res.url).cloned()),
            None => self.texts.get(&r.res.url).cloned(),
        };
        let bytes = match (&text, r.res.range) {
            (Some(t), _) => t.len() as u64,
            (None, Some(ByteRange { len, .. })) => len,
            (None, None) => Self::seg_bytes(&r.res.url),
        };
        let mut done = now + self.rtt + bytes as f64 * 8.0 / self.bps;
        if let Some((from, to)) = self.freeze
            && done >= from
            && now < to
        {
            done = done.max(to + (done - now));
        }
        let final_url = if r.kind == Kind::Master {
            self.master_final
                .clone()
                .unwrap_or_else(|| r.res.url.clone())
        } else {
            r.res.url.clone()
        };
        (
            done,
            Response::Ok {
                final_url,
                body: text,
                bytes,
                sent_at: now,
            },
        )
    }
}

struct Run {
    requests: Vec<(f64, Request)>,
    events: Vec<(f64, Event)>,
    answered: Vec<(f64, f64, Kind)>,
    end: f64,
    viewer: Viewer,
}

fn run(sim: &mut Sim, cfg: ViewerConfig, url: &str) -> Run {
    let mut v = Viewer::new(cfg, url.to_owned(), 0.0, 7);
    let mut now = 0.0;
    let mut inflight: Vec<(f64, u64, Response, f64, Kind)> = Vec::new();
    let mut out = Run {
        requests: Vec::new(),
        events: Vec::new(),
        answered: Vec::new(),
        end: 0.0,
        viewer: Viewer::new(ViewerConfig::default(), String::new(), 0.0, 0),
    };
    let mut same = 0;
    for _ in 0..100_000 {
        while let Some(r) = v.poll_request(now) {
            let (done, resp) = sim.answer(&r, now);
            inflight.push((done, r.id, resp, r.needed_at, r.kind));
            out.requests.push((now, r));
        }
        while let Some(e) = v.poll_event() {
            out.events.push((now, e));
        }
        if v.is_done() {
            break;
        }
        let next_answer = inflight.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
        let next = next_answer.min(v.poll_timeout().unwrap_or(f64::INFINITY));
        assert!(next.is_finite(), "stuck at {now}: {v:?}");
        assert!(next >= now - 1e-9, "time went back: {next} < {now}");
        if next <= now {
            same += 1;
            assert!(
                same < 1000,
                "no progress at {now}: timeout {:?}, {v:#?}",
                v.poll_timeout()
            );
        } else {
            same = 0;
        }
        now = next;
        inflight.sort_by(|a, b| a.0.total_cmp(&b.0));
        while inflight.first().is_some_and(|x| x.0 <= now) {
            let (done, id, resp, needed, kind) = inflight.remove(0);
            out.answered.push((needed, done, kind));
            v.on_response(id, now, resp);
        }
        v.handle_timeout(now);
    }
    while let Some(e) = v.poll_event() {
        out.events.push((now, e));
    }
    assert!(v.is_done(), "never finished");
    out.end = now;
    out.viewer = v;
    out
}

fn media_playlist(kbps: u64, segs: usize, ended: bool) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-MAP:URI=\"/v/demo/{kbps}k/init.mp4?token=t\"\n"
    );
    for i in 1..=segs {
        s.push_str(&format!(
            "#EXTINF:2.0,\n/v/demo/{kbps}k/seg-{i}.m4s?token=t\n"
        ));
    }
    if ended {
        s.push_str("#EXT-X-ENDLIST\n");
    }
    s
}

/// A demo-like HLS asset: three video renditions and separate audio, `segs` x 2 s.
fn hls_asset(segs: usize) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert(
        MASTER.to_owned(),
        "#EXTM3U\n\
         #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",DEFAULT=YES,URI=\"128k/index.m3u8?token=t\"\n\
         #EXT-X-STREAM-INF:BANDWIDTH=500000,AUDIO=\"a\"\n500k/index.m3u8?token=t\n\
         #EXT-X-STREAM-INF:BANDWIDTH=1500000,AUDIO=\"a\"\n1500k/index.m3u8?token=t\n\
         #EXT-X-STREAM-INF:BANDWIDTH=3000000,AUDIO=\"a\"\n3000k/index.m3u8?token=t\n"
            .to_owned(),
    );
    for kbps in [128, 500, 1500, 3000] {
        m.insert(
            format!("https://edge.test/v/demo/{kbps}k/index.m3u8?token=t"),
            media_playlist(kbps, segs, true),
        );
    }
    m
}

fn fast() -> ViewerConfig {
    ViewerConfig {
        target_buffer: 6.0,
        ..ViewerConfig::default()
    }
}

fn assert_no_duplicates(r: &Run) {
    let mut seen = HashSet::new();
    for (_, q) in &r.requests {
        if q.attempt == 0 && q.kind != Kind::Playlist && q.kind != Kind::Master {
            assert!(seen.insert(q.res.clone()), "fetched twice: {:?}", q.res);
        }
    }
}

#[test]
fn idle_link_plays_to_the_end_without_stalls_in_hls_js_order() {
    let mut sim = Sim::new(hls_asset(5), 50e6);
    let r = run(&mut sim, fast(), MASTER);
    let s = r.viewer.stats();
    assert_eq!(s.stalls, 0);
    assert!(s.startup.unwrap() < 0.5, "{s:?}");
    assert!((s.watched - 10.0).abs() < 0.01, "{s:?}");
    assert!(
        r.events
            .iter()
            .any(|e| e.1 == Event::Finished(Outcome::Completed))
    );
    assert_no_duplicates(&r);
    // master, then the selected video playlist and the audio playlist, then the inits
    // before any segment of their track.
    let kinds: Vec<(Kind, Media)> = r.requests.iter().map(|q| (q.1.kind, q.1.media)).collect();
    assert_eq!(kinds[0], (Kind::Master, Media::Manifest));
    assert_eq!(
        &kinds[1..3],
        [
            (Kind::Playlist, Media::Video),
            (Kind::Playlist, Media::Audio)
        ]
    );
    for media in [Media::Video, Media::Audio] {
        let first_init = kinds
            .iter()
            .position(|k| *k == (Kind::Init, media))
            .unwrap();
        let first_seg = kinds
            .iter()
            .position(|k| *k == (Kind::Segment, media))
            .unwrap();
        assert!(first_init < first_seg, "{kinds:?}");
    }
    // The default estimate starts low; a fast link moves it to the top rendition.
    let last_video = r
        .requests
        .iter()
        .rev()
        .find(|q| q.1.kind == Kind::Segment && q.1.media == Media::Video)
        .unwrap();
    assert!(last_video.1.res.url.contains("/3000k/"), "{last_video:?}");
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e.1, Event::Switched { .. }))
    );
    // Every segment of both tracks once: 5 video (over renditions) and 5 audio.
    let segs = r
        .requests
        .iter()
        .filter(|q| q.1.kind == Kind::Segment)
        .count();
    assert_eq!(segs, 10);
    assert_eq!(s.segments, 10);
    assert_eq!(s.late, 0);
}

#[test]
fn a_slow_link_picks_the_lowest_rendition_and_stalls() {
    let mut sim = Sim::new(hls_asset(6), 450e3);
    let r = run(&mut sim, fast(), MASTER);
    let s = r.viewer.stats();
    let video: Vec<&str> = r
        .requests
        .iter()
        .filter(|q| q.1.kind == Kind::Segment && q.1.media == Media::Video)
        .map(|q| q.1.res.url.as_str())
        .collect();
    assert!(video.iter().all(|u| u.contains("/500k/")), "{video:?}");
    assert!(s.stalls > 0, "500k on a 450k link stalls: {s:?}");
    assert!(s.stalled > 0.5 && s.late > 0, "{s:?}");
    let stalls = r
        .events
        .iter()
        .filter(|e| e.1 == Event::StallStarted)
        .count();
    assert_eq!(stalls as u32, s.stalls);
    // Every second is accounted for: startup wait, playing, stalled.
    let total = s.startup.unwrap() + s.watched + s.stalled;
    assert!((total - r.end).abs() < 0.01, "{total} vs {}", r.end);
}

#[test]
fn a_freeze_counts_from_when_the_player_needed_the_object() {
    let mut sim = Sim::new(hls_asset(8), 50e6);
    sim.freeze = Some((5.0, 7.0));
    let r = run(&mut sim, fast(), MASTER);
    // Something the player needed while the server was frozen waited for the thaw, and its
    // latency (done - needed) covers the rest of the freeze.
    let during: Vec<&(f64, f64, Kind)> = r
        .answered
        .iter()
        .filter(|(needed, done, _)| *needed >= 5.0 && *needed < 7.0 && *done >= 7.0)
        .collect();
    assert!(!during.is_empty(), "{:?}", r.answered);
    for (needed, done, _) in during {
        assert!(done - needed >= 7.0 - needed - 1e-9);
    }
    let worst = r.answered.iter().map(|(n, d, _)| d - n).fold(0.0, f64::max);
    assert!(worst >= 1.0, "{worst}");
}

#[test]
fn a_fixed_session_leaves_after_its_length() {
    let mut sim = Sim::new(hls_asset(10), 50e6);
    let cfg = ViewerConfig {
        session: SessionLength::Fixed(3.0),
        ..fast()
    };
    let r = run(&mut sim, cfg, MASTER);
    let s = r.viewer.stats();
    assert!((s.watched - 3.0).abs() < 0.01, "{s:?}");
    assert!(
        r.events
            .iter()
            .any(|e| e.1 == Event::Finished(Outcome::Completed))
    );
    // It buffered ahead (target 6 s) but not the whole 20 s.
    let segs = r
        .requests
        .iter()
        .filter(|q| q.1.kind == Kind::Segment)
        .count();
    assert!(segs < 20, "{segs}");
}

#[test]
fn a_seek_jumps_without_fetching_anything_twice() {
    let mut sim = Sim::new(hls_asset(10), 50e6);
    let cfg = ViewerConfig {
        session: SessionLength::Fixed(8.0),
        seek_probability: 1.0,
        ..fast()
    };
    let r = run(&mut sim, cfg, MASTER);
    let s = r.viewer.stats();
    assert_eq!(s.seeks, 1, "{s:?}");
    // It leaves after 8 s watched, or earlier at the content's end if it seeked near it.
    assert!(s.watched <= 8.0 + 0.01, "{s:?}");
    assert!(
        r.events
            .iter()
            .any(|e| e.1 == Event::Finished(Outcome::Completed))
    );
    assert_no_duplicates(&r);
    let (from, to) = r
        .events
        .iter()
        .find_map(|e| match e.1 {
            Event::Seeked { from, to } => Some((from, to)),
            _ => None,
        })
        .unwrap();
    assert!(
        from != to && (to / 2.0).fract() == 0.0,
        "to a segment start: {from} -> {to}"
    );
    let total = s.startup.unwrap() + s.watched + s.stalled + s.seek_wait;
    assert!((total - r.end).abs() < 0.01, "{total} vs {}", r.end);
}

#[test]
fn session_lengths_parse_and_draw() {
    assert_eq!(SessionLength::parse("end"), Ok(SessionLength::ToEnd));
    assert_eq!(SessionLength::parse("90s"), Ok(SessionLength::Fixed(90.0)));
    assert_eq!(
        SessionLength::parse("30s..2m"),
        Ok(SessionLength::Uniform(30.0, 120.0))
    );
    assert_eq!(
        SessionLength::parse("exp:1m"),
        Ok(SessionLength::Exponential(60.0))
    );
    assert!(SessionLength::parse("2m..30s").is_err());
    assert!(SessionLength::parse("soon").is_err());
    let mut rng = crate::player::Rng::new(1);
    let n = 20_000;
    let mean: f64 = (0..n)
        .map(|_| SessionLength::Exponential(60.0).draw(&mut rng))
        .sum::<f64>()
        / n as f64;
    assert!((mean - 60.0).abs() < 2.0, "{mean}");
    let u = SessionLength::Uniform(10.0, 20.0).draw(&mut rng);
    assert!((10.0..20.0).contains(&u));
}

#[test]
fn a_denied_segment_fails_the_viewer_with_the_edge_reason() {
    let mut sim = Sim::new(hls_asset(5), 50e6);
    sim.fail = Some(("seg-3".into(), 403, "token_expired".into(), 1));
    let r = run(&mut sim, fast(), MASTER);
    let fin = r.events.iter().find_map(|e| match &e.1 {
        Event::Finished(o) => Some(o.clone()),
        _ => None,
    });
    assert_eq!(
        fin,
        Some(Outcome::Failed {
            kind: Kind::Segment,
            status: Some(403),
            reason: "token_expired".into()
        })
    );
}

#[test]
fn a_5xx_is_retried_with_the_original_need_time() {
    let mut sim = Sim::new(hls_asset(4), 50e6);
    sim.fail = Some(("seg-2".into(), 503, "origin_unavailable".into(), 1));
    let r = run(&mut sim, fast(), MASTER);
    assert!(
        r.events
            .iter()
            .any(|e| e.1 == Event::Finished(Outcome::Completed))
    );
    let tries: Vec<&Request> = r
        .requests
        .iter()
        .map(|q| &q.1)
        .filter(|q| q.res.url.contains("seg-2"))
        .collect();
    let first = tries.iter().find(|q| q.attempt == 0).unwrap();
    let retry = tries.iter().find(|q| q.attempt == 1).unwrap();
    assert_eq!(first.res, retry.res);
    assert_eq!(first.needed_at, retry.needed_at);
}

#[test]
fn relative_uris_resolve_against_the_redirected_url() {
    let mut texts = hls_asset(3);
    let master = texts.remove(MASTER).unwrap();
    let moved = "https://edge.test/v/demo/master-moved.m3u8?token=t".to_owned();
    texts.insert(moved.clone(), master.clone());
    texts.insert("https://edge.test/old.m3u8".to_owned(), master);
    let mut sim = Sim::new(texts, 50e6);
    sim.master_final = Some(moved);
    let r = run(&mut sim, fast(), "https://edge.test/old.m3u8");
    assert!(
        r.requests[1]
            .1
            .res
            .url
            .starts_with("https://edge.test/v/demo/")
    );
    assert!(
        r.events
            .iter()
            .any(|e| e.1 == Event::Finished(Outcome::Completed))
    );
}

#[test]
fn live_playlists_refresh_every_target_duration() {
    // A live stream: a new 2 s segment every 2 s, the playlist keeps the last 5.
    let live = |url: &str, t: f64| -> Option<String> {
        let kbps = ["128", "500", "1500", "3000"]
            .into_iter()
            .find(|k| url.contains(&format!("/{k}k/index")))?;
        let newest = 10 + (t / 2.0).floor() as u64;
        let first = newest.saturating_sub(4);
        let mut s = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-MAP:URI=\"/v/demo/{kbps}k/init.mp4\"\n"
        );
        for i in first..=newest {
            s.push_str(&format!("#EXTINF:2.0,\n/v/demo/{kbps}k/seg-{i}.m4s\n"));
        }
        Some(s)
    };
    let mut sim = Sim::new(hls_asset(1), 50e6);
    sim.live = Some(Box::new(live));
    let cfg = ViewerConfig {
        session: SessionLength::Fixed(12.0),
        ..fast()
    };
    let r = run(&mut sim, cfg, MASTER);
    let s = r.viewer.stats();
    assert!((s.watched - 12.0).abs() < 0.01, "{s:?}");
    assert_no_duplicates(&r);
    let refreshes = r
        .requests
        .iter()
        .filter(|q| q.1.kind == Kind::Playlist && q.1.media == Media::Audio)
        .count();
    assert!(refreshes >= 5, "{refreshes}");
    // It started 3 segments from the live edge, not at the oldest one listed.
    let first_audio = r
        .requests
        .iter()
        .find(|q| q.1.kind == Kind::Segment && q.1.media == Media::Audio)
        .unwrap();
    assert!(
        first_audio.1.res.url.ends_with("seg-8.m4s"),
        "{first_audio:?}"
    );
}

#[test]
fn dash_plays_video_and_audio() {
    let mpd = r#"<MPD type="static" mediaPresentationDuration="PT8S"><Period>
      <AdaptationSet contentType="video"><SegmentTemplate timescale="1" duration="2" startNumber="1" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/seg-$Number$.m4s"/>
        <Representation id="500k" bandwidth="500000"/><Representation id="3000k" bandwidth="3000000"/></AdaptationSet>
      <AdaptationSet contentType="audio"><Representation id="128k" bandwidth="128000">
        <SegmentTemplate timescale="10" initialization="init.mp4" media="t$Time$.m4s"><SegmentTimeline><S t="0" d="20" r="3"/></SegmentTimeline></SegmentTemplate>
        <BaseURL>128k/</BaseURL></Representation></AdaptationSet></Period></MPD>"#;
    let url = "https://edge.test/v/demo/manifest.mpd";
    let mut texts = HashMap::new();
    texts.insert(url.to_owned(), mpd.to_owned());
    let mut sim = Sim::new(texts, 50e6);
    let r = run(&mut sim, fast(), url);
    let s = r.viewer.stats();
    assert_eq!(s.stalls, 0);
    assert!((s.watched - 8.0).abs() < 0.01, "{s:?}");
    assert_no_duplicates(&r);
    let audio: Vec<&str> = r
        .requests
        .iter()
        .filter(|q| q.1.kind == Kind::Segment && q.1.media == Media::Audio)
        .map(|q| q.1.res.url.as_str())
        .collect();
    assert_eq!(audio.len(), 4);
    assert!(audio[3].ends_with("/128k/t60.m4s"), "{audio:?}");
    // No media playlists in DASH.
    assert!(r.requests.iter().all(|q| q.1.kind != Kind::Playlist));
}

#[test]
fn a_bad_manifest_fails_the_viewer_with_a_reason() {
    let mut texts = HashMap::new();
    texts.insert(
        MASTER.to_owned(),
        "#EXTM3U\n#EXT-X-STREAM-INF:X=1\nv.m3u8\n".to_owned(),
    );
    let mut sim = Sim::new(texts, 50e6);
    let r = run(&mut sim, fast(), MASTER);
    match &r.events.last().unwrap().1 {
        Event::Finished(Outcome::Failed { kind, reason, .. }) => {
            assert_eq!(*kind, Kind::Master);
            assert!(reason.contains("BANDWIDTH"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn cmcd_describes_each_request() {
    let mut sim = Sim::new(hls_asset(4), 50e6);
    let r = run(&mut sim, fast(), MASTER);
    let master = &r.requests[0].1.cmcd;
    assert_eq!(master.ot, Some(ObjectType::Manifest));
    assert!(master.su);
    let seg = r
        .requests
        .iter()
        .map(|q| &q.1)
        .find(|q| q.kind == Kind::Segment && q.media == Media::Video)
        .unwrap();
    assert_eq!(seg.cmcd.ot, Some(ObjectType::Video));
    assert_eq!(seg.cmcd.d, Some(2000));
    assert_eq!(seg.cmcd.br, Some(500));
    assert_eq!(seg.cmcd.nor.as_deref(), Some("seg-2.m4s"));
    let audio = r
        .requests
        .iter()
        .map(|q| &q.1)
        .find(|q| q.kind == Kind::Segment && q.media == Media::Audio)
        .unwrap();
    assert_eq!(audio.cmcd.ot, Some(ObjectType::Audio));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// On any link and any asset length, a VOD viewer finishes, never fetches an object
    /// twice, and accounts for every second (startup + watched + stalled = elapsed).
    #[test]
    fn no_duplicates_and_exact_time_accounting(
        kbps in 200u64..20_000,
        rtt_ms in 1u64..300,
        segs in 1usize..12,
        target in 2.0f64..30.0,
        startup in 0.5f64..6.0,
        seek in proptest::bool::ANY,
    ) {
        let mut sim = Sim::new(hls_asset(segs), kbps as f64 * 1000.0);
        sim.rtt = rtt_ms as f64 / 1000.0;
        let cfg = ViewerConfig {
            target_buffer: target,
            startup_threshold: startup,
            rebuffer_threshold: startup,
            seek_probability: if seek { 1.0 } else { 0.0 },
            ..ViewerConfig::default()
        };
        let r = run(&mut sim, cfg, MASTER);
        assert_no_duplicates(&r);
        let s = r.viewer.stats();
        if !seek {
            prop_assert!((s.watched - 2.0 * segs as f64).abs() < 0.01, "{:?}", s);
            prop_assert_eq!(s.segments as usize, 2 * segs);
        }
        let total = s.startup.unwrap() + s.watched + s.stalled + s.seek_wait;
        prop_assert!((total - r.end).abs() < 0.01, "{} vs {}", total, r.end);
        let stalls = r.events.iter().filter(|e| e.1 == Event::StallStarted).count();
        prop_assert_eq!(stalls as u32, s.stalls);
    }
}
