//! Binding listeners, and accepting on them. Both binaries listen on `[::]:<port>` by default: on Linux an IPv6 wildcard socket also
//! accepts IPv4 (as v4-mapped addresses) unless `net.ipv6.bindv6only` is set, so one default serves IPv4-only,
//! IPv6-only and dual-stack clusters. A host (or pod network namespace) without IPv6 refuses that bind; then the
//! listener falls back to `0.0.0.0:<port>` and says so in a warning, rather than failing a pod that would work.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The next connection on `listener`, with TCP_NODELAY set, or `None` once `shutdown` is cancelled. A failed
/// accept (usually EMFILE: out of file descriptors) is logged and retried after 100 ms rather than in a tight loop
/// that would spin a core while the condition lasts.
///
/// TCP_NODELAY because both servers answer in several small writes (HTTP/2 and gRPC frames): with Nagle's
/// algorithm, a response waits on the client's delayed ACK, about 40 ms added to most calls. (tonic applies its
/// own default only to sockets it binds itself.)
pub async fn accept(listener: &TcpListener, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// A connection slot from `slots`, then the next connection (as [`accept`]); `None` once `shutdown` is cancelled.
/// The slot is taken before accepting, so at the limit new connections wait in the kernel's backlog instead of
/// costing memory (a task, TLS state) here. The permit is the connection's: hold it until the connection closes.
pub async fn accept_under_permit(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        permit = slots.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
    };
    let (tcp, peer) = accept(listener, shutdown).await?;
    Some((tcp, peer, permit))
}

/// The address to retry on when binding `addr` failed with `error`: the IPv4 wildcard on the same port, but only
/// when `addr` is the IPv6 wildcard and the error says the host has no IPv6 (EAFNOSUPPORT: the kernel was built
/// or booted without it; EADDRNOTAVAIL: IPv6 is disabled on every interface). A specific address, or any other
/// error (port in use, permission denied), is the operator's to fix, so it is never papered over.
pub fn ipv4_fallback(addr: SocketAddr, error: &io::Error) -> Option<SocketAddr> {
    let SocketAddr::V6(v6) = addr else {
        return None;
    };
    if !v6.ip().is_unspecified() {
        return None;
    }
    let no_ipv6 = error.raw_os_error() == Some(libc::EAFNOSUPPORT)
        || error.raw_os_error() == Some(libc::EADDRNOTAVAIL)
        || error.kind() == io::ErrorKind::AddrNotAvailable;
    no_ipv6.then(|| SocketAddr::from(([0, 0, 0, 0], addr.port())))
}

/// Binds `addr` with `bind`, falling back to the IPv4 wildcard (see [`ipv4_fallback`]) with a logged warning.
/// Generic over the bind step so the fallback can be tested without a host that lacks IPv6.
pub async fn bind_with<T, F, Fut>(addr: SocketAddr, mut bind: F) -> io::Result<T>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    match bind(addr).await {
        Ok(bound) => Ok(bound),
        Err(error) => match ipv4_fallback(addr, &error) {
            Some(v4) => {
                tracing::warn!(
                    requested = %addr,
                    listening = %v4,
                    %error,
                    "this host has no IPv6; listening on IPv4 only"
                );
                bind(v4).await
            }
            None => Err(error),
        },
    }
}

/// Binds a TCP listener on `addr`, with the IPv4 fallback of [`bind_with`].
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_with(addr, TcpListener::bind).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn only_the_ipv6_wildcard_without_ipv6_falls_back() {
        let wildcard: SocketAddr = "[::]:9443".parse().unwrap();
        let v4: SocketAddr = "0.0.0.0:9443".parse().unwrap();
        assert_eq!(ipv4_fallback(wildcard, &os(libc::EAFNOSUPPORT)), Some(v4));
        assert_eq!(ipv4_fallback(wildcard, &os(libc::EADDRNOTAVAIL)), Some(v4));
        // Port in use or no permission: the same failure would follow on IPv4, and hiding it helps nobody.
        assert_eq!(ipv4_fallback(wildcard, &os(libc::EADDRINUSE)), None);
        assert_eq!(ipv4_fallback(wildcard, &os(libc::EACCES)), None);
        // An address the operator chose is bound as given or not at all.
        let specific: SocketAddr = "[fd00::1]:9443".parse().unwrap();
        assert_eq!(ipv4_fallback(specific, &os(libc::EADDRNOTAVAIL)), None);
        let ipv4: SocketAddr = "0.0.0.0:9443".parse().unwrap();
        assert_eq!(ipv4_fallback(ipv4, &os(libc::EAFNOSUPPORT)), None);
    }

    #[tokio::test]
    async fn bind_retries_on_ipv4_when_ipv6_is_missing() {
        let tried = Mutex::new(Vec::new());
        let bound = bind_with("[::]:8081".parse().unwrap(), |addr: SocketAddr| {
            tried.lock().unwrap().push(addr);
            let result = if addr.is_ipv6() {
                Err(os(libc::EAFNOSUPPORT))
            } else {
                Ok(addr)
            };
            async move { result }
        })
        .await
        .unwrap();
        assert_eq!(bound, "0.0.0.0:8081".parse::<SocketAddr>().unwrap());
        assert_eq!(
            *tried.lock().unwrap(),
            ["[::]:8081".parse::<SocketAddr>().unwrap(), bound]
        );
    }

    #[tokio::test]
    async fn other_errors_are_returned_without_a_retry() {
        let mut calls = 0;
        let error = bind_with("[::]:8081".parse().unwrap(), |_| {
            calls += 1;
            async { Err::<(), _>(os(libc::EADDRINUSE)) }
        })
        .await
        .unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn a_connection_is_accepted_only_under_a_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let shutdown = CancellationToken::new();
        let _first = TcpStream::connect(addr).await.unwrap();
        let (tcp, _, permit) = accept_under_permit(&listener, &slots, &shutdown).await.unwrap();
        assert!(tcp.nodelay().unwrap(), "accepted sockets have TCP_NODELAY");
        assert_eq!(slots.available_permits(), 0, "the connection holds the slot");
        // A second client waits in the backlog: with no slot free, shutdown ends the wait without accepting it.
        let _second = TcpStream::connect(addr).await.unwrap();
        shutdown.cancel();
        assert!(accept_under_permit(&listener, &slots, &shutdown).await.is_none());
        drop(permit);
        assert_eq!(
            slots.available_permits(),
            1,
            "closing the connection gives the slot back"
        );
    }

    #[tokio::test]
    async fn the_default_wildcard_binds_here() {
        // This host either has IPv6 (the wildcard binds) or not (the fallback binds); either way a listener.
        let listener = bind("[::]:0".parse().unwrap()).await.unwrap();
        assert!(listener.local_addr().unwrap().ip().is_unspecified());
    }
}
