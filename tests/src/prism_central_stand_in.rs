//! A **stand-in for Prism Central**, not Prism Central: a small HTTPS server on loopback that answers the two reads
//! konnector makes, with behaviour a test chooses.
//!
//! - `GET /api/nutanix/v3/users/me`: 200 with a small user object when the request carries the stand-in's basic-auth
//!   credentials, 401 otherwise (the preflight's authenticated read).
//! - `GET /karbon/v1-alpha.1/k8s/cluster-registrations/<uuid>`: 200 when `<uuid>` was [registered], 404 when not,
//!   401 without the credentials.
//!
//! [`Behaviour`] makes it slow, answer a fixed status, redirect elsewhere, or hold connections unanswered (a
//! blackhole, the fault injector of the shared-check tests); its certificate is signed by its own
//! CA, so a bundle of another CA makes it "untrusted" (or, [`PrismCentralStandIn::start_self_signed`], it is
//! self-signed, as appliances often are). It records what it was asked (path, whether credentials came with the
//! request), never the credentials themselves, and how many TLS handshakes clients abandoned.
//!
//! [registered]: PrismCentralStandIn::register

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use base64::Engine;
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_util::sync::CancellationToken;

use crate::pki::{ServingCert, TestCa};

/// The preflight's authenticated read.
pub const USERS_ME_PATH: &str = "/api/nutanix/v3/users/me";
/// The registration lookup, followed by the cluster's UUID.
pub const REGISTRATIONS_PATH: &str = "/karbon/v1-alpha.1/k8s/cluster-registrations/";

/// How the stand-in answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// As Prism Central does for the two reads.
    #[default]
    Normal,
    /// Completes TCP and TLS, then waits this long before answering normally.
    Slow(Duration),
    /// Answers every request with this HTTP status and an HTML body, as a server that is not Prism Central.
    Status(u16),
    /// Answers every request with `302 Found` to this URL.
    RedirectTo(String),
    /// A fault injector: accepts the TCP connection and then never says anything (no TLS, no answer), holding
    /// the connection open until [`PrismCentralStandIn::release`], as a black-holing firewall or a hung Prism
    /// Central does.
    Blackhole,
}

/// What the stand-in was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    /// The request's path.
    pub path: String,
    /// Whether it carried an `Authorization` or `X-ntnx-api-key` header.
    pub carried_credentials: bool,
    /// Whether those were the stand-in's credentials.
    pub authenticated: bool,
}

/// Which credentials the stand-in accepts.
enum Accept {
    /// Exactly this `Authorization` header value.
    Exactly(String),
    /// Basic auth for this username, with any non-empty password (the sandbox rotates random passwords).
    AnyPasswordFor(String),
}

impl Accept {
    fn accepts(&self, header: &[u8]) -> bool {
        match self {
            Self::Exactly(h) => header == h.as_bytes(),
            Self::AnyPasswordFor(user) => header
                .strip_prefix(b"Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|pair| pair.split_once(':').map(|(u, p)| u == user && !p.is_empty()))
                .unwrap_or(false),
        }
    }
}

struct State {
    accept: Accept,
    /// TCP connections accepted, whatever happened next.
    connections: std::sync::atomic::AtomicUsize,
    /// Connections held unanswered by [`Behaviour::Blackhole`], until released.
    held: Mutex<Vec<tokio::net::TcpStream>>,
    /// Handshakes that did not complete (e.g. a client refused the certificate).
    refused_handshakes: std::sync::atomic::AtomicUsize,
    behaviour: Mutex<Behaviour>,
    registered: Mutex<HashSet<String>>,
    seen: Mutex<Vec<SeenRequest>>,
}

/// A running Prism Central stand-in. Dropping it stops it.
pub struct PrismCentralStandIn {
    addr: SocketAddr,
    /// What `additionalTrustBundle` must hold to trust it: its CA, or its self-signed certificate.
    trust_pem: String,
    state: Arc<State>,
    shutdown: CancellationToken,
}

impl PrismCentralStandIn {
    /// Starts a stand-in that accepts `username`/`password`, behaving as `behaviour`.
    pub async fn start(username: &str, password: &str, behaviour: Behaviour) -> anyhow::Result<Self> {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        );
        let ca = TestCa::new("prism-central-stand-in-ca")?;
        let serving = ca.serving_cert("prism-central-stand-in")?;
        Self::serve(
            Accept::Exactly(header),
            behaviour,
            ca.cert_pem().to_owned(),
            serving,
        )
        .await
    }

    /// Starts a stand-in that accepts `username`/`password` and serves a self-signed certificate (for
    /// `127.0.0.1`), a CA certificate or not as `ca` says; [`Self::trust_bundle`] is that certificate.
    pub async fn start_self_signed(username: &str, password: &str, ca: bool) -> anyhow::Result<Self> {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        );
        let serving = crate::pki::self_signed_serving_cert("prism-central-stand-in", ca)?;
        Self::serve(
            Accept::Exactly(header),
            Behaviour::Normal,
            serving.cert_pem.clone(),
            serving,
        )
        .await
    }

    /// Starts a stand-in that accepts `username` with any non-empty password.
    pub async fn start_any_password(username: &str, behaviour: Behaviour) -> anyhow::Result<Self> {
        let ca = TestCa::new("prism-central-stand-in-ca")?;
        let serving = ca.serving_cert("prism-central-stand-in")?;
        Self::serve(
            Accept::AnyPasswordFor(username.to_owned()),
            behaviour,
            ca.cert_pem().to_owned(),
            serving,
        )
        .await
    }

    async fn serve(
        accept: Accept,
        behaviour: Behaviour,
        trust_pem: String,
        serving: ServingCert,
    ) -> anyhow::Result<Self> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("stand-in certificate")?;
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).context("stand-in key")?;
        let tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            accept,
            connections: Default::default(),
            held: Mutex::default(),
            refused_handshakes: Default::default(),
            behaviour: Mutex::new(behaviour),
            registered: Mutex::default(),
            seen: Mutex::default(),
        });
        let shutdown = CancellationToken::new();
        let (st, stop) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                st.connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if *st.behaviour.lock().unwrap() == Behaviour::Blackhole {
                    st.held.lock().unwrap().push(tcp);
                    continue;
                }
                let (acceptor, st, stop) = (acceptor.clone(), st.clone(), stop.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake; nothing more to do.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        st.refused_handshakes
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    };
                    let service = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&st, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            trust_pem,
            state,
            shutdown,
        })
    }

    /// `https://127.0.0.1:<port>`: the `prismCentralEndpoint.url` that reaches it.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its CA (or its self-signed certificate), base64-encoded PEM: the `additionalTrustBundle` that trusts it.
    pub fn trust_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.trust_pem)
    }

    /// How many TLS handshakes did not complete: a client that refused the certificate ends it with an alert.
    pub fn refused_handshakes(&self) -> usize {
        self.state
            .refused_handshakes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A `clusterConfig` with the addon configured for credentials Secret `secret` and Prism Central at this
    /// stand-in, verified against its CA.
    pub fn cluster_config(&self, secret: &str) -> serde_json::Value {
        serde_json::json!({
            "addons": {"konnectorAgent": {"credentials": {"secretRef": {"name": secret}}}},
            "nutanix": {"prismCentralEndpoint": {
                "url": self.url(),
                "insecure": false,
                "additionalTrustBundle": self.trust_bundle(),
            }}
        })
    }

    /// Lists the cluster whose kube-system Namespace has uid `uuid` as registered.
    pub fn register(&self, uuid: &str) {
        self.state.registered.lock().unwrap().insert(uuid.to_owned());
    }

    /// Changes how it answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// How many TCP connections it accepted, whatever happened next: each is one probe by a client.
    pub fn connections(&self) -> usize {
        self.state.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many connections [`Behaviour::Blackhole`] holds unanswered right now.
    pub fn held(&self) -> usize {
        self.state.held.lock().unwrap().len()
    }

    /// Closes every connection held unanswered.
    pub fn release(&self) {
        self.state.held.lock().unwrap().clear();
    }

    /// Every request it answered, oldest first.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for PrismCentralStandIn {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A base64 CA bundle that does not sign the stand-in's certificate: the "untrusted CA" case.
pub fn untrusted_bundle() -> anyhow::Result<String> {
    let other = TestCa::new("not-the-prism-central-ca")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(other.cert_pem()))
}

async fn answer(state: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let headers = req.headers();
    let carried_credentials =
        headers.contains_key(http::header::AUTHORIZATION) || headers.contains_key("x-ntnx-api-key");
    let authenticated = headers
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| state.accept.accepts(v.as_bytes()));
    state.seen.lock().unwrap().push(SeenRequest {
        path: path.clone(),
        carried_credentials,
        authenticated,
    });
    let behaviour = state.behaviour.lock().unwrap().clone();
    match behaviour {
        // A blackhole is decided when the connection is accepted; one accepted before answers as usual.
        Behaviour::Normal | Behaviour::Blackhole => {}
        Behaviour::Slow(d) => tokio::time::sleep(d).await,
        Behaviour::Status(code) => {
            return reply(
                code,
                "text/html",
                "<html><body>not Prism Central</body></html>".into(),
            );
        }
        Behaviour::RedirectTo(url) => {
            let mut r = reply(302, "text/plain", String::new());
            r.headers_mut()
                .insert(http::header::LOCATION, url.parse().expect("a redirect URL"));
            return r;
        }
    }
    if !authenticated {
        return reply(
            401,
            "application/json",
            r#"{"state":"ERROR","code":401,"message_list":[{"message":"Authentication required."}]}"#.into(),
        );
    }
    if path == USERS_ME_PATH {
        return reply(
            200,
            "application/json",
            r#"{"status":{"resources":{"display_name":"stand-in user"}},"metadata":{"kind":"user"}}"#.into(),
        );
    }
    if let Some(uuid) = path.strip_prefix(REGISTRATIONS_PATH) {
        if state.registered.lock().unwrap().contains(uuid) {
            return reply(
                200,
                "application/json",
                format!(r#"{{"uuid":"{uuid}","status":"REGISTERED"}}"#),
            );
        }
        return reply(
            404,
            "application/json",
            r#"{"code":404,"message":"cluster registration not found"}"#.into(),
        );
    }
    reply(404, "application/json", r#"{"code":404}"#.into())
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        content_type.parse().expect("a content type"),
    );
    r
}
