//! Workload cluster clients: built from the Cluster's CAPI kubeconfig Secret, and from nothing else.
//!
//! Anyone who can write `<cluster>-kubeconfig` in a Cluster's namespace chooses what the executor connects to and
//! with what. A kubeconfig can make a client read local files (`tokenFile`, `client-certificate`,
//! `certificate-authority`), run programs (`exec`, `auth-provider`), go through a proxy, skip verification or
//! speak plain HTTP, and the executor's own ServiceAccount token is one of the files it could be told to send. So
//! the executor builds its client from a new kubeconfig holding only inline data it has checked: an `https://`
//! server, inline CA data, and an inline token or client certificate and key. Anything else is refused by name
//! before a single byte is sent.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    config::{
        AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
    },
};
use tracing::Instrument;

use crate::{
    config::ExecutorConfig,
    domain::ClusterKey,
    error::{Error, KubeFailure, Side},
    names::{KUBECONFIG_KEY, kubeconfig_secret_name},
    observe::{ExecutorMetrics, observed_client},
};

/// Workload clients by Cluster, with the resourceVersion of the kubeconfig Secret each was built from. Bounded:
/// at most `capacity` clients (the least recently used is dropped first), and a client unused for `idle` is
/// dropped, so memory follows the Clusters being worked on, not every Cluster ever seen.
pub(crate) struct RemoteClients {
    clients: Mutex<HashMap<ClusterKey, Cached>>,
    capacity: usize,
    idle: Duration,
}

struct Cached {
    version: String,
    client: Client,
    used: Instant,
}

impl RemoteClients {
    pub(crate) fn new(capacity: usize, idle: Duration) -> Self {
        Self {
            clients: Mutex::default(),
            capacity: capacity.max(1),
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterKey, Cached>> {
        // A panic while holding this lock cannot leave the map inconsistent, so poisoning is ignored.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &ClusterKey, version: &str) -> Option<Client> {
        let mut clients = self.lock();
        let cached = clients.get_mut(key).filter(|c| c.version == version)?;
        cached.used = Instant::now();
        Some(cached.client.clone())
    }

    /// The cached client of a Cluster, whatever kubeconfig version it was built from.
    fn any(&self, key: &ClusterKey) -> Option<Client> {
        let mut clients = self.lock();
        let cached = clients.get_mut(key)?;
        cached.used = Instant::now();
        Some(cached.client.clone())
    }

    /// Caches a client and returns how many are cached.
    fn insert(&self, key: &ClusterKey, version: String, client: Client) -> usize {
        let mut clients = self.lock();
        let now = Instant::now();
        clients.retain(|_, c| now.duration_since(c.used) < self.idle);
        clients.insert(
            key.clone(),
            Cached {
                version,
                client,
                used: now,
            },
        );
        while clients.len() > self.capacity {
            // Linear in the cache size, which is bounded; only runs when a new client is built.
            let Some(oldest) = clients.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| k.clone()) else {
                break;
            };
            clients.remove(&oldest);
        }
        clients.len()
    }

    /// Forgets the client of a Cluster, e.g. once its uninstall is over; returns how many are cached.
    pub(crate) fn forget(&self, key: &ClusterKey) -> usize {
        let mut clients = self.lock();
        clients.remove(key);
        clients.len()
    }
}

/// Checks a kubeconfig and rebuilds it from its checked inline parts only. The error names the field that is
/// refused or missing, never a value.
pub fn confined_kubeconfig(kubeconfig: &Kubeconfig) -> Result<Kubeconfig, String> {
    let context_name = kubeconfig
        .current_context
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or("it has no current-context")?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or("its current-context names no context")?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or("its current context names no cluster")?;
    let user_name = context
        .user
        .as_deref()
        .ok_or("its current context names no user")?;
    let user = kubeconfig
        .auth_infos
        .iter()
        .find(|u| u.name == user_name)
        .and_then(|u| u.auth_info.as_ref())
        .ok_or("its current context names no user")?;

    let refused = |field: &str| format!("its cluster or user sets {field}, which konnector refuses");
    let server = cluster.server.as_deref().ok_or("its cluster has no server")?;
    let uri: http::Uri = server
        .parse()
        .map_err(|_| "its cluster's server is not a URL".to_owned())?;
    if !uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https")) {
        return Err("its cluster's server is not an https:// URL, which konnector requires".to_owned());
    }
    if uri
        .authority()
        .is_none_or(|a| a.as_str().contains('@') || a.host().is_empty())
    {
        return Err("its cluster's server has no host, or carries user information".to_owned());
    }
    if cluster.insecure_skip_tls_verify == Some(true) {
        return Err(refused("insecure-skip-tls-verify"));
    }
    if cluster.certificate_authority.is_some() {
        return Err(refused("certificate-authority (a file path)"));
    }
    if cluster.proxy_url.is_some() {
        return Err(refused("proxy-url"));
    }
    let ca = cluster
        .certificate_authority_data
        .clone()
        .filter(|d| !d.is_empty())
        .ok_or("its cluster has no certificate-authority-data; konnector verifies the server with inline CA data only")?;

    for (set, field) in [
        (user.token_file.is_some(), "tokenFile"),
        (user.exec.is_some(), "exec"),
        (user.auth_provider.is_some(), "auth-provider"),
        (
            user.client_certificate.is_some(),
            "client-certificate (a file path)",
        ),
        (user.client_key.is_some(), "client-key (a file path)"),
        (
            user.username.is_some() || user.password.is_some(),
            "username/password",
        ),
        (
            user.impersonate.is_some() || user.impersonate_groups.is_some(),
            "as/as-groups (impersonation)",
        ),
    ] {
        if set {
            return Err(refused(field));
        }
    }
    let auth_info = match (&user.token, &user.client_certificate_data, &user.client_key_data) {
        (Some(token), None, None) => AuthInfo {
            token: Some(token.clone()),
            ..Default::default()
        },
        (None, Some(cert), Some(key)) => AuthInfo {
            client_certificate_data: Some(cert.clone()),
            client_key_data: Some(key.clone()),
            ..Default::default()
        },
        _ => {
            return Err(
                "its user must hold exactly one inline credential: token, or client-certificate-data with client-key-data"
                    .to_owned(),
            );
        }
    };
    const NAME: &str = "workload";
    Ok(Kubeconfig {
        clusters: vec![NamedCluster {
            name: NAME.to_owned(),
            cluster: Some(Cluster {
                server: Some(server.to_owned()),
                certificate_authority_data: Some(ca),
                tls_server_name: cluster.tls_server_name.clone(),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: NAME.to_owned(),
            auth_info: Some(auth_info),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: NAME.to_owned(),
            context: Some(Context {
                cluster: NAME.to_owned(),
                user: Some(NAME.to_owned()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some(NAME.to_owned()),
        ..Default::default()
    })
}

/// Workload cluster clients: built from each Cluster's kubeconfig Secret (read on the management cluster), bounded
/// by `timeout` per call and by the response limit, observed, and cached in [`RemoteClients`].
pub(crate) struct Workloads {
    mgmt: Client,
    clients: RemoteClients,
    timeout: Duration,
    response_limit: u64,
    metrics: ExecutorMetrics,
}

impl Workloads {
    pub(crate) fn new(mgmt: Client, config: &ExecutorConfig, metrics: ExecutorMetrics) -> Self {
        Self {
            mgmt,
            clients: RemoteClients::new(
                config.workload_client_cache_size,
                config.workload_client_idle_timeout,
            ),
            timeout: config.remote_timeout,
            response_limit: config.workload_response_limit_bytes,
            metrics,
        }
    }

    /// A client for the workload cluster, from its CAPI kubeconfig Secret; cached until the Secret changes.
    pub(crate) async fn client(&self, key: &ClusterKey) -> Result<Client, Error> {
        let secret_name = kubeconfig_secret_name(&key.name);
        let secret_ref = format!("{}/{secret_name}", key.namespace);
        let secret = Api::<Secret>::namespaced(self.mgmt.clone(), &key.namespace)
            .get(&secret_name)
            .instrument(tracing::debug_span!("read_kubeconfig_secret"))
            .await
            .map_err(|e| Error::ReadKubeconfig {
                secret: secret_ref.clone(),
                failure: KubeFailure::from_kube(&e),
            })?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if let Some(client) = self.clients.get(key, &version) {
            return Ok(client);
        }
        let unusable = |problem: &str| Error::ParseKubeconfig {
            secret: secret_ref.clone(),
            problem: problem.to_owned(),
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(KUBECONFIG_KEY))
            .ok_or_else(|| unusable("key \"value\" is missing"))?;
        let text = std::str::from_utf8(&bytes.0).map_err(|_| unusable("key \"value\" is not UTF-8 text"))?;
        let kubeconfig =
            Kubeconfig::from_yaml(text).map_err(|_| unusable("key \"value\" does not hold a kubeconfig"))?;
        let kubeconfig = confined_kubeconfig(&kubeconfig).map_err(|p| unusable(&p))?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|_| unusable("its inline CA data or credentials cannot be used"))?;
        let timeout = self.timeout;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        let client =
            Client::try_from(config).map_err(|_| unusable("no client can be built from its kubeconfig"))?;
        let client = observed_client(client, Side::Workload, &self.metrics, self.response_limit);
        let cached = self.clients.insert(key, version, client.clone());
        self.metrics.remote_clients(cached);
        Ok(client)
    }

    /// The cached workload client without re-reading the kubeconfig Secret, else [`Self::client`]. For the
    /// reconciler's read-only periodic check: a client whose kubeconfig has since changed fails, and the full pass
    /// that failure triggers reads the Secret again.
    pub(crate) async fn cached_client(&self, key: &ClusterKey) -> Result<Client, Error> {
        match self.clients.any(key) {
            Some(client) => Ok(client),
            None => self.client(key).await,
        }
    }

    /// Drops the cached client of a Cluster whose agent is gone.
    pub(crate) fn forget(&self, key: &ClusterKey) {
        let cached = self.clients.forget(key);
        self.metrics.remote_clients(cached);
    }
}

/// Runs one workload-cluster call with a bound, mapping every failure to an [`Error::Kube`].
pub(crate) async fn on_workload<T>(
    timeout: Duration,
    action: String,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    let span = tracing::debug_span!("workload_call", action = %action);
    match tokio::time::timeout(timeout, call).instrument(span).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::kube(action, Side::Workload, &e)),
        Err(_) => Err(Error::Kube {
            action,
            side: Side::Workload,
            failure: KubeFailure::Unreachable,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_TOKEN: &str = "apiVersion: v1
kind: Config
current-context: ctx
contexts:
- name: ctx
  context: {cluster: c, user: u}
clusters:
- name: c
  cluster: {server: 'https://10.0.0.1:6443', certificate-authority-data: Q0E=}
users:
- name: u
  user: {token: abc}
";

    fn check(yaml: &str) -> Result<Kubeconfig, String> {
        confined_kubeconfig(&Kubeconfig::from_yaml(yaml).unwrap())
    }

    fn client() -> Client {
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn the_client_cache_is_bounded_by_size_and_idleness() {
        let key = |n: &str| ClusterKey::new("ns", n).unwrap();
        let cache = RemoteClients::new(2, Duration::from_secs(600));
        assert_eq!(cache.insert(&key("a"), "1".into(), client()), 1);
        assert_eq!(cache.insert(&key("b"), "1".into(), client()), 2);
        // Touch "a", so "b" is the least recently used when "c" arrives.
        assert!(cache.get(&key("a"), "1").is_some());
        assert_eq!(cache.insert(&key("c"), "1".into(), client()), 2);
        assert!(cache.get(&key("b"), "1").is_none());
        assert!(cache.get(&key("a"), "1").is_some() && cache.get(&key("c"), "1").is_some());
        // Another kubeconfig Secret version is a miss.
        assert!(cache.get(&key("a"), "2").is_none());
        assert_eq!(cache.forget(&key("a")), 1);

        let idle = RemoteClients::new(10, Duration::ZERO);
        idle.insert(&key("a"), "1".into(), client());
        // Everything idle is dropped when the next client is built.
        assert_eq!(idle.insert(&key("b"), "1".into(), client()), 1);
    }

    #[test]
    fn inline_token_and_client_certificate_are_accepted() {
        let k = check(GOOD_TOKEN).unwrap();
        assert_eq!(k.clusters.len(), 1);
        assert!(k.auth_infos[0].auth_info.as_ref().unwrap().token.is_some());
        let cert = GOOD_TOKEN.replace(
            "{token: abc}",
            "{client-certificate-data: Q0VSVA==, client-key-data: S0VZ}",
        );
        let k = check(&cert).unwrap();
        let user = k.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.client_certificate_data.is_some() && user.client_key_data.is_some());
    }

    #[test]
    fn every_indirection_is_refused_by_name() {
        let sa = "/var/run/secrets/kubernetes.io/serviceaccount/token";
        let cases = [
            (
                GOOD_TOKEN.replace("{token: abc}", &format!("{{tokenFile: {sa}}}")),
                "tokenFile",
            ),
            (
                GOOD_TOKEN.replace("{token: abc}", "{token: abc, tokenFile: /x}"),
                "tokenFile",
            ),
            (
                GOOD_TOKEN.replace(
                    "{token: abc}",
                    "{exec: {command: /bin/sh, apiVersion: client.authentication.k8s.io/v1}}",
                ),
                "exec",
            ),
            (
                GOOD_TOKEN.replace("{token: abc}", "{auth-provider: {name: gcp}}"),
                "auth-provider",
            ),
            (
                GOOD_TOKEN.replace(
                    "{token: abc}",
                    "{client-certificate: /etc/x.crt, client-key-data: S0VZ}",
                ),
                "client-certificate",
            ),
            (
                GOOD_TOKEN.replace(
                    "{token: abc}",
                    "{client-certificate-data: Q0VSVA==, client-key: /etc/x.key}",
                ),
                "client-key",
            ),
            (
                GOOD_TOKEN.replace("{token: abc}", "{username: a, password: b}"),
                "username/password",
            ),
            (
                GOOD_TOKEN.replace("{token: abc}", "{token: abc, as: admin}"),
                "impersonation",
            ),
            (
                GOOD_TOKEN.replace(
                    "certificate-authority-data: Q0E=",
                    "certificate-authority: /etc/ca.crt",
                ),
                "certificate-authority",
            ),
            (
                GOOD_TOKEN.replace(
                    "certificate-authority-data: Q0E=",
                    "certificate-authority-data: Q0E=, proxy-url: 'http://attacker:3128'",
                ),
                "proxy-url",
            ),
            (
                GOOD_TOKEN.replace(
                    "certificate-authority-data: Q0E=",
                    "certificate-authority-data: Q0E=, insecure-skip-tls-verify: true",
                ),
                "insecure-skip-tls-verify",
            ),
            (
                GOOD_TOKEN.replace("https://10.0.0.1:6443", "http://10.0.0.1:6443"),
                "https://",
            ),
            (
                GOOD_TOKEN.replace(", certificate-authority-data: Q0E=", ""),
                "certificate-authority-data",
            ),
            (
                GOOD_TOKEN.replace("{token: abc}", "{}"),
                "exactly one inline credential",
            ),
            (
                GOOD_TOKEN.replace("current-context: ctx", "current-context: other"),
                "current-context",
            ),
        ];
        for (yaml, field) in cases {
            let err = check(&yaml).unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
            assert!(
                !err.contains(sa) && !err.contains("attacker") && !err.contains("abc"),
                "{err}"
            );
        }
    }
}
