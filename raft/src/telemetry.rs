//! `RaftTelemetry`: the Raft series of `/metrics` (prometheus-client), observed where they
//! happen: the batcher (commit latency, writes per entry), the log writer thread (entries per
//! append transaction and its duration incl. fsync), the state machine (apply, snapshot build
//! and install), a watch over openraft's metrics (campaigns, leaderships) and, at scrape time,
//! `RaftNode::refresh_telemetry` (per-follower lag on the leader).
//!
//! Disabled (`RaftTuning.metrics = false`, the node's `OUTPOST_METRICS=off`), every observe is
//! one branch and reads no clock; the lag gauges are still refreshed at scrape time.
//!
//! The lag in seconds needs to know when the leader appended the entry a follower lacks: the
//! log store records each append as a span of indexes with the instant it was queued
//! (`AppendRing`, bounded by `RING_SPANS`). The pure `lag_seconds` looks up the first entry
//! past the follower's matched index there. The decisions (`lag_seconds`, `follower_lags`,
//! `Seen::next`) are pure and tested beside them; the registry owns no I/O.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::types::{NodeId, RaftMetrics};

/// Most append spans the leader remembers for the lag in seconds. One span per log append
/// call (a proposal, or one AppendEntries on a follower): at the leader's few hundred entries
/// a second under load, minutes of history. Past it, the age reported is that of the oldest
/// span remembered (a lower bound).
pub const RING_SPANS: usize = 4096;

type FollowerLabel = [(&'static str, String); 1];
type KindLabel = [(&'static str, &'static str); 1];

/// The Raft series of one node. Cheap to share (`Arc`); every method takes `&self`.
pub struct RaftTelemetry {
    enabled: bool,
    commit: Histogram,
    batch_writes: Histogram,
    append_entries: Histogram,
    apply: Histogram,
    fsync: Histogram,
    lag_entries: Family<FollowerLabel, Gauge>,
    lag_seconds: Family<FollowerLabel, Gauge<f64, AtomicU64>>,
    elections: Counter,
    leader_changes: Counter,
    snapshot_build: Histogram,
    snapshot_install: Histogram,
    snapshot_bytes: Family<KindLabel, Counter>,
    ring: Mutex<AppendRing>,
}

/// Durations from 100 µs to ~6.5 s, doubling.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

impl RaftTelemetry {
    pub fn new(enabled: bool) -> std::sync::Arc<RaftTelemetry> {
        std::sync::Arc::new(RaftTelemetry {
            enabled,
            commit: latency_buckets(),
            // 1 .. 1024 writes (`max_batch` defaults to 1024).
            batch_writes: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 1 .. 4096 entries in one transaction.
            append_entries: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            apply: latency_buckets(),
            fsync: latency_buckets(),
            lag_entries: Family::default(),
            lag_seconds: Family::default(),
            elections: Counter::default(),
            leader_changes: Counter::default(),
            // 10 ms .. ~80 s.
            snapshot_build: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            snapshot_install: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            snapshot_bytes: Family::default(),
            ring: Mutex::new(AppendRing::default()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Registers every Raft series in `reg` (counters without `_total`: the encoder adds it).
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "outpost_raft_commit_duration_seconds",
            "A batch proposed by this node (leader), from proposal until applied here",
            self.commit.clone(),
        );
        reg.register(
            "outpost_raft_batch_writes",
            "Writes (envelopes) per Raft entry this node proposed as leader",
            self.batch_writes.clone(),
        );
        reg.register(
            "outpost_raft_append_entries",
            "Entries per log append transaction (one fsync)",
            self.append_entries.clone(),
        );
        reg.register(
            "outpost_raft_apply_duration_seconds",
            "One apply call of the state machine",
            self.apply.clone(),
        );
        reg.register(
            "outpost_raft_log_fsync_duration_seconds",
            "One log-store write transaction, including its fsync",
            self.fsync.clone(),
        );
        reg.register(
            "outpost_raft_replication_lag_entries",
            "Leader only: its last log index minus the index known replicated to the follower",
            self.lag_entries.clone(),
        );
        reg.register(
            "outpost_raft_replication_lag_seconds",
            "Leader only: age of the oldest entry the follower lacks (0 when caught up)",
            self.lag_seconds.clone(),
        );
        reg.register(
            "outpost_raft_elections",
            "Campaigns this node started (it became candidate)",
            self.elections.clone(),
        );
        reg.register(
            "outpost_raft_leader_changes",
            "Leaderships this node saw begin (a leader in a new term)",
            self.leader_changes.clone(),
        );
        reg.register(
            "outpost_raft_snapshot_build_duration_seconds",
            "Building one snapshot of the state",
            self.snapshot_build.clone(),
        );
        reg.register(
            "outpost_raft_snapshot_install_duration_seconds",
            "Installing one snapshot received from the leader",
            self.snapshot_install.clone(),
        );
        reg.register(
            "outpost_raft_snapshot_bytes",
            "Bytes of snapshots built here or installed here",
            self.snapshot_bytes.clone(),
        );
    }

    /// The instant a timed operation starts, or `None` when disabled (no clock read).
    pub fn start(&self) -> Option<Instant> {
        self.enabled.then(Instant::now)
    }

    /// A batch of `writes` envelopes this node proposed as leader was applied here.
    pub fn committed(&self, started: Option<Instant>, writes: usize) {
        if let Some(t) = started {
            self.commit.observe(t.elapsed().as_secs_f64());
            self.batch_writes.observe(writes as f64);
        }
    }

    /// One log append transaction of `entries` entries, committed (fsynced) or failed.
    pub fn log_appended(&self, started: Option<Instant>, entries: usize) {
        if let Some(t) = started {
            self.fsync.observe(t.elapsed().as_secs_f64());
            self.append_entries.observe(entries as f64);
        }
    }

    pub fn applied(&self, started: Option<Instant>) {
        if let Some(t) = started {
            self.apply.observe(t.elapsed().as_secs_f64());
        }
    }

    pub fn snapshot_built(&self, started: Option<Instant>, bytes: u64) {
        if let Some(t) = started {
            self.snapshot_build.observe(t.elapsed().as_secs_f64());
            self.snapshot_bytes
                .get_or_create(&[("kind", "built")])
                .inc_by(bytes);
        }
    }

    pub fn snapshot_installed(&self, started: Option<Instant>, bytes: u64) {
        if let Some(t) = started {
            self.snapshot_install.observe(t.elapsed().as_secs_f64());
            self.snapshot_bytes
                .get_or_create(&[("kind", "installed")])
                .inc_by(bytes);
        }
    }

    fn campaigned(&self) {
        if self.enabled {
            self.elections.inc();
        }
    }

    fn leader_changed(&self) {
        if self.enabled {
            self.leader_changes.inc();
        }
    }

    /// The log store appended entries `first..=last` now (recorded even when disabled: the
    /// lag gauges are refreshed either way; one short lock per append call).
    pub(crate) fn record_append(&self, first: u64, last: u64) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.push(first, last, Instant::now());
    }

    /// The log store deleted entries from `index` on (a conflict on a follower).
    pub(crate) fn record_truncate(&self, index: u64) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.truncate(index);
    }

    /// Sets the lag gauges from `m` (this node's openraft metrics): one series per follower on
    /// the leader, none elsewhere. Members that left lose their series.
    pub(crate) fn refresh(&self, me: NodeId, m: &RaftMetrics, now: Instant) {
        let lags = {
            let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            let matched = m
                .replication
                .as_ref()
                .filter(|_| m.current_leader == Some(me))
                .map(|r| {
                    r.iter()
                        .map(|(id, l)| (*id, l.map(|l| l.index)))
                        .collect::<BTreeMap<_, _>>()
                });
            match matched {
                Some(matched) => {
                    follower_lags(me, &matched, m.last_log_index.unwrap_or(0), &ring, now)
                }
                None => Vec::new(),
            }
        };
        self.lag_entries.clear();
        self.lag_seconds.clear();
        for lag in lags {
            let label = [("follower", lag.follower.to_string())];
            self.lag_entries
                .get_or_create(&label)
                .set(i64::try_from(lag.entries).unwrap_or(i64::MAX));
            self.lag_seconds.get_or_create(&label).set(lag.seconds);
        }
    }

    /// Counts campaigns and new leaderships from openraft's metrics until Raft stops.
    pub(crate) async fn watch_elections(
        self: std::sync::Arc<Self>,
        me: NodeId,
        mut rx: tokio::sync::watch::Receiver<RaftMetrics>,
    ) {
        let mut seen = Seen::of(me, &rx.borrow_and_update());
        while rx.changed().await.is_ok() {
            let (next, change) = seen.next(me, &rx.borrow_and_update());
            seen = next;
            if change.campaigned {
                self.campaigned();
            }
            if change.new_leader {
                self.leader_changed();
            }
        }
    }
}

/// One follower's lag as the leader sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lag {
    pub follower: NodeId,
    pub entries: u64,
    pub seconds: f64,
}

/// The lag of every member but `me` in `matched` (member -> highest index known replicated
/// to it, `None` when nothing is known yet).
pub(crate) fn follower_lags(
    me: NodeId,
    matched: &BTreeMap<NodeId, Option<u64>>,
    last_log_index: u64,
    ring: &AppendRing,
    now: Instant,
) -> Vec<Lag> {
    matched
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, m)| Lag {
            follower: *id,
            entries: match m {
                Some(m) => last_log_index.saturating_sub(*m),
                // Nothing known replicated: every entry up to the last (indexes start at 0).
                None => last_log_index + 1,
            },
            seconds: lag_seconds(ring, *m, last_log_index, now),
        })
        .collect()
}

/// The age, at `now`, of the first entry a follower that has `matched` lacks: 0 when it has
/// everything up to `last_log_index`. An entry older than the ring remembers gets the oldest
/// span's age (a lower bound); one the ring never saw (appended before this node started),
/// 0 until entries of its own show up.
pub(crate) fn lag_seconds(
    ring: &AppendRing,
    matched: Option<u64>,
    last_log_index: u64,
    now: Instant,
) -> f64 {
    let next = matched.map_or(0, |m| m.saturating_add(1));
    if next > last_log_index {
        return 0.0;
    }
    let spans = &ring.spans;
    let i = spans.partition_point(|s| s.last < next);
    match spans.get(i) {
        Some(s) => now.saturating_duration_since(s.at).as_secs_f64(),
        None => 0.0,
    }
}

/// Appends the log store made, oldest first: indexes ascending, spans disjoint.
#[derive(Debug, Default)]
pub(crate) struct AppendRing {
    spans: VecDeque<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    first: u64,
    last: u64,
    at: Instant,
}

impl AppendRing {
    /// Entries `first..=last` were appended at `at`; any remembered at or past `first` were
    /// replaced (a follower's conflict) and are forgotten.
    fn push(&mut self, first: u64, last: u64, at: Instant) {
        self.truncate(first);
        self.spans.push_back(Span { first, last, at });
        while self.spans.len() > RING_SPANS {
            self.spans.pop_front();
        }
    }

    /// Forgets entries from `index` on.
    fn truncate(&mut self, index: u64) {
        while let Some(back) = self.spans.back_mut() {
            if back.first >= index {
                self.spans.pop_back();
            } else {
                back.last = back.last.min(index.saturating_sub(1));
                break;
            }
        }
    }
}

/// What the election watch has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Seen {
    /// The last term in which this node voted for itself (campaigned).
    self_vote_term: u64,
    /// The last term with a known leader.
    leader_term: Option<u64>,
}

/// What changed between two metrics readings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Change {
    pub campaigned: bool,
    pub new_leader: bool,
}

impl Seen {
    /// The starting point: what the metrics show when the watch begins counts as seen.
    pub(crate) fn of(me: NodeId, m: &RaftMetrics) -> Seen {
        Seen::default().next(me, m).0
    }

    /// Pure: a campaign is a term in which this node voted for itself (openraft's candidate
    /// votes for itself first, so a campaign is never missed even when the watch skips the
    /// Candidate state); a new leadership is a known leader in a term later than the last.
    pub(crate) fn next(self, me: NodeId, m: &RaftMetrics) -> (Seen, Change) {
        let term = m.vote.leader_id().get_term();
        let campaigned = m.vote.leader_id().voted_for() == Some(me) && term > self.self_vote_term;
        let leader_term = m.current_leader.map(|_| m.current_term);
        let new_leader = leader_term.is_some() && leader_term > self.leader_term;
        let seen = Seen {
            self_vote_term: if campaigned {
                term
            } else {
                self.self_vote_term
            },
            leader_term: if new_leader {
                leader_term
            } else {
                self.leader_term
            },
        };
        (
            seen,
            Change {
                campaigned,
                new_leader,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::encoding::text::encode;

    use super::*;

    fn ring(spans: &[(u64, u64, u64)], t0: Instant) -> AppendRing {
        let mut r = AppendRing::default();
        for &(first, last, at_s) in spans {
            r.push(first, last, t0 + Duration::from_secs(at_s));
        }
        r
    }

    #[test]
    fn lag_seconds_is_the_age_of_the_first_missing_entry() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(100);
        // Entries 1..=3 at t0+10 s, 4..=4 at +20 s, 5..=9 at +30 s.
        let r = ring(&[(1, 3, 10), (4, 4, 20), (5, 9, 30)], t0);
        // (matched, last_log_index) -> seconds
        let cases: &[(Option<u64>, u64, f64)] = &[
            (Some(9), 9, 0.0),
            (Some(12), 9, 0.0),
            (Some(8), 9, 70.0),
            (Some(4), 9, 70.0),
            (Some(3), 9, 80.0),
            (Some(1), 9, 90.0),
            (Some(0), 9, 90.0),
            // Nothing replicated yet: index 0 is older than the ring, the oldest span's age.
            (None, 9, 90.0),
            // Missing entries the ring never saw (appended before a restart): unknown, 0.
            (Some(9), 12, 0.0),
        ];
        for &(matched, last, want) in cases {
            let got = lag_seconds(&r, matched, last, now);
            assert_eq!(got, want, "matched {matched:?}, last {last}");
        }
        assert_eq!(lag_seconds(&AppendRing::default(), Some(1), 5, now), 0.0);
    }

    #[test]
    fn the_ring_forgets_replaced_entries_and_stays_bounded() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(100);
        // A conflict replaces 4..: the entry 4 now dates from +50 s.
        let r = ring(&[(1, 3, 10), (4, 9, 20), (4, 5, 50)], t0);
        assert_eq!(lag_seconds(&r, Some(3), 5, now), 50.0);
        assert_eq!(lag_seconds(&r, Some(2), 5, now), 90.0);
        let mut r = ring(&[(1, 3, 10), (4, 9, 20)], t0);
        r.truncate(6);
        assert_eq!(r.spans.back().map(|s| (s.first, s.last)), Some((4, 5)));
        r.truncate(4);
        assert_eq!(r.spans.back().map(|s| (s.first, s.last)), Some((1, 3)));
        let mut r = AppendRing::default();
        for i in 0..(RING_SPANS as u64 + 10) {
            r.push(i, i, t0);
        }
        assert_eq!(r.spans.len(), RING_SPANS);
        assert_eq!(r.spans.front().map(|s| s.first), Some(10));
    }

    #[test]
    fn follower_lags_leave_out_the_leader() {
        let t0 = Instant::now();
        let r = ring(&[(0, 9, 0)], t0);
        let matched = BTreeMap::from([(1, Some(9)), (2, Some(9)), (3, Some(4)), (4, None)]);
        let lags = follower_lags(1, &matched, 9, &r, t0 + Duration::from_secs(5));
        let got: Vec<(NodeId, u64, f64)> = lags
            .iter()
            .map(|l| (l.follower, l.entries, l.seconds))
            .collect();
        assert_eq!(got, vec![(2, 0, 0.0), (3, 5, 5.0), (4, 10, 5.0)]);
    }

    fn metrics(me: NodeId, term: u64, voted_for: NodeId, leader: Option<NodeId>) -> RaftMetrics {
        let mut m = RaftMetrics::new_initial(me);
        m.current_term = term;
        m.vote = crate::types::Vote::new(term, voted_for);
        m.current_leader = leader;
        m
    }

    #[test]
    fn campaigns_and_leaderships_are_counted_once_each() {
        // (term, voted for, leader) in order -> (campaigned, new leader)
        type Step = ((u64, NodeId, Option<NodeId>), (bool, bool));
        let steps: &[Step] = &[
            ((1, 2, Some(2)), (false, true)),
            ((1, 2, Some(2)), (false, false)),
            // This node campaigns in term 2 ...
            ((2, 1, None), (true, false)),
            // ... the watch sees the same term again, then its win.
            ((2, 1, None), (false, false)),
            ((2, 1, Some(1)), (false, true)),
            // Two campaigns: term 3 lost (skipped by the watch), term 4 seen with its leader.
            ((4, 1, Some(1)), (true, true)),
            // Another node leads in term 5; leader unknown in term 6, then known.
            ((5, 3, Some(3)), (false, true)),
            ((6, 3, None), (false, false)),
            ((6, 3, Some(3)), (false, true)),
        ];
        let mut seen = Seen::of(1, &metrics(1, 0, 0, None));
        for (i, &((term, voted, leader), (campaigned, new_leader))) in steps.iter().enumerate() {
            let (next, change) = seen.next(1, &metrics(1, term, voted, leader));
            assert_eq!(
                change,
                Change {
                    campaigned,
                    new_leader
                },
                "step {i}"
            );
            seen = next;
        }
        // What the node saw at start is not counted.
        let start = Seen::of(1, &metrics(1, 7, 1, Some(1)));
        assert_eq!(
            start.next(1, &metrics(1, 7, 1, Some(1))).1,
            Change::default()
        );
    }

    fn render(t: &RaftTelemetry) -> String {
        let mut reg = Registry::default();
        t.register(&mut reg);
        let mut out = String::new();
        encode(&mut out, &reg).expect("encoding into a String");
        out
    }

    #[test]
    fn every_series_is_registered_under_its_fixed_name() {
        let t = RaftTelemetry::new(true);
        let started = t.start();
        t.committed(started, 3);
        t.log_appended(started, 2);
        t.applied(started);
        t.snapshot_built(started, 100);
        t.snapshot_installed(started, 50);
        t.campaigned();
        t.leader_changed();
        t.record_append(0, 9);
        let mut m = metrics(1, 2, 1, Some(1));
        m.last_log_index = Some(9);
        m.replication = Some(BTreeMap::from([(1, None), (2, None)]));
        t.refresh(1, &m, Instant::now());
        let out = render(&t);
        for line in [
            "# TYPE outpost_raft_commit_duration_seconds histogram",
            "outpost_raft_commit_duration_seconds_count 1",
            "outpost_raft_batch_writes_sum 3.0",
            "outpost_raft_append_entries_sum 2.0",
            "outpost_raft_apply_duration_seconds_count 1",
            "outpost_raft_log_fsync_duration_seconds_count 1",
            "outpost_raft_replication_lag_entries{follower=\"2\"} 10",
            "# TYPE outpost_raft_replication_lag_seconds gauge",
            "outpost_raft_elections_total 1",
            "outpost_raft_leader_changes_total 1",
            "outpost_raft_snapshot_build_duration_seconds_count 1",
            "outpost_raft_snapshot_install_duration_seconds_count 1",
            "outpost_raft_snapshot_bytes_total{kind=\"built\"} 100",
            "outpost_raft_snapshot_bytes_total{kind=\"installed\"} 50",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        assert!(
            out.lines()
                .any(|l| l.starts_with("outpost_raft_replication_lag_seconds{follower=\"2\"} ")),
            "{out}"
        );
        assert!(!out.contains("follower=\"1\""), "{out}");

        // No longer leader: the lag series go.
        m.current_leader = Some(2);
        t.refresh(1, &m, Instant::now());
        assert!(!render(&t).contains("follower="));
    }

    #[test]
    fn disabled_telemetry_observes_nothing_but_still_shows_lag() {
        let t = RaftTelemetry::new(false);
        let started = t.start();
        assert!(started.is_none());
        t.committed(started, 3);
        t.log_appended(started, 2);
        t.applied(started);
        t.snapshot_built(started, 100);
        t.campaigned();
        t.leader_changed();
        t.record_append(0, 4);
        let mut m = metrics(1, 2, 1, Some(1));
        m.last_log_index = Some(4);
        m.replication = Some(BTreeMap::from([(2, Some(crate::types::LogId::default()))]));
        t.refresh(1, &m, Instant::now());
        let out = render(&t);
        for line in [
            "outpost_raft_commit_duration_seconds_count 0",
            "outpost_raft_batch_writes_count 0",
            "outpost_raft_append_entries_count 0",
            "outpost_raft_apply_duration_seconds_count 0",
            "outpost_raft_log_fsync_duration_seconds_count 0",
            "outpost_raft_elections_total 0",
            "outpost_raft_leader_changes_total 0",
            "outpost_raft_snapshot_build_duration_seconds_count 0",
            "outpost_raft_replication_lag_entries{follower=\"2\"} 4",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        assert!(!out.contains("outpost_raft_snapshot_bytes_total{"), "{out}");
    }
}
