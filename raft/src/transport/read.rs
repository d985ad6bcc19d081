//! Reading one frame off a connection under the port's limits (`read_frame`: kind caps, the
//! sender's head rule, the port's byte budget, idle close), and the check that a message names
//! no term above `peer_limits::MAX_TERM`.

use std::sync::Mutex;
use std::time::Duration;

use openraft::raft::AppendEntriesResponse;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use super::admission::MemberView;
use super::frame::{Frame, MAX_FRAME, PeerRequest, PeerResponse};
use crate::codec;
use crate::peer_limits::{
    self, FRAME_STALL, FrameHead, FrameShares, HeadRule, IN_FLIGHT_PER_CONN, MAX_TERM, READ_CHUNK,
    Refused, Share, VOTE_HEAD_BYTES,
};
use crate::types::{LogId, NodeId};

/// How a frame is read: the caps and waits of one side of a connection.
pub(super) struct ReadLimits<'a> {
    /// Server side: the declared size is checked against the cap of the request's kind
    /// (`peer_limits::frame_cap`) before the body is read.
    pub(super) per_kind: bool,
    /// Bytes of frames being read on the whole port, per node id and for non-members; a
    /// chunk is read once its bytes are had.
    pub(super) budget: Option<&'a FrameBudget>,
    /// Server side: the sending node and what this node knows of its membership, to decide
    /// from a request's head whether its body is read (`peer_limits::head_rule`).
    pub(super) sender: Option<(NodeId, &'a (dyn Fn() -> MemberView + Sync))>,
    /// Waiting for a frame to start: after this long without one, with no request of this
    /// connection being answered (permits of the semaphore taken), the connection is idle.
    pub(super) idle: Option<(Duration, &'a Semaphore)>,
}

impl ReadLimits<'static> {
    /// Answers on a connection we dialled to a node we verified: no kinds, no idle close.
    pub(super) const CLIENT: ReadLimits<'static> = ReadLimits {
        per_kind: false,
        budget: None,
        sender: None,
        idle: None,
    };
}

/// Why a frame was not read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadFailure {
    #[error(transparent)]
    Io(std::io::Error),
    /// No frame for `IDLE` with nothing in flight.
    #[error("idle peer connection")]
    Idle,
    /// The frame's kind or declared size is refused, or its bytes stopped coming.
    #[error("{0}")]
    Refused(String),
    /// The sender may not send this kind of request (seen from its head, before its body).
    #[error("{1}")]
    Denied(Refused, String),
}

impl From<ReadFailure> for std::io::Error {
    fn from(f: ReadFailure) -> std::io::Error {
        match f {
            ReadFailure::Io(e) => e,
            ReadFailure::Idle => {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "idle peer connection")
            }
            ReadFailure::Refused(why) => std::io::Error::new(std::io::ErrorKind::InvalidData, why),
            ReadFailure::Denied(_, why) => {
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
            }
        }
    }
}

/// The port's frame budget (`peer_limits::FrameShares`), and the wake-up of frames waiting
/// for bytes of it.
pub(crate) struct FrameBudget {
    shares: Mutex<FrameShares>,
    freed: tokio::sync::Notify,
}

impl FrameBudget {
    pub(super) fn new() -> FrameBudget {
        FrameBudget {
            shares: Mutex::new(FrameShares::default()),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// Waits until `n` bytes of `share` are had for node `from` (no deadline here).
    async fn take(&self, from: NodeId, n: usize, share: Share) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self
                .shares
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(from, n, share)
            {
                return;
            }
            freed.await;
        }
    }

    fn give(&self, from: NodeId, n: usize, share: Share) {
        self.shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .give(from, n, share);
        self.freed.notify_waiters();
    }
}

/// Bytes of the port's frame budget held by a frame being read, given back on drop.
struct Held<'a> {
    budget: Option<&'a FrameBudget>,
    from: NodeId,
    share: Share,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.budget
            && self.bytes > 0
        {
            b.give(self.from, self.bytes, self.share);
        }
    }
}

/// Reads one frame. Nothing is allocated for a frame before its declared size is known to
/// fit (its kind's cap on the server side) and its sender may send it (`head_rule`); then its
/// size is taken from the port's budget (frames of `SMALL_FRAME` or less take none) and its
/// buffer grows as its bytes arrive, in chunks of `READ_CHUNK`, so a peer that announces
/// 64 MiB and sends nothing holds its share of the budget for `FRAME_STALL` but one chunk of
/// memory.
pub(super) async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    lim: &ReadLimits<'_>,
) -> Result<Frame, ReadFailure> {
    let mut len = [0u8; 4];
    {
        // Kept across the idle checks: `read_exact` is not cancel-safe.
        let read = rd.read_exact(&mut len);
        tokio::pin!(read);
        match lim.idle {
            None => {
                read.await.map_err(ReadFailure::Io)?;
            }
            Some((idle, handlers)) => loop {
                tokio::select! {
                    r = &mut read => {
                        r.map_err(ReadFailure::Io)?;
                        break;
                    }
                    _ = tokio::time::sleep(idle) => {
                        if handlers.available_permits() == IN_FLIGHT_PER_CONN {
                            return Err(ReadFailure::Idle);
                        }
                    }
                }
            },
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ReadFailure::Refused(format!(
            "peer frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
        )));
    }
    let mut held = Held {
        budget: lim.budget,
        from: lim.sender.map_or(0, |(from, _)| from),
        share: Share::Member,
        bytes: 0,
    };
    let mut buf: Vec<u8> = Vec::new();
    if lim.per_kind {
        // The head first, byte by byte as it comes, to learn the kind (and for a non-member's
        // log traffic, the vote) before anything more.
        buf.resize(len.min(VOTE_HEAD_BYTES), 0);
        let mut got = 0;
        loop {
            let n = match tokio::time::timeout(FRAME_STALL, rd.read(&mut buf[got..])).await {
                Ok(r) => r.map_err(ReadFailure::Io)?,
                Err(_) => {
                    return Err(ReadFailure::Refused(format!(
                        "peer frame stalled after {got} of {len} bytes"
                    )));
                }
            };
            if n == 0 {
                return Err(ReadFailure::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            got += n;
            match peer_limits::frame_head(&buf[..got]) {
                FrameHead::Request(kind) => {
                    let (from, view) = match lim.sender {
                        Some((from, view)) => (from, view()),
                        // No sender to judge: a member's rules.
                        None => (0, MemberView::MEMBER),
                    };
                    // Only log and snapshot traffic starts with a vote; the bytes after
                    // any other kind's head are its own (an App request's length, …).
                    let vote = match kind {
                        0 | 2 => match peer_limits::vote_head(&buf[..got]) {
                            Ok(v) => v,
                            Err(()) => {
                                return Err(ReadFailure::Refused(
                                    "not a peer request frame".into(),
                                ));
                            }
                        },
                        _ => None,
                    };
                    match peer_limits::head_rule(kind, len, view, from, vote) {
                        HeadRule::Read(share) => {
                            held.share = share;
                            break;
                        }
                        HeadRule::NeedVote if got < buf.len() => {}
                        // Too short to hold a vote: a tiny frame, whole, decoded (or refused)
                        // below.
                        HeadRule::NeedVote if got == len => break,
                        HeadRule::NeedVote => {
                            return Err(ReadFailure::Refused("not a peer request frame".into()));
                        }
                        HeadRule::Refuse(Refused::Frame, why) => {
                            return Err(ReadFailure::Refused(why));
                        }
                        HeadRule::Refuse(counter, why) => {
                            return Err(ReadFailure::Denied(counter, why));
                        }
                    }
                }
                FrameHead::NeedMore if got < buf.len() => {}
                // Shorter than a head: a tiny frame, decoded (or refused) below.
                FrameHead::NeedMore => break,
                FrameHead::Invalid => {
                    return Err(ReadFailure::Refused("not a peer request frame".into()));
                }
            }
        }
        buf.truncate(got);
    }
    // The rest of the frame's bytes are had from the budget all at once: taken chunk by chunk,
    // frames read side by side would each hold part of a share and all wait for the rest.
    if let Some(budget) = lim.budget
        && held.share != Share::Free
        && buf.len() < len
    {
        let rest = len - buf.len();
        match tokio::time::timeout(FRAME_STALL, budget.take(held.from, rest, held.share)).await {
            Ok(()) => held.bytes = rest,
            Err(_) => {
                return Err(ReadFailure::Refused(
                    "the port's frame budget stayed full".into(),
                ));
            }
        }
    }
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_CHUNK);
        let start = buf.len();
        buf.resize(start + want, 0);
        match tokio::time::timeout(FRAME_STALL, rd.read_exact(&mut buf[start..])).await {
            Ok(r) => {
                r.map_err(ReadFailure::Io)?;
            }
            Err(_) => {
                return Err(ReadFailure::Refused(format!(
                    "peer frame stalled after {start} of {len} bytes"
                )));
            }
        }
    }
    let frame = codec::decode(&buf).map_err(|e| {
        ReadFailure::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            BadFrame(e),
        ))
    });
    drop(buf);
    drop(held);
    frame
}

/// A peer frame that did not decode (inside an `io::Error`, as the connection tasks see it).
#[derive(Debug, thiserror::Error)]
#[error("peer frame: {0}")]
struct BadFrame(#[source] bincode::error::DecodeError);

/// The highest term a request names (its vote, and the log ids it carries), when it is
/// above `MAX_TERM`.
pub(super) fn absurd_term_in_request(req: &PeerRequest) -> Option<u64> {
    let log = |l: &Option<LogId>| l.map_or(0, |l| l.leader_id.term);
    let highest = match req {
        PeerRequest::AppendEntries(r) => r
            .entries
            .iter()
            .map(|e| e.log_id.leader_id.term)
            .chain([
                r.vote.leader_id().term,
                log(&r.prev_log_id),
                log(&r.leader_commit),
            ])
            .max()
            .unwrap_or(0),
        PeerRequest::Vote(r) => r.vote.leader_id().term.max(log(&r.last_log_id)),
        PeerRequest::InstallSnapshot(r) => r
            .vote
            .leader_id()
            .term
            .max(log(&r.meta.last_log_id))
            .max(log(r.meta.last_membership.log_id())),
        PeerRequest::Forward(_) | PeerRequest::ReadIndex | PeerRequest::Ping => 0,
        PeerRequest::App(_) => 0,
    };
    (highest > MAX_TERM).then_some(highest)
}

/// The same for an answer to one of our Raft requests.
pub(super) fn absurd_term_in_response(resp: &PeerResponse) -> Option<u64> {
    let log = |l: &Option<LogId>| l.map_or(0, |l| l.leader_id.term);
    let highest = match resp {
        PeerResponse::AppendEntries(Ok(AppendEntriesResponse::HigherVote(v))) => v.leader_id().term,
        PeerResponse::AppendEntries(Ok(AppendEntriesResponse::PartialSuccess(l))) => log(l),
        PeerResponse::Vote(Ok(r)) => r.vote.leader_id().term.max(log(&r.last_log_id)),
        PeerResponse::InstallSnapshot(Ok(r)) => r.vote.leader_id().term,
        _ => 0,
    };
    (highest > MAX_TERM).then_some(highest)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::raft::{AppendEntriesRequest, VoteRequest, VoteResponse};
    use openraft::{CommittedLeaderId, EntryPayload};
    use tokio::io::AsyncWriteExt;
    use tokio::sync::oneshot;

    use super::*;
    use crate::transport::forge;
    use crate::transport::frame::encode_frame;
    use crate::types::{Entry, LogId, Proposal, Vote};

    #[test]
    fn absurd_terms_are_found_wherever_a_message_names_one() {
        let log = |term: u64| Some(LogId::new(CommittedLeaderId::new(term, 1), 7));
        let append = |vote: u64, prev: u64, commit: u64, entry: u64| {
            PeerRequest::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(vote, 1),
                prev_log_id: log(prev),
                leader_commit: log(commit),
                entries: vec![Entry {
                    log_id: LogId::new(CommittedLeaderId::new(entry, 1), 8),
                    payload: EntryPayload::Blank,
                }],
            })
        };
        let max = MAX_TERM;
        // (request, absurd term found)
        let cases: Vec<(&str, PeerRequest, Option<u64>)> = vec![
            ("ordinary", append(5, 4, 4, 5), None),
            ("at the limit", append(max, 4, 4, max), None),
            ("vote", append(u64::MAX, 4, 4, 5), Some(u64::MAX)),
            ("prev", append(5, max + 1, 4, 5), Some(max + 1)),
            ("commit", append(5, 4, max + 1, 5), Some(max + 1)),
            ("entry", append(5, 4, 4, u64::MAX), Some(u64::MAX)),
            (
                "vote request",
                PeerRequest::Vote(VoteRequest {
                    vote: Vote::new(u64::MAX, 1),
                    last_log_id: log(3),
                }),
                Some(u64::MAX),
            ),
            (
                "vote request's log",
                PeerRequest::Vote(VoteRequest {
                    vote: Vote::new(4, 1),
                    last_log_id: log(max + 1),
                }),
                Some(max + 1),
            ),
            ("ping", PeerRequest::Ping, None),
        ];
        for (name, req, want) in cases {
            assert_eq!(absurd_term_in_request(&req), want, "{name}");
        }
        let answers: Vec<(&str, PeerResponse, Option<u64>)> = vec![
            (
                "higher vote",
                PeerResponse::AppendEntries(Ok(AppendEntriesResponse::HigherVote(Vote::new(
                    u64::MAX,
                    2,
                )))),
                Some(u64::MAX),
            ),
            (
                "vote granted",
                PeerResponse::Vote(Ok(VoteResponse {
                    vote: Vote::new(3, 2),
                    vote_granted: true,
                    last_log_id: log(3),
                })),
                None,
            ),
            (
                "vote answered from the future",
                PeerResponse::Vote(Ok(VoteResponse {
                    vote: Vote::new(max + 1, 2),
                    vote_granted: false,
                    last_log_id: None,
                })),
                Some(max + 1),
            ),
            ("pong", PeerResponse::Pong(2), None),
        ];
        for (name, resp, want) in answers {
            assert_eq!(absurd_term_in_response(&resp), want, "{name}");
        }
    }

    #[test]
    fn frame_caps_follow_the_request_kinds() -> Result<(), Box<dyn std::error::Error>> {
        // The head read from real encodings names the variant whose cap applies.
        let vote = PeerRequest::Vote(VoteRequest {
            vote: Vote::new(3, 1),
            last_log_id: None,
        });
        let cases: Vec<(PeerRequest, usize)> = vec![
            (
                PeerRequest::AppendEntries(AppendEntriesRequest {
                    vote: Vote::new_committed(3, 1),
                    prev_log_id: None,
                    leader_commit: None,
                    entries: Vec::new(),
                }),
                MAX_FRAME,
            ),
            (vote, peer_limits::SMALL_FRAME),
            (PeerRequest::Forward(Proposal(vec![1])), MAX_FRAME),
            (PeerRequest::ReadIndex, peer_limits::SMALL_FRAME),
            (PeerRequest::Ping, peer_limits::SMALL_FRAME),
            (
                PeerRequest::App(codec::Bytes(vec![1, 2])),
                peer_limits::APP_FRAME,
            ),
        ];
        for id in [1u64, 300, 70_000, u64::MAX] {
            for (req, cap) in &cases {
                let frame = codec::encode(&Frame::Request(id, clone_req(req)))?;
                let FrameHead::Request(kind) = peer_limits::frame_head(&frame) else {
                    return Err(format!("{req:?}: no head").into());
                };
                assert_eq!(peer_limits::frame_cap(kind), Some(*cap), "{req:?}");
            }
        }
        Ok(())
    }

    fn clone_req(req: &PeerRequest) -> PeerRequest {
        codec::decode(&codec::encode(req).unwrap_or_default()).unwrap_or(PeerRequest::Ping)
    }

    /// Reads from `rd` with the server's limits, as node `from` seen as `view`.
    async fn read_as<R: tokio::io::AsyncRead + Unpin>(
        rd: &mut R,
        budget: &FrameBudget,
        from: NodeId,
        view: MemberView,
    ) -> Result<Frame, ReadFailure> {
        let handlers = Semaphore::new(IN_FLIGHT_PER_CONN);
        let v = move || view;
        let lim = ReadLimits {
            per_kind: true,
            budget: Some(budget),
            sender: Some((from, &v)),
            idle: Some((Duration::from_secs(3600), &handlers)),
        };
        read_frame(rd, &lim).await
    }

    #[tokio::test]
    async fn a_non_member_is_judged_from_the_head_and_small_frames_pass_a_full_budget()
    -> Result<(), Box<dyn std::error::Error>> {
        let budget = Arc::new(FrameBudget::new());
        let stranger = MemberView {
            has_membership: true,
            is_member: false,
            removed: false,
        };
        // A non-member's AppendEntries that does not claim to lead is refused from its head,
        // though its body (64 MiB announced) never comes.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&forge::announce_append_entries_as(MAX_FRAME as u32, 5, 1))
            .await?;
        match tokio::time::timeout(
            Duration::from_secs(10),
            read_as(&mut b, &budget, 900, stranger),
        )
        .await?
        {
            Err(ReadFailure::Denied(Refused::NotMember, _)) => {}
            other => return Err(format!("{other:?}").into()),
        }
        // Non-members claiming to lead (900, then 901) share one pool of one full frame: 900
        // sends all of its 64 MiB frame but the last byte and holds the pool; 901 waits.
        // Members 1 and 2 announce full frames and send nothing (one chunk each).
        let mut held = Vec::new();
        for (from, view, body) in [
            (900u64, stranger, MAX_FRAME - 64),
            (901, stranger, 0),
            (1, MemberView::MEMBER, 0),
            (2, MemberView::MEMBER, 0),
        ] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let (close, closed) = oneshot::channel::<()>();
            let writer = tokio::spawn(async move {
                let head = forge::announce_append_entries_as(MAX_FRAME as u32, 5, from);
                let _ = a.write_all(&head).await;
                let _ = a.write_all(&vec![0u8; body]).await;
                let _ = closed.await;
            });
            let shared = budget.clone();
            let reader = tokio::spawn(async move { read_as(&mut b, &shared, from, view).await });
            held.push((close, writer, reader));
            if from == 900 {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while budget.shares.lock().map_or(0, |s| s.held().1) < MAX_FRAME - READ_CHUNK {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the pool was never taken"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        {
            let mut s = budget.shares.lock().map_err(|_| "poisoned")?;
            // The non-members hold one frame; the other id waits.
            assert!(!s.take(902, READ_CHUNK, Share::NonMember));
            assert!(
                s.take(3, READ_CHUNK, Share::Member),
                "members keep the rest"
            );
            s.give(3, READ_CHUNK, Share::Member);
        }
        // Heartbeats and votes, from a member and from the non-member claiming to lead, are
        // read at once while the big budget is held.
        for (from, view) in [
            (3, MemberView::MEMBER),
            (1, MemberView::MEMBER),
            (900, stranger),
        ] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            a.write_all(&forge::append_entries(4, 5, from)).await?;
            let got = tokio::time::timeout(
                Duration::from_secs(10),
                read_as(&mut b, &budget, from, view),
            )
            .await??;
            assert!(
                matches!(got, Frame::Request(4, PeerRequest::AppendEntries(_))),
                "{got:?}"
            );
        }
        for (close, writer, reader) in held {
            drop(close);
            writer.await?;
            assert!(reader.await?.is_err(), "a cut frame is not a frame");
        }
        let s = budget
            .shares
            .lock()
            .map(|s| format!("{s:?}"))
            .unwrap_or_default();
        assert_eq!(s, format!("{:?}", FrameShares::default()));
        Ok(())
    }

    #[tokio::test]
    async fn frames_are_read_within_their_kind_and_the_port_budget()
    -> Result<(), Box<dyn std::error::Error>> {
        let budget = FrameBudget::new();
        let handlers = Semaphore::new(IN_FLIGHT_PER_CONN);
        let lim = ReadLimits {
            per_kind: true,
            budget: Some(&budget),
            sender: None,
            idle: Some((Duration::from_secs(3600), &handlers)),
        };
        let held = |b: &FrameBudget| format!("{:?}", b.shares.lock().map(|s| format!("{s:?}")));
        let none = held(&FrameBudget::new());
        // A whole request arrives, in pieces, and the budget is whole again after.
        let bytes = forge::append_entries(9, 3, 1);
        let (mut a, mut b) = tokio::io::duplex(7);
        let write = tokio::spawn(async move {
            let _ = a.write_all(&bytes).await;
            a
        });
        let got = read_frame(&mut b, &lim).await?;
        assert!(
            matches!(got, Frame::Request(9, PeerRequest::AppendEntries(_))),
            "{got:?}"
        );
        assert_eq!(held(&budget), none);
        drop(write.await?);

        // A vote that declares 1 MiB is refused from its head.
        let mut vote = codec::encode(&Frame::Request(
            1,
            PeerRequest::Vote(VoteRequest {
                vote: Vote::new(3, 1),
                last_log_id: None,
            }),
        ))?;
        let mut framed = ((1u32 << 20).to_be_bytes()).to_vec();
        framed.append(&mut vote);
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&framed).await?;
        match read_frame(&mut b, &lim).await {
            Err(ReadFailure::Refused(why)) => assert!(why.contains("kind 1"), "{why}"),
            other => return Err(format!("{other:?}").into()),
        }
        assert_eq!(held(&budget), none);

        // Every other kind is read whole whatever follows its head: an App request whose
        // bytes would not parse as a vote (its length, then 0xff) is not refused.
        for bytes in [vec![0xffu8; 40], vec![7u8; 3], Vec::new()] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            a.write_all(&encode_frame(&Frame::Request(
                4,
                PeerRequest::App(codec::Bytes(bytes.clone())),
            ))?)
            .await?;
            let got = read_frame(&mut b, &lim).await?;
            assert!(
                matches!(&got, Frame::Request(4, PeerRequest::App(b)) if b.0 == bytes),
                "{got:?}"
            );
        }

        // A response where a request is expected, and a frame over MAX_FRAME.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&encode_frame(&Frame::Response(1, PeerResponse::Pong(1)))?)
            .await?;
        assert!(matches!(
            read_frame(&mut b, &lim).await,
            Err(ReadFailure::Refused(_))
        ));
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&((MAX_FRAME as u32 + 1).to_be_bytes())).await?;
        assert!(matches!(
            read_frame(&mut b, &lim).await,
            Err(ReadFailure::Refused(_))
        ));

        // An AppendEntries announcing a full frame, then the sender goes away: the frame ends
        // with the connection, and the bytes it held go back.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&forge::announce_append_entries(MAX_FRAME as u32))
            .await?;
        a.write_all(&[0u8; 1000]).await?;
        drop(a);
        assert!(matches!(
            read_frame(&mut b, &lim).await,
            Err(ReadFailure::Io(_))
        ));
        assert_eq!(held(&budget), none);
        Ok(())
    }
}
