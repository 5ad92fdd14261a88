//! Segment-parallel transcoding: the same ladder as [`crate::transcode`], cut into parts
//! that any worker can encode on its own and stitched into one timeline.
//!
//! [`prepare`] probes the source once and fixes everything the parts must agree on (the
//! plan, the segment grid, the runs); the result is serialisable so that every worker
//! encodes with the same settings whatever its own configuration. [`encode_part`] makes
//! one part in a folder: the audio (encoded once, whole) or one run of whole video
//! segments, renumbered and moved to their place in the whole timeline. [`assemble`] joins
//! the measurements of every part, checks that the timeline is continuous and complete,
//! writes the manifests and verifies them with the independent parsers of [`crate::verify`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::check_output;
use crate::cmaf::{self, InitSegment, MediaSegment};
use crate::config::LadderConfig;
use crate::error::TranscodeError;
use crate::ffmpeg::progress::{Progress, ProgressParser};
use crate::ffmpeg::{self, AUDIO_DIR, AUDIO_NAME, INIT_NAME};
use crate::ladder::{self, Plan};
use crate::manifest::{self, Presentation, Track};
use crate::probe::SourceInfo;
use crate::process::{self, Tool};
use crate::report::{self, Report};
use crate::split::{self, Grid, VideoRun};
use crate::transcode::{measure, open_input, probe_input};
use crate::verify::verify_listing;

/// What every part of one job must agree on: fixed once, by [`prepare`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    source: SourceInfo,
    plan: Plan,
    /// The segment grid.
    pub grid: Grid,
    /// The video runs, in order.
    pub runs: Vec<VideoRun>,
    audio_kbps: u32,
}

/// One independently encoded part of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The audio rendition, whole.
    Audio,
    /// Video run `n` of every video rendition.
    Video(u32),
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Audio => f.write_str("audio"),
            Self::Video(n) => write!(f, "video run {n}"),
        }
    }
}

/// What encoding one part produced, relative to its folder: enough to stitch and publish
/// it without reading its segments again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartOutput {
    /// One per rendition the part made.
    pub tracks: Vec<TrackOutput>,
    /// Seconds of media encoded.
    pub media_secs: f64,
}

/// One rendition's files in a part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackOutput {
    /// `720p`, `aac`.
    pub name: String,
    /// `video/720p`, `audio/aac`.
    pub dir: String,
    /// SHA-256 of its `init.mp4`, hex: every run of a rendition must make the same one.
    pub init_sha256: String,
    /// Its media segments, in order.
    pub segments: Vec<SegmentFacts>,
}

/// One media segment as measured after it was moved into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFacts {
    /// 1-based number in the whole output (`seg-NNNNN.m4s`).
    pub number: u64,
    /// `tfdt` in the whole timeline, in timescale ticks.
    pub tfdt: u64,
    /// Duration in ticks.
    pub duration: u64,
    /// Samples (frames).
    pub samples: u64,
    /// Bytes.
    pub size: u64,
}

impl TrackOutput {
    /// Paths of its files relative to the output root, with their sizes (the init's size
    /// is not measured here: pass it in).
    pub fn files(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(format!("{}/{INIT_NAME}", self.dir)).chain(self.segments.iter().map(|s| {
            format!(
                "{}/{}",
                self.dir,
                ffmpeg::segment_name(usize::try_from(s.number).unwrap_or(usize::MAX))
            )
        }))
    }
}

impl Prepared {
    /// Every part of the job: the audio first (one long run), then the video runs.
    pub fn parts(&self) -> Vec<Part> {
        let audio = self.plan.audio.then_some(Part::Audio);
        audio
            .into_iter()
            .chain(self.runs.iter().map(|r| Part::Video(r.index)))
            .collect()
    }

    /// Video segments of the whole output as planned (the last run's count is an estimate).
    pub fn planned_segments(&self) -> u64 {
        let expected = self.expected_frames().unwrap_or(0);
        self.grid.segments(expected).max(1)
    }

    fn expected_frames(&self) -> Option<u64> {
        self.source
            .duration_secs
            .filter(|d| d.is_finite() && *d > 0.0)
            .map(|d| (d * self.grid.fps()).round() as u64)
    }

    /// The source's duration, when it declares one.
    pub fn duration_secs(&self) -> Option<f64> {
        self.source.duration_secs
    }

    /// Media seconds a part covers (estimated for the last run and the audio).
    pub fn part_secs(&self, part: Part) -> f64 {
        let whole = self.duration_secs().unwrap_or(0.0);
        match part {
            Part::Audio => whole,
            Part::Video(n) => match self.runs.get(n as usize) {
                Some(VideoRun {
                    frames: Some(f), ..
                }) => *f as f64 / self.grid.fps(),
                Some(r) => (whole - self.grid.frame_secs(r.start_frame)).max(0.0),
                None => 0.0,
            },
        }
    }

    /// A one-line description for logs and job records: `1920x1080@30/1, 5 renditions, audio`.
    pub fn summary(&self) -> String {
        format!(
            "{}x{}@{}, {} video renditions ({}), {}",
            self.source.width,
            self.source.height,
            self.source.fps.to_ffmpeg(),
            self.plan.video.len(),
            self.plan
                .video
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if self.plan.audio { "audio" } else { "no audio" }
        )
    }
}

/// Probes `input` and fixes the plan, the grid and the runs of `segments_per_task`
/// segments. Fails on what no retry can mend: not a video, truncated, too small.
pub async fn prepare(
    input: &Path,
    cfg: &LadderConfig,
    segments_per_task: u64,
) -> Result<Prepared, TranscodeError> {
    cfg.validate()?;
    let input = open_input(input).await?;
    let source = probe_input(&input, cfg).await?;
    let plan = ladder::plan(&source, cfg)?;
    let grid = Grid {
        fps_num: plan.fps.num,
        fps_den: plan.fps.den,
        segment_millis: plan.segment.as_millis(),
    };
    let mut prepared = Prepared {
        source,
        plan,
        grid,
        runs: Vec::new(),
        audio_kbps: cfg.audio.bitrate_kbps,
    };
    prepared.runs = split::split(&grid, prepared.expected_frames(), segments_per_task);
    Ok(prepared)
}

/// Encodes `part` of `prepared` from `input` into `out_dir` (created; it should be empty),
/// with segments named and timed as in the whole output. `on_progress` gets ffmpeg's
/// reports. Dropping the future kills ffmpeg.
pub async fn encode_part(
    input: &Path,
    prepared: &Prepared,
    part: Part,
    cfg: &LadderConfig,
    out_dir: &Path,
    mut on_progress: impl FnMut(Progress) + Send,
) -> Result<PartOutput, TranscodeError> {
    let input = open_input(input).await?;
    let plan = &prepared.plan;
    let (args, dirs, run) = match part {
        Part::Audio => {
            if !plan.audio {
                return Err(TranscodeError::Output {
                    rendition: AUDIO_NAME.to_owned(),
                    reason: "the source has no audio".to_owned(),
                });
            }
            (
                ffmpeg::audio_args(&input, plan, cfg),
                vec![(AUDIO_NAME.to_owned(), AUDIO_DIR.to_owned())],
                None,
            )
        }
        Part::Video(n) => {
            let run = prepared
                .runs
                .get(n as usize)
                .ok_or(TranscodeError::Output {
                    rendition: "video".to_owned(),
                    reason: format!("no video run {n} in this job"),
                })?;
            (
                ffmpeg::video_run_args(&input, plan, cfg, &prepared.grid, run),
                plan.video
                    .iter()
                    .map(|v| (v.name.clone(), ffmpeg::video_dir(&v.name)))
                    .collect(),
                Some(run),
            )
        }
    };
    for (_, dir) in &dirs {
        let path = out_dir.join(dir);
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(TranscodeError::io(&path))?;
    }
    let secs = prepared.part_secs(part);
    let mut parser = ProgressParser::new(Duration::try_from_secs_f64(secs).ok());
    let done = process::run(Tool::Ffmpeg, &cfg.ffmpeg, &args, Some(out_dir), |line| {
        if let Some(p) = parser.line(line) {
            on_progress(p);
        }
    })
    .await?;
    if !done.status.success() {
        if done.stderr_tail.contains("partial file") {
            return Err(TranscodeError::Truncated {
                path: input.clone(),
                detail: format!(
                    "{part}: the data ends after {:.2} s",
                    parser.encoded().as_secs_f64()
                ),
            });
        }
        return Err(done.failure(Tool::Ffmpeg));
    }
    let mut tracks = Vec::with_capacity(dirs.len());
    let mut media_secs = 0.0f64;
    for (name, dir) in &dirs {
        let track = measure(out_dir, name, dir).await?;
        if let Some(run) = run {
            check_run(&input, &track, run, part)?;
        }
        let out = place(out_dir, &track, run, &prepared.grid).await?;
        media_secs = media_secs.max(track.duration_secs());
        tracks.push(out);
    }
    Ok(PartOutput { tracks, media_secs })
}

/// A run that is not the last must make exactly its frames in exactly its segments, each
/// starting on a keyframe; fewer frames mean the source ended early.
fn check_run(
    input: &Path,
    track: &Track,
    run: &VideoRun,
    part: Part,
) -> Result<(), TranscodeError> {
    let bad = |reason: String| TranscodeError::Output {
        rendition: track.name.clone(),
        reason: format!("{part}: {reason}"),
    };
    if let Some(i) = track
        .segments
        .iter()
        .position(|s| !s.starts_with_sync_sample)
    {
        return Err(bad(format!(
            "segment {} does not start with a keyframe",
            i + 1
        )));
    }
    let frames: u64 = track.segments.iter().map(|s| s.sample_count).sum();
    if let Some(want) = run.frames {
        if frames < want {
            return Err(TranscodeError::Truncated {
                path: input.to_path_buf(),
                detail: format!(
                    "{part} decoded {frames} of its {want} frames: the source ends before its declared duration"
                ),
            });
        }
        if frames != want {
            return Err(bad(format!("{frames} frames, planned {want}")));
        }
    }
    if let Some(want) = run.segments
        && track.segments.len() as u64 != want
    {
        return Err(bad(format!(
            "{} segments, planned {want}: keyframes are not on the grid",
            track.segments.len()
        )));
    }
    Ok(())
}

/// Renames a part's segments to their numbers in the whole output and moves their decode
/// times by the run's start, then measures what was written.
async fn place(
    out_dir: &Path,
    track: &Track,
    run: Option<&VideoRun>,
    grid: &Grid,
) -> Result<TrackOutput, TranscodeError> {
    let folder = out_dir.join(&track.dir);
    let (first, delta) = match run {
        None => (0, 0),
        Some(r) => (
            r.first_segment,
            start_ticks(&track.init, grid, r.start_frame)?,
        ),
    };
    let init_path = folder.join(INIT_NAME);
    let init_bytes = tokio::fs::read(&init_path)
        .await
        .map_err(TranscodeError::io(&init_path))?;
    let init_sha256 = hex(ring::digest::digest(&ring::digest::SHA256, &init_bytes).as_ref());
    let mut facts = Vec::with_capacity(track.segments.len());
    // Highest first, so that a new name is never one still to be renamed.
    for (i, seg) in track.segments.iter().enumerate().rev() {
        let local = ffmpeg::segment_name(i + 1);
        let number = first + i as u64 + 1;
        let global = ffmpeg::segment_name(usize::try_from(number).unwrap_or(usize::MAX));
        let from = folder.join(&local);
        let to = folder.join(&global);
        if delta != 0 || local != global {
            let mut bytes = tokio::fs::read(&from)
                .await
                .map_err(TranscodeError::io(&from))?;
            let seq = u32::try_from(number).unwrap_or(u32::MAX);
            cmaf::shift_segment(&mut bytes, delta, seq).map_err(|source| TranscodeError::Cmaf {
                path: from.clone(),
                source,
            })?;
            tokio::fs::write(&to, &bytes)
                .await
                .map_err(TranscodeError::io(&to))?;
            if from != to {
                tokio::fs::remove_file(&from)
                    .await
                    .map_err(TranscodeError::io(&from))?;
            }
        }
        facts.push(SegmentFacts {
            number,
            tfdt: seg.base_media_decode_time + delta,
            duration: seg.duration,
            samples: seg.sample_count,
            size: seg.size,
        });
    }
    facts.reverse();
    Ok(TrackOutput {
        name: track.name.clone(),
        dir: track.dir.clone(),
        init_sha256,
        segments: facts,
    })
}

/// The decode time of frame `frame` in `init`'s timescale; it must be a whole number of
/// ticks, or the stitched timeline would drift.
fn start_ticks(init: &InitSegment, grid: &Grid, frame: u64) -> Result<u64, TranscodeError> {
    let num = u128::from(frame) * u128::from(init.timescale) * u128::from(grid.fps_den);
    let den = u128::from(grid.fps_num);
    if num % den != 0 {
        return Err(TranscodeError::Output {
            rendition: "video".to_owned(),
            reason: format!(
                "a frame at {}/{} fps is not a whole number of ticks of timescale {}",
                grid.fps_num, grid.fps_den, init.timescale
            ),
        });
    }
    u64::try_from(num / den).map_err(|_| TranscodeError::Output {
        rendition: "video".to_owned(),
        reason: "decode time overflows".to_owned(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A whole output, joined from its parts and checked, ready to be written out.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// Manifests by path relative to the output root, with their text. Written last.
    pub manifests: BTreeMap<String, String>,
    /// Every init and media segment by path relative to the output root, with its size.
    pub media: BTreeMap<String, u64>,
    /// Which part made each media file.
    pub made_by: BTreeMap<String, Part>,
    /// What was made.
    pub report: Report,
}

/// Joins the outputs of every part of `prepared` (all of them, any order) into one
/// output. `inits` holds each rendition's init segment by folder (`video/720p`), `sizes`
/// the size of each init. Checks that every run of a rendition made the same init
/// segment, that segment numbers run 1..=N with a continuous `tfdt`, and everything
/// [`crate::transcode`] checks; then renders the manifests and verifies them.
pub fn assemble(
    prepared: &Prepared,
    parts: &BTreeMap<Part, PartOutput>,
    inits: &BTreeMap<String, (InitSegment, u64)>,
    source_name: &Path,
) -> Result<Assembled, TranscodeError> {
    let missing: Vec<String> = prepared
        .parts()
        .into_iter()
        .filter(|p| !parts.contains_key(p))
        .map(|p| p.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(TranscodeError::Output {
            rendition: "all".to_owned(),
            reason: format!("parts not encoded: {}", missing.join(", ")),
        });
    }
    let mut media = BTreeMap::new();
    let mut made_by = BTreeMap::new();
    let mut join = |names: Vec<(String, String)>,
                    which: &mut dyn Iterator<Item = (&Part, &PartOutput)>|
     -> Result<Vec<Track>, TranscodeError> {
        let mut by_dir: BTreeMap<String, (String, Option<String>, Vec<SegmentFacts>)> = names
            .into_iter()
            .map(|(name, dir)| (dir, (name, None, Vec::new())))
            .collect();
        for (part, out) in which {
            for t in &out.tracks {
                let Some((name, sha, segs)) = by_dir.get_mut(&t.dir) else {
                    return Err(TranscodeError::Output {
                        rendition: t.name.clone(),
                        reason: format!("{part} made a rendition the plan does not have"),
                    });
                };
                match sha {
                    Some(s) if *s != t.init_sha256 => {
                        return Err(TranscodeError::Output {
                            rendition: name.clone(),
                            reason: format!(
                                "{part} made a different init segment than the other runs"
                            ),
                        });
                    }
                    _ => *sha = Some(t.init_sha256.clone()),
                }
                for s in &t.segments {
                    let rel = format!(
                        "{}/{}",
                        t.dir,
                        ffmpeg::segment_name(usize::try_from(s.number).unwrap_or(usize::MAX))
                    );
                    media.insert(rel.clone(), s.size);
                    made_by.insert(rel, *part);
                }
                segs.extend_from_slice(&t.segments);
            }
        }
        let mut tracks = Vec::new();
        for (dir, (name, _, mut segs)) in by_dir {
            let (init, init_size) = inits.get(&dir).ok_or_else(|| TranscodeError::Output {
                rendition: name.clone(),
                reason: "no init segment".to_owned(),
            })?;
            media.insert(format!("{dir}/{INIT_NAME}"), *init_size);
            segs.sort_by_key(|s| s.number);
            check_timeline(&name, &segs)?;
            tracks.push(Track {
                name,
                dir,
                init: init.clone(),
                segments: segs
                    .iter()
                    .map(|s| MediaSegment {
                        base_media_decode_time: s.tfdt,
                        duration: s.duration,
                        sample_count: s.samples,
                        starts_with_sync_sample: true,
                        size: s.size,
                    })
                    .collect(),
            });
        }
        Ok(tracks)
    };
    let plan = &prepared.plan;
    let video_names: Vec<(String, String)> = plan
        .video
        .iter()
        .map(|v| (v.name.clone(), ffmpeg::video_dir(&v.name)))
        .collect();
    let mut video = join(
        video_names,
        &mut parts.iter().filter(|(p, _)| matches!(p, Part::Video(_))),
    )?;
    // In plan order (highest first), as the manifests list them.
    video.sort_by_key(|t| plan.video.iter().position(|v| v.name == t.name));
    let audio = if plan.audio {
        join(
            vec![(AUDIO_NAME.to_owned(), AUDIO_DIR.to_owned())],
            &mut parts.iter().filter(|(p, _)| **p == Part::Audio),
        )?
        .pop()
    } else {
        None
    };
    check_output(source_name, &prepared.source, plan, &video, audio.as_ref())?;
    let presentation = Presentation {
        video,
        audio,
        audio_language: prepared.source.audio_language.clone(),
    };
    let manifests: BTreeMap<String, String> = manifest::render(&presentation).into_iter().collect();
    let verified = verify_listing(&manifests, &media)?;
    let report = report::build(
        &prepared.source,
        plan,
        &presentation,
        prepared.audio_kbps,
        verified,
    );
    Ok(Assembled {
        manifests,
        media,
        made_by,
        report,
    })
}

/// Numbers 1..=N, each segment starting where the one before ended.
fn check_timeline(name: &str, segs: &[SegmentFacts]) -> Result<(), TranscodeError> {
    let bad = |reason: String| TranscodeError::Output {
        rendition: name.to_owned(),
        reason,
    };
    if segs.is_empty() {
        return Err(bad("no media segments".to_owned()));
    }
    for (i, s) in segs.iter().enumerate() {
        if s.number != i as u64 + 1 {
            return Err(bad(format!(
                "segment numbers do not run 1..={}: found {} at position {}",
                segs.len(),
                s.number,
                i + 1
            )));
        }
    }
    for w in segs.windows(2) {
        if w[0].tfdt + w[0].duration != w[1].tfdt {
            return Err(bad(format!(
                "the timeline is not continuous: segment {} ends at tick {}, segment {} starts at {}",
                w[0].number,
                w[0].tfdt + w[0].duration,
                w[1].number,
                w[1].tfdt
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(number: u64, tfdt: u64, duration: u64) -> SegmentFacts {
        SegmentFacts {
            number,
            tfdt,
            duration,
            samples: 96,
            size: 1000,
        }
    }

    #[test]
    fn a_continuous_timeline_passes_and_gaps_or_overlaps_do_not() {
        let ok = [seg(1, 0, 49152), seg(2, 49152, 49152), seg(3, 98304, 100)];
        assert!(check_timeline("720p", &ok).is_ok());
        let gap = [seg(1, 0, 49152), seg(2, 49153, 49152)];
        let err = check_timeline("720p", &gap).unwrap_err().to_string();
        assert!(err.contains("not continuous"), "{err}");
        let overlap = [seg(1, 0, 49152), seg(2, 40000, 49152)];
        assert!(check_timeline("720p", &overlap).is_err());
        let hole = [seg(1, 0, 49152), seg(3, 49152, 49152)];
        assert!(
            check_timeline("720p", &hole)
                .unwrap_err()
                .to_string()
                .contains("do not run")
        );
        assert!(check_timeline("720p", &[]).is_err());
    }
}
