//! The one place where executor outcomes become hook answers.
//!
//! Every message produced here is deterministic (no timestamps, UIDs, addresses or raw transport errors), because
//! CAPI v1.14 copies it into Cluster conditions and a changing condition defeats CAPI's back-off.

use konnector_proto::v1::{ApplyAgentResponse, RemoveAgentResponse};
use tonic::Code;

use crate::capi::HookResponse;
use crate::catalog::Hook;

/// Re-exported: the hook answers name gRPC codes by these names.
pub use konnector_runtime::grpc::code_name;

/// Longest executor message passed through into a hook answer.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// What the executor answered, per RPC.
#[derive(Debug, Clone)]
pub enum ExecutorReply {
    /// `ApplyAgent` answered OK.
    Applied(ApplyAgentResponse),
    /// `RemoveAgent` answered OK.
    Removed(RemoveAgentResponse),
}

/// The short context put in front of an executor's own error message.
pub const fn context(hook: Hook) -> &'static str {
    match hook {
        Hook::AfterControlPlaneInitialized | Hook::BeforeClusterUpgrade => {
            "konnector cannot apply the Konnector Agent"
        }
        Hook::BeforeClusterDelete => "konnector cannot remove the Konnector Agent",
    }
}

/// The answer when the executor cannot be reached or does not answer within the hook's deadline.
pub const UNREACHABLE: &str =
    "konnector executor is unreachable or did not answer in time; CAPI will call this hook again";

/// Maps an executor outcome to the hook answer:
///
/// | outcome | answer |
/// |---|---|
/// | `ApplyAgent` OK | Success (`retryAfterSeconds: 0` on blocking hooks) |
/// | `RemoveAgent` OK, `done` | Success, `retryAfterSeconds: 0` |
/// | `RemoveAgent` OK, not `done` | Success, `retryAfterSeconds: max(1, retry_after_seconds)` |
/// | `InvalidArgument`, `FailedPrecondition` | Failure, `<context>: <executor message>` |
/// | `Unavailable` answered by the executor itself (it could not reach a workload API server, or the proxy is still being uninstalled) | Failure, `<context>: <executor message>` |
/// | `Unavailable`, `DeadlineExceeded`, `Cancelled` otherwise | Failure, [`UNREACHABLE`] |
/// | `Internal`, `Aborted` | Failure, `<context>: the executor reported <code>: <executor message>` |
/// | any other code | Failure, `<context>: the executor reported <code>` |
pub fn hook_answer(hook: Hook, outcome: Result<ExecutorReply, tonic::Status>) -> HookResponse {
    match outcome {
        Ok(ExecutorReply::Applied(r)) => HookResponse::success(hook, clean(&r.message)),
        Ok(ExecutorReply::Removed(r)) if r.done => HookResponse::success(hook, clean(&r.message)),
        Ok(ExecutorReply::Removed(r)) => HookResponse::wait(hook, clean(&r.message), r.retry_after_seconds),
        Err(status) => match status.code() {
            Code::InvalidArgument | Code::FailedPrecondition => {
                let detail = clean(status.message());
                if detail.is_empty() {
                    HookResponse::failure(hook, context(hook))
                } else {
                    HookResponse::failure(hook, format!("{}: {detail}", context(hook)))
                }
            }
            // The executor's own UNAVAILABLE (a transient fault it met further on) says what it met; "executor
            // unreachable" would send a person to a healthy executor.
            Code::Unavailable if answered_by_executor(&status) && !clean(status.message()).is_empty() => {
                HookResponse::failure(hook, format!("{}: {}", context(hook), clean(status.message())))
            }
            // A server that enforces the gRPC deadline answers Cancelled when it expires; to CAPI that is the same
            // "did not answer in time" as our own deadline firing first, so both give the same message.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                HookResponse::failure(hook, UNREACHABLE)
            }
            // The executor's INTERNAL answers (an API server refusing it, an unexpected status) carry its own
            // deterministic, secret-free message, which is what a person needs to act on; other codes come from
            // elsewhere (a proxy, the transport), so only their code is repeated.
            // ABORTED is the executor's lost race (an object changed after it was checked): a failure, so CAPI
            // calls the hook again and the executor checks afresh; its message says so.
            code @ (Code::Internal | Code::Aborted) if !clean(status.message()).is_empty() => {
                HookResponse::failure(
                    hook,
                    format!(
                        "{}: the executor reported {}: {}",
                        context(hook),
                        code_name(code),
                        clean(status.message())
                    ),
                )
            }
            code => HookResponse::failure(
                hook,
                format!("{}: the executor reported {}", context(hook), code_name(code)),
            ),
        },
    }
}

/// Whether the executor itself produced this status, rather than the transport or a proxy on the way
/// ([`konnector_proto::EXECUTOR_ANSWER_METADATA`]).
pub(crate) fn answered_by_executor(status: &tonic::Status) -> bool {
    status
        .metadata()
        .get(konnector_proto::EXECUTOR_ANSWER_METADATA)
        .is_some_and(|v| v == "1")
}

/// One line, bounded length: an executor message is meant to be one sentence; this keeps a misbehaving one from
/// flooding a condition.
fn clean(message: &str) -> String {
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    one_line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capi::Status;

    #[test]
    fn remove_waiting_never_has_zero_retry() {
        let r = hook_answer(
            Hook::BeforeClusterDelete,
            Ok(ExecutorReply::Removed(RemoveAgentResponse {
                done: false,
                retry_after_seconds: 0,
                ..Default::default()
            })),
        );
        assert_eq!(r.status, Status::Success);
        assert_eq!(r.retry_after_seconds, Some(1));
    }

    #[test]
    fn acpi_has_no_retry() {
        // A code that does not come from the executor's own errors: only the code is repeated.
        let r = hook_answer(
            Hook::AfterControlPlaneInitialized,
            Err(tonic::Status::unknown("boom at 12:00")),
        );
        assert_eq!(r.status, Status::Failure);
        assert_eq!(r.retry_after_seconds, None);
        assert!(!r.message.contains("boom"));
        // The executor's INTERNAL errors say what to fix, and are carried through.
        let r = hook_answer(
            Hook::AfterControlPlaneInitialized,
            Err(tonic::Status::internal(
                "cannot apply HelmChartProxy ns/x on the management cluster",
            )),
        );
        assert_eq!(r.retry_after_seconds, None);
        assert!(
            r.message.ends_with(
                "the executor reported INTERNAL: cannot apply HelmChartProxy ns/x on the management cluster"
            ),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_lost_race_is_a_failure_capi_retries_with_the_executors_reason() {
        let r = hook_answer(
            Hook::BeforeClusterUpgrade,
            Err(tonic::Status::aborted(
                "cannot apply HelmChartProxy ns/x on the management cluster: the object changed after it was checked",
            )),
        );
        assert_eq!(r.status, Status::Failure);
        assert!(
            r.message
                .ends_with("the executor reported ABORTED: cannot apply HelmChartProxy ns/x on the management cluster: the object changed after it was checked"),
            "{}",
            r.message
        );
    }

    #[test]
    fn unavailable_names_the_executor_only_when_the_executor_did_not_answer() {
        let message =
            "cannot apply Namespace ntnx-system on the workload cluster: the API server is unreachable";
        // From the transport (or anything but the executor): the executor could not be reached.
        let r = hook_answer(
            Hook::AfterControlPlaneInitialized,
            Err(tonic::Status::unavailable(message)),
        );
        assert_eq!(r.message, UNREACHABLE);
        // The executor's own answer: it was reached, and says what it could not reach.
        let mut own = tonic::Status::unavailable(message);
        own.metadata_mut().insert(
            konnector_proto::EXECUTOR_ANSWER_METADATA,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        let r = hook_answer(Hook::AfterControlPlaneInitialized, Err(own.clone()));
        assert_eq!(r.status, Status::Failure);
        assert_eq!(
            r.message,
            format!("konnector cannot apply the Konnector Agent: {message}")
        );
        // The marker changes nothing for a deadline: the executor did not answer in time.
        let mut late = tonic::Status::deadline_exceeded(message);
        *late.metadata_mut() = own.metadata().clone();
        assert_eq!(
            hook_answer(Hook::BeforeClusterDelete, Err(late)).message,
            UNREACHABLE
        );
    }

    #[test]
    fn executor_message_is_one_bounded_line() {
        let long = format!("line1\nline2 {}", "x".repeat(2000));
        let r = hook_answer(
            Hook::BeforeClusterUpgrade,
            Err(tonic::Status::failed_precondition(long)),
        );
        assert!(!r.message.contains('\n'));
        assert!(
            r.message.chars().count() <= MAX_MESSAGE_CHARS + context(Hook::BeforeClusterUpgrade).len() + 2
        );
        assert_eq!(r.retry_after_seconds, Some(0));
    }
}
