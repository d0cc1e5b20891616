//! The real `konnector` binary (and `kubectl-konnector`, through kubectl) against real executors on real API
//! servers: status, plan and doctor for a healthy installed Cluster, then for the same Cluster broken in three
//! ways, each named by doctor; the exit codes; and, through a kubeconfig, the executor pod discovery and the CLI's
//! own read-only client certificate (Secret `konnector-cli`) under the RBAC docs/cli.md gives, which grants
//! nothing on the gateway's.
//!
//! Every run's stdout and stderr are searched for the Prism Central password, plain and base64.
//!
//! The harness has etcd and kube-apiserver but no kubelet, and the API server hands a port-forward to the pod's
//! kubelet: [`kubelet_stand_in`] plays that part (clearly a stand-in), so the kubeconfig test goes through the
//! real API server's port-forward to the real executor. Not tested: kubectl's own SPDY port-forward, and a real
//! kubelet's.

use std::{path::Path, process::Stdio, time::Duration};

use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use konnector_executor::{ExecutorConfig, prism::PreflightMode};
use konnector_proto::v1::{ApplyAgentRequest, GetAgentStatusRequest, Trigger};
use konnector_tests::{
    caaph_stand_in::{CaaphOptions, CaaphStandIn},
    control_plane::ensure_namespace,
    executor_fixture::{
        ExecutorEnv, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD, executor_env,
        executor_mgmt_client, serve_executor_with_flags,
    },
    pki::TestCa,
    prism_central_stand_in::{Behaviour, PrismCentralStandIn},
    workload::ClusterOptions,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

mod kubelet_stand_in;
use kubelet_stand_in::KubeletStandIn;

const KONNECTOR: &str = env!("CARGO_BIN_EXE_konnector");
const KUBECTL_PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-konnector");

/// One finished run of the CLI.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `program` with `args` and `envs`, none of the caller's `KONNECTOR_*`/`KUBECONFIG` variables, and checks
/// that the password appears in neither output stream. Async: the executor under test runs on this runtime.
async fn run_program(program: &str, args: &[&str], envs: &[(&str, String)]) -> Run {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("KONNECTOR_") || key == "KUBECONFIG" {
            cmd.env_remove(key);
        }
    }
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let out = cmd.output().await.expect("the CLI runs");
    let run = Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(TEST_PASSWORD);
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains(TEST_PASSWORD) && !text.contains(&b64),
            "the password leaked: {run:#?}"
        );
        assert!(!text.contains("PRIVATE KEY"), "key material printed: {run:#?}");
    }
    run
}

async fn konnector(args: &[&str]) -> Run {
    run_program(KONNECTOR, args, &[]).await
}

/// `--executor-url … --ca … --cert … --key …`: the gateway's client pair, as a deployed gateway uses it.
fn direct_flags(env: &ExecutorEnv) -> Vec<String> {
    let client = env.executor.pki.client_dir();
    vec![
        format!("--executor-url={}", env.executor.url()),
        format!("--ca={}", client.join("ca.crt").display()),
        format!("--cert={}", client.join("tls.crt").display()),
        format!("--key={}", client.join("tls.key").display()),
    ]
}

async fn konnector_direct(env: &ExecutorEnv, args: &[&str]) -> Run {
    let flags = direct_flags(env);
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(flags.iter().map(String::as_str))
        .collect();
    konnector(&all).await
}

const CLUSTER: &str = "clusters/c1";

/// Waits until CAAPH (the stand-in) reports the HelmChartProxy and every release Ready.
async fn wait_until_installed(env: &ExecutorEnv) {
    let mut client = env.executor.client().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = client
            .get_agent_status(GetAgentStatusRequest {
                cluster: Some(env.cluster_ref()),
            })
            .await
            .unwrap()
            .into_inner();
        let ready =
            |c: &Option<konnector_proto::v1::Condition>| c.as_ref().is_some_and(|c| c.status == "True");
        if s.helm_chart_proxy.as_ref().is_some_and(|h| ready(&h.ready))
            && !s.helm_release_proxies.is_empty()
            && s.helm_release_proxies.iter().all(|h| ready(&h.ready))
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never installed: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints a run for docs/cli.md (which shows these outputs).
fn show(title: &str, run: &Run) {
    println!("----- {title} (exit {})\n{}{}", run.code, run.stdout, run.stderr);
}

#[tokio::test]
async fn status_plan_and_doctor_for_a_healthy_then_broken_cluster() {
    konnector_tests::init_test_logging();
    let config = ExecutorConfig {
        prism_central_checks: PreflightMode::Warn,
        ..ExecutorConfig::default()
    };
    let env = executor_env("cli", config, ClusterOptions::initialized())
        .await
        .unwrap();
    let pc = PrismCentralStandIn::start("admin", TEST_PASSWORD, Behaviour::Normal)
        .await
        .unwrap();
    env.set_cluster_config(pc.cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();
    let _caaph = CaaphStandIn::start(env.admin.clone(), CaaphOptions::default());
    env.executor
        .client()
        .await
        .unwrap()
        .apply_agent(ApplyAgentRequest {
            cluster: Some(env.cluster_ref()),
            trigger: Trigger::AfterControlPlaneInitialized as i32,
        })
        .await
        .unwrap();
    let kube_system = Api::<Namespace>::all(env.workload.client().await.unwrap())
        .get("kube-system")
        .await
        .unwrap();
    pc.register(kube_system.metadata.uid.as_deref().unwrap());
    wait_until_installed(&env).await;

    // Healthy: status says so field by field.
    let status = konnector_direct(&env, &["status", CLUSTER]).await;
    show("status, healthy", &status);
    assert_eq!(status.code, 0, "{status:#?}");
    for expected in [
        "Cluster                     clusters/c1",
        &format!("Cluster uid                 {}", env.cluster.uid),
        "Addon configured            yes",
        "Cluster deleting            no",
        "Credentials copied          yes (Secret ntnx-system/konnector-agent on the workload cluster)",
        "HelmChartProxy              konnector-agent-c1 (Ready=True)",
        "Uninstall phase             NOT_STARTED",
        "Prism Central registration  REGISTERED",
        "Prism Central preflight     PASSED (AFTER_CONTROL_PLANE_INITIALIZED, at ",
    ] {
        assert!(
            status.stdout.contains(expected),
            "missing {expected:?} in\n{}",
            status.stdout
        );
    }
    assert!(
        status
            .stdout
            .contains("(Ready=True), release deployed revision 1"),
        "{}",
        status.stdout
    );
    let json: Value = serde_json::from_str(
        &konnector_direct(&env, &["status", CLUSTER, "-o", "json"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(json["credentialsCopied"], true);
    assert_eq!(json["uninstallPhase"], "NOT_STARTED");
    assert_eq!(json["lastPreflight"]["outcome"], "PASSED");
    assert_eq!(json["helmChartProxy"]["ready"]["status"], "True");

    // The same through every flag's environment variable, and through kubectl as a plugin.
    let client = env.executor.pki.client_dir();
    let by_env = run_program(
        KONNECTOR,
        &["status", CLUSTER],
        &[
            ("KONNECTOR_EXECUTOR_URL", env.executor.url()),
            (
                "KONNECTOR_EXECUTOR_CA",
                client.join("ca.crt").display().to_string(),
            ),
            (
                "KONNECTOR_EXECUTOR_CLIENT_CERT",
                client.join("tls.crt").display().to_string(),
            ),
            (
                "KONNECTOR_EXECUTOR_CLIENT_KEY",
                client.join("tls.key").display().to_string(),
            ),
        ],
    )
    .await;
    assert_eq!((by_env.code, &by_env.stdout), (0, &status.stdout), "{by_env:#?}");
    let plugin_dir = Path::new(KUBECTL_PLUGIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let flags = direct_flags(&env);
    let plugin_args: Vec<&str> = ["konnector", "status", CLUSTER]
        .into_iter()
        .chain(flags.iter().map(String::as_str))
        .collect();
    let plugin = run_program("kubectl", &plugin_args, &[("PATH", path.clone())]).await;
    assert_eq!((plugin.code, &plugin.stdout), (0, &status.stdout), "{plugin:#?}");

    // kubectl's conventions: -n is the Cluster's namespace (`kubectl konnector status c1 -n clusters`), and naming
    // two namespaces is a usage error; -o yaml is the JSON document as YAML.
    let plugin_args: Vec<&str> = ["konnector", "status", "c1", "-n", "clusters"]
        .into_iter()
        .chain(flags.iter().map(String::as_str))
        .collect();
    let plugin = run_program("kubectl", &plugin_args, &[("PATH", path)]).await;
    assert_eq!((plugin.code, &plugin.stdout), (0, &status.stdout), "{plugin:#?}");
    let twice = konnector_direct(&env, &["status", CLUSTER, "-n", "elsewhere"]).await;
    assert_eq!(twice.code, 2, "{twice:#?}");
    assert!(twice.stderr.contains("-n says elsewhere"), "{}", twice.stderr);
    let yaml: Value = serde_yaml_ng::from_str(
        &konnector_direct(&env, &["status", CLUSTER, "-o", "yaml"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(yaml, json);

    // Healthy: doctor finds nothing wrong. Called directly without a kubeconfig, it says it did not read the CAPI
    // side (doctor_capi.rs reads it) rather than passing it.
    let doctor = konnector_direct(&env, &["doctor", CLUSTER]).await;
    show("doctor, healthy", &doctor);
    assert_eq!(doctor.code, 0, "{doctor:#?}");
    assert!(
        doctor.stdout.ends_with(
            "skip  CAPI side                   not read: --executor-url without --kubeconfig (the CAPI side is read \
             through a kubeconfig)\n10 ok, 0 warn, 0 fail, 1 skip\n"
        ),
        "{}",
        doctor.stdout
    );
    let report: Value = serde_json::from_str(
        &konnector_direct(&env, &["doctor", CLUSTER, "-o", "json"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(report["healthy"], true);
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["verdict"] == "ok" || c["name"] == "CAPI side"),
        "{report:#}"
    );

    // Plan: the three objects, the Secret's values redacted by the executor (the password check is in run_program).
    let plan = konnector_direct(&env, &["plan", CLUSTER]).await;
    show("plan, healthy", &plan);
    assert_eq!(plan.code, 0, "{plan:#?}");
    for expected in [
        "# Namespace ntnx-system, on the workload cluster",
        "# Secret ntnx-system/konnector-agent, on the workload cluster; values redacted by the executor",
        "# HelmChartProxy clusters/konnector-agent-c1, on the management cluster",
        "\"<redacted>\"",
    ] {
        assert!(
            plan.stdout.contains(expected),
            "missing {expected:?} in\n{}",
            plan.stdout
        );
    }
    let plan_json: Value = serde_json::from_str(
        &konnector_direct(&env, &["plan", CLUSTER, "-o", "json"])
            .await
            .stdout,
    )
    .unwrap();
    let data = plan_json["secret"]["data"]
        .as_object()
        .expect("the Secret's data");
    assert!(
        !data.is_empty() && data.values().all(|v| v == "<redacted>"),
        "{plan_json:#}"
    );

    // The fleet view lists the Clusters through the kubeconfig (here the admin's) and asks the executor about each.
    let admin_kc = format!("--kubeconfig={}", env.mgmt.kubeconfig_path().display());
    let fleet = konnector_direct(&env, &["fleet", &admin_kc]).await;
    show("fleet, healthy", &fleet);
    assert_eq!(
        (fleet.code, fleet.stdout.as_str()),
        (
            0,
            "      CLUSTER      PROBLEM\nok    clusters/c1\n1 Cluster(s), 0 with a failing check\n"
        )
    );

    // Broken 1: the agent's Secret is gone from the workload cluster.
    Api::<Secret>::namespaced(env.workload.client().await.unwrap(), "ntnx-system")
        .delete("konnector-agent", &DeleteParams::default())
        .await
        .unwrap();
    let doctor = konnector_direct(&env, &["doctor", CLUSTER]).await;
    show("doctor, workload Secret deleted", &doctor);
    assert_eq!(doctor.code, 1, "{doctor:#?}");
    let fleet = konnector_direct(&env, &["fleet", &admin_kc, "-n", "clusters"]).await;
    show("fleet, workload Secret deleted", &fleet);
    assert_eq!(fleet.code, 1, "{fleet:#?}");
    assert!(
        fleet.stdout.contains(
            "fail  clusters/c1  credentials copied: Secret ntnx-system/konnector-agent is missing on the workload cluster"
        ),
        "{}",
        fleet.stdout
    );
    assert!(
        fleet.stdout.ends_with("1 Cluster(s), 1 with a failing check\n"),
        "{}",
        fleet.stdout
    );
    assert!(
        doctor.stdout.contains(
            "fail  credentials copied          Secret ntnx-system/konnector-agent is missing on the workload cluster"
        ),
        "{}",
        doctor.stdout
    );
    let status = konnector_direct(&env, &["status", CLUSTER]).await;
    show("status, workload Secret deleted", &status);
    assert_eq!(status.code, 0);
    assert!(status.stdout.contains(
        "Credentials copied          no (Secret ntnx-system/konnector-agent is not on the workload cluster)"
    ));

    // Broken 2: the Prism Central credentials Secret is gone from the management cluster. The next apply would
    // fail, and plan says so with the executor's own message and exit code 4.
    Api::<Secret>::namespaced(env.admin.clone(), TEST_NAMESPACE)
        .delete(TEST_CREDENTIALS_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let plan = konnector_direct(&env, &["plan", CLUSTER]).await;
    show("plan, credentials Secret deleted", &plan);
    assert_eq!(plan.code, 4, "{plan:#?}");
    assert!(plan.stdout.is_empty());
    let expected = format!(
        "konnector: error: the executor refused PlanAgent: FAILED_PRECONDITION cannot read the Prism Central \
         credentials Secret {TEST_NAMESPACE}/{TEST_CREDENTIALS_SECRET} on the management cluster: it was not found"
    );
    assert!(plan.stderr.starts_with(&expected), "{}", plan.stderr);
    assert_eq!(plan.stderr.lines().count(), 1, "one line: {}", plan.stderr);
    let doctor = konnector_direct(&env, &["doctor", CLUSTER]).await;
    show("doctor, credentials Secret deleted too", &doctor);
    assert_eq!(doctor.code, 1);
    assert!(
        doctor.stdout.contains("fail  next apply (dry run)        the executor refused PlanAgent: FAILED_PRECONDITION cannot read the Prism Central credentials Secret"),
        "{}",
        doctor.stdout
    );

    // The hook that runs next fails and records an Event; docs/operating.md's Troubleshooting command finds it.
    // That hook is AfterControlPlaneInitialized: BeforeClusterUpgrade only warns about configuration by default
    // (--upgrade-config-policy warn), so that an upgrade CAREN let through is not blocked.
    let refused = konnector_tests::support::apply_agent(
        &env.executor,
        env.cluster_ref(),
        Trigger::AfterControlPlaneInitialized,
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let events = tokio::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", env.mgmt.kubeconfig_path().display()))
        .args([
            "get",
            "events",
            "-n",
            TEST_NAMESPACE,
            "--field-selector",
            "involvedObject.name=c1",
        ])
        .output()
        .await
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("CredentialsSecretMissing"), "{events}");

    // Broken 3: the Cluster no longer configures the addon.
    env.set_cluster_config(json!({})).await.unwrap();
    let doctor = konnector_direct(&env, &["doctor", CLUSTER]).await;
    show("doctor, addon not configured", &doctor);
    assert_eq!(doctor.code, 1);
    assert!(
        doctor.stdout.contains("fail  addon configured"),
        "{}",
        doctor.stdout
    );
    let report: Value = serde_json::from_str(
        &konnector_direct(&env, &["doctor", CLUSTER, "-o", "json"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(report["healthy"], false);
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "addon configured" && c["verdict"] == "fail" && c["nextStep"].is_string()),
        "{report:#}"
    );

    // A Cluster that does not exist: the executor's refusal, exit 4; doctor names it.
    let missing = konnector_direct(&env, &["status", "clusters/nope"]).await;
    assert_eq!(missing.code, 4, "{missing:#?}");
    assert!(
        missing.stderr.contains("the executor refused GetAgentStatus"),
        "{}",
        missing.stderr
    );
    let doctor = konnector_direct(&env, &["doctor", "clusters/nope"]).await;
    assert_eq!(doctor.code, 1);
    assert!(doctor.stdout.contains("fail  Cluster found"), "{}", doctor.stdout);

    // Unreachable executor: exit 3 for status, a failed first check for doctor.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let client = env.executor.pki.client_dir();
    let ca = format!("--ca={}", client.join("ca.crt").display());
    let url = format!("--executor-url=https://127.0.0.1:{closed}");
    let down = konnector(&["status", CLUSTER, &url, &ca]).await;
    assert_eq!(down.code, 3, "{down:#?}");
    assert!(
        down.stderr.starts_with(&format!(
            "konnector: error: cannot connect to the executor at https://127.0.0.1:{closed}: "
        )),
        "{}",
        down.stderr
    );
    let doctor = konnector(&["doctor", CLUSTER, &url, &ca]).await;
    show("doctor, executor unreachable", &doctor);
    assert_eq!(doctor.code, 1);
    assert!(
        doctor.stdout.contains("fail  executor reachable"),
        "{}",
        doctor.stdout
    );

    // An executor whose certificate the given CA did not sign: a TLS failure, exit 3.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, TestCa::new("not-konnector").unwrap().cert_pem()).unwrap();
    let wrong = konnector(&[
        "status",
        CLUSTER,
        &format!("--executor-url={}", env.executor.url()),
        &format!("--ca={}", other_ca.display()),
    ])
    .await;
    assert_eq!(wrong.code, 3, "{wrong:#?}");
    assert!(
        wrong.stderr.contains("TLS handshake with the executor failed"),
        "{}",
        wrong.stderr
    );

    // Plaintext spoken to the executor's TLS port: not reached, exit 3, with a hint; and plaintext is loopback-only.
    let plain = konnector(&[
        "status",
        CLUSTER,
        &format!("--executor-url=http://{}", env.executor.addr),
        "--plaintext-loopback",
    ])
    .await;
    assert_eq!(plain.code, 3, "{plain:#?}");
    assert!(
        plain.stderr.contains("GetAgentStatus did not reach the executor"),
        "{}",
        plain.stderr
    );
    let remote = konnector(&[
        "status",
        CLUSTER,
        "--executor-url=http://10.0.0.1:8090",
        "--plaintext-loopback",
    ])
    .await;
    assert_eq!(remote.code, 3);
    assert!(
        remote.stderr.contains("allowed only on loopback"),
        "{}",
        remote.stderr
    );

    // Usage errors are clap's exit code 2.
    assert_eq!(konnector(&["status", "a/b/c"]).await.code, 2);
    // Shell completion comes from the same flags, and needs no executor; --help shows examples.
    let completion = konnector(&["completion", "bash"]).await;
    assert_eq!(completion.code, 0, "{completion:#?}");
    assert!(
        completion.stdout.contains("--konnector-namespace"),
        "{}",
        completion.stdout
    );
    let help = konnector(&["--help"]).await;
    assert!(
        help.stdout.contains("kubectl konnector status wl-1 -n tenants"),
        "{}",
        help.stdout
    );
}

/// The Role docs/cli.md gives an operator for the kubeconfig path, verbatim from docs/cli.md.
fn documented_rbac() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md")).unwrap();
    let start = doc
        .find("<!-- cli-rbac:start -->")
        .expect("docs/cli.md's RBAC block");
    let end = doc
        .find("<!-- cli-rbac:end -->")
        .expect("docs/cli.md's RBAC block end");
    let block = &doc[start..end];
    let yaml_start = block.find("```yaml\n").unwrap() + "```yaml\n".len();
    let yaml_end = block[yaml_start..].find("```").unwrap() + yaml_start;
    block[yaml_start..yaml_end].to_owned()
}

/// A kubeconfig for the management API server whose contexts act as `users` (impersonated by the admin token, so
/// the API server applies RBAC as it would to them).
fn kubeconfig(mgmt: &konnector_tests::ControlPlane, users: &[&str]) -> Value {
    let ca = base64::engine::general_purpose::STANDARD.encode(mgmt.ca_pem());
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mgmt", "cluster": {"server": mgmt.url(), "certificate-authority-data": ca}}],
        "users": users.iter().map(|u| json!({"name": u, "user": {"token": mgmt.admin_token(), "as": u}})).collect::<Vec<_>>(),
        "contexts": users.iter().map(|u| json!({"name": u, "context": {"cluster": "mgmt", "user": u}})).collect::<Vec<_>>(),
        "current-context": users[0],
    })
}

/// An executor pod as the chart labels it, its `grpc` port at `grpc_port`, on `node` when given (scheduled there:
/// the harness has no scheduler).
fn executor_pod(name: &str, grpc_port: u16, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/name": "konnector",
            "app.kubernetes.io/instance": "konnector",
            "app.kubernetes.io/component": "executor",
        }},
        "spec": {"serviceAccountName": "konnector-executor", "automountServiceAccountToken": false, "nodeName": node,
            "containers": [{"name": "executor", "image": "konnector-executor",
            "ports": [{"name": "grpc", "containerPort": grpc_port}, {"name": "admin", "containerPort": 8091}]}]},
    }))
    .unwrap()
}

/// The name the chart's executor certificate carries (deploy/chart/konnector/templates/certificates.yaml), which
/// the CLI verifies behind a port-forward.
const EXECUTOR_SERVICE_NAME: &str = "konnector-executor.konnector-system.svc";

/// A CA and, signed by it, a serving certificate for [`EXECUTOR_SERVICE_NAME`] as cert-manager issues the chart's:
/// (CA PEM, certificate PEM, key PEM).
fn chart_like_executor_certificate() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "konnector-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![EXECUTOR_SERVICE_NAME.to_owned()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// Runs `args` until `done` holds for the run or 30 s pass (RBAC bindings and certificate reloads take effect a
/// moment after they are written); returns the last run.
async fn until(args: &[&str], done: impl Fn(&Run) -> bool) -> Run {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = konnector(args).await;
        if done(&run) || std::time::Instant::now() > deadline {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The subjectAltName of the CLI's certificate as the chart issues it (release `konnector`), which the chart's
/// executor serves read-only.
const CLI_IDENTITY: &str = "konnector-cli";

#[tokio::test]
async fn kubeconfig_path_finds_a_ready_pod_uses_the_clis_read_only_certificate_and_port_forwards() {
    konnector_tests::init_test_logging();
    let config = ExecutorConfig {
        prism_central_checks: PreflightMode::Warn,
        ..ExecutorConfig::default()
    };
    let env = executor_env("cli-kube", config.clone(), ClusterOptions::initialized())
        .await
        .unwrap();
    let (mgmt, admin) = (&env.mgmt, env.admin.clone());
    let dir = tempfile::tempdir().unwrap();
    // An executor with the chart's identities: the gateway's name may call everything, the CLI's only reads.
    let executor = serve_executor_with_flags(
        executor_mgmt_client(mgmt, &config.defaults_namespace)
            .await
            .unwrap(),
        config,
        &["--client-read-only-names=konnector-cli"],
    )
    .await
    .unwrap();

    // The executor serves a certificate for its Service name, as the chart's does; the CLI verifies that name. The
    // executor re-reads its files, so the new pair is in use once a direct call naming the Service succeeds.
    let (ca_pem, cert_pem, key_pem) = chart_like_executor_certificate();
    let server = executor.pki.server_dir();
    std::fs::write(server.join("tls.key"), &key_pem).unwrap();
    std::fs::write(server.join("tls.crt"), &cert_pem).unwrap();
    let ca_file = dir.path().join("executor-ca.crt");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    // The CLI's pair, from the CA the executor trusts for clients, as cert-manager issues Certificate konnector-cli.
    let cli_pair = executor
        .pki
        .client_pair_with_names(CLI_IDENTITY, &[CLI_IDENTITY])
        .unwrap();
    let (cli_crt, cli_key) = (dir.path().join("cli.crt"), dir.path().join("cli.key"));
    std::fs::write(&cli_crt, &cli_pair.cert_pem).unwrap();
    std::fs::write(&cli_key, &cli_pair.key_pem).unwrap();
    let (url, ca, cert, key) = (
        format!("--executor-url={}", executor.url()),
        format!("--ca={}", ca_file.display()),
        format!("--cert={}", cli_crt.display()),
        format!("--key={}", cli_key.display()),
    );
    let server_name = format!("--server-name={EXECUTOR_SERVICE_NAME}");
    let direct = until(&["status", CLUSTER, &url, &ca, &cert, &key, &server_name], |r| {
        r.code == 0
    })
    .await;
    assert_eq!(direct.code, 0, "{direct:#?}");

    // A kubeconfig whose contexts act as "operator" (bound to docs/cli.md's Role, applied as an operator would)
    // and "nobody" (no rights).
    ensure_namespace(&admin, "konnector-system").await.unwrap();
    let config_path = dir.path().join("kubeconfig");
    std::fs::write(
        &config_path,
        serde_json::to_string(&kubeconfig(mgmt, &["operator", "nobody"])).unwrap(),
    )
    .unwrap();
    let kc = format!("--kubeconfig={}", config_path.display());
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, documented_rbac()).unwrap();
    let admin_kc = format!("--kubeconfig={}", mgmt.kubeconfig_path().display());
    for args in [
        vec![admin_kc.as_str(), "apply", "-f", rbac.to_str().unwrap()],
        vec![
            admin_kc.as_str(),
            "-n",
            "konnector-system",
            "create",
            "rolebinding",
            "konnector-cli-operator",
            "--role=konnector-cli",
            "--user=operator",
        ],
    ] {
        let out = tokio::process::Command::new("kubectl")
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A user without the Role is told which permission is missing and where docs/cli.md lists them.
    let denied = konnector(&["status", CLUSTER, &kc, "--context=nobody"]).await;
    assert_eq!(denied.code, 3, "{denied:#?}");
    assert!(
        denied
            .stderr
            .starts_with("konnector: error: not allowed to list pods in namespace konnector-system"),
        "{}",
        denied.stderr
    );
    assert!(denied.stderr.contains("docs/cli.md"), "{}", denied.stderr);

    // The operator (the current context), before any executor pod exists.
    let none = until(&["status", CLUSTER, &kc], |r| !r.stderr.contains("not allowed")).await;
    assert_eq!(none.code, 3, "{none:#?}");
    assert!(
        none.stderr
            .contains("no executor pod in namespace konnector-system"),
        "{}",
        none.stderr
    );

    // Pods that are not ready are not used. b runs on a Node whose kubelet is the stand-in; its grpc port is the
    // executor's, which the stand-in reaches on loopback as a kubelet reaches a pod's port.
    let kubelet = KubeletStandIn::start().await.unwrap();
    kubelet.register_node(&admin, "node-1").await.unwrap();
    mgmt.service_account_client("konnector-system", "konnector-executor")
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "konnector-system");
    let grpc_port = executor.addr.port();
    for (name, node) in [
        ("konnector-executor-a", None),
        ("konnector-executor-b", Some("node-1")),
    ] {
        pods.create(&PostParams::default(), &executor_pod(name, grpc_port, node))
            .await
            .unwrap();
    }
    let unready = konnector(&["status", CLUSTER, &kc]).await;
    assert_eq!(unready.code, 3);
    assert!(
        unready
            .stderr
            .contains("no ready executor pod in namespace konnector-system: konnector-executor-a ("),
        "{}",
        unready.stderr
    );

    // The kubelet would mark b Running and Ready; the stand-in does not, so the test writes that status.
    let ready_status =
        json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(
        "konnector-executor-b",
        &PatchParams::default(),
        &Patch::Merge(&ready_status),
    )
    .await
    .unwrap();
    // An install whose chart issues no CLI certificate: the CLI says what to do about it.
    let no_secret = konnector(&["status", CLUSTER, &kc]).await;
    assert_eq!(no_secret.code, 3);
    assert!(
        no_secret.stderr.contains(
            "cannot get Secret konnector-system/konnector-cli (the CLI's read-only client certificate): not found; \
             install or upgrade konnector with a chart that issues it"
        ) && no_secret.stderr.contains("--executor-url with --ca, --cert and --key"),
        "{}",
        no_secret.stderr
    );

    // The CLI's Secret as cert-manager writes it (ca.crt: the CA the executor's certificate chains to). The
    // gateway's client Secret does not exist here, and the operator may not read it (docs/cli.md's Role).
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("konnector-cli".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("ca.crt", k8s_openapi::ByteString(ca_pem.into_bytes())),
                ("tls.crt", k8s_openapi::ByteString(cli_pair.cert_pem.into_bytes())),
                ("tls.key", k8s_openapi::ByteString(cli_pair.key_pem.into_bytes())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "konnector-system");
    secrets.create(&PostParams::default(), &secret).await.unwrap();

    let can_i = tokio::process::Command::new("kubectl")
        .args([
            admin_kc.as_str(),
            "-n",
            "konnector-system",
            "auth",
            "can-i",
            "get",
        ])
        .args(["secret/konnector-gateway-client", "--as=operator"])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&can_i.stdout).trim(), "no", "{can_i:?}");

    // Through the API server's port-forward, mTLS with the CLI's read-only pair: the same answer as directly.
    let status = konnector(&["status", CLUSTER, &kc]).await;
    show("status through the kubeconfig", &status);
    assert_eq!((status.code, &status.stdout), (0, &direct.stdout), "{status:#?}");
    assert_eq!(
        kubelet
            .seen()
            .first()
            .map(|p| p.split('?').next().unwrap_or_default().to_owned()),
        Some("/portForward/konnector-system/konnector-executor-b".to_owned()),
        "the API server handed the port-forward to b's node"
    );
    let doctor = konnector(&["doctor", CLUSTER, &kc]).await;
    show("doctor through the kubeconfig", &doctor);
    // Not installed yet is warnings, not failures.
    assert_eq!(doctor.code, 0, "{doctor:#?}");
    assert!(
        doctor.stdout.contains(&format!(
            "ok    executor reachable          serving, via pod konnector-system/konnector-executor-b port {grpc_port} (port-forward)"
        )),
        "{doctor:#?}"
    );

    // A broken Secret is named, without its contents.
    let mut broken = secret.clone();
    broken
        .data
        .as_mut()
        .unwrap()
        .insert("tls.key".into(), k8s_openapi::ByteString(b"garbage".to_vec()));
    secrets
        .replace("konnector-cli", &PostParams::default(), &broken)
        .await
        .unwrap();
    let bad = konnector(&["status", CLUSTER, &kc]).await;
    assert_eq!(bad.code, 3);
    assert!(
        bad.stderr.contains(
            "Secret konnector-system/konnector-cli does not hold a usable certificate: tls.key is not a PEM private key"
        ),
        "{}",
        bad.stderr
    );
}
