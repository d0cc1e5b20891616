//! Unit tests of the reconciler's pure parts: drift decisions, the schedule.

use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::*;
use crate::names::CAREN_FIELD_MANAGER;

fn secret(data: &[(&str, &str)], managers: Value) -> Secret {
    serde_json::from_value(json!({
            "metadata": {"name": "konnector-agent", "managedFields": managers},
            "data": data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect::<std::collections::BTreeMap<_, _>>(),
        }))
        .unwrap()
}

fn manager(name: &str, keys: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect();
    json!({"manager": name, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": data}})
}

#[test]
fn only_the_copied_keys_are_compared_and_judged() {
    let wanted = secret(&[("username", "u"), ("password", "p")], json!([]));
    // CAREN copied the source whole: an extra key it owns is not a difference.
    let caren_copy = secret(
        &[("username", "u"), ("password", "p"), ("apiKey", "k")],
        json!([manager(CAREN_FIELD_MANAGER, &["username", "password", "apiKey"])]),
    );
    assert!(copied_keys_match(&caren_copy, &wanted));
    // A copied key missing or different is.
    assert!(!copied_keys_match(
        &secret(&[("username", "u")], json!([])),
        &wanted
    ));
    // Written by the copiers only: a difference is a rotation, even right after CAREN's copy.
    assert!(!copied_keys_edited_by_others(&caren_copy, &wanted));
    // Someone else owning a copied key: an edit. Owning a key konnector does not copy: not konnector's business.
    let edited = secret(&[("password", "x")], json!([manager("kubectl", &["password"])]));
    assert!(copied_keys_edited_by_others(&edited, &wanted));
    let extra = secret(&[("note", "x")], json!([manager("kubectl", &["note"])]));
    assert!(!copied_keys_edited_by_others(&extra, &wanted));
}

#[test]
fn a_proxy_caren_applied_is_co_managed_by_caren() {
    let hcp = |manager: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmChartProxy",
            "metadata": {"name": "p", "managedFields": [{"manager": manager, "operation": "Apply",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:version": {}}}}]},
            "spec": {"version": "1.4.0"},
        }))
        .unwrap()
    };
    assert!(co_managed_by_caren(&hcp(CAREN_FIELD_MANAGER)));
    assert!(!co_managed_by_caren(&hcp("kubectl")));
    assert!(!co_managed_by_caren(&hcp(FIELD_MANAGER)));
}

#[test]
fn checks_are_spread_over_the_period_and_never_burst() {
    let schedule = Schedule::new(Duration::from_secs(300));
    let keys: Vec<ClusterKey> = (0..1000)
        .map(|i| ClusterKey::new("ns", &format!("c-{i}")).unwrap())
        .collect();
    // Slots of 1000 Clusters over 5 minutes: about 33 per 10 s window, none near 1000 (no burst at start).
    let mut windows = [0u32; 30];
    for k in &keys {
        let slot = schedule.next_slot(k, schedule.epoch) - schedule.epoch;
        assert!(slot < Duration::from_secs(300));
        windows[(slot.as_secs() / 10) as usize] += 1;
    }
    assert!(windows.iter().all(|n| (10..=70).contains(n)), "{windows:?}");
    // A Cluster's next slot is one period after the last.
    let k = &keys[0];
    let first = schedule.next_slot(k, schedule.epoch);
    assert_eq!(schedule.next_slot(k, first), first + Duration::from_secs(300));
}

#[test]
fn contains_ignores_extra_fields() {
    let have = json!({"a": 1, "b": {"c": 2, "d": 3}});
    assert!(contains(&have, &json!({"b": {"c": 2}})));
    assert!(!contains(&have, &json!({"b": {"c": 3}})));
    assert!(!contains(&have, &json!({"e": 1})));
}

#[test]
fn pinning_keeps_the_chart_and_restores_the_rest() {
    let mut spec = json!({"version": "2", "valuesTemplate": "new", "releaseName": "r"});
    pin_chart(&mut spec, &json!({"version": "1", "valuesTemplate": "old"}));
    assert_eq!(
        spec,
        json!({"version": "1", "valuesTemplate": "old", "releaseName": "r"})
    );
}

#[test]
fn outcomes_are_secret_free_phrases() {
    let o = Outcome::Repaired {
        rotated: true,
        what: vec!["credentials rotated".to_owned()],
    };
    assert_eq!(o.metric(), "rotated");
    assert_eq!(o.describe(), "repaired: credentials rotated");
}
