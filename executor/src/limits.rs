//! Bounds on what an API server may make the executor hold: the size of a response body, and the length and
//! characters of any text taken from an answer before it is stored, logged or answered.
//!
//! kube's client collects a whole response body into memory (and copies it again into a `String`), and its watch
//! decoder buffers a line until it sees a newline, however long. Anyone who can write a Cluster's
//! `<cluster>-kubeconfig` Secret chooses the workload API server, so an endless body would grow the executor
//! until the kernel kills it, and with it every hook and every deletion. [`Capped`] is the bound: it sits in the
//! client stack of every client the executor builds (`observe::observed_client`), and ends a body with
//! [`BodyTooLarge`] once it passes the limit, so the caller gets a clear error and the connection is dropped
//! instead of read to its end.

use std::{
    collections::HashMap,
    error::Error as StdError,
    fmt,
    hash::Hash,
    pin::Pin,
    task::{Context, Poll},
};

use hyper::body::{Body, Bytes, Frame, SizeHint};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Default bound on a workload API server's response: the executor reads a Namespace, a Secret, a Deployment
/// (all small objects) from a workload cluster, so a few MiB is far more than any legitimate answer.
pub const DEFAULT_WORKLOAD_RESPONSE_LIMIT_BYTES: u64 = 4 * 1024 * 1024;
/// Default bound on a management API server's response: pages of Cluster metadata, HelmChartProxies,
/// HelmReleaseProxies and ConfigMaps. Kubernetes itself refuses objects over about 1.5 MiB, so tens of MiB leaves
/// room for any page the executor asks for.
pub const DEFAULT_MANAGEMENT_RESPONSE_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// Default budget of the hooks' Cluster copies (`hook_cache`): about 2000 Clusters of 8 KiB of JSON each.
pub(crate) const DEFAULT_HOOK_CLUSTER_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Longest Kubernetes `reason` kept from an answer. Real reasons are short CamelCase words (`Conflict`,
/// `Invalid`, `AlreadyExists`).
pub const MAX_REASON_CHARS: usize = 64;
/// Longest message the executor stores, logs or answers that may carry text from elsewhere.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// A response body passed its limit; the body was cut off there and the connection dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    /// The limit, in bytes.
    pub limit: u64,
    /// Whether the limit was on one line of a watch stream (one event) rather than on the whole body.
    pub per_event: bool,
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.per_event {
            "a watch event"
        } else {
            "the response"
        };
        write!(
            f,
            "{what} exceeded the {} limit and was cut off",
            size(self.limit)
        )
    }
}

impl StdError for BodyTooLarge {}

/// Makes room for one more entry in a map the executor bounds at `capacity`, unless `key` is already in it: entries
/// for which `expired` holds go first, then the oldest by `age`, one at a time, until one more fits. Every per-key
/// memory that input can grow (Prism Central answers, warnings, preflight records) is bounded the same way.
pub fn make_room<K: Clone + Eq + Hash, V, A: Ord>(
    map: &mut HashMap<K, V>,
    key: &K,
    capacity: usize,
    expired: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> A,
) {
    if map.len() < capacity || map.contains_key(key) {
        return;
    }
    map.retain(|_, v| !expired(v));
    while map.len() >= capacity {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| k.clone()) else {
            break;
        };
        map.remove(&oldest);
    }
}

/// `4 MiB`, `512 KiB`, `100 bytes`: a limit, for messages.
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// `5m`, `90s`, `1h30m`: a fixed rendering of a configured duration, for messages.
pub(crate) fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// How a body is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// The whole body: a GET, LIST, PATCH... answer is collected whole by kube.
    Whole,
    /// Each newline-delimited event of a watch: the stream itself may run for hours, but kube buffers one line
    /// at a time.
    PerLine,
}

/// A response body that fails with [`BodyTooLarge`] once more than `limit` bytes arrived (in all, or since the
/// last newline), and then ends.
pub(crate) struct Capped<B> {
    inner: B,
    limit: u64,
    bound: Bound,
    seen: u64,
    failed: bool,
}

impl<B> Capped<B> {
    pub(crate) fn new(inner: B, limit: u64, bound: Bound) -> Self {
        Self {
            inner,
            limit,
            bound,
            seen: 0,
            failed: false,
        }
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            self.seen = match self.bound {
                Bound::Whole => self.seen.saturating_add(len),
                Bound::PerLine => match data.iter().rposition(|b| *b == b'\n') {
                    Some(i) => (data.len() - i - 1) as u64,
                    None => self.seen.saturating_add(len),
                },
            };
            if self.seen > self.limit {
                self.failed = true;
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                    limit: self.limit,
                    per_event: self.bound == Bound::PerLine,
                }))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.failed {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

/// The [`BodyTooLarge`] somewhere in an error's chain, however kube wrapped it: `Service` around a boxed error
/// (a collected body), `ReadEvents` around an `io::Error` (a watch stream), or any `source()`.
pub fn body_too_large(error: &(dyn StdError + 'static)) -> Option<BodyTooLarge> {
    let mut current = Some(error);
    // Bounded, in case a chain ever loops back on itself.
    for _ in 0..16 {
        let e = current?;
        if let Some(found) = e.downcast_ref::<BodyTooLarge>() {
            return Some(*found);
        }
        current = if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // `io::Error::source` skips the error it wraps; `get_ref` is that error.
            io.get_ref().map(|inner| inner as &(dyn StdError + 'static))
        } else if let Some(kube::Error::Service(inner)) = e.downcast_ref::<kube::Error>() {
            Some(inner.as_ref() as &(dyn StdError + 'static))
        } else {
            e.source()
        };
    }
    None
}

/// Text from an answer made fit to store, log or answer: control characters (newlines, escapes that would rewrite
/// a terminal or forge log lines) and bidirectional overrides dropped, and at most `max_chars` characters kept,
/// with an ellipsis saying it was cut.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    for (kept, c) in text.chars().filter(|c| !unsafe_char(*c)).enumerate() {
        if kept == max_chars {
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out
}

/// Characters that must not reach a log line or a message: C0/C1 controls, and the Unicode format characters that
/// reorder or hide text when displayed.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// An error's text fit for a log line: [`sanitize`]d and bounded. For errors whose text may carry an API
/// server's answer (a kube error prints the whole Status it got).
pub fn brief(error: &dyn fmt::Display) -> String {
    sanitize(&error.to_string(), MAX_MESSAGE_CHARS)
}

/// The log filter the executor installs: the operator's `filter`, with kube's client module held to errors. That
/// module logs whole response bodies (a body that does not deserialise, at WARN; error bodies and Statuses, which
/// can echo the object sent, credentials included, at DEBUG). Added last, so it wins over a broader directive such
/// as `kube_client=debug`.
pub fn log_filter(filter: &str) -> String {
    const QUIET: &str = "kube_client::client=error";
    if filter.trim().is_empty() {
        QUIET.to_owned()
    } else {
        format!("{filter},{QUIET}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(humanize(Duration::from_secs(300)), "5m");
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn make_room_drops_expired_entries_then_the_oldest_and_never_for_a_known_key() {
        // value: (age, expired)
        let mut map: HashMap<&str, (u32, bool)> =
            HashMap::from([("a", (1, false)), ("b", (2, true)), ("c", (3, false))]);
        let room = |map: &mut HashMap<&str, (u32, bool)>, key| make_room(map, &key, 3, |v| v.1, |v| v.0);
        room(&mut map, "c");
        assert_eq!(map.len(), 3, "a known key is replaced in place: nothing goes");
        room(&mut map, "d");
        assert!(
            !map.contains_key("b") && map.len() == 2,
            "the expired entry goes first, and only it"
        );
        map.insert("d", (4, false));
        room(&mut map, "e");
        assert!(!map.contains_key("a") && map.len() == 2, "then the oldest");
    }

    fn chunks(parts: Vec<&'static [u8]>) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        StreamBody::new(futures::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(p)))),
        ))
    }

    #[tokio::test]
    async fn a_whole_body_over_the_limit_fails_and_ends() {
        let ok = Capped::new(chunks(vec![b"0123", b"4567"]), 8, Bound::Whole);
        assert_eq!(ok.collect().await.unwrap().to_bytes().len(), 8);
        let over = Capped::new(chunks(vec![b"0123", b"45678", b"9"]), 8, Bound::Whole);
        let err = over.collect().await.unwrap_err();
        let found = body_too_large(err.as_ref()).unwrap();
        assert_eq!(
            found,
            BodyTooLarge {
                limit: 8,
                per_event: false
            }
        );
        assert_eq!(
            found.to_string(),
            "the response exceeded the 8 bytes limit and was cut off"
        );
    }

    #[tokio::test]
    async fn a_watch_is_bounded_per_line_not_in_all() {
        // Many short events: far more than the limit in all, every line under it.
        let many: Vec<&'static [u8]> = std::iter::repeat_n(&b"{\"a\":1}\n"[..], 100).collect();
        let ok = Capped::new(chunks(many), 16, Bound::PerLine);
        assert_eq!(ok.collect().await.unwrap().to_bytes().len(), 800);
        // One line that never ends fails, even when split across frames.
        let endless = Capped::new(chunks(vec![b"{}\n0123456789", b"0123456789"]), 16, Bound::PerLine);
        let err = endless.collect().await.unwrap_err();
        assert!(body_too_large(err.as_ref()).unwrap().per_event);
    }

    #[test]
    fn found_through_kube_and_io_wrappers() {
        let too_large = BodyTooLarge {
            limit: 4 * 1024 * 1024,
            per_event: false,
        };
        let service = kube::Error::Service(Box::new(too_large));
        assert_eq!(body_too_large(&service), Some(too_large));
        let nested = kube::Error::Service(Box::new(kube::Error::Service(Box::new(too_large))));
        assert_eq!(body_too_large(&nested), Some(too_large));
        let watch = kube::Error::ReadEvents(std::io::Error::other(kube::Error::Service(Box::new(too_large))));
        assert_eq!(body_too_large(&watch), Some(too_large));
        let other = kube::Error::Service("connection reset".into());
        assert_eq!(body_too_large(&other), None);
        assert_eq!(size(too_large.limit), "4 MiB");
    }

    #[test]
    fn kube_client_bodies_are_never_logged() {
        assert_eq!(log_filter("info"), "info,kube_client::client=error");
        assert_eq!(
            log_filter("debug,kube_client=trace"),
            "debug,kube_client=trace,kube_client::client=error"
        );
        assert_eq!(log_filter(""), "kube_client::client=error");
    }

    #[test]
    fn sanitize_strips_controls_and_bounds_length() {
        assert_eq!(sanitize("Conflict", 64), "Conflict");
        assert_eq!(sanitize("a\nb\r\x1b[31mc\u{202E}d\0", 64), "ab[31mcd");
        let long = "x".repeat(10_000);
        let cut = sanitize(&long, 64);
        assert_eq!(cut.chars().count(), 65);
        assert!(cut.ends_with('…'));
        // Characters, not bytes: a multi-byte character is never split.
        assert_eq!(sanitize("ééé", 2), "éé…");
    }
}
