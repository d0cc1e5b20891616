//! Field by field: the HelmChartProxy spec there now against the one konnector would write, and what each
//! difference means for the Helm release under CAAPH's rules (shared/reference/runtime-sdk.md §5.3–§5.6):
//!
//! - `chartName`, `repoURL`, `namespace`, `releaseName`: CAAPH deletes the HelmReleaseProxy and creates a new one,
//!   which runs `helm uninstall` first. A takeover must never do that, so such a row is blocked.
//! - `clusterSelector`: another selection can unselect the Cluster, which also uninstalls. Blocked.
//! - `reconcileStrategy`: immutable (CAAPH's webhook refuses the write). Blocked.
//! - `version`, `valuesTemplate`: CAAPH upgrades the release: one new revision, history kept.
//! - anything else (`options`, `tlsConfig`, …): no new revision by itself.
//!
//! Only fields konnector writes are compared, and only as far as konnector writes them (server-side apply leaves
//! the rest to their managers, and API server defaults are not a difference). Values are never printed: only
//! whether they differ and, when both parse as YAML, the paths of the keys that differ.

use serde::Serialize;
use serde_json::Value;

/// What a changed field does to the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Nothing happens to the release.
    None,
    /// CAAPH upgrades it: one new Helm revision.
    NewRevision,
    /// CAAPH uninstalls and installs it again.
    Reinstall,
    /// The Cluster may no longer be selected, which uninstalls.
    Reselect,
    /// CAAPH refuses the change.
    Immutable,
}

impl Effect {
    fn of(field: &str) -> Self {
        match field {
            "chartName" | "repoURL" | "namespace" | "releaseName" => Self::Reinstall,
            "clusterSelector" => Self::Reselect,
            "reconcileStrategy" => Self::Immutable,
            "version" | "valuesTemplate" => Self::NewRevision,
            _ => Self::None,
        }
    }

    /// Whether a change with this effect blocks a takeover.
    pub fn blocks(self) -> bool {
        matches!(self, Self::Reinstall | Self::Reselect | Self::Immutable)
    }
}

/// One spec field konnector writes that would change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The spec field, e.g. `version`.
    pub field: String,
    /// What the change does to the release.
    pub effect: Effect,
    /// The value there now, for short scalar fields that carry no secret (version, repository, names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The value konnector would write, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// For values: the paths of the keys that differ (never their values), or why they could not be compared
    /// key by key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

impl Change {
    /// `version 1.4.0 → 1.4.1`, `values (agent.name)`, `options`.
    pub fn text(&self) -> String {
        let name = if self.field == "valuesTemplate" {
            "values"
        } else {
            &self.field
        };
        let mut out = name.to_owned();
        if let (Some(from), Some(to)) = (&self.from, &self.to) {
            out.push_str(&format!(" {from} → {to}"));
        }
        if !self.keys.is_empty() {
            out.push_str(&format!(" ({})", self.keys.join(", ")));
        }
        out
    }
}

/// The fields whose values are printed: short, and never a secret (a repository URL loses any user:password).
const SHOWN: [&str; 5] = ["version", "repoURL", "chartName", "namespace", "releaseName"];
/// At most this many differing value keys are named.
const MAX_KEYS: usize = 8;

/// The changes from `live` (the spec there now) to `planned` (the spec konnector would write), fields in order.
pub fn changes(live: &Value, planned: &Value) -> Vec<Change> {
    let Some(planned) = planned.as_object() else {
        return Vec::new();
    };
    let mut fields: Vec<&String> = planned.keys().collect();
    fields.sort();
    let mut out = Vec::new();
    for field in fields {
        let (have, want) = (live.get(field.as_str()), &planned[field.as_str()]);
        let keys = if field == "valuesTemplate" {
            match values_differ(have, want) {
                None => continue,
                Some(keys) => keys,
            }
        } else if have.is_some_and(|h| contains(h, want)) {
            continue;
        } else {
            Vec::new()
        };
        let shown = SHOWN.contains(&field.as_str());
        out.push(Change {
            field: crate::migrate::bounded(field, 64),
            effect: Effect::of(field),
            from: shown.then(|| have.map_or("(unset)".to_owned(), scalar)),
            to: shown.then(|| scalar(want)),
            keys,
        });
    }
    out
}

/// A scalar for people: strings as they are (a URL without user:password), bounded, one line.
fn scalar(v: &Value) -> String {
    let text = match v {
        Value::String(s) => without_userinfo(s),
        other => other.to_string(),
    };
    crate::migrate::bounded(&text, 200)
}

/// `https://user:pass@host/x` → `https://host/x`.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Whether every field of `wanted` is in `have` with the same value (extra fields in `have`, e.g. API server
/// defaults or another manager's, are not a difference).
pub fn contains(have: &Value, wanted: &Value) -> bool {
    match (have, wanted) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        _ => have == wanted,
    }
}

/// `None` when the values are the same for Helm; otherwise the differing key paths (possibly none named). When both
/// are plain YAML they are compared as YAML, as CAAPH compares the rendered values; a template (`{{`) that CAAPH
/// renders per Cluster is compared as text, which can only overstate a difference.
fn values_differ(have: Option<&Value>, want: &Value) -> Option<Vec<String>> {
    let (have, want) = (
        have.and_then(Value::as_str).unwrap_or(""),
        want.as_str().unwrap_or(""),
    );
    if have == want {
        return None;
    }
    let parse = |s: &str| -> Option<Value> {
        if s.contains("{{") {
            return None;
        }
        serde_yaml_ng::from_str::<Value>(s).ok().map(|v| {
            if v.is_null() {
                Value::Object(Default::default())
            } else {
                v
            }
        })
    };
    match (parse(have), parse(want)) {
        (Some(h), Some(w)) if h == w => None,
        (Some(h), Some(w)) => {
            let mut keys = Vec::new();
            diff_paths(&h, &w, "", &mut keys);
            if keys.len() > MAX_KEYS {
                let more = keys.len() - MAX_KEYS;
                keys.truncate(MAX_KEYS);
                keys.push(format!("{more} more"));
            }
            Some(keys)
        }
        _ => Some(vec!["compared as template text".to_owned()]),
    }
}

/// The dotted paths at which `a` and `b` differ (added, removed or changed leaves).
fn diff_paths(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if at.is_empty() {
                    crate::migrate::bounded(k, 64)
                } else {
                    format!("{at}.{}", crate::migrate::bounded(k, 64))
                };
                match (x.get(k.as_str()), y.get(k.as_str())) {
                    (Some(p), Some(q)) => diff_paths(p, q, &path, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a == b => {}
        _ => out.push(if at.is_empty() {
            "(top level)".to_owned()
        } else {
            at.to_owned()
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn planned() -> Value {
        json!({
            "clusterSelector": {"matchLabels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "repoURL": "https://charts.example/stable/", "chartName": "konnector-agent", "version": "1.4.0",
            "releaseName": "konnector-agent", "namespace": "ntnx-system",
            "valuesTemplate": "agent:\n  name: \"konnector-agent\"\n",
            "options": {"install": {"createNamespace": true}},
        })
    }

    #[test]
    fn the_same_release_is_no_change_even_when_written_differently() {
        let mut live = planned();
        // Unquoted YAML, API server defaults, another manager's field: all the same for Helm.
        live["valuesTemplate"] = json!("agent:\n  name: konnector-agent\n");
        live["options"] = json!({"install": {"createNamespace": true}, "timeout": "10m0s"});
        live["reconcileStrategy"] = json!("Continuous");
        assert_eq!(changes(&live, &planned()), []);
    }

    #[test]
    fn each_field_has_its_effect_and_values_are_never_shown() {
        let mut live = planned();
        live["version"] = json!("1.3.0");
        live["valuesTemplate"] = json!("agent:\n  name: konnector-agent\n  password: hunter2\n");
        live["options"] = json!({"install": {}, "upgrade": {}});
        let found = changes(&live, &planned());
        let by = |f: &str| found.iter().find(|c| c.field == f).unwrap().clone();
        assert_eq!(by("version").effect, Effect::NewRevision);
        assert_eq!(by("version").text(), "version 1.3.0 → 1.4.0");
        assert_eq!(by("valuesTemplate").effect, Effect::NewRevision);
        assert_eq!(by("valuesTemplate").text(), "values (agent.password)");
        assert_eq!(by("options").effect, Effect::None);
        assert!(!format!("{found:?}").contains("hunter2"));
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn what_caaph_reinstalls_for_blocks() {
        let mut live = planned();
        live["repoURL"] = json!("oci://user:pw@helm-repository.caren.svc/charts");
        live["clusterSelector"] = json!({"matchLabels": {"team": "a"}});
        let found = changes(&live, &planned());
        assert!(found.iter().all(|c| c.effect.blocks()), "{found:?}");
        let repo = found.iter().find(|c| c.field == "repoURL").unwrap();
        assert_eq!(
            repo.text(),
            "repoURL oci://helm-repository.caren.svc/charts → https://charts.example/stable/"
        );
        assert!(!format!("{found:?}").contains("pw@"));
    }

    #[test]
    fn templates_are_compared_as_text() {
        let mut live = planned();
        live["valuesTemplate"] = json!("name: {{ .Cluster.metadata.name }}\n");
        let found = changes(&live, &planned());
        assert_eq!(found[0].keys, ["compared as template text"]);
    }
}
