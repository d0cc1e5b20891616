//! The Prism Central Warning Event, written once per Cluster per failure rather than once per hook.
//!
//! Why: with `--prism-central-checks=warn` and Prism Central unreachable, every hook wrote a
//! `PrismCentralPreflightFailed` Warning Event on its Cluster, one management API call per hook on top of the apply
//! (issue 26 item 4: 5.00 calls per steady-state re-apply instead of 4.01). kube's `Recorder` folds repeats of one
//! reason into one Event, but by PATCHing the Event's series on every repeat, so the call stayed; and it tells
//! Events apart by reason, not by note, so another failure within its six minutes only raised the first Event's
//! count under the first failure's note.
//!
//! **The rule:** a Cluster (namespace and name, and its uid: a Cluster re-created under the same name is another
//! Cluster) is warned about one failure (the Prism Central endpoint and the failure kind, e.g. `DNS`) at most once
//! per `--prism-central-warning-interval`. It is warned again at once for another kind or endpoint, and for the
//! same failure after a check for this Cluster passed (an outage that ended and began again). Once the interval
//! has passed, a continuing outage is written again, so it stays visible after the API server drops old Events
//! (by default after an hour). The hook's answer (its note) and the metrics still report every failed check.
//!
//! **Per process:** each executor replica remembers its own warnings, so with several replicas serving hooks each
//! may write one Event for the same failure; a restarted executor writes one again.
//!
//! **Bounded:** at most [`MAX_WARNED_CLUSTERS`] Clusters are remembered, one entry each (the latest failure
//! written). When full, expired entries go first, then the oldest; a Cluster forgotten early is at worst warned
//! once more, so a flood of Clusters costs Events, never unbounded memory.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::domain::ClusterKey;

/// At most this many Clusters' warnings are remembered (as many as the last preflights, `MAX_REMEMBERED_PREFLIGHTS`).
pub(crate) const MAX_WARNED_CLUSTERS: usize = crate::prism::MAX_REMEMBERED_PREFLIGHTS;

/// One failure, as far as the warning is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure {
    /// SHA-256 of the endpoint: the host comes from the Cluster, so what is kept per Cluster has a fixed size.
    endpoint: [u8; 32],
    kind: &'static str,
}

impl Failure {
    fn new(endpoint: &str, kind: &'static str) -> Self {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, endpoint.as_bytes()).as_ref());
        Self {
            endpoint: digest,
            kind,
        }
    }
}

struct Warned {
    uid: String,
    failure: Failure,
    at: Instant,
}

/// Which Cluster was warned about which failure, and when (see the module documentation).
pub(crate) struct PrismWarnings {
    warned: Mutex<HashMap<ClusterKey, Warned>>,
    interval: Duration,
    capacity: usize,
}

impl PrismWarnings {
    /// The same failure is written at most once per `interval` per Cluster (zero: on every hook); at most
    /// `capacity` Clusters remembered.
    pub(crate) fn new(interval: Duration, capacity: usize) -> Self {
        Self {
            warned: Mutex::default(),
            interval,
            capacity: capacity.max(1),
        }
    }

    fn warned(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterKey, Warned>> {
        // Every critical section is a single insert or remove, so poisoning is ignored.
        self.warned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the Warning Event about failure `kind` at `endpoint` is due on the Cluster `key` (uid `uid`). When
    /// it is, it is taken as written from now on, so a concurrent hook does not write it too; if the write then
    /// fails, [`Self::unclaim`] gives it back.
    pub(crate) fn claim(&self, key: &ClusterKey, uid: &str, endpoint: &str, kind: &'static str) -> bool {
        self.claim_at(key, uid, endpoint, kind, Instant::now())
    }

    fn claim_at(
        &self,
        key: &ClusterKey,
        uid: &str,
        endpoint: &str,
        kind: &'static str,
        now: Instant,
    ) -> bool {
        let failure = Failure::new(endpoint, kind);
        let mut warned = self.warned();
        if let Some(w) = warned.get(key)
            && w.uid == uid
            && w.failure == failure
            && !self.expired(w, now)
        {
            return false;
        }
        crate::limits::make_room(
            &mut warned,
            key,
            self.capacity,
            |w| self.expired(w, now),
            |w| w.at,
        );
        warned.insert(
            key.clone(),
            Warned {
                uid: uid.to_owned(),
                failure,
                at: now,
            },
        );
        true
    }

    /// Gives back a claim whose Event could not be written, so the next hook tries again.
    pub(crate) fn unclaim(&self, key: &ClusterKey, uid: &str, endpoint: &str, kind: &'static str) {
        let failure = Failure::new(endpoint, kind);
        let mut warned = self.warned();
        if warned
            .get(key)
            .is_some_and(|w| w.uid == uid && w.failure == failure)
        {
            warned.remove(key);
        }
    }

    /// A check for this Cluster passed: its next failure is a new outage, and is written.
    pub(crate) fn recovered(&self, key: &ClusterKey) {
        self.forget(key);
    }

    /// Forgets a Cluster (it is gone).
    pub(crate) fn forget(&self, key: &ClusterKey) {
        self.warned().remove(key);
    }

    fn expired(&self, w: &Warned, now: Instant) -> bool {
        now.saturating_duration_since(w.at) >= self.interval
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.warned().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "pc.example.com:9440";

    fn key(name: &str) -> ClusterKey {
        ClusterKey::new("ns", name).unwrap()
    }

    #[test]
    fn one_warning_per_cluster_and_failure() {
        let w = PrismWarnings::new(Duration::from_secs(600), 16);
        let (a, b) = (key("a"), key("b"));
        assert!(w.claim(&a, "uid-a", EP, "DNS"));
        for _ in 0..10 {
            assert!(!w.claim(&a, "uid-a", EP, "DNS"), "the same failure again");
        }
        // Another Cluster, another kind, another endpoint, a re-created Cluster: each is written.
        assert!(w.claim(&b, "uid-b", EP, "DNS"));
        assert!(w.claim(&a, "uid-a", EP, "CONNECT"));
        assert!(!w.claim(&a, "uid-a", EP, "CONNECT"));
        assert!(w.claim(&a, "uid-a", "other.example.com:9440", "CONNECT"));
        assert!(w.claim(&a, "uid-a2", "other.example.com:9440", "CONNECT"));
        // Back to the first kind: the latest failure written is the one remembered, so this one is new again.
        assert!(w.claim(&a, "uid-a2", EP, "DNS"));
        // A recovery: the same failure afterwards is a new outage.
        w.recovered(&b);
        assert!(w.claim(&b, "uid-b", EP, "DNS"));
        // A write that failed is given back, and only the claim it made.
        w.unclaim(&b, "uid-b", EP, "CONNECT");
        assert!(!w.claim(&b, "uid-b", EP, "DNS"));
        w.unclaim(&b, "uid-b", EP, "DNS");
        assert!(w.claim(&b, "uid-b", EP, "DNS"));
    }

    #[test]
    fn the_same_failure_is_written_again_after_the_interval() {
        let w = PrismWarnings::new(Duration::from_secs(600), 16);
        let a = key("a");
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(w.claim_at(&a, "uid-a", EP, "DNS", t0));
        assert!(!w.claim_at(&a, "uid-a", EP, "DNS", at(599)));
        assert!(w.claim_at(&a, "uid-a", EP, "DNS", at(600)));
        assert!(!w.claim_at(&a, "uid-a", EP, "DNS", at(601)));
        // An interval of zero writes on every hook, as before.
        let every = PrismWarnings::new(Duration::ZERO, 16);
        assert!(every.claim(&a, "uid-a", EP, "DNS"));
        assert!(every.claim(&a, "uid-a", EP, "DNS"));
    }

    #[test]
    fn a_flood_of_clusters_is_bounded_and_the_oldest_goes_first() {
        let w = PrismWarnings::new(Duration::from_secs(600), 4);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for i in 0..100 {
            assert!(w.claim_at(&key(&format!("c{i}")), "u", EP, "DNS", at(i)));
            assert!(w.len() <= 4, "{}", w.len());
        }
        // The newest are remembered; the oldest was forgotten, so it is warned once more.
        assert!(!w.claim_at(&key("c99"), "u", EP, "DNS", at(100)));
        assert!(w.claim_at(&key("c0"), "u", EP, "DNS", at(101)));
        // Expired entries make room before any live one is dropped.
        assert!(w.claim_at(&key("fresh"), "u", EP, "DNS", at(700_000)));
        assert_eq!(w.len(), 1);
    }
}
