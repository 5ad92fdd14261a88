//! Typed ladder configuration. Every default lives in [`LadderConfig::default`].

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Length of one media segment, in seconds.
///
/// Only values in `2.0..=6.0` can be constructed. The value is kept with
/// millisecond precision so that it formats the same way everywhere (ffmpeg
/// arguments, reports) and can be compared exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct SegmentDuration {
    millis: u32,
}

impl SegmentDuration {
    /// Shortest accepted segment, in seconds.
    pub const MIN_SECS: f64 = 2.0;
    /// Longest accepted segment, in seconds.
    pub const MAX_SECS: f64 = 6.0;

    /// The duration in seconds.
    pub fn as_secs_f64(self) -> f64 {
        f64::from(self.millis) / 1000.0
    }

    /// The duration in milliseconds.
    pub fn as_millis(self) -> u32 {
        self.millis
    }

    /// Seconds as ffmpeg reads them, e.g. `3.2` or `4`.
    pub(crate) fn ffmpeg_secs(self) -> String {
        let whole = self.millis / 1000;
        let frac = self.millis % 1000;
        if frac == 0 {
            whole.to_string()
        } else {
            let digits = format!("{frac:03}");
            format!("{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl Default for SegmentDuration {
    /// 3.2 s: at 30 fps and 48 kHz AAC a segment is exactly 96 video frames
    /// and 150 AAC frames, so audio and video segment boundaries coincide.
    fn default() -> Self {
        Self { millis: 3200 }
    }
}

impl fmt::Display for SegmentDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.ffmpeg_secs())
    }
}

impl TryFrom<f64> for SegmentDuration {
    type Error = SegmentDurationError;

    fn try_from(secs: f64) -> Result<Self, Self::Error> {
        if !(Self::MIN_SECS..=Self::MAX_SECS).contains(&secs) {
            return Err(SegmentDurationError { got: secs });
        }
        // In range, so the product is between 2000 and 6000 and fits a u32.
        let millis = (secs * 1000.0).round() as u32;
        Ok(Self { millis })
    }
}

impl From<SegmentDuration> for f64 {
    fn from(d: SegmentDuration) -> Self {
        d.as_secs_f64()
    }
}

/// A segment duration outside the accepted range.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error(
    "segment duration must be between {min} and {max} seconds (inclusive), got {got}",
    min = SegmentDuration::MIN_SECS,
    max = SegmentDuration::MAX_SECS
)]
pub struct SegmentDurationError {
    /// The rejected value, in seconds.
    pub got: f64,
}

/// One configured rung of the video ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// Output height in pixels; the width follows the source aspect ratio.
    pub height: u32,
    /// Target video bitrate in kbit/s.
    pub video_bitrate_kbps: u32,
}

impl Rung {
    /// A rung of `height` pixels at `video_bitrate_kbps`.
    pub const fn new(height: u32, video_bitrate_kbps: u32) -> Self {
        Self {
            height,
            video_bitrate_kbps,
        }
    }
}

/// Settings of the single audio rendition (AAC-LC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioConfig {
    /// AAC bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Output sample rate in Hz.
    pub sample_rate_hz: u32,
    /// Output channel count (the source is down- or up-mixed to it).
    pub channels: u32,
}

impl Default for AudioConfig {
    /// AAC-LC, 128 kbit/s, 48 kHz, stereo.
    fn default() -> Self {
        Self {
            bitrate_kbps: 128,
            sample_rate_hz: 48_000,
            channels: 2,
        }
    }
}

/// x264 presets ffmpeg accepts, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Everything that decides what the ladder looks like and which tools make it.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderConfig {
    /// Target segment length; keyframes are forced on every multiple of it.
    pub segment_duration: SegmentDuration,
    /// Candidate video rungs. Rungs taller than the source are skipped, never upscaled.
    pub rungs: Vec<Rung>,
    /// Audio rendition settings.
    pub audio: AudioConfig,
    /// The ffmpeg binary: a path, or a bare name looked up in `PATH`.
    pub ffmpeg: PathBuf,
    /// The ffprobe binary: a path, or a bare name looked up in `PATH`.
    pub ffprobe: PathBuf,
    /// Encoder threads per rendition; `None` lets x264 decide.
    ///
    /// libx264 output is byte-for-byte reproducible only with `Some(1)`;
    /// with more threads the bytes (and so the measured bitrates in the
    /// manifests) may differ from run to run.
    pub threads: Option<u32>,
    /// The x264 preset, one of [`X264_PRESETS`].
    pub x264_preset: String,
    /// The ladder always has at least this many video renditions; missing
    /// ones are derived below the source height.
    pub min_renditions: usize,
}

impl Default for LadderConfig {
    /// - segments of 3.2 s (see [`SegmentDuration::default`]);
    /// - rungs 1080p at 5000k, 720p at 2800k, 480p at 1400k, 360p at 800k, 240p at 400k;
    /// - audio AAC-LC 128k, 48 kHz, stereo;
    /// - `ffmpeg` and `ffprobe` found through `PATH`;
    /// - x264 threads chosen by x264, preset `veryfast`;
    /// - at least 3 video renditions.
    fn default() -> Self {
        Self {
            segment_duration: SegmentDuration::default(),
            rungs: vec![
                Rung::new(1080, 5000),
                Rung::new(720, 2800),
                Rung::new(480, 1400),
                Rung::new(360, 800),
                Rung::new(240, 400),
            ],
            audio: AudioConfig::default(),
            ffmpeg: PathBuf::from("ffmpeg"),
            ffprobe: PathBuf::from("ffprobe"),
            threads: None,
            x264_preset: "veryfast".to_owned(),
            min_renditions: 3,
        }
    }
}

impl LadderConfig {
    /// Checks the fields that the types cannot; reports every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut push =
            |field: String, message: String| problems.push(ConfigProblem { field, message });
        for (i, rung) in self.rungs.iter().enumerate() {
            if rung.height < 2 || rung.height % 2 != 0 {
                push(
                    format!("rungs[{i}].height"),
                    format!(
                        "must be an even number of at least 2 pixels, got {}",
                        rung.height
                    ),
                );
            }
            if rung.height > 4320 {
                push(
                    format!("rungs[{i}].height"),
                    format!("must be at most 4320 pixels, got {}", rung.height),
                );
            }
            if rung.video_bitrate_kbps == 0 {
                push(
                    format!("rungs[{i}].video_bitrate_kbps"),
                    "must be positive".to_owned(),
                );
            }
            if self.rungs[..i].iter().any(|r| r.height == rung.height) {
                push(
                    format!("rungs[{i}].height"),
                    format!("duplicate rung height {}", rung.height),
                );
            }
        }
        if self.min_renditions == 0 {
            push("min_renditions".to_owned(), "must be at least 1".to_owned());
        }
        if self.min_renditions > 16 {
            push(
                "min_renditions".to_owned(),
                format!("must be at most 16, got {}", self.min_renditions),
            );
        }
        if !X264_PRESETS.contains(&self.x264_preset.as_str()) {
            push(
                "x264_preset".to_owned(),
                format!(
                    "unknown preset {:?}; expected one of {}",
                    self.x264_preset,
                    X264_PRESETS.join(", ")
                ),
            );
        }
        if self.threads == Some(0) {
            push(
                "threads".to_owned(),
                "must be at least 1 (use None to let x264 decide)".to_owned(),
            );
        }
        if !(8..=1024).contains(&self.audio.bitrate_kbps) {
            push(
                "audio.bitrate_kbps".to_owned(),
                format!(
                    "must be between 8 and 1024, got {}",
                    self.audio.bitrate_kbps
                ),
            );
        }
        if !(8_000..=96_000).contains(&self.audio.sample_rate_hz) {
            push(
                "audio.sample_rate_hz".to_owned(),
                format!(
                    "must be between 8000 and 96000, got {}",
                    self.audio.sample_rate_hz
                ),
            );
        }
        if !(1..=8).contains(&self.audio.channels) {
            push(
                "audio.channels".to_owned(),
                format!("must be between 1 and 8, got {}", self.audio.channels),
            );
        }
        if self.ffmpeg.as_os_str().is_empty() {
            push("ffmpeg".to_owned(), "must not be empty".to_owned());
        }
        if self.ffprobe.as_os_str().is_empty() {
            push("ffprobe".to_owned(), "must not be empty".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// One invalid field of a [`LadderConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Path of the field, e.g. `rungs[2].height`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every problem found in a [`LadderConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ladder config: {}", self.summary())]
pub struct ConfigError {
    /// The problems, in field order.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    fn summary(&self) -> String {
        self.problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_duration_range() {
        for bad in [1.0, 1.999, 6.001, 7.0, f64::NAN, f64::INFINITY, -3.0] {
            let err = SegmentDuration::try_from(bad).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("between 2 and 6 seconds"), "{text}");
        }
        for good in [2.0, 3.2, 4.0, 6.0] {
            let d = SegmentDuration::try_from(good).unwrap();
            assert!((d.as_secs_f64() - good).abs() < 1e-9);
        }
    }

    #[test]
    fn segment_duration_formats_for_ffmpeg() {
        assert_eq!(SegmentDuration::default().ffmpeg_secs(), "3.2");
        assert_eq!(SegmentDuration::try_from(4.0).unwrap().ffmpeg_secs(), "4");
        assert_eq!(
            SegmentDuration::try_from(2.05).unwrap().ffmpeg_secs(),
            "2.05"
        );
        assert_eq!(
            SegmentDuration::try_from(2.125).unwrap().ffmpeg_secs(),
            "2.125"
        );
    }

    #[test]
    fn segment_duration_serde_validates() {
        let d: SegmentDuration = serde_json::from_str("3.2").unwrap();
        assert_eq!(d, SegmentDuration::default());
        assert!(serde_json::from_str::<SegmentDuration>("7.0").is_err());
        assert_eq!(serde_json::to_string(&d).unwrap(), "3.2");
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let cfg = LadderConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.segment_duration.as_millis(), 3200);
        assert_eq!(cfg.rungs.len(), 5);
        assert_eq!(cfg.rungs[0], Rung::new(1080, 5000));
        assert_eq!(cfg.rungs[4], Rung::new(240, 400));
        assert_eq!(cfg.min_renditions, 3);
        assert_eq!(cfg.x264_preset, "veryfast");
        assert_eq!(
            cfg.audio,
            AudioConfig {
                bitrate_kbps: 128,
                sample_rate_hz: 48_000,
                channels: 2
            }
        );
    }

    #[test]
    fn validation_reports_every_problem() {
        let cfg = LadderConfig {
            rungs: vec![Rung::new(721, 0), Rung::new(720, 100), Rung::new(720, 100)],
            x264_preset: "warp".to_owned(),
            min_renditions: 0,
            threads: Some(0),
            ..LadderConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rungs[0].height",
                "rungs[0].video_bitrate_kbps",
                "rungs[2].height",
                "min_renditions",
                "x264_preset",
                "threads"
            ]
        );
    }
}
