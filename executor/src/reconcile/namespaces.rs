//! Which namespaces' Clusters the reconciler may act on: those the ExtensionConfig's `namespaceSelector` selects.

use super::*;

/// The namespaces the ExtensionConfig's `namespaceSelector` selects, from a label-selected, metadata-only watch on
/// Namespaces: the API server filters, so the process holds only the selected namespaces' metadata.
#[derive(Clone)]
pub(super) struct SelectedNamespaces {
    pub(super) store: reflector::Store<PartialObjectMeta<Namespace>>,
}

impl SelectedNamespaces {
    /// Starts the watch; it runs until `stop`.
    pub(super) fn start(
        client: kube::Client,
        selector: &LabelSelector,
        stop: CancellationToken,
    ) -> Option<Self> {
        let selector = match kube::core::Selector::try_from(selector.clone()) {
            Ok(s) => s,
            Err(e) => {
                // Checked when parsed; a selector that fails here selects nothing rather than everything.
                tracing::warn!(error = %e, "invalid namespaceSelector; the reconciler acts on no Cluster");
                return None;
            }
        };
        let (store, writer) = reflector::store();
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(client);
        let events = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default().labels_from(&selector))
                .modify(|m| m.managed_fields_mut().clear())
                .default_backoff(),
        );
        tokio::spawn(async move {
            let drain = events.for_each(|e| async move {
                if let Err(e) = e {
                    tracing::warn!(error = %crate::limits::brief(&e), "cannot watch the selected namespaces");
                }
            });
            tokio::select! {
                () = stop.cancelled() => {}
                () = drain => {}
            }
        });
        Some(Self { store })
    }

    /// Whether `namespace` is selected; `false` until the watch has listed (fail closed: a Cluster the hooks may
    /// not reach is never touched on a guess).
    pub(super) fn selects(&self, namespace: &str) -> bool {
        self.store.get(&reflector::ObjectRef::new(namespace)).is_some()
    }
}
