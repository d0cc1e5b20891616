//! The controller: the Lease, the watches (Clusters, HelmChartProxies, Secrets, defaults) and the kube-runtime
//! controller that turns their events into passes.

use super::*;

/// Runs the reconciler until `shutdown`: competes for the Lease, and while this replica holds it, runs the
/// Controller. Returns when `shutdown` is cancelled, giving the Lease up.
pub async fn run(executor: Executor, config: ReconcileConfig, shutdown: CancellationToken) {
    let mut elector = LeaderElector::new(executor.mgmt(), config.lease.clone());
    tracing::info!(identity = %config.lease.identity, lease = %config.lease.name, "reconciler competing for the Lease");
    loop {
        let leading = match elector.try_acquire_or_renew().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %crate::limits::brief(&e), "cannot read or take the reconciler Lease");
                false
            }
        };
        if leading {
            tracing::info!("this replica leads the reconciler");
            executor.metrics().leader(true);
            let lost = CancellationToken::new();
            // Aborted when dropped, so the Controller never outlives this loop (not even when the task running it
            // is aborted): a replica that no longer leads must not reconcile.
            let controller = AbortOnDrop(tokio::spawn(run_controller(
                executor.clone(),
                config.clone(),
                lost.clone(),
            )));
            // Renew until the Lease is lost or we shut down.
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(config.lease.retry_interval) => {}
                }
                match elector.try_acquire_or_renew().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("the reconciler Lease was taken by another replica");
                        break;
                    }
                    Err(e) => {
                        // Stepping down on the first failed renewal is conservative: two leaders are worse than a
                        // few seconds without one.
                        tracing::warn!(error = %crate::limits::brief(&e), "cannot renew the reconciler Lease; stepping down");
                        break;
                    }
                }
            }
            lost.cancel();
            drop(controller);
            executor.metrics().leader(false);
        }
        if shutdown.is_cancelled() {
            if leading {
                elector.release().await;
            }
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(if leading { Duration::ZERO } else { config.lease.retry_interval }) => {}
        }
    }
}

pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) struct Context {
    pub(super) executor: Executor,
    pub(super) config: ReconcileConfig,
    pub(super) schedule: Schedule,
    /// `Some` when the reconciler is confined by a `namespaceSelector`; `Some(None)` for a selector that failed.
    pub(super) selected: Option<Option<SelectedNamespaces>>,
}

pub(super) async fn run_controller(executor: Executor, config: ReconcileConfig, stop: CancellationToken) {
    let version = loop {
        match executor.clusters().version().await {
            Ok(v) => break v,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler cannot discover the Cluster API version");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(config.lease.retry_interval) => {}
                }
            }
        }
    };
    let selected = config
        .namespace_selector
        .as_ref()
        .map(|s| SelectedNamespaces::start(executor.mgmt(), s, stop.clone()));
    // With `follow_defaults`, a change to the defaults ConfigMaps is a change to every following Cluster's plan
    // (issue 26 item 1): the executor's own ConfigMap watches say when, after recording the new content, so the
    // pass it triggers reads the new chart. Without it the chart changes at hooks only, so no pass is owed.
    let defaults_changes = if config.follow_defaults {
        Some(executor.defaults().watched().await.subscribe())
    } else {
        None
    };
    // A new leader remembers nothing it could trust: each Cluster's first pass is a full one, in its slot.
    lock(&executor.memory().reconciler.expect).clear();
    let schedule = Schedule::new(config.resync);
    let context = Arc::new(Context {
        executor,
        config,
        schedule,
        selected,
    });
    // One Controller per watched namespace (or one for all): a confined executor may not list cluster-wide.
    let scopes: Vec<Option<String>> = if context.config.namespaces.is_empty() {
        vec![None]
    } else {
        context.config.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|scope| {
        let mgmt = context.executor.mgmt();
        let (clusters, hcps): (Api<ClusterMeta>, Api<ClusterMeta>) = match &scope {
            None => (
                Api::all_with(mgmt.clone(), &version.resource()),
                Api::all_with(mgmt, &hcp_resource()),
            ),
            Some(ns) => (
                Api::namespaced_with(mgmt.clone(), ns, &version.resource()),
                Api::namespaced_with(mgmt, ns, &hcp_resource()),
            ),
        };
        // Metadata only, without managedFields: a pass re-reads the live Cluster anyway, so the cache needs no
        // more than the keys and owner references, and 1000 whole Clusters (status, managedFields) cost the
        // process about a hundred MiB. An `Api` of `PartialObjectMeta` asks the API server for metadata only
        // (PartialObjectMetadata; kube's `metadata_watcher` is this since kube 3.1), so a tenant's large Clusters
        // never cross the wire here, and a list page holds at most `page_size` of them (kube's default is 500).
        // HelmChartProxies are not cached at all, only mapped to their owner.
        let watch_config = watcher::Config::default().page_size(context.config.page_size);
        let writer = reflector::store::Writer::<ClusterMeta>::new(version.resource());
        let reader = writer.as_reader();
        let ctx = context.clone();
        let cluster_events = reflector::reflector(
            writer,
            watcher::watcher(clusters, watch_config.clone())
                .modify(|m| m.managed_fields_mut().clear())
                .default_backoff()
                .inspect(move |e| {
                    if let Ok(e) = e {
                        ctx.schedule
                            .observe("Cluster", e, |m| cluster_key(m).into_iter().collect());
                    }
                }),
        )
        .touched_objects();
        let ctx = context.clone();
        let hcp_events = watcher::watcher(hcps, watch_config.clone())
            .default_backoff()
            .inspect(move |e| {
                if let Ok(e) = e {
                    ctx.schedule.observe("HelmChartProxy", e, owner_clusters);
                }
            })
            .touched_objects();
        // Rotation: a metadata-only watch on the Secrets in the Clusters' namespaces (see `secret_watch`). An event
        // on a Secret some Cluster's last pass read triggers that Cluster now.
        let secrets: Api<PartialObjectMeta<Secret>> = match &scope {
            None => Api::all(context.executor.mgmt()),
            Some(ns) => Api::namespaced(context.executor.mgmt(), ns),
        };
        let ctx = context.clone();
        let resource = version.resource();
        let secret_triggers = watcher::watcher(secrets, secret_watch_config(&watch_config))
            .modify(|m| m.managed_fields_mut().clear())
            .default_backoff()
            .filter_map(move |e| {
                let refs = match e {
                    Ok(e) => {
                        let executor = ctx.executor.clone();
                        ctx.schedule.observe("Secret", &e, |m| {
                            executor.memory().reconciler.clusters_using_secret(
                                m.metadata.namespace.as_deref().unwrap_or_default(),
                                m.metadata.name.as_deref().unwrap_or_default(),
                            )
                        })
                    }
                    Err(_) => Vec::new(),
                };
                let resource = resource.clone();
                async move {
                    (!refs.is_empty()).then(|| {
                        futures::stream::iter(refs.into_iter().map(move |k| {
                            reflector::ObjectRef::new_with(&k.name, resource.clone()).within(&k.namespace)
                        }))
                    })
                }
            })
            .flatten();
        // Every Cluster this scope watches, marked changed so its pass is a full one. They queue behind the
        // Controller's `concurrency`, which bounds what a fleet-wide change costs at once; a proxy CAREN co-manages
        // keeps its chart (`converge` pins it), so the pass changes nothing there.
        let ctx = context.clone();
        let store = reader.clone();
        let resource = version.resource();
        let defaults_triggers =
            futures::stream::unfold(defaults_changes.clone(), |rx| async move {
                let mut rx = rx?;
                rx.changed().await.ok()?;
                Some(((), Some(rx)))
            })
            .flat_map(move |()| {
                let keys: Vec<ClusterKey> = store.state().iter().filter_map(|m| cluster_key(m)).collect();
                tracing::info!(
                    clusters = keys.len(),
                    "defaults ConfigMaps changed; reconciling the Clusters that follow them"
                );
                lock(&ctx.schedule.state).dirty.extend(keys.iter().cloned());
                let resource = resource.clone();
                futures::stream::iter(keys.into_iter().map(move |k| {
                    reflector::ObjectRef::new_with(&k.name, resource.clone()).within(&k.namespace)
                }))
            });
        Controller::for_stream_with(cluster_events, reader, version.resource())
            .owns_stream_with(hcp_events, hcp_resource())
            .reconcile_on(secret_triggers)
            .reconcile_on(defaults_triggers)
            .with_config(controller::Config::default().concurrency(context.config.concurrency))
            .run(reconcile, error_policy, context.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %crate::limits::brief(&e), "reconciler controller event");
                }
            })
    });
    let controller = futures::future::join_all(controllers);
    tokio::select! {
        () = stop.cancelled() => {}
        _ = controller => {}
    }
}

/// A Cluster (or a HelmChartProxy) as the reconciler watches it: metadata only.
pub(super) type ClusterMeta = PartialObjectMeta<DynamicObject>;

pub(super) async fn reconcile(
    cluster: Arc<ClusterMeta>,
    context: Arc<Context>,
) -> Result<Action, std::convert::Infallible> {
    let (Some(namespace), Some(name)) = (
        cluster.metadata.namespace.as_deref(),
        cluster.metadata.name.as_deref(),
    ) else {
        return Ok(Action::await_change());
    };
    let Ok(key) = ClusterKey::new(namespace, name) else {
        return Ok(Action::await_change());
    };
    if let Some(selected) = &context.selected
        && !selected.as_ref().is_some_and(|s| s.selects(namespace))
    {
        // CAPI sends this Cluster no hooks (the ExtensionConfig's namespaceSelector), so konnector does not act on
        // it either. No API call: looked at again in case the namespace's labels change.
        context.executor.metrics().reconciled("not_selected");
        return Ok(Action::requeue(context.config.resync));
    }
    let now = tokio::time::Instant::now();
    let (dirty, due) = context.schedule.take(&key, now);
    if !dirty && now < due {
        // Neither a change nor this Cluster's slot (the first list after start or takeover, or a duplicate
        // trigger): nothing to do until the slot. This is what spreads the checks evenly, with no burst.
        return Ok(Action::requeue(due - now));
    }
    let unchanged = if dirty {
        None
    } else {
        context.executor.workload_unchanged(&key).await
    };
    if unchanged == Some(true) {
        context.executor.metrics().reconciled("checked");
    } else {
        // A change seen by a watch, drift found by the check, or no full pass yet: the full pass.
        context.executor.reconcile_and_record(&key, &context.config).await;
    }
    let now = tokio::time::Instant::now();
    let next = context.schedule.passed(&key, now);
    Ok(Action::requeue(next.saturating_duration_since(now)))
}

/// The Secrets the reconciler watches, metadata only: every type but those CAPI, Kubernetes and Helm write by the
/// hundred (kubeconfigs and certificates, service-account tokens, Helm releases), which are never credentials.
///
/// Why a watch, and why this one: a rotation must be copied within seconds, and polling the referenced Secret of
/// every Cluster is the cost issue 26 removes. RBAC cannot confine a watch to metadata, so list and watch on
/// Secrets give the executor's ServiceAccount no more than its `get` on every Secret in those namespaces already
/// does, except their names; the process itself asks for metadata only (PartialObjectMetadata, managedFields
/// dropped), so it never holds a Secret's data it is not about to copy. A label-selected watch would need konnector to
/// label its users' Secrets (a write right on them); a field selector on the name allows one Secret per watch.
pub(super) fn secret_watch_config(base: &watcher::Config) -> watcher::Config {
    base.clone().fields(
        "type!=cluster.x-k8s.io/secret,type!=kubernetes.io/service-account-token,type!=helm.sh/release.v1",
    )
}

pub(super) fn cluster_key(m: &PartialObjectMeta<DynamicObject>) -> Option<ClusterKey> {
    ClusterKey::new(m.metadata.namespace.as_deref()?, m.metadata.name.as_deref()?).ok()
}

/// The Clusters that own a HelmChartProxy.
pub(super) fn owner_clusters(m: &PartialObjectMeta<DynamicObject>) -> Vec<ClusterKey> {
    let Some(ns) = m.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    m.metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == crate::names::CLUSTER_KIND)
        .filter_map(|o| ClusterKey::new(ns, &o.name).ok())
        .collect()
}

pub(super) fn error_policy(_: Arc<ClusterMeta>, error: &std::convert::Infallible, _: Arc<Context>) -> Action {
    match *error {}
}
