//! What doctor reads on the CAPI side of an install, where a new install breaks first: the ExtensionConfig CAPI
//! discovers konnector through, the caBundle CAPI injected into it, the gateway Service it calls, and the
//! gateway's NetworkPolicy against the namespace CAPI's controller really runs in.
//!
//! Everything here only reads, through the user's kubeconfig; what the user may not read is reported as such (a
//! skipped check naming the permission), never as a pass. The verdicts are decided in [`crate::doctor`].

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Pod, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams},
    discovery,
};
use serde_json::Value;

/// The annotation by which CAPI copies a Secret's `ca.crt` into the ExtensionConfig's caBundle.
pub const INJECT_CA_ANNOTATION: &str = "runtime.cluster.x-k8s.io/inject-ca-from-secret";
/// The label CAPI's core provider puts on its controller Deployment (and clusterctl on every object of it).
pub const CAPI_PROVIDER_LABEL: &str = "cluster.x-k8s.io/provider=cluster-api";

/// One read: what was found, or why it could not be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// Read.
    Found(T),
    /// The object does not exist (the text names it).
    Missing(String),
    /// The user may not read it (the text names the verb and resource).
    Forbidden(String),
    /// Anything else (the API server's message).
    Error(String),
}

impl<T> Lookup<T> {
    fn from_kube(result: Result<T, kube::Error>, what: &str) -> Self {
        match result {
            Ok(v) => Self::Found(v),
            Err(kube::Error::Api(s)) if s.code == 404 => Self::Missing(what.to_owned()),
            Err(kube::Error::Api(s)) if s.code == 403 => Self::Forbidden(format!("not allowed to {what}")),
            Err(e) => Self::Error(format!("cannot {what}: {}", crate::connect::chain(&e))),
        }
    }

    /// The value, if found.
    pub fn found(&self) -> Option<&T> {
        match self {
            Self::Found(v) => Some(v),
            _ => None,
        }
    }
}

/// The ExtensionConfig, as doctor needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionConfigView {
    /// Its name.
    pub name: String,
    /// The Discovered condition: status, reason, message.
    pub discovered: Option<(String, String, String)>,
    /// How many handlers CAPI discovered.
    pub handlers: usize,
    /// `spec.clientConfig.caBundle`, decoded (PEM); empty when not set.
    pub ca_bundle: Vec<u8>,
    /// The inject-ca-from-secret annotation, `<namespace>/<name>`.
    pub inject_from: Option<String>,
    /// `spec.clientConfig.service`: namespace, name, port (443 when unset).
    pub service: Option<(String, String, i32)>,
}

/// The gateway Service and its endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayView {
    /// `<namespace>/<name>`.
    pub service: String,
    /// The Service's port CAPI calls exists, and the target port it maps to (a name or a number).
    pub target_port: Option<String>,
    /// Endpoints ready / not ready, over all the Service's EndpointSlices.
    pub ready: usize,
    /// Endpoints not ready.
    pub not_ready: usize,
    /// The labels of the pods behind the Service (of the first, by name), else the Service's selector.
    pub pod_labels: BTreeMap<String, String>,
    /// The pods' container ports, name → number, to resolve a NetworkPolicy's named or numbered port.
    pub pod_ports: BTreeMap<String, i32>,
}

/// Where CAPI's core controller runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapiController {
    /// Its namespace.
    pub namespace: String,
    /// The namespace's labels.
    pub namespace_labels: BTreeMap<String, String>,
    /// Its pods' labels (the Deployment's pod template).
    pub pod_labels: BTreeMap<String, String>,
}

/// Everything doctor reads on the CAPI side.
#[derive(Clone, Debug)]
pub struct CapiFindings {
    /// The ExtensionConfig.
    pub extension_config: Lookup<ExtensionConfigView>,
    /// The `ca.crt` of the Secret the annotation names (None: no annotation, or no ExtensionConfig).
    pub serving_ca: Option<Lookup<Vec<u8>>>,
    /// The gateway Service CAPI calls (None: no ExtensionConfig, or it names a URL).
    pub gateway: Option<Lookup<GatewayView>>,
    /// CAPI's controller(s).
    pub capi: Lookup<Vec<CapiController>>,
    /// The NetworkPolicies in the gateway's namespace.
    pub policies: Option<Lookup<Vec<NetworkPolicy>>>,
}

fn labels(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.cloned().unwrap_or_default()
}

fn extension_config_view(obj: &DynamicObject) -> ExtensionConfigView {
    let data = &obj.data;
    let conditions = data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let discovered = conditions.iter().find(|c| c["type"] == "Discovered").map(|c| {
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (s("status"), s("reason"), s("message"))
    });
    let client = &data["spec"]["clientConfig"];
    let ca_bundle = client["caBundle"]
        .as_str()
        .and_then(base64_decode)
        .unwrap_or_default();
    let service = client["service"].as_object().map(|s| {
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let port = s
            .get("port")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(443);
        (text("namespace"), text("name"), port)
    });
    ExtensionConfigView {
        name: obj.name_any(),
        discovered,
        handlers: data["status"]["handlers"].as_array().map_or(0, Vec::len),
        ca_bundle,
        inject_from: obj.annotations().get(INJECT_CA_ANNOTATION).cloned(),
        service,
    }
}

/// Standard base64 (the API server's encoding of `[]byte` fields); None when it is not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text.trim_end_matches('=').as_bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

async fn extension_config(client: &Client, name: &str) -> Lookup<ExtensionConfigView> {
    let what = format!("get ExtensionConfig {name}");
    // The served version differs by CAPI release (v1alpha1 on 1.10, v1beta2 from 1.11): ask discovery.
    let group = match discovery::group(client, "runtime.cluster.x-k8s.io").await {
        Ok(g) => g,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Lookup::Missing(format!(
                "ExtensionConfig {name}: the API server serves no runtime.cluster.x-k8s.io (is CAPI installed?)"
            ));
        }
        Err(e) => return Lookup::from_kube(Err(e), &what),
    };
    let Some((resource, _)) = group.recommended_kind("ExtensionConfig") else {
        return Lookup::Missing(format!("ExtensionConfig {name}: no ExtensionConfig kind served"));
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    match Lookup::from_kube(api.get(name).await, &what) {
        Lookup::Found(obj) => Lookup::Found(extension_config_view(&obj)),
        Lookup::Missing(_) => Lookup::Missing(format!("ExtensionConfig {name}")),
        Lookup::Forbidden(w) => Lookup::Forbidden(w),
        Lookup::Error(w) => Lookup::Error(w),
    }
}

async fn serving_ca(client: &Client, inject_from: &str) -> Lookup<Vec<u8>> {
    let Some((namespace, name)) = inject_from.split_once('/') else {
        return Lookup::Error(format!(
            "annotation {INJECT_CA_ANNOTATION}={inject_from:?} is not <namespace>/<name>"
        ));
    };
    let what = format!("get Secret {namespace}/{name}");
    match Lookup::from_kube(
        Api::<Secret>::namespaced(client.clone(), namespace)
            .get(name)
            .await,
        &what,
    ) {
        // Only ca.crt is kept: the Secret also holds the serving key, which is dropped here unread.
        Lookup::Found(secret) => match secret.data.and_then(|mut d| d.remove("ca.crt")) {
            Some(ca) => Lookup::Found(ca.0),
            None => Lookup::Missing(format!("ca.crt in Secret {namespace}/{name}")),
        },
        Lookup::Missing(_) => Lookup::Missing(format!("Secret {namespace}/{name}")),
        Lookup::Forbidden(w) => Lookup::Forbidden(w),
        Lookup::Error(w) => Lookup::Error(w),
    }
}

async fn gateway(client: &Client, namespace: &str, name: &str, port: i32) -> Lookup<GatewayView> {
    let what = format!("get Service {namespace}/{name}");
    let service = match Lookup::from_kube(
        Api::<Service>::namespaced(client.clone(), namespace)
            .get(name)
            .await,
        &what,
    ) {
        Lookup::Found(s) => s,
        Lookup::Missing(_) => return Lookup::Missing(format!("Service {namespace}/{name}")),
        Lookup::Forbidden(w) => return Lookup::Forbidden(w),
        Lookup::Error(w) => return Lookup::Error(w),
    };
    let spec = service.spec.unwrap_or_default();
    let target_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == port)
        .map(|p| match &p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s.clone(),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => i.to_string(),
            None => port.to_string(),
        });
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await;
    let slices = match Lookup::from_kube(slices, &format!("list EndpointSlices in namespace {namespace}")) {
        Lookup::Found(l) => l.items,
        Lookup::Missing(w) => return Lookup::Missing(w),
        Lookup::Forbidden(w) => return Lookup::Forbidden(w),
        Lookup::Error(w) => return Lookup::Error(w),
    };
    let (mut ready, mut not_ready) = (0, 0);
    for endpoint in slices.iter().flat_map(|s| &s.endpoints) {
        // An endpoint without a ready condition counts as ready (the EndpointSlice API's rule).
        if endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) {
            ready += 1;
        } else {
            not_ready += 1;
        }
    }
    let selector = spec.selector.unwrap_or_default();
    let selector_text = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut pods = if selector.is_empty() {
        Vec::new()
    } else {
        Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(&selector_text))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    };
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let (pod_labels, pod_ports) = match pods.first() {
        Some(pod) => (
            labels(pod.metadata.labels.as_ref()),
            pod.spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
                .collect(),
        ),
        None => (selector, BTreeMap::new()),
    };
    Lookup::Found(GatewayView {
        service: format!("{namespace}/{name}"),
        target_port,
        ready,
        not_ready,
        pod_labels,
        pod_ports,
    })
}

async fn capi_controllers(client: &Client) -> Lookup<Vec<CapiController>> {
    let deployments = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels(CAPI_PROVIDER_LABEL))
        .await;
    let mut deployments = match Lookup::from_kube(deployments, "list Deployments in all namespaces") {
        Lookup::Found(l) => l.items,
        Lookup::Missing(w) => return Lookup::Missing(w),
        Lookup::Forbidden(w) => return Lookup::Forbidden(w),
        Lookup::Error(w) => return Lookup::Error(w),
    };
    deployments.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut found = Vec::new();
    for d in deployments {
        let namespace = d.namespace().unwrap_or_default();
        let ns = Api::<Namespace>::all(client.clone()).get(&namespace).await;
        let namespace_labels = match Lookup::from_kube(ns, &format!("get Namespace {namespace}")) {
            Lookup::Found(ns) => labels(ns.metadata.labels.as_ref()),
            // The API server sets kubernetes.io/metadata.name on every namespace; that much is known without a read.
            _ => BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), namespace.clone())]),
        };
        let pod_labels = labels(
            d.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.as_ref()),
        );
        found.push(CapiController {
            namespace,
            namespace_labels,
            pod_labels,
        });
    }
    Lookup::Found(found)
}

/// Reads the CAPI side with `client`. `extension_config_name` is the chart's `extensionConfig.name`.
pub async fn gather(client: &Client, extension_config_name: &str) -> CapiFindings {
    let extension_config = extension_config(client, extension_config_name).await;
    let (mut serving, mut gw, mut policies) = (None, None, None);
    if let Lookup::Found(ec) = &extension_config {
        if let Some(from) = &ec.inject_from {
            serving = Some(serving_ca(client, from).await);
        }
        if let Some((namespace, name, port)) = &ec.service {
            gw = Some(gateway(client, namespace, name, *port).await);
            let list = Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await;
            policies = Some(
                match Lookup::from_kube(list, &format!("list NetworkPolicies in namespace {namespace}")) {
                    Lookup::Found(l) => Lookup::Found(l.items),
                    Lookup::Missing(w) => Lookup::Missing(w),
                    Lookup::Forbidden(w) => Lookup::Forbidden(w),
                    Lookup::Error(w) => Lookup::Error(w),
                },
            );
        }
    }
    CapiFindings {
        extension_config,
        serving_ca: serving,
        gateway: gw,
        capi: capi_controllers(client).await,
        policies,
    }
}

/// The CAPI Clusters in `namespace` (all namespaces when None), by name, at the version the API server prefers.
pub async fn list_clusters(
    client: &Client,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<crate::args::ClusterName>> {
    Ok(list_cluster_metas(client, namespace, None)
        .await?
        .into_iter()
        .map(|c| crate::args::ClusterName {
            namespace: c.namespace.unwrap_or_default(),
            name: c.name.unwrap_or_default(),
        })
        .collect())
}

/// The metadata (labels, annotations, uid) of the CAPI Clusters in `namespace` (all when None), only the one
/// called `name` when given, sorted by namespace and name.
pub async fn list_cluster_metas(
    client: &Client,
    namespace: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>> {
    let mut metas: Vec<_> = cluster_api(client, namespace)
        .await?
        .list_metadata(&cluster_params(name))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list Clusters: {}", crate::connect::chain(&e)))?
        .items
        .into_iter()
        .map(|c| c.metadata)
        .collect();
    metas.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(metas)
}

/// [`list_cluster_metas`] with each Cluster's whole object (its status too), sorted by namespace and name.
pub async fn list_cluster_objects(
    client: &Client,
    namespace: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<Vec<DynamicObject>> {
    let mut clusters: Vec<_> = cluster_api(client, namespace)
        .await?
        .list(&cluster_params(name))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list Clusters: {}", crate::connect::chain(&e)))?
        .items;
    clusters.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(clusters)
}

/// Clusters at the version the API server prefers.
async fn cluster_api(client: &Client, namespace: Option<&str>) -> anyhow::Result<Api<DynamicObject>> {
    use anyhow::Context;
    let group = discovery::group(client, "cluster.x-k8s.io")
        .await
        .context("cannot discover cluster.x-k8s.io (is CAPI installed?)")?;
    let (resource, _) = group
        .recommended_kind("Cluster")
        .context("the API server serves no CAPI Cluster kind")?;
    Ok(match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    })
}

fn cluster_params(name: Option<&str>) -> ListParams {
    match name {
        Some(name) => ListParams::default().fields(&format!("metadata.name={name}")),
        None => ListParams::default(),
    }
}

/// Whether CAPI says the Cluster's control plane has initialized: v1beta2's
/// `status.initialization.controlPlaneInitialized`, v1beta1's `status.controlPlaneReady`, or a
/// `ControlPlaneInitialized` condition that is True (in either version's condition lists). CAPI leaves these unset
/// until it is so, so no signal means not yet.
pub fn control_plane_initialized(cluster: &DynamicObject) -> bool {
    let status = &cluster.data["status"];
    let condition = |list: &Value| {
        list.as_array().is_some_and(|l| {
            l.iter()
                .any(|c| c["type"] == "ControlPlaneInitialized" && c["status"] == "True")
        })
    };
    status["initialization"]["controlPlaneInitialized"] == true
        || status["controlPlaneReady"] == true
        || condition(&status["conditions"])
        || condition(&status["v1beta2"]["conditions"])
        || condition(&status["deprecated"]["v1beta1"]["conditions"])
}

/// Whether `selector` selects an object with `labels` (matchLabels and matchExpressions, all of them). An empty
/// selector selects everything.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn base64_decodes_what_the_api_server_writes() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("not base64!").is_none());
    }

    #[test]
    fn selectors() {
        let l = BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), "capi-system".to_owned())]);
        let req = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
            match_labels: None,
        };
        assert!(selects(&LabelSelector::default(), &l));
        assert!(selects(&req("In", &["capi-system", "x"]), &l));
        assert!(!selects(&req("In", &["x"]), &l));
        assert!(selects(&req("NotIn", &["x"]), &l));
        assert!(selects(&req("Exists", &[]), &l));
        assert!(!selects(&req("DoesNotExist", &[]), &l));
        let ml = LabelSelector {
            match_labels: Some(BTreeMap::from([("a".into(), "b".into())])),
            match_expressions: None,
        };
        assert!(!selects(&ml, &l));
    }
}
