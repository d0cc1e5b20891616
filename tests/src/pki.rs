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
/// [`MtlsPki::reissue_leaves`] renews both leaves with new keys, from the same CA; [`CertManagerPki`] renews the CA
/// too, one Secret at a time, as cert-manager does.
pub struct MtlsPki {
    dir: std::path::PathBuf,
    ca: TestCa,
}

impl MtlsPki {
    /// A new CA and both leaves under `dir`.
    pub fn create(dir: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("server"))?;
        std::fs::create_dir_all(dir.join("client"))?;
        let pki = Self {
            dir: dir.to_owned(),
            ca: TestCa::new("konnector-test-mtls-ca")?,
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
        &self.ca
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
}

/// One of the chart's leaf certificates, each in its own Secret (a directory here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// The gateway's serving pair (`<release>-gateway-serving`), whose `ca.crt` CAPI trusts.
    GatewayServing,
    /// The gateway's client pair towards the executor (`<release>-gateway-client`).
    GatewayClient,
    /// The executor's serving pair (`<release>-executor-server`).
    ExecutorServer,
}

impl Leaf {
    /// Every leaf, in the order the tests renew them.
    pub const ALL: [Leaf; 3] = [Leaf::ExecutorServer, Leaf::GatewayClient, Leaf::GatewayServing];

    fn dir_name(self) -> &'static str {
        match self {
            Self::GatewayServing => "gateway-serving",
            Self::GatewayClient => "gateway-client",
            Self::ExecutorServer => "executor-server",
        }
    }
}

/// The chart's PKI as cert-manager keeps it: one CA, and a Secret per leaf holding `tls.crt`, `tls.key` and
/// `ca.crt`, where `ca.crt` is the CA certificate current when that leaf was issued. cert-manager renews the CA
/// and each leaf on its own schedule and never rewrites a leaf's Secret when the CA changes, so between renewals
/// the peers hold different `ca.crt` files: that is what [`CertManagerPki::renew_ca`] followed by
/// [`CertManagerPki::renew`] of each leaf in turn reproduces. No file ever holds two CAs.
pub struct CertManagerPki {
    dir: std::path::PathBuf,
    ca_key_pem: String,
    ca_cert_pem: String,
    ca_not_after: i64,
    issued: u32,
}

impl CertManagerPki {
    /// A CA and the three leaves under `dir` (one directory per Secret, see [`CertManagerPki::dir`]).
    pub fn create(dir: &std::path::Path) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut pki = Self {
            dir: dir.to_owned(),
            ca_key_pem: key.serialize_pem(),
            ca_cert_pem: String::new(),
            ca_not_after: 0,
            issued: 0,
        };
        pki.issue_ca()?;
        for leaf in Leaf::ALL {
            std::fs::create_dir_all(pki.dir(leaf))?;
            pki.renew(leaf)?;
        }
        Ok(pki)
    }

    /// The directory standing for `leaf`'s Secret.
    pub fn dir(&self, leaf: Leaf) -> std::path::PathBuf {
        self.dir.join(leaf.dir_name())
    }

    /// The current CA certificate (PEM), as the CA's own Secret holds it.
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The current CA certificate's notAfter (unix seconds).
    pub fn ca_not_after(&self) -> i64 {
        self.ca_not_after
    }

    fn ca_params(&self) -> anyhow::Result<CertificateParams> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "konnector-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(params)
    }

    /// Each issuance gets its own notAfter (one more day), so the expiry gauges tell which certificate a process
    /// has loaded.
    fn next_offset(&mut self) -> std::time::Duration {
        self.issued += 1;
        std::time::Duration::from_secs(u64::from(self.issued) * 86_400)
    }

    fn issue_ca(&mut self) -> anyhow::Result<()> {
        let key = KeyPair::from_pem(&self.ca_key_pem)?;
        let mut params = self.ca_params()?;
        params.not_after = rcgen::date_time_ymd(2040, 1, 1) + self.next_offset();
        self.ca_not_after = params.not_after.unix_timestamp();
        self.ca_cert_pem = params.self_signed(&key)?.pem();
        Ok(())
    }

    /// cert-manager renews the CA certificate: with the same key (the chart's `rotationPolicy: Never`) or a new
    /// one (`Always`, cert-manager's default since 1.18). No leaf Secret changes.
    pub fn renew_ca(&mut self, new_key: bool) -> anyhow::Result<()> {
        if new_key {
            self.ca_key_pem = KeyPair::generate()?.serialize_pem();
        }
        self.issue_ca()
    }

    /// cert-manager renews `leaf` (a new key, `rotationPolicy: Always`) from the current CA and writes its Secret:
    /// `ca.crt`, then the pair. Returns the new certificate's notAfter (unix seconds).
    pub fn renew(&mut self, leaf: Leaf) -> anyhow::Result<i64> {
        let key = KeyPair::generate()?;
        let (mut params, usage) = match leaf {
            Leaf::GatewayServing | Leaf::ExecutorServer => {
                let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
                params
                    .subject_alt_names
                    .push(SanType::IpAddress([127, 0, 0, 1].into()));
                (params, ExtendedKeyUsagePurpose::ServerAuth)
            }
            Leaf::GatewayClient => (
                CertificateParams::new(vec![GATEWAY_CLIENT_NAME.to_owned()])?,
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        };
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.dir_name());
        params.extended_key_usages = vec![usage];
        params.not_after = rcgen::date_time_ymd(2040, 1, 1) + self.next_offset();
        let issuer = Issuer::new(self.ca_params()?, KeyPair::from_pem(&self.ca_key_pem)?);
        let cert = params.signed_by(&key, &issuer)?;
        let dir = self.dir(leaf);
        std::fs::write(dir.join("ca.crt"), &self.ca_cert_pem)?;
        std::fs::write(dir.join("tls.crt"), cert.pem())?;
        std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
        Ok(params.not_after.unix_timestamp())
    }
}
