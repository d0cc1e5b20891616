//! The konnector executor's gRPC contract.
//!
//! The `.proto` source lives beside this crate under `konnector/executor/v1/`, and `buf lint` at the repository
//! root checks the same file this crate compiles. Only wire-level helpers belong here.

pub mod v1 {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    tonic::include_proto!("konnector.executor.v1");

    /// The encoded `FileDescriptorSet` of this package, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/konnector_descriptor.bin"));
}

mod structs;

pub use structs::{json_to_struct, struct_to_json};
