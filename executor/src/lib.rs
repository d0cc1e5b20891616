//! konnector's executor: credentials and the HelmChartProxy lifecycle, over gRPC.
//!
//! The executor is the only part of konnector that holds Kubernetes credentials. Each RPC does the Konnector
//! Agent addon's work for one cluster, is idempotent, and explains itself in a deterministic, secret-free
//! message.
//!
//! Three vocabularies meet here, each crossing through a named conversion: the proto `ClusterContext` becomes a
//! [`domain::AgentRequest`] ([`domain::agent_request`]); the domain becomes template variables
//! ([`values::template_values`]) and Kubernetes objects ([`objects`]).
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
mod executor;
pub mod objects;
pub mod observe;
mod server;
mod service;
pub mod values;

pub use config::{ExecutorConfig, UninstallTimeoutPolicy};
pub use error::Error;
pub use executor::{EVENT_REPORTER, Executor, control_plane_initialized};
pub use server::{ServerOptions, serve};
