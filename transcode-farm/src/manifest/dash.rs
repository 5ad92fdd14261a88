//! A static DASH MPD (ISO/IEC 23009-1, live profile with `SegmentTemplate`
//! and an explicit `SegmentTimeline`) over the same files as the HLS
//! playlists: each Representation's `BaseURL` is its rendition folder.

use std::fmt::Write as _;

use super::{Presentation, Track, fixed_secs};
use crate::cmaf::{MediaSegment, TrackMedia};
use crate::ffmpeg::INIT_NAME;

/// `SegmentTemplate@media`, the same names ffmpeg wrote.
pub(crate) const MEDIA_TEMPLATE: &str = "seg-$Number%05d$.m4s";

/// Escapes text for use inside a double-quoted XML attribute or element text.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `PT<seconds>S` with millisecond precision.
fn iso_duration(ticks: u64, timescale: u64) -> String {
    format!("PT{}S", fixed_secs(ticks, timescale, 3))
}

/// One `<S>` element: `r` repeats after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimelineEntry {
    /// Explicit start time, written for the first entry and after any gap.
    pub(crate) t: Option<u64>,
    pub(crate) d: u64,
    pub(crate) r: u64,
}

/// Run-length encodes the measured segments.
pub(crate) fn timeline(segments: &[MediaSegment]) -> Vec<TimelineEntry> {
    let mut out: Vec<TimelineEntry> = Vec::new();
    let mut expected: Option<u64> = None;
    for seg in segments {
        let contiguous = expected == Some(seg.base_media_decode_time);
        match out.last_mut() {
            Some(last) if contiguous && last.d == seg.duration => last.r += 1,
            _ => out.push(TimelineEntry {
                t: (!contiguous).then_some(seg.base_media_decode_time),
                d: seg.duration,
                r: 0,
            }),
        }
        expected = seg.base_media_decode_time.checked_add(seg.duration);
    }
    out
}

pub(crate) fn mpd(p: &Presentation) -> String {
    let tracks = || p.video.iter().chain(p.audio.as_ref());
    // Durations of tracks with different timescales are compared in
    // milliseconds, which is also the precision written.
    let millis = |ticks: u64, t: &Track| {
        u64::try_from(u128::from(ticks) * 1000 / u128::from(t.timescale())).unwrap_or(u64::MAX)
    };
    let total_ms = tracks()
        .map(|t| millis(t.total_ticks(), t))
        .max()
        .unwrap_or(0);
    let longest_ms = tracks()
        .map(|t| millis(t.longest_segment_ticks(), t))
        .max()
        .unwrap_or(0);

    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" \
         type=\"static\" mediaPresentationDuration=\"{}\" maxSegmentDuration=\"{}\" minBufferTime=\"{}\">",
        iso_duration(total_ms, 1000),
        iso_duration(longest_ms, 1000),
        iso_duration(longest_ms, 1000),
    );
    out.push_str("  <Period id=\"0\" start=\"PT0S\">\n");
    if !p.video.is_empty() {
        let max_w = p
            .video
            .iter()
            .filter_map(|v| v.size())
            .map(|s| s.0)
            .max()
            .unwrap_or(0);
        let max_h = p
            .video
            .iter()
            .filter_map(|v| v.size())
            .map(|s| s.1)
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "    <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" \
             startWithSAP=\"1\" maxWidth=\"{max_w}\" maxHeight=\"{max_h}\">"
        );
        for v in &p.video {
            let _ = write!(
                out,
                "      <Representation id=\"{}\" bandwidth=\"{}\"",
                xml_escape(&v.name),
                v.peak_bps()
            );
            if let Some((w, h)) = v.size() {
                let _ = write!(out, " width=\"{w}\" height=\"{h}\" sar=\"1:1\"");
            }
            if let Some((num, den)) = v.frame_rate() {
                if den == 1 {
                    let _ = write!(out, " frameRate=\"{num}\"");
                } else {
                    let _ = write!(out, " frameRate=\"{num}/{den}\"");
                }
            }
            let _ = writeln!(out, " codecs=\"{}\">", xml_escape(&v.init.codecs));
            representation_body(&mut out, v);
            out.push_str("      </Representation>\n");
        }
        out.push_str("    </AdaptationSet>\n");
    }
    if let Some(a) = &p.audio {
        out.push_str("    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\"");
        if let Some(lang) = &p.audio_language {
            let _ = write!(out, " lang=\"{}\"", xml_escape(lang));
        }
        out.push_str(" segmentAlignment=\"true\" startWithSAP=\"1\">\n");
        let (channels, rate) = match a.init.media {
            TrackMedia::Audio {
                channels,
                sample_rate,
            } => (channels, sample_rate),
            TrackMedia::Video { .. } => (0, 0),
        };
        let _ = writeln!(
            out,
            "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\" audioSamplingRate=\"{rate}\">",
            xml_escape(&a.name),
            a.peak_bps(),
            xml_escape(&a.init.codecs)
        );
        let _ = writeln!(
            out,
            "        <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{channels}\"/>"
        );
        representation_body(&mut out, a);
        out.push_str("      </Representation>\n    </AdaptationSet>\n");
    }
    out.push_str("  </Period>\n</MPD>\n");
    out
}

/// `BaseURL` and `SegmentTemplate` of one Representation.
fn representation_body(out: &mut String, t: &Track) {
    let _ = writeln!(out, "        <BaseURL>{}/</BaseURL>", xml_escape(&t.dir));
    let _ = write!(
        out,
        "        <SegmentTemplate timescale=\"{}\" initialization=\"{}\" media=\"{}\" startNumber=\"1\"",
        t.timescale(),
        xml_escape(INIT_NAME),
        xml_escape(MEDIA_TEMPLATE)
    );
    let first = t.segments.first().map_or(0, |s| s.base_media_decode_time);
    if first != 0 {
        let _ = write!(out, " presentationTimeOffset=\"{first}\"");
    }
    out.push_str(">\n          <SegmentTimeline>\n");
    for e in timeline(&t.segments) {
        out.push_str("            <S");
        if let Some(start) = e.t {
            let _ = write!(out, " t=\"{start}\"");
        }
        let _ = write!(out, " d=\"{}\"", e.d);
        if e.r > 0 {
            let _ = write!(out, " r=\"{}\"", e.r);
        }
        out.push_str("/>\n");
    }
    out.push_str("          </SegmentTimeline>\n        </SegmentTemplate>\n");
}
