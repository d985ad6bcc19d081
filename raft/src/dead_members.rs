//! The dead-member rule of the leader's membership upkeep (`[cluster] auto_remove_after`):
//! which member, if any, the leader takes out because it has not answered for that long.
//!
//! "Not answered" is real contact, not replication lag: the transport records, per target,
//! when a call last got an answer (`PeerClients::last_answer`; the leader heartbeats every
//! member every `heartbeat_ms`). A member this leader has never heard from counts from when
//! this leader first saw it in the membership (its term began, or the member was added), so a
//! fresh leader does not remove everyone at once.
//!
//! `Watch` keeps those baselines; `pick_removal` is the pure rule, table-tested below.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::types::NodeId;

/// A voter that answered within this long counts as reachable when the rule asks whether the
/// voters left still form a quorum (the leader heartbeats every 50 ms by default).
pub(crate) const REACHABLE_WITHIN: Duration = Duration::from_secs(2);

/// Fewest voters the rule leaves: it never removes a voter from three or fewer.
pub(crate) const MIN_VOTERS: usize = 3;

/// One member as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub id: NodeId,
    pub voter: bool,
    /// How long since it last answered this leader (or since this leader first saw it).
    pub silent_for: Duration,
}

/// The member to take out this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Removal {
    pub id: NodeId,
    pub voter: bool,
    pub silent_for: Duration,
}

/// At most one member to remove: the longest silent one that may go. A member qualifies once
/// it has been silent for `after`; the leader never removes itself. A learner may always go.
/// A voter may go only if at least `MIN_VOTERS` voters remain (so never from three or fewer),
/// and the voters that answered within `reachable_within` are a majority of both the current
/// voters and the voters left (the joint change must commit, and the cluster must stay
/// writable after it).
pub(crate) fn pick_removal(
    leader: NodeId,
    members: &[Member],
    after: Duration,
    reachable_within: Duration,
) -> Option<Removal> {
    let voters = members.iter().filter(|m| m.voter).count();
    let reachable_voters = members
        .iter()
        .filter(|m| m.voter && (m.id == leader || m.silent_for < reachable_within))
        .count();
    let mut candidates: Vec<&Member> = members
        .iter()
        .filter(|m| m.id != leader && m.silent_for >= after)
        .collect();
    candidates.sort_by(|a, b| b.silent_for.cmp(&a.silent_for).then(a.id.cmp(&b.id)));
    candidates
        .into_iter()
        .find(|m| {
            if !m.voter {
                return true;
            }
            let left = voters - 1;
            // The candidate is silent for `after`; count it reachable only if `after` is
            // shorter than the reachability window (then it is still counted, conservatively).
            let reachable_left = reachable_voters - usize::from(m.silent_for < reachable_within);
            left >= MIN_VOTERS && reachable_voters * 2 > voters && reachable_left * 2 > left
        })
        .map(|m| Removal {
            id: m.id,
            voter: m.voter,
            silent_for: m.silent_for,
        })
}

/// Per leadership term, when this leader first saw each member: the baseline for a member it
/// has never heard from.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    term: Option<u64>,
    seen: HashMap<NodeId, Instant>,
}

impl Watch {
    /// Forgets the baselines (this node is not the leader).
    pub(crate) fn clear(&mut self) {
        self.term = None;
        self.seen.clear();
    }

    /// The members (id, voter) of the leader of `term` at `now`, each with how long it has
    /// been silent: since its last answer, or since this leader first saw it, whichever is
    /// later.
    pub(crate) fn silences(
        &mut self,
        term: u64,
        now: Instant,
        members: &[(NodeId, bool)],
        last_answer: impl Fn(NodeId) -> Option<Instant>,
    ) -> Vec<Member> {
        if self.term != Some(term) {
            self.term = Some(term);
            self.seen.clear();
        }
        self.seen
            .retain(|id, _| members.iter().any(|(m, _)| m == id));
        members
            .iter()
            .map(|&(id, voter)| {
                let seen = *self.seen.entry(id).or_insert(now);
                let since = last_answer(id).map_or(seen, |a| a.max(seen));
                Member {
                    id,
                    voter,
                    silent_for: now.saturating_duration_since(since),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(30);
    const WITHIN: Duration = REACHABLE_WITHIN;

    fn v(id: NodeId, silent_s: u64) -> Member {
        Member {
            id,
            voter: true,
            silent_for: Duration::from_secs(silent_s),
        }
    }
    fn l(id: NodeId, silent_s: u64) -> Member {
        Member {
            voter: false,
            ..v(id, silent_s)
        }
    }

    #[test]
    fn the_rule() {
        // (case, members; leader is node 1, picked id)
        let cases: Vec<(&str, Vec<Member>, Option<NodeId>)> = vec![
            ("all live", vec![v(1, 0), v(2, 0), v(3, 0), v(4, 0)], None),
            (
                "four voters, one dead long enough",
                vec![v(1, 0), v(2, 0), v(3, 0), v(4, 31)],
                Some(4),
            ),
            (
                "four voters, one dead not long enough",
                vec![v(1, 0), v(2, 0), v(3, 0), v(4, 29)],
                None,
            ),
            (
                "exactly `after` counts",
                vec![v(1, 0), v(2, 0), v(3, 0), v(4, 30)],
                Some(4),
            ),
            (
                "three voters: never below three",
                vec![v(1, 0), v(2, 0), v(3, 100)],
                None,
            ),
            ("two voters: never", vec![v(1, 0), v(2, 100)], None),
            (
                "four voters, two dead: no quorum among the voters now",
                vec![v(1, 0), v(2, 0), v(3, 100), v(4, 100)],
                None,
            ),
            (
                "five voters, two dead: the longer silent goes first",
                vec![v(1, 0), v(2, 0), v(3, 0), v(4, 40), v(5, 100)],
                Some(5),
            ),
            (
                "five voters, three dead: no quorum left",
                vec![v(1, 0), v(2, 0), v(3, 100), v(4, 100), v(5, 100)],
                None,
            ),
            (
                "five voters, one silent 1 s, one dead: reachable 4 of 5, 3 of 4 left",
                vec![v(1, 0), v(2, 0), v(3, 1), v(4, 0), v(5, 100)],
                Some(5),
            ),
            (
                "five voters, one silent 5 s (not reachable, not yet dead), one dead: 3 of 4 left",
                vec![v(1, 0), v(2, 0), v(3, 5), v(4, 0), v(5, 100)],
                Some(5),
            ),
            (
                "five voters, two silent 5 s, one dead: 2 of 4 left is no majority",
                vec![v(1, 0), v(2, 0), v(3, 5), v(4, 5), v(5, 100)],
                None,
            ),
            (
                "never the leader itself",
                vec![v(1, 100), v(2, 0), v(3, 0), v(4, 0)],
                None,
            ),
            (
                "a learner goes whatever the voters",
                vec![v(1, 0), v(2, 0), v(3, 100), l(4, 31)],
                Some(4),
            ),
            (
                "a learner beside one voter",
                vec![v(1, 0), l(2, 31)],
                Some(2),
            ),
            (
                "a learner not silent long enough stays",
                vec![v(1, 0), v(2, 0), v(3, 0), l(4, 10)],
                None,
            ),
            (
                "one per round: the longest silent of a learner and a voter",
                vec![v(1, 0), v(2, 0), v(3, 0), v(4, 50), l(5, 40)],
                Some(4),
            ),
            (
                "a blocked voter does not block a learner",
                vec![v(1, 0), v(2, 0), v(3, 100), l(4, 40)],
                Some(4),
            ),
            (
                "equal silence: the lower id first",
                vec![v(1, 0), v(2, 0), v(3, 0), v(4, 0), l(5, 40), l(6, 40)],
                Some(5),
            ),
        ];
        for (case, members, want) in cases {
            let got = pick_removal(1, &members, AFTER, WITHIN).map(|r| r.id);
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn an_after_shorter_than_the_reachability_window_still_keeps_three_and_a_quorum() {
        let after = Duration::from_secs(1);
        // Node 4 silent 1.5 s: dead by `after`, still "reachable" by the window.
        let ms = |id, voter, ms| Member {
            id,
            voter,
            silent_for: Duration::from_millis(ms),
        };
        let four = [
            ms(1, true, 0),
            ms(2, true, 0),
            ms(3, true, 0),
            ms(4, true, 1500),
        ];
        assert_eq!(pick_removal(1, &four, after, WITHIN).map(|r| r.id), Some(4));
        let three = [ms(1, true, 0), ms(2, true, 0), ms(3, true, 1500)];
        assert_eq!(pick_removal(1, &three, after, WITHIN), None);
    }

    #[test]
    fn silence_counts_from_the_last_answer_or_from_when_this_leader_first_saw_the_member() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = Watch::default();
        let members = [(1, true), (2, true), (3, true)];
        // An answer from before this term does not make a member silent for longer than the
        // term is old; one never heard from counts from the first round.
        let answers = |id: NodeId| match id {
            2 => Some(t0 - Duration::from_secs(600)),
            _ => None,
        };
        let got = w.silences(7, s(0), &members, answers);
        assert!(
            got.iter().all(|m| m.silent_for == Duration::ZERO),
            "{got:?}"
        );
        let got = w.silences(7, s(10), &members, answers);
        assert!(got.iter().all(|m| m.silent_for == Duration::from_secs(10)));
        // A fresh answer resets a member's silence.
        let answers = |id: NodeId| (id == 3).then(|| s(9));
        let got = w.silences(7, s(10), &members, answers);
        assert_eq!(got[2].silent_for, Duration::from_secs(1));
        // A member added later counts from when it was first seen.
        let more = [(1, true), (2, true), (3, true), (4, false)];
        let got = w.silences(7, s(12), &more, |_| None);
        assert_eq!(got[3].silent_for, Duration::ZERO);
        assert_eq!(got[0].silent_for, Duration::from_secs(12));
        // A new term starts the baselines again.
        let got = w.silences(8, s(20), &more, |_| None);
        assert!(got.iter().all(|m| m.silent_for == Duration::ZERO));
        w.clear();
        let got = w.silences(8, s(25), &more, |_| None);
        assert!(got.iter().all(|m| m.silent_for == Duration::ZERO));
    }
}
