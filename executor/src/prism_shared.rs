//! The Prism Central preflight, shared: at most one probe at a time per question, and its answer reused for a
//! while by every hook that asks the same question.
//!
//! Why: a probe per hook made every hook resolve the Prism Central name, connect and handshake on its own. Under
//! load (issue 26: 1000 Clusters, concurrency 64, a name that does not resolve) the cluster's resolver answered
//! those lookups one at a time, about 50 ms each, so hooks queued behind each other's lookups and some missed their
//! deadline. One probe per endpoint removes the queue instead of shortening it.
//!
//! **The question** ([`CheckKey`]) is everything the answer depends on: the host (without case) and port, the
//! trust settings (`insecure`, or a digest of `additionalTrustBundle`), and a keyed digest of the credentials. The
//! digest is an HMAC-SHA256 under a key drawn at random when the process starts: equal credentials give equal
//! keys within this process, a rotated password gives a new key (so the next hook probes again), and the key
//! reveals nothing outside the process, not even to a dictionary. The credentials themselves are never kept here,
//! and the key has no `Debug` output beyond the endpoint.
//!
//! **Single flight:** the first hook that finds no usable answer starts the probe as a task of its own and waits
//! for it, as does every hook that asks meanwhile. The probe is bounded by `--prism-central-timeout` from its
//! start, so a hook that joins it later waits less than that; each waiter also stops waiting at the bound, in case
//! the probe's own bound ever failed. The task does not depend on the hook that started it: a cancelled hook
//! (its caller gave up) does not cancel the answer the others wait for.
//!
//! **How long an answer is shared:** a success for `--prism-central-check-ttl`, a failure for the shorter
//! `--prism-central-check-failure-ttl`. A failure is usually what someone is fixing right now (a firewall, a
//! trust bundle, Prism Central restarting), and with `--prism-central-checks=block` a stale failure refuses
//! applies that would now pass; a stale success only delays a warning the agent itself will also report. The
//! failure TTL still turns an unreachable Prism Central from one probe per hook into one probe per TTL.
//!
//! **Bounded:** at most [`MAX_SHARED_CHECKS`] questions are remembered. When full, expired answers go first, then
//! the oldest entry; a probe whose entry was dropped still answers the hooks waiting for it.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use prometheus_client::metrics::gauge::Gauge;
use ring::{digest, hmac};
use tokio::{sync::watch, time::Instant};
use tracing::Instrument;

use crate::{
    domain::PrismCentral,
    prism::{Credentials, PreflightFailure, PreflightVerdict, Step, endpoint},
};

/// At most this many distinct questions (endpoint, trust settings, credentials) are remembered. Far above the
/// number of Prism Centrals a management cluster talks to; it bounds memory when Clusters name many endpoints.
pub(crate) const MAX_SHARED_CHECKS: usize = 1024;

/// Where a hook's answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// This hook started the probe.
    Probe,
    /// Another hook's probe was under way; this hook waited for it.
    InFlight,
    /// A finished probe's answer, within its TTL.
    Cached,
}

impl Source {
    /// The metric label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::InFlight => "in_flight",
            Self::Cached => "cached",
        }
    }
}

/// A finished check, as every hook that shares it sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    /// What the probe found.
    pub(crate) verdict: PreflightVerdict,
    /// When it finished.
    pub(crate) checked_at: Timestamp,
}

/// The question a check answers, without any secret (see the module documentation).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct CheckKey {
    host: String,
    port: u16,
    trust: Trust,
    credentials: [u8; 32],
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Trust {
    Insecure,
    /// SHA-256 of `additionalTrustBundle` as the Cluster gives it (not a secret; a digest keeps the key small).
    Verified([u8; 32]),
}

impl fmt::Debug for CheckKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckKey")
            .field("endpoint", &endpoint(&self.host, self.port))
            .field("verify_tls", &matches!(self.trust, Trust::Verified(_)))
            .finish_non_exhaustive()
    }
}

enum Slot {
    Probing(watch::Receiver<Option<Checked>>),
    Done { checked: Checked, expires: Instant },
}

struct Entry {
    /// Tells a probe whether the entry it would complete is still its own; increasing, so also the entry's age.
    id: u64,
    slot: Slot,
}

#[derive(Default)]
struct State {
    entries: Mutex<HashMap<CheckKey, Entry>>,
    next_id: AtomicU64,
}

impl State {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<CheckKey, Entry>> {
        // Every critical section leaves the map consistent (single inserts and removes), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared checks of one executor process.
pub(crate) struct SharedChecks {
    state: Arc<State>,
    credentials_key: hmac::Key,
    success_ttl: Duration,
    failure_ttl: Duration,
    capacity: usize,
    in_flight: Gauge<i64, AtomicI64>,
}

impl SharedChecks {
    /// Answers shared for `success_ttl` (passed) or `failure_ttl` (failed), at most `capacity` questions kept;
    /// `in_flight` counts the probes under way.
    pub(crate) fn new(
        success_ttl: Duration,
        failure_ttl: Duration,
        capacity: usize,
        in_flight: Gauge<i64, AtomicI64>,
    ) -> Self {
        let credentials_key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the operating system's random number generator works");
        Self {
            state: Arc::default(),
            credentials_key,
            success_ttl,
            failure_ttl,
            capacity: capacity.max(1),
            in_flight,
        }
    }

    /// The question for Prism Central `pc` with `credentials`.
    pub(crate) fn key(&self, pc: &PrismCentral, credentials: &Credentials) -> CheckKey {
        let trust = if pc.insecure {
            // The bundle is ignored then (see `prism::Target`), so it must not split the question.
            Trust::Insecure
        } else {
            let mut d = [0u8; 32];
            d.copy_from_slice(digest::digest(&digest::SHA256, pc.trust_bundle.as_bytes()).as_ref());
            Trust::Verified(d)
        };
        let mut mac = hmac::Context::with_key(&self.credentials_key);
        // Each part length-prefixed, so no two different credentials feed the same bytes.
        let mut part = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        match credentials {
            Credentials::Basic { username, password } => {
                part(b"basic");
                part(username.as_bytes());
                part(password.as_bytes());
            }
            Credentials::ApiKey(key) => {
                part(b"api-key");
                part(key.as_bytes());
            }
        }
        let mut credentials = [0u8; 32];
        credentials.copy_from_slice(mac.sign().as_ref());
        CheckKey {
            host: pc.host.to_ascii_lowercase(),
            port: pc.port,
            trust,
            credentials,
        }
    }

    /// The answer to `key`: a finished one within its TTL, else the probe under way, else `probe` started now.
    /// Never waits longer than `bound`, the probe's own bound.
    pub(crate) async fn check<F>(&self, key: CheckKey, bound: Duration, probe: F) -> (Checked, Source)
    where
        F: Future<Output = PreflightVerdict> + Send + 'static,
    {
        let (mut answer, source) = {
            let mut entries = self.state.entries();
            let now = Instant::now();
            match entries.get(&key).map(|e| &e.slot) {
                Some(Slot::Done { checked, expires }) if *expires > now => {
                    return (checked.clone(), Source::Cached);
                }
                Some(Slot::Probing(answer)) => (answer.clone(), Source::InFlight),
                _ => (self.start(&mut entries, key, now, probe), Source::Probe),
            }
        };
        // The lock is released: waiting holds nothing another hook needs.
        let waited = tokio::time::timeout(bound, answer.wait_for(Option::is_some))
            .await
            .map(|r| r.map(|a| a.clone()));
        let checked = match waited {
            Ok(Ok(Some(checked))) => checked,
            // Past the bound (the probe's own bound failed), or the probe's task ended without an answer (it
            // panicked): a failure, which the next hook does not inherit (the entry is gone or expires).
            _ => Checked {
                verdict: PreflightVerdict::Failed(PreflightFailure::Timeout {
                    after: bound,
                    step: Step::Shared,
                }),
                checked_at: Timestamp::now(),
            },
        };
        (checked, source)
    }

    /// Starts `probe` for `key` as its own task and records it as under way; returns where its answer appears.
    fn start<F>(
        &self,
        entries: &mut HashMap<CheckKey, Entry>,
        key: CheckKey,
        now: Instant,
        probe: F,
    ) -> watch::Receiver<Option<Checked>>
    where
        F: Future<Output = PreflightVerdict> + Send + 'static,
    {
        // Expired answers go first, then the oldest entry.
        crate::limits::make_room(
            entries,
            &key,
            self.capacity,
            |e| matches!(e.slot, Slot::Done { expires, .. } if expires <= now),
            |e| e.id,
        );
        let (tx, rx) = watch::channel(None);
        let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        entries.insert(
            key.clone(),
            Entry {
                id,
                slot: Slot::Probing(rx.clone()),
            },
        );
        self.in_flight.inc();
        let guard = ProbeGuard {
            state: self.state.clone(),
            key,
            id,
            in_flight: self.in_flight.clone(),
            finished: false,
        };
        let (success_ttl, failure_ttl) = (self.success_ttl, self.failure_ttl);
        tokio::spawn(
            async move {
                let mut guard = guard;
                let verdict = probe.await;
                let ttl = match verdict {
                    PreflightVerdict::Failed(_) => failure_ttl,
                    _ => success_ttl,
                };
                let checked = Checked {
                    verdict,
                    checked_at: Timestamp::now(),
                };
                // Stored before it is announced: a hook that asks after the announcement finds it.
                guard.finish(checked.clone(), ttl);
                let _ = tx.send(Some(checked));
            }
            // A child of the hook that started it: its trace shows the probe the others shared.
            .in_current_span(),
        );
        rx
    }

    /// How many questions are remembered (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.entries().len()
    }
}

/// Completes a probe's entry, and on every exit (a panic included) counts the probe out and drops an entry it
/// left under way, so no hook waits on an answer that will never come.
struct ProbeGuard {
    state: Arc<State>,
    key: CheckKey,
    id: u64,
    in_flight: Gauge<i64, AtomicI64>,
    finished: bool,
}

impl ProbeGuard {
    fn finish(&mut self, checked: Checked, ttl: Duration) {
        let mut entries = self.state.entries();
        if let Some(entry) = entries.get_mut(&self.key)
            && entry.id == self.id
        {
            entry.slot = Slot::Done {
                checked,
                expires: Instant::now() + ttl,
            };
        }
        self.finished = true;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.finished {
            let mut entries = self.state.entries();
            if entries.get(&self.key).is_some_and(|e| e.id == self.id) {
                entries.remove(&self.key);
            }
        }
        // Last: once the gauge reads zero, no entry is left under way.
        self.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const BOUND: Duration = Duration::from_secs(5);

    fn pc(host: &str) -> PrismCentral {
        PrismCentral {
            host: host.into(),
            port: 9440,
            insecure: false,
            trust_bundle: "QlVORExF".into(),
        }
    }

    fn basic(password: &str) -> Credentials {
        Credentials::Basic {
            username: "admin".into(),
            password: password.into(),
        }
    }

    fn checks(success: Duration, failure: Duration) -> SharedChecks {
        SharedChecks::new(success, failure, 4, Gauge::default())
    }

    #[test]
    fn the_key_separates_what_the_answer_depends_on() {
        let s = checks(BOUND, BOUND);
        let k = s.key(&pc("pc.example.com"), &basic("one"));
        assert_eq!(k, s.key(&pc("PC.example.com"), &basic("one")));
        assert_ne!(
            k,
            s.key(&pc("pc.example.com"), &basic("two")),
            "a rotated password"
        );
        assert_ne!(
            k,
            s.key(&pc("pc.example.com"), &Credentials::ApiKey("one".into()))
        );
        assert_ne!(k, s.key(&pc("other.example.com"), &basic("one")));
        let mut port = pc("pc.example.com");
        port.port = 9441;
        assert_ne!(k, s.key(&port, &basic("one")));
        let mut bundle = pc("pc.example.com");
        bundle.trust_bundle = "T1RIRVI=".into();
        assert_ne!(k, s.key(&bundle, &basic("one")));
        // insecure ignores the bundle, so the bundle does not split the question then.
        let (mut a, mut b) = (pc("pc.example.com"), bundle);
        (a.insecure, b.insecure) = (true, true);
        assert_eq!(s.key(&a, &basic("one")), s.key(&b, &basic("one")));
        assert_ne!(k, s.key(&a, &basic("one")));
        // A username/password split differently is different credentials.
        let split = |u: &str, p: &str| Credentials::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_ne!(s.key(&a, &split("ab", "c")), s.key(&a, &split("a", "bc")));
        // Another process (another random key) gives other digests for the same credentials.
        assert_ne!(
            k.credentials,
            checks(BOUND, BOUND)
                .key(&pc("pc.example.com"), &basic("one"))
                .credentials
        );
        // Nothing of the credentials prints.
        let printed = format!("{k:?}");
        assert!(printed.contains("pc.example.com:9440"), "{printed}");
        assert!(
            !printed.contains("one") && !printed.contains("admin"),
            "{printed}"
        );
    }

    /// A probe that counts its runs and answers `verdict` once `gate` opens.
    fn probe(
        ran: &Arc<AtomicUsize>,
        gate: &Arc<tokio::sync::Notify>,
        verdict: PreflightVerdict,
    ) -> impl Future<Output = PreflightVerdict> + Send + 'static {
        let (ran, gate) = (ran.clone(), gate.clone());
        async move {
            ran.fetch_add(1, Ordering::SeqCst);
            gate.notified().await;
            verdict
        }
    }

    #[tokio::test]
    async fn concurrent_hooks_share_one_probe_then_its_answer() {
        let s = Arc::new(checks(Duration::from_secs(600), Duration::from_secs(600)));
        let key = s.key(&pc("pc.example.com"), &basic("one"));
        let (count, gate) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(tokio::sync::Notify::new()),
        );
        let first = {
            let (s, key) = (s.clone(), key.clone());
            let p = probe(&count, &gate, PreflightVerdict::Passed);
            tokio::spawn(async move { s.check(key, BOUND, p).await })
        };
        // Let the first hook start its probe, then more hooks ask while it is under way.
        while s.in_flight.get() == 0 {
            tokio::task::yield_now().await;
        }
        let joined: Vec<_> = (0..10)
            .map(|_| {
                let (s, key) = (s.clone(), key.clone());
                let p = probe(&count, &gate, PreflightVerdict::Passed);
                tokio::spawn(async move { s.check(key, BOUND, p).await })
            })
            .collect();
        tokio::task::yield_now().await;
        gate.notify_one();
        let (checked, source) = first.await.unwrap();
        assert_eq!(
            (checked.verdict.clone(), source),
            (PreflightVerdict::Passed, Source::Probe)
        );
        for j in joined {
            let (c, source) = j.await.unwrap();
            assert_eq!(c, checked);
            assert!(matches!(source, Source::InFlight | Source::Cached), "{source:?}");
        }
        // Within the TTL: the stored answer, no probe.
        let (c, source) = s
            .check(key, BOUND, probe(&count, &gate, PreflightVerdict::Passed))
            .await;
        assert_eq!((c, source), (checked, Source::Cached));
        // Twelve hooks, one probe.
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(s.in_flight.get(), 0);
    }

    #[tokio::test]
    async fn failures_expire_sooner_and_a_new_question_probes() {
        let s = checks(Duration::from_secs(600), Duration::ZERO);
        let key = s.key(&pc("pc.example.com"), &basic("one"));
        let failed = PreflightVerdict::Failed(PreflightFailure::Connect);
        let (_, source) = s
            .check(key.clone(), BOUND, async {
                PreflightVerdict::Failed(PreflightFailure::Connect)
            })
            .await;
        assert_eq!(source, Source::Probe);
        // A failure TTL of zero: the next hook probes again.
        let (c, source) = s
            .check(key.clone(), BOUND, async { PreflightVerdict::Passed })
            .await;
        assert_eq!((c.verdict, source), (PreflightVerdict::Passed, Source::Probe));
        // A success is kept.
        let (c, source) = s.check(key, BOUND, async move { failed }).await;
        assert_eq!((c.verdict, source), (PreflightVerdict::Passed, Source::Cached));
        // Rotated credentials are another question.
        let rotated = s.key(&pc("pc.example.com"), &basic("two"));
        let (_, source) = s.check(rotated, BOUND, async { PreflightVerdict::Passed }).await;
        assert_eq!(source, Source::Probe);
    }

    #[tokio::test]
    async fn a_waiter_never_waits_past_the_bound() {
        let s = checks(Duration::from_secs(600), Duration::from_secs(600));
        let key = s.key(&pc("pc.example.com"), &basic("one"));
        // A probe that ignores its bound (it never should): the hook still answers, at the bound.
        let bound = Duration::from_millis(100);
        let (c, _) = s.check(key, bound, std::future::pending()).await;
        assert_eq!(
            c.verdict,
            PreflightVerdict::Failed(PreflightFailure::Timeout {
                after: bound,
                step: Step::Shared
            })
        );
        assert_eq!(s.in_flight.get(), 1, "the runaway probe is still counted");
    }

    async fn panics() -> PreflightVerdict {
        panic!("a probe that panics")
    }

    #[tokio::test]
    async fn a_probe_that_panics_is_not_waited_on_nor_remembered() {
        let s = checks(Duration::from_secs(600), Duration::from_secs(600));
        let key = s.key(&pc("pc.example.com"), &basic("one"));
        let (c, _) = s.check(key.clone(), BOUND, panics()).await;
        assert!(matches!(c.verdict, PreflightVerdict::Failed(_)));
        // The task's state is dropped as it unwinds; the waiter may see the answer channel close just before.
        while s.in_flight.get() != 0 {
            tokio::task::yield_now().await;
        }
        let (c, source) = s.check(key, BOUND, async { PreflightVerdict::Passed }).await;
        assert_eq!((c.verdict, source), (PreflightVerdict::Passed, Source::Probe));
    }

    #[tokio::test]
    async fn the_number_of_questions_is_bounded() {
        let s = checks(Duration::from_secs(600), Duration::from_secs(600));
        for i in 0..10 {
            let key = s.key(&pc(&format!("pc{i}.example.com")), &basic("one"));
            s.check(key, BOUND, async { PreflightVerdict::Passed }).await;
            assert!(s.len() <= 4, "{}", s.len());
        }
        // The newest is kept, the oldest went first.
        let newest = s.key(&pc("pc9.example.com"), &basic("one"));
        let (_, source) = s.check(newest, BOUND, async { PreflightVerdict::Passed }).await;
        assert_eq!(source, Source::Cached);
        let oldest = s.key(&pc("pc0.example.com"), &basic("one"));
        let (_, source) = s.check(oldest, BOUND, async { PreflightVerdict::Passed }).await;
        assert_eq!(source, Source::Probe);
    }
}
