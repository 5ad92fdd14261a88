//! Pure extraction of the files a DASH MPD references, written independently
//! of the MPD writer: `BaseURL` at every level, `SegmentTemplate` inherited
//! from Period and AdaptationSet, expanded over its `SegmentTimeline`.

use quick_xml::Reader;
use quick_xml::encoding::Decoder;
use quick_xml::events::{BytesStart, Event};

use super::uri::join;

/// Most segments one Representation may list; protects against `r="4000000000"`.
const MAX_SEGMENTS: u64 = 1_000_000;
/// Widest `%0Nd` format accepted in a template.
const MAX_WIDTH: usize = 32;

/// The files one Representation references, as URIs relative to the MPD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpdRepresentation {
    /// `Representation@id`.
    pub id: String,
    /// The initialization segment, if the template names one.
    pub init: Option<String>,
    /// Every media segment, in timeline order.
    pub media: Vec<String>,
}

/// Why an MPD could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MpdError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, MpdError> {
    Err(MpdError(msg.into()))
}

#[derive(Debug, Clone, Default)]
struct Template {
    media: Option<String>,
    initialization: Option<String>,
    start_number: Option<u64>,
    timeline: Option<Vec<TimelineS>>,
}

#[derive(Debug, Clone, Copy)]
struct TimelineS {
    t: Option<u64>,
    d: u64,
    r: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mpd,
    Period,
    AdaptationSet,
    Representation,
}

#[derive(Debug)]
struct Level {
    kind: Kind,
    base: Option<String>,
    template: Template,
    id: String,
    bandwidth: Option<u64>,
}

/// Lists, per Representation, the init and media segment URIs of an MPD.
///
/// Only `SegmentTemplate` with a `SegmentTimeline` is understood; MPDs using
/// `SegmentBase`, `SegmentList`, `@duration` templates or `r="-1"` are
/// rejected rather than half-checked.
pub fn mpd_references(xml: &str) -> Result<Vec<MpdRepresentation>, MpdError> {
    let mut reader = Reader::from_str(xml);
    let mut w = Walker {
        decoder: reader.decoder(),
        stack: Vec::new(),
        base_text: None,
        in_timeline: false,
        saw_mpd: false,
        out: Vec::new(),
    };
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                return err(format!(
                    "XML error at byte {}: {e}",
                    reader.buffer_position()
                ));
            }
        };
        match event {
            Event::Start(e) => w.open(&e, false)?,
            Event::Empty(e) => w.open(&e, true)?,
            Event::End(e) => w.close(e.local_name().as_ref())?,
            Event::Text(t) => {
                if let Some(buf) = w.base_text.as_mut() {
                    buf.push_str(
                        &t.decode()
                            .map_err(|e| MpdError(format!("BaseURL text: {e}")))?,
                    );
                }
            }
            Event::CData(t) => {
                if let Some(buf) = w.base_text.as_mut() {
                    buf.push_str(
                        &t.decode()
                            .map_err(|e| MpdError(format!("BaseURL text: {e}")))?,
                    );
                }
            }
            Event::GeneralRef(r) => {
                if let Some(buf) = w.base_text.as_mut() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => buf.push(c),
                        Ok(None) => {
                            let name = r.decode().map_err(|e| MpdError(format!("entity: {e}")))?;
                            match quick_xml::escape::resolve_predefined_entity(&name) {
                                Some(s) => buf.push_str(s),
                                None => return err(format!("unknown entity &{name};")),
                            }
                        }
                        Err(e) => return err(format!("bad character reference: {e}")),
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !w.saw_mpd {
        return err("no MPD element");
    }
    if !w.stack.is_empty() {
        return err("MPD ends inside an element");
    }
    Ok(w.out)
}

/// State of the walk over the MPD's elements.
struct Walker {
    decoder: Decoder,
    stack: Vec<Level>,
    /// Text of the BaseURL element being read.
    base_text: Option<String>,
    in_timeline: bool,
    saw_mpd: bool,
    out: Vec<MpdRepresentation>,
}

impl Walker {
    fn open(&mut self, e: &BytesStart<'_>, empty: bool) -> Result<(), MpdError> {
        let kind = match e.local_name().as_ref() {
            b"MPD" => Some(Kind::Mpd),
            b"Period" => Some(Kind::Period),
            b"AdaptationSet" => Some(Kind::AdaptationSet),
            b"Representation" => Some(Kind::Representation),
            _ => None,
        };
        if let Some(kind) = kind {
            self.saw_mpd |= kind == Kind::Mpd;
            self.stack.push(Level {
                kind,
                base: None,
                template: Template::default(),
                id: attr(e, b"id", self.decoder)?.unwrap_or_default(),
                bandwidth: attr(e, b"bandwidth", self.decoder)?.and_then(|b| b.parse().ok()),
            });
            if empty {
                self.close_level()?;
            }
            return Ok(());
        }
        match e.local_name().as_ref() {
            b"BaseURL" if !empty => self.base_text = Some(String::new()),
            b"SegmentTemplate" => {
                let Some(level) = self.stack.last_mut() else {
                    return err("SegmentTemplate outside of an MPD");
                };
                let t = &mut level.template;
                if let Some(v) = attr(e, b"media", self.decoder)? {
                    t.media = Some(v);
                }
                if let Some(v) = attr(e, b"initialization", self.decoder)? {
                    t.initialization = Some(v);
                }
                if let Some(v) = attr(e, b"startNumber", self.decoder)? {
                    t.start_number = Some(parse_u64(&v, "startNumber")?);
                }
            }
            b"SegmentTimeline" => {
                let Some(level) = self.stack.last_mut() else {
                    return err("SegmentTimeline outside of an MPD");
                };
                level.template.timeline = Some(Vec::new());
                self.in_timeline = !empty;
            }
            b"S" if self.in_timeline => {
                let t = attr(e, b"t", self.decoder)?
                    .map(|v| parse_u64(&v, "S@t"))
                    .transpose()?;
                let Some(d) = attr(e, b"d", self.decoder)? else {
                    return err("S element without d");
                };
                let d = parse_u64(&d, "S@d")?;
                let r = match attr(e, b"r", self.decoder)? {
                    Some(v) => v
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| MpdError(format!("bad S@r {v:?}")))?,
                    None => 0,
                };
                if r < 0 {
                    return err("S@r below zero (repeat to the end) is not supported");
                }
                if let Some(tl) = self
                    .stack
                    .last_mut()
                    .and_then(|l| l.template.timeline.as_mut())
                {
                    tl.push(TimelineS { t, d, r });
                }
            }
            b"SegmentBase" | b"SegmentList" => {
                return err("only SegmentTemplate addressing is supported");
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, name: &[u8]) -> Result<(), MpdError> {
        match name {
            b"BaseURL" => {
                if let (Some(text), Some(level)) = (self.base_text.take(), self.stack.last_mut()) {
                    // Only the first BaseURL of an element is the primary one.
                    if level.base.is_none() {
                        level.base = Some(text.trim().to_owned());
                    }
                }
            }
            b"SegmentTimeline" => self.in_timeline = false,
            b"MPD" | b"Period" | b"AdaptationSet" | b"Representation" => self.close_level()?,
            _ => {}
        }
        Ok(())
    }

    fn close_level(&mut self) -> Result<(), MpdError> {
        let Some(top) = self.stack.last() else {
            return err("unbalanced end tag");
        };
        if top.kind == Kind::Representation {
            let rep = expand(&self.stack)?;
            self.out.push(rep);
        }
        self.stack.pop();
        Ok(())
    }
}

fn attr(e: &BytesStart<'_>, name: &[u8], decoder: Decoder) -> Result<Option<String>, MpdError> {
    for a in e.attributes() {
        let a = a.map_err(|e| MpdError(format!("bad attribute: {e}")))?;
        if a.key.local_name().as_ref() == name {
            let v = a
                .decode_and_unescape_value(decoder)
                .map_err(|e| MpdError(format!("bad attribute value: {e}")))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn parse_u64(v: &str, what: &str) -> Result<u64, MpdError> {
    v.trim()
        .parse()
        .map_err(|_| MpdError(format!("bad {what} {v:?}")))
}

/// Resolves one Representation (the top of `levels`) against its ancestors.
fn expand(levels: &[Level]) -> Result<MpdRepresentation, MpdError> {
    let mut base = String::new();
    let mut tpl = Template::default();
    for l in levels {
        if let Some(b) = &l.base {
            base = join(&base, b);
        }
        let t = &l.template;
        if t.media.is_some() {
            tpl.media.clone_from(&t.media);
        }
        if t.initialization.is_some() {
            tpl.initialization.clone_from(&t.initialization);
        }
        if t.start_number.is_some() {
            tpl.start_number = t.start_number;
        }
        if t.timeline.is_some() {
            tpl.timeline.clone_from(&t.timeline);
        }
    }
    let Some(rep) = levels.last() else {
        return err("Representation outside of an MPD");
    };
    let vars = Vars {
        id: &rep.id,
        bandwidth: rep.bandwidth,
        number: None,
        time: None,
    };
    let Some(media) = tpl.media.as_deref() else {
        return err(format!(
            "Representation {:?} has no SegmentTemplate@media",
            rep.id
        ));
    };
    let Some(timeline) = tpl.timeline.as_deref() else {
        return err(format!(
            "Representation {:?} has no SegmentTimeline",
            rep.id
        ));
    };
    let init = tpl
        .initialization
        .as_deref()
        .map(|i| Ok::<_, MpdError>(join(&base, &fill(i, &vars)?)))
        .transpose()?;
    let mut number = tpl.start_number.unwrap_or(1);
    let mut time: u64 = 0;
    let mut uris = Vec::new();
    for s in timeline {
        if let Some(t) = s.t {
            time = t;
        }
        let repeats = u64::try_from(s.r).map_err(|_| MpdError("negative S@r".into()))?;
        let count = repeats
            .checked_add(1)
            .ok_or(MpdError("S@r too large".into()))?;
        if (uris.len() as u64).saturating_add(count) > MAX_SEGMENTS {
            return err(format!(
                "more than {MAX_SEGMENTS} segments in Representation {:?}",
                rep.id
            ));
        }
        for _ in 0..count {
            let v = Vars {
                number: Some(number),
                time: Some(time),
                ..vars
            };
            uris.push(join(&base, &fill(media, &v)?));
            number = number
                .checked_add(1)
                .ok_or(MpdError("segment number overflow".into()))?;
            time = time
                .checked_add(s.d)
                .ok_or(MpdError("segment time overflow".into()))?;
        }
    }
    Ok(MpdRepresentation {
        id: rep.id.clone(),
        init,
        media: uris,
    })
}

#[derive(Clone, Copy)]
struct Vars<'a> {
    id: &'a str,
    bandwidth: Option<u64>,
    number: Option<u64>,
    time: Option<u64>,
}

/// Expands `$RepresentationID$`, `$Number$`, `$Bandwidth$`, `$Time$` (the
/// numeric ones with an optional `%0Nd` width) and `$$`.
fn fill(template: &str, v: &Vars<'_>) -> Result<String, MpdError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('$') else {
            return err(format!("unterminated $ in template {template:?}"));
        };
        let ident = &after[..end];
        rest = &after[end + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, format) = match ident.split_once('%') {
            Some((n, f)) => (n, Some(f)),
            None => (ident, None),
        };
        let value = match name {
            "RepresentationID" => {
                if format.is_some() {
                    return err("$RepresentationID$ takes no format");
                }
                out.push_str(v.id);
                continue;
            }
            "Number" => v.number,
            "Bandwidth" => v.bandwidth,
            "Time" => v.time,
            other => return err(format!("unknown template identifier ${other}$")),
        };
        let Some(value) = value else {
            return err(format!("${name}$ has no value here"));
        };
        let width = match format {
            None => 0,
            Some(f) => {
                let digits = f
                    .strip_prefix('0')
                    .and_then(|d| d.strip_suffix('d'))
                    .ok_or_else(|| MpdError(format!("bad format %{f} in template")))?;
                let width: usize = digits
                    .parse()
                    .map_err(|_| MpdError(format!("bad format %{f} in template")))?;
                if width > MAX_WIDTH {
                    return err(format!("format width {width} too large"));
                }
                width
            }
        };
        out.push_str(&format!("{value:0width$}"));
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MPD: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">
  <BaseURL>./</BaseURL>
  <Period>
    <AdaptationSet>
      <SegmentTemplate timescale="1000" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/s-$Number%03d$-$Time$.m4s" startNumber="5"/>
      <Representation id="a&amp;b" bandwidth="1000">
        <SegmentTemplate>
          <SegmentTimeline><S t="100" d="10" r="2"/><S d="5"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
      <Representation id="v" bandwidth="2000">
        <BaseURL>video&#47;v/</BaseURL>
        <SegmentTemplate media="seg-$Number$-$Bandwidth$-$$.m4s" initialization="init.mp4">
          <SegmentTimeline><S d="7"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

    #[test]
    fn expands_templates_with_inheritance() {
        let reps = mpd_references(MPD).unwrap();
        assert_eq!(reps.len(), 2);
        assert_eq!(reps[0].id, "a&b");
        // Joined, not yet normalised: `resolve` removes the `./`.
        assert_eq!(reps[0].init.as_deref(), Some("./a&b/init.mp4"));
        assert_eq!(
            reps[0].media,
            [
                "./a&b/s-005-100.m4s",
                "./a&b/s-006-110.m4s",
                "./a&b/s-007-120.m4s",
                "./a&b/s-008-130.m4s"
            ]
        );
        assert_eq!(reps[1].init.as_deref(), Some("./video/v/init.mp4"));
        assert_eq!(reps[1].media, ["./video/v/seg-5-2000-$.m4s"]);
    }

    #[test]
    fn rejects_what_it_cannot_check() {
        let unsupported = [
            "<MPD><Period><AdaptationSet><Representation id=\"x\"><SegmentBase/></Representation></AdaptationSet></Period></MPD>",
            "<MPD><Period><AdaptationSet><Representation id=\"x\"><SegmentTemplate media=\"a\"><SegmentTimeline><S d=\"1\" r=\"-1\"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD>",
            "<MPD><Period><AdaptationSet><Representation id=\"x\"><SegmentTemplate media=\"a\" duration=\"2\"/></Representation></AdaptationSet></Period></MPD>",
            "<MPD><Period><AdaptationSet><Representation id=\"x\"><SegmentTemplate media=\"$Number%0999d$\"><SegmentTimeline><S d=\"1\"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD>",
            "<MPD><Period><AdaptationSet><Representation id=\"x\"><SegmentTemplate media=\"a\"><SegmentTimeline><S d=\"1\" r=\"99999999999\"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD>",
            "<MPD><Period>",
            "not xml at all",
            "",
        ];
        for doc in unsupported {
            assert!(mpd_references(doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn empty_representation_inherits_everything() {
        let doc = r#"<MPD><Period><AdaptationSet><BaseURL>a/</BaseURL><SegmentTemplate media="$RepresentationID$-$Number$.m4s"><SegmentTimeline><S d="1" r="1"/></SegmentTimeline></SegmentTemplate><Representation id="r"/></AdaptationSet></Period></MPD>"#;
        let reps = mpd_references(doc).unwrap();
        assert_eq!(reps[0].media, ["a/r-1.m4s", "a/r-2.m4s"]);
        assert_eq!(reps[0].init, None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(doc in "\\PC{0,400}") {
            let _ = mpd_references(&doc);
        }

        #[test]
        fn mangled_mpd_never_panics(cut in 0usize..2000, junk in "[<>/$%&;#0-9a-zA-Z\"= ]{0,20}") {
            let mut doc = MPD.to_owned();
            let at = doc.char_indices().map(|(i, _)| i).nth(cut % MPD.len()).unwrap_or(doc.len());
            doc.insert_str(at, &junk);
            let _ = mpd_references(&doc);
        }
    }
}
