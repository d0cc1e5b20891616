//! The chart and the binaries agree: every port, listen address, hook timeout and the CAPI version the chart renders
//! is the binary's own clap default (read by parsing `Args` with no flags), and the Dockerfile exposes the same
//! ports. These drifted apart once (the chart's admin port was 9440, Prism Central's; its hook timeouts 10 s while
//! the binary's were 20 s); a change to either side now fails here until the other follows.

use std::net::SocketAddr;

use clap::Parser;
use konnector_tests::tools;
use serde_json::Value;

const NS: &str = "konnector-system";

fn render(sets: &[&str]) -> Vec<Value> {
    tools::render_chart(NS, sets, &[]).unwrap()
}

use konnector_tests::tools::find_object as find;

/// The binaries' defaults, from their own flag definitions.
fn gateway_defaults() -> konnector_gateway::args::Args {
    // --executor-url has no default; everything else does.
    konnector_gateway::args::Args::try_parse_from([
        "konnector-gateway",
        "--executor-url=https://executor:8090",
    ])
    .unwrap()
}

fn executor_defaults() -> konnector_executor::args::Args {
    konnector_executor::args::Args::try_parse_from(["konnector-executor"]).unwrap()
}

/// One rendered component: its container, its Service, and its args parsed as `--flag=value`.
struct Component<'a> {
    container: &'a Value,
    service: &'a Value,
    args: Vec<String>,
}

impl<'a> Component<'a> {
    fn new(docs: &'a [Value], name: &str) -> Self {
        let container = &find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0];
        let args = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        Self {
            container,
            service: find(docs, "Service", name),
            args,
        }
    }

    /// The value of `--flag=…`, exactly once.
    fn arg(&self, flag: &str) -> &str {
        let prefix = format!("--{flag}=");
        let values: Vec<&str> = self.args.iter().filter_map(|a| a.strip_prefix(&prefix)).collect();
        assert_eq!(values.len(), 1, "--{flag} in {:?}", self.args);
        values[0]
    }

    /// The containerPort named `name`.
    fn container_port(&self, name: &str) -> u16 {
        let port = self.container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port {name}"));
        port["containerPort"].as_u64().unwrap() as u16
    }

    /// The Service port whose targetPort is `target` (a container port name).
    fn service_port_for(&self, target: &str) -> u16 {
        let port = self.service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["targetPort"] == target)
            .unwrap_or_else(|| panic!("no Service port targets {target}"));
        port["port"].as_u64().unwrap() as u16
    }

    /// Both probes go to the admin port by name, and that name is the admin containerPort.
    fn assert_probes_on_admin(&self) {
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(self.container[probe]["httpGet"]["port"], "admin", "{probe}");
        }
    }
}

#[test]
fn gateway_ports_and_addresses_are_the_binarys_defaults() {
    let defaults = gateway_defaults();
    for listen in ["[::]", "0.0.0.0"] {
        let docs = render(&[&format!("listenAddress={listen}")]);
        let gateway = Component::new(&docs, "konnector-gateway");
        let chart_listen: SocketAddr = gateway.arg("listen").parse().unwrap();
        let chart_admin: SocketAddr = gateway.arg("admin-listen").parse().unwrap();
        assert_eq!(chart_listen.port(), defaults.listen.port());
        assert_eq!(chart_admin.port(), defaults.admin_listen.port());
        if listen == "[::]" {
            // The chart's default is the binary's default, address and all (dual-stack).
            assert_eq!(chart_listen, defaults.listen);
            assert_eq!(chart_admin, defaults.admin_listen);
        }
        assert_eq!(gateway.container_port("hooks"), defaults.listen.port());
        assert_eq!(gateway.container_port("admin"), defaults.admin_listen.port());
        gateway.assert_probes_on_admin();
        // CAPI calls the Service on 443 (the ExtensionConfig says so), which lands on the hook port.
        assert_eq!(gateway.service_port_for("hooks"), 443);
        assert_eq!(
            find(&docs, "ExtensionConfig", "konnector")["spec"]["clientConfig"]["service"]["port"],
            443
        );
        assert_eq!(gateway.service_port_for("admin"), defaults.admin_listen.port());
    }
    // Not Prism Central's 9440.
    assert_eq!(defaults.admin_listen.port(), 8081);
    assert!(defaults.listen.ip().is_unspecified() && defaults.listen.is_ipv6());
}

#[test]
fn executor_ports_and_addresses_are_the_binarys_defaults() {
    let defaults = executor_defaults();
    let docs = render(&[]);
    let executor = Component::new(&docs, "konnector-executor");
    assert_eq!(
        executor.arg("listen").parse::<SocketAddr>().unwrap(),
        defaults.listen
    );
    assert_eq!(
        executor.arg("admin-listen").parse::<SocketAddr>().unwrap(),
        defaults.admin_listen
    );
    assert_eq!(executor.container_port("grpc"), defaults.listen.port());
    assert_eq!(executor.container_port("admin"), defaults.admin_listen.port());
    executor.assert_probes_on_admin();
    assert_eq!(executor.service_port_for("grpc"), defaults.listen.port());
    assert_eq!(executor.service_port_for("admin"), defaults.admin_listen.port());
    assert!(defaults.listen.ip().is_unspecified() && defaults.listen.is_ipv6());

    // The gateway dials the executor's Service on the executor's port, and its NetworkPolicy lets it.
    let gateway = Component::new(&docs, "konnector-gateway");
    let url = gateway.arg("executor-url");
    assert!(
        url.ends_with(&format!(".svc:{}", defaults.listen.port())),
        "{url}"
    );
    let policy = find(&docs, "NetworkPolicy", "konnector-gateway");
    let egress_ports: Vec<u64> = policy["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert!(
        egress_ports.contains(&u64::from(defaults.listen.port())),
        "{egress_ports:?}"
    );
}

#[test]
fn hook_policies_and_capi_version_are_the_binarys_defaults() {
    // Compared flag by flag: a config cannot be built from the bare defaults (TLS needs --executor-ca).
    let defaults = gateway_defaults();
    let docs = render(&[]);
    let gateway = Component::new(&docs, "konnector-gateway");
    let parse = |flag: &str| humantime::parse_duration(gateway.arg(flag)).unwrap();
    assert_eq!(
        parse("after-control-plane-initialized-timeout"),
        defaults.after_control_plane_initialized_timeout
    );
    assert_eq!(
        parse("before-cluster-upgrade-timeout"),
        defaults.before_cluster_upgrade_timeout
    );
    assert_eq!(
        parse("before-cluster-delete-timeout"),
        defaults.before_cluster_delete_timeout
    );
    for (flag, default) in [
        (
            "after-control-plane-initialized-failure-policy",
            defaults.after_control_plane_initialized_failure_policy,
        ),
        (
            "before-cluster-upgrade-failure-policy",
            defaults.before_cluster_upgrade_failure_policy,
        ),
        (
            "before-cluster-delete-failure-policy",
            defaults.before_cluster_delete_failure_policy,
        ),
    ] {
        let chart: konnector_gateway::capi::FailurePolicy =
            clap::ValueEnum::from_str(gateway.arg(flag), false).unwrap();
        assert_eq!(chart, default, "{flag}");
    }
    let capi: konnector_gateway::catalog::CapiVersion = gateway.arg("capi-version").parse().unwrap();
    assert_eq!(capi, defaults.capi_version);
    for (flag, default) in [
        ("deadline-margin", defaults.deadline_margin),
        ("shutdown-grace", defaults.shutdown_grace),
        ("cert-reload-interval", defaults.cert_reload_interval),
        ("header-read-timeout", defaults.header_read_timeout),
        ("idle-timeout", defaults.idle_timeout),
    ] {
        assert_eq!(parse(flag), default, "--{flag}");
    }
    assert_eq!(
        gateway.arg("body-limit-bytes").parse::<usize>().unwrap(),
        defaults.body_limit_bytes
    );
}

#[test]
fn executor_values_default_to_the_binarys_defaults() {
    let defaults = executor_defaults();
    let docs = render(&[]);
    let executor = Component::new(&docs, "konnector-executor");
    let parse = |flag: &str| humantime::parse_duration(executor.arg(flag)).unwrap();
    for (flag, default) in [
        ("uninstall-timeout", defaults.uninstall_timeout),
        ("retry-after", defaults.retry_after),
        ("prism-central-timeout", defaults.prism_central_timeout),
        ("prism-central-check-ttl", defaults.prism_central_check_ttl),
        (
            "prism-central-check-failure-ttl",
            defaults.prism_central_check_failure_ttl,
        ),
        (
            "prism-central-warning-interval",
            defaults.prism_central_warning_interval,
        ),
        ("remote-timeout", defaults.remote_timeout),
        (
            "workload-client-idle-timeout",
            defaults.workload_client_idle_timeout,
        ),
        ("request-timeout", defaults.request_timeout),
        ("tls-handshake-timeout", defaults.tls_handshake_timeout),
        ("max-connection-age", defaults.max_connection_age),
        ("management-timeout", defaults.management_timeout),
        ("cert-reload-interval", defaults.cert_reload_interval),
        ("reconcile-resync", defaults.reconcile.reconcile_resync),
        ("leader-lease-duration", defaults.reconcile.leader_lease_duration),
        ("leader-retry-interval", defaults.reconcile.leader_retry_interval),
    ] {
        assert_eq!(parse(flag), default, "--{flag}");
    }
    assert_eq!(
        executor.arg("default-chart-version"),
        defaults.default_chart_version
    );
    assert_eq!(executor.arg("default-chart-name"), defaults.default_chart_name);
    assert_eq!(
        executor.arg("default-repository-url"),
        defaults.default_repository_url
    );
    assert_eq!(
        executor
            .arg("workload-client-cache-size")
            .parse::<usize>()
            .unwrap(),
        defaults.workload_client_cache_size
    );
    let checks: konnector_executor::prism::PreflightMode =
        clap::ValueEnum::from_str(executor.arg("prism-central-checks"), false).unwrap();
    assert_eq!(checks, defaults.prism_central_checks);
    let policy: konnector_executor::UninstallTimeoutPolicy =
        clap::ValueEnum::from_str(executor.arg("uninstall-timeout-policy"), false).unwrap();
    assert_eq!(policy, defaults.uninstall_timeout_policy);
}

#[test]
fn the_dockerfile_exposes_the_binaries_default_ports() {
    let dockerfile = std::fs::read_to_string(tools::repo_root().join("deploy/docker/Dockerfile")).unwrap();
    // One EXPOSE per target, in stage order: gateway, then executor.
    let exposed: Vec<Vec<u16>> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .map(|ports| ports.split_whitespace().map(|p| p.parse().unwrap()).collect())
        .collect();
    let gateway = gateway_defaults();
    let executor = executor_defaults();
    assert_eq!(
        exposed,
        [
            vec![gateway.listen.port(), gateway.admin_listen.port()],
            vec![executor.listen.port(), executor.admin_listen.port()],
        ]
    );
}
