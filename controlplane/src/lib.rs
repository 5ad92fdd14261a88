//! StreamGate's control plane.
//!
//! Operators manage policies, assets and keys here; edges enforce what it publishes. This
//! crate holds token minting ([`token`]) and the development state that `streamgate dev`
//! publishes to its edge ([`dev`]). The gRPC API and the etcd store build on these.
#![forbid(unsafe_code)]

pub mod dev;
pub mod token;
