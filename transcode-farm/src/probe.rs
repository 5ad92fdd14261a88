//! Pure reading of `ffprobe -of json -show_format -show_streams` output into
//! the facts the ladder needs.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An exact frame rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub(crate) struct Rational {
    pub(crate) num: u32,
    pub(crate) den: u32,
}

impl Rational {
    pub(crate) fn as_f64(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    /// `num/den` as ffmpeg and DASH write it.
    pub(crate) fn to_ffmpeg(self) -> String {
        format!("{}/{}", self.num, self.den)
    }

    fn parse(s: &str) -> Option<Self> {
        let (n, d) = s.split_once('/').unwrap_or((s, "1"));
        let num: u32 = n.trim().parse().ok()?;
        let den: u32 = d.trim().parse().ok()?;
        (num > 0 && den > 0).then_some(Self { num, den })
    }
}

/// What the transcode needs to know about the input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub(crate) struct SourceInfo {
    /// Displayed width: after the sample aspect ratio and rotation are applied.
    pub(crate) width: u32,
    /// Displayed height: after rotation is applied.
    pub(crate) height: u32,
    /// The output frame rate: the source rate, snapped to a broadcast rate
    /// when within 0.5 % of one, and divided down to at most 60 fps.
    pub(crate) fps: Rational,
    /// Duration of the video stream (or of the container), in seconds.
    pub(crate) duration_secs: Option<f64>,
    /// The source's video codec name, e.g. `h264`.
    pub(crate) video_codec: String,
    /// Whether the source has an audio stream.
    pub(crate) has_audio: bool,
    /// A safe language tag of the first audio stream, if it names one.
    pub(crate) audio_language: Option<String>,
}

/// Why the ffprobe output describes no usable video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeProblem {
    /// The JSON did not parse.
    Json(String),
    /// There is no video stream (cover art does not count).
    NoVideo,
    /// The video stream has no usable picture size.
    NoSize,
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Format {
    duration: Option<String>,
}

#[derive(Deserialize)]
struct Stream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    sample_aspect_ratio: Option<String>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    disposition: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    tags: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
}

/// Frame rates that a nearly-matching source rate snaps to.
const BROADCAST_RATES: [(u32, u32); 8] = [
    (24000, 1001),
    (24, 1),
    (25, 1),
    (30000, 1001),
    (30, 1),
    (50, 1),
    (60000, 1001),
    (60, 1),
];

/// Highest output frame rate.
const MAX_FPS: f64 = 60.0;

/// Used when the source declares no usable frame rate at all.
const FALLBACK_FPS: Rational = Rational { num: 30, den: 1 };

pub(crate) fn parse_probe(json: &[u8]) -> Result<SourceInfo, ProbeProblem> {
    let probe: ProbeJson =
        serde_json::from_slice(json).map_err(|e| ProbeProblem::Json(e.to_string()))?;
    let video = probe
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video") && !flag(&s.disposition, "attached_pic"))
        .ok_or(ProbeProblem::NoVideo)?;
    let (w, h) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(ProbeProblem::NoSize),
    };
    let display_w = match video.sample_aspect_ratio.as_deref().and_then(parse_ratio) {
        Some((n, d)) => {
            let scaled = (u64::from(w) * u64::from(n) + u64::from(d) / 2) / u64::from(d);
            u32::try_from(scaled).unwrap_or(w).max(1)
        }
        None => w,
    };
    let (width, height) = if is_quarter_turn(video) {
        (h, display_w)
    } else {
        (display_w, h)
    };
    let fps = choose_fps(video);
    let duration_secs = video
        .duration
        .as_deref()
        .and_then(parse_secs)
        .or_else(|| tag(&video.tags, "DURATION").and_then(parse_clock))
        .or_else(|| {
            probe
                .format
                .as_ref()
                .and_then(|f| f.duration.as_deref())
                .and_then(parse_secs)
        });
    let audio = probe
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("audio"));
    let audio_language = audio
        .and_then(|a| tag(&a.tags, "language"))
        .filter(|l| is_safe_language(l))
        .map(str::to_owned);
    Ok(SourceInfo {
        width,
        height,
        fps,
        duration_secs,
        video_codec: video.codec_name.clone().unwrap_or_default(),
        has_audio: audio.is_some(),
        audio_language,
    })
}

fn flag(map: &BTreeMap<String, serde_json::Value>, key: &str) -> bool {
    map.get(key)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
        != 0
}

fn tag<'a>(tags: &'a BTreeMap<String, serde_json::Value>, key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| v.as_str())
}

fn parse_ratio(s: &str) -> Option<(u32, u32)> {
    let (n, d) = s.split_once(':')?;
    let n: u32 = n.parse().ok()?;
    let d: u32 = d.parse().ok()?;
    (n > 0 && d > 0).then_some((n, d))
}

fn parse_secs(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then_some(v)
}

/// `HH:MM:SS.fraction`, as Matroska stores per-stream durations.
fn parse_clock(s: &str) -> Option<f64> {
    let mut parts = s.trim().split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let v = h * 3600.0 + m * 60.0 + sec;
    (v.is_finite() && v > 0.0).then_some(v)
}

/// Whether the display matrix turns the picture by 90 or 270 degrees.
fn is_quarter_turn(video: &Stream) -> bool {
    let from_side_data = video
        .side_data_list
        .iter()
        .filter_map(|sd| sd.get("rotation"))
        .find_map(|r| {
            r.as_f64()
                .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
        });
    let from_tag = tag(&video.tags, "rotate").and_then(|s| s.parse::<f64>().ok());
    match from_side_data.or(from_tag) {
        Some(deg) if deg.is_finite() => {
            let quarter = (deg / 90.0).round().rem_euclid(4.0);
            quarter == 1.0 || quarter == 3.0
        }
        _ => false,
    }
}

fn choose_fps(video: &Stream) -> Rational {
    let declared = [
        video.avg_frame_rate.as_deref(),
        video.r_frame_rate.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(Rational::parse)
    .find(|r| (1.0..=1000.0).contains(&r.as_f64()));
    let Some(rate) = declared else {
        return FALLBACK_FPS;
    };
    normalize_fps(rate)
}

/// Snaps to a broadcast rate when close, then halves (thirds, ...) the rate
/// until it is at most 60 fps so that frames are dropped evenly.
pub(crate) fn normalize_fps(rate: Rational) -> Rational {
    let mut rate = snap(rate);
    let v = rate.as_f64();
    if v > MAX_FPS + 1e-9 {
        let k = (v / MAX_FPS).ceil();
        // `k` is at most 1000 / 60 rounded up, so it fits a u32.
        let k = k as u32;
        rate = match rate.den.checked_mul(k) {
            Some(den) => snap(Rational { num: rate.num, den }),
            None => Rational { num: 60, den: 1 },
        };
    }
    rate
}

fn snap(rate: Rational) -> Rational {
    let v = rate.as_f64();
    let off = |b: &Rational| ((b.as_f64() - v) / v).abs();
    BROADCAST_RATES
        .iter()
        .map(|&(num, den)| Rational { num, den })
        .filter(|b| off(b) < 0.005)
        .min_by(|a, b| off(a).total_cmp(&off(b)))
        .unwrap_or(rate)
}

/// ISO 639 / BCP 47 style tags only, so the value is safe in any manifest.
fn is_safe_language(lang: &str) -> bool {
    let mut parts = lang.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    primary_ok
        && !lang.eq_ignore_ascii_case("und")
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Box types an ISO-BMFF file (MP4, MOV) may start with.
const MP4_FIRST_BOXES: [&[u8; 4]; 6] = [b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"];

/// A top-level ISO-BMFF box header: its total size (`None` when it runs to
/// the end of the file) and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BoxHeader {
    pub(crate) size: Option<u64>,
    pub(crate) kind: [u8; 4],
}

impl BoxHeader {
    /// Whether a file starting with this box is an MP4/MOV file.
    pub(crate) fn starts_mp4(&self) -> bool {
        MP4_FIRST_BOXES.contains(&&self.kind)
    }

    pub(crate) fn kind_str(&self) -> String {
        String::from_utf8_lossy(&self.kind).into_owned()
    }
}

/// Reads a box header from the first (up to 16) bytes at a box boundary.
/// `None` when the bytes cannot be a box header.
pub(crate) fn box_header(head: &[u8]) -> Option<BoxHeader> {
    let h = crate::mp4box::header(head).ok()?;
    // Printable box types only (and QuickTime's ©): anything else is not a box.
    if !h
        .kind
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b' ' || *b == 0xa9)
    {
        return None;
    }
    Some(BoxHeader {
        size: h.size,
        kind: h.kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_headers() {
        let h = box_header(b"\0\0\0\x20ftypisom").unwrap();
        assert_eq!(
            h,
            BoxHeader {
                size: Some(32),
                kind: *b"ftyp"
            }
        );
        assert!(h.starts_mp4());
        let large = box_header(b"\0\0\0\x01mdat\0\0\0\x01\0\0\0\0").unwrap();
        assert_eq!(large.size, Some(1 << 32));
        assert_eq!(box_header(b"\0\0\0\0mdat").unwrap().size, None);
        assert_eq!(box_header(b"\0\0\0\x04ftyp"), None);
        assert!(!box_header(b"this is not a video").unwrap().starts_mp4());
        assert_eq!(box_header(b"\0\0\0\x20ab\x01d"), None);
        assert!(!box_header(b"\0\0\0\x20abcd").unwrap().starts_mp4());
        assert_eq!(box_header(b"\0\0"), None);
    }

    fn probe(streams: &str, format: &str) -> Result<SourceInfo, ProbeProblem> {
        parse_probe(format!(r#"{{"streams":[{streams}],"format":{format}}}"#).as_bytes())
    }

    #[test]
    fn reads_a_plain_source() {
        let s = probe(
            r#"{"codec_type":"video","codec_name":"h264","width":1280,"height":720,"sample_aspect_ratio":"1:1",
                "r_frame_rate":"30/1","avg_frame_rate":"30/1","duration":"6.000000"},
               {"codec_type":"audio","codec_name":"aac","tags":{"language":"eng"}}"#,
            r#"{"duration":"6.02"}"#,
        )
        .unwrap();
        assert_eq!((s.width, s.height), (1280, 720));
        assert_eq!(s.fps, Rational { num: 30, den: 1 });
        assert_eq!(s.duration_secs, Some(6.0));
        assert!(s.has_audio);
        assert_eq!(s.audio_language.as_deref(), Some("eng"));
        assert_eq!(s.video_codec, "h264");
    }

    #[test]
    fn cover_art_is_not_video() {
        let r = probe(
            r#"{"codec_type":"audio","codec_name":"mp3"},
               {"codec_type":"video","codec_name":"mjpeg","width":500,"height":500,"disposition":{"attached_pic":1}}"#,
            r#"{"duration":"180.0"}"#,
        );
        assert_eq!(r, Err(ProbeProblem::NoVideo));
        assert_eq!(probe("", "{}"), Err(ProbeProblem::NoVideo));
        assert!(matches!(
            parse_probe(b"not json"),
            Err(ProbeProblem::Json(_))
        ));
    }

    #[test]
    fn rotation_and_sar_change_the_displayed_size() {
        let s = probe(
            r#"{"codec_type":"video","width":1920,"height":1080,"avg_frame_rate":"30/1",
                "side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]}"#,
            "{}",
        )
        .unwrap();
        assert_eq!((s.width, s.height), (1080, 1920));
        let anamorphic = probe(
            r#"{"codec_type":"video","width":720,"height":576,"sample_aspect_ratio":"16:11","avg_frame_rate":"25/1"}"#,
            "{}",
        )
        .unwrap();
        assert_eq!((anamorphic.width, anamorphic.height), (1047, 576));
    }

    #[test]
    fn frame_rates_snap_and_cap() {
        let r = |num, den| Rational { num, den };
        assert_eq!(normalize_fps(r(2997, 100)), r(30000, 1001));
        assert_eq!(normalize_fps(r(30, 1)), r(30, 1));
        assert_eq!(normalize_fps(r(15, 1)), r(15, 1));
        assert_eq!(normalize_fps(r(120, 1)), r(60, 1));
        assert_eq!(normalize_fps(r(120000, 1001)), r(60000, 1001));
        assert_eq!(normalize_fps(r(240, 1)), r(60, 1));
        assert_eq!(normalize_fps(r(100, 1)), r(50, 1));
        assert_eq!(normalize_fps(r(59, 1)), r(59, 1));
        let s = probe(r#"{"codec_type":"video","width":64,"height":64,"avg_frame_rate":"0/0","r_frame_rate":"0/0"}"#, "{}").unwrap();
        assert_eq!(s.fps, FALLBACK_FPS);
    }

    #[test]
    fn durations_fall_back_to_tags_then_format() {
        let mkv = probe(
            r#"{"codec_type":"video","width":64,"height":64,"tags":{"DURATION":"00:01:02.500000000"}}"#,
            r#"{"duration":"70"}"#,
        )
        .unwrap();
        assert_eq!(mkv.duration_secs, Some(62.5));
        let fmt = probe(
            r#"{"codec_type":"video","width":64,"height":64}"#,
            r#"{"duration":"70"}"#,
        )
        .unwrap();
        assert_eq!(fmt.duration_secs, Some(70.0));
    }

    #[test]
    fn only_safe_language_tags_pass() {
        assert!(is_safe_language("en"));
        assert!(is_safe_language("pt-BR"));
        assert!(!is_safe_language("und"));
        assert!(!is_safe_language("e\"n"));
        assert!(!is_safe_language("english"));
        assert!(!is_safe_language(""));
    }
}
