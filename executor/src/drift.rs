//! Pure decisions about drift, for the reconciler: what the workload cluster should hold, which HelmChartProxy
//! fields are the chart, and who else edited what konnector wrote. No client: its tests are tables
//! (`reconcile/tests.rs`).

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::DynamicObject;
use serde_json::Value;

use crate::names::{CAREN_FIELD_MANAGER, FIELD_MANAGER};

/// The HelmChartProxy spec fields that carry the chart and its values: kept as they are unless
/// `follow_defaults`.
pub(crate) const CHART_FIELDS: [&str; 5] = ["repoURL", "chartName", "version", "valuesTemplate", "tlsConfig"];

/// What the cheap periodic check expects on the workload cluster. A digest of the copied keys, never their values,
/// and never logged: it only compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkloadExpect {
    pub(crate) labels: serde_json::Map<String, Value>,
    pub(crate) secret_type: String,
    pub(crate) keys: Vec<String>,
    pub(crate) digest: u64,
}

impl WorkloadExpect {
    pub(crate) fn of(labels: &serde_json::Map<String, Value>, wanted: &Secret) -> Self {
        let keys: Vec<String> = wanted.data.iter().flatten().map(|(k, _)| k.clone()).collect();
        Self {
            labels: labels.clone(),
            secret_type: secret_type(wanted).to_owned(),
            digest: keys_digest(wanted, &keys),
            keys,
        }
    }

    /// Whether the workload objects as read still hold what the last full pass saw.
    pub(crate) fn holds(&self, namespace: Option<&Namespace>, secret: Option<&Secret>) -> bool {
        let (Some(namespace), Some(secret)) = (namespace, secret) else {
            return false;
        };
        let labels = namespace.metadata.labels.clone().unwrap_or_default();
        self.labels
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            && secret_type(secret) == self.secret_type
            && keys_digest(secret, &self.keys) == self.digest
    }
}

/// A digest of `keys` of the Secret's data (absent keys count), in memory only.
pub(crate) fn keys_digest(secret: &Secret, keys: &[String]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for k in keys {
        k.hash(&mut h);
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| &v.0)
            .hash(&mut h);
    }
    h.finish()
}

pub(crate) fn chart_fields(spec: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for field in CHART_FIELDS {
        if let Some(v) = spec.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

pub(crate) fn pin_chart(spec: &mut Value, pinned: &Value) {
    let Some(spec) = spec.as_object_mut() else { return };
    for field in CHART_FIELDS {
        match pinned.get(field) {
            Some(v) => spec.insert(field.to_owned(), v.clone()),
            None => spec.remove(field),
        };
    }
}

/// Whether every field of `wanted` is in `have` with the same value (extra fields in `have`, e.g. API server
/// defaults, are fine).
pub(crate) fn contains(have: &Value, wanted: &Value) -> bool {
    match (have, wanted) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        _ => have == wanted,
    }
}

pub(crate) fn owned_by(hcp: &DynamicObject, uid: &str) -> bool {
    hcp.metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.uid == uid))
}

/// Whether a manager other than konnector owns one of the HelmChartProxy's chart fields.
pub(crate) fn chart_edited_by_others(hcp: &DynamicObject) -> bool {
    hcp.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() != Some(FIELD_MANAGER)
            && m.fields_v1.as_ref().is_some_and(|f| {
                CHART_FIELDS
                    .iter()
                    .any(|field| f.0["f:spec"].get(format!("f:{field}")).is_some())
            })
    })
}

/// A Secret's type as the API server reads it: unset means Opaque.
pub(crate) fn secret_type(s: &Secret) -> &str {
    s.type_.as_deref().unwrap_or("Opaque")
}

/// Whether the workload Secret holds every key konnector copies with the value it copies. Other keys are not
/// konnector's: CAREN copies the source Secret whole, so a key konnector leaves out (an `apiKey`, say) may sit
/// there, owned by CAREN, and comparing it would find a difference no write of konnector's can remove.
pub(crate) fn copied_keys_match(have: &Secret, wanted: &Secret) -> bool {
    let have = have.data.as_ref();
    wanted
        .data
        .iter()
        .flatten()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// Whether a manager other than the two copiers (konnector, and CAREN, which also copies the source verbatim) owns
/// one of the keys konnector copies: then a difference there is an edit, not a rotation. Keys konnector does not
/// copy are not looked at.
pub(crate) fn copied_keys_edited_by_others(secret: &Secret, wanted: &Secret) -> bool {
    let keys: Vec<&String> = wanted.data.iter().flatten().map(|(k, _)| k).collect();
    secret.metadata.managed_fields.iter().flatten().any(|m| {
        !matches!(m.manager.as_deref(), Some(FIELD_MANAGER | CAREN_FIELD_MANAGER))
            && m.fields_v1.as_ref().is_some_and(|f| {
                ["f:data", "f:stringData"].iter().any(|section| {
                    f.0.get(section)
                        .and_then(Value::as_object)
                        .is_some_and(|o| keys.iter().any(|k| o.contains_key(&format!("f:{k}"))))
                })
            })
    })
}

/// Whether CAREN's field manager co-owns one of the HelmChartProxy's chart fields: CAREN applied it.
pub(crate) fn co_managed_by_caren(hcp: &DynamicObject) -> bool {
    hcp.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(CAREN_FIELD_MANAGER)
            && m.fields_v1.as_ref().is_some_and(|f| {
                CHART_FIELDS
                    .iter()
                    .any(|field| f.0["f:spec"].get(format!("f:{field}")).is_some())
            })
    })
}
