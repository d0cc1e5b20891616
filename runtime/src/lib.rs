//! Runtime pieces that both konnector binaries (the gateway and the executor) share: log setup, the shutdown
//! signal, the admin HTTP server, and rustls helpers. Nothing here knows about CAPI or Kubernetes.
#![deny(missing_docs)]

pub mod admin;
pub mod grpc;
pub mod metrics;
pub mod propagation;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
