//! Pure, deterministic manifest writing from measured segments.
//!
//! The same measured segments always give byte-identical manifests: there is
//! no clock, no hashing order and no float formatting of sums here. Times are
//! kept as integer ticks of each track's timescale and printed with integer
//! arithmetic.

use crate::cmaf::{InitSegment, MediaSegment, TrackMedia};
use crate::ffmpeg::segment_name;

pub(crate) mod dash;
pub(crate) mod hls;

/// Name of the HLS master playlist at the output root.
pub(crate) const MASTER_PLAYLIST: &str = "master.m3u8";
/// Name of the DASH manifest at the output root.
pub(crate) const DASH_MANIFEST: &str = "manifest.mpd";
/// Name of each rendition's HLS media playlist.
pub(crate) const MEDIA_PLAYLIST: &str = "index.m3u8";
/// HLS `GROUP-ID` of the audio rendition.
pub(crate) const AUDIO_GROUP: &str = "aac";

/// One rendition as measured on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Track {
    /// `720p` or `aac`.
    pub(crate) name: String,
    /// Folder relative to the output root, without a trailing slash.
    pub(crate) dir: String,
    pub(crate) init: InitSegment,
    /// In order: `segments[i]` is file `seg-{i+1:05}.m4s`.
    pub(crate) segments: Vec<MediaSegment>,
}

/// Everything the manifests describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Presentation {
    /// Highest first.
    pub(crate) video: Vec<Track>,
    pub(crate) audio: Option<Track>,
    /// A language tag already checked to be safe in any manifest.
    pub(crate) audio_language: Option<String>,
}

impl Track {
    pub(crate) fn timescale(&self) -> u64 {
        u64::from(self.init.timescale.max(1))
    }

    /// Sum of the segment durations, in ticks.
    pub(crate) fn total_ticks(&self) -> u64 {
        self.segments
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(s.duration))
    }

    pub(crate) fn duration_secs(&self) -> f64 {
        self.total_ticks() as f64 / self.timescale() as f64
    }

    pub(crate) fn longest_segment_ticks(&self) -> u64 {
        self.segments.iter().map(|s| s.duration).max().unwrap_or(0)
    }

    /// `#EXT-X-TARGETDURATION`: the longest segment rounded up to whole seconds.
    pub(crate) fn target_duration_secs(&self) -> u64 {
        self.longest_segment_ticks()
            .div_ceil(self.timescale())
            .max(1)
    }

    pub(crate) fn segment_uri(number: usize) -> String {
        segment_name(number)
    }

    /// Bytes of all media segments.
    pub(crate) fn media_bytes(&self) -> u64 {
        self.segments
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(s.size))
    }

    /// Average bit rate over the whole track, bits per second, rounded up.
    pub(crate) fn average_bps(&self) -> u64 {
        bits_per_second(self.media_bytes(), self.total_ticks(), self.timescale())
    }

    /// Peak segment bit rate as RFC 8216 defines it: the highest rate of any
    /// run of consecutive segments lasting 0.5 to 1.5 target durations. When
    /// no run qualifies (a very short track), the average.
    pub(crate) fn peak_bps(&self) -> u64 {
        let ts = self.timescale();
        let target = self.target_duration_secs().saturating_mul(ts);
        let (lo, hi) = (target / 2, target.saturating_mul(3) / 2);
        let mut best: Option<u64> = None;
        for start in 0..self.segments.len() {
            let (mut bytes, mut ticks) = (0u64, 0u64);
            for seg in self.segments.iter().skip(start) {
                bytes = bytes.saturating_add(seg.size);
                ticks = ticks.saturating_add(seg.duration);
                if ticks > hi {
                    break;
                }
                if ticks >= lo {
                    let rate = bits_per_second(bytes, ticks, ts);
                    best = Some(best.map_or(rate, |b| b.max(rate)));
                }
            }
        }
        best.unwrap_or_else(|| self.average_bps())
    }

    /// Frames per second as a reduced fraction, from the segment with the
    /// most samples (the last segment may end on a shorter frame).
    pub(crate) fn frame_rate(&self) -> Option<(u64, u64)> {
        if !matches!(self.init.media, TrackMedia::Video { .. }) {
            return None;
        }
        let seg = self.segments.iter().reduce(|best, s| {
            if s.sample_count > best.sample_count {
                s
            } else {
                best
            }
        })?;
        let num = u128::from(seg.sample_count) * u128::from(self.timescale());
        let den = u128::from(seg.duration);
        if den == 0 || num == 0 {
            return None;
        }
        let g = gcd(num, den);
        Some((u64::try_from(num / g).ok()?, u64::try_from(den / g).ok()?))
    }

    pub(crate) fn size(&self) -> Option<(u32, u32)> {
        match self.init.media {
            TrackMedia::Video { width, height } => Some((width, height)),
            TrackMedia::Audio { .. } => None,
        }
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

fn bits_per_second(bytes: u64, ticks: u64, timescale: u64) -> u64 {
    if ticks == 0 {
        return 0;
    }
    let bits = u128::from(bytes) * 8 * u128::from(timescale);
    u64::try_from(bits.div_ceil(u128::from(ticks))).unwrap_or(u64::MAX)
}

/// `ticks / timescale` seconds with exactly `decimals` digits, rounded half up.
pub(crate) fn fixed_secs(ticks: u64, timescale: u64, decimals: u32) -> String {
    let scale = 10u128.pow(decimals);
    let ts = u128::from(timescale.max(1));
    let scaled = (u128::from(ticks) * scale + ts / 2) / ts;
    let whole = scaled / scale;
    let frac = scaled % scale;
    if decimals == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:0width$}", width = decimals as usize)
    }
}

/// Every manifest of `p` as (path relative to the output root, contents):
/// the master playlist, the MPD and one media playlist per rendition.
pub(crate) fn render(p: &Presentation) -> Vec<(String, String)> {
    let mut files = vec![
        (MASTER_PLAYLIST.to_owned(), hls::master_playlist(p)),
        (DASH_MANIFEST.to_owned(), dash::mpd(p)),
    ];
    for t in p.video.iter().chain(p.audio.as_ref()) {
        files.push((
            format!("{}/{MEDIA_PLAYLIST}", t.dir),
            hls::media_playlist(t),
        ));
    }
    files
}

/// Frame rate with three decimals, as HLS `FRAME-RATE` wants it.
pub(crate) fn fps_3(num: u64, den: u64) -> String {
    fixed_secs(num, den, 3)
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
