//! Sans-IO reader for the CMAF / fragmented MP4 boxes the ladder produces.
//!
//! [`parse_init`] reads an init segment (one track): timescale, codec and the
//! RFC 6381 `CODECS` string, picture size or audio layout. [`parse_segment`]
//! reads a media segment: its `tfdt` start and its exact duration from the
//! `trun` sample durations (falling back to the `tfhd`, then `trex`,
//! defaults). The bytes come from files on disk, so every read is bounds
//! checked and every sum is checked: no input can make these functions panic.

use std::fmt;

mod shift;

pub use shift::shift_segment;

/// A four-character box type.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc({self})")
    }
}

/// Why bytes could not be read as a CMAF init or media segment.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmafError {
    /// A box or a field inside it runs past the end of the data.
    #[error("truncated data in {0} box")]
    Truncated(&'static str),
    /// A box header declares a size smaller than the header itself.
    #[error("box {kind} declares an impossible size {size}")]
    BadBoxSize {
        /// The box type.
        kind: FourCc,
        /// The declared size.
        size: u64,
    },
    /// A box the format requires is absent.
    #[error("missing {0} box")]
    Missing(&'static str),
    /// The init segment does not hold exactly one track.
    #[error("expected exactly one track, found {0}")]
    TrackCount(usize),
    /// The sample entry is not one this reader understands (avc1, avc3, mp4a).
    #[error("unsupported sample entry {0}")]
    UnsupportedSampleEntry(FourCc),
    /// The track's handler is neither video nor audio.
    #[error("unsupported track handler {0}")]
    UnsupportedHandler(FourCc),
    /// The media header declares a timescale of zero.
    #[error("timescale is zero")]
    ZeroTimescale,
    /// A fragment belongs to a different track than the init segment.
    #[error("fragment for track {found}, but the init segment describes track {expected}")]
    TrackMismatch {
        /// Track id from the init segment.
        expected: u32,
        /// Track id found in the fragment.
        found: u32,
    },
    /// Sample durations or counts add up past 64 bits.
    #[error("sample durations overflow")]
    Overflow,
    /// The media segment holds no samples.
    #[error("media segment holds no samples")]
    NoSamples,
    /// A field holds a value the format forbids.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// What kind of media a track carries, with its presentation facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackMedia {
    /// A video track.
    Video {
        /// Width from the visual sample entry, in pixels.
        width: u32,
        /// Height from the visual sample entry, in pixels.
        height: u32,
    },
    /// An audio track.
    Audio {
        /// Channel count from the audio sample entry.
        channels: u16,
        /// Sample rate from the audio sample entry, in Hz.
        sample_rate: u32,
    },
}

/// Facts read from an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSegment {
    /// The one track's id (`tkhd`).
    pub track_id: u32,
    /// Ticks per second of the track's media time (`mdhd`).
    pub timescale: u32,
    /// The sample entry type, e.g. `avc1` or `mp4a`.
    pub sample_entry: FourCc,
    /// The RFC 6381 codecs string, e.g. `avc1.64001f` or `mp4a.40.2`.
    pub codecs: String,
    /// Video size or audio layout.
    pub media: TrackMedia,
    /// `trex` default sample duration (0 when there is no `trex`).
    pub default_sample_duration: u32,
    /// `trex` default sample flags (0 when there is no `trex`).
    pub default_sample_flags: u32,
}

/// Facts read from one media segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaSegment {
    /// `tfdt` of the first fragment, in timescale ticks.
    pub base_media_decode_time: u64,
    /// Sum of all sample durations, in timescale ticks.
    pub duration: u64,
    /// Number of samples (frames) in the segment.
    pub sample_count: u64,
    /// Whether the first sample is a sync sample (a keyframe for video).
    pub starts_with_sync_sample: bool,
    /// Size of the whole segment in bytes.
    pub size: u64,
}

const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

/// A box: its type and the bytes after its header.
struct Mp4Box<'a> {
    kind: FourCc,
    body: &'a [u8],
}

/// Iterates over the boxes laid end to end in a byte slice.
struct Boxes<'a> {
    rest: &'a [u8],
}

fn boxes(data: &[u8]) -> Boxes<'_> {
    Boxes { rest: data }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<Mp4Box<'a>, CmafError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.read_box();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

impl<'a> Boxes<'a> {
    fn read_box(&mut self) -> Result<Mp4Box<'a>, CmafError> {
        let h = header(self.rest)?;
        let size = h.size.unwrap_or(self.rest.len() as u64);
        let size = usize::try_from(size).map_err(|_| CmafError::Truncated("top-level"))?;
        let (kind, header_len) = (FourCc(h.kind), h.header_len);
        let whole = self
            .rest
            .get(..size)
            .ok_or(CmafError::Truncated("top-level"))?;
        let body = whole
            .get(header_len..)
            .ok_or(CmafError::Truncated("box header"))?;
        self.rest = self.rest.get(size..).unwrap_or(&[]);
        Ok(Mp4Box { kind, body })
    }
}

/// A box header at the start of `data`, or the CMAF error for why there is none.
fn header(data: &[u8]) -> Result<crate::mp4box::Header, CmafError> {
    crate::mp4box::header(data).map_err(|e| match e {
        crate::mp4box::HeaderError::Short => CmafError::Truncated("box header"),
        crate::mp4box::HeaderError::TooSmall { kind, size } => CmafError::BadBoxSize {
            kind: FourCc(kind),
            size,
        },
    })
}

/// The first child box of `kind`, if any.
fn find<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, CmafError> {
    for b in boxes(data) {
        let b = b?;
        if &b.kind.0 == kind {
            return Ok(Some(b.body));
        }
    }
    Ok(None)
}

fn require<'a>(
    data: &'a [u8],
    kind: &'static [u8; 4],
    name: &'static str,
) -> Result<&'a [u8], CmafError> {
    find(data, kind)?.ok_or(CmafError::Missing(name))
}

/// A bounds-checked big-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CmafError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(CmafError::Truncated(self.what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(CmafError::Truncated(self.what))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CmafError> {
        let s = self.bytes(N)?;
        <[u8; N]>::try_from(s).map_err(|_| CmafError::Truncated(self.what))
    }

    fn skip(&mut self, n: usize) -> Result<(), CmafError> {
        self.bytes(n).map(drop)
    }

    fn u8(&mut self) -> Result<u8, CmafError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, CmafError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CmafError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CmafError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Version and flags of a full box.
    fn full_box(&mut self) -> Result<(u8, u32), CmafError> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

/// Reads an init segment holding exactly one track.
pub fn parse_init(data: &[u8]) -> Result<InitSegment, CmafError> {
    let moov = require(data, b"moov", "moov")?;
    let mut traks = Vec::new();
    let mut mvex = None;
    for b in boxes(moov) {
        let b = b?;
        match &b.kind.0 {
            b"trak" => traks.push(b.body),
            b"mvex" => mvex = Some(b.body),
            _ => {}
        }
    }
    let [trak] = traks[..] else {
        return Err(CmafError::TrackCount(traks.len()));
    };

    let track_id = parse_tkhd(require(trak, b"tkhd", "tkhd")?)?;
    let mdia = require(trak, b"mdia", "mdia")?;
    let timescale = parse_mdhd(require(mdia, b"mdhd", "mdhd")?)?;
    let handler = parse_hdlr(require(mdia, b"hdlr", "hdlr")?)?;
    let minf = require(mdia, b"minf", "minf")?;
    let stbl = require(minf, b"stbl", "stbl")?;
    let stsd = require(stbl, b"stsd", "stsd")?;
    let entry = first_sample_entry(stsd)?;

    let (codecs, media) = match (&handler.0, &entry.kind.0) {
        (b"vide", b"avc1" | b"avc3") => parse_avc_entry(entry.kind, entry.body)?,
        (b"soun", b"mp4a") => parse_mp4a_entry(entry.body)?,
        (b"vide" | b"soun", _) => return Err(CmafError::UnsupportedSampleEntry(entry.kind)),
        _ => return Err(CmafError::UnsupportedHandler(handler)),
    };

    let (mut default_sample_duration, mut default_sample_flags) = (0, 0);
    if let Some(mvex) = mvex {
        for b in boxes(mvex) {
            let b = b?;
            if &b.kind.0 == b"trex" {
                let trex = parse_trex(b.body)?;
                if trex.track_id == track_id {
                    default_sample_duration = trex.default_sample_duration;
                    default_sample_flags = trex.default_sample_flags;
                }
            }
        }
    }

    Ok(InitSegment {
        track_id,
        timescale,
        sample_entry: entry.kind,
        codecs,
        media,
        default_sample_duration,
        default_sample_flags,
    })
}

fn parse_tkhd(body: &[u8]) -> Result<u32, CmafError> {
    let mut r = Reader::new(body, "tkhd");
    let (version, _) = r.full_box()?;
    // creation_time and modification_time
    r.skip(if version == 1 { 16 } else { 8 })?;
    r.u32()
}

fn parse_mdhd(body: &[u8]) -> Result<u32, CmafError> {
    let mut r = Reader::new(body, "mdhd");
    let (version, _) = r.full_box()?;
    r.skip(if version == 1 { 16 } else { 8 })?;
    let timescale = r.u32()?;
    if timescale == 0 {
        return Err(CmafError::ZeroTimescale);
    }
    Ok(timescale)
}

fn parse_hdlr(body: &[u8]) -> Result<FourCc, CmafError> {
    let mut r = Reader::new(body, "hdlr");
    r.full_box()?;
    r.skip(4)?; // pre_defined
    Ok(FourCc(r.array()?))
}

fn first_sample_entry(stsd: &[u8]) -> Result<Mp4Box<'_>, CmafError> {
    let mut r = Reader::new(stsd, "stsd");
    r.full_box()?;
    let count = r.u32()?;
    if count == 0 {
        return Err(CmafError::Missing("sample entry"));
    }
    boxes(r.rest())
        .next()
        .ok_or(CmafError::Missing("sample entry"))?
}

/// `avc1`/`avc3` visual sample entry: size, then `avcC` for the codecs string.
fn parse_avc_entry(kind: FourCc, body: &[u8]) -> Result<(String, TrackMedia), CmafError> {
    let mut r = Reader::new(body, "visual sample entry");
    // SampleEntry: reserved[6], data_reference_index; VisualSampleEntry:
    // pre_defined, reserved, pre_defined[3].
    r.skip(24)?;
    let width = u32::from(r.u16()?);
    let height = u32::from(r.u16()?);
    // resolutions, reserved, frame_count, compressorname[32], depth, pre_defined
    r.skip(50)?;
    let avcc = require(r.rest(), b"avcC", "avcC")?;
    let mut a = Reader::new(avcc, "avcC");
    let version = a.u8()?;
    if version != 1 {
        return Err(CmafError::Invalid("avcC configurationVersion"));
    }
    let profile = a.u8()?;
    let compat = a.u8()?;
    let level = a.u8()?;
    let codecs = format!("{kind}.{profile:02x}{compat:02x}{level:02x}");
    Ok((codecs, TrackMedia::Video { width, height }))
}

/// `mp4a` audio sample entry: layout, then `esds` for the codecs string.
fn parse_mp4a_entry(body: &[u8]) -> Result<(String, TrackMedia), CmafError> {
    let mut r = Reader::new(body, "audio sample entry");
    r.skip(8)?; // reserved[6], data_reference_index
    let version = r.u16()?; // QuickTime sound description version; 0 in ISO files
    r.skip(6)?; // revision, vendor
    let channels = r.u16()?;
    r.skip(6)?; // samplesize, pre_defined, reserved
    let sample_rate = r.u32()? >> 16;
    match version {
        0 => {}
        1 => r.skip(16)?,
        2 => r.skip(36)?,
        _ => return Err(CmafError::Invalid("audio sample entry version")),
    }
    let esds = require(r.rest(), b"esds", "esds")?;
    let codecs = parse_esds(esds)?;
    Ok((
        codecs,
        TrackMedia::Audio {
            channels,
            sample_rate,
        },
    ))
}

/// Reads one MPEG-4 descriptor: tag and body.
fn descriptor<'a>(r: &mut Reader<'a>) -> Result<(u8, &'a [u8]), CmafError> {
    let tag = r.u8()?;
    let mut len: usize = 0;
    for _ in 0..4 {
        let b = r.u8()?;
        len = (len << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok((tag, r.bytes(len)?));
        }
    }
    Err(CmafError::Invalid("descriptor length"))
}

fn find_descriptor<'a>(
    data: &'a [u8],
    want: u8,
    what: &'static str,
) -> Result<&'a [u8], CmafError> {
    let mut r = Reader::new(data, what);
    while r.remaining() > 0 {
        let (tag, body) = descriptor(&mut r)?;
        if tag == want {
            return Ok(body);
        }
    }
    Err(CmafError::Missing(what))
}

/// `mp4a.<objectTypeIndication in hex>[.<audio object type>]` from an `esds` box.
fn parse_esds(body: &[u8]) -> Result<String, CmafError> {
    let mut r = Reader::new(body, "esds");
    r.full_box()?;
    let es = find_descriptor(r.rest(), 0x03, "ES_Descriptor")?;
    let mut e = Reader::new(es, "ES_Descriptor");
    e.skip(2)?; // ES_ID
    let flags = e.u8()?;
    if flags & 0x80 != 0 {
        e.skip(2)?; // dependsOn_ES_ID
    }
    if flags & 0x40 != 0 {
        let url_len = e.u8()?;
        e.skip(usize::from(url_len))?;
    }
    if flags & 0x20 != 0 {
        e.skip(2)?; // OCR_ES_Id
    }
    let dcd = find_descriptor(e.rest(), 0x04, "DecoderConfigDescriptor")?;
    let mut d = Reader::new(dcd, "DecoderConfigDescriptor");
    let oti = d.u8()?;
    // streamType, bufferSizeDB, maxBitrate, avgBitrate
    d.skip(12)?;
    if oti != 0x40 {
        return Ok(format!("mp4a.{oti:02x}"));
    }
    let asc = find_descriptor(d.rest(), 0x05, "DecoderSpecificInfo")?;
    let mut a = Reader::new(asc, "AudioSpecificConfig");
    let b0 = a.u8()?;
    let mut aot = b0 >> 3;
    if aot == 31 {
        let b1 = a.u8()?;
        aot = 32 + (((b0 & 0x07) << 3) | (b1 >> 5));
    }
    if aot == 0 {
        return Err(CmafError::Invalid("audio object type"));
    }
    Ok(format!("mp4a.40.{aot}"))
}

struct Trex {
    track_id: u32,
    default_sample_duration: u32,
    default_sample_flags: u32,
}

fn parse_trex(body: &[u8]) -> Result<Trex, CmafError> {
    let mut r = Reader::new(body, "trex");
    r.full_box()?;
    let track_id = r.u32()?;
    r.skip(4)?; // default_sample_description_index
    let default_sample_duration = r.u32()?;
    r.skip(4)?; // default_sample_size
    let default_sample_flags = r.u32()?;
    Ok(Trex {
        track_id,
        default_sample_duration,
        default_sample_flags,
    })
}

/// Per-fragment defaults from `tfhd`, already merged with `trex`.
struct Defaults {
    duration: u32,
    flags: u32,
}

fn parse_tfhd(body: &[u8], init: &InitSegment) -> Result<Defaults, CmafError> {
    let mut r = Reader::new(body, "tfhd");
    let (_, flags) = r.full_box()?;
    let track_id = r.u32()?;
    if track_id != init.track_id {
        return Err(CmafError::TrackMismatch {
            expected: init.track_id,
            found: track_id,
        });
    }
    if flags & 0x01 != 0 {
        r.skip(8)?; // base_data_offset
    }
    if flags & 0x02 != 0 {
        r.skip(4)?; // sample_description_index
    }
    let duration = if flags & 0x08 != 0 {
        r.u32()?
    } else {
        init.default_sample_duration
    };
    if flags & 0x10 != 0 {
        r.skip(4)?; // default_sample_size
    }
    let sample_flags = if flags & 0x20 != 0 {
        r.u32()?
    } else {
        init.default_sample_flags
    };
    Ok(Defaults {
        duration,
        flags: sample_flags,
    })
}

fn parse_tfdt(body: &[u8]) -> Result<u64, CmafError> {
    let mut r = Reader::new(body, "tfdt");
    let (version, _) = r.full_box()?;
    if version == 1 {
        r.u64()
    } else {
        Ok(u64::from(r.u32()?))
    }
}

/// Totals of one `trun`.
struct RunTotals {
    samples: u64,
    duration: u64,
    /// Flags of the first sample, when the run has samples.
    first_flags: Option<u32>,
}

fn parse_trun(body: &[u8], defaults: &Defaults) -> Result<RunTotals, CmafError> {
    let mut r = Reader::new(body, "trun");
    let (_, flags) = r.full_box()?;
    let count = r.u32()?;
    if flags & 0x001 != 0 {
        r.skip(4)?; // data_offset
    }
    let first_sample_flags = if flags & 0x004 != 0 {
        Some(r.u32()?)
    } else {
        None
    };
    let has_duration = flags & 0x100 != 0;
    let has_size = flags & 0x200 != 0;
    let has_flags = flags & 0x400 != 0;
    let has_cto = flags & 0x800 != 0;
    let per_sample = 4 * usize::from(has_duration)
        + 4 * usize::from(has_size)
        + 4 * usize::from(has_flags)
        + 4 * usize::from(has_cto);
    let count_usize = usize::try_from(count).map_err(|_| CmafError::Truncated("trun"))?;
    let needed = per_sample
        .checked_mul(count_usize)
        .ok_or(CmafError::Truncated("trun"))?;
    if r.remaining() < needed {
        return Err(CmafError::Truncated("trun"));
    }
    let samples = u64::from(count);
    if count == 0 {
        return Ok(RunTotals {
            samples,
            duration: 0,
            first_flags: None,
        });
    }
    if per_sample == 0 {
        let duration = samples
            .checked_mul(u64::from(defaults.duration))
            .ok_or(CmafError::Overflow)?;
        return Ok(RunTotals {
            samples,
            duration,
            first_flags: Some(first_sample_flags.unwrap_or(defaults.flags)),
        });
    }
    let mut duration: u64 = 0;
    let mut first_flags = None;
    for i in 0..count {
        let d = if has_duration {
            r.u32()?
        } else {
            defaults.duration
        };
        if has_size {
            r.skip(4)?;
        }
        let f = if has_flags { r.u32()? } else { defaults.flags };
        if has_cto {
            r.skip(4)?;
        }
        if i == 0 {
            first_flags = Some(first_sample_flags.unwrap_or(f));
        }
        duration = duration
            .checked_add(u64::from(d))
            .ok_or(CmafError::Overflow)?;
    }
    Ok(RunTotals {
        samples,
        duration,
        first_flags,
    })
}

/// Reads a media segment (one or more `moof` + `mdat` pairs) of the track
/// described by `init`.
pub fn parse_segment(data: &[u8], init: &InitSegment) -> Result<MediaSegment, CmafError> {
    let mut base_media_decode_time = None;
    let mut duration: u64 = 0;
    let mut sample_count: u64 = 0;
    let mut first_flags = None;
    let mut saw_moof = false;
    let mut saw_mdat = false;
    for b in boxes(data) {
        let b = b?;
        match &b.kind.0 {
            b"moof" => {
                saw_moof = true;
                for t in boxes(b.body) {
                    let t = t?;
                    if &t.kind.0 != b"traf" {
                        continue;
                    }
                    let defaults = parse_tfhd(require(t.body, b"tfhd", "tfhd")?, init)?;
                    if base_media_decode_time.is_none() {
                        let tfdt = require(t.body, b"tfdt", "tfdt")?;
                        base_media_decode_time = Some(parse_tfdt(tfdt)?);
                    }
                    for run in boxes(t.body) {
                        let run = run?;
                        if &run.kind.0 != b"trun" {
                            continue;
                        }
                        let totals = parse_trun(run.body, &defaults)?;
                        if first_flags.is_none() {
                            first_flags = totals.first_flags;
                        }
                        sample_count = sample_count
                            .checked_add(totals.samples)
                            .ok_or(CmafError::Overflow)?;
                        duration = duration
                            .checked_add(totals.duration)
                            .ok_or(CmafError::Overflow)?;
                    }
                }
            }
            b"mdat" => saw_mdat = true,
            _ => {}
        }
    }
    if !saw_moof {
        return Err(CmafError::Missing("moof"));
    }
    if !saw_mdat {
        return Err(CmafError::Missing("mdat"));
    }
    let base_media_decode_time = base_media_decode_time.ok_or(CmafError::Missing("traf"))?;
    let Some(first_flags) = first_flags else {
        return Err(CmafError::NoSamples);
    };
    Ok(MediaSegment {
        base_media_decode_time,
        duration,
        sample_count,
        starts_with_sync_sample: first_flags & SAMPLE_IS_NON_SYNC == 0,
        size: data.len() as u64,
    })
}

#[cfg(test)]
mod tests;
