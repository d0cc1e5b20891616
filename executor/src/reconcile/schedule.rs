//! When each Cluster's workload-side check is due: a fixed slot per Cluster in the period, counted from when this
//! replica started leading.

use super::*;

/// When each Cluster is looked at: a slot per Cluster, at a fixed phase of the period derived from its name, so the
/// periodic checks of N Clusters are spread evenly over the period from the moment a replica starts leading (no
/// burst after a start or a takeover, no herd); and whether a watch saw a change since the last pass.
pub(super) struct Schedule {
    pub(super) period: Duration,
    pub(super) epoch: tokio::time::Instant,
    pub(super) state: Mutex<ScheduleState>,
}

#[derive(Default)]
pub(super) struct ScheduleState {
    pub(super) dirty: std::collections::HashSet<ClusterKey>,
    /// When each Cluster's next check is due (dropped when the Cluster is deleted).
    pub(super) due: HashMap<ClusterKey, tokio::time::Instant>,
    /// The resourceVersion each watched object was last seen at, so that a re-list after a watch failure marks
    /// only what changed meanwhile (and the first list after start marks nothing).
    pub(super) seen: HashMap<(&'static str, String, String), String>,
}

impl Schedule {
    pub(super) fn new(period: Duration) -> Self {
        Self {
            period: period.max(Duration::from_millis(100)),
            epoch: tokio::time::Instant::now(),
            state: Mutex::default(),
        }
    }

    /// This Cluster's phase in the period.
    pub(super) fn phase(&self, key: &ClusterKey) -> Duration {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let period = self.period.as_millis().max(1) as u64;
        Duration::from_millis(h.finish() % period)
    }

    /// The first slot of this Cluster after `now`.
    pub(super) fn next_slot(&self, key: &ClusterKey, now: tokio::time::Instant) -> tokio::time::Instant {
        let first = self.epoch + self.phase(key);
        if now < first {
            return first;
        }
        let period = self.period.as_nanos();
        let periods = (now - first).as_nanos() / period + 1;
        first + Duration::from_nanos(u64::try_from(periods * period).unwrap_or(u64::MAX))
    }

    /// Whether a change was seen since the last pass (clearing it), and when the Cluster's check is due. A Cluster
    /// seen for the first time is due at its first slot after this replica started leading.
    pub(super) fn take(&self, key: &ClusterKey, now: tokio::time::Instant) -> (bool, tokio::time::Instant) {
        let mut state = lock(&self.state);
        let dirty = state.dirty.remove(key);
        let due = *state
            .due
            .entry(key.clone())
            .or_insert_with(|| self.next_slot(key, now));
        (dirty, due)
    }

    /// After a pass at `now`: the next check is the Cluster's next slot once the due one has been served (however
    /// late the queue ran it), else the due one still stands (a pass a change triggered between slots).
    pub(super) fn passed(&self, key: &ClusterKey, now: tokio::time::Instant) -> tokio::time::Instant {
        let mut state = lock(&self.state);
        let next = self.next_slot(key, now);
        let due = state.due.entry(key.clone()).or_insert(next);
        if *due <= now {
            *due = next;
        }
        *due
    }

    /// Records a watch event, marking the Clusters `clusters` maps it to as changed. The first sight of an object
    /// (the first list) marks nothing; a re-list marks only objects whose resourceVersion moved.
    pub(super) fn observe<K: kube::Resource>(
        &self,
        kind: &'static str,
        event: &watcher::Event<K>,
        clusters: impl Fn(&K) -> Vec<ClusterKey>,
    ) -> Vec<ClusterKey> {
        let (obj, initial, deleted) = match event {
            watcher::Event::Apply(o) => (o, false, false),
            watcher::Event::Delete(o) => (o, false, true),
            watcher::Event::InitApply(o) => (o, true, false),
            watcher::Event::Init | watcher::Event::InitDone => return Vec::new(),
        };
        let meta = obj.meta();
        let id = (
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let rv = meta.resource_version.clone().unwrap_or_default();
        let mut state = lock(&self.state);
        let before = if deleted {
            state.seen.remove(&id)
        } else {
            state.seen.insert(id, rv.clone())
        };
        let changed = if initial {
            before.is_some_and(|b| b != rv)
        } else {
            before.is_none_or(|b| b != rv) || deleted
        };
        if !changed {
            return Vec::new();
        }
        let keys = clusters(obj);
        if deleted && kind == "Cluster" {
            for k in &keys {
                state.due.remove(k);
            }
        }
        state.dirty.extend(keys.iter().cloned());
        keys
    }
}
