//! The executor's use of [`crate::prism`]: the preflight ApplyAgent runs before it writes anything, and the
//! registration lookup GetAgentStatus reports. What is checked, and how, lives in `prism.rs`; this module decides
//! what a result means for the answer (a note, a Warning Event, or a refusal) and remembers it for the status. The
//! Warning Event of `warn` is written once per Cluster and failure, not once per hook (`prism_warnings.rs`).

use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    jiff::Timestamp,
};
use kube::{Api, runtime::events::EventType};
use tracing::Instrument;

use crate::{
    domain::{AgentRequest, LiveCluster, Trigger, agent_request},
    error::{Error, KubeFailure},
    events::PREFLIGHT_FAILED_REASON,
    executor::Executor,
    prism::{self, Credentials, PreflightMode, PreflightRecord, PreflightVerdict, Registration},
    remote::on_workload,
};

impl Executor {
    /// Checks Prism Central for `live` with the credentials `secret` holds (already validated by `plan_for`).
    /// Returns the note to add to the answer, if any; in blocking mode a failure is an error instead.
    pub(crate) async fn prism_preflight(
        &self,
        live: &LiveCluster,
        req: &AgentRequest,
        secret: &Secret,
        trigger: Trigger,
    ) -> Result<Option<String>, Error> {
        let mode = self.inner.config.prism_central_checks;
        if mode == PreflightMode::Off {
            return Ok(None);
        }
        let pc = &req.prism_central;
        let endpoint = prism::endpoint(&pc.host, pc.port);
        let config = &self.inner.config;
        let (verdict, checked_at, source) = match Credentials::from_secret(secret) {
            // Before any connection: a host off the allow-list is never resolved, let alone sent credentials.
            Some(_) if !config.prism_central_allowed_hosts.allows(&pc.host) => (
                PreflightVerdict::Failed(prism::PreflightFailure::NotAllowed),
                Timestamp::now(),
                "none",
            ),
            Some(credentials) => {
                // Shared per endpoint, trust settings and credentials, and bounded (prism_shared.rs): hooks for
                // Clusters on one Prism Central wait for one probe at most, never longer than the bound.
                let checks = &self.inner.prism_checks;
                let key = checks.key(pc, &credentials);
                let (target, bound) = (pc.clone(), config.prism_central_timeout);
                let (checked, source) = checks
                    .check(key, bound, async move {
                        prism::preflight(&target, &credentials, bound).await
                    })
                    .await;
                (checked.verdict, checked.checked_at, source.as_str())
            }
            // plan_for validated the Secret, so this is only reached if validation and reading ever disagree;
            // then there is nothing to check with, and plan_for's verdict stands.
            None => return Ok(None),
        };
        let message = match &verdict {
            PreflightVerdict::Passed => format!(
                "Prism Central {endpoint} is reachable, its TLS is as configured, and it accepts the credentials"
            ),
            PreflightVerdict::PassedWithoutAuthentication => format!(
                "Prism Central {endpoint} is reachable and its TLS is as configured; API-key credentials are not checked before applying"
            ),
            PreflightVerdict::Failed(f) => f.describe(&endpoint),
        };
        let outcome = match &verdict {
            PreflightVerdict::Passed => "PASSED",
            PreflightVerdict::PassedWithoutAuthentication => "PASSED_WITHOUT_AUTHENTICATION",
            PreflightVerdict::Failed(f) => f.kind(),
        };
        self.metrics().preflight(outcome);
        self.metrics().prism_check(outcome, source);
        tracing::info!(endpoint = %endpoint, outcome, source, "Prism Central preflight");
        self.memory().preflights.remember(
            &live.key,
            PreflightRecord {
                cluster_uid: live.uid.clone(),
                // When Prism Central was checked, which for a shared answer is before this hook.
                checked_at,
                trigger,
                verdict: verdict.clone(),
                message: message.clone(),
            },
        );
        let warnings = &self.memory().prism_warnings;
        match verdict {
            PreflightVerdict::Passed => {
                warnings.recovered(&live.key);
                Ok(None)
            }
            PreflightVerdict::PassedWithoutAuthentication => {
                warnings.recovered(&live.key);
                Ok(Some(message))
            }
            PreflightVerdict::Failed(failure) if mode == PreflightMode::Block => {
                // `apply` records the Warning Event for this error, as for every refusal a person must fix.
                Err(Error::PrismCentralPreflight { endpoint, failure })
            }
            PreflightVerdict::Failed(_) => {
                let note = format!("Prism Central preflight failed (applied anyway): {message}");
                // Once per Cluster and failure, not per hook (prism_warnings.rs): the answer's note and the metrics
                // above still say it every time.
                if warnings.claim(&live.key, &live.uid, &endpoint, outcome) {
                    let written = self
                        .events()
                        .create(
                            live,
                            EventType::Warning,
                            PREFLIGHT_FAILED_REASON,
                            "ApplyAgent",
                            note.clone(),
                        )
                        .await;
                    if !written {
                        warnings.unclaim(&live.key, &live.uid, &endpoint, outcome);
                    }
                } else {
                    tracing::debug!(endpoint = %endpoint, outcome, "this failure's Warning Event is already on the Cluster; not written again");
                }
                Ok(Some(note))
            }
        }
    }

    /// Whether Prism Central lists `live` as registered, and the last preflight this process ran for it.
    pub(crate) async fn prism_status(&self, live: &LiveCluster) -> (Registration, Option<PreflightRecord>) {
        let last = self.memory().preflights.last(&live.key, &live.uid);
        (self.prism_registration(live).await, last)
    }

    async fn prism_registration(&self, live: &LiveCluster) -> Registration {
        if self.inner.config.prism_central_checks == PreflightMode::Off {
            return Registration::Unknown("the executor's Prism Central checks are turned off".to_owned());
        }
        let req = match agent_request(live) {
            Ok(Some(req)) => req,
            Ok(None) => {
                return Registration::Unknown(
                    "the Konnector Agent addon is not configured for this Cluster".to_owned(),
                );
            }
            Err(e) => {
                return Registration::Unknown(format!("invalid Konnector Agent configuration: {e}"));
            }
        };
        if !self
            .inner
            .config
            .prism_central_allowed_hosts
            .allows(&req.prism_central.host)
        {
            return Registration::Unknown(
                prism::PreflightFailure::NotAllowed
                    .describe(&prism::endpoint(&req.prism_central.host, req.prism_central.port)),
            );
        }
        let key = &live.key;
        let secret_ref = format!("{}/{}", key.namespace, req.credentials_secret);
        let secret = match Api::<Secret>::namespaced(self.mgmt(), &key.namespace)
            .get(&req.credentials_secret)
            .instrument(tracing::debug_span!("read_credentials_secret"))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                return Registration::Unknown(format!(
                    "cannot read the credentials Secret {secret_ref}: {}",
                    KubeFailure::from_kube(&e)
                ));
            }
        };
        let Some(credentials) = Credentials::from_secret(&secret) else {
            return Registration::Unknown(format!(
                "the credentials Secret {secret_ref} holds no usable credentials"
            ));
        };
        let uuid = match self.kube_system_uid(live).await {
            Ok(uid) => uid,
            Err(e) => return Registration::Unknown(e.to_string()),
        };
        prism::registration(
            &req.prism_central,
            &credentials,
            &uuid,
            self.inner.config.prism_central_timeout,
        )
        .await
    }

    /// The uid of the workload cluster's kube-system Namespace: the id Prism Central registers the cluster under.
    async fn kube_system_uid(&self, live: &LiveCluster) -> Result<String, Error> {
        let remote = self.workloads().client(&live.key).await?;
        let namespaces: Api<Namespace> = Api::all(remote);
        let meta = on_workload(
            self.inner.config.remote_timeout,
            "read Namespace kube-system".to_owned(),
            namespaces.get_metadata("kube-system"),
        )
        .await?;
        Ok(meta.metadata.uid.unwrap_or_default())
    }
}
