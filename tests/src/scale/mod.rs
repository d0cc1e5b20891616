//! The scale benchmark: many Clusters, many hooks in flight, the release binaries as separate processes, and two
//! comparison paths measured side by side in the same run against the same real API servers.
//!
//! - **konnector (ACPI)**: AfterControlPlaneInitialized for every Cluster through the gateway binary, which calls
//!   the executor binary over gRPC: the first apply.
//! - **konnector (BCU)**: BeforeClusterUpgrade for every Cluster, nothing changed: the steady-state re-apply.
//! - **minimal**: the 8-call sequence a hand-written client needs for the same re-apply (read the credentials
//!   Secret, the kubeconfig Secret, the Cluster and the two ConfigMaps; apply the Namespace and Secret on the
//!   workload cluster and the HelmChartProxy), with clients already built.
//! - **CAREN-like (emulation)**: the roughly 12 calls CAREN's handler makes per apply, following the reference's
//!   description of it (credentials Secret read, updated with an ownerReference and read again; the kubeconfig
//!   Secret read and a workload client built three times; the Namespace applied twice; the Secret; both
//!   ConfigMaps; the HelmChartProxy). It is an emulation built here, not CAREN.
//!
//! Every path runs all Clusters at the same concurrency. API calls are counted by the API servers themselves
//! (`apiserver_request_total`, management and workload summed), so every path is counted the same way. The
//! executor's and gateway's memory and CPU come from `/proc`. Only ratios within one run mean anything.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    baseline::MinimalApply,
    caaph_stand_in::hcp_resource,
    capi_stand_in::{CapiShape, ExtensionClient, Hook, hook_path, hook_request},
    control_plane::ControlPlane,
    executor_fixture::addon_cluster_config,
    gateway_fixture::write_gateway_certs,
    management_plane,
    workload::{self, ClusterOptions, cluster_resource},
};

/// Namespace of the benchmark's Clusters.
mod measure;
mod paths;
mod table;

pub use table::table;

use measure::{Counters, Spawned, clock_ticks_per_second, drive, free_port, mib, proc_stats, report};
use paths::Minimal;

const NAMESPACE: &str = "bench";
/// The credentials Secret every benchmark Cluster references.
const CREDENTIALS: &str = "pc-creds";
/// CAREN's field manager, for the emulation.
const CAREN_MANAGER: &str = "cluster-api-runtime-extensions-nutanix";

/// What to run.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    /// Number of Clusters (all on one shared workload API server).
    pub clusters: usize,
    /// Hooks (or comparison sequences) in flight at once.
    pub concurrency: usize,
    /// How long to watch the idle executor afterwards, for the reconciler's steady-state cost.
    pub idle: Duration,
    /// Directory with the `konnector-executor` and `konnector-gateway` release binaries.
    pub bin_dir: PathBuf,
    /// The reconciling executor's `--reconcile-resync` (drift-check period); `None`: its default (5 min), which
    /// is also how long the first pass over every Cluster takes (each at its slot).
    pub reconcile_resync: Option<Duration>,
    /// The hook-phase executor's `--prism-central-checks` (`off`, `warn`, `block`). The Clusters name a Prism Central
    /// that does not exist here, so `warn` (the chart's default) measures what an unreachable Prism Central costs
    /// the hooks.
    pub prism_central_checks: String,
}

/// One path's results.
#[derive(Clone, Debug, Serialize)]
pub struct PathReport {
    /// Sequences run.
    pub runs: usize,
    /// Sequences that failed.
    pub failures: usize,
    /// Throughput.
    pub per_second: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Kubernetes API requests per sequence, as counted by the API servers.
    pub api_calls_per_run: f64,
}

/// A process's memory and CPU.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessReport {
    /// Resident memory before any hook, MiB.
    pub idle_rss_mib: f64,
    /// Peak resident memory over the run (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Resident memory at the end, MiB.
    pub final_rss_mib: f64,
    /// CPU time per konnector hook (both konnector paths), ms.
    pub cpu_ms_per_hook: f64,
}

/// What the reconciler costs once every Cluster is converged.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReconcilerReport {
    /// From the executor's start to one pass over every Cluster (Lease taken, watches listed, N passes), seconds.
    pub first_pass_seconds: f64,
    /// Kubernetes API requests per minute while every Cluster is idle, on both API servers (Lease included).
    pub idle_api_calls_per_minute: f64,
    /// The window it was measured over, seconds.
    pub idle_seconds: u64,
    /// Passes that found a Cluster in sync during the window.
    pub idle_passes: u64,
    /// API requests per idle pass (Lease renewals included).
    pub api_calls_per_pass: f64,
    /// Passes with another result than in_sync over the whole run (expected 0: nothing drifted).
    pub passes_not_in_sync: u64,
    /// Every pass of the run, by result (`konnector_executor_reconciles_total`).
    pub passes_by_result: BTreeMap<String, u64>,
    /// Its resident memory at the end, MiB.
    pub final_rss_mib: f64,
    /// Its peak resident memory, MiB.
    pub peak_rss_mib: f64,
}

/// `konnector_executor_reconciles_total` by result, on an executor's admin port: one scrape, so the counts are
/// consistent with each other.
async fn reconcile_results(admin_port: u16) -> anyhow::Result<BTreeMap<String, u64>> {
    // reqwest is built without a default crypto provider; plain HTTP still needs one installed to build a client.
    konnector_runtime::tls::install_crypto_provider();
    let text = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("konnector_executor_reconciles_total{"))
        .filter_map(|l| {
            let result = l.split("result=\"").nth(1)?.split('"').next()?.to_owned();
            let n = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some((result, n))
        })
        .collect())
}

/// Passes of every result in a [`reconcile_results`] scrape.
fn all_passes(results: &BTreeMap<String, u64>) -> u64 {
    results.values().sum()
}

/// In-sync passes in a [`reconcile_results`] scrape: full passes that found nothing to do, and the cheap periodic
/// workload checks that found no drift.
fn in_sync_passes(results: &BTreeMap<String, u64>) -> u64 {
    ["in_sync", "checked"]
        .iter()
        .map(|r| results.get(*r).copied().unwrap_or(0))
        .sum()
}

/// The benchmark's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    /// Clusters.
    pub clusters: usize,
    /// Concurrency.
    pub concurrency: usize,
    /// The hook-phase executor's `--prism-central-checks`.
    pub prism_central_checks: String,
    /// Per path, in the order run.
    pub paths: BTreeMap<String, PathReport>,
    /// Executor process.
    pub executor: ProcessReport,
    /// Gateway process.
    pub gateway: ProcessReport,
    /// The reconciler's steady-state cost, measured in a second executor after the hooks.
    pub reconciler: ReconcilerReport,
    /// Throughput and API-call ratios between the paths.
    pub ratios: BTreeMap<String, f64>,
}

/// Starts everything, runs every path and returns the report.
pub async fn run(options: ScaleOptions) -> anyhow::Result<ScaleReport> {
    konnector_runtime::tls::install_crypto_provider();
    let n = options.clusters;
    anyhow::ensure!(n > 0, "at least one Cluster");
    let executor_bin = options.bin_dir.join("konnector-executor");
    let gateway_bin = options.bin_dir.join("konnector-gateway");
    for bin in [&executor_bin, &gateway_bin] {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: run hack/build-static.sh",
            bin.display()
        );
    }

    let ((mgmt_cp, mgmt), wl_cp) =
        tokio::try_join!(management_plane("scale-mgmt"), ControlPlane::start("scale-wl"))?;
    let wl = wl_cp.client().await?;
    crate::control_plane::ensure_namespace(&mgmt, NAMESPACE).await?;
    workload::put_credentials_secret(
        &mgmt,
        NAMESPACE,
        CREDENTIALS,
        &[("username", "admin"), ("password", "bench-pw")],
    )
    .await?;
    let names: Vec<String> = (0..n).map(|i| format!("c-{i:05}")).collect();
    let (mgmt_ref, wl_ref) = (&mgmt, &wl_cp);
    let (_, create_failures, _) = drive(
        names.iter().map(|name| async move {
            workload::create_workload_cluster(
                mgmt_ref,
                wl_ref,
                NAMESPACE,
                name,
                ClusterOptions {
                    cluster_config: Some(addon_cluster_config(CREDENTIALS)),
                    ..ClusterOptions::initialized()
                },
            )
            .await
            .map(|_| ())
        }),
        32,
    )
    .await;
    anyhow::ensure!(
        create_failures == 0,
        "{create_failures} Clusters could not be created"
    );

    // The release binaries, as separate processes, so their memory and CPU are their own.
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("management.kubeconfig");
    std::fs::write(&kubeconfig, mgmt_cp.kubeconfig_yaml())?;
    let (ca_pem, tls) = write_gateway_certs(dir.path())?;
    let (grpc, ex_admin, https, gw_admin) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let executor = Spawned {
        child: Command::new(&executor_bin)
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-listen", &format!("127.0.0.1:{ex_admin}")])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--defaults-namespace", "default", "--log-level", "error"])
            // The hook phase counts what hooks cost: the reconciler's own calls would land in the same API server
            // counters, so it runs later, on its own (the idle phase). Prism Central checks make no Kubernetes
            // calls, and the stand-in URL the Clusters name is not reachable here.
            .args([
                "--no-reconcile",
                "--prism-central-checks",
                &options.prism_central_checks,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the executor")?,
    };
    let gateway = Spawned {
        child: Command::new(&gateway_bin)
            .args(["--listen", &format!("127.0.0.1:{https}")])
            .args(["--admin-listen", &format!("127.0.0.1:{gw_admin}")])
            .arg("--tls-cert")
            .arg(&tls.cert)
            .arg("--tls-key")
            .arg(&tls.key)
            .args(["--capi-version", "v1.14", "--log-level", "error"])
            .args([
                "--executor-url",
                &format!("http://127.0.0.1:{grpc}"),
                "--executor-plaintext-loopback",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the gateway")?,
    };
    let hooks = Arc::new(ExtensionClient::new(
        &format!("https://127.0.0.1:{https}"),
        &ca_pem,
    )?);
    let deadline = Instant::now() + Duration::from_secs(60);
    let handlers = loop {
        match hooks.discover().await {
            Ok(h) => break h,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the gateway never answered Discovery");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // Let the executor settle (discovery, any watches it starts) before measuring it idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ex_idle, _, _) = proc_stats(executor.pid())?;
    let (gw_idle, _, _) = proc_stats(gateway.pid())?;

    let clusters: Api<DynamicObject> =
        Api::namespaced_with(mgmt.clone(), NAMESPACE, &cluster_resource("v1beta2"));
    let mut bodies = BTreeMap::new();
    for hook in [
        Hook::AfterControlPlaneInitialized,
        Hook::BeforeClusterUpgrade {
            from: "v1.32.4".into(),
            to: "v1.33.0".into(),
        },
    ] {
        let handler = handlers.get(hook.name()).context("a hook was not advertised")?;
        let path = hook_path(&hook, &handler.name);
        let mut per_cluster = Vec::with_capacity(n);
        for name in &names {
            let stored = serde_json::to_value(clusters.get(name).await?)?;
            per_cluster.push((
                path.clone(),
                hook_request(&hook, CapiShape::V1_14, &stored, &BTreeMap::new()),
                handler.timeout_seconds,
            ));
        }
        bodies.insert(hook.name(), per_cluster);
    }

    let counters = Counters {
        clients: [&mgmt, &wl],
    };
    let mut paths = BTreeMap::new();
    let (_, _, cpu_before_ex) = proc_stats(executor.pid())?;
    let (_, _, cpu_before_gw) = proc_stats(gateway.pid())?;
    for (label, hook) in [
        ("konnector (ACPI, first apply)", "AfterControlPlaneInitialized"),
        ("konnector (BCU, steady-state re-apply)", "BeforeClusterUpgrade"),
    ] {
        let before = counters.total().await?;
        let (lat, failures, elapsed) = drive(
            bodies[hook].iter().map(|(path, body, timeout)| {
                let hooks = hooks.clone();
                async move {
                    let answer = hooks.post(path, body, *timeout).await?;
                    anyhow::ensure!(answer.is_done(), "hook answered {answer:?}");
                    Ok(())
                }
            }),
            options.concurrency,
        )
        .await;
        let calls = counters.total().await? - before;
        paths.insert(label.to_owned(), report(n, &lat, failures, elapsed, calls));
    }
    let (_, _, cpu_after_ex) = proc_stats(executor.pid())?;
    let (_, _, cpu_after_gw) = proc_stats(gateway.pid())?;
    let ticks = clock_ticks_per_second();
    let hooks_run = (2 * n) as f64;
    let cpu_ms = |a: u64, b: u64| ((a - b) as f64 / ticks * 1000.0 / hooks_run * 100.0).round() / 100.0;

    // The comparison paths, against the objects konnector applied.
    let minimal = Minimal::new(&mgmt, &wl_cp, &names).await?;
    let before = counters.total().await?;
    let (lat, failures, elapsed) = drive(
        minimal.items.iter().map(|item| minimal.run(item)),
        options.concurrency,
    )
    .await;
    let calls = counters.total().await? - before;
    paths.insert(
        "minimal (8 calls, clients built)".to_owned(),
        report(n, &lat, failures, elapsed, calls),
    );

    let before = counters.total().await?;
    let (lat, failures, elapsed) = drive(
        minimal.items.iter().map(|item| minimal.caren_like(item)),
        options.concurrency,
    )
    .await;
    let calls = counters.total().await? - before;
    paths.insert(
        "CAREN-like (emulation, ~12 calls)".to_owned(),
        report(n, &lat, failures, elapsed, calls),
    );

    let (ex_final, ex_peak, _) = proc_stats(executor.pid())?;
    let (gw_final, gw_peak, _) = proc_stats(gateway.pid())?;
    drop(executor);

    // Idle: every Cluster converged. A second executor, as the chart runs it (reconciler on, default 5 min drift
    // check period, each Cluster's first pass at its slot in it), takes the Lease, makes its first pass over every
    // Cluster, and is then watched for `idle`: what it costs the
    // API servers per minute, and its memory with every Cluster and HelmChartProxy in its watch caches.
    let reconciler_admin = free_port()?;
    let reconciler = Spawned {
        child: Command::new(&executor_bin)
            .args(["--listen", &format!("127.0.0.1:{}", free_port()?)])
            .args(["--admin-listen", &format!("127.0.0.1:{reconciler_admin}")])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--defaults-namespace", "default", "--log-level", "warn"])
            .args(["--prism-central-checks", "off", "--pod-name", "bench-reconciler"])
            .args(
                options
                    .reconcile_resync
                    .map(|d| format!("--reconcile-resync={}ms", d.as_millis())),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the reconciling executor")?,
    };
    let first_pass_started = Instant::now();
    let deadline = first_pass_started + Duration::from_secs(600);
    loop {
        let passes = reconcile_results(reconciler_admin)
            .await
            .map(|r| all_passes(&r))
            .unwrap_or(0);
        if passes >= n as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the reconciler made {passes} of {n} first passes in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first_pass_seconds = (first_pass_started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let in_sync_before = in_sync_passes(&reconcile_results(reconciler_admin).await?);
    let before = counters.total().await?;
    tokio::time::sleep(options.idle).await;
    let idle_calls = counters.total().await? - before;
    let passes_by_result = reconcile_results(reconciler_admin).await?;
    let idle_passes = in_sync_passes(&passes_by_result) - in_sync_before;
    let not_in_sync = all_passes(&passes_by_result) - in_sync_passes(&passes_by_result);
    let idle_api_calls_per_minute =
        (idle_calls / options.idle.as_secs_f64().max(1.0) * 60.0 * 10.0).round() / 10.0;
    let (rec_final, rec_peak, _) = proc_stats(reconciler.pid())?;
    drop(reconciler);
    let reconciler = ReconcilerReport {
        first_pass_seconds,
        idle_api_calls_per_minute,
        idle_seconds: options.idle.as_secs(),
        idle_passes,
        api_calls_per_pass: if idle_passes > 0 {
            (idle_calls / idle_passes as f64 * 100.0).round() / 100.0
        } else {
            0.0
        },
        passes_not_in_sync: not_in_sync,
        passes_by_result,
        final_rss_mib: mib(rec_final),
        peak_rss_mib: mib(rec_peak),
    };

    let per_second = |k: &str| paths.get(k).map(|p| p.per_second).unwrap_or(0.0);
    let calls = |k: &str| paths.get(k).map(|p| p.api_calls_per_run).unwrap_or(0.0);
    let bcu = "konnector (BCU, steady-state re-apply)";
    let min = "minimal (8 calls, clients built)";
    let caren = "CAREN-like (emulation, ~12 calls)";
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            (a / b * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    let ratios = BTreeMap::from([
        (
            "konnector BCU / minimal, hooks/s".to_owned(),
            ratio(per_second(bcu), per_second(min)),
        ),
        (
            "konnector BCU / CAREN-like, hooks/s".to_owned(),
            ratio(per_second(bcu), per_second(caren)),
        ),
        (
            "konnector BCU / minimal, API calls".to_owned(),
            ratio(calls(bcu), calls(min)),
        ),
        (
            "konnector BCU / CAREN-like, API calls".to_owned(),
            ratio(calls(bcu), calls(caren)),
        ),
    ]);
    drop(gateway);
    Ok(ScaleReport {
        clusters: n,
        concurrency: options.concurrency,
        prism_central_checks: options.prism_central_checks.clone(),
        paths,
        executor: ProcessReport {
            idle_rss_mib: mib(ex_idle),
            peak_rss_mib: mib(ex_peak),
            final_rss_mib: mib(ex_final),
            cpu_ms_per_hook: cpu_ms(cpu_after_ex, cpu_before_ex),
        },
        gateway: ProcessReport {
            idle_rss_mib: mib(gw_idle),
            peak_rss_mib: mib(gw_peak),
            final_rss_mib: mib(gw_final),
            cpu_ms_per_hook: cpu_ms(cpu_after_gw, cpu_before_gw),
        },
        reconciler,
        ratios,
    })
}
