//! `konnector migrate` against the live clusters: what it reads (the Clusters and HelmChartProxies through the
//! kubeconfig, GetAgentStatus and PlanAgent from the executor), and `--apply`'s ApplyAgent calls.
//!
//! `--apply` needs a client identity the executor lets write. The CLI's own (Secret `<release>-cli`, which the
//! kubeconfig path always presents) is read-only by design, so `--apply` without `--executor-url`, or with that
//! certificate, is refused before anything is read; any other read-only identity is refused by the executor at the
//! first ApplyAgent (PERMISSION_DENIED, nothing written), which stops the whole run.

use std::{collections::BTreeMap, io::Write, sync::Arc};

use konnector_proto::v1::{ApplyAgentRequest, ClusterRef, Trigger};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use super::{Applied, Inputs, MigrateView, Row, Verdict, judge};
use crate::{
    ExitCode, Failure,
    args::{Args, ClusterName, Connection},
    connect::{self, ExecutorConn},
    plan::PlanView,
    status::StatusView,
};

/// GetAgentStatus and PlanAgent calls in flight while planning (as `fleet`).
const PLAN_CONCURRENCY: usize = 8;

/// CAAPH's HelmChartProxy.
fn hcp_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("addons.cluster.x-k8s.io", "v1alpha1", "HelmChartProxy"),
        "helmchartproxies",
    )
}

/// The HelmChartProxies of each namespace, as read (or why not).
type Proxies = BTreeMap<String, Result<Vec<DynamicObject>, String>>;

/// Runs `migrate`: the plan, and with `apply` the ApplyAgent calls; prints the rows.
pub(crate) async fn migrate(
    args: &Args,
    apply: bool,
    concurrency: usize,
    continue_on_error: bool,
    out: &mut impl Write,
) -> Result<ExitCode, Failure> {
    if apply {
        writing_identity(&args.connection).map_err(Failure::Identity)?;
    }
    let client = connect::kube_client(&args.connection)
        .await
        .map_err(Failure::Unreachable)?;
    let clusters = match args.command.cluster() {
        Some(_) => {
            let one = args
                .cluster(connect::context_namespace(&args.connection).as_deref())
                .map_err(Failure::Usage)?;
            let found = crate::capi::list_cluster_objects(&client, Some(&one.namespace), Some(&one.name))
                .await
                .map_err(Failure::Unreachable)?;
            if found.is_empty() {
                // Not listed (or not visible to this user): the executor's answer says which, as a blocked row.
                vec![DynamicObject {
                    types: None,
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        namespace: Some(one.namespace),
                        name: Some(one.name),
                        ..Default::default()
                    },
                    data: serde_json::Value::Null,
                }]
            } else {
                found
            }
        }
        None => crate::capi::list_cluster_objects(&client, args.cluster_namespace.as_deref(), None)
            .await
            .map_err(Failure::Unreachable)?,
    };
    let executor = connect::connect(&args.connection)
        .await
        .map_err(Failure::Unreachable)?;
    let proxies = Arc::new(read_proxies(&client, &clusters).await);
    let mut rows = plan_all(&executor, &proxies, clusters.clone()).await?;
    if apply {
        apply_all(
            &executor,
            &client,
            &clusters,
            &mut rows,
            concurrency,
            continue_on_error,
        )
        .await?;
    }
    let view = MigrateView::new(if apply { "apply" } else { "plan" }, rows);
    crate::emit(out, args.output, &view, || Ok(view.text()))?;
    Ok(if view.problems == 0 {
        ExitCode::Ok
    } else {
        ExitCode::CheckFailed
    })
}

/// Refuses, before anything is read, an `--apply` that would present the CLI's own read-only identity.
fn writing_identity(c: &Connection) -> Result<(), String> {
    let (ns, release) = (&c.namespace, &c.release);
    let read_only = format!("{release}-cli");
    let hint = format!(
        "use an identity the executor lets write: --executor-url with --ca, --cert and --key, e.g. the gateway's pair \
         (tls.crt, tls.key, ca.crt of Secret {ns}/{release}-gateway-client) through `kubectl -n {ns} port-forward \
         svc/{release}-executor 8090` and --executor-url https://127.0.0.1:8090 --server-name {release}-executor.{ns}.svc \
         (docs/operating.md, \"Taking over from CAREN\")"
    );
    if c.executor_url.is_none() {
        return Err(format!(
            "migrate --apply calls ApplyAgent, and through the kubeconfig the CLI presents its own identity (Secret \
             {ns}/{read_only}), which the executor serves read-only; {hint}"
        ));
    }
    if let Some(cert) = &c.cert
        && let Ok(pem) = std::fs::read(cert)
        && let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(&pem).next()
        && konnector_runtime::tls::dns_names(leaf.as_ref())
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&read_only))
    {
        return Err(format!(
            "migrate --apply calls ApplyAgent, and --cert {} is the CLI's read-only identity ({read_only}); {hint}",
            cert.display()
        ));
    }
    Ok(())
}

/// One list per namespace that has a Cluster.
async fn read_proxies(client: &Client, clusters: &[DynamicObject]) -> Proxies {
    let mut out = Proxies::new();
    for ns in clusters.iter().filter_map(|c| c.metadata.namespace.clone()) {
        if out.contains_key(&ns) {
            continue;
        }
        let list = read_namespace(client, &ns).await;
        out.insert(ns, list);
    }
    out
}

async fn read_namespace(client: &Client, ns: &str) -> Result<Vec<DynamicObject>, String> {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &hcp_resource())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "not allowed to list helmchartproxies.addons.cluster.x-k8s.io in namespace {ns} (the CLI reads them through the kubeconfig)"
            ),
            _ => format!("cannot list HelmChartProxies in namespace {ns}: {}", connect::chain(&e)),
        })
}

/// Reads and judges one Cluster.
async fn row_for(
    executor: &ExecutorConn,
    proxies: Result<&[DynamicObject], String>,
    object: &DynamicObject,
) -> Row {
    let meta = &object.metadata;
    let cluster = ClusterName {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    };
    let status = crate::get_status(executor, &cluster)
        .await
        .map(|s| StatusView::new(cluster.to_string(), s))
        .map_err(|f| f.line());
    let plan = match &status {
        Ok(s) if s.addon_configured && !s.cluster_deleting => Some(
            crate::get_plan(executor, &cluster)
                .await
                .map(|p| PlanView::new(cluster.to_string(), p))
                .map_err(|f| f.line()),
        ),
        _ => None,
    };
    let empty = BTreeMap::new();
    judge(&Inputs {
        cluster: cluster.to_string(),
        name: &cluster.name,
        labels: meta.labels.as_ref().unwrap_or(&empty),
        annotations: meta.annotations.as_ref().unwrap_or(&empty),
        initialized: crate::capi::control_plane_initialized(object),
        status: status.as_ref().map_err(Clone::clone),
        plan: plan.as_ref().map(|p| p.as_ref().map_err(Clone::clone)),
        proxies,
    })
}

fn proxies_of<'a>(proxies: &'a Proxies, cluster: &DynamicObject) -> Result<&'a [DynamicObject], String> {
    match proxies.get(cluster.metadata.namespace.as_deref().unwrap_or_default()) {
        Some(Ok(list)) => Ok(list.as_slice()),
        Some(Err(why)) => Err(why.clone()),
        None => Err("not read".to_owned()),
    }
}

async fn plan_all(
    executor: &ExecutorConn,
    proxies: &Arc<Proxies>,
    clusters: Vec<DynamicObject>,
) -> Result<Vec<Row>, Failure> {
    let mut rows = Vec::with_capacity(clusters.len());
    let mut pending = clusters.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < PLAN_CONCURRENCY {
            let Some(meta) = pending.next() else { break };
            let (executor, proxies) = (executor.clone(), proxies.clone());
            running.spawn(async move { row_for(&executor, proxies_of(&proxies, &meta), &meta).await });
        }
        match running.join_next().await {
            Some(Ok(row)) => rows.push(row),
            Some(Err(e)) => return Err(Failure::Unreachable(anyhow::anyhow!("a plan task failed: {e}"))),
            None => break,
        }
    }
    Ok(rows)
}

/// What one apply task ends with.
enum Outcome {
    Done(Box<Row>),
    /// The executor refused the identity: nothing was written, and no other call can succeed.
    ReadOnly(tonic::Status),
}

/// Re-reads the row just before writing (the plan may be minutes old), and calls ApplyAgent only when it still says
/// the same thing: a row that changed meanwhile is skipped, never applied on a stale judgement.
async fn apply_one(executor: ExecutorConn, client: Client, cluster: DynamicObject, planned: Row) -> Outcome {
    let ns = cluster.metadata.namespace.clone().unwrap_or_default();
    let list = read_namespace(&client, &ns).await;
    let mut row = row_for(
        &executor,
        list.as_ref().map(Vec::as_slice).map_err(Clone::clone),
        &cluster,
    )
    .await;
    if row.verdict != planned.verdict || row.planned_name != planned.planned_name {
        row.applied = Some(Applied::Skipped(format!(
            "changed since the plan (it said: {}); run migrate again",
            planned.verdict_text()
        )));
        return Outcome::Done(Box::new(row));
    }
    let request = ApplyAgentRequest {
        cluster: Some(ClusterRef {
            namespace: ns,
            name: cluster.metadata.name.clone().unwrap_or_default(),
            // The Cluster the plan judged: one re-created under the same name since is refused.
            uid: row.cluster_uid.clone(),
            resource_version: String::new(),
        }),
        // No hook is being served: an operator's call. Configuration problems fail it (the upgrade policy's
        // "warn" is for BeforeClusterUpgrade only).
        trigger: Trigger::Unspecified as i32,
    };
    row.applied = Some(match executor.agent.clone().apply_agent(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            if answer.applied {
                Applied::Applied(answer.message)
            } else {
                Applied::Failed(format!("not applied: {}", answer.message))
            }
        }
        Err(status) if status.code() == tonic::Code::PermissionDenied => return Outcome::ReadOnly(status),
        Err(status) => Applied::Failed(crate::rpc_failure("ApplyAgent", status).line()),
    });
    Outcome::Done(Box::new(row))
}

async fn apply_all(
    executor: &ExecutorConn,
    client: &Client,
    clusters: &[DynamicObject],
    rows: &mut [Row],
    concurrency: usize,
    continue_on_error: bool,
) -> Result<(), Failure> {
    let metas: BTreeMap<String, &DynamicObject> = clusters
        .iter()
        .map(|c| {
            let key = format!(
                "{}/{}",
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default()
            );
            (key, c)
        })
        .collect();
    rows.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    for row in rows.iter_mut().filter(|r| !r.verdict.applies()) {
        row.applied = Some(Applied::Skipped(match row.verdict {
            Verdict::NotEnabled => "not enabled".to_owned(),
            Verdict::Waiting => "waits for its control plane".to_owned(),
            _ => "blocked".to_owned(),
        }));
    }
    let todo: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].verdict.applies()).collect();
    let (total, mut done) = (todo.len(), 0);
    let mut pending = todo.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut failed: Option<String> = None;
    loop {
        while running.len() < concurrency && failed.is_none() {
            let Some(i) = pending.next() else { break };
            let Some(meta) = metas.get(&rows[i].cluster) else {
                continue;
            };
            let task = apply_one(executor.clone(), client.clone(), (*meta).clone(), rows[i].clone());
            running.spawn(async move { (i, task.await) });
        }
        match running.join_next().await {
            Some(Ok((i, Outcome::Done(row)))) => {
                if matches!(row.applied, Some(Applied::Failed(_))) && !continue_on_error {
                    failed.get_or_insert_with(|| row.cluster.clone());
                }
                // Progress on stderr as each row ends, so a run cut short (--timeout, Ctrl-C) still says what it
                // wrote; stdout keeps the one document.
                done += 1;
                let what = match &row.applied {
                    Some(Applied::Applied(_)) => "applied",
                    Some(Applied::Failed(_)) => "FAILED",
                    _ => "skipped (changed since the plan)",
                };
                eprintln!("konnector migrate: [{done}/{total}] {} {what}", row.cluster);
                rows[i] = *row;
            }
            Some(Ok((_, Outcome::ReadOnly(status)))) => {
                running.abort_all();
                return Err(Failure::Identity(format!(
                    "{} (nothing was written); use an identity the executor lets write (--cert/--key of a name in \
                     its --client-allowed-names, e.g. the gateway's); docs/operating.md, \"Taking over from CAREN\"",
                    crate::rpc_failure("ApplyAgent", status).line()
                )));
            }
            Some(Err(e)) => return Err(Failure::Unreachable(anyhow::anyhow!("an apply task failed: {e}"))),
            None => break,
        }
    }
    if let Some(first) = failed {
        for i in pending {
            rows[i].applied = Some(Applied::NotAttempted(format!(
                "stopped after {first} failed (--continue-on-error goes on)"
            )));
        }
    }
    Ok(())
}
