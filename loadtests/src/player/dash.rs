//! DASH (ISO/IEC 23009-1) as a player reads it: `BaseURL` at the MPD, Period, AdaptationSet
//! and Representation levels, `SegmentTemplate` with `$Number$`, `$Time$`,
//! `$RepresentationID$` and `$Bandwidth$` (with `%0Nd` widths), inherited from the
//! AdaptationSet, either with a fixed `duration` or a `SegmentTimeline`. A dynamic MPD with a
//! timeline is played as live and refreshed every `minimumUpdatePeriod`.

use quick_xml::events::Event as Xml;

use super::{
    ManifestError, Presentation, Rendition, Resource, Segment, Source, Track, bad, resolve,
};

/// The most segments one representation may expand to (a bad duration must not make the
/// model allocate without bound).
const MAX_SEGMENTS: u64 = 200_000;

#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Self>,
    text: String,
}

impl Node {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    fn child(&self, name: &str) -> Option<&Self> {
        self.children.iter().find(|c| c.name == name)
    }
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Self> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

fn local(name: &[u8]) -> String {
    let n = String::from_utf8_lossy(name);
    n.rsplit(':').next().unwrap_or_default().to_owned()
}

fn node_of(e: &quick_xml::events::BytesStart<'_>) -> Result<Node, ManifestError> {
    let mut n = Node {
        name: local(e.name().as_ref()),
        ..Node::default()
    };
    for a in e.attributes() {
        let a = a.map_err(|e| bad("MPD", format!("attribute: {e}")))?;
        let v = a
            .unescape_value()
            .map_err(|e| bad("MPD", format!("attribute value: {e}")))?;
        n.attrs.push((local(a.key.as_ref()), v.into_owned()));
    }
    Ok(n)
}

fn tree(text: &str) -> Result<Node, ManifestError> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Node> = vec![Node::default()];
    loop {
        match reader
            .read_event()
            .map_err(|e| ManifestError::NotManifest(format!("XML: {e}")))?
        {
            Xml::Start(e) => {
                if stack.len() > 64 {
                    return Err(bad("MPD", "nested too deeply"));
                }
                stack.push(node_of(&e)?);
            }
            Xml::Empty(e) => {
                let n = node_of(&e)?;
                stack.last_mut().expect("root").children.push(n);
            }
            Xml::Text(t) => {
                let t = t
                    .decode()
                    .map_err(|e| ManifestError::NotManifest(format!("XML text: {e}")))?;
                let t = quick_xml::escape::unescape(&t)
                    .map_err(|e| ManifestError::NotManifest(format!("XML text: {e}")))?;
                stack.last_mut().expect("root").text.push_str(&t);
            }
            Xml::GeneralRef(r) => {
                let name = r
                    .decode()
                    .map_err(|e| ManifestError::NotManifest(format!("XML: {e}")))?;
                let s = match &*name {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                };
                stack.last_mut().expect("root").text.push_str(s);
            }
            Xml::End(_) => {
                let n = stack.pop().expect("balanced");
                let Some(parent) = stack.last_mut() else {
                    return Err(ManifestError::NotManifest("unbalanced XML".into()));
                };
                parent.children.push(n);
            }
            Xml::Eof => break,
            _ => {}
        }
    }
    let root = stack.pop().expect("root");
    if !stack.is_empty() {
        return Err(ManifestError::NotManifest("unclosed XML elements".into()));
    }
    root.children
        .into_iter()
        .find(|c| c.name == "MPD")
        .ok_or_else(|| ManifestError::NotManifest("no <MPD> element".into()))
}

/// Parses an ISO 8601 duration (`PT1H2M3.5S`, `P1DT2H`) into seconds.
pub fn iso_duration(s: &str) -> Option<f64> {
    let rest = s.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut total = 0.0;
    let mut num = String::new();
    for (part, is_time) in [(date, false), (time, true)] {
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let v: f64 = num.parse().ok()?;
            num.clear();
            total += v * match (c, is_time) {
                ('Y', false) => 365.0 * 86400.0,
                ('M', false) => 30.0 * 86400.0,
                ('W', false) => 7.0 * 86400.0,
                ('D', false) => 86400.0,
                ('H', true) => 3600.0,
                ('M', true) => 60.0,
                ('S', true) => 1.0,
                _ => return None,
            };
        }
        if !num.is_empty() {
            return None;
        }
    }
    Some(total)
}

/// `BaseURL` of `node`, resolved against `base`.
fn base_of(node: &Node, base: &str) -> Result<String, ManifestError> {
    match node.child("BaseURL") {
        Some(b) if !b.text.trim().is_empty() => resolve(base, b.text.trim()),
        _ => Ok(base.to_owned()),
    }
}

/// The merged SegmentTemplate: the Representation's attributes over the AdaptationSet's
/// over the Period's.
#[derive(Debug, Default, Clone)]
struct Template {
    media: Option<String>,
    init: Option<String>,
    start_number: Option<u64>,
    timescale: Option<u64>,
    duration: Option<u64>,
    pto: Option<u64>,
    timeline: Option<Vec<(Option<u64>, u64, i64)>>,
}

fn num<T: std::str::FromStr>(n: &Node, k: &str, at: &str) -> Result<Option<T>, ManifestError> {
    n.attr(k)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|_| bad(at, format!("{k}={v:?}")))
        })
        .transpose()
}

impl Template {
    fn over(mut self, node: Option<&Node>, at: &str) -> Result<Self, ManifestError> {
        let Some(n) = node else { return Ok(self) };
        if let Some(v) = n.attr("media") {
            self.media = Some(v.to_owned());
        }
        if let Some(v) = n.attr("initialization") {
            self.init = Some(v.to_owned());
        }
        self.start_number = num(n, "startNumber", at)?.or(self.start_number);
        self.timescale = num(n, "timescale", at)?.or(self.timescale);
        self.duration = num(n, "duration", at)?.or(self.duration);
        self.pto = num(n, "presentationTimeOffset", at)?.or(self.pto);
        if let Some(tl) = n.child("SegmentTimeline") {
            let mut v = Vec::new();
            for s in tl.all("S") {
                let d: u64 = num(s, "d", at)?.ok_or_else(|| bad(at, "<S> without d"))?;
                if d == 0 {
                    return Err(bad(at, "<S d=\"0\">"));
                }
                v.push((num(s, "t", at)?, d, num(s, "r", at)?.unwrap_or(0)));
            }
            self.timeline = Some(v);
        }
        Ok(self)
    }
}

/// Expands `$Identifier$` and `$Identifier%0Nd$` in a template.
pub fn expand(template: &str, id: &str, bandwidth: u64, number: u64, time: u64) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('$') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let ident = &after[..j];
        rest = &after[j + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, width) = match ident.split_once('%') {
            Some((n, f)) => (
                n,
                f.trim_start_matches('0')
                    .trim_end_matches('d')
                    .parse::<usize>()
                    .unwrap_or(1),
            ),
            None => (ident, 1),
        };
        match name {
            "RepresentationID" => out.push_str(id),
            "Number" => out.push_str(&format!("{number:0width$}")),
            "Time" => out.push_str(&format!("{time:0width$}")),
            "Bandwidth" => out.push_str(&format!("{bandwidth:0width$}")),
            _ => {
                out.push('$');
                out.push_str(ident);
                out.push('$');
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses an MPD fetched from `url` (the final URL after redirects).
pub fn parse(text: &str, url: &str) -> Result<Presentation, ManifestError> {
    let mpd = tree(text)?;
    let dynamic = mpd.attr("type") == Some("dynamic");
    let mpd_base = base_of(&mpd, url)?;
    let period = mpd
        .all("Period")
        .next()
        .ok_or(ManifestError::Empty("Period in the MPD"))?;
    let period_base = base_of(period, &mpd_base)?;
    let period_dur = period
        .attr("duration")
        .or_else(|| mpd.attr("mediaPresentationDuration"))
        .map(|d| iso_duration(d).ok_or_else(|| bad("MPD", format!("duration {d:?}"))))
        .transpose()?;
    let mut video = Vec::new();
    let mut audio: Vec<Rendition> = Vec::new();
    for (ai, set) in period.all("AdaptationSet").enumerate() {
        let at = format!("AdaptationSet {ai}");
        let set_base = base_of(set, &period_base)?;
        let kind = set
            .attr("contentType")
            .or_else(|| set.attr("mimeType"))
            .unwrap_or_default();
        let set_tmpl = Template::default()
            .over(period.child("SegmentTemplate"), &at)?
            .over(set.child("SegmentTemplate"), &at)?;
        for (ri, rep) in set.all("Representation").enumerate() {
            let at = format!("{at} Representation {ri}");
            let kind = rep
                .attr("mimeType")
                .filter(|_| kind.is_empty())
                .unwrap_or(kind);
            let id = rep.attr("id").unwrap_or_default().to_owned();
            let bandwidth: u64 =
                num(rep, "bandwidth", &at)?.ok_or_else(|| bad(&at, "no bandwidth"))?;
            let base = base_of(rep, &set_base)?;
            if rep.child("SegmentBase").is_some() || rep.child("SegmentList").is_some() {
                return Err(ManifestError::Unsupported(format!(
                    "{at}: SegmentBase/SegmentList (only SegmentTemplate)"
                )));
            }
            let t = set_tmpl.clone().over(rep.child("SegmentTemplate"), &at)?;
            let track = track_of(&t, &id, bandwidth, &base, period_dur, dynamic, &at)?;
            let r = Rendition {
                id: if id.is_empty() {
                    format!("{ai}.{ri}")
                } else {
                    id
                },
                bandwidth,
                source: Source::Track(track),
            };
            if kind.starts_with("audio") {
                audio.push(r);
            } else if kind.starts_with("video") || kind.is_empty() {
                video.push(r);
            }
        }
    }
    if video.is_empty() {
        return Err(ManifestError::Empty("video Representation in the MPD"));
    }
    video.sort_by_key(|r| r.bandwidth);
    audio.sort_by_key(|r| r.bandwidth);
    let refresh = if dynamic {
        Some(
            mpd.attr("minimumUpdatePeriod")
                .and_then(iso_duration)
                .unwrap_or(2.0)
                .max(0.5),
        )
    } else {
        None
    };
    Ok(Presentation {
        video,
        audio: audio.pop(),
        manifest_refresh: refresh,
    })
}

fn track_of(
    t: &Template,
    id: &str,
    bandwidth: u64,
    base: &str,
    period_dur: Option<f64>,
    dynamic: bool,
    at: &str,
) -> Result<Track, ManifestError> {
    let media = t
        .media
        .as_deref()
        .ok_or_else(|| ManifestError::Unsupported(format!("{at}: no SegmentTemplate@media")))?;
    let timescale = t.timescale.unwrap_or(1).max(1);
    let start_number = t.start_number.unwrap_or(1);
    let init = t
        .init
        .as_deref()
        .map(|i| {
            resolve(base, &expand(i, id, bandwidth, 0, 0)).map(|url| Resource { url, range: None })
        })
        .transpose()?;
    let pto = t.pto.unwrap_or(0);
    let mut segments = Vec::new();
    let mut push = |number: u64, time: u64, d: u64| -> Result<(), ManifestError> {
        segments.push(Segment {
            seq: number,
            start: time.saturating_sub(pto) as f64 / timescale as f64,
            duration: d as f64 / timescale as f64,
            res: Resource {
                url: resolve(base, &expand(media, id, bandwidth, number, time))?,
                range: None,
            },
            init: init.clone(),
        });
        Ok(())
    };
    if let Some(tl) = &t.timeline {
        let end = period_dur.map(|d| pto + (d * timescale as f64).round() as u64);
        let mut time = 0u64;
        let mut number = start_number;
        for (i, &(t0, d, r)) in tl.iter().enumerate() {
            if let Some(t0) = t0 {
                time = t0;
            }
            let repeats = if r < 0 {
                // Repeat until the next S's start or the end of the period.
                let until = tl
                    .get(i + 1)
                    .and_then(|n| n.0)
                    .or(end)
                    .ok_or_else(|| bad(at, "r=-1 with no end to repeat to"))?;
                until.saturating_sub(time).div_ceil(d).saturating_sub(1)
            } else {
                r as u64
            };
            if number - start_number + repeats > MAX_SEGMENTS {
                return Err(bad(at, "the timeline lists too many segments"));
            }
            for _ in 0..=repeats {
                push(number, time, d)?;
                time += d;
                number += 1;
            }
        }
    } else {
        let d = t
            .duration
            .filter(|d| *d > 0)
            .ok_or_else(|| bad(at, "SegmentTemplate needs a duration or a SegmentTimeline"))?;
        if dynamic {
            return Err(ManifestError::Unsupported(format!(
                "{at}: a dynamic MPD without SegmentTimeline (needs the wall clock)"
            )));
        }
        let total = period_dur.ok_or_else(|| bad(at, "no mediaPresentationDuration"))?;
        let count = (total * timescale as f64 / d as f64).ceil() as u64;
        if count > MAX_SEGMENTS {
            return Err(bad(at, "the duration makes too many segments"));
        }
        for k in 0..count {
            push(start_number + k, pto + k * d, d)?;
        }
    }
    if segments.is_empty() {
        return Err(ManifestError::Empty("segment in a Representation"));
    }
    let target = segments.iter().map(|s| s.duration).fold(0.0, f64::max);
    Ok(Track {
        segments,
        ended: !dynamic,
        target_duration: target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MPD: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT5.5S" minBufferTime="PT2S">
  <BaseURL>https://cdn.test/v/demo/</BaseURL>
  <Period id="0">
    <BaseURL>p0/</BaseURL>
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/seg-$Number%05d$.m4s"/>
      <Representation id="720p" bandwidth="3000000"><BaseURL>hi/</BaseURL></Representation>
      <Representation id="360p" bandwidth="800000"/>
    </AdaptationSet>
    <AdaptationSet contentType="audio">
      <Representation id="aac" bandwidth="128000">
        <BaseURL>audio/?token=a&amp;b=1</BaseURL>
        <SegmentTemplate timescale="48000" initialization="init.mp4" media="t$Time$.m4s">
          <SegmentTimeline><S t="0" d="96000" r="1"/><S d="48000"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

    #[test]
    fn templates_timelines_and_base_urls_at_every_level() {
        let p = parse(MPD, "https://edge.test/v/demo/manifest.mpd").unwrap();
        assert_eq!(p.manifest_refresh, None);
        assert_eq!(p.video.len(), 2);
        assert_eq!(p.video[0].id, "360p");
        let Source::Track(lo) = &p.video[0].source else {
            panic!()
        };
        assert_eq!(lo.segments.len(), 3, "ceil(5.5 / 2)");
        assert!(lo.ended);
        assert_eq!(
            lo.segments[0].res.url,
            "https://cdn.test/v/demo/p0/360p/seg-00001.m4s"
        );
        assert_eq!(
            lo.segments[0].init.as_ref().unwrap().url,
            "https://cdn.test/v/demo/p0/360p/init.mp4"
        );
        let Source::Track(hi) = &p.video[1].source else {
            panic!()
        };
        assert_eq!(
            hi.segments[2].res.url,
            "https://cdn.test/v/demo/p0/hi/720p/seg-00003.m4s"
        );
        assert_eq!(hi.segments[2].start, 4.0);
        let Some(a) = &p.audio else { panic!() };
        let Source::Track(at) = &a.source else {
            panic!()
        };
        let urls: Vec<&str> = at.segments.iter().map(|s| s.res.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://cdn.test/v/demo/p0/audio/t0.m4s",
                "https://cdn.test/v/demo/p0/audio/t96000.m4s",
                "https://cdn.test/v/demo/p0/audio/t192000.m4s"
            ]
        );
        assert_eq!(at.segments[2].start, 4.0);
        assert_eq!(at.segments[2].duration, 1.0);
    }

    #[test]
    fn dynamic_timeline_is_live() {
        let mpd = r#"<MPD type="dynamic" minimumUpdatePeriod="PT1S"><Period>
            <AdaptationSet mimeType="video/mp4"><Representation id="v" bandwidth="1">
            <SegmentTemplate media="$Number$.m4s" startNumber="7" timescale="1">
            <SegmentTimeline><S t="100" d="2" r="-1"/><S t="110" d="2"/></SegmentTimeline>
            </SegmentTemplate></Representation></AdaptationSet></Period></MPD>"#;
        let p = parse(mpd, "http://e/live.mpd").unwrap();
        assert_eq!(p.manifest_refresh, Some(1.0));
        let Source::Track(t) = &p.video[0].source else {
            panic!()
        };
        assert!(!t.ended);
        let seqs: Vec<u64> = t.segments.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [7, 8, 9, 10, 11, 12]);
        assert_eq!(t.segments[5].res.url, "http://e/12.m4s");
    }

    #[test]
    fn durations_and_expansion() {
        assert_eq!(iso_duration("PT1H2M3.5S"), Some(3723.5));
        assert_eq!(iso_duration("P1DT1S"), Some(86401.0));
        assert_eq!(iso_duration("PT"), Some(0.0));
        assert_eq!(iso_duration("1S"), None);
        assert_eq!(iso_duration("PT1X"), None);
        assert_eq!(
            expand("a$$b$Bandwidth$-$Time%03d$", "r", 5, 1, 7),
            "a$b5-007"
        );
        assert_eq!(expand("x$Unknown$y$", "r", 5, 1, 7), "x$Unknown$y$");
    }

    #[test]
    fn malformed_mpds_are_errors_not_panics() {
        for (text, want) in [
            ("", "no <MPD>"),
            ("<MPD><Period>", "unclosed"),
            ("<html></html>", "no <MPD>"),
            ("<MPD></MPD>", "Period"),
            (
                "<MPD><Period><AdaptationSet contentType=\"video\"><Representation id=\"a\"/></AdaptationSet></Period></MPD>",
                "bandwidth",
            ),
            (
                "<MPD mediaPresentationDuration=\"PT4S\"><Period><AdaptationSet contentType=\"video\"><Representation bandwidth=\"1\"><SegmentTemplate media=\"x\"/></Representation></AdaptationSet></Period></MPD>",
                "duration or a SegmentTimeline",
            ),
            (
                "<MPD mediaPresentationDuration=\"PT9999999S\"><Period><AdaptationSet contentType=\"video\"><Representation bandwidth=\"1\"><SegmentTemplate media=\"x\" duration=\"1\" timescale=\"1000\"/></Representation></AdaptationSet></Period></MPD>",
                "too many",
            ),
            (
                "<MPD><Period><AdaptationSet contentType=\"video\"><Representation bandwidth=\"1\"><SegmentBase/></Representation></AdaptationSet></Period></MPD>",
                "SegmentBase",
            ),
            (
                "<MPD><Period><AdaptationSet contentType=\"video\"><Representation bandwidth=\"1\"><SegmentTemplate media=\"x\"><SegmentTimeline><S d=\"1\" r=\"-1\"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD>",
                "r=-1",
            ),
        ] {
            let e = parse(text, "http://e/m.mpd").unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
