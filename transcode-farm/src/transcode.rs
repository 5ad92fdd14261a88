//! The async glue of a transcode: probe, encode into a staging folder,
//! measure, write manifests, verify, then move the folder into place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::check::check_output;
use crate::cmaf::{self, MediaSegment};
use crate::config::LadderConfig;
use crate::error::TranscodeError;
use crate::ffmpeg::progress::{Progress, ProgressParser};
use crate::ffmpeg::{self, AUDIO_DIR, AUDIO_NAME, FFMPEG_PLAYLIST, INIT_NAME};
use crate::ladder::{self, Plan};
use crate::manifest::{self, Presentation, Track};
use crate::probe::{self, ProbeProblem, SourceInfo};
use crate::process::{self, Tool};
use crate::report::{self, Report};
use crate::verify::verify_output;

/// Makes staging names unique within this process.
static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// Transcodes `input` into an HLS + DASH ladder in `out_dir`.
///
/// The output is built in a hidden sibling folder and renamed to `out_dir`
/// only after [`verify_output`] passed, so a half-finished transcode never
/// looks finished. An existing `out_dir` is replaced. Progress is reported
/// as `tracing` events; use [`transcode_with_progress`] for a callback.
pub async fn transcode(
    input: &Path,
    out_dir: &Path,
    cfg: &LadderConfig,
) -> Result<Report, TranscodeError> {
    transcode_with_progress(input, out_dir, cfg, |_| {}).await
}

/// [`transcode`], calling `on_progress` after each ffmpeg progress report
/// (about twice a second) and once more when encoding ends.
pub async fn transcode_with_progress(
    input: &Path,
    out_dir: &Path,
    cfg: &LadderConfig,
    mut on_progress: impl FnMut(Progress) + Send,
) -> Result<Report, TranscodeError> {
    cfg.validate()?;
    let input = open_input(input).await?;
    let source = probe_input(&input, cfg).await?;
    let plan = ladder::plan(&source, cfg)?;
    tracing::info!(
        input = %input.display(),
        source = %format!("{}x{}@{}", source.width, source.height, source.fps.to_ffmpeg()),
        renditions = ?plan.video.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        audio = plan.audio,
        "transcode starting"
    );
    let mut staging = Staging::create(out_dir).await?;
    match produce(&input, &staging.path, &source, &plan, cfg, &mut on_progress).await {
        Ok(report) => {
            staging.publish(out_dir).await?;
            tracing::info!(out_dir = %out_dir.display(), "transcode finished");
            Ok(report)
        }
        Err(e) => {
            staging.discard().await;
            Err(e)
        }
    }
}

/// Writes the demo asset: testsrc2 1280x720 at 30 fps with a 1 kHz tone at
/// the configured audio rate, `seconds` long, in a fast-start MP4.
pub async fn make_test_pattern(
    out_file: &Path,
    seconds: u32,
    cfg: &LadderConfig,
) -> Result<(), TranscodeError> {
    cfg.validate()?;
    if seconds == 0 {
        return Err(crate::config::ConfigError {
            problems: vec![crate::config::ConfigProblem {
                field: "seconds".to_owned(),
                message: "must be at least 1".to_owned(),
            }],
        }
        .into());
    }
    let (parent, name) = split_target(out_file)?;
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(TranscodeError::io(&parent))?;
    let tmp = parent.join(format!(
        ".{name}.partial-{}-{}",
        std::process::id(),
        next_seq()
    ));
    let args = ffmpeg::test_pattern_args(&tmp, seconds, cfg);
    let run = process::run(Tool::Ffmpeg, &cfg.ffmpeg, &args, None, |_| {}).await;
    let result = match run {
        Ok(done) if done.status.success() => tokio::fs::rename(&tmp, out_file)
            .await
            .map_err(TranscodeError::io(out_file)),
        Ok(done) => Err(done.failure(Tool::Ffmpeg)),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

pub(crate) async fn open_input(input: &Path) -> Result<PathBuf, TranscodeError> {
    let input_err = |source| TranscodeError::Input {
        path: input.to_path_buf(),
        source,
    };
    // Absolute, because ffmpeg runs inside the staging folder.
    let path = tokio::fs::canonicalize(input).await.map_err(input_err)?;
    let meta = tokio::fs::metadata(&path).await.map_err(input_err)?;
    if !meta.is_file() {
        return Err(TranscodeError::NotVideo {
            path,
            reason: "it is not a regular file".to_owned(),
        });
    }
    if meta.len() == 0 {
        return Err(TranscodeError::NotVideo {
            path,
            reason: "the file is empty".to_owned(),
        });
    }
    Ok(path)
}

/// What walking the top-level boxes of the input found.
enum BoxWalk {
    /// Not an MP4/MOV file; nothing to say.
    NotMp4,
    /// An MP4/MOV file whose top-level boxes fit the file.
    Complete,
    /// An MP4/MOV file cut off inside a box.
    Overrun(String),
}

/// Most top-level boxes looked at; real files have a handful.
const MAX_TOP_LEVEL_BOXES: usize = 4096;

/// Walks the top-level boxes of an MP4/MOV input: an upload cut off
/// mid-file leaves a box (usually `mdat`) claiming more bytes than exist.
async fn walk_mp4_boxes(input: &Path) -> Result<BoxWalk, TranscodeError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let input_err = |source| TranscodeError::Input {
        path: input.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(input).await.map_err(input_err)?;
    let len = file.metadata().await.map_err(input_err)?.len();
    let mut offset = 0u64;
    for i in 0..MAX_TOP_LEVEL_BOXES {
        if offset >= len {
            break;
        }
        let mut head = [0u8; 16];
        let want = usize::try_from((len - offset).min(16)).unwrap_or(16);
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(input_err)?;
        file.read_exact(&mut head[..want])
            .await
            .map_err(input_err)?;
        let Some(header) = probe::box_header(&head[..want]) else {
            return Ok(if i == 0 {
                BoxWalk::NotMp4
            } else {
                BoxWalk::Overrun(format!(
                    "the data at byte {offset} is not a complete MP4 box header"
                ))
            });
        };
        if i == 0 && !header.starts_mp4() {
            return Ok(BoxWalk::NotMp4);
        }
        let Some(size) = header.size else {
            break;
        };
        let end = offset.saturating_add(size);
        if end > len {
            return Ok(BoxWalk::Overrun(format!(
                "its '{}' box needs {size} bytes but the file ends {} bytes into it",
                header.kind_str(),
                len - offset
            )));
        }
        offset = end;
    }
    Ok(BoxWalk::Complete)
}

pub(crate) async fn probe_input(
    input: &Path,
    cfg: &LadderConfig,
) -> Result<SourceInfo, TranscodeError> {
    let walk = walk_mp4_boxes(input).await?;
    if let BoxWalk::Overrun(detail) = walk {
        return Err(TranscodeError::Truncated {
            path: input.to_path_buf(),
            detail: format!("{detail}; the upload was probably cut off"),
        });
    }
    let mut json = Vec::new();
    let done = process::run(
        Tool::Ffprobe,
        &cfg.ffprobe,
        &ffmpeg::probe_args(input),
        None,
        |line| {
            json.extend_from_slice(line.as_bytes());
            json.push(b'\n');
        },
    )
    .await?;
    if !done.status.success() {
        if matches!(walk, BoxWalk::Complete) && done.stderr_tail.contains("moov atom not found") {
            return Err(TranscodeError::Truncated {
                path: input.to_path_buf(),
                detail: "the MP4 index (moov box) is missing, so the file was most likely cut off \
                         before its end, e.g. by an interrupted upload"
                    .to_owned(),
            });
        }
        let last = done
            .stderr_tail
            .lines()
            .last()
            .unwrap_or("unknown format")
            .to_owned();
        return Err(TranscodeError::NotVideo {
            path: input.to_path_buf(),
            reason: format!("ffprobe cannot read it ({last})"),
        });
    }
    probe::parse_probe(&json).map_err(|problem| match problem {
        ProbeProblem::NoVideo => TranscodeError::NotVideo {
            path: input.to_path_buf(),
            reason: "it has no video stream".to_owned(),
        },
        ProbeProblem::NoSize => TranscodeError::NotVideo {
            path: input.to_path_buf(),
            reason: "its video stream has no picture size".to_owned(),
        },
        ProbeProblem::Json(e) => TranscodeError::ToolFailed {
            tool: Tool::Ffprobe.name(),
            status: "unreadable JSON output".to_owned(),
            stderr_tail: e,
        },
    })
}

/// Everything between "staging folder exists" and "verified".
async fn produce(
    input: &Path,
    staging: &Path,
    source: &SourceInfo,
    plan: &Plan,
    cfg: &LadderConfig,
    on_progress: &mut (impl FnMut(Progress) + Send),
) -> Result<Report, TranscodeError> {
    let mut dirs: Vec<(String, String)> = plan
        .video
        .iter()
        .map(|v| (v.name.clone(), ffmpeg::video_dir(&v.name)))
        .collect();
    if plan.audio {
        dirs.push((AUDIO_NAME.to_owned(), AUDIO_DIR.to_owned()));
    }
    for (_, dir) in &dirs {
        let path = staging.join(dir);
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(TranscodeError::io(&path))?;
    }

    encode(input, staging, source, plan, cfg, on_progress).await?;

    let mut tracks = Vec::with_capacity(dirs.len());
    for (name, dir) in &dirs {
        tracks.push(measure(staging, name, dir).await?);
    }
    let audio = if plan.audio { tracks.pop() } else { None };
    check_output(input, source, plan, &tracks, audio.as_ref())?;

    let presentation = Presentation {
        video: tracks,
        audio,
        audio_language: source.audio_language.clone(),
    };
    for (rel, contents) in manifest::render(&presentation) {
        let path = staging.join(&rel);
        tokio::fs::write(&path, contents)
            .await
            .map_err(TranscodeError::io(&path))?;
    }
    let dir = staging.to_path_buf();
    let verified = tokio::task::spawn_blocking(move || verify_output(&dir))
        .await
        .map_err(|e| TranscodeError::io(staging)(std::io::Error::other(e)))??;
    Ok(report::build(
        source,
        plan,
        &presentation,
        cfg.audio.bitrate_kbps,
        verified,
    ))
}

/// Runs the one ffmpeg process of the ladder, forwarding progress.
async fn encode(
    input: &Path,
    staging: &Path,
    source: &SourceInfo,
    plan: &Plan,
    cfg: &LadderConfig,
    on_progress: &mut (impl FnMut(Progress) + Send),
) -> Result<(), TranscodeError> {
    let total = source
        .duration_secs
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    let mut parser = ProgressParser::new(total);
    let mut logged_tenth = 0u32;
    let args = ffmpeg::ladder_args(input, plan, cfg);
    let done = process::run(Tool::Ffmpeg, &cfg.ffmpeg, &args, Some(staging), |line| {
        let Some(p) = parser.line(line) else {
            return;
        };
        if let Some(f) = p.fraction() {
            // Ten info events per transcode; every report at debug level.
            let tenth = (f * 10.0) as u32;
            if tenth > logged_tenth {
                logged_tenth = tenth;
                tracing::info!(
                    percent = tenth * 10,
                    encoded_secs = p.encoded.as_secs_f64(),
                    "transcoding"
                );
            }
        }
        tracing::debug!(
            encoded_secs = p.encoded.as_secs_f64(),
            finished = p.finished,
            "ffmpeg progress"
        );
        on_progress(p);
    })
    .await?;
    if done.status.success() {
        return Ok(());
    }
    // With -xerror, a read past the end of a cut-off file stops ffmpeg here.
    if done.stderr_tail.contains("partial file") {
        let at = parser.encoded().as_secs_f64();
        let of = total.map_or_else(
            || "unknown".to_owned(),
            |t| format!("{:.2} s", t.as_secs_f64()),
        );
        return Err(TranscodeError::Truncated {
            path: input.to_path_buf(),
            detail: format!("the data ends after {at:.2} s of the declared {of}"),
        });
    }
    Err(done.failure(Tool::Ffmpeg))
}

/// Reads one rendition folder: removes ffmpeg's playlist, checks the file
/// names, and measures the init and every media segment.
pub(crate) async fn measure(
    staging: &Path,
    name: &str,
    dir: &str,
) -> Result<Track, TranscodeError> {
    let folder = staging.join(dir);
    match tokio::fs::remove_file(folder.join(FFMPEG_PLAYLIST)).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TranscodeError::io(folder.join(FFMPEG_PLAYLIST))(e)),
    }
    let bad = |reason: String| TranscodeError::Output {
        rendition: name.to_owned(),
        reason,
    };
    let mut numbers = Vec::new();
    let mut has_init = false;
    let mut entries = tokio::fs::read_dir(&folder)
        .await
        .map_err(TranscodeError::io(&folder))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(TranscodeError::io(&folder))?
    {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name == INIT_NAME {
            has_init = true;
        } else if let Some(n) = ffmpeg::segment_number(&file_name) {
            numbers.push(n);
        } else {
            return Err(bad(format!("unexpected file {dir}/{file_name}")));
        }
    }
    numbers.sort_unstable();
    if !has_init {
        return Err(bad(format!("no {dir}/{INIT_NAME}")));
    }
    if numbers.is_empty() {
        return Err(bad(format!("no media segments in {dir}")));
    }
    if numbers.iter().enumerate().any(|(i, &n)| n != i + 1) {
        return Err(bad(format!(
            "segment numbers in {dir} do not run 1..={}",
            numbers.len()
        )));
    }

    let init_path = folder.join(INIT_NAME);
    let init_bytes = tokio::fs::read(&init_path)
        .await
        .map_err(TranscodeError::io(&init_path))?;
    let init = cmaf::parse_init(&init_bytes).map_err(|source| TranscodeError::Cmaf {
        path: init_path.clone(),
        source,
    })?;
    let mut segments: Vec<MediaSegment> = Vec::with_capacity(numbers.len());
    for n in numbers {
        let path = folder.join(ffmpeg::segment_name(n));
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(TranscodeError::io(&path))?;
        let seg = cmaf::parse_segment(&bytes, &init)
            .map_err(|source| TranscodeError::Cmaf { path, source })?;
        segments.push(seg);
    }
    Ok(Track {
        name: name.to_owned(),
        dir: dir.to_owned(),
        init,
        segments,
    })
}

fn next_seq() -> u64 {
    STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Parent folder and final name of `target`.
fn split_target(target: &Path) -> Result<(PathBuf, String), TranscodeError> {
    let name = target
        .file_name()
        .ok_or_else(|| TranscodeError::OutputPath {
            path: target.to_path_buf(),
            reason: "it has no final component",
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// A hidden sibling of the output folder that becomes the output at the end.
///
/// If the transcode future is dropped half-way, the folder is removed in the
/// background (and ffmpeg is killed by `kill_on_drop`).
struct Staging {
    path: PathBuf,
    parent: PathBuf,
    name: String,
    /// Cleared once the folder was published or removed.
    armed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let path = std::mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = tokio::fs::remove_dir_all(&path).await;
                });
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

impl Staging {
    async fn create(out_dir: &Path) -> Result<Self, TranscodeError> {
        let (parent, name) = split_target(out_dir)?;
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(TranscodeError::io(&parent))?;
        loop {
            let path = parent.join(format!(
                ".{name}.partial-{}-{}",
                std::process::id(),
                next_seq()
            ));
            match tokio::fs::create_dir(&path).await {
                Ok(()) => {
                    return Ok(Self {
                        path,
                        parent,
                        name,
                        armed: true,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(TranscodeError::io(&path)(e)),
            }
        }
    }

    /// Moves the staging folder to `out_dir`, replacing an older output.
    async fn publish(mut self, out_dir: &Path) -> Result<(), TranscodeError> {
        let old = match tokio::fs::symlink_metadata(out_dir).await {
            Ok(_) => {
                let old = self.parent.join(format!(
                    ".{}.old-{}-{}",
                    self.name,
                    std::process::id(),
                    next_seq()
                ));
                if let Err(e) = tokio::fs::rename(out_dir, &old).await {
                    self.discard().await;
                    return Err(TranscodeError::io(out_dir)(e));
                }
                Some(old)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.discard().await;
                return Err(TranscodeError::io(out_dir)(e));
            }
        };
        if let Err(e) = tokio::fs::rename(&self.path, out_dir).await {
            // Put the previous output back rather than leave nothing.
            if let Some(old) = &old {
                let _ = tokio::fs::rename(old, out_dir).await;
            }
            self.discard().await;
            return Err(TranscodeError::io(out_dir)(e));
        }
        self.armed = false;
        if let Some(old) = old
            && let Err(e) = tokio::fs::remove_dir_all(&old).await
        {
            tracing::warn!(path = %old.display(), error = %e, "could not remove the replaced output");
        }
        Ok(())
    }

    async fn discard(&mut self) {
        self.armed = false;
        if let Err(e) = tokio::fs::remove_dir_all(&self.path).await {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the staging folder");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// A farm runs jobs on a multi-threaded runtime, so the job futures must be `Send`.
    #[test]
    fn futures_are_send() {
        let cfg = LadderConfig::default();
        let job = transcode_with_progress(Path::new("in"), Path::new("out"), &cfg, |_| {});
        assert_send(&job);
        let pattern = make_test_pattern(Path::new("p.mp4"), 1, &cfg);
        assert_send(&pattern);
    }

    #[test]
    fn targets_split_into_parent_and_name() {
        let (parent, name) = split_target(Path::new("out/demo")).unwrap();
        assert_eq!(
            (parent.as_path(), name.as_str()),
            (Path::new("out"), "demo")
        );
        let (parent, _) = split_target(Path::new("demo")).unwrap();
        assert_eq!(parent, Path::new("."));
        assert!(matches!(
            split_target(Path::new("/")),
            Err(TranscodeError::OutputPath { .. })
        ));
        assert!(matches!(
            split_target(Path::new("a/..")),
            Err(TranscodeError::OutputPath { .. })
        ));
    }
}
