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

mod metrics;
mod reload;

pub use metrics::{CertRole, HandshakeFailure, TlsMetrics};
pub use reload::{ReloadingCertResolver, ReloadingClientVerifier, ReloadingServerVerifier};

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
                verifier.observe_ca_expiry(m.expiry(CertRole::ClientCa));
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
        verifier.observe_ca_expiry(m.expiry(CertRole::ServerCa));
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

/// The DNS subjectAltNames of a DER certificate; none when it does not parse. One reading for the executor, which
/// gives a client the access its names carry, and the CLI, which refuses to write under the read-only identity.
pub fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
