//! Hooks that trust the watch when it is provably current (issue 26 item 3).
//!
//! A hook body carries the resourceVersion of the Cluster CAPI called about. ApplyAgent uses a copy of the Cluster
//! that this process read itself, live, only when three versions agree: the body's, the one a watch on Clusters
//! holds now, and the copy's. Anything else reads the live Cluster, as before: a body older or newer than the
//! watch, a Cluster the watch does not know, a watch that has not listed yet, is listing again or has failed since
//! its last event, a Cluster never read, the cache turned off. The body is never a source of values: a forged
//! version can only choose a live read, or the copy the watch says is current.
//!
//! Every replica runs the watch, started by the first hook that carries a version, whether or not it leads the
//! reconciler (whose own watch exists in the leader only). It asks for metadata only (PartialObjectMetadata) and
//! keeps each Cluster's uid and resourceVersion, nothing else. The copies are decoded Clusters (only what konnector
//! reads) within a byte budget, counted on the JSON they were decoded from; a copy a watch event made useless is
//! dropped at once. Every live read of a Cluster (hooks, the reconciler, status) refreshes its copy.
//!
//! The same watch, on HelmChartProxies, lets a re-apply skip its write: when the body a hook would write is the one
//! this process last wrote for the Cluster (a digest, `apply.rs`) and the watch holds the proxy at the
//! resourceVersion that write produced, nobody changed it since, and the write (with the ownership check before it)
//! would change nothing. Any change to the proxy, CAAPH's status included, moves its version, and the next hook
//! checks and writes as before.
//!
//! What a version cannot prove: a watch delivers an edit after it is written, so a body and a watch that both lag a
//! very recent edit agree on the version before it, and the hook applies the Cluster at the version CAPI sent. A
//! live read had the same kind of window (an edit landing between the read and the write); an edit is then still
//! a watch event, which triggers the reconciler's pass, and the next hook carries the new version. Likewise a proxy
//! edited or deleted a moment before a hook, before the watch delivered it, is repaired by the reconciler's pass
//! that event triggers, not by that hook.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::DynamicObject,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};

use crate::{
    domain::{ClusterKey, LiveCluster},
    names::{ClusterVersion, hcp_resource},
    observe::ExecutorMetrics,
};

/// A Cluster whose JSON is larger than this share of the budget is never copied, so one tenant's large Clusters
/// cannot push everyone else's out.
const LARGEST_SHARE: u64 = 64;
/// Objects per page when the watch lists Clusters (metadata only), as the reconciler's default.
const PAGE_SIZE: u32 = 50;

/// Which version of which object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Version {
    uid: String,
    resource_version: String,
}

/// What one watch (all namespaces, or one) knows.
struct Scope {
    /// `None`: every namespace.
    namespace: Option<String>,
    /// Whether `watched` is the watch's complete, current view: false until the first list is done, while a list
    /// runs again, and after a failure until the next event.
    synced: bool,
    watched: HashMap<ClusterKey, Version>,
    /// What a list under way has returned so far; it replaces `watched` when complete.
    listing: Option<HashMap<ClusterKey, Version>>,
}

impl Scope {
    fn covers(&self, key: &ClusterKey) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == key.namespace)
    }
}

/// The two kinds the hooks watch.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Clusters,
    HelmChartProxies,
}

impl Kind {
    fn resource(self) -> &'static str {
        match self {
            Self::Clusters => "clusters",
            Self::HelmChartProxies => "helmchartproxies",
        }
    }
}

type MetaEvent = Result<watcher::Event<PartialObjectMeta<DynamicObject>>, watcher::Error>;

/// What an event changed.
enum Moved {
    Nothing,
    One(ClusterKey),
    /// A list completed: anything may have changed.
    All,
}

/// The watches of one kind: all namespaces, or one per namespace.
#[derive(Default)]
struct Watched {
    scopes: Vec<Scope>,
}

impl Watched {
    fn add(&mut self, namespace: Option<String>) {
        self.scopes.push(Scope {
            namespace,
            synced: false,
            watched: HashMap::new(),
            listing: None,
        });
    }

    /// The version the watch holds for `key`, when it is synced.
    fn current(&self, key: &ClusterKey) -> Option<&Version> {
        self.scopes
            .iter()
            .find(|s| s.covers(key))
            .filter(|s| s.synced)?
            .watched
            .get(key)
    }

    fn observe(&mut self, scope: usize, event: MetaEvent) -> Moved {
        let s = &mut self.scopes[scope];
        match event {
            Ok(watcher::Event::Init) => {
                s.synced = false;
                s.listing = Some(HashMap::new());
                Moved::Nothing
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let (Some(listing), Some((key, version))) = (s.listing.as_mut(), identify(&o)) {
                    listing.insert(key, version);
                }
                Moved::Nothing
            }
            Ok(watcher::Event::InitDone) => {
                s.watched = s.listing.take().unwrap_or_default();
                s.synced = true;
                Moved::All
            }
            Ok(watcher::Event::Apply(o)) => {
                let Some((key, version)) = identify(&o) else {
                    return Moved::Nothing;
                };
                s.synced = s.listing.is_none();
                s.watched.insert(key.clone(), version);
                Moved::One(key)
            }
            Ok(watcher::Event::Delete(o)) => {
                let Some((key, _)) = identify(&o) else {
                    return Moved::Nothing;
                };
                s.synced = s.listing.is_none();
                s.watched.remove(&key);
                Moved::One(key)
            }
            Err(error) => {
                // The watch resumes from where it was (or lists again); until it shows it is running, hooks read
                // and write as if there were no watch.
                s.synced = false;
                tracing::debug!(error = %crate::limits::brief(&error), "hooks' watch failed; reading live");
                Moved::Nothing
            }
        }
    }
}

struct ClusterCopy {
    version: Version,
    bytes: u64,
    cluster: LiveCluster,
}

#[derive(Default)]
struct State {
    clusters: Watched,
    hcps: Watched,
    copies: HashMap<ClusterKey, ClusterCopy>,
    used: u64,
}

impl State {
    fn drop_copy(&mut self, key: &ClusterKey) {
        if let Some(c) = self.copies.remove(key) {
            self.used -= c.bytes;
        }
    }

    fn observe(&mut self, kind: Kind, scope: usize, event: MetaEvent) {
        let moved = match kind {
            Kind::Clusters => self.clusters.observe(scope, event),
            Kind::HelmChartProxies => {
                self.hcps.observe(scope, event);
                return;
            }
        };
        // A copy the watch no longer holds at its version is never used again: dropped at once.
        let stale: Vec<ClusterKey> = match moved {
            Moved::Nothing => return,
            Moved::One(key) => vec![key],
            Moved::All => self.copies.keys().cloned().collect(),
        };
        for key in stale {
            let current = self.clusters.current(&key);
            if self.copies.get(&key).is_some_and(|c| Some(&c.version) != current) {
                self.drop_copy(&key);
            }
        }
    }
}

fn identify(o: &PartialObjectMeta<DynamicObject>) -> Option<(ClusterKey, Version)> {
    let m = &o.metadata;
    let key = ClusterKey::new(m.namespace.as_deref()?, m.name.as_deref()?).ok()?;
    Some((
        key,
        Version {
            uid: m.uid.clone()?,
            resource_version: m.resource_version.clone()?,
        },
    ))
}

/// The hooks' watches and Cluster copies. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HookClusters {
    state: Arc<Mutex<State>>,
    budget: u64,
    /// The watch tasks, aborted with the last clone (with the executor).
    _tasks: Arc<AbortOnDrop>,
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Every critical section leaves the maps consistent, so poisoning is ignored.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl HookClusters {
    /// Starts the metadata-only watches on Clusters and HelmChartProxies, one of each per namespace in
    /// `namespaces` (all namespaces when empty). Each watch event is counted in `metrics`.
    fn start(
        client: Client,
        version: ClusterVersion,
        namespaces: &[String],
        budget: u64,
        metrics: &ExecutorMetrics,
    ) -> Self {
        let scopes: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let state = Arc::new(Mutex::new(State::default()));
        let mut tasks = Vec::new();
        for (kind, resource) in [
            (Kind::Clusters, version.resource()),
            (Kind::HelmChartProxies, hcp_resource()),
        ] {
            for (index, namespace) in scopes.iter().enumerate() {
                let api: Api<PartialObjectMeta<DynamicObject>> = match namespace {
                    None => Api::all_with(client.clone(), &resource),
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                };
                let mut locked = lock(&state);
                match kind {
                    Kind::Clusters => locked.clusters.add(namespace.clone()),
                    Kind::HelmChartProxies => locked.hcps.add(namespace.clone()),
                }
                drop(locked);
                let (state, metrics) = (state.clone(), metrics.clone());
                let task = tokio::spawn(async move {
                    let config = watcher::Config::default().page_size(PAGE_SIZE);
                    let mut events = watcher::watcher(api, config).default_backoff().boxed();
                    while let Some(event) = events.next().await {
                        metrics.hook_watch_event(kind.resource());
                        lock(&state).observe(kind, index, event);
                    }
                });
                tasks.push(task.abort_handle());
            }
        }
        Self {
            state,
            budget,
            _tasks: Arc::new(AbortOnDrop(tasks)),
        }
    }

    /// The copy of `key`, when the watch is synced and holds `resource_version` for it, and the copy is at that
    /// same version.
    fn current(&self, key: &ClusterKey, resource_version: &str) -> Option<LiveCluster> {
        let state = lock(&self.state);
        let watched = state
            .clusters
            .current(key)
            .filter(|v| v.resource_version == resource_version)?;
        let copy = state.copies.get(key).filter(|c| c.version == *watched)?;
        Some(copy.cluster.clone())
    }

    /// The resourceVersion the watch holds for HelmChartProxy `key` (namespace and name), when it is synced.
    fn hcp_version(&self, key: &ClusterKey) -> Option<String> {
        lock(&self.state)
            .hcps
            .current(key)
            .map(|v| v.resource_version.clone())
    }

    /// Keeps a copy of a Cluster just read live, `bytes` being the size of the JSON it was decoded from.
    fn remember(&self, live: &LiveCluster, bytes: u64) {
        let mut state = lock(&self.state);
        state.drop_copy(&live.key);
        let version = Version {
            uid: live.uid.clone(),
            resource_version: live.cluster.resource_version().to_owned(),
        };
        if version.resource_version.is_empty() || bytes > self.budget / LARGEST_SHARE {
            return;
        }
        // Kept even when the watch holds another version: it may not have seen this one yet. A copy older than the
        // watch is never used, and goes with the next event or eviction.
        while state.used + bytes > self.budget {
            let Some(key) = state.copies.keys().next().cloned() else {
                break;
            };
            state.drop_copy(&key);
        }
        state.used += bytes;
        state.copies.insert(
            live.key.clone(),
            ClusterCopy {
                version,
                bytes,
                cluster: live.clone(),
            },
        );
    }

    fn forget(&self, key: &ClusterKey) {
        lock(&self.state).drop_copy(key);
    }

    #[cfg(test)]
    fn for_test(budget: u64) -> Self {
        let mut state = State::default();
        state.clusters.add(None);
        state.hcps.add(None);
        Self {
            state: Arc::new(Mutex::new(state)),
            budget,
            _tasks: Arc::new(AbortOnDrop(Vec::new())),
        }
    }
}

/// The hooks' watch and Cluster copies, started by the first hook that carries a resourceVersion; off when its
/// budget is 0.
pub(crate) struct HookCache {
    client: Client,
    /// The namespaces the watches cover; empty: all.
    namespaces: Vec<String>,
    budget: u64,
    metrics: ExecutorMetrics,
    started: tokio::sync::OnceCell<HookClusters>,
}

impl HookCache {
    pub(crate) fn new(
        client: Client,
        namespaces: Vec<String>,
        budget: u64,
        metrics: ExecutorMetrics,
    ) -> Self {
        Self {
            client,
            namespaces,
            budget,
            metrics,
            started: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether hooks may use copies at all (a budget of 0 turns the watch and the copies off).
    pub(crate) fn enabled(&self) -> bool {
        self.budget != 0
    }

    /// The copy of `key` when the watch and the copy both hold `resource_version`. Starts the watches, in the
    /// Cluster API `version` the management cluster serves, on first use.
    pub(crate) async fn current(
        &self,
        version: ClusterVersion,
        key: &ClusterKey,
        resource_version: &str,
    ) -> Option<LiveCluster> {
        if !self.enabled() {
            return None;
        }
        self.started
            .get_or_init(|| async {
                HookClusters::start(
                    self.client.clone(),
                    version,
                    &self.namespaces,
                    self.budget,
                    &self.metrics,
                )
            })
            .await
            .current(key, resource_version)
    }

    /// Keeps a copy of a Cluster just read live, once hooks have started the watch.
    pub(crate) fn remember(&self, live: &LiveCluster, bytes: usize) {
        if let Some(clusters) = self.started.get() {
            clusters.remember(live, u64::try_from(bytes).unwrap_or(u64::MAX));
        }
    }

    /// The resourceVersion of HelmChartProxy `namespace/name` as the hooks' watch holds it now, when that watch runs
    /// and is synced.
    pub(crate) fn hcp_version(&self, namespace: &str, name: &str) -> Option<String> {
        let key = ClusterKey::new(namespace, name).ok()?;
        self.started.get()?.hcp_version(&key)
    }

    /// Drops the copy of a Cluster that no longer exists.
    pub(crate) fn forget(&self, key: &ClusterKey) {
        if let Some(clusters) = self.started.get() {
            clusters.forget(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(name: &str, uid: &str, rv: &str) -> LiveCluster {
        let cluster = konnector_proto::capi::Cluster::from_json(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv},
        }))
        .unwrap();
        LiveCluster {
            key: ClusterKey::new("ns", name).unwrap(),
            uid: uid.to_owned(),
            version: ClusterVersion::V1Beta2,
            deletion_timestamp: None,
            cluster,
        }
    }

    fn meta(name: &str, uid: &str, rv: &str) -> PartialObjectMeta<DynamicObject> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv},
        }))
        .unwrap()
    }

    fn event(
        f: fn(PartialObjectMeta<DynamicObject>) -> watcher::Event<PartialObjectMeta<DynamicObject>>,
        name: &str,
        rv: &str,
    ) -> MetaEvent {
        Ok(f(meta(name, "u", rv)))
    }

    fn observe(c: &HookClusters, e: MetaEvent) {
        lock(&c.state).observe(Kind::Clusters, 0, e);
    }

    fn key(name: &str) -> ClusterKey {
        ClusterKey::new("ns", name).unwrap()
    }

    #[test]
    fn a_copy_is_used_only_when_body_watch_and_copy_agree() {
        let c = HookClusters::for_test(1 << 20);
        c.remember(&live("a", "u", "5"), 100);
        // Not listed yet: nothing is trusted.
        assert!(c.current(&key("a"), "5").is_none());
        observe(&c, Ok(watcher::Event::Init));
        observe(&c, event(watcher::Event::InitApply, "a", "5"));
        // Listing: still not.
        assert!(c.current(&key("a"), "5").is_none());
        observe(&c, Ok(watcher::Event::InitDone));
        assert_eq!(c.current(&key("a"), "5").unwrap().uid, "u");
        // A body older or newer than the watch: live.
        assert!(c.current(&key("a"), "4").is_none());
        assert!(c.current(&key("a"), "6").is_none());
        // An edit seen by the watch drops the copy: a body with the old version now reads live.
        observe(&c, event(watcher::Event::Apply, "a", "6"));
        assert!(c.current(&key("a"), "5").is_none());
        assert!(c.current(&key("a"), "6").is_none(), "no copy at 6 yet");
        c.remember(&live("a", "u", "6"), 100);
        assert!(c.current(&key("a"), "6").is_some());
        // A failed watch trusts nothing until it shows it runs again.
        observe(&c, Err(watcher::Error::NoResourceVersion));
        assert!(c.current(&key("a"), "6").is_none());
        observe(&c, event(watcher::Event::Apply, "b", "9"));
        assert!(c.current(&key("a"), "6").is_some());
        // Deleted: gone, copy too.
        observe(&c, event(watcher::Event::Delete, "a", "7"));
        assert!(c.current(&key("a"), "6").is_none());
        assert_eq!(lock(&c.state).used, 0);
    }

    #[test]
    fn a_list_again_replaces_what_the_watch_knew() {
        let c = HookClusters::for_test(1 << 20);
        observe(&c, Ok(watcher::Event::Init));
        observe(&c, event(watcher::Event::InitApply, "a", "5"));
        observe(&c, Ok(watcher::Event::InitDone));
        c.remember(&live("a", "u", "5"), 100);
        // A re-list (after a desync) in which `a` moved on while the watch was down.
        observe(&c, Ok(watcher::Event::Init));
        assert!(c.current(&key("a"), "5").is_none(), "re-listing: live");
        observe(&c, event(watcher::Event::InitApply, "a", "8"));
        observe(&c, Ok(watcher::Event::InitDone));
        assert!(c.current(&key("a"), "5").is_none());
        assert!(lock(&c.state).copies.is_empty(), "the stale copy is dropped");
    }

    #[test]
    fn copies_stay_within_the_budget() {
        let c = HookClusters::for_test(64 * 1000);
        // Larger than a 64th of the budget: never copied.
        c.remember(&live("big", "u", "1"), 1001);
        assert!(lock(&c.state).copies.is_empty());
        for i in 0..200 {
            c.remember(&live(&format!("c{i}"), "u", "1"), 1000);
            let state = lock(&c.state);
            assert!(state.used <= 64 * 1000);
            assert_eq!(state.used, state.copies.values().map(|c| c.bytes).sum::<u64>());
        }
        assert_eq!(lock(&c.state).copies.len(), 64);
        // Re-reading one replaces its copy, it does not count twice.
        c.remember(&live("c199", "u", "2"), 1000);
        assert_eq!(lock(&c.state).used, 64 * 1000);
        c.forget(&key("c199"));
        assert_eq!(lock(&c.state).used, 63 * 1000);
    }

    #[test]
    fn a_proxy_version_is_known_only_while_its_watch_is_synced() {
        let c = HookClusters::for_test(1 << 20);
        let hcp = |e: MetaEvent| lock(&c.state).observe(Kind::HelmChartProxies, 0, e);
        hcp(Ok(watcher::Event::Init));
        hcp(event(watcher::Event::InitApply, "p", "3"));
        assert_eq!(c.hcp_version(&key("p")), None, "listing");
        hcp(Ok(watcher::Event::InitDone));
        assert_eq!(c.hcp_version(&key("p")).as_deref(), Some("3"));
        hcp(event(watcher::Event::Apply, "p", "4"));
        assert_eq!(c.hcp_version(&key("p")).as_deref(), Some("4"));
        hcp(Err(watcher::Error::NoResourceVersion));
        assert_eq!(c.hcp_version(&key("p")), None, "failed");
        hcp(event(watcher::Event::Delete, "p", "5"));
        assert_eq!(c.hcp_version(&key("p")), None, "deleted");
        // The Clusters' watch is another: proxies never make a Cluster copy trusted.
        c.remember(&live("p", "u", "4"), 100);
        assert!(c.current(&key("p"), "4").is_none());
    }
}
