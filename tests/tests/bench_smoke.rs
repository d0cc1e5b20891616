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
