//! Throwaway certificates for loopback servers: a CA, and serving certificates for `localhost` and `127.0.0.1`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};

/// A test certificate authority.
pub struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate and its key, both PEM.
pub struct ServingCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl TestCa {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `localhost` and `127.0.0.1`, signed by this CA.
    pub fn serving_cert(&self, common_name: &str) -> anyhow::Result<ServingCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DNS name the chart puts in the gateway's client certificate, and that the executor allows by default
/// (`--client-allowed-names`).
pub const GATEWAY_CLIENT_NAME: &str = "konnector-gateway";
/// A self-signed serving certificate for `localhost` and `127.0.0.1`, its own issuer: with `ca` false it says it
/// is not a CA (basicConstraints cA=false), as the self-signed certificate of an appliance often does.
pub fn self_signed_serving_cert(common_name: &str, ca: bool) -> anyhow::Result<ServingCert> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = if ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    Ok(ServingCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl TestCa {
    /// A client certificate named `common_name`, signed by this CA, with `common_name` as its DNS
    /// subjectAltName.
    pub fn client_cert(&self, common_name: &str) -> anyhow::Result<ServingCert> {
        self.client_cert_with_names(common_name, &[common_name])
    }

    /// A client certificate named `common_name` whose DNS subjectAltNames are `dns_names`, signed by this CA.
    pub fn client_cert_with_names(
        &self,
        common_name: &str,
        dns_names: &[&str],
    ) -> anyhow::Result<ServingCert> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(dns_names.iter().map(|n| (*n).to_owned()).collect::<Vec<String>>())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The gateway↔executor mTLS files, laid out as the chart mounts cert-manager's Secrets: `server/` is the
/// executor's (`tls.crt`, `tls.key`, and `ca.crt`, the CA its clients must chain to) and `client/` is the gateway's
/// client pair (with `ca.crt`, the CA the executor must chain to).
///
/// It rotates the files as cert-manager would: [`MtlsPki::reissue_leaves`] renews both leaves with new keys; a CA
/// change goes through a bundle of both CAs ([`MtlsPki::begin_ca_rotation`], then `reissue_leaves`, then
/// [`MtlsPki::finish_ca_rotation`]), because peers that trust only one CA at a time cannot both be right while
/// they roll.
pub struct MtlsPki {
    dir: std::path::PathBuf,
    ca: TestCa,
    next_ca: Option<TestCa>,
}

impl MtlsPki {
    /// A new CA and both leaves under `dir`.
    pub fn create(dir: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("server"))?;
        std::fs::create_dir_all(dir.join("client"))?;
        let pki = Self {
            dir: dir.to_owned(),
            ca: TestCa::new("konnector-test-mtls-ca")?,
            next_ca: None,
        };
        pki.write_trust(pki.ca.cert_pem())?;
        pki.reissue_leaves()?;
        Ok(pki)
    }

    /// The executor's directory (`tls.crt`, `tls.key`, `ca.crt`).
    pub fn server_dir(&self) -> std::path::PathBuf {
        self.dir.join("server")
    }

    /// The gateway's client directory (`tls.crt`, `tls.key`, `ca.crt`).
    pub fn client_dir(&self) -> std::path::PathBuf {
        self.dir.join("client")
    }

    /// The CA bundle both sides currently trust (PEM).
    pub fn trust_pem(&self) -> String {
        std::fs::read_to_string(self.server_dir().join("ca.crt")).unwrap_or_default()
    }

    /// A client pair signed by the CA that signs new leaves, for test clients of the executor: it carries the
    /// gateway's identity ([`GATEWAY_CLIENT_NAME`]), as the chart issues it.
    pub fn client_pair(&self, common_name: &str) -> anyhow::Result<ServingCert> {
        self.signing_ca()
            .client_cert_with_names(common_name, &[GATEWAY_CLIENT_NAME])
    }

    /// A client pair from the same CA carrying `dns_names` only: another identity than the gateway's.
    pub fn client_pair_with_names(
        &self,
        common_name: &str,
        dns_names: &[&str],
    ) -> anyhow::Result<ServingCert> {
        self.signing_ca().client_cert_with_names(common_name, dns_names)
    }

    fn signing_ca(&self) -> &TestCa {
        self.next_ca.as_ref().unwrap_or(&self.ca)
    }

    fn write_trust(&self, pem: &str) -> anyhow::Result<()> {
        std::fs::write(self.server_dir().join("ca.crt"), pem)?;
        std::fs::write(self.client_dir().join("ca.crt"), pem)?;
        Ok(())
    }

    /// New keys and certificates for the executor and the gateway client, from the signing CA.
    pub fn reissue_leaves(&self) -> anyhow::Result<()> {
        let ca = self.signing_ca();
        let server = ca.serving_cert("konnector-executor")?;
        let client = ca.client_cert(GATEWAY_CLIENT_NAME)?;
        for (dir, pair) in [(self.server_dir(), server), (self.client_dir(), client)] {
            std::fs::write(dir.join("tls.crt"), &pair.cert_pem)?;
            std::fs::write(dir.join("tls.key"), &pair.key_pem)?;
        }
        Ok(())
    }

    /// A new CA: both sides trust the old and the new one; leaves are still the old CA's until reissued.
    pub fn begin_ca_rotation(&mut self) -> anyhow::Result<()> {
        let next = TestCa::new("konnector-test-mtls-ca-next")?;
        self.write_trust(&format!("{}{}", self.ca.cert_pem(), next.cert_pem()))?;
        self.next_ca = Some(next);
        Ok(())
    }

    /// Drops the old CA from both sides' trust.
    pub fn finish_ca_rotation(&mut self) -> anyhow::Result<()> {
        if let Some(next) = self.next_ca.take() {
            self.ca = next;
        }
        self.write_trust(self.ca.cert_pem())
    }
}
