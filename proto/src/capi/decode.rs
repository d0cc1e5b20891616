//! The named decoders inside a kept variable, and their errors, which name a path and never a value.

use super::*;

pub(super) fn malformed(variable: &str, path: &[&str]) -> DecodeError {
    DecodeError::Malformed {
        variable: variable.to_owned(),
        path: if path.is_empty() {
            "the value".to_owned()
        } else {
            path.join(".")
        },
    }
}

pub(super) fn decode_at<T: DeserializeOwned>(
    variable: &str,
    value: &RawValue,
    path: &[&str],
) -> Result<Option<T>, DecodeError> {
    match lookup(variable, value, path)? {
        None => Ok(None),
        Some(v) if is_null(v) => Ok(None),
        Some(v) => serde_json::from_str(v.get())
            .map(Some)
            .map_err(|_| malformed(variable, path)),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct KonnectorAgentJson {
    pub(super) strategy: Option<String>,
    pub(super) credentials: Option<CredentialsJson>,
    pub(super) enable_kubeconfig_upload: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct CredentialsJson {
    pub(super) secret_ref: Option<SecretRefJson>,
}

#[derive(Deserialize, Default)]
pub(super) struct SecretRefJson {
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PrismCentralJson {
    pub(super) url: Option<String>,
    pub(super) insecure: Option<bool>,
    pub(super) additional_trust_bundle: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct CategoryJson {
    pub(super) key: Option<String>,
    pub(super) value: Option<String>,
}

pub(super) const CP_CATEGORIES: &[&str] = &[
    "controlPlane",
    "nutanix",
    "machineDetails",
    "additionalCategories",
];
pub(super) const WORKER_IN_CLUSTER_CONFIG: &[&str] = &[
    "workerConfig",
    "nutanix",
    "machineDetails",
    "additionalCategories",
];
pub(super) const WORKER_CATEGORIES: &[&str] = &["nutanix", "machineDetails", "additionalCategories"];

pub(super) fn collect_categories(
    vars: &[ClusterVariable],
    out: &mut Vec<Category>,
) -> Result<(), DecodeError> {
    let lookups: [(&str, &[&str]); 3] = [
        (CLUSTER_CONFIG, CP_CATEGORIES),
        (CLUSTER_CONFIG, WORKER_IN_CLUSTER_CONFIG),
        (WORKER_CONFIG, WORKER_CATEGORIES),
    ];
    for (name, path) in lookups {
        let Some(value) = variable(vars, name) else {
            continue;
        };
        let list: Option<Vec<CategoryJson>> = decode_at(name, value, path)?;
        out.extend(list.unwrap_or_default().into_iter().filter_map(|c| {
            let key = c.key.filter(|k| !k.is_empty())?;
            let value = c.value.filter(|v| !v.is_empty())?;
            Some(Category { key, value })
        }));
    }
    Ok(())
}
