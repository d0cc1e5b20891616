//! `konnector migrate`, the real binary, against a real executor on real API servers, over proxies written as
//! CAREN writes them (its field manager, its `konnector-agent-<uuid>` name, its ownerReference and selector, its
//! empty `options`, force-applied) and installed by the CAAPH stand-in.
//!
//! CAREN and CAAPH are not served as Go modules here (the module proxy answers 403), so CAREN's proxies are
//! written the way `tests/tests/caren_names.rs` writes them, and "nothing uninstalled" is what konnector can be
//! held to: the same proxy object (uid), no second proxy, no DELETE sent for any proxy (the executor's request
//! metric), and the HelmReleaseProxy that installed the release still there, not being deleted. The stand-in runs
//! with its upgrade model on (`CaaphOptions::upgrades`: a changed version or values is revision + 1 on the same
//! HelmReleaseProxy), so "no new revision" and "a new revision" are asserted as revision numbers; that model is the
//! stand-in's reading of CAAPH's rules, not CAAPH.

use std::collections::BTreeMap;

use konnector_executor::ExecutorConfig;
use konnector_tests::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn},
    executor_fixture::{
        TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, addon_cluster_config, executor_env, executor_mgmt_client,
        serve_executor_with_flags,
    },
    support,
    workload::{self, ClusterOptions},
};
use kube::Api;
use serde_json::json;

mod migrate_world;
use migrate_world::*;

#[tokio::test]
async fn carens_fleet_is_taken_over_under_its_own_names_without_an_uninstall() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "migrate",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let _caaph = CaaphStandIn::start(
        env.admin.clone(),
        CaaphOptions {
            upgrades: true,
            ..Default::default()
        },
    );
    let c2 = add_cluster(&env, "c2", true).await;
    let c3 = add_cluster(&env, "c3", false).await;
    let c4 = add_cluster(&env, "c4", true).await;
    // What konnector renders for each (its ConfigMaps, here its built-in chart and template; the values name the
    // Cluster): CAREN's proxies are written from it, the same (c1), with another version and values (c2), from
    // another repository (c4).
    let planned = planned_spec(&env, env.cluster_ref()).await;
    let planned_c2 = planned_spec(&env, konnector_tests::executor_fixture::cluster_ref(&c2)).await;
    let planned_c4 = planned_spec(&env, konnector_tests::executor_fixture::cluster_ref(&c4)).await;
    let same = caren_installs(
        &env,
        &env.cluster,
        "019d87f4-a01e-7aeb-8e4c-000000000001",
        planned.clone(),
    )
    .await;
    let mut older = planned_c2.clone();
    older["version"] = json!("1.2.0");
    older["valuesTemplate"] = json!(format!(
        "{}\ncarenOnly: true\n",
        planned_c2["valuesTemplate"].as_str().unwrap().trim_end()
    ));
    let upgrade = caren_installs(&env, &c2, "019d87f4-a01e-7aeb-8e4c-000000000002", older).await;
    let mut elsewhere = planned_c4;
    elsewhere["repoURL"] = json!("oci://helm-repository.caren-system.svc/charts");
    let blocked = caren_installs(&env, &c4, "019d87f4-a01e-7aeb-8e4c-000000000004", elsewhere).await;
    let mut releases = BTreeMap::new();
    for name in [&same, &upgrade, &blocked] {
        releases.insert(name.clone(), installed(&env, name).await);
    }
    let before = proxies(&env).await;
    let _ = c3;
    // Two more that a takeover must not touch: one whose credentials Secret does not exist (PlanAgent refuses),
    // one being deleted.
    add_cluster_with(&env, "c5", Some(addon_cluster_config("no-such-secret"))).await;
    add_cluster(&env, "c6", true).await;
    workload::start_cluster_deletion(&env.admin, TEST_NAMESPACE, "c6")
        .await
        .unwrap();
    // And one whose control plane has not initialized: AfterControlPlaneInitialized will install it.
    workload::create_workload_cluster(
        &env.admin,
        &env.workload,
        TEST_NAMESPACE,
        "c7",
        ClusterOptions {
            cluster_config: Some(addon_cluster_config(TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();

    // The plan: one row per Cluster, nothing written, exit 1 because c4 is blocked.
    let calls = || kube_calls(&env.executor);
    let start = calls();
    let plan = migrate(&env, &["-o", "json"]).await;
    println!(
        "executor management API requests for the 7-Cluster plan: {}",
        calls() - start
    );
    assert_eq!(plan.code, 1, "{plan:#?}");
    let r = rows(&plan);
    assert_eq!(r["clusters/c1"]["verdict"], "no-change", "{:#}", r["clusters/c1"]);
    assert_eq!(r["clusters/c1"]["plannedName"], same.as_str());
    assert_eq!(r["clusters/c1"]["existing"]["caren"], true);
    assert_eq!(r["clusters/c1"]["existing"]["konnector"], false);
    assert_eq!(r["clusters/c1"]["newRevision"], false);
    assert_eq!(r["clusters/c1"]["revisions"], json!([1]));
    assert_eq!(r["clusters/c2"]["verdict"], "upgrade", "{:#}", r["clusters/c2"]);
    assert_eq!(r["clusters/c2"]["plannedName"], upgrade.as_str());
    let changed: Vec<&str> = r["clusters/c2"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    // CAREN's empty `options.install` is the CRD's default, createNamespace: true, which konnector writes: the same.
    assert_eq!(changed, ["valuesTemplate", "version"]);
    assert_eq!(r["clusters/c2"]["changes"][0]["keys"], json!(["carenOnly"]));
    assert_eq!(r["clusters/c2"]["changes"][1]["to"], planned["version"]);
    assert_eq!(r["clusters/c2"]["changes"][1]["from"], "1.2.0");
    assert_eq!(r["clusters/c3"]["verdict"], "not-enabled");
    assert_eq!(r["clusters/c4"]["verdict"], "blocked");
    assert!(
        r["clusters/c4"]["reason"]
            .as_str()
            .unwrap()
            .contains("repoURL oci://helm-repository.caren-system.svc/charts"),
        "{:#}",
        r["clusters/c4"]
    );
    assert!(
        r["clusters/c5"]["reason"]
            .as_str()
            .unwrap()
            .contains("no-such-secret"),
        "{:#}",
        r["clusters/c5"]
    );
    assert_eq!(r["clusters/c6"]["reason"], "the Cluster is being deleted");
    assert_eq!(r["clusters/c7"]["verdict"], "waiting", "{:#}", r["clusters/c7"]);
    assert_eq!(proxies(&env).await, before, "the plan wrote nothing");
    let table = migrate(&env, &[]).await;
    assert_eq!(table.code, 1);
    for line in [
        "clusters/c1: takes over, no change",
        "clusters/c2: takes over, upgrade (new revision)",
        "clusters/c3: not enabled",
        "clusters/c4: blocked: repoURL",
        "(the same object: nothing deleted or renamed)",
        "7 Cluster(s): 3 blocked, 1 no-change, 1 not-enabled, 1 upgrade, 1 waiting (a plan: nothing was written)",
    ] {
        assert!(table.stdout.contains(line), "{line:?} not in\n{}", table.stdout);
    }
    // One Cluster, named as the other commands name it.
    let one = migrate(&env, &["clusters/c1", "-o", "json"]).await;
    assert_eq!((one.code, rows(&one).len()), (0, 1), "{one:#?}");

    // --apply: c1 and c2 are applied into CAREN's proxies; c3 and c4 are skipped; exit 1 for c4.
    let applied = migrate(&env, &["--apply", "-o", "json"]).await;
    assert_eq!(applied.code, 1, "{applied:#?}");
    let r = rows(&applied);
    for c in ["clusters/c1", "clusters/c2"] {
        assert_eq!(r[c]["applied"]["outcome"], "applied", "{:#}", r[c]);
    }
    for c in [
        "clusters/c3",
        "clusters/c4",
        "clusters/c5",
        "clusters/c6",
        "clusters/c7",
    ] {
        assert_eq!(r[c]["applied"]["outcome"], "skipped", "{:#}", r[c]);
    }
    let after = proxies(&env).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "no proxy created, deleted or renamed"
    );
    for (name, (uid, _)) in &before {
        assert_eq!(&after[name].0, uid, "{name} is the same object");
    }
    assert_eq!(
        after[&blocked].1, before[&blocked].1,
        "the blocked row was not written"
    );
    assert_eq!(
        hcp_deletes(&env.executor),
        0,
        "konnector deleted no HelmChartProxy"
    );
    for uid in releases.values() {
        still_installed(&env, uid).await;
    }
    // The release's history continues on the same HelmReleaseProxy: c2 is upgraded once (revision 2), c1 not.
    support::eventually("the stand-in upgrades c2's release in place", || async {
        revision(&env, &releases[&upgrade]).await == 2
    })
    .await;
    assert_eq!(
        revision(&env, &releases[&same]).await,
        1,
        "c1's release was not upgraded"
    );
    let c2_now = hcps(&env).get(&upgrade).await.unwrap();
    assert_eq!(
        c2_now.data["spec"]["version"], planned["version"],
        "konnector's chart is in CAREN's proxy"
    );
    let managers: Vec<String> = c2_now
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == "konnector"), "{managers:?}");

    // Again: every row now says no change, and nothing is written.
    let start = calls();
    let again = migrate(&env, &["--apply", "-o", "json"]).await;
    println!(
        "executor management API requests for the second --apply (7 Clusters, 2 applied): {}",
        calls() - start
    );
    let r = rows(&again);
    for c in ["clusters/c1", "clusters/c2"] {
        assert_eq!(r[c]["verdict"], "no-change", "{:#}", r[c]);
        assert_eq!(r[c]["existing"]["konnector"], true, "{:#}", r[c]);
        assert_eq!(r[c]["applied"]["outcome"], "applied", "{:#}", r[c]);
    }
    assert_eq!(proxies(&env).await, after, "the second --apply changed nothing");
    assert_eq!(revision(&env, &releases[&same]).await, 1);
    assert_eq!(
        revision(&env, &releases[&upgrade]).await,
        2,
        "no further revision"
    );
    assert_eq!(hcp_deletes(&env.executor), 0);
}

#[tokio::test]
async fn apply_needs_a_writing_identity() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "migrate-identity",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    // Wired as the chart wires it: the gateway writes, the CLI's name and an operator's are read-only.
    let executor = serve_executor_with_flags(
        executor_mgmt_client(&env.mgmt, &ExecutorConfig::default().defaults_namespace)
            .await
            .unwrap(),
        ExecutorConfig::default(),
        &[
            "--client-allowed-names=konnector-gateway",
            "--client-read-only-names=konnector-cli,ops-viewer",
        ],
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pair = |name: &str| {
        let cert = executor.pki.client_pair_with_names("test", &[name]).unwrap();
        let (crt, key) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&crt, &cert.cert_pem).unwrap();
        std::fs::write(&key, &cert.key_pem).unwrap();
        (
            format!("--cert={}", crt.display()),
            format!("--key={}", key.display()),
        )
    };
    let kubeconfig = format!("--kubeconfig={}", env.mgmt.kubeconfig_path().display());
    let url = format!("--executor-url={}", executor.url());
    let ca = format!("--ca={}", executor.pki.client_dir().join("ca.crt").display());

    // Through the kubeconfig the CLI presents its own read-only identity: refused before anything is read.
    let through_kubeconfig = konnector(&["migrate", "--apply", &kubeconfig]).await;
    assert_eq!(through_kubeconfig.code, 4, "{through_kubeconfig:#?}");
    for hint in ["read-only", "--cert", "konnector-system/konnector-gateway-client"] {
        assert!(
            through_kubeconfig.stderr.contains(hint),
            "{hint:?}: {through_kubeconfig:#?}"
        );
    }
    // The CLI's certificate given explicitly: refused up front too.
    let (crt, key) = pair("konnector-cli");
    let cli_cert = konnector(&["migrate", "--apply", &kubeconfig, &url, &ca, &crt, &key]).await;
    assert_eq!(cli_cert.code, 4, "{cli_cert:#?}");
    assert!(
        cli_cert
            .stderr
            .contains("is the CLI's read-only identity (konnector-cli)"),
        "{cli_cert:#?}"
    );
    // Another read-only name the CLI cannot know: the executor refuses the first ApplyAgent, and the run stops.
    let (crt, key) = pair("ops-viewer");
    let viewer = konnector(&["migrate", "--apply", &kubeconfig, &url, &ca, &crt, &key]).await;
    assert_eq!(viewer.code, 4, "{viewer:#?}");
    assert!(
        viewer.stderr.contains("PERMISSION_DENIED") && viewer.stderr.contains("nothing was written"),
        "{viewer:#?}"
    );
    assert!(proxies(&env).await.is_empty(), "nothing was written");
    // The same identity may plan: planning only reads.
    let plan = konnector(&["migrate", &kubeconfig, &url, &ca, &crt, &key]).await;
    assert_eq!(plan.code, 0, "{plan:#?}");
    assert!(
        plan.stdout.contains("clusters/c1: installs (new HelmChartProxy)"),
        "{plan:#?}"
    );

    // The gateway's identity writes: no proxy drove c1's release, so konnector installs one.
    let (crt, key) = pair("konnector-gateway");
    let gateway = konnector(&["migrate", "--apply", &kubeconfig, &url, &ca, &crt, &key]).await;
    assert_eq!(gateway.code, 0, "{gateway:#?}");
    assert!(gateway.stdout.contains("applied"), "{gateway:#?}");
    assert_eq!(
        proxies(&env).await.keys().collect::<Vec<_>>(),
        ["konnector-agent-c1"]
    );
}

#[tokio::test]
async fn apply_stops_at_the_first_failure_unless_told_to_go_on() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "migrate-stop",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    // c0 plans well (the plan reads no workload cluster) but cannot be applied: its kubeconfig Secret is gone.
    add_cluster(&env, "c0", true).await;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.admin.clone(), TEST_NAMESPACE)
        .delete("c0-kubeconfig", &Default::default())
        .await
        .unwrap();
    let plan = migrate(&env, &["-o", "json"]).await;
    assert_eq!(plan.code, 0, "{plan:#?}");
    assert_eq!(rows(&plan)["clusters/c0"]["verdict"], "install");

    let stopped = migrate(&env, &["--apply", "-o", "json"]).await;
    assert_eq!(stopped.code, 1, "{stopped:#?}");
    let r = rows(&stopped);
    assert_eq!(
        r["clusters/c0"]["applied"]["outcome"], "failed",
        "{:#}",
        r["clusters/c0"]
    );
    assert!(
        r["clusters/c0"]["applied"]["message"]
            .as_str()
            .unwrap()
            .contains("c0-kubeconfig"),
        "{:#}",
        r["clusters/c0"]
    );
    assert_eq!(
        r["clusters/c1"]["applied"]["outcome"], "not-attempted",
        "{:#}",
        r["clusters/c1"]
    );
    assert!(
        proxies(&env).await.is_empty(),
        "nothing after the failure was written"
    );
    assert!(
        stopped
            .stderr
            .contains("konnector migrate: [1/2] clusters/c0 FAILED")
            && !stopped.stderr.contains("[2/2]"),
        "{stopped:#?}"
    );

    let went_on = migrate(&env, &["--apply", "--continue-on-error", "-o", "json"]).await;
    assert_eq!(went_on.code, 1, "{went_on:#?}");
    let r = rows(&went_on);
    assert_eq!(r["clusters/c0"]["applied"]["outcome"], "failed");
    assert_eq!(
        r["clusters/c1"]["applied"]["outcome"], "applied",
        "{:#}",
        r["clusters/c1"]
    );
    assert!(
        went_on
            .stderr
            .contains("konnector migrate: [2/2] clusters/c1 applied"),
        "{went_on:#?}"
    );
    assert_eq!(
        proxies(&env).await.keys().collect::<Vec<_>>(),
        ["konnector-agent-c1"]
    );
}
