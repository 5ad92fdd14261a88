//! Pure reader of ffmpeg's `-progress` key=value stream.

use std::time::Duration;

/// How far a transcode has got, reported after every ffmpeg progress block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Media time encoded so far.
    pub encoded: Duration,
    /// Duration of the source, when ffprobe knew it.
    pub total: Option<Duration>,
    /// Set on the last report, when ffmpeg has finished encoding.
    pub finished: bool,
}

impl Progress {
    /// Share done, between 0 and 1, when the total is known.
    pub fn fraction(&self) -> Option<f64> {
        let total = self.total?.as_secs_f64();
        if self.finished {
            return Some(1.0);
        }
        (total > 0.0).then(|| (self.encoded.as_secs_f64() / total).clamp(0.0, 1.0))
    }
}

/// Turns progress lines into [`Progress`] reports, one per block.
#[derive(Debug)]
pub(crate) struct ProgressParser {
    total: Option<Duration>,
    encoded: Duration,
}

impl ProgressParser {
    pub(crate) fn new(total: Option<Duration>) -> Self {
        Self {
            total,
            encoded: Duration::ZERO,
        }
    }

    /// Feeds one line; returns a report when the line closes a block.
    pub(crate) fn line(&mut self, line: &str) -> Option<Progress> {
        let (key, value) = line.trim().split_once('=')?;
        match key {
            // Despite the name, out_time_ms is also in microseconds.
            "out_time_us" | "out_time_ms" => {
                if let Ok(us) = value.parse::<u64>() {
                    self.encoded = self.encoded.max(Duration::from_micros(us));
                }
                None
            }
            "progress" => Some(Progress {
                encoded: self.encoded,
                total: self.total,
                finished: value == "end",
            }),
            _ => None,
        }
    }

    /// The furthest media time reported so far.
    pub(crate) fn encoded(&self) -> Duration {
        self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_per_block() {
        let mut p = ProgressParser::new(Some(Duration::from_secs(10)));
        let block = "frame=75\nfps=30.0\nout_time_us=2500000\nout_time_ms=2500000\nout_time=00:00:02.500000\nprogress=continue\n";
        let reports: Vec<Progress> = block.lines().filter_map(|l| p.line(l)).collect();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].encoded, Duration::from_millis(2500));
        assert_eq!(reports[0].fraction(), Some(0.25));
        assert!(!reports[0].finished);
        assert_eq!(p.line("out_time_us=N/A"), None);
        let end = p.line("progress=end").unwrap();
        assert!(end.finished);
        assert_eq!(end.fraction(), Some(1.0));
        assert_eq!(p.encoded(), Duration::from_millis(2500));
    }

    #[test]
    fn unknown_total_has_no_fraction() {
        let mut p = ProgressParser::new(None);
        p.line("out_time_us=1000000");
        assert_eq!(p.line("progress=continue").unwrap().fraction(), None);
        assert_eq!(p.line("garbage"), None);
    }
}
