//! The viewer model: a pure state machine that behaves like a video player (hls.js,
//! dash.js) and is driven by the caller with `now` and the results of the requests it asked
//! for. It does no I/O and never reads the clock.
//!
//! The flow follows a player's: [`hls`] and [`dash`] parse manifests into one
//! [`Presentation`] model of renditions and tracks; [`abr`] estimates throughput and picks a
//! rendition; [`viewer::Viewer`] keeps the buffer, the playhead, stalls and the session,
//! and says which object it needs next and from when; [`cmcd`] encodes what it tells the
//! server about itself (CTA-5004).

pub mod abr;
pub mod cmcd;
pub mod dash;
pub mod hls;
pub mod viewer;

pub use viewer::{Event, Outcome, Request, Response, SessionLength, Viewer, ViewerConfig};

/// What an object is, for the report's per-kind latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The HLS master playlist or the DASH MPD.
    Master,
    /// An HLS media playlist.
    Playlist,
    /// An initialisation segment (EXT-X-MAP, DASH initialization).
    Init,
    /// A media segment.
    Segment,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Self; 4] = [Self::Master, Self::Playlist, Self::Init, Self::Segment];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Playlist => "playlist",
            Self::Init => "init",
            Self::Segment => "segment",
        }
    }
}

/// Which track an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// Video (or muxed audio and video).
    Video,
    /// A separate audio rendition.
    Audio,
    /// The manifest itself.
    Manifest,
}

/// A byte range: `len` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Number of bytes.
    pub len: u64,
}

impl ByteRange {
    /// The `Range` header value.
    pub fn header(&self) -> String {
        format!("bytes={}-{}", self.start, self.start + self.len.max(1) - 1)
    }
}

/// An absolute URL and an optional byte range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// Absolute URL.
    pub url: String,
    /// Byte range within it.
    pub range: Option<ByteRange>,
}

/// One media segment on a track's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence (HLS) or segment number (DASH).
    pub seq: u64,
    /// Start on the track's timeline, seconds.
    pub start: f64,
    /// Duration, seconds.
    pub duration: f64,
    /// Where it is.
    pub res: Resource,
    /// The initialisation segment it needs, if any.
    pub init: Option<Resource>,
}

/// The segments of one rendition, as far as they are known.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Track {
    /// Segments in timeline order.
    pub segments: Vec<Segment>,
    /// No more segments will be added (HLS `EXT-X-ENDLIST`, a static MPD).
    pub ended: bool,
    /// How often to refresh a live track, seconds (HLS target duration).
    pub target_duration: f64,
}

impl Track {
    /// Where the last known segment ends.
    pub fn end(&self) -> f64 {
        self.segments.last().map_or(0.0, |s| s.start + s.duration)
    }
}

/// Where a rendition's segments come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An HLS media playlist still to be loaded.
    Playlist(String),
    /// Segments already known (a loaded playlist, a DASH representation).
    Track(Track),
}

/// One rendition a player can pick.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// Name for reports (HLS: the playlist path; DASH: the representation id).
    pub id: String,
    /// Advertised peak bandwidth, bits per second.
    pub bandwidth: u64,
    /// Its segments, or the playlist that lists them.
    pub source: Source,
}

/// What a manifest offers, in one model for HLS and DASH.
#[derive(Debug, Clone, PartialEq)]
pub struct Presentation {
    /// Video (or muxed) renditions, by ascending bandwidth.
    pub video: Vec<Rendition>,
    /// The audio rendition played with the video, when audio is separate.
    pub audio: Option<Rendition>,
    /// The manifest itself is refreshed (a dynamic MPD), every this many seconds.
    pub manifest_refresh: Option<f64>,
}

/// Why a manifest could not be used. The message names the line or element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not an HLS playlist (no `#EXTM3U`) or not an MPD.
    #[error("not a manifest: {0}")]
    NotManifest(String),
    /// A tag or element with a bad value.
    #[error("{at}: {what}")]
    Bad {
        /// Line number or element path.
        at: String,
        /// What is wrong.
        what: String,
    },
    /// Nothing playable in it.
    #[error("no playable {0}")]
    Empty(&'static str),
    /// A feature the model does not play.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

pub(crate) fn bad(at: impl Into<String>, what: impl Into<String>) -> ManifestError {
    ManifestError::Bad {
        at: at.into(),
        what: what.into(),
    }
}

/// Resolves `reference` against `base` (RFC 3986), keeping the base's query on the result
/// when the reference has none and `carry_query` is set.
pub fn resolve(base: &str, reference: &str) -> Result<String, ManifestError> {
    let base = url::Url::parse(base).map_err(|e| bad("base URL", format!("{base}: {e}")))?;
    let joined = base
        .join(reference.trim())
        .map_err(|e| bad("URI", format!("{reference}: {e}")))?;
    Ok(joined.into())
}

/// A small deterministic random number generator (splitmix64), so the model stays pure and
/// a run can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with `mean`.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}
