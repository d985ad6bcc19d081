//! The fault suite's nemesis plan (pure): which fault comes next, on which node, for how long,
//! which links a partition cuts; and the log of what was done. `tests/faults.rs` carries the
//! faults out on real processes and namespaces.
//!
//! Faults come one at a time, each healed before the next, the kinds in a shuffled round so
//! that every kind comes as often as the others; a seed makes the schedule repeatable. Faults
//! hold a few seconds; with long partitions on, the first partition of each round holds
//! `LONG_HOLD_MS` instead (how a node comes back after a long partition is another matter
//! than after a short one: its peer connections have backed off).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the node, start it again when the fault heals.
    Kill,
    /// SIGSTOP the node, SIGCONT when the fault heals.
    Pause,
    /// Cut one node off the other two (a 1 / 2 split).
    Isolate,
    /// Cut the current leader off the other two.
    IsolateLeader,
    /// The two nodes other than `node` cannot reach each other; `node` reaches both (a
    /// non-transitive partition).
    Bridge,
}

pub const ALL_KINDS: [FaultKind; 5] = [
    FaultKind::Kill,
    FaultKind::Pause,
    FaultKind::Isolate,
    FaultKind::IsolateLeader,
    FaultKind::Bridge,
];

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Bridge => "bridge",
        })
    }
}

/// One fault to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kind: FaultKind,
    /// The node the fault is about (killed, paused, isolated, or the bridge).
    pub node: usize,
    /// Whether `node` was the leader when the fault was planned.
    pub leader: bool,
    /// How long the fault lasts before it heals.
    pub hold: Duration,
}

impl Plan {
    /// The pairs of nodes (a < b) whose traffic a partition drops; none for kill and pause.
    pub fn cuts(&self, nodes: usize) -> Vec<(usize, usize)> {
        let pairs = (0..nodes).flat_map(|a| (a + 1..nodes).map(move |b| (a, b)));
        match self.kind {
            FaultKind::Kill | FaultKind::Pause => Vec::new(),
            FaultKind::Isolate | FaultKind::IsolateLeader => pairs
                .filter(|(a, b)| *a == self.node || *b == self.node)
                .collect(),
            FaultKind::Bridge => pairs
                .filter(|(a, b)| *a != self.node && *b != self.node)
                .collect(),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} n{}{} for {:.1}s",
            self.kind,
            self.node + 1,
            if self.leader { " (leader)" } else { "" },
            self.hold.as_secs_f64()
        )
    }
}

/// How long a long partition holds (ms).
pub const LONG_HOLD_MS: std::ops::Range<u64> = 20_000..30_000;

/// Picks faults.
pub struct Nemesis {
    rng: StdRng,
    nodes: usize,
    round: Vec<FaultKind>,
    long_partitions: bool,
    /// A long partition is still due in this round.
    long_due: bool,
}

impl Nemesis {
    pub fn new(seed: u64, nodes: usize) -> Nemesis {
        Nemesis {
            rng: StdRng::seed_from_u64(seed),
            nodes,
            round: Vec::new(),
            long_partitions: false,
            long_due: false,
        }
    }

    /// The first partition of every round holds `LONG_HOLD_MS`.
    pub fn with_long_partitions(mut self) -> Nemesis {
        self.long_partitions = true;
        self
    }

    /// The next fault, given the current leader if one is known. Kill and pause hit the
    /// leader half of the time; isolate-leader without a known leader isolates any node.
    pub fn next(&mut self, leader: Option<usize>) -> Plan {
        if self.round.is_empty() {
            self.round = ALL_KINDS.to_vec();
            self.round.shuffle(&mut self.rng);
            self.long_due = self.long_partitions;
        }
        let kind = self.round.pop().unwrap_or(FaultKind::Kill);
        let any = self.rng.gen_range(0..self.nodes);
        let node = match (kind, leader) {
            (FaultKind::IsolateLeader, Some(l)) => l,
            (FaultKind::Kill | FaultKind::Pause, Some(l)) if self.rng.gen_bool(0.5) => l,
            _ => any,
        };
        let hold_ms = match kind {
            FaultKind::Kill => self.rng.gen_range(1_000..4_000),
            FaultKind::Pause => self.rng.gen_range(2_000..6_000),
            _ if self.long_due => {
                self.long_due = false;
                self.rng.gen_range(LONG_HOLD_MS)
            }
            _ => self.rng.gen_range(2_000..6_000),
        };
        Plan {
            kind,
            node,
            leader: leader == Some(node),
            hold: Duration::from_millis(hold_ms),
        }
    }

    /// The quiet time after a fault healed and writes succeed again, before the next one.
    pub fn quiet(&mut self) -> Duration {
        Duration::from_millis(self.rng.gen_range(500..2_000))
    }
}

/// What happened to one fault.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub plan: Plan,
    /// Seconds since the start of the run.
    pub start: f64,
    pub healed: f64,
    /// From the heal until a write succeeded through some node, and through every node
    /// (`None`: not within the deadline).
    pub first_write: Option<Duration>,
    pub every_node: Option<Duration>,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |o: Option<Duration>| match o {
            Some(d) => format!("{} ms", d.as_millis()),
            None => "never".into(),
        };
        write!(
            f,
            "+{:>7.2}s {}; healed +{:.2}s; a write ok after {}, through every node after {}",
            self.start,
            self.plan,
            self.healed,
            d(self.first_write),
            d(self.every_node)
        )
    }
}

/// Faults counted by kind.
pub fn count_by_kind(log: &[FaultRecord]) -> BTreeMap<FaultKind, usize> {
    let mut m = BTreeMap::new();
    for r in log {
        *m.entry(r.plan.kind).or_insert(0) += 1;
    }
    m
}

/// "median X ms, max Y ms over N" of the durations given (the missing ones counted apart).
pub fn spread(samples: impl IntoIterator<Item = Option<Duration>>) -> String {
    let mut got = Vec::new();
    let mut missing = 0;
    for s in samples {
        match s {
            Some(d) => got.push(d),
            None => missing += 1,
        }
    }
    if got.is_empty() {
        return format!("no sample ({missing} never)");
    }
    got.sort();
    let mut s = format!(
        "median {} ms, max {} ms over {}",
        got[got.len() / 2].as_millis(),
        got[got.len() - 1].as_millis(),
        got.len()
    );
    if missing > 0 {
        s.push_str(&format!(", {missing} never"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_per_kind() {
        let plan = |kind, node| Plan {
            kind,
            node,
            leader: false,
            hold: Duration::from_secs(1),
        };
        assert!(plan(FaultKind::Kill, 0).cuts(3).is_empty());
        assert!(plan(FaultKind::Pause, 2).cuts(3).is_empty());
        assert_eq!(plan(FaultKind::Isolate, 1).cuts(3), vec![(0, 1), (1, 2)]);
        assert_eq!(
            plan(FaultKind::IsolateLeader, 0).cuts(3),
            vec![(0, 1), (0, 2)]
        );
        assert_eq!(plan(FaultKind::Bridge, 1).cuts(3), vec![(0, 2)]);
        assert_eq!(
            plan(FaultKind::Bridge, 0).cuts(4),
            vec![(1, 2), (1, 3), (2, 3)]
        );
    }

    #[test]
    fn every_kind_comes_once_a_round_and_a_seed_repeats() {
        let mut a = Nemesis::new(7, 3);
        let mut b = Nemesis::new(7, 3);
        for _ in 0..4 {
            let mut kinds: Vec<FaultKind> = (0..ALL_KINDS.len())
                .map(|_| {
                    let p = a.next(Some(1));
                    assert_eq!(p, b.next(Some(1)));
                    assert!(p.node < 3);
                    assert!(p.hold >= Duration::from_secs(1) && p.hold < Duration::from_secs(6));
                    if p.kind == FaultKind::IsolateLeader {
                        assert!(p.leader && p.node == 1, "{p}");
                    }
                    p.kind
                })
                .collect();
            kinds.sort();
            assert_eq!(kinds, ALL_KINDS.to_vec());
        }
    }

    #[test]
    fn long_partitions_come_once_a_round() {
        let long = |p: &Plan| p.hold >= Duration::from_millis(LONG_HOLD_MS.start);
        let mut n = Nemesis::new(3, 3).with_long_partitions();
        for _ in 0..4 {
            let round: Vec<Plan> = (0..ALL_KINDS.len()).map(|_| n.next(None)).collect();
            let longs: Vec<&Plan> = round.iter().filter(|p| long(p)).collect();
            assert_eq!(longs.len(), 1, "{round:?}");
            assert!(!longs[0].cuts(3).is_empty(), "{}", longs[0]);
        }
        let mut n = Nemesis::new(3, 3);
        assert!((0..20).all(|_| !long(&n.next(None))));
    }

    #[test]
    fn spread_reports_median_max_and_missing() {
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(
            spread([ms(30), ms(10), None, ms(20)]),
            "median 20 ms, max 30 ms over 3, 1 never"
        );
        assert_eq!(spread([None]), "no sample (1 never)");
    }
}
