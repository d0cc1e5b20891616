//! A CAPI stand-in for the caller side of the Runtime SDK: it builds hook requests exactly as a given CAPI release
//! puts them on the wire (shared/reference/runtime-sdk.md §2.3) and calls a runtime extension over HTTPS.
//!
//! It starts from the Cluster as stored on the management cluster (v1beta2) and converts it to what each
//! release embeds in the request:
//! - CAPI ≤ 1.10: v1beta1, with apiVersion/kind, managedFields and the full status;
//! - CAPI 1.11–1.12: v1beta1 without apiVersion/kind, managedFields stripped, status zeroed;
//! - CAPI ≥ 1.13: v1beta2 with managedFields stripped and no status.
//!
//! Its place: the real CAPI manager (tests/src/capi_manager.rs, tests/tests/capi_real.rs) produces the 1.13 and
//! 1.14 shapes itself; the stand-in remains for the shapes no release served by the module proxy here produces
//! (1.10 and 1.11–1.12), for the sandbox, and for calls a test must aim exactly. Where they differ, CAPI is right:
//! a real 1.14 BeforeClusterUpgrade for a Cluster without MachineDeployments carries no `workersUpgrades`.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

/// The hook API version; the only one that has ever existed.
pub const HOOKS_API_VERSION: &str = "hooks.runtime.cluster.x-k8s.io/v1alpha1";

/// Which CAPI release's request shape to emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapiShape {
    /// CAPI 1.10 and earlier.
    V1_10,
    /// CAPI 1.11 and 1.12.
    V1_12,
    /// CAPI 1.13 and later.
    V1_14,
}

impl CapiShape {
    /// Every shape, oldest first.
    pub const ALL: [CapiShape; 3] = [CapiShape::V1_10, CapiShape::V1_12, CapiShape::V1_14];

    /// The release this shape stands for, as `--capi-version` spells it.
    pub fn version(self) -> &'static str {
        match self {
            CapiShape::V1_10 => "1.10",
            CapiShape::V1_12 => "1.12",
            CapiShape::V1_14 => "1.14",
        }
    }
}

impl std::str::FromStr for CapiShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim_start_matches('v') {
            "1.10" => Ok(CapiShape::V1_10),
            "1.11" | "1.12" => Ok(CapiShape::V1_12),
            "1.13" | "1.14" => Ok(CapiShape::V1_14),
            other => Err(format!(
                "unsupported CAPI version {other:?}; use 1.10, 1.12 or 1.14"
            )),
        }
    }
}

impl std::fmt::Display for CapiShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.version())
    }
}

/// The lifecycle hooks konnector implements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// AfterControlPlaneInitialized (non-blocking).
    AfterControlPlaneInitialized,
    /// BeforeClusterUpgrade, from one Kubernetes version to another.
    BeforeClusterUpgrade {
        /// The current control-plane version.
        from: String,
        /// spec.topology.version.
        to: String,
    },
    /// BeforeClusterDelete (blocking).
    BeforeClusterDelete,
}

impl Hook {
    /// The hook's name as CAPI's catalogue spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Hook::AfterControlPlaneInitialized => "AfterControlPlaneInitialized",
            Hook::BeforeClusterUpgrade { .. } => "BeforeClusterUpgrade",
            Hook::BeforeClusterDelete => "BeforeClusterDelete",
        }
    }

    /// Whether the response carries `retryAfterSeconds`.
    pub fn is_blocking(&self) -> bool {
        !matches!(self, Hook::AfterControlPlaneInitialized)
    }
}

/// Builds the JSON body CAPI `shape` sends for `hook`, from the Cluster as stored (v1beta2, as JSON).
pub fn hook_request(
    hook: &Hook,
    shape: CapiShape,
    stored_cluster: &Value,
    settings: &BTreeMap<String, String>,
) -> Value {
    let mut body = Map::new();
    body.insert("apiVersion".into(), json!(HOOKS_API_VERSION));
    body.insert("kind".into(), json!(format!("{}Request", hook.name())));
    if !settings.is_empty() {
        body.insert("settings".into(), json!(settings));
    }
    body.insert("cluster".into(), embedded_cluster(shape, stored_cluster));
    if let Hook::BeforeClusterUpgrade { from, to } = hook {
        body.insert("fromKubernetesVersion".into(), json!(from));
        body.insert("toKubernetesVersion".into(), json!(to));
        if shape != CapiShape::V1_10 {
            body.insert("controlPlaneUpgrades".into(), json!([{"version": to}]));
            body.insert("workersUpgrades".into(), json!([{"version": to}]));
        }
    }
    Value::Object(body)
}

/// Converts the stored Cluster (v1beta2; v1beta1 where the management cluster serves only that, as for 1.10)
/// into the object `shape` embeds in hook requests.
pub fn embedded_cluster(shape: CapiShape, stored: &Value) -> Value {
    let mut metadata = stored["metadata"].clone();
    if let Some(m) = metadata.as_object_mut()
        && shape != CapiShape::V1_10
    {
        m.remove("managedFields");
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a.remove("cluster.x-k8s.io/conversion-data");
        }
    }
    match shape {
        CapiShape::V1_14 => json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": metadata,
            "spec": stored["spec"],
        }),
        CapiShape::V1_12 => json!({
            "metadata": metadata,
            "spec": v1beta1_spec(&stored["spec"], stored["metadata"]["namespace"].as_str().unwrap_or_default()),
            "status": {"infrastructureReady": false, "controlPlaneReady": false},
        }),
        CapiShape::V1_10 => json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1",
            "kind": "Cluster",
            "metadata": metadata,
            "spec": v1beta1_spec(&stored["spec"], stored["metadata"]["namespace"].as_str().unwrap_or_default()),
            "status": v1beta1_status(&stored["status"]),
        }),
    }
}

/// The v1beta1 spelling of a v1beta2 Cluster spec: `topology.classRef` becomes `topology.class` and
/// `classNamespace`, and contract-versioned refs become ObjectReferences.
pub(crate) fn v1beta1_spec(spec: &Value, namespace: &str) -> Value {
    let mut spec = spec.clone();
    if let Some(topology) = spec.get_mut("topology").and_then(Value::as_object_mut)
        && let Some(class_ref) = topology.remove("classRef")
    {
        topology.insert("class".into(), class_ref["name"].clone());
        if let Some(ns) = class_ref.get("namespace") {
            topology.insert("classNamespace".into(), ns.clone());
        }
    }
    if let Some(obj) = spec.as_object_mut() {
        for key in ["controlPlaneRef", "infrastructureRef"] {
            if let Some(r) = obj.get_mut(key) {
                let group = r["apiGroup"].as_str().unwrap_or_default().to_owned();
                *r = json!({
                    "apiVersion": format!("{group}/v1beta2"),
                    "kind": r["kind"],
                    "name": r["name"],
                    "namespace": namespace,
                });
            }
        }
    }
    spec
}

/// The v1beta1 status CAPI ≤ 1.10 sends: phase, the two readiness booleans and v1beta1 conditions. `status` is
/// v1beta2's, or already v1beta1's where the management cluster serves only v1beta1 (the 1.10 shape's).
fn v1beta1_status(status: &Value) -> Value {
    let cp_initialized = status["initialization"]["controlPlaneInitialized"]
        .as_bool()
        .or_else(|| status["controlPlaneReady"].as_bool())
        .unwrap_or(false);
    let infra = status["initialization"]["infrastructureProvisioned"]
        .as_bool()
        .or_else(|| status["infrastructureReady"].as_bool())
        .unwrap_or(false);
    let conditions: Vec<Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"type": c["type"], "status": c["status"], "lastTransitionTime": c["lastTransitionTime"]}))
        .collect();
    json!({
        "phase": status["phase"].as_str().unwrap_or("Pending"),
        "infrastructureReady": infra,
        "controlPlaneReady": cp_initialized,
        "conditions": conditions,
        "observedGeneration": 1,
    })
}

/// A parsed hook answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HookAnswer {
    /// HTTP status code.
    pub http_status: u16,
    /// `status`: Success or Failure.
    pub status: String,
    /// `message`, or empty.
    pub message: String,
    /// `retryAfterSeconds`, when present.
    pub retry_after_seconds: Option<i64>,
}

impl HookAnswer {
    /// Parses a response body.
    pub fn parse(http_status: u16, body: &[u8]) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_slice(body)
            .with_context(|| format!("hook answer is not JSON: {}", String::from_utf8_lossy(body)))?;
        Ok(Self {
            http_status,
            status: v["status"].as_str().unwrap_or_default().to_owned(),
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            retry_after_seconds: v["retryAfterSeconds"].as_i64(),
        })
    }

    /// Success and, for blocking hooks, nothing more to wait for.
    pub fn is_done(&self) -> bool {
        self.status == "Success" && self.retry_after_seconds.unwrap_or(0) == 0
    }
}

/// Calls a runtime extension the way CAPI's runtime client does: POST, no Content-Type, `?timeout=`, HTTPS
/// trusting only the given CA with ALPN h2 and http/1.1, no redirects followed.
#[derive(Clone, Debug)]
pub struct ExtensionClient {
    http: reqwest::Client,
    base: String,
}

impl ExtensionClient {
    /// A client for the extension at `base` (e.g. `https://127.0.0.1:9443`), trusting `ca_pem`.
    pub fn new(base: &str, ca_pem: &str) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let mut tls =
            rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        // CAPI's Go client offers both and gets h2 from a server that speaks it.
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// POSTs `body` to `path` with `?timeout=<timeout_seconds>s`.
    pub async fn post(&self, path: &str, body: &Value, timeout_seconds: u64) -> anyhow::Result<HookAnswer> {
        let raw = self
            .post_raw(path, serde_json::to_vec(body)?, timeout_seconds, &[])
            .await?;
        HookAnswer::parse(raw.status, &raw.body)
    }

    /// POSTs raw `body` bytes to `path` with `?timeout=<timeout_seconds>s` and extra `headers` (e.g. a W3C
    /// `traceparent`), and returns the answer as received.
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        timeout_seconds: u64,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<RawAnswer> {
        let url = format!("{}{}?timeout={}s", self.base, path, timeout_seconds);
        let mut req = self
            .http
            .post(&url)
            .body(body)
            .timeout(Duration::from_secs(timeout_seconds.max(1)));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let rsp = req.send().await.with_context(|| format!("POST {url}"))?;
        let status = rsp.status().as_u16();
        let version = rsp.version();
        let body = rsp.bytes().await?.to_vec();
        Ok(RawAnswer {
            status,
            version,
            body,
        })
    }
    /// Calls Discovery and returns the handler name the extension registered for each hook.
    pub async fn discover(&self) -> anyhow::Result<BTreeMap<String, Handler>> {
        let body = json!({"apiVersion": HOOKS_API_VERSION, "kind": "DiscoveryRequest"});
        let url = format!(
            "{}/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery?timeout=10s",
            self.base
        );
        let rsp = self
            .http
            .post(&url)
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        let v: Value = rsp.json().await?;
        if v["status"] != "Success" {
            bail!("discovery failed: {v}");
        }
        let mut handlers = BTreeMap::new();
        for h in v["handlers"].as_array().into_iter().flatten() {
            handlers.insert(
                h["requestHook"]["hook"].as_str().unwrap_or_default().to_owned(),
                Handler {
                    name: h["name"].as_str().unwrap_or_default().to_owned(),
                    timeout_seconds: h["timeoutSeconds"].as_u64().unwrap_or(10),
                    failure_policy: h["failurePolicy"].as_str().unwrap_or("Fail").to_owned(),
                },
            );
        }
        Ok(handlers)
    }
}

/// A response exactly as received.
#[derive(Clone, Debug)]
pub struct RawAnswer {
    /// HTTP status code.
    pub status: u16,
    /// The negotiated HTTP version.
    pub version: http::Version,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// A handler as advertised in Discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    /// The handler name (a DNS-1123 label).
    pub name: String,
    /// timeoutSeconds.
    pub timeout_seconds: u64,
    /// failurePolicy.
    pub failure_policy: String,
}

/// The path CAPI calls for `hook` on `handler`: `/hooks.runtime.cluster.x-k8s.io/v1alpha1/<hook>/<handler>`.
pub fn hook_path(hook: &Hook, handler: &str) -> String {
    format!(
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/{}/{}",
        hook.name().to_lowercase(),
        handler
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Value {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "wl-1", "namespace": "tenants", "uid": "u-1",
                         "managedFields": [{"manager": "x"}]},
            "spec": {"controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443},
                     "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "cp"},
                     "topology": {"classRef": {"name": "quick-start"}, "version": "v1.33.0"}},
            "status": {"phase": "Provisioned", "initialization": {"controlPlaneInitialized": true}}
        })
    }

    #[test]
    fn v1_14_embeds_v1beta2_without_status_or_managed_fields() {
        let c = embedded_cluster(CapiShape::V1_14, &stored());
        assert_eq!(c["apiVersion"], "cluster.x-k8s.io/v1beta2");
        assert!(c.get("status").is_none());
        assert!(c["metadata"].get("managedFields").is_none());
        assert_eq!(c["spec"]["topology"]["classRef"]["name"], "quick-start");
    }

    #[test]
    fn v1_12_embeds_v1beta1_without_type_meta_and_zeroed_status() {
        let c = embedded_cluster(CapiShape::V1_12, &stored());
        assert!(c.get("apiVersion").is_none() && c.get("kind").is_none());
        assert_eq!(
            c["status"],
            json!({"infrastructureReady": false, "controlPlaneReady": false})
        );
        assert_eq!(c["spec"]["topology"]["class"], "quick-start");
        assert_eq!(
            c["spec"]["controlPlaneRef"]["apiVersion"],
            "controlplane.cluster.x-k8s.io/v1beta2"
        );
        assert_eq!(c["spec"]["controlPlaneRef"]["namespace"], "tenants");
    }

    #[test]
    fn v1_10_embeds_the_full_v1beta1_object() {
        let c = embedded_cluster(CapiShape::V1_10, &stored());
        assert_eq!(c["apiVersion"], "cluster.x-k8s.io/v1beta1");
        assert!(c["metadata"].get("managedFields").is_some());
        assert_eq!(c["status"]["controlPlaneReady"], true);
        assert_eq!(c["status"]["phase"], "Provisioned");
    }

    #[test]
    fn v1_10_keeps_the_readiness_of_a_cluster_stored_as_v1beta1() {
        // CAPI 1.10's management cluster serves v1beta1 only, so that is what the stand-in reads there.
        let mut stored = stored();
        stored["apiVersion"] = json!("cluster.x-k8s.io/v1beta1");
        stored["status"] =
            json!({"phase": "Provisioned", "infrastructureReady": true, "controlPlaneReady": true});
        let c = embedded_cluster(CapiShape::V1_10, &stored);
        assert_eq!(c["status"]["controlPlaneReady"], true);
        assert_eq!(c["status"]["infrastructureReady"], true);
    }

    #[test]
    fn upgrade_plan_fields_appear_from_1_12() {
        let hook = Hook::BeforeClusterUpgrade {
            from: "v1.32.0".into(),
            to: "v1.33.0".into(),
        };
        let old = hook_request(&hook, CapiShape::V1_10, &stored(), &BTreeMap::new());
        assert!(old.get("controlPlaneUpgrades").is_none());
        assert!(old.get("settings").is_none());
        let new = hook_request(&hook, CapiShape::V1_14, &stored(), &BTreeMap::new());
        assert_eq!(new["controlPlaneUpgrades"], json!([{"version": "v1.33.0"}]));
        assert_eq!(new["kind"], "BeforeClusterUpgradeRequest");
    }

    #[test]
    fn paths_lowercase_the_hook() {
        assert_eq!(
            hook_path(&Hook::BeforeClusterDelete, "konnector-bcd"),
            "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterdelete/konnector-bcd"
        );
        assert_eq!("1.11".parse::<CapiShape>().unwrap(), CapiShape::V1_12);
        assert!("1.9".parse::<CapiShape>().is_err());
    }
}
