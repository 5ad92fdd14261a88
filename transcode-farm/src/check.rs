//! Pure checks of the measured output against the plan, run before any
//! manifest is written.

use std::path::Path;

use crate::cmaf::TrackMedia;
use crate::error::TranscodeError;
use crate::ladder::Plan;
use crate::manifest::Track;
use crate::probe::SourceInfo;

/// Shortfall of decoded video against the declared duration tolerated
/// before the input counts as truncated: this many seconds ...
const TRUNCATION_SLACK_SECS: f64 = 1.0;
/// ... or this share of the duration, whichever is larger.
const TRUNCATION_SLACK_SHARE: f64 = 0.03;

pub(crate) fn check_output(
    input: &Path,
    source: &SourceInfo,
    plan: &Plan,
    video: &[Track],
    audio: Option<&Track>,
) -> Result<(), TranscodeError> {
    let bad = |rendition: &str, reason: String| TranscodeError::Output {
        rendition: rendition.to_owned(),
        reason,
    };
    if video.len() != plan.video.len() {
        return Err(bad(
            "video",
            format!(
                "{} renditions planned, {} found",
                plan.video.len(),
                video.len()
            ),
        ));
    }
    for (t, planned) in video.iter().zip(&plan.video) {
        match t.init.media {
            TrackMedia::Video { width, height }
                if (width, height) == (planned.width, planned.height) => {}
            TrackMedia::Video { width, height } => {
                return Err(bad(
                    &t.name,
                    format!(
                        "size {width}x{height}, planned {}x{}",
                        planned.width, planned.height
                    ),
                ));
            }
            TrackMedia::Audio { .. } => {
                return Err(bad(&t.name, "holds audio, not video".to_owned()));
            }
        }
        if let Some(i) = t.segments.iter().position(|s| !s.starts_with_sync_sample) {
            return Err(bad(
                &t.name,
                format!("segment {} does not start with a keyframe", i + 1),
            ));
        }
        if t.segments.len() != video[0].segments.len() {
            return Err(bad(
                &t.name,
                format!(
                    "{} segments while {} has {}: keyframes are not aligned",
                    t.segments.len(),
                    video[0].name,
                    video[0].segments.len()
                ),
            ));
        }
    }
    if let Some(a) = audio
        && !matches!(a.init.media, TrackMedia::Audio { .. })
    {
        return Err(bad(&a.name, "holds video, not audio".to_owned()));
    }
    if let (Some(expected), Some(top)) = (source.duration_secs, video.first()) {
        let decoded = top.duration_secs();
        let slack = TRUNCATION_SLACK_SECS.max(expected * TRUNCATION_SLACK_SHARE);
        if decoded + slack < expected {
            return Err(TranscodeError::Truncated {
                path: input.to_path_buf(),
                detail: format!(
                    "only {decoded:.2} s of video could be decoded, but the file declares {expected:.2} s"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::PlannedVideo;
    use crate::manifest::testing;
    use crate::probe::Rational;

    fn setup() -> (SourceInfo, Plan, Vec<Track>) {
        let source = SourceInfo {
            width: 1280,
            height: 720,
            fps: Rational { num: 30, den: 1 },
            duration_secs: Some(8.0),
            video_codec: "h264".into(),
            has_audio: true,
            audio_language: None,
        };
        let plan = Plan {
            video: vec![
                PlannedVideo {
                    name: "720p".into(),
                    width: 1280,
                    height: 720,
                    bitrate_kbps: 2800,
                },
                PlannedVideo {
                    name: "360p".into(),
                    width: 640,
                    height: 360,
                    bitrate_kbps: 800,
                },
            ],
            audio: true,
            fps: source.fps,
            gop: 96,
            segment: Default::default(),
        };
        (source, plan, testing::presentation().video)
    }

    #[test]
    fn accepts_matching_output() {
        let (source, plan, video) = setup();
        check_output(
            Path::new("in.mp4"),
            &source,
            &plan,
            &video,
            Some(&testing::audio()),
        )
        .unwrap();
    }

    #[test]
    fn spots_wrong_size_missing_keyframe_and_misalignment() {
        let (source, plan, mut video) = setup();
        video[1].init.media = TrackMedia::Video {
            width: 642,
            height: 360,
        };
        let e = check_output(Path::new("in.mp4"), &source, &plan, &video, None).unwrap_err();
        assert!(
            e.to_string().contains("size 642x360, planned 640x360"),
            "{e}"
        );

        let (_, _, mut video) = setup();
        video[0].segments[1].starts_with_sync_sample = false;
        let e = check_output(Path::new("in.mp4"), &source, &plan, &video, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("segment 2 does not start with a keyframe"),
            "{e}"
        );

        let (_, _, mut video) = setup();
        video[1].segments.pop();
        let e = check_output(Path::new("in.mp4"), &source, &plan, &video, None).unwrap_err();
        assert!(e.to_string().contains("keyframes are not aligned"), "{e}");
    }

    #[test]
    fn short_output_means_truncated_input() {
        let (mut source, plan, video) = setup();
        source.duration_secs = Some(16.0);
        let e = check_output(Path::new("in.mp4"), &source, &plan, &video, None).unwrap_err();
        assert!(matches!(e, TranscodeError::Truncated { .. }), "{e}");
        // Within a second of the declared duration is fine.
        source.duration_secs = Some(8.9);
        check_output(Path::new("in.mp4"), &source, &plan, &video, None).unwrap();
    }
}
