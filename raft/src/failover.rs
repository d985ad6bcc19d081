//! Fast failover: a follower whose leader's process died campaigns at once, instead of waiting
//! out openraft's leader lease and an election timeout (450-675 ms with the defaults).
//!
//! A process that dies, even by kill -9, has its sockets closed by the kernel, so the peer
//! connection the leader opened to this node (it dials every member to replicate) ends with a
//! FIN or RST within a round trip. `PeerWatch` follows the authenticated inbound connections:
//! who opened each, when, and when a request last came over it; `run` acts when the
//! connection that carried the latest request of this node's leader closes. (Only that one: an
//! old connection of the same peer, whose close a partition held up in TCP retransmission, may
//! close at any time, or stay open after the process is gone.)
//!
//! Why every follower campaigns, and sometimes twice. openraft 0.9's follower refuses every vote
//! request while the lease of the leader it last heard from runs (`election_timeout_max` after
//! the last AppendEntries), unless it has campaigned itself since: a campaign replaces its
//! committed vote for the old leader with an uncommitted vote for itself, which holds no lease.
//! So each follower that sees the leader go campaigns (term T+1). openraft orders the votes of
//! one term by candidate id (its default leader ids are `(term, node id)`), so a candidate
//! grants a vote request of the same term from a higher id whose log is not behind its own: the
//! candidate with the highest id wins T+1 at once. Nobody wins when another candidate's log is
//! ahead of its, or when a follower saw the close late (a busy process reads the frames still
//! queued before the end of the connection) and refused the first requests under its lease.
//! So a candidate that has not won waits for ballots (vote requests, at T+1 or later) from a
//! majority of the voters, itself included, and for the answers to its own vote requests from
//! them; then the one whose log is the most up to date of them (ties: the higher id) campaigns
//! again, at a term above every vote of that majority, and they grant it: none holds a lease
//! any more, and no log of theirs is ahead of its. Every candidate computes the same pick from
//! the same ballots (`runoff`).
//!
//! Elections are always safe in Raft; what this must not do is depose a live leader. A node
//! campaigns only when the peer whose connection closed is its current leader and it is a
//! voting follower; when, `grace` later, no request came from that peer since the close and it
//! has no connection open that is newer than the closed one (a leader that replaces a
//! connection, after a request on it went unanswered, opens the new one before it closes the
//! old); and when it still follows that leader. A lost machine, a partition or a paused process
//! close nothing: the lease and the election timeout remain the fallback, as they are when this
//! path cannot finish (e.g. a follower that still saw frames of the dead leader after the
//! close does not campaign, and its lease holds until it runs out).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::{Notify, mpsc};

use crate::types::{LogId, NodeId, Raft, Vote};

/// The timing of the fast path (from `RaftTuning`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long the leader must stay silent, without a new connection to this node, after its
    /// connection closed, before this node campaigns.
    pub grace: Duration,
    /// How long after its first campaign a candidate that has not won stops waiting for the
    /// others' ballots: by then openraft's own election timeout has taken over.
    pub give_up: Duration,
}

/// A vote request seen, sent by a candidate or by this node: the candidate's term and last log
/// id, and when it was seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ballot {
    pub term: u64,
    pub last_log_id: Option<LogId>,
    pub at: Instant,
}

/// The answers to this node's vote requests of its latest campaign: per voter asked, `None`
/// while the request is out, else whether it granted the vote (a failed or abandoned request
/// counts as refused).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Asked {
    pub term: u64,
    pub answers: HashMap<NodeId, Option<bool>>,
}

/// The connection that carried the latest request of `peer` (its replication connection, when
/// `peer` leads), opened at `opened`, closed at `at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed {
    peer: NodeId,
    opened: Instant,
    at: Instant,
}

/// One authenticated inbound connection.
struct Conn {
    peer: NodeId,
    opened: Instant,
    /// When the last request came over it.
    last_request: Option<Instant>,
}

#[derive(Default)]
struct Seen {
    /// Open inbound connections, by a number of their own.
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    /// When each peer last sent a request, over any connection.
    heard: HashMap<NodeId, Instant>,
    /// The newest vote request of each candidate (this node's own too).
    ballots: HashMap<NodeId, Ballot>,
    asked: Asked,
}

/// What the peer transport tells the failover task: inbound connections opening and closing,
/// the requests on them, vote requests both ways and the answers to ours. All in memory, cheap
/// (one short lock).
pub(crate) struct PeerWatch {
    seen: Mutex<Seen>,
    closed: mpsc::Sender<Closed>,
    /// Woken at every ballot and every answer to our vote requests.
    news: Notify,
    /// Campaigns started by `run`.
    campaigns: AtomicU64,
    /// The term of the last of them (0: none yet).
    campaign_term: AtomicU64,
}

/// An open inbound connection; dropping it records the close.
pub(crate) struct Inbound {
    watch: Arc<PeerWatch>,
    id: u64,
}

impl Inbound {
    /// A request came over this connection.
    pub(crate) fn request(&self) {
        self.watch.request(self.id);
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        self.watch.inbound_closed(self.id);
    }
}

/// One vote request of this node, out to `target`; dropped without `answer`, it counts as
/// refused (openraft abandons a request that takes too long).
pub(crate) struct Ask {
    watch: Arc<PeerWatch>,
    term: u64,
    target: NodeId,
    granted: bool,
}

impl Ask {
    pub(crate) fn answer(mut self, granted: bool) {
        self.granted = granted;
    }
}

impl Drop for Ask {
    fn drop(&mut self) {
        self.watch.answered(self.term, self.target, self.granted);
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
            news: Notify::new(),
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
        let id = seen.next_conn;
        seen.next_conn += 1;
        let conn = Conn {
            peer,
            opened: Instant::now(),
            last_request: None,
        };
        seen.conns.insert(id, conn);
        Inbound {
            watch: self.clone(),
            id,
        }
    }

    fn request(&self, id: u64) {
        let now = Instant::now();
        let mut seen = self.seen();
        if let Some(c) = seen.conns.get_mut(&id) {
            c.last_request = Some(now);
            let peer = c.peer;
            seen.heard.insert(peer, now);
        }
    }

    /// Reports the close when the connection carried the peer's latest request: a leader's
    /// connection that closes is reported, an idle one (e.g. an old connection of the same
    /// peer whose close was held up by a partition) is not.
    fn inbound_closed(&self, id: u64) {
        let closed = {
            let mut seen = self.seen();
            let Some(c) = seen.conns.remove(&id) else {
                return;
            };
            let Some(last) = c.last_request else {
                return;
            };
            let latest = seen.heard.get(&c.peer) == Some(&last);
            latest.then_some(Closed {
                peer: c.peer,
                opened: c.opened,
                at: Instant::now(),
            })
        };
        if let Some(closed) = closed {
            let _ = self.closed.try_send(closed);
        }
    }

    /// Whether the peer of a closed connection is still there: it sent a request since the
    /// close, or has a connection open that it opened after the closed one. (A live leader
    /// replaces a connection by opening the new one first; and an old connection whose last
    /// frames and close a partition held up may deliver them after the new one took over.)
    fn still_there(&self, closed: &Closed) -> bool {
        let seen = self.seen();
        seen.heard.get(&closed.peer).is_some_and(|t| *t > closed.at)
            || seen
                .conns
                .values()
                .any(|c| c.peer == closed.peer && c.opened > closed.opened)
    }

    /// A vote request of `candidate` went out from this node or came in from it.
    pub(crate) fn ballot(&self, candidate: NodeId, vote: &Vote, last_log_id: Option<LogId>) {
        let ballot = Ballot {
            term: vote.leader_id().term,
            last_log_id,
            at: Instant::now(),
        };
        self.seen().ballots.insert(candidate, ballot);
        self.news.notify_waiters();
    }

    /// This node asks `target` for its vote at `term`.
    pub(crate) fn ask(self: &Arc<Self>, term: u64, target: NodeId) -> Ask {
        let mut seen = self.seen();
        if term > seen.asked.term {
            seen.asked = Asked {
                term,
                answers: HashMap::new(),
            };
        }
        if term == seen.asked.term {
            seen.asked.answers.insert(target, None);
        }
        Ask {
            watch: self.clone(),
            term,
            target,
            granted: false,
        }
    }

    fn answered(&self, term: u64, target: NodeId, granted: bool) {
        {
            let mut seen = self.seen();
            if seen.asked.term == term {
                seen.asked.answers.insert(target, Some(granted));
            }
        }
        self.news.notify_waiters();
    }

    fn ballots(&self) -> Vec<(NodeId, Ballot)> {
        self.seen().ballots.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn asked(&self) -> Asked {
        self.seen().asked.clone()
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

/// What the failover needs of this node's Raft state.
struct View {
    vote: Vote,
    follower: bool,
    voters: BTreeSet<NodeId>,
}

impl View {
    /// Read from the Raft core itself: the metrics may lag behind a campaign just started.
    /// `None` when Raft has stopped.
    async fn of(raft: &Raft) -> Option<View> {
        raft.with_raft_state(|st| View {
            vote: *st.vote_ref(),
            follower: st.server_state == ServerState::Follower,
            voters: st.membership_state.effective().voter_ids().collect(),
        })
        .await
        .ok()
    }

    /// Whether this node, `me`, follows `leader` as a voter (and is not it).
    fn follows(&self, me: NodeId, leader: NodeId) -> bool {
        leader != me
            && self.vote.is_committed()
            && self.vote.leader_id().voted_for() == Some(leader)
            && self.follower
            && self.voters.contains(&me)
    }
}

/// What a candidate that has not won does next (`runoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runoff {
    /// Wait for the next ballot or answer.
    Wait,
    /// Campaign again, at the term after its current vote's.
    Run,
    /// Nothing: its campaign is winning, another candidate runs again, or one is at a later
    /// term already.
    Leave,
}

/// A first campaign after the leader's close: this node, and its term.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidacy {
    pub me: NodeId,
    pub term: u64,
}

/// The decision of a candidate that has not won, whose vote is now at `vote_term` (its first
/// campaign's term, or later: openraft's election timeout may have run it again, or it took
/// over a refuser's vote). The ballots that count are each voter's latest since `since` at the
/// first campaign's term or later: a voter that sent one has dropped its lease. Once they come
/// from a majority of `voters` (this node among them), and each of the others has answered this
/// node's latest vote request without enough grants for it to win, this node runs again if its
/// last log id is the greatest of them (ties: the higher id, as openraft orders votes): its next
/// term is above every vote of that majority, whose members then grant it; each of them, given
/// the same ballots, leaves it. A ballot above `vote_term` means another candidate is ahead:
/// leave it to that one (and to the election timeout).
pub(crate) fn runoff(
    c: Candidacy,
    vote_term: u64,
    voters: &BTreeSet<NodeId>,
    ballots: &[(NodeId, Ballot)],
    asked: &Asked,
    since: Instant,
) -> Runoff {
    let counted: Vec<(NodeId, Ballot)> = ballots
        .iter()
        .filter(|(id, b)| b.at >= since && b.term >= c.term && voters.contains(id))
        .copied()
        .collect();
    if counted
        .iter()
        .any(|(id, b)| *id != c.me && b.term > vote_term)
    {
        return Runoff::Leave;
    }
    let Some((_, mine)) = counted.iter().find(|(id, _)| *id == c.me) else {
        // Our own vote requests are not out yet.
        return Runoff::Wait;
    };
    let majority = voters.len() / 2 + 1;
    let answers = |id: &NodeId| {
        (asked.term == mine.term)
            .then(|| asked.answers.get(id).copied().flatten())
            .flatten()
    };
    let grants = voters
        .iter()
        .filter(|id| **id != c.me && answers(id) == Some(true))
        .count();
    if 1 + grants >= majority {
        return Runoff::Leave;
    }
    if counted.len() < majority
        || counted
            .iter()
            .any(|(id, _)| *id != c.me && answers(id).is_none())
    {
        return Runoff::Wait;
    }
    let rank = (mine.last_log_id, c.me);
    let best = counted
        .iter()
        .filter(|(id, _)| *id != c.me)
        .all(|(id, b)| (b.last_log_id, *id) < rank);
    if best { Runoff::Run } else { Runoff::Leave }
}

/// The failover task: for each close of a leader's connection, the checks and the campaigns
/// described in the module documentation. Ends when the watch is dropped.
pub(crate) async fn run(
    raft: Raft,
    me: NodeId,
    watch: Arc<PeerWatch>,
    mut closed: mpsc::Receiver<Closed>,
    timing: Timing,
) {
    while let Some(close) = closed.recv().await {
        let Closed { peer, at, .. } = close;
        let follows = |v: Option<View>| v.is_some_and(|v| v.follows(me, peer));
        if !follows(View::of(&raft).await) {
            continue;
        }
        tokio::time::sleep_until((at + timing.grace).into()).await;
        if watch.still_there(&close) {
            tracing::debug!(
                leader = peer,
                "the leader's connection closed, but it is still there"
            );
            continue;
        }
        if !follows(View::of(&raft).await) {
            continue;
        }
        let Some(term) = watch.campaign(&raft, me).await else {
            continue;
        };
        tracing::info!(
            leader = peer,
            term,
            "the leader closed its connection and has been silent for {} ms: campaigning without waiting for the election timeout",
            timing.grace.as_millis()
        );
        // Ballots from before this failover's time do not count (the other followers may have
        // seen the close a little earlier).
        let since = at.checked_sub(timing.give_up).unwrap_or(at);
        settle(&raft, Candidacy { me, term }, &watch, since, timing).await;
    }
}

/// After the first campaign: wait for the ballots and answers, and campaign again if `runoff`
/// says so, until somebody wins (a leader's vote is committed) or `give_up`. Meanwhile the vote
/// may move on without a winner: openraft's election timeout may run this node again, and a
/// refusal carries the refuser's vote, which openraft takes over, uncommitted, when greater.
async fn settle(raft: &Raft, c: Candidacy, watch: &PeerWatch, since: Instant, timing: Timing) {
    let give_up = tokio::time::Instant::now() + timing.give_up;
    loop {
        // Registered before the state is read, so no news is missed.
        let news = watch.news.notified();
        tokio::pin!(news);
        news.as_mut().enable();
        let Some(View { vote, voters, .. }) = View::of(raft).await else {
            return;
        };
        if vote.is_committed() {
            return;
        }
        let vote_term = vote.leader_id().term;
        match runoff(
            c,
            vote_term,
            &voters,
            &watch.ballots(),
            &watch.asked(),
            since,
        ) {
            Runoff::Leave => return,
            Runoff::Run => {
                if let Some(again) = watch.campaign(raft, c.me).await {
                    tracing::info!(
                        term = again,
                        "nobody won term {vote_term} and this node's log is the most up to date of the candidates: campaigning again"
                    );
                }
                return;
            }
            Runoff::Wait => {
                if tokio::time::timeout_at(give_up, news).await.is_err() {
                    return;
                }
            }
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
    fn the_runoff_picks_one_candidate() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let b = |term, last_log_id, ms| Ballot {
            term,
            last_log_id,
            at: at(ms),
        };
        let three: BTreeSet<NodeId> = [1, 2, 3].into();
        let five: BTreeSet<NodeId> = [1, 2, 3, 4, 5].into();
        // The answers to this node's vote requests at `term`.
        let asked = |term, answers: &[(NodeId, Option<bool>)]| Asked {
            term,
            answers: answers.iter().copied().collect(),
        };
        struct Case {
            name: &'static str,
            me: NodeId,
            /// The term of this node's vote now (its first campaign was at 5).
            vote: u64,
            voters: BTreeSet<NodeId>,
            ballots: Vec<(NodeId, Ballot)>,
            asked: Asked,
            want: Runoff,
        }
        let case = |name, me, vote, voters: &BTreeSet<NodeId>, ballots, asked, want| Case {
            name,
            me,
            vote,
            voters: voters.clone(),
            ballots,
            asked,
            want,
        };
        let same = || vec![(1, b(5, log(4, 10), 100)), (2, b(5, log(4, 10), 100))];
        let longer_1 = || vec![(1, b(5, log(4, 11), 100)), (2, b(5, log(4, 10), 100))];
        let refused = |other| asked(5, &[(other, Some(false)), (3, Some(false))]);
        // Every case: a first campaign at term 5; ballots seen before 50 ms are old.
        let cases = vec![
            case(
                "same log: the higher id runs",
                2,
                5,
                &three,
                same(),
                refused(1),
                Runoff::Run,
            ),
            case(
                "same log: the lower id leaves it",
                1,
                5,
                &three,
                same(),
                refused(2),
                Runoff::Leave,
            ),
            case(
                "a longer log runs, whatever the ids",
                1,
                5,
                &three,
                longer_1(),
                refused(2),
                Runoff::Run,
            ),
            case(
                "a shorter log leaves it",
                2,
                5,
                &three,
                longer_1(),
                refused(1),
                Runoff::Leave,
            ),
            case(
                "a later term of the last entry beats a higher index",
                1,
                5,
                &three,
                vec![(1, b(5, log(4, 10), 100)), (2, b(5, log(3, 12), 100))],
                refused(2),
                Runoff::Run,
            ),
            case(
                "our request to the other is still out",
                2,
                5,
                &three,
                same(),
                asked(5, &[(1, None), (3, Some(false))]),
                Runoff::Wait,
            ),
            case(
                "the other granted: we are winning",
                2,
                5,
                &three,
                same(),
                asked(5, &[(1, Some(true)), (3, Some(false))]),
                Runoff::Leave,
            ),
            case(
                "answers of an earlier campaign do not count",
                2,
                5,
                &three,
                same(),
                asked(4, &[(1, Some(false)), (3, Some(false))]),
                Runoff::Wait,
            ),
            case(
                "the election timeout ran us again meanwhile",
                2,
                6,
                &three,
                vec![(1, b(5, log(4, 10), 300)), (2, b(6, log(4, 10), 250))],
                asked(6, &[(1, Some(false)), (3, Some(false))]),
                Runoff::Run,
            ),
            case(
                "we took over the vote of the other, who refused us",
                1,
                6,
                &three,
                vec![(1, b(5, log(4, 11), 300)), (2, b(6, log(4, 10), 250))],
                refused(2),
                Runoff::Run,
            ),
            case(
                "alone: the other still follows the old leader (under its lease)",
                2,
                5,
                &three,
                vec![(2, b(5, log(4, 10), 100))],
                refused(1),
                Runoff::Wait,
            ),
            case(
                "our own vote requests not out yet",
                1,
                5,
                &three,
                vec![(2, b(5, log(4, 10), 100))],
                Asked::default(),
                Runoff::Wait,
            ),
            case(
                "another candidate is ahead of our vote",
                1,
                5,
                &three,
                vec![(1, b(5, log(4, 11), 100)), (2, b(6, log(4, 10), 110))],
                refused(2),
                Runoff::Leave,
            ),
            case(
                "a ballot from before this failover's term does not count",
                2,
                5,
                &three,
                vec![(1, b(4, log(4, 10), 100)), (2, b(5, log(4, 10), 100))],
                refused(1),
                Runoff::Wait,
            ),
            case(
                "an old ballot of an earlier failover does not count",
                2,
                5,
                &three,
                vec![(1, b(7, log(4, 10), 10)), (2, b(5, log(4, 10), 100))],
                refused(1),
                Runoff::Wait,
            ),
            case(
                "a learner's ballot does not count",
                2,
                5,
                &three,
                vec![(9, b(5, log(4, 10), 100)), (2, b(5, log(4, 10), 100))],
                refused(1),
                Runoff::Wait,
            ),
            case(
                "five voters: two ballots are no majority",
                3,
                5,
                &five,
                vec![(1, b(5, log(4, 10), 100)), (3, b(5, log(4, 12), 100))],
                asked(5, &[(1, Some(false)), (2, Some(false))]),
                Runoff::Wait,
            ),
            case(
                "five voters: the most up to date of three",
                3,
                5,
                &five,
                vec![
                    (1, b(5, log(4, 10), 100)),
                    (2, b(5, log(4, 11), 100)),
                    (3, b(5, log(4, 12), 100)),
                ],
                asked(5, &[(1, Some(false)), (2, Some(false)), (4, None)]),
                Runoff::Run,
            ),
            case(
                "five voters: one grant is not a win",
                3,
                5,
                &five,
                vec![
                    (1, b(5, log(4, 10), 100)),
                    (2, b(5, log(4, 11), 100)),
                    (3, b(5, log(4, 12), 100)),
                ],
                asked(5, &[(1, Some(true)), (2, Some(false))]),
                Runoff::Run,
            ),
            case(
                "five voters: a tie goes to the higher id",
                3,
                5,
                &five,
                vec![
                    (1, b(5, log(4, 10), 100)),
                    (3, b(5, log(4, 12), 100)),
                    (5, b(5, log(4, 12), 100)),
                ],
                asked(5, &[(1, Some(false)), (5, Some(false))]),
                Runoff::Leave,
            ),
        ];
        for c in cases {
            let candidacy = Candidacy { me: c.me, term: 5 };
            let got = runoff(candidacy, c.vote, &c.voters, &c.ballots, &c.asked, at(50));
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[tokio::test]
    async fn only_the_close_of_the_busy_connection_is_reported() {
        let (watch, mut rx) = PeerWatch::new();
        // Node 7 (the leader) has two connections: `old` carried its requests until `new`
        // took over.
        let old = watch.inbound_opened(7);
        old.request();
        let new = watch.inbound_opened(7);
        new.request();
        let idle = watch.inbound_opened(7);
        let other = watch.inbound_opened(8);
        other.request();
        drop(old);
        drop(idle);
        assert!(
            rx.try_recv().is_err(),
            "neither carried node 7's latest request"
        );

        // The leader replaces its connection: the new one opens before the old one closes.
        let replacement = watch.inbound_opened(7);
        drop(new);
        let closed = rx.try_recv().expect("the busy connection closed");
        assert_eq!(closed.peer, 7);
        assert!(watch.still_there(&closed), "a connection opened since");
        drop(replacement);
        assert!(rx.try_recv().is_err(), "no request came over it");

        // An old connection whose last frames a partition held up delivers them, and closes,
        // after a newer one took over.
        let zombie = watch.inbound_opened(7);
        let current = watch.inbound_opened(7);
        current.request();
        zombie.request();
        drop(zombie);
        let closed = rx.try_recv().expect("it carried the latest request");
        assert!(watch.still_there(&closed), "a newer connection is open");
        current.request();
        drop(current);
        let closed = rx.try_recv().expect("the current connection closed");
        assert!(!watch.still_there(&closed));

        // The leader gone: a connection that carried requests closes, nothing follows.
        let last = watch.inbound_opened(7);
        last.request();
        drop(last);
        let closed = rx.try_recv().expect("the busy connection closed");
        assert!(!watch.still_there(&closed), "gone and silent");
        let back = watch.inbound_opened(7);
        back.request();
        assert!(watch.still_there(&closed), "spoke after the close");
        drop(back);
        drop(other);
        let peers: Vec<NodeId> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.peer)
            .collect();
        assert_eq!(peers, vec![7, 8]);
    }

    #[test]
    fn answers_belong_to_the_latest_campaign() {
        let (watch, _rx) = PeerWatch::new();
        let a = watch.ask(5, 1);
        let b = watch.ask(5, 2);
        assert_eq!(watch.asked().answers.get(&1), Some(&None));
        a.answer(true);
        drop(b); // abandoned: refused
        let got = watch.asked();
        assert_eq!(got.term, 5);
        assert_eq!(got.answers.get(&1), Some(&Some(true)));
        assert_eq!(got.answers.get(&2), Some(&Some(false)));
        // A later campaign starts afresh; a late answer of the earlier one is ignored.
        let late = watch.ask(5, 3);
        let c = watch.ask(6, 1);
        late.answer(true);
        assert_eq!(watch.asked().term, 6);
        assert_eq!(watch.asked().answers.get(&3), None);
        assert_eq!(watch.asked().answers.get(&1), Some(&None));
        drop(c);
    }
}
