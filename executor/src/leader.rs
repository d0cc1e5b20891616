//! Leader election over a `coordination.k8s.io/v1` Lease: every replica serves hooks, exactly one runs the
//! reconciler.
//!
//! Expiry is judged on this process's monotonic clock, as client-go does: a Lease whose resourceVersion has not
//! changed for `lease_duration` since this replica first saw it is taken over. Comparing the holder's `renewTime`
//! with our wall clock instead would make failover depend on clock skew between nodes.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

/// Where the Lease lives and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace: the executor's own.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a Lease that is not renewed stays with its holder; failover takes at most this plus
    /// `retry_interval`.
    pub lease_duration: Duration,
    /// How often the holder renews, and how often the others try to take over.
    pub retry_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            namespace: "default".to_owned(),
            name: "konnector-executor-reconciler".to_owned(),
            identity: "konnector-executor".to_owned(),
            lease_duration: Duration::from_secs(15),
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// One replica's view of the Lease.
pub(crate) struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The resourceVersion last seen, and when (on our clock) it was first seen.
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    pub(crate) fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Takes or renews the Lease. `Ok(true)` while this replica holds it.
    pub(crate) async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let first_seen = match &self.observed {
            Some((v, at)) if *v == version => *at,
            _ => Instant::now(),
        };
        self.observed = Some((version, first_seen));
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.config.identity;
        let expired = holder.is_empty() || first_seen.elapsed() >= self.config.lease_duration;
        if !mine && !expired {
            return Ok(false);
        }
        let mut lease = lease;
        let spec = lease.spec.get_or_insert_with(Default::default);
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        // The replace carries the resourceVersion read above, so two replicas racing for an expired Lease cannot
        // both win: the second gets 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observed = written.metadata.resource_version.map(|v| (v, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up on a graceful shutdown, so another replica takes over at its next try rather than
    /// after the Lease expires. Best effort.
    pub(crate) async fn release(&self) {
        let patch = serde_json::json!({"spec": {"holderIdentity": null}});
        if let Ok(Some(lease)) = self.api.get_opt(&self.config.name).await
            && lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(&self.config.identity)
            && let Err(e) = self
                .api
                .patch(&self.config.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        {
            tracing::warn!(error = %crate::limits::brief(&e), "cannot release the reconciler Lease");
        }
    }
}
