//! What both sandboxes (CAPI's own manager, [`crate::sandbox_real`], and the CAPI stand-in, [`crate::sandbox`])
//! print with `--keep`: the commands that work against the kept cluster, and the pieces they are made of (the
//! CLI's identity, the admin servers whose `/metrics` the commands read, shell quoting).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use konnector_runtime::admin;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::executor_fixture::RunningExecutor;

/// The subjectAltName of the CLI's client certificate, as the chart issues it (release `konnector`); the
/// sandbox's executor serves it read-only, as the chart's does.
pub const CLI_IDENTITY: &str = "konnector-cli";
/// The Runtime SDK's path prefix for hooks.
pub const HOOKS_PATH: &str = "hooks.runtime.cluster.x-k8s.io/v1alpha1";

/// One command the sandbox prints for a person to try, and what it shows.
#[derive(Clone, Debug, Serialize)]
pub struct TryCommand {
    /// What the command shows, one line.
    pub what: String,
    /// The command, for bash, with every address and path filled in.
    pub command: String,
}

impl TryCommand {
    /// A command and what it shows.
    pub fn new(what: impl Into<String>, command: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            command: command.into(),
        }
    }
}

/// What the konnector-side commands need to know about the kept cluster and how konnector is reached.
pub struct KonnectorCommands<'a> {
    /// The kept Cluster's namespace and name.
    pub namespace: &'a str,
    /// See [`KonnectorCommands::namespace`].
    pub name: &'a str,
    /// grpcurl's mTLS flags and the executor's address.
    pub grpcurl_flags: &'a str,
    /// See [`KonnectorCommands::grpcurl_flags`].
    pub executor_address: &'a str,
    /// The CLI's connection flags (its own read-only certificate).
    pub cli_flags: &'a str,
    /// `--kubeconfig` for doctor, so its CAPI-side checks read the management cluster.
    pub doctor_kubeconfig: Option<&'a Path>,
    /// `/metrics` by name (`executor`, `gateway-1`).
    pub metrics_urls: &'a std::collections::BTreeMap<String, String>,
    /// The gateway's base URL, and the CA file that verifies it.
    pub gateway_url: &'a str,
    /// See [`KonnectorCommands::gateway_url`].
    pub gateway_ca_file: &'a Path,
    /// A BeforeClusterUpgrade body for the kept cluster, already written to this file.
    pub upgrade_body: &'a [u8],
    /// See [`KonnectorCommands::upgrade_body`].
    pub upgrade_body_file: &'a Path,
    /// The hook path and query to POST it to, e.g. `beforeclusterupgrade/konnector-bcu?timeout=20s`.
    pub upgrade_call: &'a str,
    /// What the upgrade body is, for its command's description.
    pub upgrade_body_is: &'a str,
}

impl KonnectorCommands<'_> {
    /// grpcurl on the executor, the konnector CLI, `/metrics`, Discovery and the upgrade hook.
    pub fn commands(&self) -> anyhow::Result<Vec<TryCommand>> {
        let (ns, name) = (self.namespace, self.name);
        let ca = shell_quote(&self.gateway_ca_file.display().to_string());
        let gateway = self.gateway_url;
        let ref_request = json!({"cluster": {"namespace": ns, "name": name}});
        let doctor_kubeconfig = self
            .doctor_kubeconfig
            .map(|k| format!(" --kubeconfig={}", shell_quote(&k.display().to_string())))
            .unwrap_or_default();
        Ok(vec![
            TryCommand::new(
                "the executor's gRPC services (reflection)",
                format!("grpcurl {} {} list", self.grpcurl_flags, self.executor_address),
            ),
            TryCommand::new(
                format!(
                    "what konnector sees for {name}: credentials, HelmChartProxy, releases, uninstall phase"
                ),
                grpcurl_command(
                    self.grpcurl_flags,
                    self.executor_address,
                    "GetAgentStatus",
                    &ref_request,
                ),
            ),
            TryCommand::new(
                format!("a dry run: the objects ApplyAgent would write for {name}, secret values redacted"),
                grpcurl_command(
                    self.grpcurl_flags,
                    self.executor_address,
                    "PlanAgent",
                    &plan_agent_request(self.upgrade_body)?,
                ),
            ),
            TryCommand::new(
                "the same through the konnector CLI, with its own read-only client certificate (status, plan and \
                 health only; the executor refuses it ApplyAgent and RemoveAgent)",
                format!("{} status {ns}/{name} {}", cli_program(), self.cli_flags),
            ),
            TryCommand::new(
                if doctor_kubeconfig.is_empty() {
                    format!("the CLI's checks for {name}, each ok, warn, fail or skip with a next step")
                } else {
                    format!(
                        "the CLI's checks for {name}, each ok, warn, fail or skip with a next step; with the \
                         management kubeconfig it also reads the CAPI side (ExtensionConfig discovered, caBundle)"
                    )
                },
                format!(
                    "{} doctor {ns}/{name} {}{doctor_kubeconfig}",
                    cli_program(),
                    self.cli_flags
                ),
            ),
            TryCommand::new(
                "the executor's metrics, as its admin port serves them: RPCs by method and gRPC code",
                format!(
                    "curl -sS {} | grep '^konnector_executor_rpc_requests_total'",
                    self.metrics_urls["executor"]
                ),
            ),
            TryCommand::new(
                "gateway-1's metrics: hook calls by hook and status",
                format!(
                    "curl -sS {} | grep '^konnector_gateway_hook_requests_total'",
                    self.metrics_urls["gateway-1"]
                ),
            ),
            TryCommand::new(
                "Discovery, as CAPI calls it",
                format!(
                    "curl -sS --cacert {ca} -X POST {gateway}/{HOOKS_PATH}/discovery -d {}",
                    shell_quote(
                        r#"{"apiVersion":"hooks.runtime.cluster.x-k8s.io/v1alpha1","kind":"DiscoveryRequest"}"#
                    )
                ),
            ),
            TryCommand::new(
                format!(
                    "BeforeClusterUpgrade for {name}, {} (re-applies; nothing changes)",
                    self.upgrade_body_is
                ),
                format!(
                    "curl -sS --cacert {ca} -X POST {} --data-binary @{}",
                    shell_quote(&format!("{gateway}/{HOOKS_PATH}/{}", self.upgrade_call)),
                    shell_quote(&self.upgrade_body_file.display().to_string())
                ),
            ),
        ])
    }
}

/// Writes `commands` to `dir/try.sh`, each under its description.
pub fn write_try_script(dir: &Path, commands: &[TryCommand]) -> anyhow::Result<()> {
    let script: String = std::iter::once("#!/usr/bin/env bash\nset -euo pipefail\n".to_owned())
        .chain(
            commands
                .iter()
                .map(|c| format!("\n# {}\n{}\n", c.what, c.command)),
        )
        .collect();
    std::fs::write(dir.join("try.sh"), script)?;
    Ok(())
}

/// Serves the admin endpoints (`/livez`, `/readyz`, `/metrics`) of `router` on a free loopback port until `stop`.
pub async fn serve_admin(router: axum::Router, stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(admin::serve_on(listener, router, stop));
    Ok(addr)
}

/// The admin servers the binaries would serve, so `/metrics` can be read as from a deployed one: the executor's
/// and each gateway's, by name.
pub async fn serve_admins(
    executor: &RunningExecutor,
    gateways: &[(String, &crate::gateway_fixture::RunningGateway)],
    stop: &CancellationToken,
) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let ready = admin::Readiness::default();
    ready.set(true);
    let mut admins = vec![(
        "executor".to_owned(),
        serve_admin(
            admin::router(ready, executor.metrics.registry().router()),
            stop.clone(),
        )
        .await?,
    )];
    for (name, gateway) in gateways {
        let router = admin::router(gateway.readiness.clone(), gateway.metrics.router());
        admins.push((name.clone(), serve_admin(router, stop.clone()).await?));
    }
    Ok(admins)
}

/// The CLI's own client certificate, as the chart's Secret `<release>-cli` holds it (`tls.crt`, `tls.key`, and
/// `ca.crt`, the CA the executor's certificate chains to), written to `dir`.
pub fn write_cli_identity(executor: &RunningExecutor, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pair = executor
        .pki
        .client_pair_with_names(CLI_IDENTITY, &[CLI_IDENTITY])?;
    std::fs::write(dir.join("tls.crt"), pair.cert_pem)?;
    std::fs::write(dir.join("tls.key"), pair.key_pem)?;
    std::fs::copy(executor.pki.client_dir().join("ca.crt"), dir.join("ca.crt"))?;
    Ok(())
}

/// The CLI's connection flags with the identity [`write_cli_identity`] wrote to `dir`.
pub fn cli_flags(executor_url: &str, dir: &Path) -> String {
    let file = |f: &str| shell_quote(&dir.join(f).display().to_string());
    format!(
        "--executor-url={executor_url} --ca={} --cert={} --key={}",
        file("ca.crt"),
        file("tls.crt"),
        file("tls.key")
    )
}

/// The `konnector` CLI as the person reading the output would run it: the binary built beside this one
/// (`cargo build -p konnector-cli`; hack/sandbox.sh builds it with --keep), relative to the current directory when
/// it is under it.
pub fn cli_program() -> String {
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("konnector")))
        .unwrap_or_else(|| PathBuf::from("konnector"));
    let here = std::env::current_dir().ok();
    let shown = here
        .and_then(|d| path.strip_prefix(d).ok().map(Path::to_path_buf))
        .unwrap_or(path);
    shell_quote(&shown.display().to_string())
}

/// A grpcurl call of `konnector.executor.v1.AgentService/<method>` with `request`, over the executor's mTLS
/// (`tls_flags`, from the executor fixture: the one place that knows how it is reached).
fn grpcurl_command(tls_flags: &str, address: &str, method: &str, request: &Value) -> String {
    format!(
        "grpcurl {tls_flags} -d {} {address} konnector.executor.v1.AgentService/{method}",
        shell_quote(&request.to_string())
    )
}

/// PlanAgent's request for the Cluster in a hook body: the `ClusterRef` the gateway sends (namespace, name, uid),
/// made by the gateway's own translation, in protobuf's JSON mapping (what grpcurl reads).
fn plan_agent_request(hook_body: &[u8]) -> anyhow::Result<Value> {
    let request =
        konnector_gateway::decode::decode(konnector_gateway::catalog::Hook::BeforeClusterUpgrade, hook_body)
            .map_err(anyhow::Error::msg)?;
    let cluster = request.cluster.as_ref().context("the hook body has no cluster")?;
    let c = konnector_gateway::translate::cluster_ref(cluster)?;
    Ok(json!({"cluster": {"namespace": c.namespace, "name": c.name, "uid": c.uid}}))
}

/// `s` as one bash word.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@,+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
