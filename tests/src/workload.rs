//! Creates workload clusters on a management control plane the way CAPI leaves them: a `Cluster` object with the
//! `cluster.x-k8s.io/cluster-name` label, and the `<cluster>-kubeconfig` Secret (key `value`) pointing at a
//! workload API server.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{control_plane::ControlPlane, crds::HARNESS_MANAGER};

/// The label CAPI puts on everything that belongs to a cluster, and on which the HelmChartProxy selects.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// The `ApiResource` for CAPI `Cluster` at `version` (`v1beta1` or `v1beta2`).
pub fn cluster_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", version, "Cluster"),
        "clusters",
    )
}

/// A workload cluster as created on the management cluster.
#[derive(Clone, Debug)]
pub struct WorkloadCluster {
    /// The Cluster's namespace on the management cluster.
    pub namespace: String,
    /// The Cluster's name.
    pub name: String,
    /// The Cluster's `metadata.uid`, as assigned by the API server.
    pub uid: String,
    /// The Cluster object as stored (v1beta2).
    pub object: DynamicObject,
}

/// Options for [`create_workload_cluster`].
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// The Cluster's `spec` (v1beta2 shape). Defaults to a control-plane endpoint and a topology whose only
    /// variable is `clusterConfig` = [`ClusterOptions::cluster_config`] (none when that is unset).
    pub spec: Option<Value>,
    /// The `clusterConfig` topology variable's value, used when `spec` is unset.
    pub cluster_config: Option<Value>,
    /// Extra labels on the Cluster, beside the cluster-name label.
    pub labels: BTreeMap<String, String>,
    /// Leave out the cluster-name label, to model a Cluster CAPI did not label.
    pub without_name_label: bool,
    /// Set `status.initialization.controlPlaneInitialized` and the `ControlPlaneInitialized` condition to True.
    pub control_plane_initialized: bool,
}

impl ClusterOptions {
    /// A Cluster whose control plane has initialised: the state in which CAPI calls the lifecycle hooks.
    pub fn initialized() -> Self {
        Self {
            control_plane_initialized: true,
            ..Default::default()
        }
    }
}

/// The spec of a topology Cluster of the ClusterClass `konnector-test`, spelled as CAPI's `version` of the Cluster
/// API validates it: v1beta2 names the class with `classRef`, v1beta1 with `class`, and both refuse an empty
/// `variables` list (so it is left out when there is no `clusterConfig`).
pub fn default_spec(version: &str, port: u16, cluster_config: Option<&Value>) -> Value {
    let mut topology = if version == "v1beta1" {
        json!({"class": "konnector-test", "version": "v1.33.0"})
    } else {
        json!({"classRef": {"name": "konnector-test"}, "version": "v1.33.0"})
    };
    if let Some(cc) = cluster_config {
        topology["variables"] = json!([{"name": "clusterConfig", "value": cc}]);
    }
    json!({"controlPlaneEndpoint": {"host": "127.0.0.1", "port": port}, "topology": topology})
}

/// Creates the `Cluster` `namespace/name` on `mgmt` and its kubeconfig Secret pointing at `workload`.
pub async fn create_workload_cluster(
    mgmt: &Client,
    workload: &ControlPlane,
    namespace: &str,
    name: &str,
    options: ClusterOptions,
) -> anyhow::Result<WorkloadCluster> {
    crate::control_plane::ensure_namespace(mgmt, namespace).await?;
    let mut labels = options.labels.clone();
    if !options.without_name_label {
        labels.insert(CLUSTER_NAME_LABEL.to_owned(), name.to_owned());
    }
    let version = served_cluster_version(mgmt).await?;
    let spec = match &options.spec {
        // Specs are written in v1beta2's spelling; CAPI's v1beta1 schema refuses `classRef`.
        Some(spec) if version == "v1beta1" => crate::capi_stand_in::v1beta1_spec(spec, namespace),
        Some(spec) => spec.clone(),
        None => default_spec(version, workload.port(), options.cluster_config.as_ref()),
    };
    let ar = cluster_resource(version);
    let api: Api<DynamicObject> = Api::namespaced_with(mgmt.clone(), namespace, &ar);
    let cluster = json!({
        "apiVersion": format!("cluster.x-k8s.io/{version}"),
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply(HARNESS_MANAGER).force(),
        &Patch::Apply(&cluster),
    )
    .await
    .with_context(|| format!("cannot create Cluster {namespace}/{name}"))?;
    if options.control_plane_initialized {
        set_control_plane_initialized(mgmt, namespace, name).await?;
    }
    put_kubeconfig_secret(mgmt, namespace, name, workload.kubeconfig_yaml()).await?;
    let object = api.get(name).await?;
    let uid = object.metadata.uid.clone().context("Cluster without uid")?;
    Ok(WorkloadCluster {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid,
        object,
    })
}

/// The version of CAPI's Cluster the management cluster serves: `v1beta2` (CAPI 1.11+) or `v1beta1` (1.10).
pub async fn served_cluster_version(mgmt: &Client) -> anyhow::Result<&'static str> {
    let groups = mgmt.list_api_groups().await.context("cannot list API groups")?;
    let served: Vec<String> = groups
        .groups
        .iter()
        .filter(|g| g.name == "cluster.x-k8s.io")
        .flat_map(|g| g.versions.iter().map(|v| v.version.clone()))
        .collect();
    if served.iter().any(|v| v == "v1beta2") {
        Ok("v1beta2")
    } else if served.iter().any(|v| v == "v1beta1") {
        Ok("v1beta1")
    } else {
        anyhow::bail!("the management cluster serves no cluster.x-k8s.io Cluster version")
    }
}

/// Writes the status CAPI writes once the control plane is up, in the served version's shape: v1beta2's
/// `status.initialization.controlPlaneInitialized`, or v1beta1's `status.controlPlaneReady`, with the
/// `ControlPlaneInitialized` condition.
pub async fn set_control_plane_initialized(mgmt: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let version = served_cluster_version(mgmt).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(mgmt.clone(), namespace, &cluster_resource(version));
    let condition = json!([{
        "type": "ControlPlaneInitialized", "status": "True", "reason": "Initialized",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"
    }]);
    let status = if version == "v1beta2" {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "status": {
                "phase": "Provisioned",
                "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true},
                "conditions": condition
            }
        })
    } else {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1",
            "kind": "Cluster",
            "status": {"phase": "Provisioned", "infrastructureReady": true, "controlPlaneReady": true,
                "conditions": condition}
        })
    };
    api.patch_status(
        name,
        &PatchParams::apply("capi-stand-in").force(),
        &Patch::Apply(&status),
    )
    .await
    .with_context(|| format!("cannot set status of Cluster {namespace}/{name}"))?;
    Ok(())
}

/// Creates or replaces the CAPI kubeconfig Secret `<name>-kubeconfig` (key `value`).
pub async fn put_kubeconfig_secret(
    mgmt: &Client,
    namespace: &str,
    cluster: &str,
    kubeconfig: &str,
) -> anyhow::Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(format!("{cluster}-kubeconfig")),
            namespace: Some(namespace.to_owned()),
            // CAPI's label, when the name fits in a label value (a Cluster name may be longer).
            labels: (cluster.len() <= 63)
                .then(|| [(CLUSTER_NAME_LABEL.to_owned(), cluster.to_owned())].into()),
            ..Default::default()
        },
        type_: Some("cluster.x-k8s.io/secret".to_owned()),
        data: Some([("value".to_owned(), ByteString(kubeconfig.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    put_secret(mgmt, secret).await
}

/// Creates or replaces the Prism Central credentials Secret a user would create for a cluster.
pub async fn put_credentials_secret(
    mgmt: &Client,
    namespace: &str,
    name: &str,
    entries: &[(&str, &str)],
) -> anyhow::Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    put_secret(mgmt, secret).await
}

async fn put_secret(client: &Client, secret: Secret) -> anyhow::Result<()> {
    let ns = secret
        .metadata
        .namespace
        .clone()
        .context("Secret without namespace")?;
    let name = secret.metadata.name.clone().context("Secret without name")?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    api.patch(
        &name,
        &PatchParams::apply(HARNESS_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .with_context(|| format!("cannot write Secret {ns}/{name}"))?;
    Ok(())
}

/// A finalizer the CAPI stand-in puts on Clusters it deletes, so that a deleted Cluster stays, with its
/// deletionTimestamp, the way CAPI's own finalizer keeps it while BeforeClusterDelete runs.
pub const CAPI_STAND_IN_FINALIZER: &str = "cluster.cluster.x-k8s.io";

/// Starts deleting the Cluster as CAPI does: it keeps existing, with a deletionTimestamp, until
/// [`finish_cluster_deletion`] removes the finalizer.
pub async fn start_cluster_deletion(mgmt: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let version = served_cluster_version(mgmt).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(mgmt.clone(), namespace, &cluster_resource(version));
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": [CAPI_STAND_IN_FINALIZER]}})),
    )
    .await
    .with_context(|| format!("cannot add the finalizer to Cluster {namespace}/{name}"))?;
    api.delete(name, &Default::default())
        .await
        .with_context(|| format!("cannot delete Cluster {namespace}/{name}"))?;
    Ok(())
}

/// Lets a Cluster whose deletion started go: removes the stand-in's finalizer.
pub async fn finish_cluster_deletion(mgmt: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let version = served_cluster_version(mgmt).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(mgmt.clone(), namespace, &cluster_resource(version));
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot release Cluster {namespace}/{name}")),
    }
}

/// Replaces the live Cluster's `clusterConfig` topology variable (the only source the executor reads).
pub async fn set_cluster_config(
    mgmt: &Client,
    namespace: &str,
    name: &str,
    cluster_config: Value,
) -> anyhow::Result<()> {
    let version = served_cluster_version(mgmt).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(mgmt.clone(), namespace, &cluster_resource(version));
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"topology": {"variables": [{"name": "clusterConfig", "value": cluster_config}]}}})),
    )
    .await
    .with_context(|| format!("cannot set clusterConfig of Cluster {namespace}/{name}"))?;
    Ok(())
}
