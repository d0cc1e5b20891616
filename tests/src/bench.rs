//! Side-by-side latency of one re-apply (what BeforeClusterUpgrade does when nothing changed), measured three ways
//! in the same run, against the same real API servers, in interleaved rounds:
//!
//! - **hook**: CAPI's call through the HTTPS gateway, which calls the executor over gRPC;
//! - **grpc**: the executor's `ApplyAgent` called directly with the context the gateway would send;
//! - **minimal**: the least a hand-written client must do for the same result: read the credentials Secret, the
//!   kubeconfig Secret, the Cluster and the two ConfigMaps, and server-side apply the Namespace and Secret on the
//!   workload cluster and the HelmChartProxy on the management cluster (8 API calls, with clients already built:
//!   [`crate::baseline::MinimalApply`], the same baseline `scale` uses).
//!
//! Only ratios between the three are meaningful: absolute numbers depend on the machine and its load. Rounds
//! rotate the order of the three so that none always runs first.

use std::{collections::BTreeMap, time::Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use konnector_executor::ExecutorConfig;
use konnector_gateway::translate;
use konnector_proto::{
    struct_to_json,
    v1::{ApplyAgentRequest, PlanAgentRequest, Trigger},
};
use kube::{Api, api::DynamicObject};
use serde::Serialize;
use serde_json::Value;

use crate::{
    baseline::MinimalApply,
    capi_stand_in::{CapiShape, ExtensionClient, Hook, hook_path, hook_request},
    executor_fixture::{TEST_CLUSTER, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, executor_env},
    gateway_fixture::start_gateway,
    scenario::cluster_spec,
    workload::{ClusterOptions, cluster_resource},
};

/// Latency summary of one path, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct PathStats {
    /// Median.
    pub p50_us: u128,
    /// 90th percentile.
    pub p90_us: u128,
    /// Fastest.
    pub min_us: u128,
}

impl PathStats {
    fn of(mut samples: Vec<u128>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            p50_us: at(0.5),
            p90_us: at(0.9),
            min_us: samples[0],
        }
    }
}

/// The benchmark's result.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Rounds measured (after warm-up).
    pub rounds: usize,
    /// Per path.
    pub paths: BTreeMap<String, PathStats>,
    /// Ratios of medians.
    pub ratios: BTreeMap<String, f64>,
}

/// Runs `rounds` interleaved rounds.
pub async fn run(rounds: usize) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(rounds > 0, "at least one round");
    konnector_runtime::tls::install_crypto_provider();
    let env = executor_env(
        "bench",
        ExecutorConfig::default(),
        ClusterOptions {
            spec: Some(cluster_spec(TEST_CLUSTER, 6443, TEST_CREDENTIALS_SECRET)),
            ..ClusterOptions::initialized()
        },
    )
    .await?;

    let gateway = start_gateway(&env.executor.endpoint(), "1.14").await?;
    let hooks = ExtensionClient::new(&gateway.url(), &gateway.ca_pem)?;
    let handlers = loop {
        if let Ok(h) = hooks.discover().await {
            break h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let upgrade = Hook::BeforeClusterUpgrade {
        from: "v1.32.4".into(),
        to: "v1.33.0".into(),
    };
    let handler = handlers
        .get(upgrade.name())
        .context("no BeforeClusterUpgrade handler")?;
    let path = hook_path(&upgrade, &handler.name);

    let clusters: Api<DynamicObject> =
        Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &cluster_resource("v1beta2"));
    let stored = serde_json::to_value(clusters.get(TEST_CLUSTER).await?)?;
    let body = hook_request(&upgrade, CapiShape::V1_14, &stored, &BTreeMap::new());

    // The context the gateway sends for that body, for the direct gRPC path.
    let hook_cluster = konnector_proto::capi::Cluster::from_json(body["cluster"].clone())?;
    let context = translate::cluster_ref(&hook_cluster)?;
    let mut grpc = env.executor.client().await?;

    // Warm up every path once (this first apply also creates everything), and take the objects the minimal
    // path applies from PlanAgent, so all three paths write the same bytes.
    let first = hooks.post(&path, &body, handler.timeout_seconds).await?;
    anyhow::ensure!(first.is_done(), "warm-up hook failed: {first:?}");
    let plan = grpc
        .plan_agent(PlanAgentRequest {
            cluster: Some(context.clone()),
        })
        .await?
        .into_inner();
    let (minimal, hcp) = minimal_apply(&env, &plan).await?;
    minimal.run(TEST_CLUSTER, &hcp).await?;

    let mut samples: BTreeMap<&str, Vec<u128>> = BTreeMap::new();
    for round in 0..rounds {
        for k in 0..3 {
            let which = (round + k) % 3;
            let started = Instant::now();
            match which {
                0 => {
                    let a = hooks.post(&path, &body, handler.timeout_seconds).await?;
                    anyhow::ensure!(a.is_done(), "hook answered {a:?}");
                }
                1 => {
                    grpc.apply_agent(ApplyAgentRequest {
                        cluster: Some(context.clone()),
                        trigger: Trigger::BeforeClusterUpgrade as i32,
                    })
                    .await?;
                }
                _ => minimal.run(TEST_CLUSTER, &hcp).await?,
            }
            let name = ["hook", "grpc", "minimal"][which];
            samples
                .entry(name)
                .or_default()
                .push(started.elapsed().as_micros());
        }
    }
    gateway.stop().await?;

    let paths: BTreeMap<String, PathStats> = samples
        .into_iter()
        .map(|(k, v)| (k.to_owned(), PathStats::of(v)))
        .collect();
    let p50 = |k: &str| paths[k].p50_us as f64;
    let ratios = [
        ("hook / grpc".to_owned(), p50("hook") / p50("grpc")),
        ("grpc / minimal".to_owned(), p50("grpc") / p50("minimal")),
        ("hook / minimal".to_owned(), p50("hook") / p50("minimal")),
    ]
    .into_iter()
    .map(|(k, v)| (k, (v * 100.0).round() / 100.0))
    .collect();
    Ok(BenchReport {
        rounds,
        paths,
        ratios,
    })
}

/// The minimal re-apply of this Cluster, writing the objects PlanAgent shows (with the real Secret data), and the
/// HelmChartProxy it applies.
async fn minimal_apply(
    env: &crate::executor_fixture::ExecutorEnv,
    plan: &konnector_proto::v1::PlanAgentResponse,
) -> anyhow::Result<(MinimalApply, Value)> {
    let mgmt = env.admin.clone();
    let source = Api::<Secret>::namespaced(mgmt.clone(), TEST_NAMESPACE)
        .get(TEST_CREDENTIALS_SECRET)
        .await?;
    let mut planned = struct_to_json(plan.secret.as_ref().context("plan without Secret")?);
    // The plan shows keys with "<redacted>" values; the real values come from the source Secret.
    if let Some(obj) = planned.as_object_mut() {
        obj.remove("data");
        obj.remove("stringData");
    }
    let mut secret: Secret = serde_json::from_value(planned)?;
    secret.data = source.data;
    let minimal = MinimalApply {
        mgmt,
        workload: env.workload.client().await?,
        namespace: TEST_NAMESPACE.to_owned(),
        credentials: TEST_CREDENTIALS_SECRET.to_owned(),
        agent_namespace: struct_to_json(plan.namespace.as_ref().context("plan without Namespace")?),
        agent_secret: serde_json::to_value(secret)?,
    };
    let hcp = struct_to_json(
        plan.helm_chart_proxy
            .as_ref()
            .context("plan without HelmChartProxy")?,
    );
    Ok((minimal, hcp))
}
