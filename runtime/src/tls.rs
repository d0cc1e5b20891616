//! rustls helpers shared by the gateway (HTTPS) and the executor (gRPC over TLS).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
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
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate found in {}", path.display());
    Ok(certs)
}

/// Reads the first PEM private key in `path`.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a private key from {}", path.display()))
}

/// The ring provider, whether or not it was installed process-wide.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Reads a certificate chain and its key and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    CertifiedKey::from_der(chain, key_der, &provider()).with_context(|| {
        format!(
            "the key in {} does not fit the certificate in {}",
            key.display(),
            cert.display()
        )
    })
}

/// A server certificate resolver that re-reads its PEM files when they change on disk, so a certificate rotated by
/// cert-manager is served without a restart.
///
/// On a handshake, if at least `check_interval` has passed since the last look, both files are read and compared
/// byte-for-byte with what is being served; on a change they are parsed, and the new pair replaces the old only if
/// it is complete and consistent. A half-written rotation (new certificate, old key) therefore keeps the old pair in
/// service and is retried at the next check. The files are small and read at most once per interval, so the read
/// happens inline on the handshake path.
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    check_interval: Duration,
    state: Mutex<ReloadState>,
}

struct ReloadState {
    checked_at: Instant,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    current: Arc<CertifiedKey>,
}

impl fmt::Debug for ReloadingCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCertResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("check_interval", &self.check_interval)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertResolver {
    /// Loads the pair once (an error here is a startup error) and watches it from then on.
    pub fn new(cert_path: &Path, key_path: &Path, check_interval: Duration) -> anyhow::Result<Self> {
        let cert_pem =
            std::fs::read(cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
        let key_pem =
            std::fs::read(key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
        let current = Arc::new(load_certified_key(cert_path, key_path)?);
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            check_interval,
            state: Mutex::new(ReloadState {
                checked_at: Instant::now(),
                cert_pem,
                key_pem,
                current,
            }),
        })
    }

    /// The pair currently served, after a reload check if one is due.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked_at.elapsed() >= self.check_interval {
            state.checked_at = Instant::now();
            self.reload_if_changed(&mut state);
        }
        state.current.clone()
    }

    fn reload_if_changed(&self, state: &mut ReloadState) {
        let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(&self.cert_path), std::fs::read(&self.key_path))
        else {
            tracing::warn!(cert = %self.cert_path.display(), "cannot read the serving certificate files; keeping the current pair");
            return;
        };
        if cert_pem == state.cert_pem && key_pem == state.key_pem {
            return;
        }
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(key) => {
                tracing::info!(cert = %self.cert_path.display(), "serving certificate changed on disk; reloaded");
                state.current = Arc::new(key);
                state.cert_pem = cert_pem;
                state.key_pem = key_pem;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "serving certificate changed but does not load yet; keeping the current pair"
                );
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration: TLS 1.2 and 1.3 only, the given certificate resolver, the given ALPN protocols in
/// preference order, and, when `client_ca` is set, a required client certificate chaining to one of its CAs.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> anyhow::Result<ServerConfig> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("cannot configure TLS versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(path)? {
                roots
                    .add(cert)
                    .with_context(|| format!("invalid CA certificate in {}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| {
                    format!(
                        "cannot build a client-certificate verifier from {}",
                        path.display()
                    )
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
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
    fn empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.crt"), "").unwrap();
        assert!(load_certs(&dir.path().join("empty.crt")).is_err());
    }
}
