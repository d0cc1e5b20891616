//! Runtime pieces that both konnector binaries (the gateway and the executor) share: log setup, the shutdown
//! signal, the admin HTTP server, and rustls helpers. Nothing here knows about CAPI or Kubernetes.
#![deny(missing_docs)]

pub mod admin;
pub mod grpc;
pub mod http_server;
pub mod metrics;
pub mod net;
pub mod process;
pub mod propagation;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// The git revision the binaries were built from (12 hex digits), or "unknown" (see `build.rs`).
pub const GIT_REVISION: &str = env!("KONNECTOR_GIT_REVISION");

/// The version both binaries report in `--version` and as the `service.version` resource attribute: the crate
/// version with the git revision as semver build metadata, e.g. `0.1.0+1a2b3c4d5e6f`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("KONNECTOR_GIT_REVISION"));
