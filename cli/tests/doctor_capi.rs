//! `konnector doctor` on the CAPI side, against a real API server holding the chart's own ExtensionConfig, gateway
//! Service and NetworkPolicies (rendered by helm from deploy/): nothing installed, a healthy install, then each way
//! a new install breaks first, each named with its next step: CAPI running in a namespace the NetworkPolicy does
//! not admit (and fixed by the chart value doctor names), a caBundle that is not the gateway's serving CA, no ready
//! endpoint, and a failed discovery.
//!
//! The harness has no controller-manager, no cert-manager and no CAPI: the test writes what they would (the
//! EndpointSlice, the serving Secret's ca.crt, the injected caBundle and the Discovered condition, CAPI's
//! Deployment object). The executor is deliberately unreachable here (its checks are cli.rs's); doctor still reads
//! the CAPI side.

use std::process::Stdio;

use base64::Engine;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret, discovery::v1::EndpointSlice};
use konnector_tests::{control_plane::ensure_namespace, tools};
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const KONNECTOR: &str = env!("CARGO_BIN_EXE_konnector");
const NS: &str = "konnector-system";
const MANAGER: &str = "doctor-capi-test";

struct Run {
    code: i32,
    text: String,
    checks: Value,
}

/// `konnector doctor` twice (text, then JSON) with an unreachable executor and the admin kubeconfig.
async fn doctor(kubeconfig: &str) -> Run {
    let run = |json: bool| {
        let mut cmd = tokio::process::Command::new(KONNECTOR);
        cmd.args([
            "doctor",
            "clusters/c1",
            "--executor-url=http://127.0.0.1:1",
            "--plaintext-loopback",
        ])
        .arg(format!("--kubeconfig={kubeconfig}"))
        .stdin(Stdio::null());
        if json {
            cmd.args(["-o", "json"]);
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("KONNECTOR_") || key == "KUBECONFIG" {
                cmd.env_remove(key);
            }
        }
        cmd.output()
    };
    let (text, json) = (run(false).await.unwrap(), run(true).await.unwrap());
    let text_out = String::from_utf8(text.stdout).unwrap();
    assert!(!text_out.contains("PRIVATE KEY"), "{text_out}");
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    println!("----- doctor (exit {:?})\n{text_out}", text.status.code());
    Run {
        code: text.status.code().unwrap(),
        text: text_out,
        checks: report["checks"].clone(),
    }
}

impl Run {
    /// (verdict, detail, next step) of the check named `name`.
    fn check(&self, name: &str) -> (String, String, String) {
        let c = self
            .checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name:?} in\n{}", self.text));
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
        (s("verdict"), s("detail"), s("nextStep"))
    }

    fn assert(&self, name: &str, verdict: &str, detail: &str) {
        let (v, d, _) = self.check(name);
        assert_eq!(v, verdict, "{name}: {d}\n{}", self.text);
        assert!(
            d.contains(detail),
            "{name}: {d:?} lacks {detail:?}\n{}",
            self.text
        );
    }
}

fn ca_pem(name: &str) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.self_signed(&key).unwrap().pem()
}

fn extension_configs(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("runtime.cluster.x-k8s.io", "v1beta2", "ExtensionConfig");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// The chart's ExtensionConfig, gateway Service and NetworkPolicies, applied as helm would.
async fn apply_chart(client: &kube::Client, sets: &[&str]) {
    let docs = tools::render_chart(
        NS,
        sets,
        &[
            "templates/extensionconfig.yaml",
            "templates/gateway.yaml",
            "templates/networkpolicies.yaml",
        ],
    )
    .unwrap();
    let mut applied = 0;
    for doc in docs {
        if ["ExtensionConfig", "Service", "NetworkPolicy"].contains(&doc["kind"].as_str().unwrap_or_default())
        {
            tools::apply_manifest(client, &doc, NS, &PatchParams::apply(MANAGER).force())
                .await
                .unwrap();
            applied += 1;
        }
    }
    assert_eq!(
        applied, 4,
        "the ExtensionConfig, the gateway Service, two NetworkPolicies"
    );
}

/// CAPI's core controller Deployment, as clusterctl labels it, in `namespace`.
fn capi_deployment(namespace: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "capi-controller-manager", "namespace": namespace,
                     "labels": {"cluster.x-k8s.io/provider": "cluster-api", "control-plane": "controller-manager"}},
        "spec": {
            "selector": {"matchLabels": {"cluster.x-k8s.io/provider": "cluster-api", "control-plane": "controller-manager"}},
            "template": {
                "metadata": {"labels": {"cluster.x-k8s.io/provider": "cluster-api", "control-plane": "controller-manager"}},
                "spec": {"containers": [{"name": "manager", "image": "registry.k8s.io/cluster-api/cluster-api-controller:v1.14.2"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn doctor_names_what_breaks_on_the_capi_side() {
    konnector_tests::init_test_logging();
    let (mgmt, admin) = konnector_tests::management_plane("doctor-capi").await.unwrap();
    let kubeconfig = mgmt.kubeconfig_path().display().to_string();

    // Nothing installed: CAPI does not know konnector.
    let run = doctor(&kubeconfig).await;
    assert_eq!(run.code, 1);
    run.assert(
        "ExtensionConfig discovered",
        "fail",
        "ExtensionConfig konnector not found",
    );
    run.assert("executor reachable", "fail", "");

    ensure_namespace(&admin, NS).await.unwrap();
    ensure_namespace(&admin, "capi-system").await.unwrap();
    apply_chart(&admin, &[]).await;
    // Before CAPI or cert-manager did anything.
    let run = doctor(&kubeconfig).await;
    run.assert(
        "ExtensionConfig discovered",
        "warn",
        "no Discovered condition yet",
    );
    run.assert(
        "caBundle injected",
        "fail",
        "Secret konnector-system/konnector-gateway-serving not found",
    );
    run.assert(
        "gateway endpoints",
        "fail",
        "Service konnector-system/konnector-gateway has no endpoints",
    );
    run.assert(
        "NetworkPolicy admits CAPI",
        "warn",
        "no Deployment labelled cluster.x-k8s.io/provider=cluster-api",
    );

    // What cert-manager, CAPI and the EndpointSlice controller would write for a healthy install.
    let ca = ca_pem("konnector-ca");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let serving: Secret = serde_json::from_value(json!({
        "metadata": {"name": "konnector-gateway-serving"},
        "type": "kubernetes.io/tls",
        "data": {"ca.crt": base64::engine::general_purpose::STANDARD.encode(&ca),
                 "tls.crt": base64::engine::general_purpose::STANDARD.encode("not read"),
                 "tls.key": base64::engine::general_purpose::STANDARD.encode("-----BEGIN PRIVATE KEY-----\nnot read\n")}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &serving).await.unwrap();
    let ecs = extension_configs(&admin);
    let inject = |pem: &str| {
        json!({"apiVersion": "runtime.cluster.x-k8s.io/v1beta2", "kind": "ExtensionConfig",
        "metadata": {"name": "konnector"},
        "spec": {"clientConfig": {"caBundle": base64::engine::general_purpose::STANDARD.encode(pem)}}})
    };
    ecs.patch(
        "konnector",
        &PatchParams::apply("capi-stand-in").force(),
        &Patch::Apply(inject(&ca)),
    )
    .await
    .unwrap();
    let discovered = |status: &str, reason: &str, message: &str| {
        json!({"apiVersion": "runtime.cluster.x-k8s.io/v1beta2", "kind": "ExtensionConfig",
            "metadata": {"name": "konnector"}, "status": {
            "conditions": [{"type": "Discovered", "status": status, "reason": reason, "message": message,
                            "lastTransitionTime": "2026-12-07T12:00:00Z"}],
            "handlers": [{"name": "konnector-acpi", "requestHook": {"apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1", "hook": "AfterControlPlaneInitialized"}, "timeoutSeconds": 20, "failurePolicy": "Fail"}]
        }})
    };
    ecs.patch_status(
        "konnector",
        &PatchParams::apply("capi-stand-in").force(),
        &Patch::Apply(discovered("True", "Discovered", "")),
    )
    .await
    .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), NS);
    let slice = |ready: bool| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "konnector-gateway-abcde", "labels": {"kubernetes.io/service-name": "konnector-gateway"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": ready}}],
            "ports": [{"name": "https", "port": 9443, "protocol": "TCP"}]
        }))
        .unwrap()
    };
    slices.create(&PostParams::default(), &slice(true)).await.unwrap();
    let deployments = |ns: &str| Api::<Deployment>::namespaced(admin.clone(), ns);
    deployments("capi-system")
        .create(&PostParams::default(), &capi_deployment("capi-system"))
        .await
        .unwrap();

    let run = doctor(&kubeconfig).await;
    run.assert(
        "ExtensionConfig discovered",
        "ok",
        "Discovered=True, 1 handler(s)",
    );
    run.assert(
        "caBundle injected",
        "ok",
        "caBundle holds the gateway's serving CA",
    );
    run.assert(
        "gateway endpoints",
        "ok",
        "Service konnector-system/konnector-gateway: 1 ready endpoint(s)",
    );
    run.assert(
        "NetworkPolicy admits CAPI",
        "ok",
        "from capi-system (NetworkPolicy konnector-gateway)",
    );
    assert!(
        run.text.contains(
            "ok    NetworkPolicy admits CAPI   CAPI's controller can call the gateway from capi-system"
        ),
        "{}",
        run.text
    );

    // CAPI runs elsewhere than the chart's default callerNamespaces: every hook call would time out.
    ensure_namespace(&admin, "capi-elsewhere").await.unwrap();
    deployments("capi-system")
        .delete("capi-controller-manager", &DeleteParams::default())
        .await
        .unwrap();
    deployments("capi-elsewhere")
        .create(&PostParams::default(), &capi_deployment("capi-elsewhere"))
        .await
        .unwrap();
    let run = doctor(&kubeconfig).await;
    run.assert(
        "NetworkPolicy admits CAPI",
        "fail",
        "CAPI runs in namespace capi-elsewhere",
    );
    let (_, _, next) = run.check("NetworkPolicy admits CAPI");
    assert_eq!(
        next,
        "add capi-elsewhere to the chart's gateway.networkPolicy.callerNamespaces"
    );
    // Doing what it says fixes it.
    apply_chart(
        &admin,
        &["gateway.networkPolicy.callerNamespaces={capi-elsewhere}"],
    )
    .await;
    let run = doctor(&kubeconfig).await;
    run.assert("NetworkPolicy admits CAPI", "ok", "from capi-elsewhere");

    // A caBundle that is not the gateway's serving CA (a rotated CA CAPI has not injected yet).
    ecs.patch(
        "konnector",
        &PatchParams::apply("capi-stand-in").force(),
        &Patch::Apply(inject(&ca_pem("old-ca"))),
    )
    .await
    .unwrap();
    let run = doctor(&kubeconfig).await;
    run.assert(
        "caBundle injected",
        "fail",
        "does not hold the CA in Secret konnector-system/konnector-gateway-serving",
    );

    // No ready gateway pod.
    slices
        .replace("konnector-gateway-abcde", &PostParams::default(), &{
            let mut s = slice(false);
            s.metadata.resource_version = slices
                .get("konnector-gateway-abcde")
                .await
                .unwrap()
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap();
    let run = doctor(&kubeconfig).await;
    run.assert("gateway endpoints", "fail", "none of its 1 endpoint(s) is ready");

    // Discovery failed: CAPI's reason and message are shown.
    ecs.patch_status(
        "konnector",
        &PatchParams::apply("capi-stand-in").force(),
        &Patch::Apply(discovered(
            "False",
            "DiscoveryFailed",
            "x509: certificate signed by unknown authority",
        )),
    )
    .await
    .unwrap();
    let run = doctor(&kubeconfig).await;
    run.assert(
        "ExtensionConfig discovered",
        "fail",
        "Discovered=False DiscoveryFailed: x509: certificate signed by unknown authority",
    );
    assert_eq!(run.code, 1);
}
