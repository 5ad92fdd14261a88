//! Pure choice of the ABR ladder for one source: which heights, widths,
//! bitrates, the frame rate and the GOP. Never upscales.

use std::cmp::Reverse;

use crate::config::{LadderConfig, SegmentDuration};
use crate::probe::{Rational, SourceInfo};

/// Smallest height the ladder derives on its own.
const MIN_DERIVED_HEIGHT: u32 = 8;
/// Lowest bitrate given to a derived rung, in kbit/s.
const MIN_DERIVED_KBPS: u32 = 64;
/// A rung chosen so far: (height, kbit/s).
type Chosen = (u32, u32);

/// Fractions of the source height tried, in order, when too few configured
/// rungs fit under the source.
const DERIVED_FRACTIONS: [(u32, u32); 8] = [
    (1, 1),
    (3, 4),
    (1, 2),
    (3, 8),
    (1, 3),
    (1, 4),
    (1, 6),
    (1, 8),
];

/// One video rendition to encode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PlannedVideo {
    /// `<height>p`, also the folder name under `video/`.
    pub(crate) name: String,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) bitrate_kbps: u32,
}

/// Everything ffmpeg is asked to produce.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Plan {
    /// Highest first.
    pub(crate) video: Vec<PlannedVideo>,
    /// Whether an audio rendition is made.
    pub(crate) audio: bool,
    pub(crate) fps: Rational,
    /// Frames between keyframes: round(segment duration x fps).
    pub(crate) gop: u32,
    pub(crate) segment: SegmentDuration,
}

/// The source is too small to make the configured number of renditions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a {width}x{height} source is too small for {wanted} distinct renditions of at least {MIN_DERIVED_HEIGHT} pixels in height"
)]
pub struct LadderError {
    /// Displayed source width.
    pub width: u32,
    /// Displayed source height.
    pub height: u32,
    /// The configured minimum number of renditions.
    pub wanted: usize,
}

pub(crate) fn plan(source: &SourceInfo, cfg: &LadderConfig) -> Result<Plan, LadderError> {
    let too_small = || LadderError {
        width: source.width,
        height: source.height,
        wanted: cfg.min_renditions,
    };
    let mut chosen: Vec<Chosen> = cfg
        .rungs
        .iter()
        .filter(|r| r.height <= source.height)
        .map(|r| (r.height, r.video_bitrate_kbps))
        .collect();
    chosen.sort_by_key(|r| Reverse(r.0));
    chosen.dedup_by_key(|r| r.0);

    if chosen.len() < cfg.min_renditions {
        let candidates: Vec<u32> = DERIVED_FRACTIONS
            .iter()
            .map(|&(n, d)| even_floor(mul_div(source.height, n, d)))
            .filter(|&h| h >= MIN_DERIVED_HEIGHT)
            .collect();
        // First only heights clearly apart from the others (1/8 of the
        // height), then any height not yet present.
        let passes: [fn(u32, &[Chosen]) -> bool; 2] = [
            |c, chosen| chosen.iter().all(|&(h, _)| c.abs_diff(h) * 8 >= c.max(h)),
            |c, chosen| chosen.iter().all(|&(h, _)| h != c),
        ];
        for accept in passes {
            for &c in &candidates {
                if chosen.len() >= cfg.min_renditions {
                    break;
                }
                if accept(c, &chosen) {
                    chosen.push((c, derived_kbps(c, source, cfg)));
                }
            }
        }
        chosen.sort_by_key(|r| Reverse(r.0));
        if chosen.len() < cfg.min_renditions {
            return Err(too_small());
        }
    }

    let video = chosen
        .into_iter()
        .map(|(height, bitrate_kbps)| PlannedVideo {
            name: format!("{height}p"),
            width: width_for(height, source),
            height,
            bitrate_kbps,
        })
        .collect();
    let segment = cfg.segment_duration;
    Ok(Plan {
        video,
        audio: source.has_audio,
        fps: source.fps,
        gop: gop(segment, source.fps),
        segment,
    })
}

/// Frames per segment, rounded: the keyframe interval.
pub(crate) fn gop(segment: SegmentDuration, fps: Rational) -> u32 {
    let num = u64::from(segment.as_millis()) * u64::from(fps.num);
    let den = 1000 * u64::from(fps.den);
    u32::try_from((num + den / 2) / den)
        .unwrap_or(u32::MAX)
        .max(1)
}

/// An even width that keeps the displayed aspect ratio, as `scale=-2:H` would.
pub(crate) fn width_for(height: u32, source: &SourceInfo) -> u32 {
    let num = u64::from(height) * u64::from(source.width);
    let den = 2 * u64::from(source.height.max(1));
    let half = (num + den / 2) / den;
    u32::try_from(half * 2).unwrap_or(u32::MAX - 1).max(2)
}

fn mul_div(v: u32, n: u32, d: u32) -> u32 {
    u32::try_from(u64::from(v) * u64::from(n) / u64::from(d.max(1))).unwrap_or(u32::MAX)
}

fn even_floor(v: u32) -> u32 {
    v & !1
}

/// Bitrate of a derived rung: the nearest configured rung scaled by pixel
/// area, or 0.1 bit per pixel per frame at 30 fps when no rung is configured.
fn derived_kbps(height: u32, source: &SourceInfo, cfg: &LadderConfig) -> u32 {
    let nearest = cfg
        .rungs
        .iter()
        .min_by_key(|r| (r.height.abs_diff(height), r.height));
    let kbps = match nearest {
        Some(r) => {
            let h = u64::from(height);
            let rh = u64::from(r.height.max(1));
            (u64::from(r.video_bitrate_kbps) * h * h + rh * rh / 2) / (rh * rh)
        }
        None => u64::from(width_for(height, source)) * u64::from(height) * 3 / 1000,
    };
    u32::try_from(kbps)
        .unwrap_or(u32::MAX)
        .max(MIN_DERIVED_KBPS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rung;

    fn source(width: u32, height: u32) -> SourceInfo {
        SourceInfo {
            width,
            height,
            fps: Rational { num: 30, den: 1 },
            duration_secs: Some(10.0),
            video_codec: "h264".to_owned(),
            has_audio: true,
            audio_language: None,
        }
    }

    fn heights(p: &Plan) -> Vec<u32> {
        p.video.iter().map(|v| v.height).collect()
    }

    #[test]
    fn full_hd_source_uses_every_default_rung() {
        let p = plan(&source(1920, 1080), &LadderConfig::default()).unwrap();
        assert_eq!(heights(&p), [1080, 720, 480, 360, 240]);
        assert_eq!(p.video[1].width, 1280);
        assert_eq!(p.video[2].width, 854);
        assert_eq!(p.video[4].width, 426);
        assert_eq!(p.video[0].name, "1080p");
        assert_eq!(p.video[0].bitrate_kbps, 5000);
        assert_eq!(p.gop, 96);
        assert!(p.audio);
    }

    #[test]
    fn never_upscales() {
        let p = plan(&source(1280, 720), &LadderConfig::default()).unwrap();
        assert_eq!(heights(&p), [720, 480, 360, 240]);
        for s in [
            (3840, 2160),
            (640, 360),
            (320, 180),
            (100, 50),
            (1080, 1920),
            (1279, 719),
        ] {
            let p = plan(&source(s.0, s.1), &LadderConfig::default()).unwrap();
            assert!(p.video.len() >= 3, "{s:?}");
            for v in &p.video {
                assert!(v.height <= s.1 && v.width <= s.0 + 1, "{s:?} -> {v:?}");
                assert_eq!(v.height % 2, 0);
                assert_eq!(v.width % 2, 0);
            }
        }
    }

    #[test]
    fn small_sources_get_derived_rungs_below_them() {
        // 360p: 360 and 240 fit; 270 is too close to 240, so 180 is added.
        let p = plan(&source(640, 360), &LadderConfig::default()).unwrap();
        assert_eq!(heights(&p), [360, 240, 180]);
        assert_eq!(p.video[2].width, 320);
        // 180p: nothing fits; the source height, 3/4 and 1/2 of it.
        let p = plan(&source(320, 180), &LadderConfig::default()).unwrap();
        assert_eq!(heights(&p), [180, 134, 90]);
        // Bitrates follow the pixel area of the nearest rung (240p at 400k).
        assert_eq!(p.video[0].bitrate_kbps, 225);
        assert!(p.video.iter().all(|v| v.bitrate_kbps >= MIN_DERIVED_KBPS));
        // Odd heights round down to even.
        let p = plan(&source(1279, 719), &LadderConfig::default()).unwrap();
        assert_eq!(heights(&p), [480, 360, 240]);
    }

    #[test]
    fn tiny_sources_are_refused() {
        let err = plan(&source(16, 12), &LadderConfig::default()).unwrap_err();
        assert_eq!(err.wanted, 3);
        let p = plan(
            &source(16, 12),
            &LadderConfig {
                min_renditions: 1,
                ..LadderConfig::default()
            },
        )
        .unwrap();
        assert_eq!(heights(&p), [12]);
    }

    #[test]
    fn more_renditions_than_rungs() {
        let cfg = LadderConfig {
            rungs: vec![Rung::new(240, 400)],
            min_renditions: 4,
            ..LadderConfig::default()
        };
        let p = plan(&source(1920, 1080), &cfg).unwrap();
        assert_eq!(heights(&p), [1080, 810, 540, 240]);
        let none = LadderConfig {
            rungs: vec![],
            ..LadderConfig::default()
        };
        let p = plan(&source(1280, 720), &none).unwrap();
        assert_eq!(heights(&p), [720, 540, 360]);
        assert_eq!(p.video[0].bitrate_kbps, 2764);
    }

    #[test]
    fn gop_follows_fps_and_segment() {
        let seg = SegmentDuration::default();
        assert_eq!(
            gop(
                seg,
                Rational {
                    num: 30000,
                    den: 1001
                }
            ),
            96
        );
        assert_eq!(gop(seg, Rational { num: 25, den: 1 }), 80);
        assert_eq!(gop(seg, Rational { num: 24, den: 1 }), 77);
        assert_eq!(
            gop(
                SegmentDuration::try_from(2.0).unwrap(),
                Rational { num: 60, den: 1 }
            ),
            120
        );
    }
}
