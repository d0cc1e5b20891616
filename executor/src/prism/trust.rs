//! Whom the preflight trusts: the agent's own rule (system roots plus the Cluster's additionalTrustBundle, a
//! bundle certificate trusted as itself), or nothing verified when the Cluster says `insecure: true`.

use super::*;

/// The certificates of a base64-encoded PEM bundle; at least one.
pub(super) fn certs_from_bundle(bundle: &str) -> Result<Vec<CertificateDer<'static>>, PreflightFailure> {
    let compact: String = bundle.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| PreflightFailure::TrustBundle)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PreflightFailure::TrustBundle)?;
    if certs.is_empty() {
        return Err(PreflightFailure::TrustBundle);
    }
    Ok(certs)
}

/// The system's trust anchors, read once: what Go's `crypto/x509` reads on Linux (the distribution's bundle, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`). Unreadable or unparsable entries are skipped, as Go skips them.
pub(super) fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::debug!(
                errors = found.errors.len(),
                "no system CA certificates found; Prism Central is verified against additionalTrustBundle only"
            );
        }
        found.certs
    })
}

/// The agent's verification (Go's `crypto/x509`, as the module documentation describes), for rustls.
#[derive(Debug)]
pub(super) struct AgentVerifier {
    /// Chains to the system's roots or a certificate of the bundle.
    pub(super) chains: Arc<dyn ServerCertVerifier>,
    /// The bundle's certificates, each trusted as itself when the server presents it.
    pub(super) bundle: Vec<CertificateDer<'static>>,
    pub(super) provider: Arc<CryptoProvider>,
}

impl AgentVerifier {
    pub(super) fn new(bundle: Vec<CertificateDer<'static>>) -> Result<Self, PreflightFailure> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        for cert in &bundle {
            roots
                .add(cert.clone())
                .map_err(|_| PreflightFailure::TrustBundle)?;
        }
        let provider = provider();
        let chains: Arc<dyn ServerCertVerifier> = if roots.is_empty() {
            // No anchor at all (no bundle, and a system without CA certificates): nothing can verify.
            Arc::new(Untrusted)
        } else {
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|_| PreflightFailure::TrustBundle)?
        };
        Ok(Self {
            chains,
            bundle,
            provider,
        })
    }

    /// Go's rule for a leaf that is itself a root: a chain of one, with its validity period, its extended key
    /// usage (server authentication, when it restricts any) and its names still checked.
    fn verify_pinned(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let bad = |e: CertificateError| rustls::Error::InvalidCertificate(e);
        let (_, cert) =
            X509Certificate::from_der(end_entity.as_ref()).map_err(|_| bad(CertificateError::BadEncoding))?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now < cert.validity().not_before.timestamp() {
            return Err(bad(CertificateError::NotValidYet));
        }
        if now > cert.validity().not_after.timestamp() {
            return Err(bad(CertificateError::Expired));
        }
        if let Ok(Some(eku)) = cert.extended_key_usage()
            && !eku.value.any
            && !eku.value.server_auth
        {
            return Err(bad(CertificateError::InvalidPurpose));
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.bundle.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return self.verify_pinned(end_entity, server_name, now);
        }
        self.chains
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Refuses every chain: verification with no trust anchor at all.
#[derive(Debug)]
pub(super) struct Untrusted;

impl ServerCertVerifier for Untrusted {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn client_config(target: &Target) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    match &target.verifier {
        Some(verifier) => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
    }
}

/// The agent's `insecure` mode: any certificate is accepted (signatures over the handshake are still checked).
#[derive(Debug)]
pub(super) struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
