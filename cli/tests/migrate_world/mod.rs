//! What `cli/tests/migrate.rs` needs around the binary: running it, and a fleet shaped as CAREN leaves one
//! (its proxies, its workload Secret), read back as the assertions need it.

use std::{collections::BTreeMap, process::Stdio};

use konnector_proto::v1::PlanAgentRequest;
use konnector_tests::{
    caaph_stand_in::{hcp_resource, hrp_resource},
    executor_fixture::{
        ExecutorEnv, RunningExecutor, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD,
        addon_cluster_config,
    },
    support,
    workload::{self, ClusterOptions, WorkloadCluster},
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};

const KONNECTOR: &str = env!("CARGO_BIN_EXE_konnector");
const CAREN_MANAGER: &str = "cluster-api-runtime-extensions-nutanix";

#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the binary with none of the caller's `KONNECTOR_*`/`KUBECONFIG`, and checks that neither output stream
/// carries the password (plain or base64) or key material.
pub(crate) async fn konnector(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(KONNECTOR);
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("KONNECTOR_") || key == "KUBECONFIG" {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().await.expect("the CLI runs");
    let run = Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    for (place, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        support::assert_no_secret(place, text, TEST_PASSWORD);
        assert!(!text.contains("PRIVATE KEY"), "key material printed: {run:#?}");
    }
    println!(
        "----- konnector {}\n(exit {})\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

/// `--executor-url … --ca … --cert … --key …` with the gateway's pair (a writing identity), and the admin's
/// kubeconfig for listing Clusters and proxies.
pub(crate) fn flags(env: &ExecutorEnv, executor: &RunningExecutor) -> Vec<String> {
    let client = executor.pki.client_dir();
    vec![
        format!("--executor-url={}", executor.url()),
        format!("--ca={}", client.join("ca.crt").display()),
        format!("--cert={}", client.join("tls.crt").display()),
        format!("--key={}", client.join("tls.key").display()),
        format!("--kubeconfig={}", env.mgmt.kubeconfig_path().display()),
    ]
}

pub(crate) async fn migrate(env: &ExecutorEnv, args: &[&str]) -> Run {
    let flags = flags(env, &env.executor);
    let all: Vec<&str> = ["migrate"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(flags.iter().map(String::as_str))
        .collect();
    konnector(&all).await
}

pub(crate) fn rows(run: &Run) -> BTreeMap<String, Value> {
    let doc: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:#?}"));
    doc["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["cluster"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

pub(crate) fn hcps(env: &ExecutorEnv) -> Api<DynamicObject> {
    Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
}

/// Every proxy in the namespace: name → (uid, resourceVersion).
pub(crate) async fn proxies(env: &ExecutorEnv) -> BTreeMap<String, (String, String)> {
    hcps(env)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|h| {
            let m = h.metadata;
            (
                m.name.unwrap_or_default(),
                (m.uid.unwrap_or_default(), m.resource_version.unwrap_or_default()),
            )
        })
        .collect()
}

pub(crate) async fn add_cluster(env: &ExecutorEnv, name: &str, configured: bool) -> WorkloadCluster {
    add_cluster_with(
        env,
        name,
        configured.then(|| addon_cluster_config(TEST_CREDENTIALS_SECRET)),
    )
    .await
}

pub(crate) async fn add_cluster_with(
    env: &ExecutorEnv,
    name: &str,
    cluster_config: Option<Value>,
) -> WorkloadCluster {
    workload::create_workload_cluster(
        &env.admin,
        &env.workload,
        TEST_NAMESPACE,
        name,
        ClusterOptions {
            cluster_config,
            ..ClusterOptions::initialized()
        },
    )
    .await
    .unwrap()
}

/// CAREN's webhook annotates the Cluster, and CAREN force-applies `konnector-agent-<uuid>` with `spec`.
pub(crate) async fn caren_installs(
    env: &ExecutorEnv,
    c: &WorkloadCluster,
    uuid: &str,
    mut spec: Value,
) -> String {
    Api::<DynamicObject>::namespaced_with(
        env.admin.clone(),
        TEST_NAMESPACE,
        &workload::cluster_resource("v1beta2"),
    )
    .patch(
        &c.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"caren.nutanix.com/cluster-uuid": uuid}}})),
    )
    .await
    .unwrap();
    // CAREN's workload side: it copies the credentials Secret, whole, into ntnx-system (the namespace the
    // release then installs into; the stand-in, unlike CAAPH, does not create it).
    let wl = env.workload.client().await.unwrap();
    konnector_tests::control_plane::ensure_namespace(&wl, "ntnx-system")
        .await
        .unwrap();
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "konnector-agent", "namespace": "ntnx-system"},
        "stringData": {"username": "admin", "password": TEST_PASSWORD}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(wl, "ntnx-system")
        .patch(
            "konnector-agent",
            &PatchParams::apply(CAREN_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
    let name = format!("konnector-agent-{uuid}");
    spec["clusterSelector"] = json!({"matchLabels": {"cluster.x-k8s.io/cluster-name": c.name}});
    // CAREN leaves CAAPH's option structs empty.
    spec["options"] = json!({"install": {}, "upgrade": {}});
    let hcp = json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
        "metadata": {"name": name, "namespace": TEST_NAMESPACE,
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "name": c.name, "uid": c.uid}]},
        "spec": spec,
    });
    hcps(env)
        .patch(
            &name,
            &PatchParams::apply(CAREN_MANAGER).force(),
            &Patch::Apply(&hcp),
        )
        .await
        .unwrap();
    name
}

/// The stand-in's HelmReleaseProxy for `hcp`, once deployed: its uid.
pub(crate) async fn installed(env: &ExecutorEnv, hcp: &str) -> String {
    let hrps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hrp_resource());
    let selector = format!("helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name={hcp}");
    let deployed = || async {
        hrps.list(&kube::api::ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|h| h.data["status"]["status"] == "deployed")
    };
    support::eventually(&format!("the stand-in installs {hcp}"), || async {
        deployed().await.is_some()
    })
    .await;
    let hrp = deployed().await.unwrap();
    hrp.metadata.uid.unwrap_or_default()
}

/// The HelmReleaseProxy `uid` is still there and not being deleted: nothing uninstalled the release.
pub(crate) async fn still_installed(env: &ExecutorEnv, uid: &str) {
    let hrps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hrp_resource());
    let list = hrps.list(&Default::default()).await.unwrap().items;
    let hrp = list
        .iter()
        .find(|h| h.metadata.uid.as_deref() == Some(uid))
        .expect("the HelmReleaseProxy that installed the release is still there");
    assert!(hrp.metadata.deletion_timestamp.is_none(), "and not being deleted");
}

/// `status.revision` of the HelmReleaseProxy `uid`.
pub(crate) async fn revision(env: &ExecutorEnv, uid: &str) -> i64 {
    let hrps: Api<DynamicObject> = Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hrp_resource());
    hrps.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|h| h.metadata.uid.as_deref() == Some(uid))
        .and_then(|h| h.data["status"]["revision"].as_i64())
        .unwrap_or_default()
}

pub(crate) fn hcp_deletes(executor: &RunningExecutor) -> u64 {
    executor
        .metrics
        .kube_request_count_by_verb("management", Some("delete"), Some("helmchartproxies"))
}

/// The HelmChartProxy spec PlanAgent renders for `cluster`.
pub(crate) async fn planned_spec(env: &ExecutorEnv, cluster: konnector_proto::v1::ClusterRef) -> Value {
    let plan = env
        .executor
        .client()
        .await
        .unwrap()
        .plan_agent(PlanAgentRequest {
            cluster: Some(cluster),
        })
        .await
        .unwrap()
        .into_inner();
    konnector_proto::struct_to_json(plan.helm_chart_proxy.as_ref().unwrap())["spec"].clone()
}

/// Every request the executor sent to the management API server so far.
pub(crate) fn kube_calls(executor: &RunningExecutor) -> u64 {
    executor
        .metrics
        .kube_request_count_by_verb("management", None, None)
}
