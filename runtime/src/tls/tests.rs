//! Unit tests of the TLS helpers: loading, reloading, verification and their metrics.

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
