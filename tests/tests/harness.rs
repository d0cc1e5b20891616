//! Tests of the control-plane harness itself, against real etcd + kube-apiserver processes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use konnector_tests::{
    ControlPlane,
    control_plane::port_is_listening,
    crds, management_plane,
    workload::{self, ClusterOptions},
};
use kube::{
    Api,
    api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

fn hcp_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("addons.cluster.x-k8s.io", "v1alpha1", "HelmChartProxy"),
        "helmchartproxies",
    )
}

#[tokio::test]
async fn two_control_planes_are_independent() {
    konnector_tests::init_test_logging();
    let (a, b) = tokio::try_join!(ControlPlane::start("a"), ControlPlane::start("b")).unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.ca_pem(), b.ca_pem(), "each control plane has its own CA");

    let (ca, cb) = (a.client().await.unwrap(), b.client().await.unwrap());
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("only-in-a".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(ca.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    assert!(
        Api::<ConfigMap>::namespaced(ca, "default")
            .get_opt("only-in-a")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<ConfigMap>::namespaced(cb, "default")
            .get_opt("only-in-a")
            .await
            .unwrap()
            .is_none()
    );

    // A's credentials mean nothing to B: its CA does not verify B's serving certificate.
    let mut cross = a.config().await.unwrap();
    cross.cluster_url = b.url().parse().unwrap();
    let cross = kube::Client::try_from(cross).unwrap();
    assert!(
        Api::<Namespace>::all(cross)
            .list(&Default::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn crds_become_established_and_serve_both_cluster_versions() {
    konnector_tests::init_test_logging();
    let (_mgmt, client) = management_plane("mgmt").await.unwrap();
    let crd_api: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    for yaml in crds::ClusterApi::V1Beta2.management_crds().unwrap() {
        let name = crds::parse(&yaml).unwrap().metadata.name.unwrap();
        let crd = crd_api.get(&name).await.unwrap();
        let conditions = crd.status.unwrap().conditions.unwrap();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name}"
        );
    }
    // A Cluster written as v1beta2 is readable as v1beta1 too.
    konnector_tests::control_plane::ensure_namespace(&client, "ns1")
        .await
        .unwrap();
    let v2: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "ns1", &workload::cluster_resource("v1beta2"));
    let c = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                   "metadata": {"name": "c1"},
                   "spec": {"topology": {"classRef": {"name": "cc"}, "version": "v1.33.0"}}});
    v2.patch("c1", &PatchParams::apply("test"), &Patch::Apply(&c))
        .await
        .unwrap();
    let v1: Api<DynamicObject> = Api::namespaced_with(client, "ns1", &workload::cluster_resource("v1beta1"));
    let got = v1.get("c1").await.unwrap();
    assert_eq!(got.data["spec"]["topology"]["version"], "v1.33.0");
}

#[tokio::test]
async fn schema_rejects_helm_chart_proxy_without_cluster_selector() {
    konnector_tests::init_test_logging();
    let (_mgmt, client) = management_plane("mgmt").await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &hcp_resource());
    let bad = json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
        "metadata": {"name": "no-selector"},
        "spec": {"chartName": "konnector-agent", "repoURL": "https://example.com/charts"}
    });
    let err = api
        .patch("no-selector", &PatchParams::apply("test"), &Patch::Apply(&bad))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains("clusterSelector"), "{}", status.message);
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let good = json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
        "metadata": {"name": "with-selector"},
        "spec": {"clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": "c1"}},
                 "chartName": "konnector-agent", "repoURL": "https://example.com/charts"}
    });
    api.patch("with-selector", &PatchParams::apply("test"), &Patch::Apply(&good))
        .await
        .unwrap();
}

#[tokio::test]
async fn server_side_apply_is_idempotent_and_tracks_the_field_manager() {
    konnector_tests::init_test_logging();
    let cp = ControlPlane::start("ssa").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await.unwrap(), "default");
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v"}});
    let pp = PatchParams::apply("konnector-test");
    let first = api.patch("cfg", &pp, &Patch::Apply(&cm)).await.unwrap();
    let second = api.patch("cfg", &pp, &Patch::Apply(&cm)).await.unwrap();
    assert_eq!(
        first.metadata.resource_version, second.metadata.resource_version,
        "no-op apply writes nothing"
    );
    let managers = second.metadata.managed_fields.unwrap();
    assert!(
        managers.iter().any(
            |m| m.manager.as_deref() == Some("konnector-test") && m.operation.as_deref() == Some("Apply")
        )
    );
    // A conflicting manager is refused without force.
    let other =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "w"}});
    assert!(
        api.patch("cfg", &PatchParams::apply("someone-else"), &Patch::Apply(&other))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn workload_cluster_helper_leaves_what_capi_leaves() {
    konnector_tests::init_test_logging();
    let ((_mgmt, client), wl) =
        tokio::try_join!(management_plane("mgmt"), ControlPlane::start("wl")).unwrap();
    let cluster =
        workload::create_workload_cluster(&client, &wl, "tenants", "wl-1", ClusterOptions::initialized())
            .await
            .unwrap();
    assert_eq!(
        cluster.object.metadata.labels.as_ref().unwrap()[workload::CLUSTER_NAME_LABEL],
        "wl-1"
    );
    assert_eq!(
        cluster.object.data["status"]["initialization"]["controlPlaneInitialized"],
        true
    );

    // The kubeconfig Secret reaches the workload API server, and only it.
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, "tenants")
        .get("wl-1-kubeconfig")
        .await
        .unwrap();
    let kubeconfig = String::from_utf8(secret.data.unwrap()["value"].0.clone()).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.port_u16(), Some(wl.port()));
    let remote = kube::Client::try_from(config).unwrap();
    Api::<Namespace>::all(remote).get("kube-system").await.unwrap();
}

#[tokio::test]
async fn teardown_leaves_no_process_and_no_listening_port() {
    konnector_tests::init_test_logging();
    let cp = ControlPlane::start("teardown").await.unwrap();
    let pids = cp.pids();
    let ports = cp.ports();
    let dir = cp.dir().to_path_buf();
    assert_eq!(pids.len(), 2);
    assert!(port_is_listening(cp.port()));
    drop(cp);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived teardown"
        );
    }
    for port in ports {
        assert!(
            !port_is_listening(port),
            "port {port} still listening after teardown"
        );
    }
    assert!(!dir.exists(), "scratch directory survived teardown");
}

#[tokio::test]
async fn teardown_runs_when_a_test_panics() {
    konnector_tests::init_test_logging();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let cp = ControlPlane::start("panics").await.unwrap();
            tx.send((cp.pids(), cp.port())).unwrap();
            panic!("simulated test failure");
        });
    });
    assert!(handle.join().is_err(), "the thread panicked");
    let (pids, port) = rx.recv_timeout(Duration::from_secs(1)).unwrap();
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived a panic"
        );
    }
    assert!(!port_is_listening(port));
}

#[tokio::test]
async fn service_account_tokens_are_real_and_rbac_bound() {
    konnector_tests::init_test_logging();
    let cp = ControlPlane::start("sa").await.unwrap();
    let sa = cp.service_account_client("team", "robot").await.unwrap();
    match Api::<Namespace>::all(sa).list(&Default::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("system:serviceaccount:team:robot"),
                "{}",
                status.message
            );
        }
        other => panic!("an unbound ServiceAccount must be refused, got {other:?}"),
    }
}
