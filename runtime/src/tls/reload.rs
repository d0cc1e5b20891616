//! Certificates, keys and CA bundles that re-read their files when the bytes on disk change.

use super::*;

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
    /// Keeps `gauge` at the earliest notAfter in the CA bundle, the one whose expiry breaks the link first.
    pub(super) fn observe_ca_expiry(&self, gauge: Gauge) {
        self.0.observe_expiry(gauge, Expiry::Earliest);
    }

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
    /// Keeps `gauge` at the earliest notAfter in the CA bundle, the one whose expiry breaks the link first.
    pub(super) fn observe_ca_expiry(&self, gauge: Gauge) {
        self.0.observe_expiry(gauge, Expiry::Earliest);
    }

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
