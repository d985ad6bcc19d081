//! Fast failover: a follower whose leader's process died campaigns at once, instead of waiting
//! out openraft's leader lease and an election timeout (450-600 ms with the defaults).
//!
//! A process that dies, even by kill -9, has its sockets closed by the kernel, so the peer
//! connections the leader opened to this node (it dials every member to replicate) end with a
//! FIN or RST within a round trip. `PeerWatch` counts the authenticated inbound connections of
//! each peer and notes when each peer last showed itself (AppendEntries, InstallSnapshot, a new
//! connection); `run` acts when the last inbound connection of this node's leader closes.
//!
//! Why every follower campaigns, and sometimes twice. openraft 0.9's follower refuses every vote
//! request while the lease of the leader it last heard from runs (`election_timeout_max` after
//! the last AppendEntries), unless it has campaigned itself since: a campaign replaces its
//! committed vote for the old leader with an uncommitted vote for itself, which holds no lease.
//! So each follower that sees the leader go campaigns (term T+1). openraft orders the votes of
//! one term by candidate id (its default leader ids are `(term, node id)`), so a candidate grants
//! a vote request of the same term from a higher id whose log is not behind its own: the
//! candidate with the highest id wins T+1 at once, unless another candidate's log is ahead of
//! its. Then nobody wins T+1, and after `runoff` the candidate whose log is the most up to date
//! of the ballots seen (ties: the higher id) campaigns again at T+2, which the others grant:
//! their votes are for T+1 and their logs are not ahead of its. Every node computes the same
//! pick from the same ballots (`runs_again`), so exactly one runs again.
//!
//! Elections are always safe in Raft; what this must not do is depose a live leader. A node
//! campaigns only when the peer whose last connection closed is its current leader and it is a
//! voting follower; after `grace`, no connection of that peer is open and nothing came from it
//! since the close (a leader replacing a connection opens the new one before it closes the old);
//! and it still follows that leader. Machine loss, a partition or a paused process close
//! nothing: the lease and the election timeout remain the fallback, as they are when this path
//! fails (e.g. a ballot arrived after `runoff`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::mpsc;

use crate::types::{LogId, NodeId, Raft, Vote};

/// The timing of the fast path (from `RaftTuning`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long the leader must stay without a connection to this node, and silent, after its
    /// last connection closed, before this node campaigns.
    pub grace: Duration,
    /// How long after its first campaign a candidate that won nothing decides whether it runs
    /// again: time enough for the other followers' ballots (a vote fsync and a round trip).
    pub runoff: Duration,
}

/// A vote request seen, sent by a candidate or by this node: the candidate's term and last log
/// id, and when it was seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ballot {
    pub term: u64,
    pub last_log_id: Option<LogId>,
    pub at: Instant,
}

/// The last inbound connection of `peer` closed at `at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed {
    peer: NodeId,
    at: Instant,
}

#[derive(Default)]
struct Seen {
    /// Authenticated inbound connections open, per peer (absent: none).
    inbound: HashMap<NodeId, usize>,
    /// When each peer last sent AppendEntries or InstallSnapshot, or opened a connection.
    heard: HashMap<NodeId, Instant>,
    /// The newest vote request of each candidate (this node's own too).
    ballots: HashMap<NodeId, Ballot>,
}

/// What the peer transport tells the failover task: inbound connections opening and closing,
/// the leader's requests, vote requests both ways. All in memory, cheap (one short lock).
pub(crate) struct PeerWatch {
    seen: Mutex<Seen>,
    closed: mpsc::Sender<Closed>,
    /// Campaigns started by `run`.
    campaigns: AtomicU64,
    /// The term of the last of them (0: none yet).
    campaign_term: AtomicU64,
}

/// An open inbound connection of a peer; dropping it records the close.
pub(crate) struct Inbound {
    watch: Arc<PeerWatch>,
    peer: NodeId,
}

impl Drop for Inbound {
    fn drop(&mut self) {
        self.watch.inbound_closed(self.peer);
    }
}

/// What `run` has done since the node started (shown by `status` and `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailoverStats {
    pub campaigns: u64,
    pub last_term: Option<u64>,
}

impl PeerWatch {
    pub(crate) fn new() -> (Arc<PeerWatch>, mpsc::Receiver<Closed>) {
        // Closes are rare; should they pile up, dropping some loses nothing that the election
        // timeout does not catch.
        let (tx, rx) = mpsc::channel(64);
        let watch = PeerWatch {
            seen: Mutex::new(Seen::default()),
            closed: tx,
            campaigns: AtomicU64::new(0),
            campaign_term: AtomicU64::new(0),
        };
        (Arc::new(watch), rx)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Node `peer` opened a connection to this node (its certificate checked).
    pub(crate) fn inbound_opened(self: &Arc<Self>, peer: NodeId) -> Inbound {
        let mut seen = self.seen();
        *seen.inbound.entry(peer).or_insert(0) += 1;
        seen.heard.insert(peer, Instant::now());
        Inbound {
            watch: self.clone(),
            peer,
        }
    }

    fn inbound_closed(&self, peer: NodeId) {
        let last = {
            let mut seen = self.seen();
            let n = seen.inbound.entry(peer).or_insert(1);
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                seen.inbound.remove(&peer);
            }
            last
        };
        if last {
            let _ = self.closed.try_send(Closed {
                peer,
                at: Instant::now(),
            });
        }
    }

    /// Node `peer` sent AppendEntries or InstallSnapshot: it acts as a leader.
    pub(crate) fn heard(&self, peer: NodeId) {
        self.seen().heard.insert(peer, Instant::now());
    }

    /// A vote request of `candidate` went out from this node or came in from it.
    pub(crate) fn ballot(&self, candidate: NodeId, vote: &Vote, last_log_id: Option<LogId>) {
        let ballot = Ballot {
            term: vote.leader_id().term,
            last_log_id,
            at: Instant::now(),
        };
        self.seen().ballots.insert(candidate, ballot);
    }

    /// Whether `peer` has a connection open to this node, or showed itself after `since`.
    fn present_since(&self, peer: NodeId, since: Instant) -> bool {
        let seen = self.seen();
        seen.inbound.contains_key(&peer) || seen.heard.get(&peer).is_some_and(|t| *t > since)
    }

    fn ballots(&self) -> Vec<(NodeId, Ballot)> {
        self.seen().ballots.iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub(crate) fn stats(&self) -> FailoverStats {
        let term = self.campaign_term.load(Ordering::Relaxed);
        FailoverStats {
            campaigns: self.campaigns.load(Ordering::Relaxed),
            last_term: (term > 0).then_some(term),
        }
    }

    /// Starts a campaign (openraft's `trigger().elect()`, which skips the lease and the
    /// election timeout of this node) and returns its term, or `None` when openraft started
    /// none (this node became leader meanwhile, is no voter, or Raft stopped).
    async fn campaign(&self, raft: &Raft, me: NodeId) -> Option<u64> {
        // Requests to the Raft core are handled in order: the vote read after the trigger is
        // the one the trigger left.
        let before = raft.with_raft_state(|st| *st.vote_ref()).await.ok()?;
        if let Err(e) = raft.trigger().elect().await {
            tracing::warn!(error = %e, "could not start a campaign");
            return None;
        }
        let after = raft.with_raft_state(|st| *st.vote_ref()).await.ok()?;
        let term = after.leader_id().term;
        let ours = !after.is_committed()
            && after.leader_id().voted_for() == Some(me)
            && term > before.leader_id().term;
        if !ours {
            return None;
        }
        self.campaigns.fetch_add(1, Ordering::Relaxed);
        self.campaign_term.store(term, Ordering::Relaxed);
        Some(term)
    }
}

/// Whether this node, `me`, follows `leader` as a voter (and is not it).
fn follows(raft: &Raft, me: NodeId, leader: NodeId) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    leader != me
        && m.current_leader == Some(leader)
        && m.state == ServerState::Follower
        && m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == me)
}

/// Whether `me`, a candidate at `term` that won nothing, campaigns again (at `term + 1`): its
/// ballot at `term` is among those seen since `since`, no other candidate is at a later term,
/// and of the candidates at `term` it has the greatest last log id (ties: the higher id, as
/// openraft orders votes). The others at `term` then grant it; each of them, given the same
/// ballots, decides it is not the one.
pub(crate) fn runs_again(
    me: NodeId,
    term: u64,
    ballots: &[(NodeId, Ballot)],
    since: Instant,
) -> bool {
    let fresh = || ballots.iter().filter(|(_, b)| b.at >= since);
    let Some((_, mine)) = fresh().find(|(id, b)| *id == me && b.term == term) else {
        return false;
    };
    let rank = (mine.last_log_id, me);
    fresh()
        .filter(|(id, _)| *id != me)
        .all(|(id, b)| b.term < term || (b.term == term && (b.last_log_id, *id) < rank))
}

/// The failover task: for each close of a peer's last inbound connection, the checks and the
/// campaigns described in the module documentation. Ends when the watch is dropped.
pub(crate) async fn run(
    raft: Raft,
    me: NodeId,
    watch: Arc<PeerWatch>,
    mut closed: mpsc::Receiver<Closed>,
    timing: Timing,
) {
    while let Some(Closed { peer, at }) = closed.recv().await {
        if !follows(&raft, me, peer) {
            continue;
        }
        tokio::time::sleep_until((at + timing.grace).into()).await;
        if watch.present_since(peer, at) {
            tracing::debug!(
                leader = peer,
                "the leader's connection closed, but it is still there"
            );
            continue;
        }
        if !follows(&raft, me, peer) {
            continue;
        }
        let Some(term) = watch.campaign(&raft, me).await else {
            continue;
        };
        tracing::info!(
            leader = peer,
            term,
            "the leader closed its connections and has been silent for {} ms: campaigning without waiting for the election timeout",
            timing.grace.as_millis()
        );
        tokio::time::sleep(timing.runoff).await;
        // Nobody won `term` (a leader's vote is committed) and no later term began. The vote
        // may name another candidate: a refusal carries the refuser's vote, which openraft then
        // takes over, uncommitted, when it is greater.
        let vote = raft.metrics().borrow().vote;
        if vote.is_committed() || vote.leader_id().term != term {
            continue;
        }
        let since = at.checked_sub(timing.grace).unwrap_or(at);
        if !runs_again(me, term, &watch.ballots(), since) {
            continue;
        }
        if let Some(again) = watch.campaign(&raft, me).await {
            tracing::info!(
                term = again,
                "no candidate won term {term} and this node's log is the most up to date of them: campaigning again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    #[test]
    fn one_candidate_runs_again() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let b = |term, last_log_id, ms| Ballot {
            term,
            last_log_id,
            at: at(ms),
        };
        // (name, me, my term, ballots, since) -> runs again?
        type Case = (&'static str, NodeId, u64, Vec<(NodeId, Ballot)>, u64, bool);
        let cases: Vec<Case> = vec![
            (
                "same log: the higher id",
                2,
                5,
                vec![(1, b(5, log(4, 10), 100)), (2, b(5, log(4, 10), 100))],
                50,
                true,
            ),
            (
                "same log: not the lower id",
                1,
                5,
                vec![(1, b(5, log(4, 10), 100)), (2, b(5, log(4, 10), 100))],
                50,
                false,
            ),
            (
                "a longer log wins over a higher id",
                1,
                5,
                vec![(1, b(5, log(4, 11), 100)), (2, b(5, log(4, 10), 100))],
                50,
                true,
            ),
            (
                "a shorter log does not run",
                2,
                5,
                vec![(1, b(5, log(4, 11), 100)), (2, b(5, log(4, 10), 100))],
                50,
                false,
            ),
            (
                "a later term of the last entry wins over a higher index",
                1,
                5,
                vec![(1, b(5, log(4, 10), 100)), (2, b(5, log(3, 12), 100))],
                50,
                true,
            ),
            (
                "five nodes: the most up to date of four",
                3,
                8,
                vec![
                    (1, b(8, log(7, 40), 100)),
                    (2, b(8, log(7, 41), 100)),
                    (3, b(8, log(7, 42), 100)),
                    (5, b(8, log(7, 41), 100)),
                ],
                50,
                true,
            ),
            (
                "five nodes: a tie goes to the higher id",
                3,
                8,
                vec![
                    (1, b(8, log(7, 40), 100)),
                    (3, b(8, log(7, 42), 100)),
                    (5, b(8, log(7, 42), 100)),
                ],
                50,
                false,
            ),
            (
                "alone (the other never campaigned)",
                2,
                5,
                vec![(2, b(5, log(4, 10), 100))],
                50,
                true,
            ),
            (
                "someone is at a later term already",
                1,
                5,
                vec![(1, b(5, log(4, 10), 100)), (2, b(6, log(4, 10), 100))],
                50,
                false,
            ),
            (
                "a candidate at an earlier term does not count",
                2,
                5,
                vec![(1, b(4, log(4, 10), 100)), (2, b(5, log(4, 10), 100))],
                50,
                true,
            ),
            (
                "my ballot for this term not seen (not sent yet)",
                1,
                5,
                vec![(1, b(4, log(4, 10), 100)), (2, b(5, log(4, 10), 100))],
                50,
                false,
            ),
            ("no ballot at all", 1, 5, vec![], 50, false),
            (
                "an old ballot of a past failover is ignored",
                2,
                5,
                vec![(1, b(7, log(4, 10), 10)), (2, b(5, log(4, 10), 100))],
                50,
                true,
            ),
            (
                "my own old ballot is not this campaign's",
                1,
                5,
                vec![(1, b(5, log(4, 10), 10))],
                50,
                false,
            ),
        ];
        for (name, me, term, ballots, since, want) in cases {
            assert_eq!(runs_again(me, term, &ballots, at(since)), want, "{name}");
        }
    }

    #[tokio::test]
    async fn only_the_last_connection_closing_is_reported() {
        let (watch, mut rx) = PeerWatch::new();
        let t0 = Instant::now();
        let a = watch.inbound_opened(7);
        let b = watch.inbound_opened(7);
        let other = watch.inbound_opened(8);
        drop(a);
        assert!(rx.try_recv().is_err(), "node 7 still has a connection");
        assert!(watch.present_since(7, t0));
        drop(b);
        let closed = rx.try_recv().expect("the last connection of node 7 closed");
        assert_eq!(closed.peer, 7);
        assert!(!watch.present_since(7, closed.at), "gone and silent");
        watch.heard(7);
        assert!(watch.present_since(7, closed.at), "spoke after the close");
        let again = watch.inbound_opened(7);
        assert!(watch.present_since(7, Instant::now() - Duration::from_millis(1)));
        drop(again);
        drop(other);
        let mut peers: Vec<NodeId> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.peer)
            .collect();
        peers.sort();
        assert_eq!(peers, vec![7, 8]);
    }
}
