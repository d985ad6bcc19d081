//! The fault suite's checker: pure functions over the histories the workloads recorded and the
//! state each node holds at the end; no I/O, so it is unit-tested on hand-made histories below.
//!
//! Register workload (a few keys, each write a unique value; a node gives every applied set a
//! per-key version, 1, 2, 3... in commit order). The versions are the linearization order of
//! the writes, so a history is checked against it:
//!
//! - stale read: a read saw an older version than one acknowledged (or read) before it began;
//! - future read: a read saw a value whose write was invoked only after the read completed;
//! - phantom read: a read saw a value nobody wrote, or one whose write was refused;
//! - version conflict: one value seen under two versions (a write applied twice), or two
//!   values under one version (two nodes disagree about the history);
//! - write order: a write acknowledged with a version no newer than one acknowledged (or read)
//!   before the write began.
//!
//! A write that timed out or failed without a refusal is indeterminate: it may have applied,
//! now or later, so its value may be read, and its absence is never a loss.
//!
//! Final state (after the faults stop, the cluster heals and every node passed a
//! linearizable barrier): every acknowledged write is on every node (lost write), a unique key
//! is applied once (duplicate write: version 1 only), nothing appears that was never written
//! or was refused (phantom write), and the nodes hold exactly the same entries (divergence).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Microseconds since the start of a run, on the test process's monotonic clock.
pub type Micros = u64;

/// How a write ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Acknowledged with the key's new version.
    Acked(u64),
    /// Refused with a client error (4xx): not applied.
    Refused(String),
    /// Timed out or failed without saying: it may have applied, now or later.
    Unknown(String),
}

/// One `config set`.
#[derive(Debug, Clone)]
pub struct Write {
    pub key: String,
    pub value: String,
    /// Index of the node it was sent to.
    pub node: usize,
    pub invoke: Micros,
    pub complete: Micros,
    pub outcome: WriteOutcome,
}

/// What a successful read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The key is not set (version 0).
    Missing,
    Value {
        value: String,
        version: u64,
    },
}

/// One successful `config get` (failed reads say nothing and are only counted).
#[derive(Debug, Clone)]
pub struct Read {
    pub key: String,
    pub node: usize,
    pub invoke: Micros,
    pub complete: Micros,
    pub seen: Seen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    StaleRead,
    FutureRead,
    PhantomRead,
    VersionConflict,
    WriteOrder,
    LostWrite,
    DuplicateWrite,
    PhantomWrite,
    Divergence,
    /// The cluster did not serve writes again after a heal, or a node reports itself stopped.
    Unavailable,
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            AnomalyKind::StaleRead => "stale read",
            AnomalyKind::FutureRead => "future read",
            AnomalyKind::PhantomRead => "phantom read",
            AnomalyKind::VersionConflict => "version conflict",
            AnomalyKind::WriteOrder => "write order",
            AnomalyKind::LostWrite => "lost write",
            AnomalyKind::DuplicateWrite => "duplicate write",
            AnomalyKind::PhantomWrite => "phantom write",
            AnomalyKind::Divergence => "divergence",
            AnomalyKind::Unavailable => "unavailable",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub detail: String,
}

/// One node's entries at the end: key -> (value, version).
pub type NodeState = BTreeMap<String, (String, u64)>;

/// Checks the register workload's history (any number of keys).
pub fn check_register(writes: &[Write], reads: &[Read]) -> Vec<Anomaly> {
    let mut keys: BTreeSet<&str> = writes.iter().map(|w| w.key.as_str()).collect();
    keys.extend(reads.iter().map(|r| r.key.as_str()));
    let mut out = Vec::new();
    for key in keys {
        let w: Vec<&Write> = writes.iter().filter(|w| w.key == key).collect();
        let r: Vec<&Read> = reads.iter().filter(|r| r.key == key).collect();
        check_key(key, &w, &r, &mut out);
    }
    out
}

/// Checks the final state of every node against both workloads. `unique_prefix` names the
/// keys of the unique-writes workload; the register keys are those of `register_writes`.
pub fn check_final(
    register_writes: &[Write],
    unique_writes: &[Write],
    unique_prefix: &str,
    states: &[(String, NodeState)],
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    divergence(states, &mut out);

    let by_key: HashMap<&str, &Write> = unique_writes.iter().map(|w| (w.key.as_str(), w)).collect();
    for (node, state) in states {
        for w in unique_writes {
            match (&w.outcome, state.get(&w.key)) {
                (WriteOutcome::Acked(_), None) => out.push(anomaly(
                    AnomalyKind::LostWrite,
                    format!("{node} lacks {}, {}", w.key, describe_write(w)),
                )),
                (WriteOutcome::Refused(_), Some(_)) => out.push(anomaly(
                    AnomalyKind::PhantomWrite,
                    format!("{node} holds {}, {}", w.key, describe_write(w)),
                )),
                (_, Some((value, _))) if *value != w.value => out.push(anomaly(
                    AnomalyKind::LostWrite,
                    format!(
                        "{node} holds {}={value}, not the value of {}",
                        w.key,
                        describe_write(w)
                    ),
                )),
                (_, Some((_, version))) if *version != 1 => out.push(anomaly(
                    AnomalyKind::DuplicateWrite,
                    format!(
                        "{node} holds {} at version {version}: applied more than once ({})",
                        w.key,
                        describe_write(w)
                    ),
                )),
                _ => {}
            }
        }
        for key in state.keys().filter(|k| k.starts_with(unique_prefix)) {
            if !by_key.contains_key(key.as_str()) {
                out.push(anomaly(
                    AnomalyKind::PhantomWrite,
                    format!("{node} holds {key}, which no client wrote"),
                ));
            }
        }
    }

    let reg_keys: BTreeSet<&str> = register_writes.iter().map(|w| w.key.as_str()).collect();
    for key in reg_keys {
        let ws: Vec<&Write> = register_writes.iter().filter(|w| w.key == key).collect();
        let newest = ws
            .iter()
            .filter_map(|w| match w.outcome {
                WriteOutcome::Acked(v) => Some((v, *w)),
                _ => None,
            })
            .max_by_key(|(v, _)| *v);
        for (node, state) in states {
            let held = state.get(key);
            let held_version = held.map(|(_, v)| *v).unwrap_or(0);
            if let Some((v, w)) = newest
                && held_version < v
            {
                out.push(anomaly(
                    AnomalyKind::LostWrite,
                    format!(
                        "{node} holds {key} at version {held_version}, but {}",
                        describe_write(w)
                    ),
                ));
            }
            if let Some((value, version)) = held {
                match ws.iter().find(|w| w.value == *value) {
                    None => out.push(anomaly(
                        AnomalyKind::PhantomWrite,
                        format!("{node} holds {key}={value} (v{version}), which no client wrote"),
                    )),
                    Some(w) if matches!(w.outcome, WriteOutcome::Refused(_)) => out.push(anomaly(
                        AnomalyKind::PhantomWrite,
                        format!("{node} holds {key}={value}, {}", describe_write(w)),
                    )),
                    Some(w) => {
                        if let WriteOutcome::Acked(v) = w.outcome
                            && v != *version
                        {
                            out.push(anomaly(
                                AnomalyKind::VersionConflict,
                                format!(
                                    "{node} holds {key}={value} at v{version}, {}",
                                    describe_write(w)
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Anomalies grouped by kind, in kind order.
pub fn by_kind(anomalies: &[Anomaly]) -> BTreeMap<AnomalyKind, Vec<&Anomaly>> {
    let mut m: BTreeMap<AnomalyKind, Vec<&Anomaly>> = BTreeMap::new();
    for a in anomalies {
        m.entry(a.kind).or_default().push(a);
    }
    m
}

/// A few lines: each kind's count and its first `examples` anomalies.
pub fn summary(anomalies: &[Anomaly], examples: usize) -> String {
    if anomalies.is_empty() {
        return "anomalies: none".into();
    }
    let mut s = format!("anomalies: {}", anomalies.len());
    for (kind, list) in by_kind(anomalies) {
        s.push_str(&format!("\n  {kind}: {}", list.len()));
        for a in list.iter().take(examples) {
            s.push_str(&format!("\n    - {}", a.detail));
        }
    }
    s
}

fn anomaly(kind: AnomalyKind, detail: String) -> Anomaly {
    Anomaly { kind, detail }
}

fn ms(t: Micros) -> String {
    format!("{:.3}s", t as f64 / 1e6)
}

fn describe_write(w: &Write) -> String {
    let how = match &w.outcome {
        WriteOutcome::Acked(v) => format!("acknowledged v{v}"),
        WriteOutcome::Refused(why) => format!("refused ({why})"),
        WriteOutcome::Unknown(why) => format!("indeterminate ({why})"),
    };
    format!(
        "write {}={} via n{} [{}..{}] {how}",
        w.key,
        w.value,
        w.node + 1,
        ms(w.invoke),
        ms(w.complete)
    )
}

fn describe_read(r: &Read) -> String {
    let saw = match &r.seen {
        Seen::Missing => "nothing".to_string(),
        Seen::Value { value, version } => format!("{value} v{version}"),
    };
    format!(
        "read {} via n{} [{}..{}] saw {saw}",
        r.key,
        r.node + 1,
        ms(r.invoke),
        ms(r.complete)
    )
}

fn version_seen(r: &Read) -> u64 {
    match r.seen {
        Seen::Missing => 0,
        Seen::Value { version, .. } => version,
    }
}

/// Something that completed with a version known to be committed: an acknowledged write or a
/// read. Sorted by completion, with the running maximum, to answer "the newest version known
/// before time t" by a binary search.
struct Known {
    complete: Vec<Micros>,
    /// `best[i]`: the index (into `what`) of the highest version among the first i+1.
    best: Vec<usize>,
    what: Vec<(u64, String)>,
}

impl Known {
    fn new(mut items: Vec<(Micros, u64, String)>) -> Known {
        items.sort_by_key(|(t, _, _)| *t);
        let mut best = Vec::with_capacity(items.len());
        let mut top: Option<usize> = None;
        for (i, (_, v, _)) in items.iter().enumerate() {
            if top.is_none_or(|b| *v > items[b].1) {
                top = Some(i);
            }
            best.push(top.unwrap_or(i));
        }
        Known {
            complete: items.iter().map(|(t, _, _)| *t).collect(),
            best,
            what: items.into_iter().map(|(_, v, d)| (v, d)).collect(),
        }
    }

    /// The newest version of those completed strictly before `t`, and what showed it.
    fn before(&self, t: Micros) -> Option<&(u64, String)> {
        let n = self.complete.partition_point(|c| *c < t);
        n.checked_sub(1).map(|i| &self.what[self.best[i]])
    }
}

fn check_key(key: &str, writes: &[&Write], reads: &[&Read], out: &mut Vec<Anomaly>) {
    let by_value: HashMap<&str, &Write> = writes.iter().map(|w| (w.value.as_str(), *w)).collect();

    // Version conflicts: value <-> version must be one to one.
    let mut version_of: HashMap<&str, (u64, String)> = HashMap::new();
    let mut value_of: HashMap<u64, (&str, String)> = HashMap::new();
    let mut seen_pairs: Vec<(&str, u64, String)> = Vec::new();
    for w in writes {
        if let WriteOutcome::Acked(v) = w.outcome {
            seen_pairs.push((w.value.as_str(), v, describe_write(w)));
        }
    }
    for r in reads {
        let Seen::Value { value, version } = &r.seen else {
            continue;
        };
        match by_value.get(value.as_str()) {
            None => out.push(anomaly(
                AnomalyKind::PhantomRead,
                format!("{}: no client wrote this value", describe_read(r)),
            )),
            Some(w) if matches!(w.outcome, WriteOutcome::Refused(_)) => out.push(anomaly(
                AnomalyKind::PhantomRead,
                format!("{}, but {}", describe_read(r), describe_write(w)),
            )),
            Some(w) => {
                if w.invoke > r.complete {
                    out.push(anomaly(
                        AnomalyKind::FutureRead,
                        format!(
                            "{}, before its {} began",
                            describe_read(r),
                            describe_write(w)
                        ),
                    ));
                }
                seen_pairs.push((value.as_str(), *version, describe_read(r)));
            }
        }
    }
    for (value, version, source) in seen_pairs {
        match version_of.get(value) {
            Some((v, first)) if *v != version => out.push(anomaly(
                AnomalyKind::VersionConflict,
                format!("{key}={value} at v{v} ({first}) and at v{version} ({source})"),
            )),
            Some(_) => {}
            None => {
                version_of.insert(value, (version, source.clone()));
            }
        }
        match value_of.get(&version) {
            Some((other, first)) if *other != value => out.push(anomaly(
                AnomalyKind::VersionConflict,
                format!("{key} v{version} is {other} ({first}) and {value} ({source})"),
            )),
            Some(_) => {}
            None => {
                value_of.insert(version, (value, source));
            }
        }
    }

    // Stale reads and write order against everything known committed before an op began.
    let mut items: Vec<(Micros, u64, String)> = Vec::new();
    for w in writes {
        if let WriteOutcome::Acked(v) = w.outcome {
            items.push((w.complete, v, describe_write(w)));
        }
    }
    for r in reads {
        items.push((r.complete, version_seen(r), describe_read(r)));
    }
    let known = Known::new(items);
    for r in reads {
        let v = version_seen(r);
        if let Some((newer, what)) = known.before(r.invoke)
            && *newer > v
        {
            out.push(anomaly(
                AnomalyKind::StaleRead,
                format!("{}, but before it began: {what}", describe_read(r)),
            ));
        }
    }
    for w in writes {
        let WriteOutcome::Acked(v) = w.outcome else {
            continue;
        };
        if let Some((older, what)) = known.before(w.invoke)
            && *older >= v
        {
            out.push(anomaly(
                AnomalyKind::WriteOrder,
                format!("{}, but before it began: {what}", describe_write(w)),
            ));
        }
    }
}

fn divergence(states: &[(String, NodeState)], out: &mut Vec<Anomaly>) {
    let Some((first_node, first)) = states.first() else {
        return;
    };
    for (node, state) in &states[1..] {
        let keys: BTreeSet<&String> = first.keys().chain(state.keys()).collect();
        for k in keys {
            let (a, b) = (first.get(k), state.get(k));
            if a != b {
                let show = |e: Option<&(String, u64)>| match e {
                    Some((v, n)) => format!("{v} v{n}"),
                    None => "nothing".into(),
                };
                out.push(anomaly(
                    AnomalyKind::Divergence,
                    format!(
                        "{k}: {first_node} holds {}, {node} holds {}",
                        show(a),
                        show(b)
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, value: &str, t: (Micros, Micros), outcome: WriteOutcome) -> Write {
        Write {
            key: key.into(),
            value: value.into(),
            node: 0,
            invoke: t.0,
            complete: t.1,
            outcome,
        }
    }

    fn r(key: &str, t: (Micros, Micros), seen: Option<(&str, u64)>) -> Read {
        Read {
            key: key.into(),
            node: 1,
            invoke: t.0,
            complete: t.1,
            seen: match seen {
                None => Seen::Missing,
                Some((v, n)) => Seen::Value {
                    value: v.into(),
                    version: n,
                },
            },
        }
    }

    fn acked(v: u64) -> WriteOutcome {
        WriteOutcome::Acked(v)
    }

    fn unknown() -> WriteOutcome {
        WriteOutcome::Unknown("timed out".into())
    }

    fn kinds(a: &[Anomaly]) -> Vec<AnomalyKind> {
        a.iter().map(|a| a.kind).collect()
    }

    /// Two writes, reads overlapping them seeing either side, an indeterminate write that shows
    /// up later, and reads before any write: nothing to report.
    fn clean_history() -> (Vec<Write>, Vec<Read>) {
        let writes = vec![
            w("k", "a", (10, 20), acked(1)),
            w("k", "b", (30, 50), acked(2)),
            w("k", "c", (60, 70), unknown()),
            w("k", "d", (200, 210), acked(4)),
            w("j", "x", (5, 400), unknown()),
        ];
        let reads = vec![
            r("k", (0, 5), None),
            r("k", (21, 29), Some(("a", 1))),
            r("k", (35, 45), Some(("a", 1))), // overlaps b: either is fine
            r("k", (46, 55), Some(("b", 2))),
            r("k", (80, 90), Some(("b", 2))), // c may not have applied yet
            r("k", (100, 110), Some(("c", 3))), // ...and here it has
            r("k", (150, 160), Some(("c", 3))),
            r("k", (220, 230), Some(("d", 4))),
            r("j", (1, 2), None),
            r("j", (300, 310), None), // an indeterminate write that never shows is fine
        ];
        (writes, reads)
    }

    #[test]
    fn a_clean_history_passes() {
        let (writes, reads) = clean_history();
        let a = check_register(&writes, &reads);
        assert!(a.is_empty(), "{}", summary(&a, 10));
    }

    #[test]
    fn each_register_anomaly_is_detected() {
        let (writes, _) = clean_history();
        let cases: Vec<(&str, Read, AnomalyKind)> = vec![
            (
                "older version after an acknowledged write",
                r("k", (60, 65), Some(("a", 1))),
                AnomalyKind::StaleRead,
            ),
            (
                "missing after an acknowledged write",
                r("k", (25, 26), None),
                AnomalyKind::StaleRead,
            ),
            (
                "older than a read that completed before",
                r("k", (111, 120), Some(("b", 2))),
                AnomalyKind::StaleRead,
            ),
            (
                "a value whose write began after the read ended",
                r("k", (180, 190), Some(("d", 4))),
                AnomalyKind::FutureRead,
            ),
            (
                "a value nobody wrote",
                r("k", (100, 110), Some(("zz", 3))),
                AnomalyKind::PhantomRead,
            ),
            (
                "a known value under another version",
                r("k", (46, 55), Some(("b", 3))),
                AnomalyKind::VersionConflict,
            ),
        ];
        for (what, bad, kind) in cases {
            let (writes2, mut reads) = (writes.clone(), clean_history().1);
            reads.push(bad);
            let a = check_register(&writes2, &reads);
            assert!(
                kinds(&a).contains(&kind),
                "{what}: expected {kind}, got {}",
                summary(&a, 10)
            );
        }
        // A refused write's value read back.
        let mut writes2 = writes.clone();
        writes2.push(w("k", "r", (240, 250), WriteOutcome::Refused("400".into())));
        let mut reads = clean_history().1;
        reads.push(r("k", (260, 270), Some(("r", 5))));
        assert!(kinds(&check_register(&writes2, &reads)).contains(&AnomalyKind::PhantomRead));
        // A write acknowledged with a version older than one acknowledged before it began.
        let mut writes2 = writes.clone();
        writes2.push(w("k", "e", (300, 310), acked(3)));
        let a = check_register(&writes2, &clean_history().1);
        assert!(kinds(&a).contains(&AnomalyKind::WriteOrder), "{a:?}");
    }

    fn state(entries: &[(&str, &str, u64)]) -> NodeState {
        entries
            .iter()
            .map(|(k, v, n)| (k.to_string(), (v.to_string(), *n)))
            .collect()
    }

    #[test]
    fn final_state_checks() {
        let reg = vec![
            w("k", "a", (10, 20), acked(1)),
            w("k", "b", (30, 40), acked(2)),
        ];
        let uniq = vec![
            w("u.1", "one", (1, 2), acked(1)),
            w("u.2", "two", (3, 4), unknown()),
            w("u.3", "three", (5, 6), unknown()),
            w("u.4", "four", (7, 8), WriteOutcome::Refused("400".into())),
        ];
        // Clean: the indeterminate u.2 applied, u.3 did not; both nodes agree.
        let good = state(&[("k", "b", 2), ("u.1", "one", 1), ("u.2", "two", 1)]);
        let nodes = |s: Vec<NodeState>| -> Vec<(String, NodeState)> {
            s.into_iter()
                .enumerate()
                .map(|(i, s)| (format!("n{}", i + 1), s))
                .collect()
        };
        let a = check_final(&reg, &uniq, "u.", &nodes(vec![good.clone(), good.clone()]));
        assert!(a.is_empty(), "{}", summary(&a, 10));

        let cases: Vec<(&str, NodeState, AnomalyKind)> = vec![
            (
                "an acknowledged unique write is missing",
                state(&[("k", "b", 2), ("u.2", "two", 1)]),
                AnomalyKind::LostWrite,
            ),
            (
                "the register lost its last acknowledged version",
                state(&[("k", "a", 1), ("u.1", "one", 1), ("u.2", "two", 1)]),
                AnomalyKind::LostWrite,
            ),
            (
                "a unique write applied twice",
                state(&[("k", "b", 2), ("u.1", "one", 2), ("u.2", "two", 1)]),
                AnomalyKind::DuplicateWrite,
            ),
            (
                "a refused write is present",
                state(&[("k", "b", 2), ("u.1", "one", 1), ("u.4", "four", 1)]),
                AnomalyKind::PhantomWrite,
            ),
            (
                "a key nobody wrote",
                state(&[("k", "b", 2), ("u.1", "one", 1), ("u.9", "nine", 1)]),
                AnomalyKind::PhantomWrite,
            ),
        ];
        for (what, bad, kind) in cases {
            let a = check_final(&reg, &uniq, "u.", &nodes(vec![good.clone(), bad]));
            let k = kinds(&a);
            assert!(
                k.contains(&kind),
                "{what}: expected {kind}, got {}",
                summary(&a, 10)
            );
            assert!(
                k.contains(&AnomalyKind::Divergence),
                "{what}: the nodes differ"
            );
        }
    }

    #[test]
    fn known_keeps_the_running_maximum() {
        let k = Known::new(vec![
            (30, 1, "c".into()),
            (10, 5, "a".into()),
            (20, 2, "b".into()),
        ]);
        assert_eq!(k.before(10), None);
        assert_eq!(k.before(11).map(|x| x.0), Some(5));
        assert_eq!(k.before(31).map(|x| x.0), Some(5));
        let k = Known::new(vec![(10, 1, "a".into()), (20, 3, "b".into())]);
        assert_eq!(k.before(15).map(|x| x.0), Some(1));
        assert_eq!(k.before(25).map(|x| x.1.as_str()), Some("b"));
    }
}
