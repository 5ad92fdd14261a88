//! What a finished transcode produced, for the job record and the operator.

use serde::Serialize;

use crate::cmaf::TrackMedia;
use crate::config::SegmentDuration;
use crate::ladder::Plan;
use crate::manifest::{DASH_MANIFEST, MASTER_PLAYLIST, MEDIA_PLAYLIST, Presentation, Track};
use crate::probe::SourceInfo;
use crate::verify::VerifyReport;

/// The result of [`crate::transcode`]. Paths are relative to the output folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What ffprobe found in the input.
    pub source: SourceReport,
    /// The configured segment duration.
    pub segment_duration: SegmentDuration,
    /// `master.m3u8`.
    pub master_playlist: String,
    /// `manifest.mpd`.
    pub dash_manifest: String,
    /// Video renditions, highest first, then the audio rendition if any.
    pub renditions: Vec<Rendition>,
    /// Remarks worth showing to an operator, e.g. that there is no audio.
    pub notes: Vec<String>,
    /// What the final verification checked.
    pub verified: VerifyReport,
}

impl Report {
    /// The video renditions, highest first.
    pub fn video(&self) -> impl Iterator<Item = &Rendition> {
        self.renditions
            .iter()
            .filter(|r| r.kind == RenditionKind::Video)
    }

    /// The audio rendition; `None` when the source has no audio.
    pub fn audio(&self) -> Option<&Rendition> {
        self.renditions
            .iter()
            .find(|r| r.kind == RenditionKind::Audio)
    }
}

/// The input as probed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceReport {
    /// Displayed width (rotation and pixel aspect applied).
    pub width: u32,
    /// Displayed height (rotation applied).
    pub height: u32,
    /// Output frame rate chosen from the source, e.g. `30000/1001`.
    pub frame_rate: String,
    /// Duration in seconds, when the container declares one.
    pub duration_secs: Option<f64>,
    /// ffprobe's codec name, e.g. `h264`.
    pub video_codec: String,
    /// Whether the input has an audio stream.
    pub has_audio: bool,
}

/// Whether a rendition carries video or audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RenditionKind {
    /// A video-only rendition under `video/`.
    Video,
    /// The audio-only rendition under `audio/`.
    Audio,
}

/// One produced rendition, as measured from its segments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rendition {
    /// `<height>p` for video (e.g. `720p`), `aac` for audio.
    pub name: String,
    /// Video or audio.
    pub kind: RenditionKind,
    /// Folder, e.g. `video/720p` or `audio/aac`.
    pub path: String,
    /// Media playlist, e.g. `video/720p/index.m3u8`.
    pub playlist: String,
    /// Width in (square) pixels; video only.
    pub width: Option<u32>,
    /// Height in pixels; video only.
    pub height: Option<u32>,
    /// Frames per second; video only.
    pub frame_rate: Option<f64>,
    /// Channel count; audio only.
    pub channels: Option<u16>,
    /// Sample rate in Hz; audio only.
    pub sample_rate: Option<u32>,
    /// The bitrate the encoder was asked for, in kbit/s.
    pub target_bitrate_kbps: u32,
    /// Peak segment bit rate (RFC 8216) in bit/s of this rendition alone;
    /// the HLS variants add the audio's.
    pub bandwidth: u64,
    /// Average bit rate in bit/s of this rendition alone.
    pub average_bandwidth: u64,
    /// RFC 6381 codecs string, e.g. `avc1.64001f` or `mp4a.40.2`.
    pub codecs: String,
    /// Number of media segments.
    pub segment_count: usize,
    /// Sum of the segment durations, in seconds.
    pub duration_secs: f64,
    /// Ticks per second of the track.
    pub timescale: u32,
}

pub(crate) fn build(
    source: &SourceInfo,
    plan: &Plan,
    p: &Presentation,
    audio_kbps: u32,
    verified: VerifyReport,
) -> Report {
    let mut renditions: Vec<Rendition> = p
        .video
        .iter()
        .zip(&plan.video)
        .map(|(t, planned)| {
            let size = t.size();
            Rendition {
                frame_rate: t.frame_rate().map(|(n, d)| n as f64 / d as f64),
                width: size.map(|s| s.0),
                height: size.map(|s| s.1),
                ..rendition(t, RenditionKind::Video, planned.bitrate_kbps)
            }
        })
        .collect();
    if let Some(t) = &p.audio {
        let (channels, sample_rate) = match t.init.media {
            TrackMedia::Audio {
                channels,
                sample_rate,
            } => (Some(channels), Some(sample_rate)),
            TrackMedia::Video { .. } => (None, None),
        };
        renditions.push(Rendition {
            channels,
            sample_rate,
            ..rendition(t, RenditionKind::Audio, audio_kbps)
        });
    }
    let mut notes = Vec::new();
    if !source.has_audio {
        notes.push("the source has no audio stream, so no audio rendition was made".to_owned());
    }
    if let Some(top) = plan.video.first()
        && top.height < source.height
    {
        notes.push(format!(
            "the top rendition ({}) is below the source height {}: no configured rung matches it",
            top.name, source.height
        ));
    }
    Report {
        source: SourceReport {
            width: source.width,
            height: source.height,
            frame_rate: source.fps.to_ffmpeg(),
            duration_secs: source.duration_secs,
            video_codec: source.video_codec.clone(),
            has_audio: source.has_audio,
        },
        segment_duration: plan.segment,
        master_playlist: MASTER_PLAYLIST.to_owned(),
        dash_manifest: DASH_MANIFEST.to_owned(),
        renditions,
        notes,
        verified,
    }
}

/// The fields every rendition has.
fn rendition(t: &Track, kind: RenditionKind, target_bitrate_kbps: u32) -> Rendition {
    Rendition {
        name: t.name.clone(),
        kind,
        path: t.dir.clone(),
        playlist: playlist(t),
        width: None,
        height: None,
        frame_rate: None,
        channels: None,
        sample_rate: None,
        target_bitrate_kbps,
        bandwidth: t.peak_bps(),
        average_bandwidth: t.average_bps(),
        codecs: t.init.codecs.clone(),
        segment_count: t.segments.len(),
        duration_secs: t.duration_secs(),
        timescale: t.init.timescale,
    }
}

fn playlist(t: &Track) -> String {
    format!("{}/{MEDIA_PLAYLIST}", t.dir)
}
