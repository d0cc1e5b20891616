//! Starts the konnector executor in-process, under the RBAC it ships with, and builds the requests tests send.
//!
//! The executor's management client is never cluster-admin: [`start_executor`] applies the chart's own RBAC files
//! (`deploy/chart/konnector/files/`: the ClusterRole, the defaults Role, the Lease Role), binds them to the
//! executor's ServiceAccount, and gives the executor a real token of that ServiceAccount (TokenRequest API), so the
//! API server enforces the chart's RBAC for real.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use konnector_executor::{Executor, ExecutorConfig, observe::ExecutorMetrics, reconcile::ReconcileConfig};
use konnector_gateway::{ExecutorEndpoint, ExecutorTransport};
use konnector_proto::v1::{ClusterRef, agent_service_client::AgentServiceClient};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{control_plane::ControlPlane, crds::HARNESS_MANAGER, pki::MtlsPki, workload::WorkloadCluster};

/// How often the fixtures' executor and gateways look at their certificate files: the chart's flag, set low so
/// rotation tests do not wait long.
pub const CERT_RELOAD_SECONDS: u64 = 1;

/// The executor's ClusterRole, exactly as the chart ships it.
pub const EXECUTOR_CLUSTER_ROLE_YAML: &str =
    include_str!("../../deploy/chart/konnector/files/executor-clusterrole.yaml");
/// The executor's Role in its defaults namespace (the two ConfigMaps), exactly as the chart ships it.
pub const EXECUTOR_DEFAULTS_ROLE_YAML: &str =
    include_str!("../../deploy/chart/konnector/files/executor-defaults-role.yaml");
/// The executor's Role in its own namespace (the reconciler Lease), exactly as the chart ships it.
pub const EXECUTOR_ROLE_YAML: &str = include_str!("../../deploy/chart/konnector/files/executor-role.yaml");
/// The user the executor's ServiceAccount authenticates as.
pub const EXECUTOR_USER: &str = "system:serviceaccount:konnector-system:konnector-executor";
/// The executor's ServiceAccount, as the chart names it with release name `konnector`.
pub const EXECUTOR_SERVICE_ACCOUNT: (&str, &str) = ("konnector-system", "konnector-executor");

/// Applies the executor's ClusterRole and binds it to the executor's ServiceAccount ([`EXECUTOR_USER`]), and its
/// Role for the defaults ConfigMaps in `defaults_namespace`, as the chart does. Idempotent.
pub async fn install_executor_rbac(admin: &Client, defaults_namespace: &str) -> anyhow::Result<()> {
    crate::control_plane::ensure_namespace(admin, defaults_namespace).await?;
    let mut role: k8s_openapi::api::rbac::v1::Role = serde_yaml_ng::from_str(EXECUTOR_DEFAULTS_ROLE_YAML)
        .context("cannot parse the executor defaults Role")?;
    role.metadata.namespace = Some(defaults_namespace.to_owned());
    let role_name = role.metadata.name.clone().context("Role without name")?;
    let pp = PatchParams::apply(HARNESS_MANAGER).force();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), defaults_namespace)
        .patch(&role_name, &pp, &Patch::Apply(&role))
        .await
        .context("cannot apply the executor defaults Role")?;
    let role_binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": role_name, "namespace": defaults_namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
        "subjects": [{
            "kind": "ServiceAccount",
            "namespace": EXECUTOR_SERVICE_ACCOUNT.0,
            "name": EXECUTOR_SERVICE_ACCOUNT.1,
        }],
    }))?;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), defaults_namespace)
        .patch(&role_name, &pp, &Patch::Apply(&role_binding))
        .await
        .context("cannot bind the executor defaults Role")?;
    let role: ClusterRole = serde_yaml_ng::from_str(EXECUTOR_CLUSTER_ROLE_YAML)
        .context("cannot parse the executor ClusterRole")?;
    let name = role.metadata.name.clone().context("ClusterRole without name")?;
    Api::<ClusterRole>::all(admin.clone())
        .patch(&name, &pp, &Patch::Apply(&role))
        .await
        .context("cannot apply the executor ClusterRole")?;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{
            "kind": "ServiceAccount",
            "namespace": EXECUTOR_SERVICE_ACCOUNT.0,
            "name": EXECUTOR_SERVICE_ACCOUNT.1,
        }],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(&name, &pp, &Patch::Apply(&binding))
        .await
        .context("cannot bind the executor ClusterRole")?;
    install_executor_role(admin).await
}

/// Applies the executor's Role (the reconciler Lease) in its namespace and binds it to its ServiceAccount.
async fn install_executor_role(admin: &Client) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let namespace = EXECUTOR_SERVICE_ACCOUNT.0;
    crate::control_plane::ensure_namespace(admin, namespace).await?;
    let role: Role = serde_yaml_ng::from_str(EXECUTOR_ROLE_YAML).context("cannot parse the executor Role")?;
    let name = role.metadata.name.clone().context("Role without name")?;
    let pp = PatchParams::apply(HARNESS_MANAGER).force();
    Api::<Role>::namespaced(admin.clone(), namespace)
        .patch(&name, &pp, &Patch::Apply(&role))
        .await
        .context("cannot apply the executor Role")?;
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "namespace": namespace, "name": EXECUTOR_SERVICE_ACCOUNT.1}],
    }))?;
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .patch(&name, &pp, &Patch::Apply(&binding))
        .await
        .context("cannot bind the executor Role")?;
    Ok(())
}

/// A management client with exactly the executor's permissions: a real token of the executor's ServiceAccount
/// (TokenRequest API), bound to the chart's ClusterRole and defaults Role (in `defaults_namespace`). Returns once
/// the binding is in effect.
pub async fn executor_mgmt_client(mgmt: &ControlPlane, defaults_namespace: &str) -> anyhow::Result<Client> {
    install_executor_rbac(&mgmt.client().await?, defaults_namespace).await?;
    let (namespace, name) = EXECUTOR_SERVICE_ACCOUNT;
    let client = mgmt.service_account_client(namespace, name).await?;
    // The API server's RBAC cache picks a new binding up shortly after it is written; until then the token is
    // refused. Reading a Secret that does not exist answers 404 once the binding is in effect.
    let probe = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match probe.get_opt("konnector-rbac-probe").await {
            Ok(_) => return Ok(client),
            Err(kube::Error::Api(s)) if s.code == 403 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("the executor's ServiceAccount is not authorized"),
        }
    }
}

/// A running in-process executor, serving mTLS as the chart runs it. Dropping it stops the server.
pub struct RunningExecutor {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// Its metrics (what the executor binary serves at `/metrics` on its admin port).
    pub metrics: ExecutorMetrics,
    /// Its certificates and the gateway's client pair, laid out as the chart mounts them; rotate them here.
    pub pki: MtlsPki,
    /// gRPC connections it has accepted (after the TLS handshake).
    pub connections_accepted: prometheus_client::metrics::counter::Counter,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    reconciler: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for RunningExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningExecutor")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningExecutor {
    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// How a gateway reaches it: mTLS with the gateway's client pair, as the chart configures the gateway
    /// (`--executor-ca`, `--executor-client-cert`, `--executor-client-key` from the client Secret).
    pub fn endpoint(&self) -> ExecutorEndpoint {
        let client = self.pki.client_dir();
        ExecutorEndpoint {
            url: self.url(),
            transport: ExecutorTransport::Tls {
                ca: client.join("ca.crt"),
                client_identity: Some((client.join("tls.crt"), client.join("tls.key"))),
                server_name: None,
            },
        }
    }

    /// The grpcurl TLS flags for it: `-cacert … -cert … -key …` (the gateway's client pair).
    pub fn grpcurl_tls_flags(&self) -> String {
        let client = self.pki.client_dir();
        format!(
            "-cacert {} -cert {} -key {}",
            client.join("ca.crt").display(),
            client.join("tls.crt").display(),
            client.join("tls.key").display()
        )
    }

    /// A gRPC client connected to it over mTLS, as the gateway connects.
    pub async fn client(&self) -> anyhow::Result<AgentServiceClient<Channel>> {
        let channel = konnector_gateway::client::channel(
            &self.endpoint(),
            std::time::Duration::from_secs(CERT_RELOAD_SECONDS),
        )?;
        Ok(AgentServiceClient::new(channel))
    }

    /// Kills it as a crashed pod dies: the reconciler stops at once, without giving its Lease up.
    pub fn kill(mut self) {
        if let Some(reconciler) = self.reconciler.take() {
            reconciler.abort();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Stops the server (and the reconciler, which gives its Lease up) and waits for it to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(reconciler) = self.reconciler.take() {
            reconciler.await?;
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningExecutor {
    fn drop(&mut self) {
        if let Some(reconciler) = &self.reconciler {
            reconciler.abort();
        }
        self.shutdown.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Serves an executor for `mgmt` on a loopback port, with a management client under the executor's RBAC.
pub async fn start_executor(mgmt: &ControlPlane, config: ExecutorConfig) -> anyhow::Result<RunningExecutor> {
    let client = executor_mgmt_client(mgmt, &config.defaults_namespace).await?;
    serve_executor(client, config).await
}

/// Serves an executor for `mgmt` under its RBAC, running the reconciler (competing for its Lease) beside it.
pub async fn start_reconciling_executor(
    mgmt: &ControlPlane,
    config: ExecutorConfig,
    reconcile: ReconcileConfig,
) -> anyhow::Result<RunningExecutor> {
    start_reconciling_executor_with_flags(mgmt, config, reconcile, &[]).await
}

/// [`start_reconciling_executor`] with more executor flags, e.g. `--client-read-only-names=konnector-cli`.
pub async fn start_reconciling_executor_with_flags(
    mgmt: &ControlPlane,
    config: ExecutorConfig,
    reconcile: ReconcileConfig,
    flags: &[&str],
) -> anyhow::Result<RunningExecutor> {
    let client = executor_mgmt_client(mgmt, &config.defaults_namespace).await?;
    serve_executor_with(client, config, flags, Some(reconcile)).await
}

/// A reconciler configuration fast enough for tests: resync every second, a 3 s Lease tried every 500 ms, in the
/// executor's namespace, as `identity`.
pub fn fast_reconcile(identity: &str) -> ReconcileConfig {
    ReconcileConfig {
        resync: std::time::Duration::from_secs(1),
        lease: konnector_executor::LeaseConfig {
            namespace: EXECUTOR_SERVICE_ACCOUNT.0.to_owned(),
            identity: identity.to_owned(),
            lease_duration: std::time::Duration::from_secs(3),
            retry_interval: std::time::Duration::from_millis(500),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Serves an executor that uses `client` (whatever its rights) on a loopback port, over mTLS with fresh
/// certificates, configured by the chart's own flags.
pub async fn serve_executor(client: Client, config: ExecutorConfig) -> anyhow::Result<RunningExecutor> {
    serve_executor_with(client, config, &[], None).await
}

/// [`serve_executor`] with more executor flags, e.g. `--max-connection-age=1s`.
pub async fn serve_executor_with_flags(
    client: Client,
    config: ExecutorConfig,
    flags: &[&str],
) -> anyhow::Result<RunningExecutor> {
    serve_executor_with(client, config, flags, None).await
}

async fn serve_executor_with(
    client: Client,
    config: ExecutorConfig,
    flags: &[&str],
    reconcile: Option<ReconcileConfig>,
) -> anyhow::Result<RunningExecutor> {
    konnector_runtime::tls::install_crypto_provider();
    let dir = tempfile::Builder::new()
        .prefix("konnector-executor-pki-")
        .tempdir()?;
    let pki = MtlsPki::create(dir.path())?;
    let server = pki.server_dir();
    let args = konnector_executor::args::Args::try_parse_from(
        [
            "konnector-executor".to_owned(),
            "--listen=127.0.0.1:0".to_owned(),
            format!("--tls-cert={}", server.join("tls.crt").display()),
            format!("--tls-key={}", server.join("tls.key").display()),
            format!("--client-ca={}", server.join("ca.crt").display()),
            format!("--cert-reload-interval={CERT_RELOAD_SECONDS}s"),
        ]
        .into_iter()
        .chain(flags.iter().map(|f| (*f).to_owned())),
    )?;
    let options = args.server_options()?;
    let connections_accepted = options.connections_accepted.clone();
    let listener = tokio::net::TcpListener::bind(args.listen_addr()).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let executor = Executor::new(client, config);
    let metrics = executor.metrics().clone();
    let reconciler = reconcile.map(|r| {
        tokio::spawn(konnector_executor::reconcile::run(
            executor.clone(),
            r,
            shutdown.clone(),
        ))
    });
    let task = tokio::spawn(konnector_executor::serve(
        executor,
        listener,
        options,
        shutdown.clone(),
    ));
    Ok(RunningExecutor {
        addr,
        metrics,
        pki,
        connections_accepted,
        shutdown,
        task: Some(task),
        reconciler,
        _dir: dir,
    })
}

/// The Prism Central URL the fixtures use.
pub const TEST_PC_URL: &str = "https://pc.example.com:9440";

/// The `clusterConfig` of a Cluster with the addon configured: credentials Secret `secret`, Prism Central at
/// [`TEST_PC_URL`] (insecure, no bundle).
pub fn addon_cluster_config(secret: &str) -> serde_json::Value {
    serde_json::json!({
        "addons": {"konnectorAgent": {"credentials": {"secretRef": {"name": secret}}}},
        "nutanix": {"prismCentralEndpoint": {"url": TEST_PC_URL, "insecure": true}}
    })
}

/// The request's reference to `cluster`, with its uid.
pub fn cluster_ref(cluster: &WorkloadCluster) -> ClusterRef {
    ClusterRef {
        namespace: cluster.namespace.clone(),
        name: cluster.name.clone(),
        uid: cluster.uid.clone(),
        resource_version: String::new(),
    }
}

/// Namespace of the Cluster in [`executor_env`].
pub const TEST_NAMESPACE: &str = "clusters";
/// Name of the Cluster in [`executor_env`].
pub const TEST_CLUSTER: &str = "c1";
/// Name of the credentials Secret in [`executor_env`].
pub const TEST_CREDENTIALS_SECRET: &str = "c1-pc-creds-for-konnector-agent";
/// The password in that Secret: distinctive, so tests can assert it never leaks.
pub const TEST_PASSWORD: &str = "s3cr3t-PA55-konnector";

/// A management plane, one workload plane, one Cluster with its credentials Secret, and an executor under RBAC.
pub struct ExecutorEnv {
    /// The management control plane.
    pub mgmt: ControlPlane,
    /// A cluster-admin client on it, for test setup and assertions.
    pub admin: Client,
    /// The workload control plane.
    pub workload: ControlPlane,
    /// The Cluster `clusters/c1`.
    pub cluster: WorkloadCluster,
    /// The executor.
    pub executor: RunningExecutor,
}

impl ExecutorEnv {
    /// The request's reference to the Cluster.
    pub fn cluster_ref(&self) -> ClusterRef {
        cluster_ref(&self.cluster)
    }

    /// The request's reference to the Cluster without its uid, which a request may leave out.
    pub fn cluster_ref_without_uid(&self) -> ClusterRef {
        ClusterRef {
            uid: String::new(),
            ..self.cluster_ref()
        }
    }

    /// Replaces the live Cluster's `clusterConfig`: the only place the executor takes it from.
    pub async fn set_cluster_config(&self, cluster_config: serde_json::Value) -> anyhow::Result<()> {
        crate::workload::set_cluster_config(&self.admin, TEST_NAMESPACE, TEST_CLUSTER, cluster_config).await
    }

    /// Starts the Cluster's deletion as CAPI does (it stays, with a deletionTimestamp).
    pub async fn start_deletion(&self) -> anyhow::Result<()> {
        crate::workload::start_cluster_deletion(&self.admin, TEST_NAMESPACE, TEST_CLUSTER).await
    }
}

/// Starts an [`ExecutorEnv`]: `options` shape the Cluster (use [`ClusterOptions::initialized`] for the state in
/// which CAPI calls the hooks). Unless `options` say otherwise, the Cluster configures the addon with
/// [`addon_cluster_config`] for [`TEST_CREDENTIALS_SECRET`].
///
/// [`ClusterOptions::initialized`]: crate::workload::ClusterOptions::initialized
pub async fn executor_env(
    name: &str,
    config: ExecutorConfig,
    mut options: crate::workload::ClusterOptions,
) -> anyhow::Result<ExecutorEnv> {
    if options.cluster_config.is_none() {
        options.cluster_config = Some(addon_cluster_config(TEST_CREDENTIALS_SECRET));
    }
    let (mgmt_name, workload_name) = (format!("{name}-mgmt"), format!("{name}-wl"));
    let ((mgmt, admin), workload) = tokio::try_join!(
        crate::management_plane(&mgmt_name),
        ControlPlane::start(&workload_name),
    )?;
    let cluster =
        crate::workload::create_workload_cluster(&admin, &workload, TEST_NAMESPACE, TEST_CLUSTER, options)
            .await?;
    crate::workload::put_credentials_secret(
        &admin,
        TEST_NAMESPACE,
        TEST_CREDENTIALS_SECRET,
        &[("username", "admin"), ("password", TEST_PASSWORD)],
    )
    .await?;
    let executor = start_executor(&mgmt, config).await?;
    Ok(ExecutorEnv {
        mgmt,
        admin,
        workload,
        cluster,
        executor,
    })
}

/// The Events (events.k8s.io/v1) recorded about the Cluster `namespace/name`, oldest first.
pub async fn cluster_events(admin: &Client, namespace: &str, name: &str) -> anyhow::Result<Vec<Event>> {
    let mut events: Vec<Event> = Api::<Event>::namespaced(admin.clone(), namespace)
        .list(&Default::default())
        .await
        .context("cannot list Events")?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Cluster") && r.name.as_deref() == Some(name))
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    Ok(events)
}

/// The reasons of [`cluster_events`].
pub async fn cluster_event_reasons(
    admin: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(cluster_events(admin, namespace, name)
        .await?
        .into_iter()
        .filter_map(|e| e.reason)
        .collect())
}
