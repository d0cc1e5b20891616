//! The one bounded HTTP server of konnector: the gateway's hook port (HTTPS) and both admin ports (plain HTTP) are
//! served by [`serve`], so every port a pod exposes has a connection cap, a time limit before the first request,
//! an idle limit, bounded headers and streams, and the same graceful drain.
//!
//! hyper's auto builder serves HTTP/1.1 and HTTP/2 (h2c on plain ports, ALPN with TLS). Connections are capped: at
//! the cap, new ones wait in the kernel's listen backlog, or, with [`ServerOptions::evict_idle_when_full`], the
//! oldest connection without a request in flight is closed to make room. The admin ports evict: a probe must get
//! through even while someone holds every slot open and silent, and a probe sends its request at once.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::Service;

use crate::tls::{HandshakeFailure, TlsMetrics};

/// Knobs of the bounded server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Time allowed for the TLS handshake, for reading HTTP/1.1 request headers, and for the first request to
    /// start after the connection is accepted.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// How long in-flight connections may drain after shutdown.
    pub shutdown_grace: Duration,
    /// Open connections at most (handshakes included).
    pub max_connections: usize,
    /// At the cap, close the oldest connection with no request in flight instead of leaving new ones in the
    /// backlog. For ports whose clients send their request as soon as they connect (probes, scrapes).
    pub evict_idle_when_full: bool,
    /// HTTP/2 streams a client may have open at once per connection.
    pub max_concurrent_streams: u32,
    /// Requests one connection may have past their body at once (see [`ConnectionPermits`]); `None` adds no cap.
    pub max_requests_per_connection: Option<usize>,
    /// Largest request header block.
    pub max_header_bytes: u32,
    /// Set to the number of open connections.
    pub connections: Gauge,
    /// Counts failed TLS handshakes.
    pub tls_metrics: TlsMetrics,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(25),
            max_connections: 128,
            evict_idle_when_full: false,
            max_concurrent_streams: 32,
            max_requests_per_connection: None,
            max_header_bytes: 16 * 1024,
            connections: Gauge::default(),
            tls_metrics: TlsMetrics::default(),
        }
    }
}

impl ServerOptions {
    /// The admin ports' bounds: probes and scrapes are few, quick, and send their request at once, so the cap is
    /// small, silence is short-lived, and a full server makes room for the newest connection.
    pub fn admin() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            max_connections: 32,
            evict_idle_when_full: true,
            max_concurrent_streams: 8,
            max_requests_per_connection: None,
            max_header_bytes: 16 * 1024,
            connections: Gauge::default(),
            tls_metrics: TlsMetrics::default(),
        }
    }
}

/// The request permits of the connection a request came on, in the request's extensions when
/// [`ServerOptions::max_requests_per_connection`] is set. A handler takes one before the expensive part of its
/// work, so one connection cannot hold every server-wide permit.
#[derive(Clone, Debug)]
pub struct ConnectionPermits(pub Arc<Semaphore>);

/// HTTP/2 receive window per stream. A hook body of 2 MiB then takes 128 window updates, a few milliseconds inside a
/// cluster.
const STREAM_WINDOW: u32 = 16 * 1024;

/// Requests in flight on one connection, and whether it has had any.
#[derive(Clone, Copy, Default)]
struct Activity {
    in_flight: usize,
    seen: bool,
}

/// The open connections, oldest first, for eviction.
#[derive(Default)]
struct Open {
    next: u64,
    slots: BTreeMap<u64, (Arc<watch::Sender<Activity>>, CancellationToken)>,
}

impl Open {
    fn insert(&mut self, activity: Arc<watch::Sender<Activity>>, evict: CancellationToken) -> u64 {
        let id = self.next;
        self.next += 1;
        self.slots.insert(id, (activity, evict));
        id
    }

    /// Closes the oldest connection with no request in flight; false when every one is busy.
    fn evict_oldest_idle(&mut self) -> bool {
        let victim = self
            .slots
            .iter()
            .find(|(_, (activity, _))| activity.borrow().in_flight == 0)
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.slots.remove(&id)) {
            Some((_, evict)) => {
                evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until `shutdown` is cancelled, then stops accepting
/// and lets open connections finish for up to `shutdown_grace`.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192) as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_concurrent_streams)
        .max_header_list_size(options.max_header_bytes)
        // Flow-control windows sized so a connection never holds more than streams × 16 KiB of unread body, and so
        // streams whose bodies are not being read can never use up the connection's window and stall the streams
        // that are: hyper's 1 MiB defaults let 64 waiting uploads deadlock a connection.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(
            options
                .max_concurrent_streams
                .saturating_mul(STREAM_WINDOW)
                .max(65_535),
        )
        // Pings find peers that vanished without closing; idle but live peers are handled by the idle timeout.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let connections = Arc::new(Semaphore::new(options.max_connections));
    let open = Arc::new(Mutex::new(Open::default()));
    let tracker = TaskTracker::new();
    let addr = listener.local_addr().context("listener has no local address")?;
    tracing::info!(%addr, tls = acceptor.is_some(), "listening (HTTP)");

    loop {
        // Without eviction, take a connection slot before accepting (new connections wait in the kernel's backlog
        // at the limit). With it, accept first, then make room if needed.
        let accepted = if options.evict_idle_when_full {
            match crate::net::accept(&listener, &shutdown).await {
                Some((tcp, peer)) => make_room(&connections, &open, &shutdown)
                    .await
                    .map(|permit| (tcp, peer, permit)),
                None => None,
            }
        } else {
            crate::net::accept_under_permit(&listener, &connections, &shutdown).await
        };
        let Some((tcp, peer, permit)) = accepted else {
            break;
        };
        let conn = Connection {
            acceptor: acceptor.clone(),
            builder: builder.clone(),
            router: router.clone(),
            shutdown: shutdown.clone(),
            options: options.clone(),
            open: open.clone(),
        };
        tracker.spawn(conn.run(tcp, peer, permit));
    }

    drop(listener);
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => tracing::info!(%addr, "all connections drained"),
        _ = tokio::time::sleep(options.shutdown_grace) => tracing::warn!(%addr, "shutdown grace elapsed; closing remaining connections"),
    }
    Ok(())
}

/// A free connection slot, evicting the oldest idle connection when there is none; `None` on shutdown.
async fn make_room(
    connections: &Arc<Semaphore>,
    open: &Mutex<Open>,
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = connections.clone().try_acquire_owned() {
        return Some(permit);
    }
    // The evicted connection's task gives its slot back as it ends; when every connection is busy, wait for one.
    open.lock()
        .expect("the open-connections lock is never poisoned")
        .evict_oldest_idle();
    tokio::select! {
        _ = shutdown.cancelled() => None,
        permit = connections.clone().acquire_owned() => Some(permit.expect("the connection semaphore is never closed")),
    }
}

struct Connection {
    acceptor: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    shutdown: CancellationToken,
    options: ServerOptions,
    open: Arc<Mutex<Open>>,
}

impl Connection {
    async fn run(self, tcp: tokio::net::TcpStream, peer: std::net::SocketAddr, permit: OwnedSemaphorePermit) {
        let _permit = permit;
        self.options.connections.inc();
        let _gauge = GaugeGuard(self.options.connections.clone());
        let (activity, watch) = watch::channel(Activity::default());
        let activity = Arc::new(activity);
        let evict = CancellationToken::new();
        let id = self
            .open
            .lock()
            .expect("the open-connections lock is never poisoned")
            .insert(activity.clone(), evict.clone());
        let _registered = Registered(self.open.clone(), id);
        let Some(acceptor) = self.acceptor.clone() else {
            self.serve(TokioIo::new(tcp), peer, activity, watch, evict).await;
            return;
        };
        let handshake = tokio::time::timeout(self.options.header_read_timeout, acceptor.accept(tcp));
        let tls = tokio::select! {
            result = handshake => match result {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    self.options.tls_metrics.handshake_failed(HandshakeFailure::of(&error));
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.options.tls_metrics.handshake_failed(HandshakeFailure::Timeout);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = evict.cancelled() => return,
        };
        self.serve(TokioIo::new(tls), peer, activity, watch, evict).await;
    }

    async fn serve<I>(
        self,
        io: I,
        peer: std::net::SocketAddr,
        activity: Arc<watch::Sender<Activity>>,
        mut watch: watch::Receiver<Activity>,
        evict: CancellationToken,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let permits = self
            .options
            .max_requests_per_connection
            .map(|n| ConnectionPermits(Arc::new(Semaphore::new(n))));
        let router = self.router;
        let service =
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                activity.send_modify(|a| {
                    a.in_flight += 1;
                    a.seen = true;
                });
                if let Some(permits) = &permits {
                    request.extensions_mut().insert(permits.clone());
                }
                let done = InFlight(activity.clone());
                let response = router.clone().call(request);
                async move {
                    let _done = done;
                    response.await
                }
            });
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        let options = &self.options;
        let close = tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = self.shutdown.cancelled() => options.shutdown_grace,
            _ = evict.cancelled() => {
                tracing::debug!(%peer, "closing an idle connection to make room for a new one");
                return;
            }
            _ = idle(&mut watch, options.header_read_timeout, options.idle_timeout) => {
                tracing::debug!(%peer, "closing an idle connection");
                options.header_read_timeout
            }
        };
        // GOAWAY on HTTP/2, close after the current response on HTTP/1.1; a peer that does not let the
        // connection finish is dropped after `close`.
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(close, conn).await;
    }
}

/// Resolves once the connection has had no request in flight for `idle_timeout` (or, before its first request,
/// for `first_request_timeout`: a client that connects and then sends nothing is not kept for long).
async fn idle(
    watch: &mut watch::Receiver<Activity>,
    first_request_timeout: Duration,
    idle_timeout: Duration,
) {
    loop {
        let now = *watch.borrow_and_update();
        if now.in_flight > 0 {
            if watch.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        }
        let limit = if now.seen {
            idle_timeout
        } else {
            first_request_timeout
        };
        match tokio::time::timeout(limit, watch.changed()).await {
            Err(_) => return,
            Ok(Err(_)) => return std::future::pending().await,
            Ok(Ok(())) => {}
        }
    }
}

/// Marks one request finished when dropped (answered, or abandoned by the client).
struct InFlight(Arc<watch::Sender<Activity>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.in_flight -= 1);
    }
}

/// Takes a connection off the eviction list when its task ends, however it ends.
struct Registered(Arc<Mutex<Open>>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut open) = self.0.lock() {
            open.slots.remove(&self.1);
        }
    }
}

/// Decrements the connections gauge when the connection task ends, however it ends.
struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get_livez(addr: SocketAddr) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_full_evicting_server_makes_room_for_a_probe() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ServerOptions {
            max_connections: 4,
            ..ServerOptions::admin()
        };
        let open = options.connections.clone();
        let stop = CancellationToken::new();
        let router = Router::new().route("/livez", get(|| async { "ok" }));
        let server = tokio::spawn(serve(router, listener, None, options, stop.clone()));
        // Ten silent connections and ten idle after one request: never more than four are kept.
        let mut held = Vec::new();
        for i in 0..20 {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            if i % 2 == 1 {
                tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
                    .await
                    .unwrap();
            }
            held.push(tcp);
        }
        let answer = tokio::time::timeout(Duration::from_secs(10), get_livez(addr))
            .await
            .expect("the probe waited behind idle connections");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(open.get() <= 4, "{} connections open", open.get());
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn without_eviction_a_full_server_leaves_new_connections_waiting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ServerOptions {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_millis(100),
            ..ServerOptions::default()
        };
        let stop = CancellationToken::new();
        let router = Router::new().route("/livez", get(|| async { "ok" }));
        let server = tokio::spawn(serve(router, listener, None, options, stop.clone()));
        let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let probe = tokio::spawn(get_livez(addr));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!probe.is_finished(), "a connection beyond the cap was served");
        drop(silent);
        let answer = tokio::time::timeout(Duration::from_secs(10), probe)
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
