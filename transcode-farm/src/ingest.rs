//! The tus 1.0.0 ingest: resumable, checksummed, expiring uploads into origin storage's
//! staging area, each completed upload submitted as a transcode job.
//!
//! The protocol core is pure: [`headers`] parses the tus headers (fuzzed),
//! [`record`] is the upload record and the checks a request passes with `now` passed in,
//! [`digest`] the checksums and the resumable source SHA-256, [`error`] maps every refusal
//! to its status code and JSON body. [`server`] is the hyper glue that reads the store,
//! streams bodies into [`streamgate_origin::Staging`] and answers. See docs/INGEST.md.

pub mod config;
pub mod digest;
pub mod error;
pub mod headers;
pub mod record;
pub mod server;

pub use config::IngestConfig;
pub use error::TusError;
pub use record::{UploadRecord, UploadState, record_key};
pub use server::Ingest;
