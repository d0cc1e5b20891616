//! Which HelmChartProxy is this Cluster's.
//!
//! A name alone proves nothing: CAREN names its proxy after an annotation anyone can copy into another Cluster's
//! manifest, and konnector's own naming rule changed over time (plain name, hashed name, CAREN's uuid name). Every
//! candidate name drives the same Helm release, so deleting the "wrong" one makes CAAPH's HelmReleaseProxy finalizer
//! run `helm uninstall` on the live agent. So konnector resolves the name from what exists:
//!
//! - the first candidate (current rule first) that exists and is **owned** by this Cluster is used, whatever the
//!   rule says today: an object an older konnector or CAREN created is adopted, never renamed by delete-and-create;
//! - when none is, the first candidate that is free is created; a name held by another Cluster (a copied uuid
//!   annotation) is never written, and the name-based name is the deterministic fallback;
//! - other live proxies of this Cluster are reported, never deleted while the Cluster lives.
//!
//! Owned means both: an ownerReference to this Cluster's uid, and a `clusterSelector` that selects this Cluster by
//! name, which is what decides where CAAPH installs. A write to an existing proxy carries the resourceVersion that
//! was checked, so the check and the forced write are one atomic step (a concurrent change fails it with 409).

use kube::{
    Client,
    api::{Api, DynamicObject},
};
use tracing::Instrument;

use crate::{
    domain::LiveCluster,
    error::{Error, Side},
    names::{
        CLUSTER_KIND, CLUSTER_NAME_LABEL, candidate_helm_chart_proxy_names, hcp_resource,
        helm_chart_proxy_name_for, name_based_hcp_name,
    },
};

/// Whether `hcp` belongs to the Cluster with this uid and name: an ownerReference to it, and a selector naming it.
pub(crate) fn owned_by_cluster(hcp: &DynamicObject, uid: &str, name: &str) -> bool {
    let owner = hcp
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == CLUSTER_KIND && r.uid == uid);
    let selects =
        hcp.data["spec"]["clusterSelector"]["matchLabels"][CLUSTER_NAME_LABEL].as_str() == Some(name);
    owner && selects
}

/// The Cluster a foreign HelmChartProxy selects, for messages (`?` when it selects none by name). Bounded: it
/// comes from an object anyone with write access to the namespace may have written.
fn selected_cluster(hcp: &DynamicObject) -> String {
    let name = hcp.data["spec"]["clusterSelector"]["matchLabels"][CLUSTER_NAME_LABEL]
        .as_str()
        .unwrap_or("?");
    crate::limits::sanitize(name, 253)
}

/// The HelmChartProxy name ApplyAgent writes for a Cluster, and what it found on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The name to write.
    pub(crate) name: String,
    /// The resourceVersion of the existing object that was checked to be this Cluster's; `None` when it is created.
    pub(crate) resource_version: Option<String>,
    /// Things a person should know (an adopted name, a name another Cluster holds).
    pub(crate) notes: Vec<String>,
}

/// What one candidate name holds.
enum Holding {
    Absent,
    Ours {
        resource_version: String,
        deleting: bool,
    },
    Foreign {
        selects: String,
    },
}

/// What HelmChartProxy `name`, in the Cluster's namespace (`api`), holds for `live`.
async fn holding(api: &Api<DynamicObject>, live: &LiveCluster, name: &str) -> Result<Holding, Error> {
    let found = api
        .get_opt(name)
        .instrument(tracing::debug_span!("read_helm_chart_proxy", hcp.name = name))
        .await
        .map_err(|e| {
            Error::kube(
                format!("read HelmChartProxy {}/{name}", live.key.namespace),
                Side::Management,
                &e,
            )
        })?;
    Ok(match found {
        None => Holding::Absent,
        Some(h) if owned_by_cluster(&h, &live.uid, &live.key.name) => Holding::Ours {
            resource_version: h.metadata.resource_version.clone().unwrap_or_default(),
            deleting: h.metadata.deletion_timestamp.is_some(),
        },
        Some(h) => Holding::Foreign {
            selects: selected_cluster(&h),
        },
    })
}

/// Resolves the HelmChartProxy name for `live` (see the module documentation), reading with `mgmt`. One read in
/// the steady state: the current rule's name, found owned.
pub(crate) async fn resolve_hcp_name(mgmt: Client, live: &LiveCluster) -> Result<Resolved, Error> {
    let key = &live.key;
    let api: Api<DynamicObject> = Api::namespaced_with(mgmt, &key.namespace, &hcp_resource());
    let rule = helm_chart_proxy_name_for(&key.name, &live.annotations());
    let fallback = name_based_hcp_name(&key.name);
    let mut notes = Vec::new();
    let mut free = Vec::new();
    let mut deleting = None;
    for name in candidate_helm_chart_proxy_names(&key.name, &live.annotations()) {
        match holding(&api, live, &name).await? {
            Holding::Ours {
                resource_version,
                deleting: false,
            } => {
                if name != rule {
                    notes.push(format!(
                        "HelmChartProxy {}/{name} already drives this Cluster's release, so it is kept under that name (the current naming rule would say {rule}); renaming it would make CAAPH uninstall the agent",
                        key.namespace
                    ));
                }
                return Ok(Resolved {
                    name,
                    resource_version: Some(resource_version),
                    notes,
                });
            }
            Holding::Ours { deleting: true, .. } => {
                deleting.get_or_insert(name);
            }
            Holding::Absent => free.push(name),
            Holding::Foreign { selects } => notes.push(format!(
                "HelmChartProxy {}/{name} belongs to another Cluster (it selects {selects:?}), so it is neither written nor deleted for this one",
                key.namespace
            )),
        }
    }
    if let Some(name) = deleting {
        // An uninstall owns it; a second proxy beside it would install while it uninstalls.
        return Err(Error::HelmChartProxyDeleting {
            hcp: format!("{}/{name}", key.namespace),
        });
    }
    // Created only under the current rule's name or the name-based fallback: the legacy name is for finding.
    match free.into_iter().find(|n| *n == rule || *n == fallback) {
        Some(name) => Ok(Resolved {
            name,
            resource_version: None,
            notes,
        }),
        None => Err(Error::HelmChartProxyNameTaken {
            cluster: key.to_string(),
            hcp: format!("{}/{rule}", key.namespace),
        }),
    }
}

/// After a write under `current`: this Cluster's other live HelmChartProxies (CAREN created one beside
/// konnector's, or the other way round). They are reported, not deleted: each drives the same release, and
/// deleting one makes CAAPH uninstall the agent. docs/operating.md ("Beside CAREN") says how one is retired.
pub(crate) async fn report_siblings(
    mgmt: Client,
    live: &LiveCluster,
    current: &str,
) -> Result<Vec<String>, Error> {
    let key = &live.key;
    let api: Api<DynamicObject> = Api::namespaced_with(mgmt, &key.namespace, &hcp_resource());
    let mut siblings = Vec::new();
    for name in candidate_helm_chart_proxy_names(&key.name, &live.annotations()) {
        if name == current {
            continue;
        }
        if let Holding::Ours { deleting: false, .. } = holding(&api, live, &name).await? {
            tracing::warn!(hcp.name = %name, "another HelmChartProxy drives this Cluster's release; left in place");
            siblings.push(format!("{}/{name}", key.namespace));
        }
    }
    Ok(siblings)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hcp(owner_uid: Option<&str>, selects: &str) -> DynamicObject {
        let mut v = json!({
            "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
            "metadata": {"name": "konnector-agent-x", "namespace": "ns"},
            "spec": {"clusterSelector": {"matchLabels": {CLUSTER_NAME_LABEL: selects}}},
        });
        if let Some(uid) = owner_uid {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": selects, "uid": uid}]);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ownership_needs_the_uid_and_the_selector() {
        assert!(owned_by_cluster(&hcp(Some("u1"), "a"), "u1", "a"));
        // A copied uuid: the other Cluster's proxy.
        assert!(!owned_by_cluster(&hcp(Some("u2"), "b"), "u1", "a"));
        // Our uid, but it installs elsewhere (CAREN traded it to the other Cluster).
        assert!(!owned_by_cluster(&hcp(Some("u1"), "b"), "u1", "a"));
        // It selects us, but a Cluster re-created under the same name (another uid) or nobody owns it.
        assert!(!owned_by_cluster(&hcp(Some("old"), "a"), "u1", "a"));
        assert!(!owned_by_cluster(&hcp(None, "a"), "u1", "a"));
    }

    #[test]
    fn a_foreign_selector_is_bounded_in_messages() {
        let shown = selected_cluster(&hcp(None, &format!("x\n{}", "y".repeat(1000))));
        assert!(shown.chars().count() <= 254 && !shown.contains('\n'), "{shown}");
    }
}
