//! StreamGate's load tools.
//!
//! [`proto`] drives many concurrent GETs of one URL over HTTP/1.1, HTTP/2 or HTTP/3 with the
//! same worker structure for all three, records every latency in an HDR histogram, and
//! reports throughput and percentiles; [`plot`] draws percentile plots of several runs.
//! [`player`] is a pure model of a video player (HLS and DASH, ABR, buffer, stalls) and
//! [`play`] drives many of them against an edge (`streamgate load play`), with latencies
//! counted from when each player needed each object, and writes JSON and HTML reports.
//! `streamgate load proto` and `load play` are the command lines; `loadtests/*.py` are the
//! comparison scripts.
#![forbid(unsafe_code)]

pub mod play;
pub mod player;
pub mod plot;
pub mod propagation;
pub mod proto;
mod tls;

pub use plot::{PlotArgs, plot_cli};
pub use proto::{Proto, ProtoArgs, ProtoBench, ProtoReport, run, run_cli};
