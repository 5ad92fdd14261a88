//! StreamGate's edge: serves HLS and DASH from origin storage through a cache, and checks
//! every request at the gate first.
//!
//! A request flows `listener -> pipeline (route) -> gate -> cache -> origin`, and
//! `response`/`error` shape what goes back. The state the gate enforces comes from the
//! `source`s (the state store, or a snapshot file) between the listeners and the
//! pipeline; chains are asked through `streamgate-web3`.
//!
//! The public surface is what runs an edge: [`Edge`] (built from an [`EdgeConfig`], run
//! until [`Shutdown`]), the [`config`] types, and [`dev_certificate`]. Everything else is
//! private; the fuzz targets and benchmarks reach the pure parsers and the gate through
//! `internals` (and the public `gate`, `request` and `rewrite` modules) when built with `--cfg fuzzing` or the `internals` feature.
#![forbid(unsafe_code)]

mod access_log;
mod admin;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod analytics;
#[cfg(not(any(fuzzing, feature = "internals")))]
mod analytics;
mod auth;
mod body;
mod cache;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod cmcd;
#[cfg(not(any(fuzzing, feature = "internals")))]
mod cmcd;
pub mod config;
mod error;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod gate;
#[cfg(not(any(fuzzing, feature = "internals")))]
mod gate;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod limit;
#[cfg(not(any(fuzzing, feature = "internals")))]
mod limit;
mod listener;
mod metrics;
mod pipeline;
mod player;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod request;
#[cfg(not(any(fuzzing, feature = "internals")))]
mod request;
mod response;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod rewrite;
#[cfg(not(any(fuzzing, feature = "internals")))]
mod rewrite;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod session;
#[cfg(not(any(fuzzing, feature = "internals")))]
mod session;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod sharing;
#[cfg(not(any(fuzzing, feature = "internals")))]
mod sharing;
mod source;
mod table;
mod tls;

pub use config::EdgeConfig;
pub use listener::{Edge, Shutdown, StartError};
pub use tls::dev_certificate;

/// The pure parsers, the gate and the session-token minting, for the fuzz targets and the
/// benchmarks only. Not a stable interface.
#[cfg(any(fuzzing, feature = "internals"))]
pub mod internals {
    pub use crate::auth::session::session_token;
    pub use crate::error::Refusal;
    pub use crate::gate::{Decision, Gate, RequestFacts, Snapshot, jwt};
    pub use crate::source::watch::{PurgeRecordError, purge_prefix};
}
