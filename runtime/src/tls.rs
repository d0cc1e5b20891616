//! rustls helpers shared by the gateway (HTTPS server, gRPC client) and the executor (gRPC server): every
//! certificate, key and CA bundle is re-read from disk when it changes, so cert-manager's rotations (new leaves every
//! 60 days, a new CA when the issuer is replaced) take effect without a restart.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::{
        ResolvesClientCert, WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

/// Installs ring as the process-wide rustls crypto provider. Call once, first thing in `main`: the dependency tree
/// is ring-only, and an explicit choice avoids a panic when two providers are compiled in.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads every PEM certificate in `path`.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read certificates from {}", path.display()))?;
    certs_from_pem(&pem).with_context(|| format!("in {}", path.display()))
}

/// Reads the first PEM private key in `path`.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a private key from {}", path.display()))
}

fn certs_from_pem(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("cannot parse the PEM certificates")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate found");
    Ok(certs)
}

/// The ring provider, whether or not it was installed process-wide.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Reads a certificate chain and its key and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    certified_key(&[cert_pem, key_pem]).with_context(|| format!("{} and {}", cert.display(), key.display()))
}

fn certified_key(pems: &[Vec<u8>]) -> anyhow::Result<CertifiedKey> {
    let chain = certs_from_pem(&pems[0])?;
    let key = PrivateKeyDer::from_pem_slice(&pems[1]).context("cannot parse the private key")?;
    CertifiedKey::from_der(chain, key, &provider()).context("the key does not fit the certificate")
}

fn roots(pem: &[u8]) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(pem)? {
        roots.add(cert).context("invalid CA certificate")?;
    }
    Ok(Arc::new(roots))
}

/// Files on disk and the value built from them, rebuilt when their bytes change.
///
/// At most once per `check_interval`, on use, the files are read and compared byte-for-byte with what the current
/// value was built from; on a change the new value replaces the old only if it builds. A half-written rotation
/// (new certificate, old key; a truncated bundle) therefore keeps the old value in service and is retried at the
/// next check. The files are small and read at most once per interval, so the read happens inline on the
/// handshake path.
struct Watched<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    check_interval: Duration,
    build: fn(&[Vec<u8>]) -> anyhow::Result<T>,
    state: Mutex<WatchState<T>>,
}

struct WatchState<T> {
    checked_at: Instant,
    contents: Vec<Vec<u8>>,
    current: Arc<T>,
    /// Set to the expiry of what is in service, at start and on every reload.
    expiry: Option<(Gauge, Expiry)>,
}

/// Which notAfter of a PEM file stands for it.
#[derive(Clone, Copy, Debug)]
enum Expiry {
    /// A chain, leaf first: the leaf's. (The intermediates behind it are the issuer's business.)
    Leaf,
    /// A CA bundle: the earliest of its CAs'. A CA that runs out either stops its leaves from verifying or should
    /// have been dropped from the bundle; both want a person.
    Earliest,
}

impl<T> Watched<T> {
    /// Reads and builds once: an error here is a startup error.
    fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        check_interval: Duration,
        build: fn(&[Vec<u8>]) -> anyhow::Result<T>,
    ) -> anyhow::Result<Self> {
        let contents = read_all(&paths)?;
        let names = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let current =
            Arc::new(build(&contents).with_context(|| format!("cannot load the {what} from {names}"))?);
        Ok(Self {
            what,
            paths,
            check_interval,
            build,
            state: Mutex::new(WatchState {
                checked_at: Instant::now(),
                contents,
                current,
                expiry: None,
            }),
        })
    }

    /// From now on keeps `gauge` at the expiry (unix seconds) of the certificates in service.
    fn observe_expiry(&self, gauge: Gauge, which: Expiry) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        record_expiry(&gauge, which, &state.contents[0]);
        state.expiry = Some((gauge, which));
    }

    fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked_at.elapsed() >= self.check_interval {
            state.checked_at = Instant::now();
            self.reload_if_changed(&mut state);
        }
        state.current.clone()
    }

    fn reload_if_changed(&self, state: &mut WatchState<T>) {
        let contents = match read_all(&self.paths) {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(
                    what = self.what,
                    error = format!("{error:#}"),
                    "cannot read; keeping the current one"
                );
                return;
            }
        };
        if contents == state.contents {
            return;
        }
        match (self.build)(&contents) {
            Ok(value) => {
                tracing::info!(what = self.what, file = %self.paths[0].display(), "changed on disk; reloaded");
                state.current = Arc::new(value);
                state.contents = contents;
                if let Some((gauge, which)) = &state.expiry {
                    record_expiry(gauge, *which, &state.contents[0]);
                }
            }
            Err(error) => tracing::warn!(
                what = self.what,
                file = %self.paths[0].display(),
                error = format!("{error:#}"),
                "changed on disk but does not load (yet); keeping the current one"
            ),
        }
    }
}

/// Sets `gauge` to the notAfter (unix seconds) that `which` picks from the PEM certificates in `pem`. A file that
/// loaded but whose certificates cannot be parsed here leaves the gauge as it was.
fn record_expiry(gauge: &Gauge, which: Expiry, pem: &[u8]) {
    let Ok(certs) = certs_from_pem(pem) else { return };
    let not_after = |der: &CertificateDer<'_>| {
        x509_parser::parse_x509_certificate(der.as_ref())
            .ok()
            .map(|(_, cert)| cert.validity().not_after.timestamp())
    };
    let seconds = match which {
        Expiry::Leaf => certs.first().and_then(not_after),
        Expiry::Earliest => certs.iter().filter_map(not_after).min(),
    };
    if let Some(seconds) = seconds {
        gauge.set(seconds);
    }
}

fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .collect()
}

impl<T> fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .field("check_interval", &self.check_interval)
            .finish_non_exhaustive()
    }
}

/// A certificate and key pair that re-reads its PEM files when they change on disk: the server certificate of
/// either server, and the gateway's client certificate towards the executor.
#[derive(Debug)]
pub struct ReloadingCertResolver(Watched<CertifiedKey>);

impl ReloadingCertResolver {
    /// Loads the pair once (an error here is a startup error) and watches it from then on.
    pub fn new(cert_path: &Path, key_path: &Path, check_interval: Duration) -> anyhow::Result<Self> {
        Watched::new(
            "certificate and key",
            vec![cert_path.to_owned(), key_path.to_owned()],
            check_interval,
            certified_key,
        )
        .map(Self)
    }

    /// The pair currently in service, after a reload check if one is due.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.current()
    }

    /// Keeps the `role` series of `metrics`' expiry gauge at the leaf certificate's notAfter, now and after every
    /// reload.
    pub fn observed(self, metrics: &TlsMetrics, role: CertRole) -> Self {
        self.0.observe_expiry(metrics.expiry(role), Expiry::Leaf);
        self
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against a CA bundle re-read from disk when it changes. During a CA rotation the
/// bundle holds the old and the new CA, so clients of either are accepted until the old one is dropped.
#[derive(Debug)]
pub struct ReloadingClientVerifier(Watched<Arc<dyn ClientCertVerifier>>);

impl ReloadingClientVerifier {
    /// Loads the bundle once (an error here is a startup error) and watches it from then on.
    pub fn new(ca_path: &Path, check_interval: Duration) -> anyhow::Result<Self> {
        Watched::new(
            "client CA bundle",
            vec![ca_path.to_owned()],
            check_interval,
            |pems| {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots(&pems[0])?, provider())
                    .build()
                    .context("cannot build a client-certificate verifier")?;
                Ok(verifier)
            },
        )
        .map(Self)
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints are optional (RFC 8446 4.2.4) and cannot be lent out of a bundle that may change under them;
        // with none, a client presents the certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// Verifies a server certificate against a CA bundle re-read from disk when it changes.
#[derive(Debug)]
pub struct ReloadingServerVerifier(Watched<Arc<WebPkiServerVerifier>>);

impl ReloadingServerVerifier {
    /// Loads the bundle once (an error here is a startup error) and watches it from then on.
    pub fn new(ca_path: &Path, check_interval: Duration) -> anyhow::Result<Self> {
        Watched::new("CA bundle", vec![ca_path.to_owned()], check_interval, |pems| {
            WebPkiServerVerifier::builder_with_provider(roots(&pems[0])?, provider())
                .build()
                .context("cannot build a server-certificate verifier")
        })
        .map(Self)
    }
}

impl ServerCertVerifier for ReloadingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .current()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// A rustls server configuration: TLS 1.2 and 1.3 only, the given certificate resolver, the given ALPN protocols in
/// preference order, and, when `client_ca` is set, a required client certificate chaining to one of its CAs (the
/// bundle re-read every `reload_interval` when it changes).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca: Option<&Path>,
    reload_interval: Duration,
    alpn: &[&[u8]],
) -> anyhow::Result<ServerConfig> {
    server_config_observed(resolver, client_ca, reload_interval, alpn, None)
}

/// [`server_config`], with the client CA bundle's expiry kept in `metrics` (role `client_ca`). The resolver's own
/// expiry is the caller's to observe ([`ReloadingCertResolver::observed`]).
pub fn server_config_observed(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca: Option<&Path>,
    reload_interval: Duration,
    alpn: &[&[u8]],
    metrics: Option<&TlsMetrics>,
) -> anyhow::Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("cannot configure TLS versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let verifier = ReloadingClientVerifier::new(path, reload_interval)?;
            if let Some(m) = metrics {
                verifier
                    .0
                    .observe_expiry(m.expiry(CertRole::ClientCa), Expiry::Earliest);
            }
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No session resumption: a resumed session skips both certificates and carries the first handshake's
    // verdict past a rotation, so a client renewed since would never present its new certificate and one whose
    // CA was dropped would still be let in. Connections are long-lived, so the full handshakes cost little.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A rustls client configuration: TLS 1.2 and 1.3 only, the server verified against the CA bundle `ca`, and, for
/// mTLS, the client certificate and key `identity`; every file re-read every `reload_interval` when it changes, so
/// each new connection uses what is on disk.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    reload_interval: Duration,
    alpn: &[&[u8]],
) -> anyhow::Result<ClientConfig> {
    client_config_observed(ca, identity, reload_interval, alpn, None)
}

/// [`client_config`], with the expiry of the CA bundle (role `server_ca`) and of the client certificate (role
/// `client`) kept in `metrics`.
pub fn client_config_observed(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    reload_interval: Duration,
    alpn: &[&[u8]],
    metrics: Option<&TlsMetrics>,
) -> anyhow::Result<ClientConfig> {
    let verifier = ReloadingServerVerifier::new(ca, reload_interval)?;
    if let Some(m) = metrics {
        verifier
            .0
            .observe_expiry(m.expiry(CertRole::ServerCa), Expiry::Earliest);
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("cannot configure TLS versions")?
        .dangerous()
        // Not a weakened check: the same webpki verification, against a bundle that follows the file.
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let mut resolver = ReloadingCertResolver::new(cert, key, reload_interval)?;
            if let Some(m) = metrics {
                resolver = resolver.observed(m, CertRole::Client);
            }
            builder.with_client_cert_resolver(Arc::new(resolver))
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No session resumption (see `server_config_observed`): every connection presents and verifies the
    // certificates on disk now.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// What a certificate is for, as the `role` label of the expiry gauge: never a path or a subject, which are the
/// deployment's business and would make a new series on every rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRole {
    /// The serving certificate of this process's server.
    Server,
    /// The CA bundle client certificates must chain to.
    ClientCa,
    /// This process's client certificate (the gateway's, towards the executor).
    Client,
    /// The CA bundle a server this process calls must chain to (the gateway's, for the executor).
    ServerCa,
}

impl CertRole {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::ClientCa => "client_ca",
            Self::Client => "client",
            Self::ServerCa => "server_ca",
        }
    }
}

/// Why a TLS handshake on one of konnector's servers failed, as the `reason` label of the failure counter: coarse
/// on purpose, and never anything the peer sent or who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not finished within the handshake timeout (a slow or silent client).
    Timeout,
    /// The peer closed or reset the connection mid-handshake (a TCP probe, a client that gave up).
    Closed,
    /// The client presented no certificate where one is required.
    NoClientCertificate,
    /// The client's certificate does not verify (unknown CA, expired, wrong usage).
    BadClientCertificate,
    /// The peer ended the handshake with an alert, typically because it refused this server's certificate.
    AlertReceived,
    /// No TLS version, cipher suite or ALPN protocol in common.
    Incompatible,
    /// Not TLS, or TLS that breaks the protocol (e.g. plain HTTP sent to the TLS port).
    Protocol,
    /// Anything else.
    Other,
}

impl HandshakeFailure {
    /// Classifies the error a TLS accept (tokio-rustls) returned.
    pub fn of(error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        if let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::NoCertificatesPresented => Self::NoClientCertificate,
                rustls::Error::InvalidCertificate(_) => Self::BadClientCertificate,
                rustls::Error::AlertReceived(_) => Self::AlertReceived,
                rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                    Self::Incompatible
                }
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. }
                | rustls::Error::PeerMisbehaved(_) => Self::Protocol,
                _ => Self::Other,
            };
        }
        match error.kind() {
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => Self::Closed,
            _ => Self::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::NoClientCertificate => "no_client_certificate",
            Self::BadClientCertificate => "bad_client_certificate",
            Self::AlertReceived => "alert_received",
            Self::Incompatible => "incompatible",
            Self::Protocol => "protocol",
            Self::Other => "other",
        }
    }
}

type Labels = Vec<(&'static str, String)>;

/// A server's TLS telemetry: failed handshakes by reason, and the expiry of every certificate it uses. Register it
/// under the component's prefix with [`TlsMetrics::register`].
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    handshake_failures: Family<Labels, Counter>,
    expiry: Family<Labels, Gauge>,
}

impl TlsMetrics {
    /// Registers `tls_handshake_failures_total{reason}` and `certificate_expiry_timestamp_seconds{role}` in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "tls_handshake_failures",
            "TLS handshakes this server did not complete, by coarse reason",
            self.handshake_failures.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When a certificate in use runs out (notAfter, unix seconds), by role; updated when the files are reloaded",
            self.expiry.clone(),
        );
    }

    /// Counts one failed handshake.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures
            .get_or_create(&vec![("reason", reason.as_str().to_owned())])
            .inc();
    }

    /// The expiry gauge of `role`.
    pub fn expiry(&self, role: CertRole) -> Gauge {
        self.expiry
            .get_or_create(&vec![("role", role.as_str().to_owned())])
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_generated_pem() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
        assert_eq!(load_certs(&dir.path().join("tls.crt")).unwrap().len(), 1);
        load_key(&dir.path().join("tls.key")).unwrap();
    }

    #[test]
    fn resolver_picks_up_a_rewritten_pair_and_ignores_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let write = |c: &rcgen::CertifiedKey<rcgen::KeyPair>| {
            std::fs::write(&crt, c.cert.pem()).unwrap();
            std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        };
        let first = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        write(&first);
        let resolver = ReloadingCertResolver::new(&crt, &key, Duration::ZERO).unwrap();
        assert_eq!(resolver.current().cert[0].as_ref(), first.cert.der().as_ref());

        // A new certificate with the old key is inconsistent: keep serving the first pair.
        let second = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&crt, second.cert.pem()).unwrap();
        assert_eq!(resolver.current().cert[0].as_ref(), first.cert.der().as_ref());

        std::fs::write(&key, second.signing_key.serialize_pem()).unwrap();
        assert_eq!(resolver.current().cert[0].as_ref(), second.cert.der().as_ref());
    }

    #[test]
    fn verifiers_follow_the_bundle_and_keep_the_old_one_when_it_breaks() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.crt");
        let ca = |name: &str| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
        };
        let leaf = |issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>| {
            let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params
                .signed_by(&rcgen::KeyPair::generate().unwrap(), issuer)
                .unwrap()
                .der()
                .clone()
        };
        let (old, new) = (ca("old"), ca("new"));
        let (old_leaf, new_leaf) = (leaf(&old), leaf(&new));
        let name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::now();
        std::fs::write(&ca_path, old.pem()).unwrap();
        let server = ReloadingServerVerifier::new(&ca_path, Duration::ZERO).unwrap();
        let client = ReloadingClientVerifier::new(&ca_path, Duration::ZERO).unwrap();
        let server_ok = |c: &CertificateDer<'_>| server.verify_server_cert(c, &[], &name, &[], now).is_ok();
        let client_ok = |c: &CertificateDer<'_>| client.verify_client_cert(c, &[], now).is_ok();
        assert!(server_ok(&old_leaf) && !server_ok(&new_leaf));
        assert!(client_ok(&old_leaf) && !client_ok(&new_leaf));

        // Mid-rotation bundle: both CAs.
        std::fs::write(&ca_path, format!("{}{}", old.pem(), new.pem())).unwrap();
        assert!(server_ok(&old_leaf) && server_ok(&new_leaf));
        assert!(client_ok(&old_leaf) && client_ok(&new_leaf));

        // A half-written file keeps the last good bundle.
        std::fs::write(&ca_path, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
        assert!(server_ok(&old_leaf) && server_ok(&new_leaf));

        std::fs::write(&ca_path, new.pem()).unwrap();
        assert!(!server_ok(&old_leaf) && server_ok(&new_leaf));
        assert!(!client_ok(&old_leaf) && client_ok(&new_leaf));
    }

    #[test]
    fn empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.crt"), "").unwrap();
        assert!(load_certs(&dir.path().join("empty.crt")).is_err());
    }

    #[test]
    fn expiry_gauges_follow_the_files_in_service() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (crt, key, ca) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("ca.crt"),
        );
        let pair = |days: i64| {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.not_after = rcgen::date_time_ymd(2030, 1, 1) + time_days(days);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), key.serialize_pem(), params.not_after.unix_timestamp())
        };
        let (first, first_key, first_end) = pair(0);
        let (second, second_key, second_end) = pair(10);
        std::fs::write(&crt, &first).unwrap();
        std::fs::write(&key, &first_key).unwrap();
        // A bundle of two CAs: the earlier expiry stands for it.
        std::fs::write(&ca, format!("{second}{first}")).unwrap();
        let metrics = TlsMetrics::default();
        let resolver = ReloadingCertResolver::new(&crt, &key, Duration::ZERO)
            .unwrap()
            .observed(&metrics, CertRole::Server);
        let _config = server_config_observed(
            Arc::new(ReloadingCertResolver::new(&crt, &key, Duration::ZERO).unwrap()),
            Some(&ca),
            Duration::ZERO,
            &[b"h2"],
            Some(&metrics),
        )
        .unwrap();
        assert_eq!(metrics.expiry(CertRole::Server).get(), first_end);
        assert_eq!(metrics.expiry(CertRole::ClientCa).get(), first_end);

        std::fs::write(&crt, &second).unwrap();
        std::fs::write(&key, &second_key).unwrap();
        resolver.current();
        assert_eq!(metrics.expiry(CertRole::Server).get(), second_end);

        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(&format!(
                "certificate_expiry_timestamp_seconds{{role=\"server\"}} {second_end}"
            )),
            "{text}"
        );
        assert!(!text.contains(dir.path().to_str().unwrap()), "{text}");
    }

    fn time_days(days: i64) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(days).unwrap() * 86_400)
    }

    #[test]
    fn handshake_failures_are_classified_coarsely() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            HandshakeFailure::of(&io(rustls::Error::NoCertificatesPresented)),
            HandshakeFailure::NoClientCertificate
        );
        assert_eq!(
            HandshakeFailure::of(&io(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))),
            HandshakeFailure::BadClientCertificate
        );
        assert_eq!(
            HandshakeFailure::of(&io(rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
            ))),
            HandshakeFailure::AlertReceived
        );
        assert_eq!(
            HandshakeFailure::of(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            HandshakeFailure::Closed
        );
    }
}
