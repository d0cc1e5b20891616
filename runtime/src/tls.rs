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
            }),
        })
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
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("cannot configure TLS versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            builder.with_client_cert_verifier(Arc::new(ReloadingClientVerifier::new(path, reload_interval)?))
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
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
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("cannot configure TLS versions")?
        .dangerous()
        // Not a weakened check: the same webpki verification, against a bundle that follows the file.
        .with_custom_certificate_verifier(Arc::new(ReloadingServerVerifier::new(ca, reload_interval)?));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder.with_client_cert_resolver(Arc::new(ReloadingCertResolver::new(
            cert,
            key,
            reload_interval,
        )?)),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
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
}
