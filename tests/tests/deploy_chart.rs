//! Tests of deploy/chart/konnector: lint, render, and server-side dry-run against a real API server that has the
//! CAPI, CAAPH and cert-manager CRDs; and the executor's RBAC, bound for real and checked both ways.

use std::{path::PathBuf, process::Command};

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    core::v1::Secret,
};
use konnector_tests::{crds, management_plane, tools, workload};
use kube::{
    Api,
    api::{DeleteParams, PatchParams, PostParams},
};
use serde_json::Value;

const NS: &str = "konnector-system";
const EXECUTOR_SA: &str = "system:serviceaccount:konnector-system:konnector-executor";

fn helm() -> PathBuf {
    tools::helm().unwrap()
}

fn repo() -> PathBuf {
    tools::repo_root()
}

/// Renders the chart as the tests' API server would see it, with `--set` overrides.
fn render(sets: &[&str]) -> Vec<Value> {
    tools::render_chart(NS, sets, &[]).unwrap()
}

use konnector_tests::tools::find_object as find;

fn pod_templates(docs: &[Value]) -> Vec<(&str, &Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap(),
                &d["spec"]["template"]["spec"],
            )
        })
        .collect()
}

#[test]
fn chart_lints_clean() {
    let out = Command::new(helm())
        .args(["lint", "--strict"])
        .arg(repo().join("deploy/chart/konnector"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm lint failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_pod_runs_restricted() {
    let docs = render(&[]);
    let pods = pod_templates(&docs);
    assert_eq!(pods.len(), 2, "gateway and executor");
    for (name, pod) in pods {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true, "{name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        }
    }
}

#[test]
fn gateway_gets_no_kubernetes_credentials() {
    let docs = render(&[]);
    let sa = find(&docs, "ServiceAccount", "konnector-gateway");
    assert_eq!(sa["automountServiceAccountToken"], false);
    let pod = &find(&docs, "Deployment", "konnector-gateway")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        for subject in binding["subjects"].as_array().unwrap() {
            assert_ne!(
                subject["name"], "konnector-gateway",
                "the gateway must not be bound to any role"
            );
        }
    }
}

#[test]
fn extension_config_trusts_the_gateway_serving_certificate() {
    let docs = render(&[]);
    let ext = find(&docs, "ExtensionConfig", "konnector");
    assert_eq!(ext["apiVersion"], "runtime.cluster.x-k8s.io/v1beta2");
    let service = &ext["spec"]["clientConfig"]["service"];
    let (svc_ns, svc_name) = (
        service["namespace"].as_str().unwrap(),
        service["name"].as_str().unwrap(),
    );
    assert_eq!(service["port"], 443);
    assert!(
        ext["spec"]["namespaceSelector"].is_object(),
        "namespaceSelector is always present"
    );

    let annotation = ext["metadata"]["annotations"]["runtime.cluster.x-k8s.io/inject-ca-from-secret"]
        .as_str()
        .unwrap();
    let (secret_ns, secret_name) = annotation.split_once('/').unwrap();
    assert_eq!(secret_ns, NS);
    let cert = docs
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == secret_name)
        .expect("a Certificate writes the Secret the annotation names");
    let sans: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        sans.contains(&format!("{svc_name}.{svc_ns}.svc").as_str()),
        "SAN <svc>.<ns>.svc in {sans:?}"
    );

    // The Service the ExtensionConfig names exists and maps 443 to the gateway's hook port.
    let svc = find(&docs, "Service", svc_name);
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 443)
    );
}

#[test]
fn extension_config_version_follows_capi_version() {
    // CAPI 1.10 has no runtime.cluster.x-k8s.io/v1beta2; 1.11 and later serve it.
    for (capi, api_version) in [
        ("1.10", "runtime.cluster.x-k8s.io/v1alpha1"),
        ("1.11", "runtime.cluster.x-k8s.io/v1beta2"),
        ("1.12", "runtime.cluster.x-k8s.io/v1beta2"),
        ("1.14", "runtime.cluster.x-k8s.io/v1beta2"),
    ] {
        let docs = render(&[&format!("capiVersion={capi}")]);
        let ext = find(&docs, "ExtensionConfig", "konnector");
        assert_eq!(ext["apiVersion"], api_version, "capiVersion {capi}");
        // Same spec either way: the fields konnector sets exist in both versions.
        assert_eq!(ext["spec"]["clientConfig"]["service"]["port"], 443);
    }
    let docs = render(&[]);
    assert_eq!(
        find(&docs, "ExtensionConfig", "konnector")["apiVersion"],
        "runtime.cluster.x-k8s.io/v1beta2",
        "the default capiVersion is 1.11 or later"
    );
}

#[test]
fn values_reach_the_manifests() {
    let docs = render(&[
        "capiVersion=1.10",
        "gateway.hooks.beforeClusterDelete.timeoutSeconds=20",
        "gateway.hooks.beforeClusterDelete.failurePolicy=Ignore",
        "gateway.autoscaling.enabled=false",
        "gateway.replicas=3",
        "agentChart.version=1.4.2",
        "image.gateway.tag=v9",
    ]);
    let gw = find(&docs, "Deployment", "konnector-gateway");
    assert_eq!(gw["spec"]["replicas"], 3);
    let container = &gw["spec"]["template"]["spec"]["containers"][0];
    assert!(container["image"].as_str().unwrap().ends_with(":v9"));
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for expected in [
        "--capi-version=1.10",
        "--before-cluster-delete-timeout=20s",
        "--before-cluster-delete-failure-policy=Ignore",
    ] {
        assert!(args.contains(&expected), "{expected} in {args:?}");
    }
    assert!(!docs.iter().any(|d| d["kind"] == "HorizontalPodAutoscaler"));
    let cm = find(&docs, "ConfigMap", "default-helm-addons-config");
    assert!(
        cm["data"]["konnector-agent"]
            .as_str()
            .unwrap()
            .contains("ChartVersion: 1.4.2")
    );
}

/// The container args of Deployment `name`.
fn container_args(docs: &[Value], name: &str) -> Vec<String> {
    let deployment = find(docs, "Deployment", name);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    args.iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

#[test]
fn chart_args_parse_with_the_binaries_own_flags() {
    use clap::Parser;
    for sets in [
        &[][..],
        &["gateway.requireClientCert=true", "capiVersion=1.12"][..],
        // extraArgs and every named value must still make a command line the binaries accept.
        TOGGLES,
    ] {
        let docs = render(sets);
        let gateway = container_args(&docs, "konnector-gateway");
        let parsed = konnector_gateway::args::Args::try_parse_from(
            std::iter::once("konnector-gateway".to_owned()).chain(gateway.iter().cloned()),
        )
        .unwrap_or_else(|e| panic!("gateway rejects the chart's args {gateway:?}: {e}"));
        // The chart is the only caller: it uses no name that is on its way out.
        assert_eq!(parsed.deprecations(), Vec::<String>::new(), "{gateway:?}");
        let config = parsed.gateway_config().unwrap();
        assert_eq!(config.hooks.after_control_plane_initialized.timeout_seconds, 20);
        let executor = container_args(&docs, "konnector-executor");
        let parsed = konnector_executor::args::Args::try_parse_from(
            std::iter::once("konnector-executor".to_owned()).chain(executor.iter().cloned()),
        )
        .unwrap_or_else(|e| panic!("executor rejects the chart's args {executor:?}: {e}"));
        assert_eq!(parsed.deprecations(), Vec::<String>::new(), "{executor:?}");
        assert_eq!(
            parsed.executor_config().unwrap().uninstall_timeout,
            std::time::Duration::from_secs(300)
        );
        // Both binaries listen under the same flag names, on the ports the chart's Services name.
        assert!(gateway.contains(&"--listen=[::]:9443".to_owned()), "{gateway:?}");
        assert!(
            executor.contains(&"--listen=[::]:8090".to_owned()),
            "{executor:?}"
        );
        assert!(
            gateway.iter().any(|a| a.starts_with("--admin-listen=")),
            "{gateway:?}"
        );
        assert!(
            executor.iter().any(|a| a.starts_with("--admin-listen=")),
            "{executor:?}"
        );
    }
}

#[test]
fn fatal_errors_become_the_termination_message_and_otel_values_reach_both_binaries() {
    let docs = render(&[
        "otel.endpoint=https://otel-collector.monitoring:4318",
        "otel.protocol=http/protobuf",
        "otel.compression=gzip",
        "otel.caSecret=otel-ca",
        "otel.resourceAttributes.deployment\\.environment\\.name=production",
    ]);
    for (name, pod) in pod_templates(&docs) {
        let container = &pod["containers"][0];
        assert_eq!(
            container["terminationMessagePolicy"], "FallbackToLogsOnError",
            "{name}"
        );
        let env: std::collections::BTreeMap<&str, &str> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
            .collect();
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some(&"https://otel-collector.monitoring:4318"),
            "{name}"
        );
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_PROTOCOL"),
            Some(&"http/protobuf"),
            "{name}"
        );
        assert_eq!(env.get("OTEL_SERVICE_NAME"), Some(&name), "{name}");
        assert_eq!(env.get("OTEL_EXPORTER_OTLP_COMPRESSION"), Some(&"gzip"), "{name}");
        assert_eq!(
            env.get("OTEL_RESOURCE_ATTRIBUTES"),
            Some(&"deployment.environment.name=production"),
            "{name}"
        );
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_CERTIFICATE"),
            Some(&"/certs/otel/ca.crt"),
            "{name}"
        );
        let mounted = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "otel-ca" && m["mountPath"] == "/certs/otel");
        assert!(mounted, "{name} mounts the collector's CA");
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["secret"]["secretName"] == "otel-ca"),
            "{name}"
        );
    }
    // Without an endpoint, no OTEL_ variable at all: tracing stays off.
    for (name, pod) in pod_templates(&render(&[])) {
        let env = pod["containers"][0]["env"].to_string();
        assert!(!env.contains("OTEL_"), "{name}: {env}");
    }
}

/// The values that turn every optional part of the chart on, for the render and dry-run tests.
const TOGGLES: &[&str] = &[
    "gateway.autoscaling.enabled=true",
    "gateway.requireClientCert=true",
    "gateway.capiClientCert.namespace=capi-system",
    "certManager.issuerRef.name=corp-ca",
    "certManager.issuerRef.kind=ClusterIssuer",
    "service.ipFamilyPolicy=PreferDualStack",
    "gateway.nodeSelector.kubernetes\\.io/os=linux",
    "gateway.tolerations[0].key=node-role.kubernetes.io/control-plane",
    "gateway.tolerations[0].operator=Exists",
    "gateway.tolerations[0].effect=NoSchedule",
    "gateway.priorityClassName=system-cluster-critical",
    "gateway.podAnnotations.example\\.com/owner=platform",
    "gateway.podLabels.team=platform",
    "gateway.extraArgs[0]=--log-level=debug",
    "gateway.extraEnv[0].name=EXTRA",
    "gateway.extraEnv[0].value=enabled",
    "executor.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/arch",
    "executor.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=In",
    "executor.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]=amd64",
    "executor.topologySpreadConstraints[0].maxSkew=1",
    "executor.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
    "executor.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
    "executor.topologySpreadConstraints[0].labelSelector.matchLabels.app\\.kubernetes\\.io/component=executor",
    "executor.extraArgs[0]=--log-level=debug",
    "executor.prismCentralChecks=block",
    "executor.prismCentralAllowedHosts[0]=prism.example.com",
    "executor.prismCentralAllowedHosts[1]=*.pc.example.net",
    "executor.networkPolicy.egress.enabled=true",
];

#[test]
fn the_executor_allow_list_and_egress_policy_reach_the_manifests() {
    use clap::Parser;
    let docs = render(TOGGLES);
    let args = container_args(&docs, "konnector-executor");
    assert!(
        args.contains(&"--prism-central-allowed-hosts=prism.example.com,*.pc.example.net".to_owned()),
        "{args:?}"
    );
    let parsed = konnector_executor::args::Args::try_parse_from(
        std::iter::once("konnector-executor".to_owned()).chain(args.iter().cloned()),
    )
    .unwrap();
    let allowed = parsed.executor_config().unwrap().prism_central_allowed_hosts;
    assert!(allowed.allows("prism.example.com") && allowed.allows("a.pc.example.net"));
    assert!(!allowed.allows("attacker.example.org"));

    let policy = find(&docs, "NetworkPolicy", "konnector-executor");
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let ports = |rule: &Value| -> Vec<i64> {
        rule["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect()
    };
    // DNS anywhere; the API servers on 443/6443; Prism Central on 9440; nothing else, and no rule that opens all.
    assert_eq!(egress.len(), 3, "{egress:?}");
    assert_eq!(ports(&egress[0]), [53, 53]);
    assert_eq!(ports(&egress[1]), [443, 6443]);
    assert_eq!(ports(&egress[2]), [9440]);
    assert!(egress.iter().all(|r| r.get("ports").is_some()), "{egress:?}");
    // Off by default: no egress rule, and no allow-list flag.
    let docs = render(&[]);
    let policy = find(&docs, "NetworkPolicy", "konnector-executor");
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    assert!(policy["spec"].get("egress").is_none());
    assert!(
        !container_args(&docs, "konnector-executor")
            .iter()
            .any(|a| a.starts_with("--prism-central-allowed-hosts"))
    );
    // An OTLP collector opens egress again (its address is not known to the chart).
    let with_otel = render(&[
        "executor.networkPolicy.egress.enabled=true",
        "otel.endpoint=http://collector.monitoring:4318",
    ]);
    let policy = find(&with_otel, "NetworkPolicy", "konnector-executor");
    assert!(
        policy["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &serde_json::json!({}))
    );
}

/// The CLI's read-only identity: a client certificate of its own, from the issuer that signs the gateway's client
/// certificate, whose name the executor serves read-only; off with executor.cliClientCert.enabled=false, and more
/// read-only names from executor.readOnlyClientNames. The rendered flags are checked by the executor's own parser,
/// which refuses a name on both lists.
#[test]
fn the_cli_gets_a_read_only_certificate_of_its_own() {
    use clap::Parser;
    // The check the executor makes before serving (`Args::server_options`, which also loads the mounted files).
    let names = |args: &konnector_executor::args::Args| {
        konnector_executor::access::ClientNames::new(&args.client_allowed_names, &args.client_read_only_names)
    };
    let executor_args = |docs: &[Value]| {
        let args = container_args(docs, "konnector-executor");
        konnector_executor::args::Args::try_parse_from(
            std::iter::once("konnector-executor".to_owned()).chain(args.iter().cloned()),
        )
        .unwrap()
    };
    for sets in [
        &[][..],
        &[
            "certManager.issuerRef.name=corp-ca",
            "certManager.issuerRef.kind=ClusterIssuer",
        ][..],
    ] {
        let docs = render(sets);
        let cli = find(&docs, "Certificate", "konnector-cli");
        let gateway = find(&docs, "Certificate", "konnector-gateway-client");
        assert_eq!(cli["spec"]["secretName"], "konnector-cli");
        assert_eq!(cli["spec"]["dnsNames"], serde_json::json!(["konnector-cli"]));
        assert_eq!(cli["spec"]["issuerRef"], gateway["spec"]["issuerRef"], "{sets:?}");
        let usages = cli["spec"]["usages"].as_array().unwrap();
        assert!(usages.contains(&Value::from("client auth")), "{usages:?}");
        assert!(!usages.contains(&Value::from("server auth")), "{usages:?}");
        let parsed = executor_args(&docs);
        assert_eq!(parsed.client_allowed_names, ["konnector-gateway"]);
        assert_eq!(parsed.client_read_only_names, ["konnector-cli"]);
        names(&parsed).unwrap();
    }
    // Off: no certificate, no read-only identity.
    let docs = render(&["executor.cliClientCert.enabled=false"]);
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == "konnector-cli")
    );
    assert!(executor_args(&docs).client_read_only_names.is_empty());
    // More read-only names, with or without the CLI's.
    let docs = render(&["executor.readOnlyClientNames={ops-console}"]);
    assert_eq!(
        executor_args(&docs).client_read_only_names,
        ["ops-console", "konnector-cli"]
    );
    let docs = render(&[
        "executor.readOnlyClientNames={ops-console}",
        "executor.cliClientCert.enabled=false",
    ]);
    assert_eq!(executor_args(&docs).client_read_only_names, ["ops-console"]);
    // The gateway's name made read-only is refused by the executor at start-up, not silently downgraded.
    let docs = render(&["executor.readOnlyClientNames={konnector-gateway}"]);
    let error = names(&executor_args(&docs)).unwrap_err().to_string();
    assert!(error.contains("both"), "{error}");
    // A typo in the new values is refused by the schema, by name.
    let out = Command::new(helm())
        .args(["template", "konnector"])
        .arg(tools::chart_dir())
        .args(["--set", "executor.cliClientCert.enable=false"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("enable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_grafana_dashboard_ships_as_a_configmap_for_the_sidecar() {
    assert!(
        !render(&[])
            .iter()
            .any(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "konnector-grafana-dashboard"),
        "the dashboard ConfigMap is opt-in"
    );
    let docs = render(&[
        "metrics.grafanaDashboard.enabled=true",
        "metrics.grafanaDashboard.namespace=monitoring",
        "metrics.grafanaDashboard.annotations.grafana_folder=konnector",
    ]);
    let cm = find(&docs, "ConfigMap", "konnector-grafana-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["labels"]["app.kubernetes.io/part-of"], "konnector");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "konnector");
    // The data is the dashboard file, byte for byte as JSON.
    let shipped: Value = serde_json::from_str(cm["data"]["konnector.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_slice(
        &std::fs::read(tools::chart_dir().join("files/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(shipped, file);
    assert_eq!(shipped["uid"], "konnector");
}

#[test]
fn the_schema_refuses_mistyped_keys_and_wrong_types_by_name() {
    // The messages are helm 4's (its JSON Schema validator names the value by its JSON pointer).
    for (set, message) in [
        (
            "gateway.hoks.afterControlPlaneInitialized.timeoutSeconds=5",
            "at '/gateway': additional properties 'hoks' not allowed",
        ),
        (
            "replicas=2",
            "at '': additional properties 'replicas' not allowed",
        ),
        (
            "gateway.replicas=two",
            "at '/gateway/replicas': got string, want integer",
        ),
        (
            "executor.uninstallTimeoutPolicy=maybe",
            "at '/executor/uninstallTimeoutPolicy': value must be one of",
        ),
        (
            "gateway.logFormat=text",
            "at '/gateway/logFormat': value must be one of",
        ),
        (
            "executor.uninstallTimeout=5min",
            "at '/executor/uninstallTimeout': '5min' does not match pattern",
        ),
        (
            "gateway.hooks.beforeClusterDelete.timeoutSeconds=31",
            "at '/gateway/hooks/beforeClusterDelete/timeoutSeconds': maximum: got 31, want 30",
        ),
        (
            "certManager.issuerRef.kind=Vault",
            "at '/certManager/issuerRef/kind': value must be one of",
        ),
    ] {
        let error = tools::render_chart(NS, &[set], &[]).expect_err(set).to_string();
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{set}: {error}"
        );
        assert!(error.contains(message), "{set}: expected {message:?} in {error}");
    }
    // Every toggle the tests use is valid, and so are a platform team's values.
    render(TOGGLES);
    render(PLATFORM);
}

#[test]
fn every_object_has_the_standard_labels_and_stable_selectors() {
    for sets in [&[][..], TOGGLES, PLATFORM] {
        let docs = render(sets);
        for doc in &docs {
            let what = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
            let labels = &doc["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "app.kubernetes.io/component",
                "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by",
                "helm.sh/chart",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{what} lacks {key} (include \"konnector.labels\" with (dict \"root\" . \"component\" \"…\")): {labels}"
                );
            }
            // Selectors: name, instance, component and nothing that changes with a release.
            let selector = match doc["kind"].as_str().unwrap() {
                "Deployment" | "PodDisruptionBudget" => &doc["spec"]["selector"]["matchLabels"],
                "Service" => &doc["spec"]["selector"],
                _ => continue,
            };
            let keys: Vec<&str> = selector.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "app.kubernetes.io/component",
                    "app.kubernetes.io/instance",
                    "app.kubernetes.io/name"
                ],
                "{what}"
            );
        }
    }
}

#[test]
fn scheduling_issuer_and_extra_values_reach_the_manifests() {
    let docs = render(TOGGLES);
    let gateway = &find(&docs, "Deployment", "konnector-gateway")["spec"]["template"];
    assert_eq!(gateway["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(gateway["spec"]["tolerations"][0]["effect"], "NoSchedule");
    assert_eq!(gateway["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        gateway["metadata"]["annotations"]["example.com/owner"],
        "platform"
    );
    assert_eq!(gateway["metadata"]["labels"]["team"], "platform");
    let container = &gateway["spec"]["containers"][0];
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&"--log-level=debug".into()),
        "{container}"
    );
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "EXTRA" && e["value"] == "enabled"),
        "{container}"
    );
    // The default spread is kept unless replaced.
    assert_eq!(
        gateway["spec"]["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let executor = &find(&docs, "Deployment", "konnector-executor")["spec"]["template"]["spec"];
    assert_eq!(
        executor["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert!(executor["affinity"]["nodeAffinity"].is_object());
    let args = container_args(&docs, "konnector-executor");
    assert!(args.contains(&"--log-level=debug".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--prism-central-checks=block".to_owned()),
        "{args:?}"
    );
    for name in ["konnector-gateway", "konnector-executor"] {
        assert_eq!(
            find(&docs, "Service", name)["spec"]["ipFamilyPolicy"],
            "PreferDualStack"
        );
    }
    // The user's ClusterIssuer signs every certificate; the chart's own CA is not rendered.
    let certificates: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Certificate").collect();
    assert_eq!(
        certificates.len(),
        5,
        "serving, executor server, gateway client, CAPI client, CLI client"
    );
    for cert in &certificates {
        assert_eq!(
            cert["spec"]["issuerRef"],
            serde_json::json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}),
            "{}",
            cert["metadata"]["name"]
        );
    }
    assert!(!docs.iter().any(|d| d["kind"] == "Issuer"));
    let capi = find(&docs, "Certificate", "konnector-gateway-capi-client");
    assert_eq!(capi["metadata"]["namespace"], "capi-system");
    assert_eq!(capi["spec"]["usages"][0], "client auth");
    assert!(docs.iter().any(|d| d["kind"] == "HorizontalPodAutoscaler"));
    // A namespaced Issuer cannot sign in CAPI's namespace: refused, saying why.
    let error = tools::render_chart(
        NS,
        &[
            "gateway.requireClientCert=true",
            "gateway.capiClientCert.namespace=capi-system",
        ],
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("needs certManager.issuerRef to name a ClusterIssuer"),
        "{error}"
    );
}

#[test]
fn pod_disruption_budgets_never_block_a_drain_and_autoscaling_is_opt_in() {
    let docs = render(&[]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "HorizontalPodAutoscaler"),
        "HPA off by default"
    );
    for name in ["konnector-gateway", "konnector-executor"] {
        let pdb = find(&docs, "PodDisruptionBudget", name);
        assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{name}");
        assert!(pdb["spec"].get("minAvailable").is_none(), "{name}");
    }
    // One replica: no budget at all, so draining its node is never blocked.
    let docs = render(&["gateway.replicas=1", "executor.replicas=1"]);
    assert!(!docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    // With the HPA, the budget follows its minimum.
    let docs = render(&[
        "gateway.autoscaling.enabled=true",
        "gateway.autoscaling.minReplicas=1",
    ]);
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "PodDisruptionBudget" && d["metadata"]["name"] == "konnector-gateway")
    );
}

/// Every leaf key of values.yaml (a scalar, a list, or an empty map) as a dotted path.
fn leaf_keys(prefix: &str, value: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    match value {
        serde_yaml_ng::Value::Mapping(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_keys(&path, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn every_value_is_documented_in_the_chart_readme() {
    let chart = tools::chart_dir();
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).unwrap();
    let mut keys = Vec::new();
    leaf_keys("", &values, &mut keys);
    assert!(keys.len() > 80, "{keys:?}");
    let readme = std::fs::read_to_string(chart.join("README.md")).unwrap();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !readme.lines().any(|l| l.starts_with(&format!("| `{k}` |"))))
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from deploy/chart/konnector/README.md's table (regenerate it with \
         `python3 hack/chart-values-table.py`): {missing:?}"
    );
}

#[test]
fn notes_say_how_to_check_discovery_and_reach_the_executor() {
    // helm template does not render NOTES.txt; a copy of the chart renders it into a ConfigMap instead.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("konnector");
    let status = Command::new("cp")
        .args(["-r"])
        .arg(tools::chart_dir())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(copy.join("templates/NOTES.txt"), copy.join("notes.txt")).unwrap();
    std::fs::write(
        copy.join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ tpl (.Files.Get \"notes.txt\") . | quote }}\n",
    )
    .unwrap();
    let out = Command::new(helm())
        .args(["template", "konnector"])
        .arg(&copy)
        .args(["--namespace", NS, "--show-only", "templates/zz-notes.yaml"])
        .args(["--set", "executor.networkPolicy.operatorNamespaces={ops}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    let notes = doc["data"]["notes"].as_str().unwrap();
    for expected in [
        "kubectl get extensionconfig konnector",
        r#"@.type=="Discovered""#,
        "konnector status <namespace>/<cluster>",
        "kubectl konnector",
        // The CLI's read-only pair, not the gateway's: a reader needs no key that can apply or remove.
        "secret konnector-cli",
        "PERMISSION_DENIED",
        "port-forward svc/konnector-executor 8090:8090",
        "konnector.executor.v1.AgentService/GetAgentStatus",
        "namespaces ops",
    ] {
        assert!(notes.contains(expected), "{expected:?} not in NOTES:\n{notes}");
    }
}

#[tokio::test]
async fn manifests_apply_by_server_side_dry_run() {
    konnector_tests::init_test_logging();
    let (_mgmt, client) = management_plane("deploy").await.unwrap();
    crds::install(
        &client,
        &[
            crds::CERT_MANAGER_ISSUER,
            crds::CERT_MANAGER_CERTIFICATE,
            crds::PROMETHEUS_SERVICE_MONITOR,
            crds::PROMETHEUS_RULE,
        ],
    )
    .await
    .unwrap();
    konnector_tests::control_plane::ensure_namespace(&client, NS)
        .await
        .unwrap();

    // With the Prometheus Operator objects on, so that they are dry-run too.
    let docs = render(&[
        "createNamespace=true",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
    ]);
    assert!(docs.len() > 15, "rendered {} documents", docs.len());
    for (kind, name) in [
        ("ServiceMonitor", "konnector-gateway"),
        ("ServiceMonitor", "konnector-executor"),
        ("PrometheusRule", "konnector"),
        ("Service", "konnector-gateway-metrics"),
        ("Service", "konnector-executor-metrics"),
        ("ConfigMap", "konnector-grafana-dashboard"),
    ] {
        find(&docs, kind, name);
    }
    // And off by default.
    assert!(
        !render(&[]).iter().any(|d| d["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))),
        "Prometheus Operator objects rendered without being asked for"
    );
    let dry_run = PatchParams::apply("konnector-deploy-test").dry_run();
    // The v1alpha1 ExtensionConfig rendered for CAPI 1.10 must be accepted too (tests/crds serves both versions).
    let capi_1_10 = render(&["createNamespace=true", "capiVersion=1.10"]);
    let old_ext = find(&capi_1_10, "ExtensionConfig", "konnector");
    assert_eq!(old_ext["apiVersion"], "runtime.cluster.x-k8s.io/v1alpha1");
    // Every optional part on (scheduling, HPA, the user's ClusterIssuer, CAPI's client certificate in capi-system).
    konnector_tests::control_plane::ensure_namespace(&client, "capi-system")
        .await
        .unwrap();
    let toggled: Vec<&str> = TOGGLES.iter().copied().chain(["createNamespace=true"]).collect();
    let toggled = render(&toggled);
    for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget"] {
        assert!(toggled.iter().any(|d| d["kind"] == kind), "{kind}");
    }
    // A platform team's values (renamed, relabelled, OpenShift's security contexts, extra volumes) too; its
    // ExtensionConfig is the default one's, already in the list.
    let platform: Vec<&str> = PLATFORM.iter().copied().chain(["createNamespace=true"]).collect();
    let platform: Vec<Value> = render(&platform)
        .into_iter()
        .filter(|d| d["kind"] != "ExtensionConfig")
        .collect();
    for doc in docs
        .iter()
        .chain([old_ext])
        .chain(toggled.iter())
        .chain(platform.iter())
    {
        tools::apply_manifest(&client, doc, NS, &dry_run)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "server-side dry run of {} {} failed: {e:#}",
                    doc["kind"], doc["metadata"]["name"]
                )
            });
    }
}

/// Asks the API server whether the executor's ServiceAccount may do `verb` on `resource`.
async fn executor_may(client: &kube::Client, verb: &str, group: &str, resource: &str) -> bool {
    executor_may_in(client, "tenants", verb, group, resource).await
}

/// Asks the API server whether the executor's ServiceAccount may do `verb` on `resource` in `namespace`.
async fn executor_may_in(
    client: &kube::Client,
    namespace: &str,
    verb: &str,
    group: &str,
    resource: &str,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(EXECUTOR_SA.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{NS}"),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().allowed
}

#[tokio::test]
async fn executor_rbac_allows_its_work_and_refuses_the_rest() {
    konnector_tests::init_test_logging();
    let (mgmt, client) = management_plane("rbac").await.unwrap();
    konnector_tests::control_plane::ensure_namespace(&client, NS)
        .await
        .unwrap();
    // Bind the chart's own ClusterRole, Role and their bindings, for real.
    bind_rendered_rbac(&client, &render(&[])).await;

    let needed = [
        ("get", "", "secrets"),
        ("get", "cluster.x-k8s.io", "clusters"),
        ("get", "addons.cluster.x-k8s.io", "helmchartproxies"),
        ("patch", "addons.cluster.x-k8s.io", "helmchartproxies"),
        ("delete", "addons.cluster.x-k8s.io", "helmchartproxies"),
        ("list", "addons.cluster.x-k8s.io", "helmreleaseproxies"),
        ("create", "events.k8s.io", "events"),
        ("patch", "events.k8s.io", "events"),
    ];
    // The authorizer learns of a new binding from its informers, a moment after the write; under load that
    // moment is long enough for the first review to be refused.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !executor_may(&client, "get", "", "secrets").await {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the executor's binding never took effect");
    for (verb, group, resource) in needed {
        assert!(
            executor_may(&client, verb, group, resource).await,
            "executor needs {verb} {group}/{resource}"
        );
    }
    // ConfigMaps: its two defaults, in its defaults namespace only.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !executor_may_in(&client, NS, "get", "", "configmaps").await {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the executor's defaults Role never took effect");
    assert!(
        !executor_may(&client, "get", "", "configmaps").await,
        "no ConfigMap outside the defaults namespace"
    );
    assert!(
        executor_may_in(&client, NS, "watch", "", "configmaps").await,
        "it watches its two defaults"
    );
    assert!(!executor_may_in(&client, NS, "update", "", "configmaps").await);
    assert!(!executor_may(&client, "list", "", "configmaps").await);
    let refused = [
        ("delete", "", "secrets"),
        // list and watch on Secrets are granted: the reconciler watches their metadata for rotations (issue 26).
        ("update", "", "secrets"),
        ("patch", "", "secrets"),
        ("create", "", "secrets"),
        ("get", "", "configmaps"),
        ("patch", "", "configmaps"),
        ("delete", "", "configmaps"),
        ("delete", "cluster.x-k8s.io", "clusters"),
        ("patch", "cluster.x-k8s.io", "clusters"),
        ("update", "cluster.x-k8s.io", "clusters"),
        ("delete", "addons.cluster.x-k8s.io", "helmreleaseproxies"),
        ("delete", "", "namespaces"),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
        ("impersonate", "", "users"),
    ];
    for (verb, group, resource) in refused {
        assert!(
            !executor_may(&client, verb, group, resource).await,
            "executor must not {verb} {group}/{resource}"
        );
    }

    // And real calls: the executor can read the user's credentials Secret but cannot delete it.
    konnector_tests::control_plane::ensure_namespace(&client, "tenants")
        .await
        .unwrap();
    workload::put_credentials_secret(
        &client,
        "tenants",
        "pc-creds",
        &[("username", "u"), ("password", "p")],
    )
    .await
    .unwrap();
    // A real ServiceAccount token (TokenRequest API), as the executor's pod would have.
    let as_executor = mgmt
        .service_account_client(NS, "konnector-executor")
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(as_executor, "tenants");
    secrets.get("pc-creds").await.expect("the executor may read it");
    match secrets.delete("pc-creds", &DeleteParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("deleting a user's Secret must be forbidden, got {other:?}"),
    }
}

/// Applies every RBAC object of a rendered chart, creating the namespaces they live in.
async fn bind_rendered_rbac(client: &kube::Client, docs: &[Value]) {
    for doc in docs.iter().filter(|d| {
        ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
            .contains(&d["kind"].as_str().unwrap_or_default())
    }) {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or(NS);
        konnector_tests::control_plane::ensure_namespace(client, ns)
            .await
            .unwrap();
        tools::apply_manifest(client, doc, ns, &PatchParams::apply("test"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn executor_rbac_can_be_confined_to_cluster_namespaces() {
    konnector_tests::init_test_logging();
    let (_mgmt, client) = management_plane("rbac-confined").await.unwrap();
    konnector_tests::control_plane::ensure_namespace(&client, NS)
        .await
        .unwrap();
    let docs = render(&["executor.clusterNamespaces={tenants,team-b}"]);
    assert!(
        !docs.iter().any(|d| d["kind"] == "ClusterRoleBinding"),
        "a confined executor has no cluster-wide binding"
    );
    bind_rendered_rbac(&client, &docs).await;
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !executor_may_in(&client, "team-b", "get", "", "secrets").await {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the executor's RoleBindings never took effect");
    for ns in ["tenants", "team-b"] {
        for (verb, group, resource) in [
            ("get", "", "secrets"),
            ("get", "cluster.x-k8s.io", "clusters"),
            ("patch", "addons.cluster.x-k8s.io", "helmchartproxies"),
            ("list", "addons.cluster.x-k8s.io", "helmreleaseproxies"),
            ("create", "events.k8s.io", "events"),
        ] {
            assert!(
                executor_may_in(&client, ns, verb, group, resource).await,
                "{ns}: {verb} {resource}"
            );
        }
    }
    for (verb, group, resource) in [
        ("get", "", "secrets"),
        ("get", "cluster.x-k8s.io", "clusters"),
        ("patch", "addons.cluster.x-k8s.io", "helmchartproxies"),
    ] {
        assert!(
            !executor_may_in(&client, "kube-system", verb, group, resource).await,
            "outside its namespaces: {verb} {resource}"
        );
    }
    assert!(executor_may_in(&client, NS, "get", "", "configmaps").await);
    // The reconciler may not list Clusters cluster-wide here, so it is told to watch each namespace instead, where
    // it may list and watch what it watches; and it keeps its Lease in the release namespace.
    assert!(
        container_args(&docs, "konnector-executor")
            .contains(&"--reconcile-namespaces=tenants,team-b".to_owned()),
        "a confined executor's reconciler watches only its namespaces"
    );
    for ns in ["tenants", "team-b"] {
        for (group, resource) in [
            ("cluster.x-k8s.io", "clusters"),
            ("addons.cluster.x-k8s.io", "helmchartproxies"),
        ] {
            for verb in ["list", "watch"] {
                assert!(
                    executor_may_in(&client, ns, verb, group, resource).await,
                    "{ns}: {verb} {resource}"
                );
            }
        }
    }
    assert!(executor_may_in(&client, NS, "update", "coordination.k8s.io", "leases").await);
}

/// A pod being replaced keeps serving while endpoints forget it (a preStop sleep, with the Kubernetes >= 1.30 sleep
/// action: the images have no shell), then drains on SIGTERM within its grace period. Older clusters get no
/// preStop (the field would be refused) and rely on the binaries' drain alone.
#[test]
fn pods_sleep_before_sigterm_and_have_time_to_drain() {
    let docs = tools::render_chart_for("v1.30.0", NS, &[], &[]).unwrap();
    for (name, pod) in pod_templates(&docs) {
        let container = &pod["containers"][0];
        assert_eq!(
            container["lifecycle"]["preStop"]["sleep"]["seconds"], 5,
            "{name}: {container}"
        );
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        let shutdown_grace = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|a| a.as_str()?.strip_prefix("--shutdown-grace="))
            .map_or(0, |d| humantime::parse_duration(d).unwrap().as_secs());
        assert!(
            grace > 5 + shutdown_grace,
            "{name}: terminationGracePeriodSeconds {grace} leaves no time to drain after a 5 s preStop and \
             {shutdown_grace} s of shutdown grace"
        );
    }
    for (name, pod) in pod_templates(&tools::render_chart_for("v1.29.0", NS, &[], &[]).unwrap()) {
        assert!(pod["containers"][0]["lifecycle"].is_null(), "{name} on 1.29");
    }
    for (name, pod) in pod_templates(
        &tools::render_chart_for(
            "v1.30.0",
            NS,
            &["gateway.preStopSleepSeconds=0", "executor.preStopSleepSeconds=0"],
            &[],
        )
        .unwrap(),
    ) {
        assert!(pod["containers"][0]["lifecycle"].is_null(), "{name} with 0");
    }
}

/// Confined to some namespaces, the ExtensionConfig selects them (CAPI calls for no Cluster elsewhere) unless the
/// operator set a selector, and the executor is told which namespaces it serves.
#[test]
fn confined_mode_selects_its_namespaces() {
    let docs = render(&["executor.clusterNamespaces={tenants,team-b}"]);
    let ext = find(&docs, "ExtensionConfig", "konnector");
    assert_eq!(
        ext["spec"]["namespaceSelector"],
        serde_json::json!({"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["tenants", "team-b"]}]})
    );
    let (_, executor) = pod_templates(&docs)
        .into_iter()
        .find(|(n, _)| *n == "konnector-executor")
        .unwrap();
    let args: Vec<&str> = executor["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--cluster-namespaces=tenants,team-b"), "{args:?}");
    let own = render(&[
        "executor.clusterNamespaces={tenants}",
        "extensionConfig.namespaceSelector.matchLabels.konnector=yes",
    ]);
    assert_eq!(
        find(&own, "ExtensionConfig", "konnector")["spec"]["namespaceSelector"],
        serde_json::json!({"matchLabels": {"konnector": "yes"}})
    );
    let all = render(&[]);
    assert_eq!(
        find(&all, "ExtensionConfig", "konnector")["spec"]["namespaceSelector"],
        serde_json::json!({})
    );
}

/// Values a platform team sets when the chart is one part of theirs: names, labels, a registry mirror, OpenShift's
/// security contexts, annotations, extra volumes and certificate lifetimes.
const PLATFORM: &[&str] = &[
    "fullnameOverride=platform-konnector",
    "commonLabels.team=platform",
    "commonLabels.cost-center=42",
    "global.imageRegistry=mirror.example.com",
    "global.imagePullSecrets[0]=mirror-pull",
    "global.someOtherChartsValue=anything",
    "image.gateway.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "runAsFixedUser=false",
    "podSecurityContext.supplementalGroups[0]=1000",
    "containerSecurityContext.privileged=false",
    "gateway.deploymentAnnotations.example\\.com/owner=platform",
    "gateway.serviceAnnotations.example\\.com/lb=internal",
    "executor.deploymentAnnotations.example\\.com/owner=platform",
    "executor.serviceAnnotations.example\\.com/lb=internal",
    "gateway.extraVolumes[0].name=scratch",
    "gateway.extraVolumes[0].emptyDir.medium=Memory",
    "gateway.extraVolumeMounts[0].name=scratch",
    "gateway.extraVolumeMounts[0].mountPath=/scratch",
    "executor.extraVolumes[0].name=bundle",
    "executor.extraVolumes[0].configMap.name=corp-bundle",
    "executor.extraVolumeMounts[0].name=bundle",
    "executor.extraVolumeMounts[0].mountPath=/etc/corp",
    "executor.extraVolumeMounts[0].readOnly=true",
    "certManager.caDuration=43800h",
    "certManager.caRenewBefore=8760h",
    "certManager.leafDuration=720h",
    "certManager.leafRenewBefore=240h",
    "metrics.serviceMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.prometheusRule.hookFailureRatio=0.1",
    "metrics.grafanaDashboard.enabled=true",
];

#[test]
fn the_schema_validates_metrics_and_accepts_global() {
    for (set, message) in [
        (
            "metrics.serviceMonitor.enable=true",
            "at '/metrics/serviceMonitor': additional properties 'enable' not allowed",
        ),
        (
            "metrics.prometheusRule.hookFailureRatio=abc",
            "at '/metrics/prometheusRule/hookFailureRatio'",
        ),
        // Anything but a share would be pasted into PromQL as it is.
        (
            "metrics.prometheusRule.hookFailureRatio=0.2) or vector(1",
            "at '/metrics/prometheusRule/hookFailureRatio'",
        ),
        (
            "metrics.prometheusRule.managementAPIErrorRatio=2",
            "at '/metrics/prometheusRule/managementAPIErrorRatio'",
        ),
        (
            "metrics.prometheusRule.certificateExpiryDays=ten",
            "at '/metrics/prometheusRule/certificateExpiryDays': got string, want integer",
        ),
        (
            "metrics.serviceMonitor.interval=30 seconds",
            "at '/metrics/serviceMonitor/interval'",
        ),
        (
            "metrics.grafana.enabled=true",
            "additional properties 'grafana' not allowed",
        ),
        ("image.gateway.digest=latest", "at '/image/gateway/digest'"),
        ("fullnameOverride=Platform_Konnector", "at '/fullnameOverride'"),
        ("certManager.leafDuration=90d", "at '/certManager/leafDuration'"),
        (
            "runAsFixedUser=no",
            "at '/runAsFixedUser': got string, want boolean",
        ),
    ] {
        let error = tools::render_chart(NS, &[set], &[]).expect_err(set).to_string();
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{set}: {error}"
        );
        assert!(error.contains(message), "{set}: expected {message:?} in {error}");
    }
    // A decimal from --set arrives as a string, and is rendered as given.
    let docs = render(&[
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.hookFailureRatio=0.1",
    ]);
    let rule = serde_json::to_string(find(&docs, "PrometheusRule", "konnector")).unwrap();
    assert!(rule.contains("> 0.1"), "{rule}");
    // As a subchart: a parent's globals, whatever they are, pass.
    render(&["global.imageRegistry=mirror.example.com", "global.parentOnly.x=1"]);
}

#[test]
fn a_platform_teams_values_reach_every_object() {
    let docs = render(PLATFORM);
    for doc in &docs {
        let what = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
        let name = doc["metadata"]["name"].as_str().unwrap();
        // Every object is renamed, except the cluster-wide ExtensionConfig (its own value), the namespace and
        // the ConfigMaps whose names the executor and CAREN share.
        if !["ExtensionConfig", "ConfigMap", "Namespace"].contains(&doc["kind"].as_str().unwrap())
            || name.ends_with("grafana-dashboard")
        {
            assert!(
                name.starts_with("platform-konnector")
                    || name.starts_with(&format!("{NS}-platform-konnector")),
                "{what} is not named from fullnameOverride"
            );
        }
        assert_eq!(doc["metadata"]["labels"]["team"], "platform", "{what}");
        assert_eq!(doc["metadata"]["labels"]["cost-center"], "42", "{what}");
        // The selector label the CLI and alerts use stays.
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/name"], "konnector",
            "{what}"
        );
    }
    for component in ["gateway", "executor"] {
        let name = format!("platform-konnector-{component}");
        let deployment = find(&docs, "Deployment", &name);
        assert_eq!(
            deployment["metadata"]["annotations"]["example.com/owner"], "platform",
            "{name}"
        );
        let service = find(&docs, "Service", &name);
        assert_eq!(
            service["metadata"]["annotations"]["example.com/lb"], "internal",
            "{name}"
        );
        let template = &deployment["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["team"], "platform", "{name}");
        let pod = &template["spec"];
        // OpenShift's restricted SCC assigns the UID: none is fixed, the rest of the restricted profile stays.
        let pod_sc = &pod["securityContext"];
        for fixed in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert!(pod_sc.get(fixed).is_none(), "{name}: {fixed} in {pod_sc}");
        }
        assert_eq!(pod_sc["runAsNonRoot"], true, "{name}");
        assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert_eq!(pod_sc["supplementalGroups"], serde_json::json!([1000]), "{name}");
        let container = &pod["containers"][0];
        let sc = &container["securityContext"];
        assert_eq!(sc["privileged"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
        assert!(sc.get("runAsUser").is_none(), "{name}");
        assert_eq!(
            pod["imagePullSecrets"],
            serde_json::json!([{"name": "mirror-pull"}]),
            "{name}"
        );
        // The mirror replaces the registry host and keeps the path.
        let image = container["image"].as_str().unwrap();
        assert!(
            image.starts_with(&format!("mirror.example.com/konnector/konnector-{component}:")),
            "{image}"
        );
    }
    let image = |name: &str| {
        find(&docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        image("platform-konnector-gateway")
            .ends_with(":0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        "{}",
        image("platform-konnector-gateway")
    );
    assert!(!image("platform-konnector-executor").contains('@'));
    let pod = |name: &str| find(&docs, "Deployment", name)["spec"]["template"]["spec"].clone();
    let gateway = pod("platform-konnector-gateway");
    assert!(
        gateway["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "scratch" && v["emptyDir"]["medium"] == "Memory")
    );
    assert!(
        gateway["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "scratch" && m["mountPath"] == "/scratch")
    );
    let executor = pod("platform-konnector-executor");
    assert!(
        executor["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/corp" && m["readOnly"] == true)
    );
    // The renamed pieces still fit together: the executor allows the renamed gateway's client certificate, the
    // gateway calls the renamed executor, and CAPI trusts the renamed serving Secret.
    let args = container_args(&docs, "platform-konnector-executor");
    assert!(
        args.contains(&"--client-allowed-names=platform-konnector-gateway".to_owned()),
        "{args:?}"
    );
    let client = find(&docs, "Certificate", "platform-konnector-gateway-client");
    assert_eq!(client["spec"]["dnsNames"][0], "platform-konnector-gateway");
    assert!(
        args.contains(&"--client-read-only-names=platform-konnector-cli".to_owned()),
        "{args:?}"
    );
    let cli = find(&docs, "Certificate", "platform-konnector-cli");
    assert_eq!(cli["spec"]["dnsNames"][0], "platform-konnector-cli");
    let args = container_args(&docs, "platform-konnector-gateway");
    assert!(
        args.contains(&format!(
            "--executor-url=https://platform-konnector-executor.{NS}.svc:8090"
        )),
        "{args:?}"
    );
    let ext = find(&docs, "ExtensionConfig", "konnector");
    assert_eq!(
        ext["metadata"]["annotations"]["runtime.cluster.x-k8s.io/inject-ca-from-secret"],
        format!("{NS}/platform-konnector-gateway-serving")
    );
    assert_eq!(
        ext["spec"]["clientConfig"]["service"]["name"],
        "platform-konnector-gateway"
    );
    // Certificate lifetimes from the values, and the renamed CA signs.
    let ca = find(&docs, "Certificate", "platform-konnector-ca");
    find(&docs, "Issuer", "platform-konnector-ca");
    assert_eq!(
        find(&docs, "Certificate", "platform-konnector-gateway-serving")["spec"]["issuerRef"]["name"],
        "platform-konnector-ca"
    );
    assert_eq!(ca["spec"]["duration"], "43800h");
    assert_eq!(ca["spec"]["renewBefore"], "8760h");
    for leaf in ["gateway-serving", "executor-server", "gateway-client", "cli"] {
        let cert = find(&docs, "Certificate", &format!("platform-konnector-{leaf}"));
        assert_eq!(cert["spec"]["duration"], "720h", "{leaf}");
        assert_eq!(cert["spec"]["renewBefore"], "240h", "{leaf}");
    }

    // nameOverride: <release>-<nameOverride>, or the release name alone when it contains it.
    let docs = render(&["nameOverride=kn"]);
    find(&docs, "Deployment", "konnector-kn-gateway");
    let docs = render(&["nameOverride=konn"]);
    find(&docs, "Deployment", "konnector-gateway");
    // The defaults keep today's names and the fixed non-root user.
    let docs = render(&[]);
    let pod = &find(&docs, "Deployment", "konnector-executor")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    assert!(pod.get("imagePullSecrets").is_none());
}

#[test]
fn the_ca_keeps_its_key_and_every_leaf_rotates_its_own() {
    let docs = render(&[]);
    let ca = find(&docs, "Certificate", "konnector-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    // cert-manager >= 1.18 gives a renewed certificate a new key unless told otherwise; a CA with a new key
    // breaks every peer still holding the old ca.crt.
    assert_eq!(ca["spec"]["privateKey"]["rotationPolicy"], "Never");
    let mut leaves = 0;
    for cert in docs
        .iter()
        .filter(|d| d["kind"] == "Certificate" && d["spec"]["isCA"] != true)
    {
        leaves += 1;
        let what = cert["metadata"]["name"].as_str().unwrap();
        assert_eq!(cert["spec"]["privateKey"]["rotationPolicy"], "Always", "{what}");
        assert_eq!(cert["spec"]["issuerRef"]["name"], "konnector-ca", "{what}");
        assert_eq!(cert["spec"]["duration"], "2160h", "{what}");
        assert_eq!(cert["spec"]["renewBefore"], "360h", "{what}");
    }
    assert_eq!(
        leaves, 5,
        "gateway serving and client, executor server, CAPI's client, the CLI's"
    );
    // Every peer's trust is the ca.crt of a Secret issued by that one CA: CAPI's (the serving Secret), the
    // gateway's towards the executor (its client Secret) and the executor's towards the gateway (its server
    // Secret).
    let ext = find(&docs, "ExtensionConfig", "konnector");
    assert_eq!(
        ext["metadata"]["annotations"]["runtime.cluster.x-k8s.io/inject-ca-from-secret"],
        format!("{NS}/konnector-gateway-serving")
    );
    let gateway = container_args(&docs, "konnector-gateway");
    assert!(gateway.contains(&"--executor-ca=/certs/client/ca.crt".to_owned()));
    let executor = container_args(&docs, "konnector-executor");
    assert!(executor.contains(&"--client-ca=/certs/server/ca.crt".to_owned()));
    // And the expiry alert's threshold stays below the leaves' renewBefore (15 days).
    let docs = render(&["metrics.prometheusRule.enabled=true"]);
    let rule = serde_json::to_string(find(&docs, "PrometheusRule", "konnector")).unwrap();
    assert!(rule.contains("< 10 * 86400"), "{rule}");
}
