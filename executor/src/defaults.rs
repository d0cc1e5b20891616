//! The two defaults ConfigMaps, served from watches instead of a GET each per apply.
//!
//! Every ApplyAgent needs the chart coordinates and the values template, and they change rarely, so reading them
//! twice per hook is most of what a steady-state re-apply costs the management API server. Each ConfigMap has its
//! own watch, narrowed to its name by a field selector, so the executor holds those two objects and nothing else
//! (its Role allows list and watch on ConfigMaps in the defaults namespace only). Until a watch has listed, and
//! whenever it is failing, callers fall back to a GET, so a watch problem costs API calls, never correctness.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

use crate::config::ExecutorConfig;

/// The two defaults ConfigMaps (chart coordinates and values template), watched from first use.
pub(crate) struct Defaults {
    mgmt: Client,
    namespace: String,
    names: [String; 2],
    watches: tokio::sync::OnceCell<WatchedConfigMaps>,
}

impl Defaults {
    pub(crate) fn new(mgmt: Client, config: &ExecutorConfig) -> Self {
        Self {
            mgmt,
            namespace: config.defaults_namespace.clone(),
            names: [
                config.helm_addons_configmap.clone(),
                config.values_template_configmap.clone(),
            ],
            watches: tokio::sync::OnceCell::new(),
        }
    }

    /// The watches on the defaults ConfigMaps, started on first use.
    pub(crate) async fn watched(&self) -> &WatchedConfigMaps {
        self.watches
            .get_or_init(|| async {
                WatchedConfigMaps::start(
                    self.mgmt.clone(),
                    &self.namespace,
                    &[&self.names[0], &self.names[1]],
                )
            })
            .await
    }
}

/// What one watch knows: `None` until it has listed (or while it is failing), then the ConfigMap or its absence.
type Known = Option<Option<ConfigMap>>;

/// Watches on named ConfigMaps in one namespace.
#[derive(Clone, Default)]
pub(crate) struct WatchedConfigMaps {
    known: Arc<Mutex<HashMap<String, Known>>>,
    /// Counts changes to the ConfigMaps, bumped after the new content is recorded (so whoever reacts reads it):
    /// the reconciler's `follow_defaults` passes are triggered by it.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// The watch tasks, aborted when the last clone goes (with the executor), so no watch outlives it.
    _tasks: Arc<AbortOnDrop>,
}

/// Aborts its tasks when dropped.
#[derive(Default)]
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Records what the watch of `name` knows. The tasks write through this rather than through a
/// `WatchedConfigMaps` clone, which would keep their own abort guard alive.
fn set_known(known: &Mutex<HashMap<String, Known>>, name: &str, value: Known) {
    // A panic while holding this lock cannot leave the map inconsistent, so poisoning is ignored.
    known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), value);
}

impl WatchedConfigMaps {
    /// Starts one watch per name (on the current Tokio runtime); they run until the last clone is dropped.
    pub(crate) fn start(client: Client, namespace: &str, names: &[&str]) -> Self {
        let mut this = Self::default();
        let mut tasks = Vec::new();
        for name in names {
            this.lock().insert((*name).to_owned(), None);
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let known = this.known.clone();
            let changes = this.changes.clone();
            let name = (*name).to_owned();
            let task = tokio::spawn(async move {
                let mut events = watcher(api, config).default_backoff().boxed();
                // Objects seen since the last (re)list began; the list is complete at InitDone.
                let mut listing: Option<Option<ConfigMap>> = None;
                // The resourceVersion last recorded (`None` before the first list): a change is a move from one
                // known state to another, so the first list signals nothing and a re-list after a failed watch
                // signals only when something changed meanwhile.
                let mut last: Option<Option<String>> = None;
                let mut record = |value: Option<ConfigMap>| {
                    let rv = value.as_ref().and_then(|cm| cm.metadata.resource_version.clone());
                    set_known(&known, &name, Some(value));
                    if last.as_ref().is_some_and(|l| *l != rv) {
                        changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    last = Some(rv);
                };
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Init) => listing = Some(None),
                        Ok(watcher::Event::InitApply(cm)) => listing = Some(Some(cm)),
                        Ok(watcher::Event::InitDone) => record(listing.take().flatten()),
                        Ok(watcher::Event::Apply(cm)) => record(Some(cm)),
                        Ok(watcher::Event::Delete(_)) => record(None),
                        Err(error) => {
                            // Until the watch lists again, callers read with a GET.
                            tracing::debug!(configmap = %name, error = %crate::limits::brief(&error), "defaults ConfigMap watch failed; falling back to reads");
                            set_known(&known, &name, None);
                        }
                    }
                }
            });
            tasks.push(task.abort_handle());
        }
        this._tasks = Arc::new(AbortOnDrop(tasks));
        this
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        // A panic while holding this lock cannot leave the map inconsistent, so poisoning is ignored.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes to the watched ConfigMaps, each seen after its content is recorded here.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The ConfigMap as the watch knows it: `Some(None)` when it does not exist, `None` when the watch cannot say.
    pub(crate) fn get(&self, name: &str) -> Known {
        self.lock().get(name).cloned().flatten()
    }
}
