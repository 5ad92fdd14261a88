//! StreamGate transcode core: turns one uploaded video into an ABR ladder of
//! CMAF (fMP4) segments with HLS and DASH manifests, ready for origin storage.
//!
//! It sits between ingest and origin: a farm worker calls [`transcode`] on
//! an upload, and the edge later serves the folder it wrote (layout in the
//! README). The flow is probe (ffprobe) -> ladder choice -> one ffmpeg run
//! -> [`cmaf`] measurement of every segment -> manifests written here from
//! those measurements -> [`verify_output`] -> atomic rename into place.
//!
//! [`ingest`] is the tus 1.0.0 upload server that stages sources and submits their jobs;
//! [`service`] runs `streamgate transcode` (ingest and workers) from its config.
//!
//! Main types: [`LadderConfig`] (with [`SegmentDuration`] and [`Rung`]),
//! [`Report`], [`TranscodeError`], [`VerifyReport`] and [`VerifyError`].
#![forbid(unsafe_code)]

mod check;
pub mod cmaf;
mod config;
mod error;
pub mod farm;
mod ffmpeg;
pub mod ingest;
mod ladder;
mod manifest;
mod mp4box;
mod probe;
mod process;
mod report;
pub mod segmented;
pub mod service;
pub mod split;
mod transcode;
pub mod verify;

pub use config::{
    AudioConfig, ConfigError, ConfigProblem, LadderConfig, Rung, SegmentDuration,
    SegmentDurationError, X264_PRESETS,
};
pub use error::TranscodeError;
pub use ffmpeg::progress::Progress;
pub use ladder::LadderError;
pub use report::{Rendition, RenditionKind, Report, SourceReport};
pub use transcode::{make_test_pattern, transcode, transcode_with_progress};
pub use verify::{VerifyError, VerifyReport, verify_listing, verify_output};
