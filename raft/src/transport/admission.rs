//! Which requests an authenticated peer is served, given what this node knows of its
//! membership (`MemberView`): the pure rule `admission`, table-tested below.

use super::frame::PeerRequest;
use crate::types::{NodeId, Vote};

/// This node's current Raft membership as far as one peer is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemberView {
    /// This node has a membership at all (false: uninitialised, e.g. a learner that has not
    /// yet heard from the leader).
    pub has_membership: bool,
    /// The peer is a voter or learner of it.
    pub is_member: bool,
    /// The state records the peer as removed: node ids are never reused, so it gets nothing.
    pub removed: bool,
}

impl MemberView {
    /// A member of an initialised cluster.
    pub(crate) const MEMBER: MemberView = MemberView {
        has_membership: true,
        is_member: true,
        removed: false,
    };
}

/// Whether a request from authenticated node `from` is served. Members are; so is anyone while
/// this node has no membership (joining needs the leader's first AppendEntries). A non-member
/// gets a `Ping` answer (only our id, which our certificate shows anyway) and its
/// AppendEntries/InstallSnapshot are passed to openraft when it sends them as the leader (its
/// vote names itself): this node may lag behind the membership change that added that leader,
/// and refusing it would stall this node for good; openraft itself refuses a stale leader.
/// Everything else from a non-member (votes, forwarded writes, reads, application requests)
/// is refused. A node the state records as removed gets nothing at all, whatever it claims.
pub(crate) fn admission(view: MemberView, from: NodeId, req: &PeerRequest) -> Result<(), String> {
    if view.removed {
        return Err(format!("node {from} was removed from this cluster"));
    }
    if view.is_member || !view.has_membership {
        return Ok(());
    }
    let leads = |vote: &Vote| vote.is_committed() && vote.leader_id().voted_for() == Some(from);
    match req {
        PeerRequest::Ping => Ok(()),
        PeerRequest::AppendEntries(r) if leads(&r.vote) => Ok(()),
        PeerRequest::InstallSnapshot(r) if leads(&r.vote) => Ok(()),
        _ => Err(format!("node {from} is not a member of this cluster")),
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::{AppendEntriesRequest, VoteRequest};

    use super::*;
    use crate::codec;
    use crate::types::{Proposal, Vote};

    #[test]
    fn only_members_are_served() {
        let member = MemberView {
            has_membership: true,
            is_member: true,
            removed: false,
        };
        let stranger = MemberView {
            is_member: false,
            ..member
        };
        let fresh = MemberView {
            has_membership: false,
            ..stranger
        };
        // Removed: still in the membership (its removal not yet applied there), or not.
        let removed_member = MemberView {
            removed: true,
            ..member
        };
        let removed = MemberView {
            removed: true,
            ..stranger
        };
        let append = |vote: Vote| {
            PeerRequest::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id: None,
                leader_commit: None,
                entries: Vec::new(),
            })
        };
        let forward = || PeerRequest::Forward(Proposal(vec![1, 0, 0]));
        let vote_req = || {
            PeerRequest::Vote(VoteRequest {
                vote: Vote::new(9, 5),
                last_log_id: None,
            })
        };
        // (view, request from node 5) -> served?
        let cases: Vec<(&str, MemberView, PeerRequest, bool)> = vec![
            ("member forwards", member, forward(), true),
            ("member votes", member, vote_req(), true),
            ("fresh node takes anyone", fresh, forward(), true),
            (
                "fresh node takes the leader",
                fresh,
                append(Vote::new_committed(2, 5)),
                true,
            ),
            ("stranger forwards", stranger, forward(), false),
            ("stranger votes", stranger, vote_req(), false),
            ("stranger reads", stranger, PeerRequest::ReadIndex, false),
            (
                "stranger app",
                stranger,
                PeerRequest::App(codec::Bytes(vec![])),
                false,
            ),
            ("stranger pings", stranger, PeerRequest::Ping, true),
            // A leader we have not heard of yet (we lag behind the change that added it).
            (
                "stranger leads",
                stranger,
                append(Vote::new_committed(9, 5)),
                true,
            ),
            (
                "stranger campaigns",
                stranger,
                append(Vote::new(9, 5)),
                false,
            ),
            (
                "stranger speaks for another",
                stranger,
                append(Vote::new_committed(9, 6)),
                false,
            ),
            (
                "removed member pings",
                removed_member,
                PeerRequest::Ping,
                false,
            ),
            ("removed forwards", removed, forward(), false),
            (
                "removed leads",
                removed,
                append(Vote::new_committed(9, 5)),
                false,
            ),
            (
                "removed leads a fresh node",
                MemberView {
                    removed: true,
                    ..fresh
                },
                append(Vote::new_committed(9, 5)),
                false,
            ),
        ];
        for (name, view, req, want) in cases {
            let got = admission(view, 5, &req);
            assert_eq!(got.is_ok(), want, "{name}: {got:?}");
            if let Err(why) = got {
                let text = if view.removed {
                    "node 5 was removed from this cluster"
                } else {
                    "node 5 is not a member of this cluster"
                };
                assert_eq!(why, text);
            }
        }
    }
}
