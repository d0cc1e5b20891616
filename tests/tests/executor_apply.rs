//! ApplyAgent against real API servers, with the executor under its shipped RBAC and called over gRPC.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use konnector_executor::ExecutorConfig;
use konnector_proto::v1::{ClusterRef, PlanAgentRequest, Trigger};
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{
        ExecutorEnv, TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD,
        addon_cluster_config, executor_env,
    },
    support,
    workload::ClusterOptions,
};
use kube::{
    Api,
    api::{DynamicObject, ObjectMeta, PostParams},
};
use serde_json::json;

async fn env(name: &str) -> ExecutorEnv {
    konnector_tests::init_test_logging();
    executor_env(name, ExecutorConfig::default(), ClusterOptions::initialized())
        .await
        .unwrap()
}

async fn apply(
    env: &ExecutorEnv,
    ctx: ClusterRef,
) -> Result<konnector_proto::v1::ApplyAgentResponse, tonic::Status> {
    support::apply_agent(&env.executor, ctx, Trigger::AfterControlPlaneInitialized).await
}

fn assert_secret_free(text: &str) {
    support::assert_no_secret("an answer or object", text, TEST_PASSWORD);
}

#[tokio::test]
async fn apply_writes_every_object() {
    let env = env("apply").await;
    let resp = apply(&env, env.cluster_ref()).await.unwrap();
    assert!(resp.applied);
    assert_eq!(resp.helm_chart_proxy_name, "konnector-agent-c1");
    assert_eq!(
        resp.message,
        "Konnector Agent applied: credentials copied to Secret ntnx-system/konnector-agent on the workload cluster and HelmChartProxy clusters/konnector-agent-c1 applied (chart konnector-agent 1.3.0-rc.1)"
    );
    // Both ConfigMaps are absent in this environment: the built-ins are used, and the notes say so. The built-in
    // chart (1.3.x) has no kubeconfigUpload, which the Cluster has on by default: a note says so too.
    assert_eq!(resp.notes.len(), 3, "{:?}", resp.notes);
    assert!(resp.notes[0].contains("default/default-helm-addons-config not found"));
    assert!(resp.notes[1].contains("built-in values template"));
    assert!(
        resp.notes[2].contains("ignores enableKubeconfigUpload"),
        "{}",
        resp.notes[2]
    );
    assert_secret_free(&format!("{resp:?}"));

    let wl = env.workload.client().await.unwrap();
    let ns = Api::<Namespace>::all(wl.clone())
        .get("ntnx-system")
        .await
        .unwrap();
    assert_eq!(
        ns.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let secret = Api::<Secret>::namespaced(wl, "ntnx-system")
        .get("konnector-agent")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let data = secret.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["password", "username"]);
    assert_eq!(data["password"].0, TEST_PASSWORD.as_bytes());
    assert!(secret.metadata.owner_references.is_none());

    let hcp = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
        .get("konnector-agent-c1")
        .await
        .unwrap();
    let owners = serde_json::to_value(hcp.metadata.owner_references.unwrap()).unwrap();
    assert_eq!(
        owners,
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": TEST_CLUSTER,
                "uid": env.cluster.uid}])
    );
    let spec = &hcp.data["spec"];
    assert_eq!(
        spec["clusterSelector"],
        json!({"matchLabels": {"cluster.x-k8s.io/cluster-name": TEST_CLUSTER}})
    );
    assert_eq!(spec["releaseName"], "konnector-agent");
    assert_eq!(spec["namespace"], "ntnx-system");
    assert_eq!(spec["chartName"], "konnector-agent");
    assert_eq!(spec["version"], "1.3.0-rc.1");
    assert_eq!(spec["repoURL"], "https://mesosphere.github.io/charts/stable/");
    assert!(spec.get("tlsConfig").is_none());
    // The built-in template is CAREN's with its string scalars quoted (docs/design.md, differences from CAREN).
    let expected_values = format!(
        "agent:
  name: \"konnector-agent\"
  image:
    privateRegistry: false
    repository: quay.io/karbon
    name: k8s-agent
    tag: \"1.4.0-rc.2\"
pc:
  port: 9440
  insecure: true
  endpoint: \"pc.example.com\"

k8sClusterName: \"c1\"
k8sDistribution: NKP
createSecret: false
prismCredentialsSecretName: \"konnector-agent\"
kubeconfigUpload:
  enabled: true
  controlPlaneEndpoint: \"https://127.0.0.1:{}\"",
        env.workload.port()
    );
    assert_eq!(spec["valuesTemplate"], expected_values.as_str());
    assert_secret_free(&hcp.data.to_string());

    // The user's Secret is left alone: no ownerReference (CAREN adds one, and the Secret dies with the Cluster).
    let source = Api::<Secret>::namespaced(env.admin.clone(), TEST_NAMESPACE)
        .get("c1-pc-creds-for-konnector-agent")
        .await
        .unwrap();
    assert!(source.metadata.owner_references.is_none());
}

#[tokio::test]
async fn configmaps_supply_chart_and_template() {
    let env = env("configmaps").await;
    let cms = Api::<ConfigMap>::namespaced(env.admin.clone(), "default");
    let put = |name: &str, key: &str, value: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..Default::default()
    };
    cms.create(
        &PostParams::default(),
        &put(
            "default-helm-addons-config",
            "konnector-agent",
            "ChartName: konnector-agent\nChartVersion: 1.4.0\nRepositoryURL: oci://helm-repository.caren-system.svc/charts\n",
        ),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &put(
            "default-konnector-agent-helm-values-template",
            "values.yaml",
            &format!(
                "# from the ConfigMap\n{}",
                konnector_executor::values::BUILTIN_VALUES_TEMPLATE
            ),
        ),
    )
    .await
    .unwrap();
    // Categories come from the live Cluster's clusterConfig.
    let mut cc = addon_cluster_config(TEST_CREDENTIALS_SECRET);
    let categories: Vec<_> = [
        ("Environment", "Production"),
        ("Region", "US-East"),
        ("Environment", "Staging"),
        ("Environment", "Production"),
        ("Department", "Engineering"),
    ]
    .into_iter()
    .map(|(k, v)| json!({"key": k, "value": v}))
    .collect();
    cc["controlPlane"] = json!({"nutanix": {"machineDetails": {"additionalCategories": categories}}});
    env.set_cluster_config(cc).await.unwrap();
    let resp = apply(&env, env.cluster_ref()).await.unwrap();
    assert!(resp.notes.is_empty(), "{:?}", resp.notes);
    let hcp = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
        .get("konnector-agent-c1")
        .await
        .unwrap();
    let spec = &hcp.data["spec"];
    assert_eq!(spec["version"], "1.4.0");
    let values = spec["valuesTemplate"].as_str().unwrap();
    assert!(values.starts_with("# from the ConfigMap\n"), "{values}");
    assert!(
        values.contains(
            "categoryMappings: \"Environment=Production,Region=US-East,Environment=Staging,Department=Engineering\""
        ),
        "{values}"
    );
    assert_eq!(
        spec["tlsConfig"],
        // The CA Secret sits beside the mirror the URL names (CAREN's namespace), not in konnector's.
        json!({"caSecret": {"name": "helm-repository-tls", "namespace": "caren-system"}})
    );

    // Braces the template prints literally reach the chart as written: CAAPH renders valuesTemplate again, so
    // konnector writes each `{{` as `{{ "{{" }}`, which that rendering turns back into `{{`.
    cms.replace(
        "default-konnector-agent-helm-values-template",
        &PostParams::default(),
        &put(
            "default-konnector-agent-helm-values-template",
            "values.yaml",
            &format!(
                "{}\nextra: {{{{ printf \"%q\" \"{{{{ .Cluster.metadata.name }}}}\" }}}}\n",
                konnector_executor::values::BUILTIN_VALUES_TEMPLATE
            ),
        ),
    )
    .await
    .unwrap();
    apply(&env, env.cluster_ref()).await.unwrap();
    let hcp = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
        .get("konnector-agent-c1")
        .await
        .unwrap();
    let values = hcp.data["spec"]["valuesTemplate"].as_str().unwrap();
    assert!(
        values.ends_with("\nextra: \"{{ \"{{\" }} .Cluster.metadata.name }}\"\n"),
        "{values}"
    );
    assert_eq!(values.matches("{{").count(), 2, "{values}");
}

#[tokio::test]
async fn second_apply_writes_nothing_and_concurrent_applies_succeed() {
    let env = env("idempotent").await;
    let ctx = env.cluster_ref();
    let (a, b) = tokio::join!(apply(&env, ctx.clone()), apply(&env, ctx.clone()));
    a.unwrap();
    b.unwrap();

    let wl = env.workload.client().await.unwrap();
    let versions = || async {
        let ns = Api::<Namespace>::all(wl.clone())
            .get("ntnx-system")
            .await
            .unwrap();
        let secret = Api::<Secret>::namespaced(wl.clone(), "ntnx-system")
            .get("konnector-agent")
            .await
            .unwrap();
        let hcp = Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
            .get("konnector-agent-c1")
            .await
            .unwrap();
        (
            ns.metadata.resource_version.unwrap(),
            secret.metadata.resource_version.unwrap(),
            hcp.metadata.resource_version.unwrap(),
        )
    };
    let before = versions().await;
    let again = apply(&env, ctx).await.unwrap();
    assert!(again.applied);
    assert_eq!(
        versions().await,
        before,
        "a repeated ApplyAgent must write nothing"
    );
}

#[tokio::test]
async fn plan_writes_nothing_and_redacts() {
    let env = env("plan").await;
    let mut client = env.executor.client().await.unwrap();
    let plan = client
        .plan_agent(PlanAgentRequest {
            cluster: Some(env.cluster_ref()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_secret_free(&format!("{plan:?}"));
    let secret = konnector_proto::struct_to_json(plan.secret.as_ref().unwrap());
    assert_eq!(
        secret["data"],
        json!({"password": "<redacted>", "username": "<redacted>"})
    );
    let ns = konnector_proto::struct_to_json(plan.namespace.as_ref().unwrap());
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let hcp = konnector_proto::struct_to_json(plan.helm_chart_proxy.as_ref().unwrap());
    assert_eq!(hcp["metadata"]["name"], "konnector-agent-c1");
    assert_eq!(
        hcp["metadata"]["ownerReferences"][0]["uid"],
        env.cluster.uid.as_str()
    );

    let wl = env.workload.client().await.unwrap();
    assert!(
        Api::<Namespace>::all(wl)
            .get_opt("ntnx-system")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<DynamicObject>::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
            .get_opt("konnector-agent-c1")
            .await
            .unwrap()
            .is_none()
    );
}
