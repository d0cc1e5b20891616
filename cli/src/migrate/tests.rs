//! The judgement's rules, one attack or case each, on objects shaped as CAREN, CAAPH and konnector write them.

use konnector_proto::v1::{GetAgentStatusResponse, HelmReleaseProxyStatus};
use serde_json::json;

use super::*;

const UID: &str = "uid-c1";
const UUID: &str = "019d87f4-a01e-7aeb-8e4c-146dd9fcbf05";

fn caren_name() -> String {
    format!("konnector-agent-{UUID}")
}

fn spec(version: &str, values: &str) -> Value {
    json!({
        "clusterSelector": {"matchLabels": {CLUSTER_NAME_LABEL: "c1"}},
        "repoURL": "https://charts.example/stable/", "chartName": "konnector-agent", "version": version,
        "releaseName": "konnector-agent", "namespace": "ntnx-system", "valuesTemplate": values,
        "options": {"install": {"createNamespace": true}},
    })
}

/// A proxy `name` owned by Cluster `owner` (uid, name), written by `managers`.
fn proxy(name: &str, owner: (&str, &str), spec: Value, managers: &[&str]) -> DynamicObject {
    let fields: Vec<Value> = managers
        .iter()
        .map(
            |m| json!({"manager": m, "operation": "Apply", "apiVersion": "addons.cluster.x-k8s.io/v1alpha1"}),
        )
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
        "metadata": {"name": name, "namespace": "clusters", "managedFields": fields,
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "name": owner.1, "uid": owner.0}]},
        "spec": spec,
    }))
    .unwrap()
}

fn status(configured: bool, deleting: bool) -> StatusView {
    StatusView::new(
        "clusters/c1".into(),
        GetAgentStatusResponse {
            addon_configured: configured,
            cluster_deleting: deleting,
            cluster_uid: UID.into(),
            helm_release_proxies: vec![HelmReleaseProxyStatus {
                revision: 3,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn plan(name: &str, spec: Value) -> PlanView {
    PlanView {
        cluster: "clusters/c1".into(),
        namespace: None,
        secret: None,
        helm_chart_proxy: Some(json!({"metadata": {"name": name, "namespace": "clusters"}, "spec": spec})),
        notes: vec![],
    }
}

fn labels() -> BTreeMap<String, String> {
    [(CLUSTER_NAME_LABEL.to_owned(), "c1".to_owned())].into()
}

fn uuid_annotation() -> BTreeMap<String, String> {
    [(CAREN_UUID_ANNOTATION.to_owned(), UUID.to_owned())].into()
}

fn row(status: &StatusView, plan: Result<&PlanView, String>, proxies: &[DynamicObject]) -> Row {
    judge(&Inputs {
        cluster: "clusters/c1".into(),
        name: "c1",
        labels: &labels(),
        annotations: &uuid_annotation(),
        initialized: true,
        status: Ok(status),
        plan: Some(plan),
        proxies: Ok(proxies),
    })
}

#[test]
fn carens_proxy_with_the_same_values_is_taken_over_with_no_change() {
    let live = proxy(
        &caren_name(),
        (UID, "c1"),
        spec("1.4.0", "agent:\n  name: konnector-agent\n"),
        &[CAREN_FIELD_MANAGER, "caaph"],
    );
    let r = row(
        &status(true, false),
        Ok(&plan(
            &caren_name(),
            spec("1.4.0", "agent:\n  name: \"konnector-agent\"\n"),
        )),
        &[live],
    );
    assert_eq!(r.verdict, Verdict::NoChange, "{r:?}");
    assert_eq!(r.verdict_text(), "takes over, no change");
    let e = r.existing.as_ref().unwrap();
    assert!(e.caren && !e.konnector && e.other_managers == ["caaph"], "{e:?}");
    assert_eq!(r.planned_name.as_deref(), Some(caren_name().as_str()));
    assert_eq!((r.new_revision, r.revisions.as_slice()), (false, &[3][..]));
    assert!(r.changes.is_empty());
}

#[test]
fn other_values_or_version_are_one_new_revision() {
    let live = proxy(
        &caren_name(),
        (UID, "c1"),
        spec("1.4.0", "a: 1\n"),
        &[CAREN_FIELD_MANAGER],
    );
    let r = row(
        &status(true, false),
        Ok(&plan(&caren_name(), spec("1.4.1", "a: 2\n"))),
        &[live],
    );
    assert_eq!(r.verdict, Verdict::Upgrade);
    assert!(r.new_revision);
    let text: Vec<String> = r.changes.iter().map(Change::text).collect();
    assert_eq!(text, ["values (a)", "version 1.4.0 → 1.4.1"]);
    assert!(
        MigrateView::new("plan", vec![r])
            .text()
            .contains("3 now; a new revision")
    );
}

#[test]
fn a_change_caaph_reinstalls_for_is_blocked() {
    let mut caren = spec("1.4.0", "a: 1\n");
    caren["repoURL"] = json!("oci://helm-repository.caren-system.svc/charts");
    let live = proxy(&caren_name(), (UID, "c1"), caren, &[CAREN_FIELD_MANAGER]);
    let r = row(
        &status(true, false),
        Ok(&plan(&caren_name(), spec("1.4.0", "a: 1\n"))),
        &[live],
    );
    assert_eq!(r.verdict, Verdict::Blocked);
    assert!(r.reason.starts_with("repoURL oci://helm-repository.caren-system.svc/charts → https://charts.example/stable/ would change, and CAAPH uninstalls"), "{}", r.reason);
}

#[test]
fn not_enabled_deleting_and_refused_plans() {
    let r = row(&status(false, false), Err("unused".into()), &[]);
    assert_eq!(r.verdict, Verdict::NotEnabled);
    let r = row(&status(true, true), Err("unused".into()), &[]);
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Blocked, "the Cluster is being deleted")
    );
    let why = "the executor refused PlanAgent: INVALID_ARGUMENT the Cluster's konnectorAgent has no prismCentralEndpoint";
    let r = row(&status(true, false), Err(why.into()), &[]);
    assert_eq!((r.verdict, r.reason.as_str()), (Verdict::Blocked, why));
    let r = judge(&Inputs {
        cluster: "clusters/c1".into(),
        name: "c1",
        labels: &labels(),
        annotations: &BTreeMap::new(),
        initialized: true,
        status: Err("the executor refused GetAgentStatus: NOT_FOUND".into()),
        plan: None,
        proxies: Ok(&[]),
    });
    assert!(r.reason.contains("NOT_FOUND"), "{r:?}");
}

#[test]
fn a_copied_uuid_whose_proxy_another_cluster_owns_is_blocked() {
    // c1 carries c0's uuid: CAREN's name for it is c0's proxy. konnector would use its own name, but CAREN keeps
    // trading the other one; the operator fixes the annotation first.
    let mut c0 = spec("1.4.0", "");
    c0["clusterSelector"] = json!({"matchLabels": {CLUSTER_NAME_LABEL: "c0"}});
    let theirs = proxy(&caren_name(), ("uid-c0", "c0"), c0, &[CAREN_FIELD_MANAGER]);
    let r = row(
        &status(true, false),
        Ok(&plan("konnector-agent-c1", spec("1.4.0", ""))),
        &[theirs],
    );
    assert_eq!(r.verdict, Verdict::Blocked);
    assert!(r.reason.contains("belongs to Cluster \"c0\""), "{}", r.reason);
}

#[test]
fn a_second_proxy_for_a_driven_release_is_blocked_and_a_free_cluster_installs() {
    // A proxy under a name konnector does not look for (e.g. an older rule) drives c1's release already.
    let other = proxy("agent-for-c1", (UID, "c1"), spec("1.4.0", ""), &["kubectl"]);
    let r = row(
        &status(true, false),
        Ok(&plan(&caren_name(), spec("1.4.0", ""))),
        &[other],
    );
    assert_eq!(r.verdict, Verdict::Blocked);
    assert!(r.reason.contains("agent-for-c1 already drives"), "{}", r.reason);
    // A proxy of another chart selecting every Cluster is not the agent's.
    let mut cni = spec("1.0.0", "");
    cni["clusterSelector"] = json!({});
    cni["releaseName"] = json!("cilium");
    cni["chartName"] = json!("cilium");
    let r = row(
        &status(true, false),
        Ok(&plan(&caren_name(), spec("1.4.0", ""))),
        &[proxy("cilium", ("x", "y"), cni, &[])],
    );
    assert_eq!(r.verdict, Verdict::Install, "{r:?}");
    // The same before the control plane initialized: the hook installs it, not a takeover.
    let r = judge(&Inputs {
        cluster: "clusters/c1".into(),
        name: "c1",
        labels: &labels(),
        annotations: &BTreeMap::new(),
        initialized: false,
        status: Ok(&status(true, false)),
        plan: Some(Ok(&plan(&caren_name(), spec("1.4.0", "")))),
        proxies: Ok(&[]),
    });
    assert_eq!(r.verdict, Verdict::Waiting, "{r:?}");
    assert!(!r.verdict.applies());
}

#[test]
fn a_sibling_is_reported_and_left_in_place() {
    let caren = proxy(
        &caren_name(),
        (UID, "c1"),
        spec("1.4.0", ""),
        &[CAREN_FIELD_MANAGER],
    );
    let ours = proxy(
        "konnector-agent-c1",
        (UID, "c1"),
        spec("1.4.0", ""),
        &[KONNECTOR_FIELD_MANAGER],
    );
    let r = row(
        &status(true, false),
        Ok(&plan(&caren_name(), spec("1.4.0", ""))),
        &[caren, ours],
    );
    assert_eq!(r.verdict, Verdict::NoChange);
    assert_eq!(r.siblings, ["konnector-agent-c1"]);
}

#[test]
fn hostile_names_stay_on_one_bounded_line() {
    let live = proxy(
        &caren_name(),
        (UID, "c1"),
        spec("1.4.0", ""),
        &[
            CAREN_FIELD_MANAGER,
            format!("evil\nmanager{}", "x".repeat(500)).as_str(),
        ],
    );
    let r = row(
        &status(true, false),
        Ok(&plan(&caren_name(), spec("1.4.0", ""))),
        &[live],
    );
    let managers = r.existing.unwrap().managers();
    assert!(
        !managers.contains('\n') && managers.chars().count() < 200,
        "{managers}"
    );
}
