//! StreamGate's control API (`streamgate.control.v1`): the generated tonic services and
//! messages, and the descriptor set the control plane serves for gRPC reflection.
//! The source of truth is `streamgate/control/v1/control.proto` beside this crate.
#![forbid(unsafe_code)]
#![allow(unreachable_pub, unused_qualifications, clippy::use_self)]

/// Generated code for package `streamgate.control.v1`.
pub mod control {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("streamgate.control.v1");
    }
}

/// The encoded descriptor set of the control API, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("control_descriptor");
