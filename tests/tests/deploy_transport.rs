//! The chart's transport settings: who may call each server (NetworkPolicies), CAPI's client certificate when the
//! gateway requires one, and the limits and reload flags reaching both binaries with the values' meaning.

use clap::Parser;
use konnector_tests::tools;
use serde_json::{Value, json};

const NS: &str = "konnector-system";

fn render(sets: &[&str]) -> Vec<Value> {
    tools::render_chart(NS, sets, &[]).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn ingress(docs: &[Value], name: &str) -> Vec<Value> {
    find(docs, "NetworkPolicy", name).unwrap()["spec"]["ingress"]
        .as_array()
        .unwrap()
        .clone()
}

fn args(docs: &[Value], name: &str) -> Vec<String> {
    find(docs, "Deployment", name).unwrap()["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn namespaces_in(rule: &Value) -> Vec<Value> {
    rule["from"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|peer| peer["namespaceSelector"]["matchExpressions"].as_array())
        .flatten()
        .inspect(|e| {
            assert_eq!(e["key"], "kubernetes.io/metadata.name");
            assert_eq!(e["operator"], "In");
        })
        .flat_map(|e| e["values"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn the_gateway_admits_hook_calls_only_from_capi_namespaces() {
    let docs = render(&[]);
    let rules = ingress(&docs, "konnector-gateway");
    let hooks: Vec<_> = rules
        .iter()
        .filter(|r| {
            r["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == "hooks")
        })
        .collect();
    assert_eq!(hooks.len(), 1, "{rules:?}");
    assert_eq!(namespaces_in(hooks[0]), vec![json!("capi-system")]);
    assert_eq!(
        hooks[0]["from"].as_array().unwrap().len(),
        1,
        "no other peer may call the hooks"
    );

    let docs = render(&["gateway.networkPolicy.callerNamespaces={capi-system,capx-system}"]);
    let rules = ingress(&docs, "konnector-gateway");
    assert_eq!(
        namespaces_in(&rules[0]),
        vec![json!("capi-system"), json!("capx-system")]
    );
}

#[test]
fn the_executor_admits_the_gateway_and_only_listed_operator_namespaces() {
    let grpc_rule = |docs: &[Value]| {
        ingress(docs, "konnector-executor")
            .into_iter()
            .find(|r| r["ports"].as_array().unwrap().iter().any(|p| p["port"] == "grpc"))
            .unwrap()
    };
    let docs = render(&[]);
    let rule = grpc_rule(&docs);
    let from = rule["from"].as_array().unwrap();
    assert_eq!(from.len(), 1, "only the gateway pods by default: {from:?}");
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "gateway"
    );

    let docs = render(&["executor.networkPolicy.operatorNamespaces={platform-ops}"]);
    let rule = grpc_rule(&docs);
    assert_eq!(rule["from"].as_array().unwrap().len(), 2);
    assert_eq!(namespaces_in(&rule), vec![json!("platform-ops")]);
}

#[test]
fn requiring_capi_client_certificates_wires_the_ca_and_issues_capis_certificate() {
    let docs = render(&[]);
    assert!(
        !args(&docs, "konnector-gateway")
            .iter()
            .any(|a| a.starts_with("--client-ca"))
    );
    // Issued before it is required, so that CAPI can have it before the gateway demands it: turning the
    // requirement on then fails no handshake.
    let ahead = find(&docs, "Certificate", "konnector-gateway-capi-client").expect("issued ahead");
    assert!(
        find(
            &render(&["gateway.capiClientCert.issue=false"]),
            "Certificate",
            "konnector-gateway-capi-client"
        )
        .is_none()
    );

    let docs = render(&["gateway.requireClientCert=true"]);
    // The same certificate (same Secret, same issuer) as the one issued ahead: nothing CAPI holds changes.
    let required = find(&docs, "Certificate", "konnector-gateway-capi-client").unwrap();
    assert_eq!(ahead["spec"], required["spec"]);
    assert!(
        args(&docs, "konnector-gateway").contains(&"--client-ca=/certs/serving/ca.crt".to_owned()),
        "the gateway verifies CAPI against the chart's CA"
    );
    let cert =
        find(&docs, "Certificate", "konnector-gateway-capi-client").expect("CAPI's client certificate");
    assert_eq!(cert["spec"]["usages"][0], "client auth");
    // Issued by the same CA the gateway's serving Secret carries as ca.crt.
    let serving = find(&docs, "Certificate", "konnector-gateway-serving").unwrap();
    assert_eq!(cert["spec"]["issuerRef"], serving["spec"]["issuerRef"]);
}

#[test]
fn limits_and_reload_intervals_reach_both_binaries() {
    let docs = render(&[
        "gateway.limits.bodyBytes=1048576",
        "gateway.limits.maxConnections=100",
        "gateway.certReloadInterval=7s",
        "executor.limits.maxConnectionAge=10m",
        "executor.limits.managementTimeout=3s",
        "executor.certReloadInterval=9s",
    ]);
    let gateway = konnector_gateway::args::Args::try_parse_from(
        std::iter::once("konnector-gateway".to_owned()).chain(args(&docs, "konnector-gateway")),
    )
    .unwrap();
    let config = gateway.gateway_config().unwrap();
    assert_eq!(config.body_limit_bytes, 1024 * 1024);
    assert_eq!(config.max_connections, 100);
    assert_eq!(config.cert_reload_interval.as_secs(), 7);

    let executor = konnector_executor::args::Args::try_parse_from(
        std::iter::once("konnector-executor".to_owned()).chain(args(&docs, "konnector-executor")),
    )
    .unwrap();
    assert_eq!(executor.max_connection_age.as_secs(), 600);
    assert_eq!(executor.management_timeout.as_secs(), 3);
    assert_eq!(executor.cert_reload_interval.as_secs(), 9);
    assert_eq!(
        executor.client_ca.as_deref(),
        Some(std::path::Path::new("/certs/server/ca.crt"))
    );

    // The defaults keep the gateway's body limit at most 2 MiB.
    let docs = render(&[]);
    let gateway = konnector_gateway::args::Args::try_parse_from(
        std::iter::once("konnector-gateway".to_owned()).chain(args(&docs, "konnector-gateway")),
    )
    .unwrap();
    assert!(gateway.gateway_config().unwrap().body_limit_bytes <= 2 * 1024 * 1024);
}
