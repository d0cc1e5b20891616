//! Who may call what: the client's identity is decided once, when its TLS handshake completes (from the DNS
//! subjectAltNames of its certificate), carried to every request of the connection as tonic's connect info, and
//! enforced by one tower layer in front of every service.
//!
//! Two allow-lists: `--client-allowed-names` (the gateway: every RPC) and `--client-read-only-names` (the
//! `konnector` CLI: the read RPCs only). A read-only client is refused, with `PERMISSION_DENIED`, every RPC that
//! is not listed in [`READ_ONLY_METHODS`], including any added later: the list names what may be called, not what
//! may not.

use std::{
    net::SocketAddr,
    task::{Context, Poll},
};

use futures::future::{Either, Ready, ready};
use tonic::transport::server::TcpConnectInfo;

use crate::{error::Error, observe::ExecutorMetrics};

/// The gRPC methods (`/package.Service/Method`) a read-only client may call: the status and the dry run of
/// AgentService (PlanAgent reads and renders; the Secret it answers is redacted by the executor), the health
/// check, and server reflection. Everything else is refused to it.
pub const READ_ONLY_METHODS: &[&str] = &[
    "/konnector.executor.v1.AgentService/GetAgentStatus",
    "/konnector.executor.v1.AgentService/PlanAgent",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// What a connection may do, decided at its TLS handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every RPC: the gateway's identity, a certificate when no allow-list is set, or a server that does not
    /// authenticate clients (plaintext on loopback, or TLS without --client-ca).
    Full,
    /// Only [`READ_ONLY_METHODS`]; the name is the allow-listed subjectAltName the certificate carries (one of the
    /// configured names, so it is safe to log and answer).
    ReadOnly(String),
}

/// The two allow-lists, normalised (trimmed, lower case, empty entries dropped).
#[derive(Clone, Debug, Default)]
pub struct ClientNames {
    full: Vec<String>,
    read_only: Vec<String>,
}

impl ClientNames {
    /// The lists from the flags. A name on both lists is refused: it would be unclear which access it grants.
    pub fn new(full: &[String], read_only: &[String]) -> anyhow::Result<Self> {
        let normal = |names: &[String]| -> Vec<String> {
            names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect()
        };
        let (full, read_only) = (normal(full), normal(read_only));
        if let Some(both) = read_only.iter().find(|n| full.contains(n)) {
            anyhow::bail!(
                "{both:?} is in both --client-allowed-names and --client-read-only-names; a client identity is \
                 either full or read-only"
            );
        }
        Ok(Self { full, read_only })
    }

    /// The access of a client whose verified certificate carries `dns_names`; `None`: refused at the handshake.
    /// A full name wins over a read-only one; an empty full list admits every other certificate with full access
    /// (as before read-only names existed), but still keeps a read-only name read-only.
    pub fn access(&self, dns_names: &[String]) -> Option<Access> {
        let carries = |list: &[String]| {
            dns_names
                .iter()
                .find(|n| list.iter().any(|a| a.eq_ignore_ascii_case(n)))
                .map(|n| n.to_ascii_lowercase())
        };
        if carries(&self.full).is_some() {
            return Some(Access::Full);
        }
        if let Some(name) = carries(&self.read_only) {
            return Some(Access::ReadOnly(name));
        }
        self.full.is_empty().then_some(Access::Full)
    }
}

/// The connect info of every served connection (tonic puts it into each request's extensions): its peer and its
/// access.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The TCP peer.
    pub tcp: TcpConnectInfo,
    /// What it may call.
    pub access: Access,
}

impl Peer {
    fn addr(&self) -> Option<SocketAddr> {
        self.tcp.remote_addr()
    }
}

/// The layer that enforces [`Access`] on every request, in front of every service.
#[derive(Clone, Debug)]
pub struct AccessLayer {
    metrics: ExecutorMetrics,
}

impl AccessLayer {
    /// Refusals are counted in `metrics` (`rpc_requests{code="PERMISSION_DENIED"}`).
    pub fn new(metrics: ExecutorMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessGuard {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Clone, Debug)]
pub struct AccessGuard<S> {
    inner: S,
    metrics: ExecutorMetrics,
}

/// The method label of a refused path: AgentService's own method names, `other` for anything else (the path is
/// the client's choice, so it never becomes a label as sent).
fn method_label(path: &str) -> &'static str {
    match path.strip_prefix("/konnector.executor.v1.AgentService/") {
        Some("ApplyAgent") => "ApplyAgent",
        Some("RemoveAgent") => "RemoveAgent",
        Some("GetAgentStatus") => "GetAgentStatus",
        Some("PlanAgent") => "PlanAgent",
        _ => "other",
    }
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for AccessGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        // No connect info cannot happen through `serve`; were it to, nothing is known of the caller, so nothing
        // but the read RPCs is served (fail closed).
        let peer = request.extensions().get::<Peer>();
        let identity = match peer.map(|p| &p.access) {
            Some(Access::Full) => return Either::Right(self.inner.call(request)),
            Some(Access::ReadOnly(name)) => name.clone(),
            None => "unknown".to_owned(),
        };
        if READ_ONLY_METHODS.contains(&path) {
            return Either::Right(self.inner.call(request));
        }
        let method = method_label(path);
        self.metrics.rpc(method, "PERMISSION_DENIED");
        tracing::warn!(
            peer = ?peer.and_then(Peer::addr),
            client = %identity,
            method,
            "a read-only client called a method it may not; refused"
        );
        let status: tonic::Status = Error::ReadOnlyClient {
            identity,
            method: method.to_owned(),
        }
        .into();
        Either::Left(ready(Ok(status.into_http())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_certificate_gets_the_access_of_the_list_naming_it() {
        let lists =
            ClientNames::new(&names(&["konnector-gateway"]), &names(&[" Konnector-CLI ", ""])).unwrap();
        assert_eq!(lists.access(&names(&["konnector-gateway"])), Some(Access::Full));
        assert_eq!(
            lists.access(&names(&["x", "KONNECTOR-cli"])),
            Some(Access::ReadOnly("konnector-cli".into()))
        );
        // Both names: the full one wins (it is the stronger, explicitly granted identity).
        assert_eq!(
            lists.access(&names(&["konnector-cli", "konnector-gateway"])),
            Some(Access::Full)
        );
        assert_eq!(lists.access(&names(&["konnector-intruder"])), None);
        assert_eq!(lists.access(&[]), None);
        assert_eq!(lists.access(&names(&["konnector-cli.evil"])), None);
    }

    #[test]
    fn without_a_full_list_every_certificate_is_full_but_a_read_only_name_stays_read_only() {
        let lists = ClientNames::new(&[], &names(&["konnector-cli"])).unwrap();
        assert_eq!(lists.access(&names(&["anything"])), Some(Access::Full));
        assert_eq!(
            lists.access(&names(&["konnector-cli"])),
            Some(Access::ReadOnly("konnector-cli".into()))
        );
    }

    #[test]
    fn a_name_on_both_lists_is_refused() {
        let error = ClientNames::new(&names(&["a", "b"]), &names(&["B"])).unwrap_err();
        assert!(error.to_string().contains("both"), "{error}");
    }

    /// A service that serves everything it is handed.
    #[derive(Clone)]
    struct Serves;

    impl tower::Service<http::Request<()>> for Serves {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            ready(Ok(http::Response::new("served".to_owned())))
        }
    }

    /// The gRPC status code the guard answers for `path` from `access` (`None`: no connect info), 0 if served.
    async fn answer(access: Option<Access>, path: &str) -> String {
        use tower::{Layer, Service};
        let mut guard = AccessLayer::new(ExecutorMetrics::default()).layer(Serves);
        let mut request = http::Request::post(path).body(()).unwrap();
        if let Some(access) = access {
            request.extensions_mut().insert(Peer {
                tcp: TcpConnectInfo {
                    local_addr: None,
                    remote_addr: None,
                },
                access,
            });
        }
        let response = guard.call(request).await.unwrap();
        if response.body() == "served" {
            return "0".to_owned();
        }
        response.headers()["grpc-status"].to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_read_only_client_is_served_the_listed_methods_and_nothing_else() {
        let read_only = || Some(Access::ReadOnly("konnector-cli".into()));
        for path in READ_ONLY_METHODS {
            assert_eq!(answer(read_only(), path).await, "0", "{path}");
        }
        // 7 is PERMISSION_DENIED: the writes, and any method not listed, including one added later.
        for path in [
            "/konnector.executor.v1.AgentService/ApplyAgent",
            "/konnector.executor.v1.AgentService/RemoveAgent",
            "/konnector.executor.v1.AgentService/DeleteEverything",
            "/konnector.executor.v1.AgentService/GetAgentStatus/",
            "/grpc.health.v1.Health/Other",
            "/",
        ] {
            assert_eq!(answer(read_only(), path).await, "7", "{path}");
        }
        // The gateway's identity is served everything (an unknown method then meets tonic's UNIMPLEMENTED).
        for path in ["/konnector.executor.v1.AgentService/ApplyAgent", "/x.Y/Z"] {
            assert_eq!(answer(Some(Access::Full), path).await, "0", "{path}");
        }
        // Without connect info nothing is known of the caller: it is treated as read-only (fail closed).
        assert_eq!(
            answer(None, "/konnector.executor.v1.AgentService/ApplyAgent").await,
            "7"
        );
        assert_eq!(answer(None, READ_ONLY_METHODS[0]).await, "0");
    }

    #[test]
    fn only_agent_service_methods_become_labels() {
        assert_eq!(
            method_label("/konnector.executor.v1.AgentService/ApplyAgent"),
            "ApplyAgent"
        );
        assert_eq!(
            method_label("/konnector.executor.v1.AgentService/Nope\n"),
            "other"
        );
        assert_eq!(method_label("/x.y/ApplyAgent"), "other");
    }
}
