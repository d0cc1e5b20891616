//! TLS telemetry: failed handshakes by coarse reason and the expiry of every certificate in use.

use super::*;

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
