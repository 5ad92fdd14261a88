//! StreamGate's load tools.
//!
//! [`proto`] drives many concurrent GETs of one URL over HTTP/1.1, HTTP/2 or HTTP/3 with the
//! same worker structure for all three, records every latency in an HDR histogram, and
//! reports throughput and percentiles; [`plot`] draws percentile plots of several runs.
//! `streamgate load proto` is the command line; `loadtests/*.py` are the comparison scripts.
#![forbid(unsafe_code)]

pub mod player;
pub mod plot;
pub mod propagation;
pub mod proto;
mod tls;

pub use plot::{PlotArgs, plot_cli};
pub use proto::{Proto, ProtoArgs, ProtoBench, ProtoReport, run, run_cli};
