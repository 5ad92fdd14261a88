//! Pure planning of segment-parallel encoding: where the output segments of a source
//! begin, and how they are cut into tasks that workers encode independently.
//!
//! Segment `k` begins at frame `ceil(k x S x fps)` (S: the segment duration): the first
//! frame at or after `k x S`, which is where a single ffmpeg run with
//! `-force_key_frames expr:gte(t,n_forced*S)` puts its keyframes too. A task is a run of
//! whole segments. It seeks to its first frame, takes exactly its frames (`trim`), forces
//! keyframes at the same absolute boundaries, and its segments are later moved in time by
//! `start_frame` frames ([`crate::cmaf::shift_segment`]), so the stitched timeline is the
//! one a single run would have made: same GOP alignment, same timebase, continuous `tfdt`.

use serde::{Deserialize, Serialize};

/// The segment grid of one output: frame rate and segment duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    /// Output frames per second, numerator.
    pub fps_num: u32,
    /// Output frames per second, denominator.
    pub fps_den: u32,
    /// Segment duration in milliseconds.
    pub segment_millis: u32,
}

/// One run of whole output segments, encoded by one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoRun {
    /// 0-based position among the job's runs.
    pub index: u32,
    /// 0-based number of its first segment in the whole output.
    pub first_segment: u64,
    /// Segments it makes; `None` for the last run, which encodes to the end of the source.
    pub segments: Option<u64>,
    /// Its first frame in the whole output.
    pub start_frame: u64,
    /// Frames it makes; `None` for the last run.
    pub frames: Option<u64>,
}

impl Grid {
    /// The first frame of segment `k` (0-based).
    pub fn boundary(&self, k: u64) -> u64 {
        let num = u128::from(k) * u128::from(self.segment_millis) * u128::from(self.fps_num);
        let den = 1000 * u128::from(self.fps_den);
        u64::try_from(num.div_ceil(den)).unwrap_or(u64::MAX)
    }

    /// How many segments `frames` frames fill (the last one may be short).
    pub fn segments(&self, frames: u64) -> u64 {
        // The smallest k whose boundary is at or past the end; boundary(k) >= k (S >= 1 frame).
        let (mut lo, mut hi) = (0u64, frames.max(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.boundary(mid) >= frames {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// The frame rate as a float, for ffmpeg expressions.
    pub fn fps(&self) -> f64 {
        f64::from(self.fps_num) / f64::from(self.fps_den)
    }

    /// Seconds at which frame `frame` is shown.
    pub fn frame_secs(&self, frame: u64) -> f64 {
        frame as f64 * f64::from(self.fps_den) / f64::from(self.fps_num)
    }

    /// The `-force_key_frames` expression of `run`: a keyframe on the first frame of every
    /// segment of the whole output, in the run's own time (which starts at 0). A quarter
    /// frame of slack keeps rounding from moving a keyframe to the next frame.
    pub fn keyframe_expr(&self, run: &VideoRun) -> String {
        let fps = self.fps();
        let per_segment = f64::from(self.segment_millis) / 1000.0 * fps;
        format!(
            "expr:gte(t,ceil((n_forced+{k})*{per_segment:.9}-0.000001)/{fps:.9}-{t0:.9}-{slack:.9})",
            k = run.first_segment,
            t0 = self.frame_secs(run.start_frame),
            slack = 0.25 / fps,
        )
    }
}

/// Cuts an output of `expected_frames` frames into runs of `per_task` segments (at least
/// one), as even as whole segments allow. The last run takes whatever the source has left,
/// so a source that is a little longer or shorter than its header says loses nothing.
pub fn split(grid: &Grid, expected_frames: Option<u64>, per_task: u64) -> Vec<VideoRun> {
    let per_task = per_task.max(1);
    let total = match expected_frames {
        Some(f) if f > 0 => grid.segments(f),
        _ => 0,
    };
    let tasks = total.div_ceil(per_task).max(1);
    let mut runs = Vec::new();
    let mut first = 0u64;
    for i in 0..tasks {
        // The first `total % tasks` runs get one segment more.
        let size = total / tasks + u64::from(i < total % tasks);
        let last = i + 1 == tasks;
        let start_frame = grid.boundary(first);
        runs.push(VideoRun {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            first_segment: first,
            segments: (!last).then_some(size),
            start_frame,
            frames: (!last).then(|| grid.boundary(first + size) - start_frame),
        });
        first += size;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G30: Grid = Grid {
        fps_num: 30,
        fps_den: 1,
        segment_millis: 3200,
    };

    #[test]
    fn boundaries_are_whole_frames_at_or_after_each_segment_start() {
        assert_eq!(G30.boundary(0), 0);
        assert_eq!(G30.boundary(1), 96);
        assert_eq!(G30.boundary(10), 960);
        let ntsc = Grid {
            fps_num: 30000,
            fps_den: 1001,
            segment_millis: 3200,
        };
        // 3.2 s x 29.97 = 95.9 frames: segments of 96 frames, with a 95 now and then.
        assert_eq!(ntsc.boundary(1), 96);
        assert_eq!(ntsc.boundary(10), 960);
        assert_eq!(ntsc.boundary(11), 1055);
        assert_eq!(G30.segments(1), 1);
        assert_eq!(G30.segments(96), 1);
        assert_eq!(G30.segments(97), 2);
        assert_eq!(G30.segments(600), 7);
    }

    #[test]
    fn a_minute_splits_into_even_runs() {
        let runs = split(&G30, Some(1800), 5);
        // 1800 frames = 19 segments (18 x 96 + 72): 4 runs of 5, 5, 5 and the rest.
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[0].segments, Some(5));
        assert_eq!(runs[0].frames, Some(480));
        assert_eq!(runs[1].start_frame, 480);
        assert_eq!(runs[3].first_segment, 15);
        assert_eq!(runs[3].segments, None);
        assert_eq!(runs[3].frames, None);
    }

    #[test]
    fn unknown_or_short_sources_are_one_run() {
        for expected in [None, Some(0), Some(10)] {
            let runs = split(&G30, expected, 5);
            assert_eq!(runs.len(), 1);
            assert_eq!((runs[0].start_frame, runs[0].frames), (0, None));
        }
    }

    #[test]
    fn the_keyframe_expression_is_in_the_run_s_own_time() {
        let runs = split(&G30, Some(1800), 5);
        assert_eq!(
            G30.keyframe_expr(&runs[1]),
            "expr:gte(t,ceil((n_forced+5)*96.000000000-0.000001)/30.000000000-16.000000000-0.008333333)"
        );
    }

    fn grids() -> impl Strategy<Value = Grid> {
        (
            prop_oneof![
                Just((24000, 1001)),
                Just((24, 1)),
                Just((25, 1)),
                Just((30000, 1001)),
                Just((30, 1)),
                Just((50, 1)),
                Just((60000, 1001)),
                Just((60, 1)),
                (1u32..120, 1u32..3),
            ],
            2000u32..=6000,
        )
            .prop_map(|((fps_num, fps_den), segment_millis)| Grid {
                fps_num,
                fps_den,
                segment_millis,
            })
    }

    proptest! {
        /// The runs tile the output: contiguous, each starting on a segment boundary, and
        /// together as many segments as the whole output has.
        #[test]
        fn runs_tile_the_output(grid in grids(), frames in 1u64..500_000, per in 1u64..20) {
            let runs = split(&grid, Some(frames), per);
            let total = grid.segments(frames);
            let mut next_segment = 0;
            let mut next_frame = 0;
            for (i, r) in runs.iter().enumerate() {
                prop_assert_eq!(r.index as usize, i);
                prop_assert_eq!(r.first_segment, next_segment);
                prop_assert_eq!(r.start_frame, next_frame);
                prop_assert_eq!(r.start_frame, grid.boundary(r.first_segment));
                match (r.segments, r.frames) {
                    (Some(s), Some(f)) => {
                        prop_assert!(s >= 1 && s <= per);
                        prop_assert_eq!(grid.boundary(r.first_segment + s), r.start_frame + f);
                        next_segment += s;
                        next_frame += f;
                    }
                    (None, None) => {
                        prop_assert_eq!(i + 1, runs.len());
                        prop_assert!(total - r.first_segment >= 1);
                        prop_assert!(total - r.first_segment <= per);
                        prop_assert!(frames > r.start_frame);
                    }
                    _ => prop_assert!(false, "segments and frames are both known or both not"),
                }
            }
        }

        /// Runs differ by at most one segment.
        #[test]
        fn runs_are_even(grid in grids(), frames in 1u64..500_000, per in 1u64..20) {
            let runs = split(&grid, Some(frames), per);
            let total = grid.segments(frames);
            let sizes: Vec<u64> = runs.iter().map(|r| r.segments.unwrap_or(total - r.first_segment)).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1, "{:?}", sizes);
        }

        /// Segments are whole frames that differ by at most one frame from S x fps.
        #[test]
        fn segment_lengths_follow_the_rate(grid in grids(), k in 0u64..100_000) {
            let len = grid.boundary(k + 1) - grid.boundary(k);
            let ideal = f64::from(grid.segment_millis) / 1000.0 * grid.fps();
            prop_assert!((len as f64 - ideal).abs() < 1.0 + 1e-9);
        }
    }
}
