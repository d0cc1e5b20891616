//! Serde models of the CAPI Runtime SDK envelopes konnector reads and writes: hook requests and answers, and
//! Discovery. The embedded `cluster` is decoded by `konnector_proto::capi`, the one home of the Cluster
//! vocabulary. Every field is optional and no struct denies unknown fields, so a new CAPI field never breaks
//! decoding.

use serde::{Deserialize, Serialize};

use crate::catalog::{HOOKS_API_VERSION, Hook};

/// The fields of any lifecycle hook request that konnector reads. `settings`, the upgrade plan arrays and
/// `from/toKubernetesVersion` are accepted and skipped unparsed, as is everything in the Cluster konnector does not
/// read (see `konnector_proto::capi`): a body costs about its own size to decode, whatever its shape.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    /// `hooks.runtime.cluster.x-k8s.io/v1alpha1` when present.
    pub api_version: Option<String>,
    /// `<Hook>Request` when present.
    pub kind: Option<String>,
    /// The Cluster the hook is about, decoded by the CAPI vocabulary shared with the executor.
    pub cluster: Option<konnector_proto::capi::Cluster>,
}

/// A hook answer's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The hook passed (possibly asking to be called again via `retryAfterSeconds`).
    Success,
    /// The hook failed; CAPI never ignores this.
    Failure,
}

/// The answer to any lifecycle hook. `retryAfterSeconds` is present exactly when the hook's response type has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookResponse {
    /// Always `hooks.runtime.cluster.x-k8s.io/v1alpha1`.
    pub api_version: String,
    /// `<Hook>Response`.
    pub kind: String,
    /// Success or Failure.
    pub status: Status,
    /// Deterministic, secret-free explanation; omitted when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Blocking hooks only: 0 = go ahead, > 0 = ask again in about that many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<i32>,
}

impl HookResponse {
    /// A Success that does not block.
    pub fn success(hook: Hook, message: impl Into<String>) -> Self {
        Self::new(hook, Status::Success, message.into(), 0)
    }

    /// A Success that asks CAPI to call again after `retry_after_seconds` (clamped to ≥ 1).
    pub fn wait(hook: Hook, message: impl Into<String>, retry_after_seconds: u32) -> Self {
        let secs = i32::try_from(retry_after_seconds.max(1)).unwrap_or(i32::MAX);
        Self::new(hook, Status::Success, message.into(), secs)
    }

    /// A Failure.
    pub fn failure(hook: Hook, message: impl Into<String>) -> Self {
        Self::new(hook, Status::Failure, message.into(), 0)
    }

    fn new(hook: Hook, status: Status, message: String, retry: i32) -> Self {
        Self {
            api_version: HOOKS_API_VERSION.to_owned(),
            kind: hook.response_kind().to_owned(),
            status,
            message,
            retry_after_seconds: hook.is_blocking().then_some(retry),
        }
    }
}

/// `failurePolicy` of a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum FailurePolicy {
    /// A transport error or non-200 fails the reconcile.
    #[value(name = "Fail", alias = "fail")]
    Fail,
    /// A transport error or non-200 counts as a non-blocking Success. A `Failure` answer is never ignored.
    #[value(name = "Ignore", alias = "ignore")]
    Ignore,
}

/// `DiscoveryResponse`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryResponse {
    /// Always `hooks.runtime.cluster.x-k8s.io/v1alpha1`.
    pub api_version: String,
    /// `DiscoveryResponse`.
    pub kind: String,
    /// Always Success.
    pub status: Status,
    /// One entry per advertised handler.
    pub handlers: Vec<DiscoveredHandler>,
}

/// One `handlers[]` entry of Discovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredHandler {
    /// DNS-1123 label.
    pub name: String,
    /// The hook this handler serves.
    pub request_hook: RequestHook,
    /// 1–30, always explicit.
    pub timeout_seconds: i32,
    /// Always explicit.
    pub failure_policy: FailurePolicy,
}

/// `handlers[].requestHook`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestHook {
    /// `hooks.runtime.cluster.x-k8s.io/v1alpha1`.
    pub api_version: String,
    /// The hook name, e.g. `BeforeClusterDelete`.
    pub hook: String,
}
