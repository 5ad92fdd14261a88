//! StreamGate's control plane.
//!
//! Operators manage policies, assets and keys here; edges enforce what it publishes. This
//! crate holds token minting ([`token`]) and the development state that `streamgate dev`
//! publishes to its edge ([`dev`]), and the versioned state store ([`store`]) with an etcd
//! and an embedded implementation. The gRPC API builds on these.
#![forbid(unsafe_code)]

pub mod api;
pub mod dev;
pub mod store;
pub mod token;
