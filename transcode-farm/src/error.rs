//! The error of [`crate::transcode`] and [`crate::make_test_pattern`].

use std::io;
use std::path::PathBuf;

use crate::cmaf::CmafError;
use crate::config::ConfigError;
use crate::ladder::LadderError;
use crate::verify::VerifyError;

/// Why a transcode (or the making of a test pattern) failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The ladder configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ffmpeg or ffprobe binary does not exist where the config points.
    #[error(
        "{tool} not found (looked for {path:?}): install FFmpeg on this machine \
         (Debian/Ubuntu: `apt-get install ffmpeg`) or set LadderConfig::{tool} to its path"
    )]
    ToolNotFound {
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// The configured path or name.
        path: PathBuf,
    },
    /// The binary exists but could not be started (permissions, not executable).
    #[error("cannot start {tool} ({path:?}): {source}")]
    Spawn {
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// The configured path or name.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The input file does not exist or cannot be read.
    #[error("cannot read input {path:?}: {source}")]
    Input {
        /// The input path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The input is not a video: ffprobe cannot read it, or it has no video stream.
    #[error("{path:?} is not a video: {reason}")]
    NotVideo {
        /// The input path.
        path: PathBuf,
        /// What ffprobe found.
        reason: String,
    },
    /// The input ends early, typically an upload that was cut off.
    #[error("{path:?} is truncated: {detail}")]
    Truncated {
        /// The input path.
        path: PathBuf,
        /// How the truncation showed.
        detail: String,
    },
    /// ffmpeg or ffprobe exited with an error; the tail of its stderr says why.
    #[error("{tool} failed ({status}): {stderr_tail}")]
    ToolFailed {
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// The exit status.
        status: String,
        /// The last lines ffmpeg wrote to stderr.
        stderr_tail: String,
    },
    /// The source is too small for the configured number of renditions.
    #[error(transparent)]
    Ladder(#[from] LadderError),
    /// The output path has no final folder name (e.g. `/` or `..`).
    #[error("unusable output path {path:?}: {reason}")]
    OutputPath {
        /// The output path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// Reading or writing a file of the output failed.
    #[error("I/O error on {path:?}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A produced segment is not valid CMAF.
    #[error("invalid CMAF in {path:?}: {source}")]
    Cmaf {
        /// The segment file.
        path: PathBuf,
        /// What the box reader found.
        #[source]
        source: CmafError,
    },
    /// ffmpeg produced something other than what was planned.
    #[error("unexpected output for rendition {rendition}: {reason}")]
    Output {
        /// The rendition, e.g. `720p` or `aac`.
        rendition: String,
        /// What differs.
        reason: String,
    },
    /// The finished output failed [`crate::verify_output`].
    #[error("output verification failed: {0}")]
    Verify(#[from] VerifyError),
}

impl TranscodeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
