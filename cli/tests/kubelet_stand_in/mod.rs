//! A **stand-in** for the kubelet's port-forward endpoint, for the CLI's tests only. It is not a kubelet.
//!
//! The harness runs etcd and kube-apiserver and no node. For `pods/portforward` the API server looks up the pod's
//! node, dials `https://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/portForward/<ns>/<pod>`
//! and splices the client's WebSocket upgrade through to it (without verifying the kubelet's certificate when,
//! as here, no `--kubelet-certificate-authority` is set). This stand-in answers that upgrade the way the kubelet's
//! WebSocket port-forward does (subprotocol `v4.channel.k8s.io`: per port a data and an error channel, each opened
//! with the port number as two little-endian bytes, then frames prefixed with their channel byte), and connects
//! the data channel to `127.0.0.1:<port>`, where a pod's port would be on its own network.
//!
//! Modelled: one port per request, binary frames, closing either way. Not modelled: several ports, the base64
//! protocol, SPDY (kubectl's transport), errors on the error channel.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use konnector_tests::pki::TestCa;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{Request, Response},
    http::HeaderValue,
};

const PROTOCOL: &str = "v4.channel.k8s.io";

/// The running stand-in; dropping it stops it.
pub(crate) struct KubeletStandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeletStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeletStandIn {
    /// Serves on a loopback port, over TLS with a throwaway certificate.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        konnector_runtime::tls::install_crypto_provider();
        let cert = TestCa::new("kubelet-stand-in-ca")?.serving_cert("kubelet-stand-in")?;
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())?],
                PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?,
            )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, seen) = (acceptor.clone(), seen.clone());
                    tokio::spawn(async move {
                        if let Err(error) = serve(acceptor, tcp, seen).await {
                            tracing::debug!(%error, "kubelet stand-in: connection failed");
                        }
                    });
                }
            }
        });
        Ok(Self { addr, seen, task })
    }

    /// The request paths (with query) the API server sent, oldest first.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Registers Node `name` on `admin`'s API server with this stand-in as its kubelet.
    pub(crate) async fn register_node(&self, admin: &Client, name: &str) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(admin.clone());
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}}))?,
            )
            .await?;
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.addr.port()}},
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(())
    }
}

/// One port-forward: WebSocket handshake, the two opening frames, then bytes both ways until either side closes.
// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    seen: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    let tls = acceptor.accept(tcp).await?;
    let mut target: Option<u16> = None;
    let ws = tokio_tungstenite::accept_hdr_async(tls, |req: &Request, mut resp: Response| {
        let uri = req.uri().to_string();
        seen.lock().unwrap().push(uri.clone());
        target = req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "port" || *k == "ports")
                .and_then(|(_, v)| v.parse().ok())
        });
        let offered = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == PROTOCOL);
        if offered {
            resp.headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(PROTOCOL));
        }
        Ok(resp)
    })
    .await?;
    let port = target.ok_or_else(|| anyhow::anyhow!("no port in the request"))?;
    let (mut sink, mut stream) = ws.split();
    let [lo, hi] = port.to_le_bytes();
    sink.send(Message::binary(vec![0, lo, hi])).await?;
    sink.send(Message::binary(vec![1, lo, hi])).await?;
    let upstream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut up_read, mut up_write) = upstream.into_split();
    let to_pod = async {
        while let Some(message) = stream.next().await {
            match message? {
                Message::Binary(bytes) if bytes.first() == Some(&0) => {
                    up_write.write_all(&bytes[1..]).await?
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        up_write.shutdown().await?;
        anyhow::Ok(())
    };
    let from_pod = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = up_read.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(0);
            frame.extend_from_slice(&buf[..n]);
            sink.send(Message::binary(frame)).await?;
        }
        sink.close().await?;
        anyhow::Ok(())
    };
    tokio::try_join!(to_pod, from_pod)?;
    Ok(())
}
