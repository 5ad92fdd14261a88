//! Pure construction of the ffmpeg and ffprobe command lines.
//!
//! One ffmpeg process makes the whole ladder: the decoded video is split in
//! a filter graph, each branch is scaled and fed to its own libx264 encoder
//! and its own `hls` muxer (fMP4 segments), and the audio goes to one more
//! muxer. Paths given to the muxers are relative to the staging directory,
//! which is the process's working directory, so no part of the caller's
//! paths ever reaches ffmpeg's `%d` pattern expansion.

use std::ffi::OsString;
use std::path::Path;

use crate::config::{AudioConfig, LadderConfig};
use crate::ladder::{Plan, PlannedVideo};
use crate::split::{Grid, VideoRun};

pub(crate) mod progress;

/// Name of the playlist the `hls` muxer insists on writing; deleted afterwards.
pub(crate) const FFMPEG_PLAYLIST: &str = "ffmpeg-playlist.m3u8";
/// Init segment name in every rendition folder.
pub(crate) const INIT_NAME: &str = "init.mp4";
/// Media segment pattern in every rendition folder, as ffmpeg expands it.
const SEGMENT_PATTERN: &str = "seg-%05d.m4s";

/// The media segment file name for 1-based `number`.
pub(crate) fn segment_name(number: usize) -> String {
    format!("seg-{number:05}.m4s")
}

/// Parses a media segment file name back to its number.
pub(crate) fn segment_number(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".m4s")?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Folder of a video rendition, relative to the output root.
pub(crate) fn video_dir(name: &str) -> String {
    format!("video/{name}")
}

/// Folder of the audio rendition, relative to the output root.
pub(crate) const AUDIO_DIR: &str = "audio/aac";
/// Name of the audio rendition.
pub(crate) const AUDIO_NAME: &str = "aac";

/// A path handed to ffmpeg as an input or a single output file: the `file:`
/// protocol prefix keeps names with colons from being read as protocols.
fn file_url(path: &Path) -> OsString {
    let mut s = OsString::from("file:");
    s.push(path.as_os_str());
    s
}

fn push_all(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

/// `ffprobe` arguments for `input`.
pub(crate) fn probe_args(input: &Path) -> Vec<OsString> {
    let mut args = Vec::new();
    push_all(
        &mut args,
        &[
            "-hide_banner",
            "-v",
            "error",
            "-of",
            "json",
            "-show_format",
            "-show_streams",
        ],
    );
    args.push(file_url(input));
    args
}

/// `ffmpeg` arguments that encode the whole ladder of `plan`.
///
/// `input` must be absolute: ffmpeg runs inside the staging directory.
pub(crate) fn ladder_args(input: &Path, plan: &Plan, cfg: &LadderConfig) -> Vec<OsString> {
    let seg = plan.segment.ffmpeg_secs();
    let mut args = Vec::new();
    push_all(
        &mut args,
        &[
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            "-progress",
            "pipe:1",
            // Any decode or demux error ends the run: a damaged or cut-off
            // upload must fail instead of publishing a shortened video.
            "-xerror",
            "-i",
        ],
    );
    args.push(file_url(input));

    args.push("-filter_complex".into());
    args.push(filter_graph(plan).into());

    let gop = plan.gop.to_string();
    let force_kf = format!("expr:gte(t,n_forced*{seg})");
    let threads = cfg.threads.map(|t| t.to_string());
    for (i, v) in plan.video.iter().enumerate() {
        let label = format!("[v{i}]");
        let kbps = u64::from(v.bitrate_kbps);
        let b = format!("{kbps}k");
        let maxrate = format!("{}k", kbps * 11 / 10);
        let bufsize = format!("{}k", kbps * 2);
        push_all(
            &mut args,
            &[
                "-map",
                &label,
                "-c:v",
                "libx264",
                "-preset",
                &cfg.x264_preset,
                "-profile:v",
                "high",
                "-b:v",
                &b,
                "-maxrate",
                &maxrate,
                "-bufsize",
                &bufsize,
                "-g",
                &gop,
                "-keyint_min",
                &gop,
                "-sc_threshold",
                "0",
                "-force_key_frames",
                &force_kf,
            ],
        );
        if let Some(t) = &threads {
            push_all(&mut args, &["-threads", t]);
        }
        push_all(&mut args, &["-an", "-sn", "-dn"]);
        push_hls_output(&mut args, &video_dir(&v.name), &seg);
    }
    if plan.audio {
        push_audio(&mut args, &cfg.audio, threads.as_deref());
        push_hls_output(&mut args, AUDIO_DIR, &seg);
    }
    args
}

/// `ffmpeg` arguments that encode one run of whole segments of every video rendition
/// (segment-parallel encoding; see [`crate::split`]).
///
/// The run seeks to half a frame before its first frame, takes exactly its frames with
/// `trim` (the last run takes the rest), forces keyframes on the whole output's segment
/// boundaries and nowhere else (`-g` is twice the GOP, so x264 adds none of its own), and
/// the muxer cuts a segment at every keyframe. No audio: it is encoded once, on its own.
pub(crate) fn video_run_args(
    input: &Path,
    plan: &Plan,
    cfg: &LadderConfig,
    grid: &Grid,
    run: &VideoRun,
) -> Vec<OsString> {
    let mut args = Vec::new();
    push_all(
        &mut args,
        &[
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            "-progress",
            "pipe:1",
            "-xerror",
        ],
    );
    if run.start_frame > 0 {
        let seek = (grid.frame_secs(run.start_frame) - 0.5 / grid.fps()).max(0.0);
        push_all(&mut args, &["-ss", &format!("{seek:.6}")]);
    }
    args.push("-i".into());
    args.push(file_url(input));
    // The run's first frame is its time 0, so the muxer's constant-rate sync has no gap
    // to fill with a duplicate.
    let mut graph = format!("[0:v:0]setpts=PTS-STARTPTS,fps={}", plan.fps.to_ffmpeg());
    if let Some(frames) = run.frames {
        graph.push_str(&format!(",trim=end_frame={frames}"));
    }
    args.push("-filter_complex".into());
    args.push(split_and_scale(graph, plan).into());

    let gop = plan.gop.to_string();
    let keyint = (plan.gop.saturating_mul(2)).to_string();
    let force_kf = grid.keyframe_expr(run);
    let threads = cfg.threads.map(|t| t.to_string());
    for (i, v) in plan.video.iter().enumerate() {
        push_x264(
            &mut args,
            i,
            v,
            cfg,
            &keyint,
            &gop,
            &force_kf,
            threads.as_deref(),
        );
        // Any positive value below a frame: every keyframe starts a segment.
        push_hls_output(&mut args, &video_dir(&v.name), "0.001");
    }
    args
}

/// `ffmpeg` arguments that encode the audio rendition of `plan` alone, for the whole
/// source, cut on the same segment grid as the video.
pub(crate) fn audio_args(input: &Path, plan: &Plan, cfg: &LadderConfig) -> Vec<OsString> {
    let mut args = Vec::new();
    push_all(
        &mut args,
        &[
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            "-progress",
            "pipe:1",
            "-xerror",
            "-i",
        ],
    );
    args.push(file_url(input));
    let threads = cfg.threads.map(|t| t.to_string());
    push_audio(&mut args, &cfg.audio, threads.as_deref());
    push_hls_output(&mut args, AUDIO_DIR, &plan.segment.ffmpeg_secs());
    args
}

/// One libx264 encoder fed by `[v{i}]`.
#[allow(clippy::too_many_arguments)]
fn push_x264(
    args: &mut Vec<OsString>,
    i: usize,
    v: &PlannedVideo,
    cfg: &LadderConfig,
    keyint: &str,
    keyint_min: &str,
    force_kf: &str,
    threads: Option<&str>,
) {
    let label = format!("[v{i}]");
    let kbps = u64::from(v.bitrate_kbps);
    let b = format!("{kbps}k");
    let maxrate = format!("{}k", kbps * 11 / 10);
    let bufsize = format!("{}k", kbps * 2);
    push_all(
        args,
        &[
            "-map",
            &label,
            "-c:v",
            "libx264",
            "-preset",
            &cfg.x264_preset,
            "-profile:v",
            "high",
            "-b:v",
            &b,
            "-maxrate",
            &maxrate,
            "-bufsize",
            &bufsize,
            "-g",
            keyint,
            "-keyint_min",
            keyint_min,
            "-sc_threshold",
            "0",
            "-force_key_frames",
            force_kf,
        ],
    );
    if let Some(t) = threads {
        push_all(args, &["-threads", t]);
    }
    push_all(args, &["-an", "-sn", "-dn"]);
}

/// `head` (a chain ending in decoded frames), then `split` and per rendition `scale,
/// setsar, format`.
fn split_and_scale(mut g: String, plan: &Plan) -> String {
    let n = plan.video.len();
    g.push_str(&format!(",split={n}"));
    for i in 0..n {
        g.push_str(&format!("[s{i}]"));
    }
    for (i, v) in plan.video.iter().enumerate() {
        g.push_str(&format!(
            ";[s{i}]scale={}:{},setsar=1,format=yuv420p[v{i}]",
            v.width, v.height
        ));
    }
    g
}

/// `[0:v:0] fps, split` then per rendition `scale, setsar, format`.
fn filter_graph(plan: &Plan) -> String {
    let n = plan.video.len();
    let mut g = format!("[0:v:0]fps={},split={n}", plan.fps.to_ffmpeg());
    for i in 0..n {
        g.push_str(&format!("[s{i}]"));
    }
    for (i, v) in plan.video.iter().enumerate() {
        g.push_str(&format!(
            ";[s{i}]scale={}:{},setsar=1,format=yuv420p[v{i}]",
            v.width, v.height
        ));
    }
    g
}

fn push_audio(args: &mut Vec<OsString>, audio: &AudioConfig, threads: Option<&str>) {
    let b = format!("{}k", audio.bitrate_kbps);
    let ar = audio.sample_rate_hz.to_string();
    let ac = audio.channels.to_string();
    push_all(
        args,
        &[
            "-map",
            "0:a:0",
            "-c:a",
            "aac",
            "-profile:a",
            "aac_low",
            "-b:a",
            &b,
            "-ar",
            &ar,
            "-ac",
            &ac,
        ],
    );
    if let Some(t) = threads {
        push_all(args, &["-threads", t]);
    }
    push_all(args, &["-vn", "-sn", "-dn"]);
}

/// One `hls` muxer writing fMP4 into `dir` (relative to the working directory).
fn push_hls_output(args: &mut Vec<OsString>, dir: &str, seg: &str) {
    let segments = format!("{dir}/{SEGMENT_PATTERN}");
    let playlist = format!("{dir}/{FFMPEG_PLAYLIST}");
    push_all(
        args,
        &[
            // Keep the source's tags (titles, locations, creation dates) out of the output.
            "-map_metadata",
            "-1",
            "-f",
            "hls",
            "-hls_time",
            seg,
            "-hls_playlist_type",
            "vod",
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            INIT_NAME,
            // B-frames delay the first picture by two frames. With signed
            // composition offsets (trun version 1) and no edit list, the
            // first picture starts at tfdt 0 like the audio, for every
            // player, including those that ignore edit lists.
            "-hls_segment_options",
            "movflags=+negative_cts_offsets:use_editlist=0",
            "-start_number",
            "1",
            "-hls_segment_filename",
            &segments,
            &playlist,
        ],
    );
}

/// Arguments for the demo test pattern: testsrc2 1280x720 at 30 fps with a
/// 1 kHz tone at 48 kHz, `seconds` long, in a fast-start MP4.
pub(crate) fn test_pattern_args(
    out_file: &Path,
    seconds: u32,
    cfg: &LadderConfig,
) -> Vec<OsString> {
    let secs = seconds.to_string();
    let ar = cfg.audio.sample_rate_hz.to_string();
    let ac = cfg.audio.channels.to_string();
    let b = format!("{}k", cfg.audio.bitrate_kbps);
    let mut args = Vec::new();
    push_all(
        &mut args,
        &[
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
        ],
    );
    args.push(format!("sine=frequency=1000:sample_rate={ar}").into());
    push_all(
        &mut args,
        &[
            "-t",
            &secs,
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            &cfg.x264_preset,
            "-profile:v",
            "high",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "60",
        ],
    );
    if let Some(t) = cfg.threads {
        push_all(&mut args, &["-threads", &t.to_string()]);
    }
    push_all(
        &mut args,
        &[
            "-c:a",
            "aac",
            "-b:a",
            &b,
            "-ar",
            &ar,
            "-ac",
            &ac,
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ],
    );
    args.push(file_url(out_file));
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Rational;

    fn plan(audio: bool) -> Plan {
        Plan {
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
            audio,
            fps: Rational { num: 30, den: 1 },
            gop: 96,
            segment: Default::default(),
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn has_pair(args: &[String], k: &str, v: &str) -> bool {
        args.windows(2).any(|w| w[0] == k && w[1] == v)
    }

    #[test]
    fn ladder_command_aligns_keyframes_and_splits_once() {
        let cfg = LadderConfig {
            threads: Some(1),
            ..LadderConfig::default()
        };
        let args = strings(&ladder_args(Path::new("/in/a:b.mp4"), &plan(true), &cfg));
        assert!(has_pair(&args, "-i", "file:/in/a:b.mp4"));
        assert!(has_pair(
            &args,
            "-filter_complex",
            "[0:v:0]fps=30/1,split=2[s0][s1];[s0]scale=1280:720,setsar=1,format=yuv420p[v0];[s1]scale=640:360,setsar=1,format=yuv420p[v1]"
        ));
        assert_eq!(
            args.iter()
                .filter(|a| *a == "expr:gte(t,n_forced*3.2)")
                .count(),
            2
        );
        assert_eq!(args.iter().filter(|a| *a == "-sc_threshold").count(), 2);
        assert!(has_pair(&args, "-g", "96"));
        assert!(has_pair(&args, "-threads", "1"));
        assert!(has_pair(
            &args,
            "-hls_segment_filename",
            "video/720p/seg-%05d.m4s"
        ));
        assert!(has_pair(
            &args,
            "-hls_segment_filename",
            "audio/aac/seg-%05d.m4s"
        ));
        assert!(has_pair(&args, "-map", "0:a:0"));
        assert!(has_pair(&args, "-ar", "48000"));
        assert!(args.contains(&"-xerror".to_owned()));
        assert_eq!(args.iter().filter(|a| *a == "hls").count(), 3);
    }

    #[test]
    fn no_audio_output_without_source_audio() {
        let args = strings(&ladder_args(
            Path::new("/in.mp4"),
            &plan(false),
            &LadderConfig::default(),
        ));
        assert!(!args.iter().any(|a| a.starts_with("audio/")));
        assert!(!args.contains(&"-threads".to_owned()));
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "seg-00001.m4s");
        assert_eq!(segment_name(123_456), "seg-123456.m4s");
        assert_eq!(segment_number("seg-00001.m4s"), Some(1));
        assert_eq!(segment_number("seg-123456.m4s"), Some(123_456));
        assert_eq!(segment_number("seg-1.m4s"), None);
        assert_eq!(segment_number("seg-0000x.m4s"), None);
        assert_eq!(segment_number("init.mp4"), None);
    }

    #[test]
    fn test_pattern_command() {
        let args = strings(&test_pattern_args(
            Path::new("demo.mp4"),
            10,
            &LadderConfig::default(),
        ));
        assert!(has_pair(&args, "-i", "testsrc2=size=1280x720:rate=30"));
        assert!(has_pair(
            &args,
            "-i",
            "sine=frequency=1000:sample_rate=48000"
        ));
        assert!(has_pair(&args, "-t", "10"));
        assert_eq!(args.last().unwrap(), "file:demo.mp4");
    }

    #[test]
    fn run_command_seeks_trims_and_forces_the_whole_grid() {
        let grid = Grid {
            fps_num: 30,
            fps_den: 1,
            segment_millis: 3200,
        };
        let runs = crate::split::split(&grid, Some(1800), 5);
        let cfg = LadderConfig::default();
        let first = strings(&video_run_args(
            Path::new("/in.mp4"),
            &plan(true),
            &cfg,
            &grid,
            &runs[0],
        ));
        assert!(
            !first.contains(&"-ss".to_owned()),
            "the first run starts at 0"
        );
        assert!(
            !first.iter().any(|a| a.starts_with("audio/")),
            "audio is encoded once, apart"
        );
        let second = strings(&video_run_args(
            Path::new("/in.mp4"),
            &plan(true),
            &cfg,
            &grid,
            &runs[1],
        ));
        assert!(has_pair(&second, "-ss", "15.983333"));
        assert!(second.iter().any(|a| a.starts_with(
            "[0:v:0]setpts=PTS-STARTPTS,fps=30/1,trim=end_frame=480,split=2[s0][s1];"
        )));
        assert!(has_pair(&second, "-g", "192"));
        assert!(has_pair(&second, "-keyint_min", "96"));
        assert!(has_pair(
            &second,
            "-force_key_frames",
            &grid.keyframe_expr(&runs[1])
        ));
        let last = strings(&video_run_args(
            Path::new("/in.mp4"),
            &plan(true),
            &cfg,
            &grid,
            &runs[3],
        ));
        assert!(
            last.iter()
                .any(|a| a.starts_with("[0:v:0]setpts=PTS-STARTPTS,fps=30/1,split=2")),
            "the last run takes the rest"
        );
        let audio = strings(&audio_args(Path::new("/in.mp4"), &plan(true), &cfg));
        assert!(has_pair(&audio, "-map", "0:a:0"));
        assert!(has_pair(&audio, "-hls_time", "3.2"));
        assert!(!audio.iter().any(|a| a.starts_with("video/")));
    }
}
