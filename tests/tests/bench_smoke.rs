//! Keeps the benchmark runnable: two rounds through all three paths must succeed and report every path. No
//! timing is asserted; the machines are shared and noisy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_runs_all_three_paths() {
    konnector_tests::init_test_logging();
    let report = konnector_tests::bench::run(2).await.unwrap();
    assert_eq!(report.rounds, 2);
    let paths: Vec<&str> = report.paths.keys().map(String::as_str).collect();
    assert_eq!(paths, ["grpc", "hook", "minimal"]);
    assert_eq!(report.ratios.len(), 3);
    assert!(
        report.ratios.values().all(|r| r.is_finite() && *r > 0.0),
        "{report:?}"
    );
}

/// Keeps the scale benchmark runnable, with the static release binaries as their own processes (so this is also
/// the one test that runs both binaries' `main` wiring, the reconciler included, end to end): a few Clusters
/// through every path, then the reconciler's idle phase over a window several times its 5 s drift-check period. Counts and
/// outcomes only; no timing is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_benchmark_runs_every_path_and_the_idle_reconciler() {
    konnector_tests::init_test_logging();
    let options = konnector_tests::scale::ScaleOptions {
        clusters: 4,
        concurrency: 2,
        idle: std::time::Duration::from_secs(35),
        bin_dir: konnector_tests::tools::static_bin_dir().unwrap(),
        // A short drift-check period, so the 35 s idle window holds several checks per Cluster.
        reconcile_resync: Some(std::time::Duration::from_secs(5)),
        // The chart's default: the Clusters' Prism Central does not exist, so this also runs the shared, bounded
        // check under the scale benchmark's load.
        prism_central_checks: "warn".to_owned(),
    };
    let report = konnector_tests::scale::run(options).await.unwrap();
    assert_eq!(report.paths.len(), 4, "{report:?}");
    for (name, path) in &report.paths {
        assert_eq!(path.runs, 4, "{name}: {path:?}");
        assert_eq!(path.failures, 0, "{name}: {path:?}");
    }
    let rec = &report.reconciler;
    assert!(
        rec.idle_passes >= 4,
        "every Cluster is looked at again within the window: {rec:?}"
    );
    assert_eq!(
        rec.passes_not_in_sync, 0,
        "nothing drifted, so nothing is repaired: {rec:?}"
    );
}
