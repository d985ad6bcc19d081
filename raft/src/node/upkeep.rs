//! The leader's membership upkeep, every 300 ms: with `auto_remove_after` set, a dead member
//! is removed first (`auto_remove`, under `dead_members::pick_removal`); nodes recorded in the
//! state (by join) become learners; caught-up learners become voters up to `max_voters`; nodes
//! marked removed leave; changed addresses are updated; the state's node roles follow the
//! membership.
//!
//! The decisions are pure and table-tested below: `gate` (does this node act this round),
//! `plan` (from the membership seen in the metrics and the node records: the steps to take).
//! `upkeep_once` reads what they need and carries the steps out, one at a time, in order,
//! stopping at the first that fails (logged as an `UpkeepError`; the next round plans again).
//! Also here: removing a member (`RaftNode::remove_member`, the same path the upkeep takes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{ChangeMembers, ServerState};
use outpost_storage::{Command, Envelope, NodeRecord, NodeRole};

use super::errors::{MembershipError, WriteError};
use super::{Inner, RaftNode, now_ms};
use crate::dead_members::{self, Watch};
use crate::types::{NodeId, PeerNode, RaftMetrics, RaftWriteError};

/// Runs one round of the upkeep (`upkeep_once`) every 300 ms, on every node: a round does
/// nothing unless this node is the leader (`gate`). At most one dead member goes a round.
pub(super) async fn upkeep(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = Watch::default();
    loop {
        tick.tick().await;
        // Bounded for the reason `Inner::propose` is: a membership change proposed by a
        // leader deposed before it commits may never be answered. The next round looks again.
        match tokio::time::timeout(UPKEEP_ROUND, upkeep_once(&inner, &mut watch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "membership upkeep"),
            Err(_) => tracing::warn!(
                "a membership upkeep round got no answer within {UPKEEP_ROUND:?}; trying again"
            ),
        }
    }
}

/// How long one round of membership upkeep may wait for its changes to commit.
const UPKEEP_ROUND: Duration = Duration::from_secs(30);

/// A learner is caught up (may be promoted) once the index replicated to it is within this
/// many entries of the leader's last log index.
const CAUGHT_UP_WITHIN: u64 = 100;

/// Whether this node acts on the membership this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Not the leader (or not yet serving as one): nothing to do; the dead-member baselines
    /// are dropped, a later term starts them afresh.
    NotLeader,
    /// The leader has not applied an entry of its own term yet: it waits.
    Catching,
    Act,
}

/// A new leader acts on the state only once it has applied its own first entry (and so every
/// entry before it): it never re-adds members from a state about to change, e.g. right after
/// `outpost recover` or `restore` reformed the cluster.
fn gate(
    me: NodeId,
    leader: Option<NodeId>,
    serves_as_leader: bool,
    applied_term: Option<u64>,
    term: u64,
) -> Gate {
    if leader != Some(me) || !serves_as_leader {
        Gate::NotLeader
    } else if applied_term != Some(term) {
        Gate::Catching
    } else {
        Gate::Act
    }
}

/// The membership as the leader's metrics show it, in plain values.
#[derive(Debug, Clone, Default, PartialEq)]
struct View {
    me: NodeId,
    members: BTreeMap<NodeId, PeerNode>,
    voters: BTreeSet<NodeId>,
    /// Highest log index known replicated to each member (members with none are absent).
    matched: BTreeMap<NodeId, u64>,
    last_log_index: u64,
    max_voters: usize,
}

impl View {
    fn of(me: NodeId, m: &RaftMetrics, max_voters: usize) -> View {
        let membership = m.membership_config.membership();
        View {
            me,
            members: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            voters: membership.voter_ids().collect(),
            matched: m
                .replication
                .iter()
                .flatten()
                .filter_map(|(id, l)| l.map(|l| (*id, l.index)))
                .collect(),
            last_log_index: m.last_log_index.unwrap_or(0),
            max_voters,
        }
    }
}

/// What one round does, in order.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// No member the state marks removed is still in the membership, so the dead-member step
    /// may run first. While one is, the steps below finish that removal first: one change at
    /// a time, and no second `RemoveNode` for it.
    may_auto_remove: bool,
    steps: Vec<Step>,
}

/// One change of a round.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Take a member the state marks removed out of the membership. `leader_leaves`: it is
    /// this leader, and other voters remain (it hands over by leaving as voter first).
    Remove { node: NodeId, leader_leaves: bool },
    /// A node recorded in the state (joined) becomes a learner at this address.
    AddLearner { node: NodeId, peer: PeerNode },
    /// A member's recorded addresses changed.
    SetAddress { node: NodeId, peer: PeerNode },
    /// A caught-up learner becomes a voter.
    Promote { node: NodeId },
    /// The state records the role the membership gives the node.
    RecordRole { node: NodeId, role: NodeRole },
}

/// The steps of one round, node record by node record, all decided from one view (a promotion
/// planned here does not count against `max_voters` for the next record, as before the split).
fn plan(view: &View, nodes: &[NodeRecord]) -> Plan {
    let may_auto_remove = !nodes
        .iter()
        .any(|r| r.role == NodeRole::Removed && view.members.contains_key(&r.id));
    let mut steps = Vec::new();
    for rec in nodes {
        let wanted = PeerNode {
            name: rec.name.clone(),
            api_addr: rec.api_addr.clone(),
            peer_addr: rec.peer_addr.clone(),
        };
        let node = rec.id;
        match (rec.role, view.members.get(&rec.id)) {
            (NodeRole::Removed, Some(_)) => steps.push(Step::Remove {
                node,
                leader_leaves: node == view.me && view.voters.len() > 1,
            }),
            (NodeRole::Removed, None) => {}
            (_, None) => steps.push(Step::AddLearner { node, peer: wanted }),
            (_, Some(cur)) if *cur != wanted => steps.push(Step::SetAddress { node, peer: wanted }),
            (_, Some(_)) => {
                let is_voter = view.voters.contains(&node);
                if !is_voter && view.voters.len() < view.max_voters {
                    let caught_up = view
                        .matched
                        .get(&node)
                        .is_some_and(|i| i + CAUGHT_UP_WITHIN >= view.last_log_index);
                    if caught_up {
                        steps.push(Step::Promote { node });
                        continue;
                    }
                }
                let role = if is_voter {
                    NodeRole::Voter
                } else {
                    NodeRole::Learner
                };
                if rec.role != role {
                    steps.push(Step::RecordRole { node, role });
                }
            }
        }
    }
    Plan {
        may_auto_remove,
        steps,
    }
}

async fn upkeep_once(inner: &Arc<Inner>, watch: &mut Watch) -> Result<(), UpkeepError> {
    let m = inner.raft.metrics().borrow().clone();
    let applied_term = m.last_applied.map(|l| l.leader_id.term);
    let serves = m.state == ServerState::Leader;
    match gate(
        inner.id,
        m.current_leader,
        serves,
        applied_term,
        m.current_term,
    ) {
        Gate::NotLeader => {
            watch.clear();
            return Ok(());
        }
        Gate::Catching => return Ok(()),
        Gate::Act => {}
    }
    let reader = inner.store.reader();
    let nodes = tokio::task::spawn_blocking(move || reader.nodes())
        .await
        .map_err(UpkeepError::NodesTask)?
        .map_err(UpkeepError::Nodes)?;
    let plan = plan(&View::of(inner.id, &m, inner.tuning.max_voters), &nodes);
    if let Some(after) = inner.tuning.auto_remove_after
        && plan.may_auto_remove
        && auto_remove(inner, watch, &m, after).await?
    {
        return Ok(());
    }
    for step in plan.steps {
        carry_out(inner, step).await?;
    }
    Ok(())
}

/// Makes one planned change through openraft, or records a role through Raft.
async fn carry_out(inner: &Inner, step: Step) -> Result<(), UpkeepError> {
    let change = |change: Change, node: NodeId| {
        move |source: RaftWriteError| UpkeepError::Change {
            change,
            node,
            source,
        }
    };
    match step {
        Step::Remove {
            node,
            leader_leaves,
        } => {
            if leader_leaves {
                // The leader removing itself: hand over first by removing it as voter.
                tracing::info!(node, "leader leaves the membership");
            }
            inner
                .remove_from_membership(node)
                .await
                .map_err(|source| UpkeepError::Remove { node, source })?;
        }
        Step::AddLearner { node, peer } => {
            tracing::info!(node, addr = %peer.peer_addr, "adding joined node as learner");
            inner
                .raft
                .add_learner(node, peer, false)
                .await
                .map_err(change(Change::AddLearner, node))?;
        }
        Step::SetAddress { node, peer } => {
            tracing::info!(node, addr = %peer.peer_addr, "updating node address in membership");
            inner
                .raft
                .change_membership(
                    ChangeMembers::SetNodes(BTreeMap::from([(node, peer)])),
                    true,
                )
                .await
                .map_err(change(Change::SetAddress, node))?;
        }
        Step::Promote { node } => {
            tracing::info!(node, "promoting caught-up learner to voter");
            inner
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), true)
                .await
                .map_err(change(Change::Promote, node))?;
        }
        Step::RecordRole { node, role } => {
            let env = Envelope {
                at_ms: now_ms(),
                actor: format!("node:{}", inner.id),
                command: Command::UpdateNode {
                    id: node,
                    api_addr: None,
                    peer_addr: None,
                    role: Some(role),
                    version: None,
                },
            };
            inner
                .write(env)
                .await
                .map_err(|source| UpkeepError::RecordRole { node, source })?
                .map_err(|source| UpkeepError::RoleRejected { node, source })?;
        }
    }
    Ok(())
}

/// The actor of the commands the dead-member upkeep proposes (audited as such).
const AUTO_REMOVE_ACTOR: &str = "auto-remove";

/// The dead-member step of the upkeep (leader only): picks at most one member to remove
/// (`dead_members::pick_removal`), commits `RemoveNode` for it as `auto-remove` (so the state
/// marks it removed and the audit says who did it), then takes it out of the membership, the
/// same path as `outpost node remove`. Returns whether it removed one.
async fn auto_remove(
    inner: &Arc<Inner>,
    watch: &mut Watch,
    m: &RaftMetrics,
    after: Duration,
) -> Result<bool, UpkeepError> {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: Vec<(NodeId, bool)> = membership
        .nodes()
        .map(|(id, _)| (*id, voters.contains(id)))
        .collect();
    let silences = watch.silences(m.current_term, Instant::now(), &members, |id| {
        inner.clients.last_answer(id)
    });
    let Some(gone) = dead_members::pick_removal(
        inner.id,
        &silences,
        after,
        dead_members::REACHABLE_WITHIN.min(after),
    ) else {
        return Ok(false);
    };
    let env = Envelope {
        at_ms: now_ms(),
        actor: AUTO_REMOVE_ACTOR.to_string(),
        command: Command::RemoveNode { id: gone.id },
    };
    inner
        .write(env)
        .await
        .map_err(|source| UpkeepError::AutoRemove {
            node: gone.id,
            source,
        })?
        .map_err(|source| UpkeepError::AutoRemoveRejected {
            node: gone.id,
            source,
        })?;
    // Logged once the removal is committed: a failed round is retried without a new warning.
    tracing::warn!(
        node = gone.id,
        voter = gone.voter,
        unreachable_for = %humantime::format_duration(whole_seconds(gone.silent_for)),
        auto_remove_after = %humantime::format_duration(after),
        "removed a member that has not answered for auto_remove_after"
    );
    inner
        .remove_from_membership(gone.id)
        .await
        .map_err(|source| UpkeepError::Remove {
            node: gone.id,
            source,
        })?;
    Ok(true)
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Why one round of the membership upkeep stopped early (logged; the next round retries).
#[derive(Debug, thiserror::Error)]
enum UpkeepError {
    #[error("reading the node records: {0}")]
    Nodes(#[source] outpost_storage::StorageError),
    #[error("reading the node records: {0}")]
    NodesTask(#[source] tokio::task::JoinError),
    #[error("removing node {node}: {source}")]
    Remove {
        node: NodeId,
        #[source]
        source: MembershipError,
    },
    #[error("{change} node {node}: {source}")]
    Change {
        change: Change,
        node: NodeId,
        #[source]
        source: RaftWriteError,
    },
    #[error("recording node {node}'s role: {source}")]
    RecordRole {
        node: NodeId,
        #[source]
        source: WriteError,
    },
    #[error("auto-removing node {node}: {source}")]
    AutoRemove {
        node: NodeId,
        #[source]
        source: WriteError,
    },
    #[error("auto-removing node {node}: {source}")]
    AutoRemoveRejected {
        node: NodeId,
        #[source]
        source: outpost_storage::Rejection,
    },
    #[error("recording node {node}'s role: {source}")]
    RoleRejected {
        node: NodeId,
        #[source]
        source: outpost_storage::Rejection,
    },
}

/// The membership changes the upkeep makes through openraft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    AddLearner,
    SetAddress,
    Promote,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::AddLearner => "adding learner",
            Change::SetAddress => "updating the address of",
            Change::Promote => "promoting to voter",
        })
    }
}

impl RaftNode {
    /// Removes a node from the Raft membership (the leader does it; followers forward the
    /// intent by committing `RemoveNode`, which the leader's upkeep then applies).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MembershipError> {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.len() == 1 && voters.contains(&id) {
            return Err(MembershipError::LastVoter(id));
        }
        if m.current_leader == Some(self.inner.id) {
            self.inner.remove_from_membership(id).await?;
        }
        Ok(())
    }
}

impl Inner {
    async fn remove_from_membership(&self, id: NodeId) -> Result<(), MembershipError> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::NotMember(id));
        }
        if membership.voter_ids().any(|v| v == id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
                .await
                .map_err(MembershipError::Raft)?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(MembershipError::Raft)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use openraft::error::RaftError;

    use super::*;
    use crate::node::errors::StopCause;
    use crate::node::tests::source_as;

    #[test]
    fn a_round_acts_only_as_a_leader_that_applied_its_own_term() {
        // (me, leader, serves as leader, applied term, term) -> gate
        let cases = [
            (1, None, false, Some(3), 3, Gate::NotLeader),
            (1, Some(2), false, Some(3), 3, Gate::NotLeader),
            // Metrics name it leader, but its state is not Leader yet (or any more).
            (1, Some(1), false, Some(3), 3, Gate::NotLeader),
            (1, Some(2), true, Some(3), 3, Gate::NotLeader),
            (1, Some(1), true, None, 3, Gate::Catching),
            (1, Some(1), true, Some(2), 3, Gate::Catching),
            (1, Some(1), true, Some(3), 3, Gate::Act),
        ];
        for (i, (me, leader, serves, applied, term, want)) in cases.into_iter().enumerate() {
            assert_eq!(gate(me, leader, serves, applied, term), want, "case {i}");
        }
    }

    fn peer(id: NodeId, port: u16) -> PeerNode {
        PeerNode {
            name: format!("n{id}"),
            api_addr: format!("127.0.0.1:{}", port + 1000),
            peer_addr: format!("127.0.0.1:{port}"),
        }
    }

    fn rec(id: NodeId, port: u16, role: NodeRole) -> NodeRecord {
        let p = peer(id, port);
        NodeRecord {
            id,
            name: p.name,
            api_addr: p.api_addr,
            peer_addr: p.peer_addr,
            role,
            version: String::new(),
            joined_at_ms: 0,
            binary_sha256: String::new(),
        }
    }

    /// Leader 1 of voters `voters` and learners `learners` (all at port 7000 + id), its log at
    /// index 1000, `matched` replicated per member, at most `max_voters` voters.
    fn view(
        voters: &[NodeId],
        learners: &[NodeId],
        matched: &[(NodeId, u64)],
        max_voters: usize,
    ) -> View {
        View {
            me: 1,
            members: voters
                .iter()
                .chain(learners)
                .map(|&id| (id, peer(id, 7000 + id as u16)))
                .collect(),
            voters: voters.iter().copied().collect(),
            matched: matched.iter().copied().collect(),
            last_log_index: 1000,
            max_voters,
        }
    }

    /// (case, view, node records, may auto-remove, steps)
    type Case = (&'static str, View, Vec<NodeRecord>, bool, Vec<Step>);

    #[test]
    fn a_round_plans_each_node_record_from_one_view() {
        use NodeRole::{Joining, Learner, Removed, Voter};
        let at = |id: NodeId| 7000 + id as u16;
        let cases: Vec<Case> = vec![
            (
                "all in line: nothing to do",
                view(&[1, 2, 3], &[], &[(2, 1000), (3, 990)], 5),
                vec![
                    rec(1, at(1), Voter),
                    rec(2, at(2), Voter),
                    rec(3, at(3), Voter),
                ],
                true,
                vec![],
            ),
            (
                "a joined node becomes a learner",
                view(&[1], &[], &[], 5),
                vec![rec(1, at(1), Voter), rec(4, at(4), Joining)],
                true,
                vec![Step::AddLearner {
                    node: 4,
                    peer: peer(4, at(4)),
                }],
            ),
            (
                "a moved node gets its new address",
                view(&[1, 2], &[], &[(2, 1000)], 5),
                vec![rec(1, at(1), Voter), rec(2, 9000, Voter)],
                true,
                vec![Step::SetAddress {
                    node: 2,
                    peer: peer(2, 9000),
                }],
            ),
            (
                "a removed member leaves, and holds back the dead-member step",
                view(&[1, 2, 3], &[], &[], 5),
                vec![
                    rec(1, at(1), Voter),
                    rec(2, at(2), Removed),
                    rec(3, at(3), Voter),
                ],
                false,
                vec![Step::Remove {
                    node: 2,
                    leader_leaves: false,
                }],
            ),
            (
                "a removed node already out: nothing",
                view(&[1], &[], &[], 5),
                vec![rec(1, at(1), Voter), rec(2, at(2), Removed)],
                true,
                vec![],
            ),
            (
                "the leader marked removed leaves, handing over",
                view(&[1, 2], &[], &[], 5),
                vec![rec(1, at(1), Removed), rec(2, at(2), Voter)],
                false,
                vec![Step::Remove {
                    node: 1,
                    leader_leaves: true,
                }],
            ),
            (
                "the last voter marked removed is not handing over",
                view(&[1], &[], &[], 5),
                vec![rec(1, at(1), Removed)],
                false,
                vec![Step::Remove {
                    node: 1,
                    leader_leaves: false,
                }],
            ),
            (
                "a caught-up learner is promoted (100 entries behind is caught up)",
                view(&[1], &[2], &[(2, 900)], 5),
                vec![rec(1, at(1), Voter), rec(2, at(2), Learner)],
                true,
                vec![Step::Promote { node: 2 }],
            ),
            (
                "a lagging learner stays, and its role is recorded",
                view(&[1], &[2], &[(2, 899)], 5),
                vec![rec(1, at(1), Voter), rec(2, at(2), Joining)],
                true,
                vec![Step::RecordRole {
                    node: 2,
                    role: Learner,
                }],
            ),
            (
                "a learner nothing was replicated to stays",
                view(&[1], &[2], &[], 5),
                vec![rec(1, at(1), Voter), rec(2, at(2), Learner)],
                true,
                vec![],
            ),
            (
                "no promotion past max_voters",
                view(&[1, 2], &[3], &[(2, 1000), (3, 1000)], 2),
                vec![
                    rec(1, at(1), Voter),
                    rec(2, at(2), Voter),
                    rec(3, at(3), Learner),
                ],
                true,
                vec![],
            ),
            (
                "two learners promoted in one round from one view",
                view(&[1], &[2, 3], &[(2, 1000), (3, 1000)], 2),
                vec![
                    rec(1, at(1), Voter),
                    rec(2, at(2), Learner),
                    rec(3, at(3), Learner),
                ],
                true,
                vec![Step::Promote { node: 2 }, Step::Promote { node: 3 }],
            ),
            (
                "a voter recorded as learner is recorded as voter",
                view(&[1, 2], &[], &[], 5),
                vec![rec(1, at(1), Voter), rec(2, at(2), Learner)],
                true,
                vec![Step::RecordRole {
                    node: 2,
                    role: Voter,
                }],
            ),
            (
                "steps follow the order of the records",
                view(&[1, 2], &[3], &[], 5),
                vec![
                    rec(4, at(4), Joining),
                    rec(3, at(3), Removed),
                    rec(2, 9002, Voter),
                    rec(1, at(1), Learner),
                ],
                false,
                vec![
                    Step::AddLearner {
                        node: 4,
                        peer: peer(4, at(4)),
                    },
                    Step::Remove {
                        node: 3,
                        leader_leaves: false,
                    },
                    Step::SetAddress {
                        node: 2,
                        peer: peer(2, 9002),
                    },
                    Step::RecordRole {
                        node: 1,
                        role: Voter,
                    },
                ],
            ),
        ];
        for (name, view, nodes, may_auto_remove, steps) in cases {
            assert_eq!(
                plan(&view, &nodes),
                Plan {
                    may_auto_remove,
                    steps
                },
                "{name}"
            );
        }
    }

    #[test]
    fn upkeep_errors_name_the_step_and_keep_the_cause() {
        use openraft::error::Fatal;
        type Check = fn(&UpkeepError) -> bool;
        let rejection = outpost_storage::Rejection {
            code: outpost_storage::RejectCode::NotFound,
            message: "node 4 does not exist".into(),
        };
        let cases: Vec<(UpkeepError, &str, Check)> = vec![
            (
                UpkeepError::Change {
                    change: Change::Promote,
                    node: 4,
                    source: RaftError::Fatal(Fatal::Stopped),
                },
                "promoting to voter node 4: raft stopped",
                |e| source_as::<RaftWriteError>(e).is_some(),
            ),
            (
                UpkeepError::Remove {
                    node: 4,
                    source: MembershipError::Raft(RaftError::Fatal(Fatal::Panicked)),
                },
                "removing node 4: membership change failed: panicked",
                |e| {
                    source_as::<MembershipError>(e)
                        .and_then(|m| source_as::<RaftWriteError>(m))
                        .is_some_and(|r| matches!(r, RaftError::Fatal(Fatal::Panicked)))
                },
            ),
            (
                UpkeepError::RecordRole {
                    node: 4,
                    source: WriteError::Stopped(StopCause::Batcher),
                },
                "recording node 4's role: this node has stopped: write batcher stopped",
                |e| source_as::<WriteError>(e).is_some(),
            ),
            (
                UpkeepError::RoleRejected {
                    node: 4,
                    source: rejection,
                },
                "recording node 4's role: not_found: node 4 does not exist",
                |e| {
                    source_as::<outpost_storage::Rejection>(e)
                        .is_some_and(|r| r.code == outpost_storage::RejectCode::NotFound)
                },
            ),
        ];
        for (e, text, check) in cases {
            assert_eq!(e.to_string(), text);
            assert!(check(&e), "{text}: {:?}", e.source());
        }
    }
}
