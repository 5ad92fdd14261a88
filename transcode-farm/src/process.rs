//! Runs ffmpeg and ffprobe: spawn, stream stdout lines to a callback, keep
//! the tail of stderr, map "binary not found" to a clear error.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use crate::error::TranscodeError;

/// Lines of stderr kept for error messages.
const TAIL_LINES: usize = 20;
/// Longest stderr line kept, in bytes.
const TAIL_LINE_MAX: usize = 400;

/// The two tools this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Ffmpeg,
    Ffprobe,
}

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ffmpeg => "ffmpeg",
            Self::Ffprobe => "ffprobe",
        }
    }
}

/// How a finished process ended.
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    /// The last lines of stderr, oldest first.
    pub(crate) stderr_tail: String,
}

impl Finished {
    pub(crate) fn failure(&self, tool: Tool) -> TranscodeError {
        TranscodeError::ToolFailed {
            tool: tool.name(),
            status: self.status.to_string(),
            stderr_tail: if self.stderr_tail.is_empty() {
                "(no error output)".to_owned()
            } else {
                self.stderr_tail.clone()
            },
        }
    }
}

/// Runs `binary` with `args` in `cwd`, calling `on_line` for each stdout line.
/// The child is killed if this future is dropped.
pub(crate) async fn run(
    tool: Tool,
    binary: &Path,
    args: &[OsString],
    cwd: Option<&Path>,
    mut on_line: impl FnMut(&str) + Send,
) -> Result<Finished, TranscodeError> {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    tracing::debug!(tool = tool.name(), ?args, "spawning");
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TranscodeError::ToolNotFound {
            tool: tool.name(),
            path: binary.to_path_buf(),
        },
        _ => TranscodeError::Spawn {
            tool: tool.name(),
            path: binary.to_path_buf(),
            source,
        },
    })?;
    let io_err = |source| TranscodeError::Io {
        path: binary.to_path_buf(),
        source,
    };
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io_err(io::Error::other("no stdout pipe")))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| io_err(io::Error::other("no stderr pipe")))?;
    let tool_name = tool.name();
    let stderr_task = tokio::spawn(async move {
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        let _ = for_each_line(stderr, |line| {
            tracing::debug!(tool = tool_name, "{line}");
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(clip(line));
        })
        .await;
        Vec::from(tail).join("\n")
    });
    let read = for_each_line(stdout, &mut on_line).await;
    let status = child.wait().await.map_err(io_err)?;
    let stderr_tail = stderr_task.await.unwrap_or_default();
    read.map_err(io_err)?;
    Ok(Finished {
        status,
        stderr_tail,
    })
}

/// Calls `f` on every line, decoding invalid UTF-8 lossily.
async fn for_each_line<R: AsyncRead + Unpin>(r: R, mut f: impl FnMut(&str)) -> io::Result<()> {
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).await? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&buf);
        f(line.trim_end_matches(['\r', '\n']));
    }
}

fn clip(line: &str) -> String {
    if line.len() <= TAIL_LINE_MAX {
        return line.to_owned();
    }
    let mut end = TAIL_LINE_MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}
