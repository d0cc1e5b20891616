//! konnector's executor: credentials and the HelmChartProxy lifecycle, over gRPC.
//!
//! The executor is the only part of konnector that holds Kubernetes credentials. Each RPC does the Konnector
//! Agent addon's work for one cluster, is idempotent, and explains itself in a deterministic, secret-free
//! message.
//!
//! Three vocabularies meet here, each crossing through a named conversion: a proto `ClusterRef` becomes a domain
//! [`domain::ClusterRef`] (`service.rs`); the live CAPI Cluster (`konnector_proto::capi`) becomes a
//! [`domain::AgentRequest`] ([`domain::agent_request`]); the domain becomes template variables
//! ([`values::template_values`]) and Kubernetes objects ([`objects`], named in [`names`]).
//!
//! The workflows: `apply` (ApplyAgent, PlanAgent), `uninstall` (RemoveAgent), `status` (GetAgentStatus), over
//! `cluster` (reading the live Cluster), `remote` (workload clients) and `events`. Between hooks, `reconcile` keeps
//! every Cluster converged, in the one replica `leader` elects.

pub mod access;
pub mod apply;
pub mod args;
mod cluster;
pub mod config;
mod defaults;
pub mod domain;
mod drift;
pub mod error;
mod events;
mod executor;
mod hook_cache;
mod leader;
pub mod limits;
mod memory;
pub mod names;
pub mod objects;
pub mod observe;
mod ownership;
mod preflight;
pub mod prism;
mod prism_shared;
mod prism_warnings;
pub mod reconcile;
pub mod remote;
mod server;
pub mod service;
pub mod status;
pub mod uninstall;
pub mod values;

pub use config::{ExecutorConfig, ServerOptions, UninstallTimeoutPolicy, UpgradeConfigPolicy};
pub use error::Error;
pub use executor::Executor;
pub use leader::LeaseConfig;
pub use server::serve;
