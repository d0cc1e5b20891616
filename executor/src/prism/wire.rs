//! One request to Prism Central by hand: resolve, connect, handshake, write, read the status line, each step
//! under the same deadline and named when it fails.

use super::*;

/// The parts of an HTTP answer the checks look at.
#[derive(Clone, Copy, Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) json: bool,
}

/// One GET to Prism Central; the body is not read.
pub(super) async fn get(
    target: &Target,
    credentials: &Credentials,
    path: &str,
    bound: Duration,
) -> Result<Answer, PreflightFailure> {
    let deadline = Instant::now() + bound;
    let timeout = |step| PreflightFailure::Timeout { after: bound, step };
    let addrs: Vec<SocketAddr> = tokio::time::timeout_at(
        deadline,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| timeout(Step::Resolve))?
    .map_err(|_| PreflightFailure::Dns)?
    .collect();
    if addrs.is_empty() {
        return Err(PreflightFailure::Dns);
    }
    // Every address is tried in turn within the one deadline; the last failure is the one reported.
    let mut tcp = None;
    for addr in &addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(timeout(Step::Connect)),
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(_)) => {}
        }
    }
    let tcp = tcp.ok_or(PreflightFailure::Connect)?;

    let server_name = ServerName::try_from(target.host.clone()).map_err(|_| PreflightFailure::Dns)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(target)));
    let tls = match tokio::time::timeout_at(deadline, connector.connect(server_name, tcp)).await {
        Err(_) => return Err(timeout(Step::Tls)),
        Ok(Err(e)) => {
            return Err(PreflightFailure::Tls {
                reason: tls_reason(&e),
            });
        }
        Ok(Ok(s)) => s,
    };

    let (name, value) = credentials.header();
    let request = http::Request::get(path)
        .header(http::header::HOST, target.endpoint())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(name, value)
        .body(Empty::<Bytes>::new())
        // Only a header value that is not valid (e.g. a control character in the API key) fails here.
        .map_err(|_| PreflightFailure::UnexpectedAnswer(Unexpected::NoAnswer))?;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        // The connection task ends when the answer is read and `sender` is dropped, or with the deadline below.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let answer = sender.send_request(request).await;
        driver.abort();
        answer
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => Err(timeout(Step::Request)),
        // The server closed or broke the connection instead of answering.
        Ok(Err(_)) => Err(PreflightFailure::UnexpectedAnswer(Unexpected::NoAnswer)),
        Ok(Ok(answer)) => Ok(Answer {
            status: answer.status().as_u16(),
            json: answer
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("json")),
        }),
    }
}

/// A fixed phrase for a failed handshake, from the rustls error inside the I/O error.
pub(super) fn tls_reason(error: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error as TlsError};
    match error.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
        Some(TlsError::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer => {
                "its certificate is not signed by a CA in additionalTrustBundle or the system's roots"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "its certificate does not name the URL's host"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "its certificate has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "its certificate is not valid yet"
            }
            _ => "its certificate was refused",
        },
        Some(TlsError::AlertReceived(_)) => "it ended the handshake with an alert",
        Some(_) => "the handshake failed",
        None => "the connection closed during the handshake (is it a TLS endpoint?)",
    }
}
