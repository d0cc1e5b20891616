//! The executor's one error type, and its one mapping to gRPC status codes.
//!
//! Variants are named after the action that failed. Messages are human-readable, deterministic and secret-free:
//! they name objects and keys, never values, and they never include a Kubernetes error body verbatim (a
//! validation error can echo the object it rejected).

use std::fmt;

use tonic::{Code, Status};

/// How a Kubernetes API call failed, reduced to what callers may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeFailure {
    /// The object does not exist.
    NotFound,
    /// The API server could not be reached or did not answer in time.
    Unreachable,
    /// The API server refused the caller (401/403).
    Forbidden,
    /// A write lost a race (409 Conflict): it carried the resourceVersion (or uid) at which the object was
    /// checked, e.g. the HelmChartProxy whose ownership `ownership.rs` checked, and the object changed since (it
    /// changed hands, or another writer got there first). Nothing was written; reading again and retrying decides
    /// afresh. A server-side apply conflict between field managers is not this (retrying cannot clear it).
    Conflict,
    /// The API server answered with another error status.
    Api {
        /// HTTP status code.
        code: u16,
        /// Kubernetes `reason`, e.g. `Invalid` or `Conflict`.
        reason: String,
    },
    /// The API server's answer was larger than the executor takes from it (see `limits`).
    TooLarge(crate::limits::BodyTooLarge),
    /// Anything else, e.g. a response that does not deserialise.
    Other,
}

impl KubeFailure {
    /// Classifies a kube client error. The API server's own text is kept only as a bounded, sanitised `reason`:
    /// its `message` (which can echo the object it rejected) and any non-Status body never are.
    pub fn from_kube(error: &kube::Error) -> Self {
        if let Some(too_large) = crate::limits::body_too_large(error) {
            return Self::TooLarge(too_large);
        }
        match error {
            kube::Error::Api(status) if status.code == 404 => Self::NotFound,
            kube::Error::Api(status) if status.code == 401 || status.code == 403 => Self::Forbidden,
            kube::Error::Api(status) if status.code == 503 || status.code == 504 => Self::Unreachable,
            kube::Error::Api(status) if status.code == 409 && !field_manager_conflict(status) => {
                Self::Conflict
            }
            kube::Error::Api(status) => Self::Api {
                code: status.code,
                reason: crate::limits::sanitize(&status.reason, crate::limits::MAX_REASON_CHARS),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => Self::Unreachable,
            _ => Self::Other,
        }
    }
}

/// Whether a 409 is server-side apply's conflict between field managers (a non-forced apply), which no retry clears.
/// The result of a call whose object may already be gone, where gone is fine: a delete (its purpose is the
/// object's absence), a restart of what may not exist yet, an existence check. Absence (404) is `Ok(None)`; every
/// other error stays an error, for the caller to map with its action's name.
pub(crate) fn absent_ok<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(error),
    }
}

fn field_manager_conflict(status: &kube::core::Status) -> bool {
    status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .any(|c| c.reason == "FieldManagerConflict")
}

impl fmt::Display for KubeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("it was not found"),
            Self::Unreachable => f.write_str("the API server is unreachable or did not answer in time"),
            Self::Forbidden => f.write_str("the executor is not allowed to (check its RBAC)"),
            Self::Conflict => f.write_str(
                "the object changed after it was checked (409 Conflict), so nothing was written; the next call checks it again",
            ),
            Self::Api { code, reason } if reason.is_empty() => write!(f, "the API server answered {code}"),
            Self::Api { code, reason } => write!(f, "the API server answered {code} {reason}"),
            Self::TooLarge(too_large) => write!(f, "the API server's answer was refused: {too_large}"),
            Self::Other => f.write_str("the API server's answer could not be used"),
        }
    }
}

/// Which cluster an API call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The management cluster.
    Management,
    /// The workload cluster.
    Workload,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Management => "management",
            Self::Workload => "workload",
        })
    }
}

/// Everything that can go wrong in an RPC.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed (e.g. no cluster name).
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] crate::domain::RequestError),
    /// The live Cluster's Konnector Agent configuration is invalid.
    #[error("invalid Konnector Agent configuration: {0}")]
    InvalidConfig(#[from] crate::domain::ConfigError),
    /// The management cluster serves neither v1beta2 nor v1beta1 of CAPI's Cluster.
    #[error(
        "the management cluster serves no supported version of cluster.x-k8s.io Clusters (v1beta2 or v1beta1); is CAPI 1.10 or later installed?"
    )]
    CapiNotServed,
    /// The request's uid is not the live Cluster's: it was written for a Cluster that has since been replaced.
    #[error(
        "the request is stale: Cluster {cluster} now has another uid than the request names (deleted and re-created); nothing was done"
    )]
    StaleRequest {
        /// `namespace/name`.
        cluster: String,
    },
    /// ApplyAgent for a Cluster that is being deleted.
    #[error(
        "Cluster {cluster} is being deleted; the Konnector Agent is not applied to a Cluster being deleted (its uninstall belongs to BeforeClusterDelete)"
    )]
    ClusterDeleting {
        /// `namespace/name`.
        cluster: String,
    },
    /// RemoveAgent for a Cluster that is not being deleted.
    #[error(
        "Cluster {cluster} is not being deleted (no deletionTimestamp); the Konnector Agent is only uninstalled from a Cluster being deleted, and nothing was deleted"
    )]
    ClusterNotDeleting {
        /// `namespace/name`.
        cluster: String,
    },
    /// The HelmChartProxy is being deleted (an uninstall is under way), so applying it now would write into an
    /// object that is going away.
    #[error(
        "HelmChartProxy {hcp} is being deleted; it is applied again once CAAPH has finished the uninstall, retry later"
    )]
    HelmChartProxyDeleting {
        /// `namespace/name`.
        hcp: String,
    },
    /// Every name the Cluster's HelmChartProxy may take is held by a proxy of another Cluster (for example two
    /// Clusters carrying the same copied `caren.nutanix.com/cluster-uuid` annotation).
    #[error(
        "HelmChartProxy {hcp} and the name-based fallback belong to other Clusters, so nothing was written for Cluster {cluster}; remove the copied caren.nutanix.com/cluster-uuid annotation or the foreign proxy"
    )]
    HelmChartProxyNameTaken {
        /// `namespace/name` of the Cluster.
        cluster: String,
        /// `namespace/name` of the proxy the naming rule names.
        hcp: String,
    },
    /// Reading the credentials Secret failed.
    #[error("cannot read the Prism Central credentials Secret {secret} on the management cluster: {failure}")]
    ReadCredentialsSecret {
        /// `namespace/name`.
        secret: String,
        /// Why.
        failure: KubeFailure,
    },
    /// The credentials Secret exists but does not hold usable credentials.
    #[error("the Prism Central credentials Secret {secret} is not usable: {problem}")]
    ValidateCredentialsSecret {
        /// `namespace/name`.
        secret: String,
        /// What is wrong, naming keys only.
        problem: String,
    },
    /// Reading the Cluster on the management cluster failed.
    #[error("cannot read Cluster {cluster} on the management cluster: {failure}")]
    ReadCluster {
        /// `namespace/name`.
        cluster: String,
        /// Why.
        failure: KubeFailure,
    },
    /// The HelmChartProxy would select no Cluster.
    #[error(
        "Cluster {cluster} has no label cluster.x-k8s.io/cluster-name={name}, so the HelmChartProxy would not select it and the agent would never be installed; add the label to the Cluster"
    )]
    ClusterNotSelectable {
        /// `namespace/name`.
        cluster: String,
        /// The Cluster's name, the label value expected.
        name: String,
    },
    /// Reading the workload cluster's kubeconfig Secret failed.
    #[error("cannot read the kubeconfig Secret {secret} of the workload cluster: {failure}")]
    ReadKubeconfig {
        /// `namespace/name`.
        secret: String,
        /// Why.
        failure: KubeFailure,
    },
    /// The kubeconfig Secret does not hold a usable kubeconfig.
    #[error("the kubeconfig Secret {secret} of the workload cluster is not usable: {problem}")]
    ParseKubeconfig {
        /// `namespace/name`.
        secret: String,
        /// What is wrong.
        problem: String,
    },
    /// Reading a defaults ConfigMap failed, or its content is malformed.
    #[error("cannot use ConfigMap {configmap}: {problem}")]
    ReadDefaults {
        /// `namespace/name`.
        configmap: String,
        /// What is wrong.
        problem: String,
        /// The API failure, when there was one.
        failure: Option<KubeFailure>,
    },
    /// The values template could not be rendered.
    #[error("cannot render the Konnector Agent Helm values from {source_name}: {error}")]
    RenderValues {
        /// Where the template came from.
        source_name: String,
        /// Why.
        error: crate::values::RenderError,
    },
    /// The Prism Central preflight failed and the executor is configured to block on it.
    #[error("{}; nothing was applied (the Prism Central preflight is blocking)", failure.describe(endpoint))]
    PrismCentralPreflight {
        /// `host:port`.
        endpoint: String,
        /// What failed.
        failure: crate::prism::PreflightFailure,
    },
    /// A client whose certificate names a read-only identity (`--client-read-only-names`) called a method that is
    /// not one of the read RPCs (`access::READ_ONLY_METHODS`). Nothing was read or written.
    #[error(
        "client identity {identity} is read-only: it may call GetAgentStatus, PlanAgent, health and reflection, not {method}; nothing was done"
    )]
    ReadOnlyClient {
        /// The allow-listed subjectAltName the client's certificate carries.
        identity: String,
        /// The method refused (an AgentService method name, or `other`).
        method: String,
    },
    /// A call to a Kubernetes API server failed.
    #[error("cannot {action} on the {side} cluster: {failure}")]
    Kube {
        /// What was attempted, e.g. `apply Secret ntnx-system/konnector-agent`.
        action: String,
        /// Which cluster.
        side: Side,
        /// Why.
        failure: KubeFailure,
    },
}

impl Error {
    /// Wraps a kube error from an API call.
    pub fn kube(action: impl Into<String>, side: Side, error: &kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            side,
            failure: KubeFailure::from_kube(error),
        }
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> Code {
        let by_failure = |f: &KubeFailure, not_found: Code| match f {
            KubeFailure::NotFound => not_found,
            KubeFailure::Unreachable => Code::Unavailable,
            // A lost race, not a fault: ABORTED is gRPC's "retry the whole read-check-write", and the gateway
            // answers it as a failure CAPI calls the hook again for (see gateway/src/answer.rs).
            KubeFailure::Conflict => Code::Aborted,
            _ => Code::Internal,
        };
        match self {
            Self::InvalidRequest(_) | Self::InvalidConfig(_) => Code::InvalidArgument,
            Self::CapiNotServed
            | Self::StaleRequest { .. }
            | Self::ClusterDeleting { .. }
            | Self::ClusterNotDeleting { .. } => Code::FailedPrecondition,
            Self::HelmChartProxyDeleting { .. } => Code::Unavailable,
            Self::ValidateCredentialsSecret { .. }
            | Self::ParseKubeconfig { .. }
            | Self::ClusterNotSelectable { .. }
            | Self::HelmChartProxyNameTaken { .. }
            | Self::RenderValues { .. } => Code::FailedPrecondition,
            Self::ReadCredentialsSecret { failure, .. }
            | Self::ReadKubeconfig { failure, .. }
            | Self::ReadCluster { failure, .. } => by_failure(failure, Code::FailedPrecondition),
            Self::ReadDefaults { failure, .. } => match failure {
                Some(f) => by_failure(f, Code::FailedPrecondition),
                None => Code::FailedPrecondition,
            },
            Self::Kube { failure, .. } => by_failure(failure, Code::Internal),
            // The network may come back by itself; a wrong URL, bundle or password needs a person.
            Self::PrismCentralPreflight { failure, .. } if failure.transient() => Code::Unavailable,
            Self::PrismCentralPreflight { .. } => Code::FailedPrecondition,
            Self::ReadOnlyClient { .. } => Code::PermissionDenied,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        // Bounded and free of control characters whatever a part of it came from (see `limits`).
        let mut status = Status::new(
            error.code(),
            crate::limits::sanitize(&error.to_string(), crate::limits::MAX_MESSAGE_CHARS),
        );
        // Marks the status as the executor's own answer, so the gateway tells "the executor said UNAVAILABLE"
        // from "the executor could not be reached" (see `konnector_proto::EXECUTOR_ANSWER_METADATA`).
        status.metadata_mut().insert(
            konnector_proto::EXECUTOR_ANSWER_METADATA,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_reason_is_bounded_and_sanitised() {
        let hostile = kube::core::Status::failure(
            "message echoing an object",
            &format!("Bad\n\x1b[2J{}", "x".repeat(1 << 20)),
        )
        .with_code(422);
        let failure = KubeFailure::from_kube(&kube::Error::Api(hostile.boxed()));
        let KubeFailure::Api { code, reason } = &failure else {
            panic!("{failure:?}")
        };
        assert_eq!(*code, 422);
        assert!(
            reason.starts_with("Bad[2Jxxx") && reason.chars().count() <= crate::limits::MAX_REASON_CHARS + 1
        );
        assert!(!failure.to_string().contains("echoing"));
    }

    #[test]
    fn only_absence_is_ok() {
        let status = |code: u16, reason: &str| {
            kube::Error::Api(kube::core::Status::failure("m", reason).with_code(code).boxed())
        };
        assert_eq!(absent_ok(Ok::<_, kube::Error>(7)).unwrap(), Some(7));
        assert_eq!(absent_ok::<()>(Err(status(404, "NotFound"))).unwrap(), None);
        // A refusal, a lost race or an unreachable server is no proof of absence.
        for code in [403, 409, 410, 500, 503] {
            assert!(absent_ok::<()>(Err(status(code, "x"))).is_err(), "{code}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(
            Error::InvalidConfig(crate::domain::ConfigError("x".into())).code(),
            Code::InvalidArgument
        );
        let not_deleting = Error::ClusterNotDeleting {
            cluster: "ns/c".into(),
        };
        assert_eq!(not_deleting.code(), Code::FailedPrecondition);
        let missing = Error::ReadCredentialsSecret {
            secret: "ns/creds".into(),
            failure: KubeFailure::NotFound,
        };
        assert_eq!(missing.code(), Code::FailedPrecondition);
        assert_eq!(
            missing.to_string(),
            "cannot read the Prism Central credentials Secret ns/creds on the management cluster: it was not found"
        );
        let down = Error::Kube {
            action: "apply Namespace ntnx-system".into(),
            side: Side::Workload,
            failure: KubeFailure::Unreachable,
        };
        assert_eq!(down.code(), Code::Unavailable);
        assert_eq!(
            Error::Kube {
                action: "x".into(),
                side: Side::Management,
                failure: KubeFailure::Forbidden
            }
            .code(),
            Code::Internal
        );
        let refused = Error::PrismCentralPreflight {
            endpoint: "pc:9440".into(),
            failure: crate::prism::PreflightFailure::Unauthorized { status: 401 },
        };
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused
                .to_string()
                .starts_with("Prism Central pc:9440 refused the credentials")
        );
        let unreachable = Error::PrismCentralPreflight {
            endpoint: "pc:9440".into(),
            failure: crate::prism::PreflightFailure::Connect,
        };
        assert_eq!(unreachable.code(), Code::Unavailable);
        let too_large = Error::Kube {
            action: "read Namespace ntnx-system".into(),
            side: Side::Workload,
            failure: KubeFailure::from_kube(&kube::Error::Service(Box::new(crate::limits::BodyTooLarge {
                limit: 4 << 20,
                per_event: false,
            }))),
        };
        assert_eq!(
            too_large.to_string(),
            "cannot read Namespace ntnx-system on the workload cluster: the API server's answer was refused: the response exceeded the 4 MiB limit and was cut off"
        );
        assert_eq!(too_large.code(), Code::Internal);
        // The ownership-checked write lost a race: retryable, with a message that says so.
        let raced = Error::kube(
            "apply HelmChartProxy ns/konnector-agent-c1",
            Side::Management,
            &kube::Error::Api(
                kube::core::Status::failure("the object has been modified", "Conflict")
                    .with_code(409)
                    .boxed(),
            ),
        );
        assert_eq!(raced.code(), Code::Aborted);
        let raced: Status = raced.into();
        assert_eq!(raced.code(), Code::Aborted);
        assert!(
            raced.message().contains("changed after it was checked") && !raced.message().contains("modified"),
            "{}",
            raced.message()
        );
        // A conflict between server-side apply field managers is not retryable: it stays INTERNAL.
        let mut managers = kube::core::Status::failure("conflict with kubectl", "Conflict").with_code(409);
        managers.details = Some(kube::core::response::StatusDetails {
            causes: vec![kube::core::response::StatusCause {
                reason: "FieldManagerConflict".into(),
                message: "conflict with kubectl".into(),
                field: ".spec.version".into(),
            }],
            name: "x".into(),
            group: "addons.cluster.x-k8s.io".into(),
            kind: "helmchartproxies".into(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        let managers = Error::kube("apply x", Side::Management, &kube::Error::Api(managers.boxed()));
        assert_eq!(managers.code(), Code::Internal);
        let read_only: Status = Error::ReadOnlyClient {
            identity: "konnector-cli".into(),
            method: "ApplyAgent".into(),
        }
        .into();
        assert_eq!(read_only.code(), Code::PermissionDenied);
        assert_eq!(
            read_only.message(),
            "client identity konnector-cli is read-only: it may call GetAgentStatus, PlanAgent, health and reflection, not ApplyAgent; nothing was done"
        );
        let status: Status = down.into();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "cannot apply Namespace ntnx-system on the workload cluster: the API server is unreachable or did not answer in time"
        );
    }
}
