//! The budget of the peer port: what a connection may hold before and after its sender is
//! known, as pure bookkeeping (the sockets stay in `transport`).
//!
//! - Before the TLS handshake ends a connection is anonymous: it is counted per source address
//!   (`PRE_HANDSHAKE_PER_SOURCE`) and in a small pool (`PRE_HANDSHAKE_TOTAL`) shared fairly: when
//!   the pool is full, a source holding fewer than the biggest holder takes that holder's oldest
//!   slot (closed at once), so a flood from a few addresses cannot keep a node from dialling.
//! - After it, a node's connection is counted per node id (`PER_NODE`; a node that opens one more
//!   closes its own oldest: a restarted peer redials before the old connection's close is seen)
//!   and in total (`NODE_TOTAL`, shared the same fair way between node ids).
//! - A removed node id gets nothing after the handshake; a frame is read only once its kind is
//!   known and its declared size fits the kind (`frame_cap`), its buffer grows as bytes arrive,
//!   and the bytes of frames being read (each frame's whole size, taken at once so that frames
//!   read side by side cannot each hold part of a share and wait for the rest) are bounded on
//!   the whole port (`PORT_FRAME_BYTES`),
//!   per node id (`NODE_FRAME_BYTES`) and for every non-member together
//!   (`NON_MEMBER_FRAME_BYTES`). Frames of `SMALL_FRAME` or less (heartbeats, votes, pings)
//!   take nothing from these: the per-connection cap bounds them, and they are never kept
//!   waiting behind big frames.
//! - Who may send what is decided from the frame's head, before its body is read
//!   (`head_rule`): a non-member may send a `Ping`, and log or snapshot traffic only when the
//!   vote at the head of that request names it as the committed leader.
//!
//! The same numbers as one table, with reasons, are in `LIMITS` below.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Connections in TLS handshake from one source address: a node dials each peer once.
pub const PRE_HANDSHAKE_PER_SOURCE: usize = 16;
/// Connections in TLS handshake at once on the port (every source together).
pub const PRE_HANDSHAKE_TOTAL: usize = 128;
/// From accept to the end of the TLS handshake (a LAN handshake takes milliseconds).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Authenticated connections of one node id: one Raft connection, plus diagnostics (`ping`)
/// and the overlap while a peer replaces a connection.
pub const PER_NODE: usize = 8;
/// Authenticated connections on the port: 5 voters and a few learners, 8 each.
pub const NODE_TOTAL: usize = 64;
/// An authenticated connection that carried no frame for this long, with no request of it
/// being answered, is closed. A leader heartbeats every 50 ms (`RaftTuning::heartbeat_ms`),
/// so a live Raft connection is never this quiet; a follower's connection to the leader
/// (forwarded writes, reads, blob chunks) is redialled on its next use.
pub const IDLE: Duration = Duration::from_secs(30);
/// A frame whose bytes stop arriving for this long is abandoned with its connection.
pub const FRAME_STALL: Duration = Duration::from_secs(30);
/// Bytes of frames above `SMALL_FRAME` being read at once on the port: four full frames.
pub const PORT_FRAME_BYTES: usize = 4 * crate::transport::frame::MAX_FRAME;
/// The same for one node id: two full frames, so that no single certificate holds the port.
pub const NODE_FRAME_BYTES: usize = 2 * crate::transport::frame::MAX_FRAME;
/// The same for every non-member together (a node that claims to lead but is not in this
/// node's membership: a leader this node lags behind, or a stranger): one full frame, so
/// that members always keep three.
pub const NON_MEMBER_FRAME_BYTES: usize = crate::transport::frame::MAX_FRAME;
/// A frame's buffer grows by at most this much before the bytes arrive.
pub const READ_CHUNK: usize = 64 << 10;
/// Requests of one connection being answered at once; the connection is not read further
/// until one is answered.
pub const IN_FLIGHT_PER_CONN: usize = 256;

/// Most bytes a request of a kind may declare: Raft's log and snapshot traffic and forwarded
/// writes get a full frame, votes, pings and reads a few KiB, application requests (blob chunk
/// requests, clock readings) 1 MiB.
pub const SMALL_FRAME: usize = 64 << 10;
pub const APP_FRAME: usize = 1 << 20;

/// The highest Raft term accepted from a peer, in a request or in an answer to ours. An
/// election raises the term by one; 2^62 is beyond any cluster's life, and far enough from
/// 2^64 that openraft's `term + 1` can never overflow (a term near 2^64 stopped every core).
pub const MAX_TERM: u64 = 1 << 62;

/// Counters of the peer port's refusals, shown by `status` (`peer_port`).
#[derive(Debug, Default)]
pub struct PeerPortCounters {
    absurd_term: AtomicU64,
    removed: AtomicU64,
    not_member: AtomicU64,
    pre_handshake_full: AtomicU64,
    node_full: AtomicU64,
    taken_over: AtomicU64,
    idle_closed: AtomicU64,
    frame_refused: AtomicU64,
    handshake_failed: AtomicU64,
}

/// What `status --json` shows of the peer port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerPortStats {
    /// Raft messages refused (and their connection closed) for a term above `MAX_TERM`.
    pub absurd_term: u64,
    /// Connections of removed node ids closed right after the handshake.
    pub removed: u64,
    /// Requests refused from a node that is not a member (and not removed): e.g. one that
    /// joined but was not added yet.
    pub not_member: u64,
    /// Connections refused at accept: too many in handshake from their source or in all.
    pub pre_handshake_full: u64,
    /// Authenticated connections refused: too many on the port.
    pub node_full: u64,
    /// Connections closed because another took their slot (fair share, or the same node's newer).
    pub taken_over: u64,
    /// Authenticated connections closed after `IDLE` without a frame.
    pub idle_closed: u64,
    /// Frames refused: their kind unknown, their declared size over their kind's cap, or stalled.
    pub frame_refused: u64,
    /// TLS handshakes that failed or timed out (no certificate, a foreign CA, silence).
    pub handshake_failed: u64,
}

/// Why a connection or a frame was refused, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refused {
    AbsurdTerm,
    Removed,
    NotMember,
    PreHandshakeFull,
    NodeFull,
    TakenOver,
    Idle,
    Frame,
    Handshake,
}

impl PeerPortCounters {
    pub fn count(&self, why: Refused) {
        let c = match why {
            Refused::AbsurdTerm => &self.absurd_term,
            Refused::Removed => &self.removed,
            Refused::NotMember => &self.not_member,
            Refused::PreHandshakeFull => &self.pre_handshake_full,
            Refused::NodeFull => &self.node_full,
            Refused::TakenOver => &self.taken_over,
            Refused::Idle => &self.idle_closed,
            Refused::Frame => &self.frame_refused,
            Refused::Handshake => &self.handshake_failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> PeerPortStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerPortStats {
            absurd_term: g(&self.absurd_term),
            removed: g(&self.removed),
            not_member: g(&self.not_member),
            pre_handshake_full: g(&self.pre_handshake_full),
            node_full: g(&self.node_full),
            taken_over: g(&self.taken_over),
            idle_closed: g(&self.idle_closed),
            frame_refused: g(&self.frame_refused),
            handshake_failed: g(&self.handshake_failed),
        }
    }
}

/// Logged refusals, so that each key is logged at most once per `every`; at most `max_keys`
/// keys are remembered (a flood from many sources is then logged under none until they age).
pub(crate) struct Throttle<K> {
    every: Duration,
    max_keys: usize,
    last: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Copy> Throttle<K> {
    pub(crate) fn new(every: Duration, max_keys: usize) -> Throttle<K> {
        Throttle {
            every,
            max_keys,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// True when a refusal of `key` at `now` should be logged.
    pub(crate) fn should_log(&self, key: K, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .get(&key)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.every)
        {
            return false;
        }
        let every = self.every;
        last.retain(|_, t| now.saturating_duration_since(*t) < every);
        if last.len() >= self.max_keys {
            return false;
        }
        last.insert(key, now);
        true
    }
}

/// Why a pool refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Total,
    PerKey,
}

/// Connections held per key (source address or node id), oldest first.
pub(crate) struct Pool<K> {
    max_total: usize,
    max_per_key: usize,
    /// A key at its cap that opens one more closes its own oldest instead of being refused.
    replace_own: bool,
    count: usize,
    next_id: u64,
    keys: HashMap<K, Vec<(u64, Arc<Notify>)>>,
}

/// A slot admitted by `Pool::admit`: its id and the notify that tells it it was taken over.
pub(crate) type Admitted = (u64, Arc<Notify>);

impl<K: Hash + Eq + Copy> Pool<K> {
    pub(crate) fn new(max_total: usize, max_per_key: usize, replace_own: bool) -> Pool<K> {
        Pool {
            max_total,
            max_per_key,
            replace_own,
            count: 0,
            next_id: 0,
            keys: HashMap::new(),
        }
    }

    /// `Ok((slot, victim))`: admitted; `victim` (if any) must be told to close. When the pool is
    /// full, a key holding fewer than the biggest holder takes that holder's oldest slot.
    pub(crate) fn admit(&mut self, key: K) -> Result<(Admitted, Option<Arc<Notify>>), Full> {
        let held = self.held(key);
        let mut victim = None;
        if held >= self.max_per_key {
            if !self.replace_own || held == 0 {
                return Err(Full::PerKey);
            }
            victim = Some(self.take_oldest(key).ok_or(Full::PerKey)?);
        } else if self.count >= self.max_total {
            // The biggest holder; among equals the one whose oldest slot is oldest.
            let biggest = self
                .keys
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .max_by(|(_, a), (_, b)| a.len().cmp(&b.len()).then(b[0].0.cmp(&a[0].0)))
                .map(|(k, v)| (*k, v.len()));
            match biggest {
                Some((big, n)) if n > held => {
                    victim = Some(self.take_oldest(big).ok_or(Full::Total)?);
                }
                _ => return Err(Full::Total),
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let kick = Arc::new(Notify::new());
        self.keys.entry(key).or_default().push((id, kick.clone()));
        self.count += 1;
        Ok(((id, kick), victim))
    }

    fn take_oldest(&mut self, key: K) -> Option<Arc<Notify>> {
        let slots = self.keys.get_mut(&key)?;
        if slots.is_empty() {
            return None;
        }
        let (_, kick) = slots.remove(0);
        if slots.is_empty() {
            self.keys.remove(&key);
        }
        self.count -= 1;
        Some(kick)
    }

    /// Gives a slot back; a slot already taken over is no longer there.
    pub(crate) fn release(&mut self, key: K, id: u64) {
        if let Some(slots) = self.keys.get_mut(&key)
            && let Some(i) = slots.iter().position(|(s, _)| *s == id)
        {
            slots.remove(i);
            self.count -= 1;
            if slots.is_empty() {
                self.keys.remove(&key);
            }
        }
    }

    pub(crate) fn held(&self, key: K) -> usize {
        self.keys.get(&key).map_or(0, Vec::len)
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.count
    }
}

/// A connection's place in a shared pool, given back on drop.
pub(crate) struct Slot<K: Hash + Eq + Copy> {
    pool: Arc<Mutex<Pool<K>>>,
    key: K,
    id: u64,
    kicked: Arc<Notify>,
}

impl<K: Hash + Eq + Copy> Slot<K> {
    /// Admits `key` into `pool`, telling a taken-over victim to close. `Err` when refused.
    pub(crate) fn admit(pool: &Arc<Mutex<Pool<K>>>, key: K) -> Result<(Slot<K>, bool), Full> {
        let ((id, kicked), victim) = pool.lock().unwrap_or_else(|p| p.into_inner()).admit(key)?;
        let took_over = victim.is_some();
        if let Some(v) = victim {
            // notify_one keeps the wake-up for a victim not waiting yet.
            v.notify_one();
        }
        Ok((
            Slot {
                pool: pool.clone(),
                key,
                id,
                kicked,
            },
            took_over,
        ))
    }

    /// Resolves when another connection took this slot: the connection must close.
    pub(crate) async fn kicked(&self) {
        self.kicked.notified().await
    }
}

impl<K: Hash + Eq + Copy> Drop for Slot<K> {
    fn drop(&mut self) {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(self.key, self.id);
    }
}

/// Where a request frame's declared size is checked: the kind of request it holds, read from
/// its first bytes (`Frame::Request` tag, request id, request tag, in bincode's varint form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameHead {
    /// More bytes are needed to tell.
    NeedMore,
    /// A request of this variant index of `PeerRequest`.
    Request(u32),
    /// Not a request frame at all.
    Invalid,
}

/// The most bytes `frame_head` needs: a one-byte tag, a 9-byte id, a one-byte tag.
pub(crate) const HEAD_BYTES: usize = 11;

/// Reads a bincode (standard config) varint from `b`: its value and length.
fn varint(b: &[u8]) -> Option<Option<(u64, usize)>> {
    let first = *b.first()?;
    let width = match first {
        0..=250 => return Some(Some((u64::from(first), 1))),
        251 => 2,
        252 => 4,
        253 => 8,
        _ => return Some(None),
    };
    let bytes = b.get(1..1 + width)?;
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(bytes);
    Some(Some((u64::from_le_bytes(v), 1 + width)))
}

/// The head of a frame from its first bytes (pure).
pub(crate) fn frame_head(prefix: &[u8]) -> FrameHead {
    let mut at = 0;
    let mut next = || -> Result<u64, FrameHead> {
        match varint(&prefix[at.min(prefix.len())..]) {
            None => Err(FrameHead::NeedMore),
            Some(None) => Err(FrameHead::Invalid),
            Some(Some((v, n))) => {
                at += n;
                Ok(v)
            }
        }
    };
    let mut parse = || -> Result<u32, FrameHead> {
        if next()? != 0 {
            return Err(FrameHead::Invalid);
        }
        let _id = next()?;
        u32::try_from(next()?).map_err(|_| FrameHead::Invalid)
    };
    match parse() {
        Ok(kind) => FrameHead::Request(kind),
        Err(h) => h,
    }
}

/// The most bytes a request of variant `kind` of `PeerRequest` may declare; `None` for an
/// unknown variant. Follows the order of `PeerRequest` (checked by a test).
pub(crate) fn frame_cap(kind: u32) -> Option<usize> {
    use crate::transport::frame::MAX_FRAME;
    match kind {
        0 => Some(MAX_FRAME),   // AppendEntries
        1 => Some(SMALL_FRAME), // Vote
        2 => Some(MAX_FRAME),   // InstallSnapshot
        3 => Some(MAX_FRAME),   // Forward
        4 => Some(SMALL_FRAME), // ReadIndex
        5 => Some(SMALL_FRAME), // Ping
        6 => Some(APP_FRAME),   // App
        _ => None,
    }
}

/// The most bytes `vote_head` needs: a frame head, then a vote's term, node id and flag.
pub(crate) const VOTE_HEAD_BYTES: usize = HEAD_BYTES + 9 + 9 + 1;

/// The vote at the head of an AppendEntries or InstallSnapshot request (both start with it):
/// `Ok(Some((term, node, committed)))`, `Ok(None)` when more bytes are needed, `Err` when the
/// bytes are not such a request.
pub(crate) fn vote_head(prefix: &[u8]) -> Result<Option<(u64, u64, bool)>, ()> {
    let mut at = 0;
    let mut next = || -> Result<Option<u64>, ()> {
        match varint(&prefix[at.min(prefix.len())..]) {
            None => Ok(None),
            Some(None) => Err(()),
            Some(Some((v, n))) => {
                at += n;
                Ok(Some(v))
            }
        }
    };
    // Frame tag, request id, request kind, then the vote's term and node id.
    let mut fields = [0u64; 5];
    for f in &mut fields {
        match next()? {
            Some(v) => *f = v,
            None => return Ok(None),
        }
    }
    match prefix.get(at) {
        None => Ok(None),
        Some(0) => Ok(Some((fields[3], fields[4], false))),
        Some(1) => Ok(Some((fields[3], fields[4], true))),
        Some(_) => Err(()),
    }
}

/// Which part of the port's frame budget a frame takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Share {
    /// `SMALL_FRAME` or less: nothing (bounded by the per-connection cap).
    Free,
    /// A member's (or anyone's while this node has no membership): the port and its node id.
    Member,
    /// A non-member's: the port, its node id and the non-members' pool.
    NonMember,
}

/// What is done with a request frame once its head is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeadRule {
    /// Read it, taking its bytes from this share.
    Read(Share),
    /// The vote at the head is needed to decide (`vote_head`).
    NeedVote,
    /// Refused before its body is read: the counter and the reason.
    Refuse(Refused, String),
}

/// Whether a request of `kind` declaring `len` bytes from node `from` is read, decided from
/// its head before its body (pure). `vote` is the vote at the head of log or snapshot
/// traffic, once read. The rules are those of `transport::admission`, applied early: a
/// removed node gets nothing; a member (or anyone, while this node has no membership) may
/// send every kind within its cap; a non-member a `Ping`, and AppendEntries or
/// InstallSnapshot only when their vote names it as the committed leader.
pub(crate) fn head_rule(
    kind: u32,
    len: usize,
    view: crate::transport::admission::MemberView,
    from: u64,
    vote: Option<(u64, u64, bool)>,
) -> HeadRule {
    let cap = match frame_cap(kind) {
        Some(cap) => cap,
        None => {
            return HeadRule::Refuse(
                Refused::Frame,
                format!("peer request of unknown kind {kind}"),
            );
        }
    };
    if len > cap {
        return HeadRule::Refuse(
            Refused::Frame,
            format!("peer request of kind {kind} declares {len} bytes, over its {cap}"),
        );
    }
    if view.removed {
        return HeadRule::Refuse(
            Refused::Removed,
            format!("node {from} was removed from this cluster"),
        );
    }
    let share = |s: Share| if len <= SMALL_FRAME { Share::Free } else { s };
    if view.is_member || !view.has_membership {
        return HeadRule::Read(share(Share::Member));
    }
    let not_member = || {
        HeadRule::Refuse(
            Refused::NotMember,
            format!("node {from} is not a member of this cluster"),
        )
    };
    match kind {
        5 => HeadRule::Read(Share::Free),
        0 | 2 => match vote {
            None => HeadRule::NeedVote,
            Some((_, leader, true)) if leader == from => HeadRule::Read(share(Share::NonMember)),
            Some(_) => not_member(),
        },
        _ => not_member(),
    }
}

/// Bytes of frames being read, per share (pure bookkeeping; the waiting is in `transport`).
#[derive(Debug, Default)]
pub(crate) struct FrameShares {
    total: usize,
    non_member: usize,
    by_node: HashMap<u64, usize>,
}

impl FrameShares {
    /// Takes `n` bytes for a frame of `from` in `share`; false (and nothing taken) when the
    /// port, the node id or the non-members' pool would pass its cap.
    pub(crate) fn take(&mut self, from: u64, n: usize, share: Share) -> bool {
        let node = self.by_node.get(&from).copied().unwrap_or(0);
        let fits = match share {
            Share::Free => return true,
            Share::Member => true,
            Share::NonMember => self.non_member + n <= NON_MEMBER_FRAME_BYTES,
        };
        if !fits || self.total + n > PORT_FRAME_BYTES || node + n > NODE_FRAME_BYTES {
            return false;
        }
        self.total += n;
        if share == Share::NonMember {
            self.non_member += n;
        }
        self.by_node.insert(from, node + n);
        true
    }

    /// Gives back `n` bytes taken by `take`.
    pub(crate) fn give(&mut self, from: u64, n: usize, share: Share) {
        if share == Share::Free {
            return;
        }
        self.total = self.total.saturating_sub(n);
        if share == Share::NonMember {
            self.non_member = self.non_member.saturating_sub(n);
        }
        if let Some(held) = self.by_node.get_mut(&from) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.by_node.remove(&from);
            }
        }
    }

    /// Bytes held on the port, by non-members, and the node ids holding any.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize, usize) {
        (self.total, self.non_member, self.by_node.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB64: usize = crate::transport::frame::MAX_FRAME;

    #[test]
    fn one_node_id_holds_at_most_its_share_and_non_members_one_frame() {
        let mut s = FrameShares::default();
        // A non-member that claims to lead holds one full frame, and no more.
        assert!(s.take(900, MB64, Share::NonMember));
        assert!(!s.take(900, READ_CHUNK, Share::NonMember));
        assert!(
            !s.take(901, READ_CHUNK, Share::NonMember),
            "the pool is for all of them"
        );
        // Members still have the other three frames; one id at most two.
        assert!(s.take(1, MB64, Share::Member));
        assert!(s.take(1, MB64, Share::Member));
        assert!(
            !s.take(1, READ_CHUNK, Share::Member),
            "node 1 holds its share"
        );
        assert!(s.take(2, MB64, Share::Member));
        assert!(!s.take(3, READ_CHUNK, Share::Member), "the port is full");
        // Small frames pass while every big budget is held.
        assert!(s.take(3, SMALL_FRAME, Share::Free));
        assert!(s.take(900, SMALL_FRAME, Share::Free));
        assert_eq!(s.held(), (PORT_FRAME_BYTES, MB64, 3));
        s.give(1, MB64, Share::Member);
        assert!(s.take(3, READ_CHUNK, Share::Member));
        s.give(900, MB64, Share::NonMember);
        assert!(s.take(901, READ_CHUNK, Share::NonMember));
        for (id, n, share) in [
            (901, READ_CHUNK, Share::NonMember),
            (3, READ_CHUNK, Share::Member),
            (2, MB64, Share::Member),
            (1, MB64, Share::Member),
        ] {
            s.give(id, n, share);
        }
        assert_eq!(s.held(), (0, 0, 0));
    }

    #[test]
    fn what_is_read_is_decided_from_the_head() {
        use crate::transport::admission::MemberView;
        let view = |has_membership, is_member, removed| MemberView {
            has_membership,
            is_member,
            removed,
        };
        let member = view(true, true, false);
        let stranger = view(true, false, false);
        let fresh = view(false, false, false);
        let removed = view(true, true, true);
        let leads = Some((5, 900, true));
        let claims_other = Some((5, 1, true));
        let uncommitted = Some((5, 900, false));
        let big = 1 << 20;
        let read = HeadRule::Read;
        // (kind, len, view, vote, want): `from` is 900.
        let cases = [
            (0, big, member, None, read(Share::Member)),
            (0, 100, member, None, read(Share::Free)),
            (3, big, member, None, read(Share::Member)),
            (1, 100, member, None, read(Share::Free)),
            (0, big, fresh, None, read(Share::Member)),
            (5, 20, stranger, None, read(Share::Free)),
            (0, big, stranger, None, HeadRule::NeedVote),
            (2, big, stranger, None, HeadRule::NeedVote),
            (0, big, stranger, leads, read(Share::NonMember)),
            (0, 100, stranger, leads, read(Share::Free)),
            (2, big, stranger, leads, read(Share::NonMember)),
        ];
        for (i, (kind, len, v, vote, want)) in cases.into_iter().enumerate() {
            assert_eq!(head_rule(kind, len, v, 900, vote), want, "case {i}");
        }
        // (kind, len, view, vote, counter)
        let refused = [
            (0, big, stranger, claims_other, Refused::NotMember),
            (0, big, stranger, uncommitted, Refused::NotMember),
            (3, big, stranger, None, Refused::NotMember),
            (1, 100, stranger, None, Refused::NotMember),
            (6, 100, stranger, None, Refused::NotMember),
            (5, 20, removed, None, Refused::Removed),
            (0, big, removed, leads, Refused::Removed),
            (1, big, member, None, Refused::Frame),
            (9, 10, member, None, Refused::Frame),
        ];
        for (i, (kind, len, v, vote, why)) in refused.into_iter().enumerate() {
            match head_rule(kind, len, v, 900, vote) {
                HeadRule::Refuse(got, _) => assert_eq!(got, why, "refused case {i}"),
                other => panic!("refused case {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_vote_is_read_from_the_head() {
        // Frame tag, id 7, kind 0, term 300 (varint 251 + 2 bytes), node 900, committed.
        let full: &[u8] = &[0, 7, 0, 251, 44, 1, 251, 132, 3, 1];
        for cut in 0..full.len() {
            assert_eq!(vote_head(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(vote_head(full), Ok(Some((300, 900, true))));
        assert_eq!(vote_head(&[0, 7, 0, 3, 2, 0]), Ok(Some((3, 2, false))));
        assert_eq!(vote_head(&[0, 7, 0, 3, 2, 2]), Err(()));
        assert_eq!(vote_head(&[0, 7, 0, 255]), Err(()));
    }

    #[test]
    fn varints_and_heads() {
        // (prefix, head)
        let cases: &[(&[u8], FrameHead)] = &[
            (&[], FrameHead::NeedMore),
            (&[0], FrameHead::NeedMore),
            (&[0, 7], FrameHead::NeedMore),
            (&[0, 7, 1], FrameHead::Request(1)),
            (&[0, 251, 1], FrameHead::NeedMore),
            (&[0, 251, 1, 2, 5], FrameHead::Request(5)),
            (&[0, 253, 1, 2, 3, 4, 5, 6, 7, 8, 0], FrameHead::Request(0)),
            (&[0, 253, 1, 2, 3, 4, 5, 6, 7, 8], FrameHead::NeedMore),
            (&[1, 7, 1], FrameHead::Invalid), // a response
            (&[0, 254, 1], FrameHead::Invalid),
            (&[0, 1, 252, 0, 0, 0, 1], FrameHead::Request(1 << 24)),
        ];
        for (i, (prefix, want)) in cases.iter().enumerate() {
            assert_eq!(frame_head(prefix), *want, "case {i}");
        }
    }

    fn ip(n: u8) -> std::net::IpAddr {
        std::net::IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_source_at_its_cap_is_refused_and_a_full_pool_is_shared() {
        let mut p = Pool::new(4, 3, false);
        for _ in 0..3 {
            assert!(p.admit(ip(1)).is_ok());
        }
        assert_eq!(p.admit(ip(1)).err(), Some(Full::PerKey));
        // One slot left: 10.0.0.2 takes it; then the pool is full.
        let ((b1, _), v) = p.admit(ip(2)).expect("free slot");
        assert!(v.is_none());
        // A newcomer holding none takes the oldest of the biggest holder (10.0.0.1).
        let (_, victim) = p.admit(ip(3)).expect("take over");
        assert!(victim.is_some());
        assert_eq!((p.held(ip(1)), p.held(ip(3)), p.count()), (2, 1, 4));
        // 10.0.0.2 (1 held) takes from 10.0.0.1 (2 held).
        assert!(p.admit(ip(2)).is_ok());
        assert_eq!((p.held(ip(1)), p.held(ip(2))), (1, 2));
        // The biggest holder gets nothing more while the pool is full.
        assert_eq!(p.admit(ip(2)).err(), Some(Full::Total));
        p.release(ip(2), b1);
        assert_eq!(p.count(), 3);
        assert!(p.admit(ip(2)).is_ok());
    }

    #[test]
    fn a_node_at_its_cap_replaces_its_own_oldest() {
        let mut p: Pool<u64> = Pool::new(64, 2, true);
        let ((a, _), _) = p.admit(7).expect("first");
        let _ = p.admit(7).expect("second");
        let ((_, _), victim) = p.admit(7).expect("third replaces the first");
        assert!(victim.is_some());
        assert_eq!(p.held(7), 2);
        // The first is gone: releasing it changes nothing.
        p.release(7, a);
        assert_eq!(p.held(7), 2);
    }

    #[test]
    fn refusals_are_logged_once_a_minute_per_key_and_for_few_keys() {
        let r = Throttle::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(r.should_log(1, at(0)));
        assert!(!r.should_log(1, at(1)));
        assert!(r.should_log(2, at(1)));
        assert!(!r.should_log(3, at(1)), "a third key is not remembered");
        assert!(!r.should_log(1, at(59)));
        assert!(r.should_log(1, at(60)));
        assert!(!r.should_log(2, at(60)));
        assert!(r.should_log(2, at(61)));
    }
}
