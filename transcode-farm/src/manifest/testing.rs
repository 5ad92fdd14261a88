//! Synthetic measured presentations for unit tests.

use super::{Presentation, Track};
use crate::cmaf::{FourCc, InitSegment, MediaSegment, TrackMedia};

/// Contiguous segments of the given (duration, size) pairs.
pub(crate) fn segments(parts: &[(u64, u64)]) -> Vec<MediaSegment> {
    let mut t = 0;
    parts
        .iter()
        .map(|&(duration, size)| {
            let s = MediaSegment {
                base_media_decode_time: t,
                duration,
                sample_count: duration / 512,
                starts_with_sync_sample: true,
                size,
            };
            t += duration;
            s
        })
        .collect()
}

pub(crate) fn video(height: u32, width: u32, sizes: [u64; 3]) -> Track {
    Track {
        name: format!("{height}p"),
        dir: format!("video/{height}p"),
        init: InitSegment {
            track_id: 1,
            timescale: 15360,
            sample_entry: FourCc(*b"avc1"),
            codecs: "avc1.64001f".to_owned(),
            media: TrackMedia::Video { width, height },
            default_sample_duration: 0,
            default_sample_flags: 0,
        },
        // 3.2 s, 3.2 s, 1.6 s at 30 fps.
        segments: segments(&[(49152, sizes[0]), (49152, sizes[1]), (24576, sizes[2])]),
    }
}

pub(crate) fn audio() -> Track {
    let mut segments = segments(&[(153_600, 51_200), (153_600, 51_200), (77_824, 26_000)]);
    for s in &mut segments {
        s.sample_count = s.duration / 1024;
    }
    Track {
        name: "aac".to_owned(),
        dir: "audio/aac".to_owned(),
        init: InitSegment {
            track_id: 1,
            timescale: 48000,
            sample_entry: FourCc(*b"mp4a"),
            codecs: "mp4a.40.2".to_owned(),
            media: TrackMedia::Audio {
                channels: 2,
                sample_rate: 48000,
            },
            default_sample_duration: 1024,
            default_sample_flags: 0,
        },
        segments,
    }
}

/// 720p and 360p video with stereo AAC, 8 s.
pub(crate) fn presentation() -> Presentation {
    Presentation {
        video: vec![
            video(720, 1280, [1_200_000, 1_000_000, 400_000]),
            video(360, 640, [320_000, 300_000, 100_000]),
        ],
        audio: Some(audio()),
        audio_language: Some("en".to_owned()),
    }
}
