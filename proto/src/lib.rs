//! konnector's wire vocabularies: the executor's gRPC contract ([`v1`]) and the CAPI `Cluster` JSON ([`capi`]).
//!
//! The `.proto` source lives beside this crate under `konnector/executor/v1/`, and `buf lint` at the repository
//! root checks the same file this crate compiles. The CAPI vocabulary lives here too because both the gateway
//! (hook bodies) and the executor (the live Cluster) decode Clusters, and must do it the same way.

pub mod v1 {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    tonic::include_proto!("konnector.executor.v1");

    /// The encoded `FileDescriptorSet` of this package, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/konnector_descriptor.bin"));
}

pub mod capi;
mod json;

/// The gRPC metadata key the executor sets on every error status it answers itself (value `"1"`).
///
/// A status code alone cannot say who produced it: UNAVAILABLE comes from the transport when the executor cannot be
/// reached, and from the executor when *it* cannot reach a workload API server, or when a HelmChartProxy is still
/// being uninstalled. The gateway answers the first with "executor unreachable" and must pass the executor's own
/// message through for the others, or a person chases a healthy executor. Only the executor answers on its mTLS
/// port, so the key cannot be set by anyone else on that link.
pub const EXECUTOR_ANSWER_METADATA: &str = "konnector-executor-answer";

pub use json::{json_to_struct, struct_to_json};
