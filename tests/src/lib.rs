//! konnector's test harness: real etcd + kube-apiserver control planes on loopback, the CRDs konnector touches,
//! and helpers that leave workload clusters the way CAPI does.
//!
//! The README's test command, CI and the sandbox all use this library. Nothing here is skipped quietly: when a
//! control plane cannot start, the caller gets an error that says why.

pub mod assets;
pub mod baseline;
pub mod bench;
pub mod caaph_stand_in;
pub mod capi_env;
pub mod capi_manager;
pub mod capi_provider;
pub mod capi_stand_in;
pub mod control_plane;
pub mod crds;
pub mod executor_fixture;
pub mod gateway_fixture;
#[path = "../shared/h2_raw.rs"]
pub mod h2_raw;
pub mod hook_recorder;
pub mod otlp;
pub mod pki;
pub mod prism_central_stand_in;
pub mod real_binaries;
pub mod sandbox;
pub mod sandbox_commands;
pub mod sandbox_output;
pub mod sandbox_real;
pub mod sandbox_real_life;
pub mod scale;
pub mod scenario;
pub mod support;
pub mod tools;
pub mod transcript;
pub mod workload;

pub use control_plane::ControlPlane;

/// A management control plane with every CRD konnector needs already Established (Cluster served as CAPI 1.11+
/// serves it).
pub async fn management_plane(name: &str) -> anyhow::Result<(ControlPlane, kube::Client)> {
    management_plane_for(name, crds::ClusterApi::V1Beta2).await
}

/// A management control plane whose Cluster CRD is served as `api` says (e.g. v1beta1 only, as CAPI 1.10).
pub async fn management_plane_for(
    name: &str,
    api: crds::ClusterApi,
) -> anyhow::Result<(ControlPlane, kube::Client)> {
    let cp = ControlPlane::start(name).await?;
    let client = cp.client().await?;
    crds::install_management(&client, api).await?;
    Ok((cp, client))
}

/// Installs a `tracing` subscriber for tests once; later calls do nothing. Honours `RUST_LOG`.
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
            }),
        )
        .with_test_writer()
        .try_init();
}
