//! StreamGate's edge: serves HLS and DASH from origin storage through a cache, and checks
//! every request at the gate first.
//!
//! A request flows `listener -> pipeline (request parsing) -> gate -> cache -> origin`.
//! [`listener::Edge`] runs the Pingora server (HTTP/1.1, h2c, TLS with h2) and the admin
//! port; [`pipeline::Pipeline`] is the one request path every front shares; [`cache::Cache`]
//! collapses concurrent misses; [`config::EdgeConfig`] is the typed configuration.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod config;
pub mod gate;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod request;
pub mod rewrite;
pub mod tls;

pub use config::EdgeConfig;
pub use listener::{Edge, Shutdown, StartError};
