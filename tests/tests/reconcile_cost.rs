//! What the reconciler costs the API servers for N idle Clusters, counted with the executor's own
//! `kube_requests` metric. It prints the numbers docs/design.md quotes ("Idle cost") and checks that the cost of
//! one pass over one Cluster does not grow with N. Counts only: nothing here depends on how fast the machine is.

use std::time::Duration;

use konnector_executor::ExecutorConfig;
use konnector_tests::{
    executor_fixture::{
        TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, addon_cluster_config, executor_env, fast_reconcile,
        start_reconciling_executor,
    },
    support,
    workload::{ClusterOptions, create_workload_cluster},
};

struct Counts {
    mgmt: u64,
    leases: u64,
    workload: u64,
    passes: u64,
}

fn counts(m: &konnector_executor::observe::ExecutorMetrics) -> Counts {
    Counts {
        mgmt: m.kube_request_count("management", None),
        leases: m.kube_request_count("management", Some("leases")),
        workload: m.kube_request_count("workload", None),
        passes: ["checked"].iter().map(|r| m.reconciles(r)).sum(),
    }
}

#[tokio::test]
async fn reconciler_cost_per_idle_cluster_does_not_grow_with_n() {
    konnector_tests::init_test_logging();
    let env = executor_env(
        "rec-cost",
        ExecutorConfig::default(),
        ClusterOptions::initialized(),
    )
    .await
    .unwrap();
    let mut per_pass = Vec::new();
    let mut created = 1;
    for n in [10usize, 50] {
        // Every Cluster points at the same workload API server; each has its own HelmChartProxy.
        for i in created..n {
            create_workload_cluster(
                &env.admin,
                &env.workload,
                TEST_NAMESPACE,
                &format!("idle-{i}"),
                ClusterOptions {
                    cluster_config: Some(addon_cluster_config(TEST_CREDENTIALS_SECRET)),
                    ..ClusterOptions::initialized()
                },
            )
            .await
            .unwrap();
        }
        created = n;
        let mut reconcile = fast_reconcile(&format!("cost-{n}"));
        reconcile.resync = Duration::from_secs(3);
        let executor = start_reconciling_executor(&env.mgmt, ExecutorConfig::default(), reconcile)
            .await
            .unwrap();
        let m = &executor.metrics;
        let deadline = tokio::time::Instant::now() + support::HANG_GUARD;
        // Installed and idle: every Cluster has had a pass that found it in sync.
        while m.reconciles("in_sync") < n as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hang guard: {n} Clusters never in sync"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = counts(m);
        // Idle: only the periodic workload checks run ("checked"), each at its Cluster's slot.
        while m.reconciles("checked") < before.passes + 3 * n as u64 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "hang guard: no idle passes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let after = counts(m);
        let passes = (after.passes - before.passes) as f64;
        let mgmt = ((after.mgmt - before.mgmt) - (after.leases - before.leases)) as f64 / passes;
        let workload = (after.workload - before.workload) as f64 / passes;
        println!(
            "N={n}: per idle check per Cluster: {mgmt:.2} management + {workload:.2} workload requests; \
             at the default 5 min period: {:.0} requests/minute, plus the Lease (24/minute) and the watches",
            (mgmt + workload) * n as f64 / 5.0
        );
        // An idle check reads the workload cluster only (its client is cached): nothing on the management side
        // but the Lease, and watch renewals.
        assert!(
            mgmt < 0.2,
            "an idle check read the management cluster: {mgmt:.2} calls"
        );
        per_pass.push(mgmt + workload);
        executor.stop().await.unwrap();
    }
    // The cost of one pass over one Cluster is a handful of GETs whatever N is: the total grows linearly.
    assert!(
        (per_pass[0] - per_pass[1]).abs() < 0.5,
        "per-Cluster cost changed with N: {per_pass:?}"
    );
    // Two workload GETs (Namespace, Secret); the bound leaves room for a retried request.
    assert!(
        per_pass[1] <= 2.5,
        "an idle pass costs more than its GETs: {per_pass:?}"
    );
}
