//! konnector's minimal CAPI infrastructure and control-plane provider, for tests driven by the real CAPI manager
//! (tests/crds/konnector.test_provider.yaml holds its CRDs, which follow CAPI's v1beta2 provider contracts).
//!
//! It runs no machines. What CAPI's topology and Cluster controllers need from providers, it does:
//! - `KonnectorTestCluster` (InfraCluster): publishes `spec.controlPlaneEndpoint` (the workload API server given
//!   for that Cluster) and sets `status.initialization.provisioned`;
//! - `KonnectorTestControlPlane` (ControlPlane): writes the `<cluster>-kubeconfig` Secret pointing at that workload
//!   API server (as a control-plane provider must), sets `status.initialization.controlPlaneInitialized`, and
//!   reports `status.version` = `spec.version`, so an upgrade CAPI rolls out completes at once.
//!
//! Objects of Clusters it was not given a workload API server for are left alone (never initialised).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use crate::{control_plane::ControlPlane, workload::CLUSTER_NAME_LABEL};

/// The provider's CRDs (InfraCluster, ControlPlane and their templates), one manifest per CRD.
pub fn crd_manifests() -> Vec<&'static str> {
    include_str!("../crds/konnector.test_provider.yaml")
        .split("\n---\n")
        .collect()
}

/// The InfraCluster group/version.
pub const INFRA_API_VERSION: &str = "infrastructure.konnector.test/v1alpha1";
/// The ControlPlane group/version.
pub const CONTROL_PLANE_API_VERSION: &str = "controlplane.konnector.test/v1alpha1";
const MANAGER: &str = "konnector-test-provider";

/// The provider's `ApiResource` for `kind` (`KonnectorTestCluster`, `KonnectorTestControlPlane`, or a template).
pub fn resource(kind: &str) -> ApiResource {
    let group = if kind.starts_with("KonnectorTestControlPlane") {
        "controlplane.konnector.test"
    } else {
        "infrastructure.konnector.test"
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, "v1alpha1", kind),
        &format!("{}s", kind.to_lowercase()),
    )
}

/// Where a Cluster's workload API server is.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// An admin kubeconfig for it (what goes into `<cluster>-kubeconfig`).
    pub kubeconfig: String,
}

impl Target {
    /// The target for a workload control plane.
    pub fn of(cp: &ControlPlane) -> Self {
        Self {
            port: cp.port(),
            kubeconfig: cp.kubeconfig_yaml().to_owned(),
        }
    }
}

type Targets = Arc<Mutex<BTreeMap<String, Target>>>;

/// The running provider. Dropping it stops it.
pub struct TestProvider {
    targets: Targets,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestProvider {
    /// Installs nothing (see [`crd_manifests`]); watches both kinds on `mgmt` and serves them.
    pub fn start(mgmt: Client) -> Self {
        let targets: Targets = Arc::default();
        let tasks = ["KonnectorTestCluster", "KonnectorTestControlPlane"]
            .into_iter()
            .map(|kind| {
                let (mgmt, targets) = (mgmt.clone(), targets.clone());
                tokio::spawn(async move {
                    let api: Api<DynamicObject> = Api::all_with(mgmt.clone(), &resource(kind));
                    let mut events = watcher(api, watcher::Config::default())
                        .default_backoff()
                        .applied_objects()
                        .boxed();
                    while let Some(event) = events.next().await {
                        let Ok(obj) = event else { continue };
                        let target = cluster_key(&obj).and_then(|k| targets.lock().unwrap().get(&k).cloned());
                        let Some(target) = target else { continue };
                        let result = if kind == "KonnectorTestCluster" {
                            reconcile_infra(&mgmt, &obj, &target).await
                        } else {
                            reconcile_control_plane(&mgmt, &obj, &target).await
                        };
                        if let Err(e) = result {
                            // The next event (or the watcher's relist) tries again.
                            tracing::warn!(kind, name = ?obj.metadata.name, "test provider: {e:#}");
                        }
                    }
                })
            })
            .collect();
        Self { targets, tasks }
    }

    /// Serves Cluster `namespace/name` with `target` as its workload API server.
    pub fn add_target(&self, namespace: &str, name: &str, target: Target) {
        self.targets
            .lock()
            .unwrap()
            .insert(format!("{namespace}/{name}"), target);
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn cluster_key(obj: &DynamicObject) -> Option<String> {
    let cluster = obj.metadata.labels.as_ref()?.get(CLUSTER_NAME_LABEL)?;
    Some(format!("{}/{cluster}", obj.metadata.namespace.as_deref()?))
}

async fn reconcile_infra(mgmt: &Client, obj: &DynamicObject, target: &Target) -> anyhow::Result<()> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        mgmt.clone(),
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        &resource("KonnectorTestCluster"),
    );
    let name = obj
        .metadata
        .name
        .as_deref()
        .context("InfraCluster without a name")?;
    if obj.data["spec"]["controlPlaneEndpoint"]["port"] != json!(target.port) {
        let patch = json!({"spec": {"controlPlaneEndpoint": {"host": "127.0.0.1", "port": target.port}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if obj.data["status"]["initialization"]["provisioned"] != json!(true) {
        let patch = json!({"status": {"initialization": {"provisioned": true}}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

async fn reconcile_control_plane(mgmt: &Client, obj: &DynamicObject, target: &Target) -> anyhow::Result<()> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    let name = obj
        .metadata
        .name
        .as_deref()
        .context("ControlPlane without a name")?;
    let cluster = obj
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CLUSTER_NAME_LABEL))
        .context("ControlPlane without the cluster-name label")?;

    // The kubeconfig Secret, as a control-plane provider writes it: CAPI's cluster controller leaves it to us.
    let secrets: Api<Secret> = Api::namespaced(mgmt.clone(), namespace);
    let secret_name = format!("{cluster}-kubeconfig");
    if secrets.get_opt(&secret_name).await?.is_none() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some([(CLUSTER_NAME_LABEL.to_owned(), cluster.clone())].into()),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: CONTROL_PLANE_API_VERSION.to_owned(),
                        kind: "KonnectorTestControlPlane".to_owned(),
                        name: name.to_owned(),
                        uid: obj.metadata.uid.clone().unwrap_or_default(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    },
                ]),
                ..Default::default()
            },
            type_: Some("cluster.x-k8s.io/secret".to_owned()),
            data: Some(
                [(
                    "value".to_owned(),
                    ByteString(target.kubeconfig.clone().into_bytes()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        secrets
            .patch(&secret_name, &PatchParams::apply(MANAGER), &Patch::Apply(&secret))
            .await?;
    }

    let api: Api<DynamicObject> =
        Api::namespaced_with(mgmt.clone(), namespace, &resource("KonnectorTestControlPlane"));
    let version = obj.data["spec"]["version"].clone();
    let status = &obj.data["status"];
    if status["initialization"]["controlPlaneInitialized"] != json!(true)
        || status["version"] != version
        || status["observedGeneration"] != json!(obj.metadata.generation)
    {
        // The new version is reported as soon as CAPI asks for it: there are no machines to roll.
        let patch = json!({"status": {
            "initialization": {"controlPlaneInitialized": true},
            "version": version,
            "observedGeneration": obj.metadata.generation,
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}
