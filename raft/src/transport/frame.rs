//! The peer protocol's frames: the requests and responses (`PeerRequest`, `PeerResponse`)
//! in a length-prefixed bincode `Frame`, the frame size limit, and how many entries of an
//! AppendEntries request fit one frame (`entries_that_fit`). Pure: no sockets here.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::types::{NodeId, Proposal, TypeConfig};

/// Largest frame accepted from a peer (a snapshot chunk plus headroom).
pub const MAX_FRAME: usize = codec::MAX_DECODE_BYTES;

/// Room in an AppendEntries frame for everything but the entries' payloads: frame and
/// request headers, and per entry its log id, payload tag and length prefix.
pub(crate) const FRAME_HEADROOM: usize = 1 << 20;

/// Most bytes of stored entries (their encoding in the log store, which is also their
/// encoding in a frame) that the log reader hands to one AppendEntries request.
pub(crate) const ENTRIES_PER_FRAME_BYTES: usize = MAX_FRAME - FRAME_HEADROOM;

// One entry always fits a frame, and two do, so splitting a request always makes progress.
const _: () = assert!(MAX_FRAME >= 2 * outpost_storage::MAX_ENTRY_BYTES + FRAME_HEADROOM);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A batch of envelopes for the leader to commit (writes that reached a follower).
    Forward(Proposal),
    /// Ask the leader to confirm its leadership and name the index a linearizable read must see.
    ReadIndex,
    /// Liveness and identity check: answered with the responder's node id.
    Ping,
    /// An application request (opaque here), answered by the node's `AppHandler`.
    App(codec::Bytes),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Forward(Result<Vec<outpost_storage::Outcome>, String>),
    ReadIndex(Result<u64, String>),
    Pong(NodeId),
    App(Result<codec::Bytes, String>),
    /// The request could not be handled at all (e.g. it did not decode).
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Frame {
    Request(u64, PeerRequest),
    Response(u64, PeerResponse),
}

/// Why a frame could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("frame of {bytes} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge { bytes: usize },
    /// Only an entry written before the entry cap existed can be this large.
    #[error("log entry {index} alone does not fit the {MAX_FRAME}-byte frame limit")]
    EntryTooLarge { index: u64 },
}

/// Encoded length of an AppendEntries request frame without its entries, counting the largest
/// request id and an entries length prefix of the largest width (9 bytes, 1 counted already).
pub(super) fn append_entries_header_len(rpc: &AppendEntriesRequest<TypeConfig>) -> usize {
    let empty = AppendEntriesRequest {
        vote: rpc.vote,
        prev_log_id: rpc.prev_log_id,
        leader_commit: rpc.leader_commit,
        entries: Vec::new(),
    };
    codec::encoded_len(&Frame::Request(u64::MAX, PeerRequest::AppendEntries(empty))) + 8
}

/// How many entries of an AppendEntries request fit one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFit {
    All,
    /// Only the first n (at least one): send those, the rest in later requests.
    First(usize),
    /// Not even the first entry.
    None,
}

/// The longest prefix of entries (their encoded sizes, in order) whose frame stays within
/// `max_frame`, given the frame's length without entries.
pub(crate) fn entries_that_fit(
    header: usize,
    sizes: impl IntoIterator<Item = usize>,
    max_frame: usize,
) -> FrameFit {
    let mut total = header;
    for (i, size) in sizes.into_iter().enumerate() {
        total = total.saturating_add(size);
        if total > max_frame {
            return if i == 0 {
                FrameFit::None
            } else {
                FrameFit::First(i)
            };
        }
    }
    if total > max_frame {
        FrameFit::None
    } else {
        FrameFit::All
    }
}

pub(super) fn encode_frame(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let body = codec::encode(frame).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { bytes: body.len() });
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::{Entry, LogId, Vote};

    #[test]
    fn entries_that_fit_a_frame() {
        // (header, entry sizes, max frame) -> fit
        let cases: &[(usize, &[usize], usize, FrameFit)] = &[
            (10, &[], 100, FrameFit::All),
            (10, &[30, 30, 30], 100, FrameFit::All), // exactly 100
            (10, &[30, 30, 31], 100, FrameFit::First(2)),
            (10, &[90, 1], 100, FrameFit::First(1)),
            (10, &[91], 100, FrameFit::None),
            (10, &[usize::MAX, 1], 100, FrameFit::None),
            (10, &[1, usize::MAX], 100, FrameFit::First(1)),
            (101, &[], 100, FrameFit::None),
        ];
        for (i, (header, sizes, max, want)) in cases.iter().enumerate() {
            assert_eq!(
                entries_that_fit(*header, sizes.iter().copied(), *max),
                *want,
                "case {i}"
            );
        }
    }

    fn entry(index: u64, payload: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
            payload: EntryPayload::Normal(Proposal(vec![1u8; payload])),
        }
    }

    #[test]
    fn an_append_entries_over_the_frame_limit_is_split() -> Result<(), Box<dyn std::error::Error>> {
        let cap = outpost_storage::MAX_ENTRY_BYTES;
        let prev = Some(LogId::new(CommittedLeaderId::new(3, 1), 0));
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: prev,
            leader_commit: prev,
            entries: (1..=10).map(|i| entry(i, cap)).collect(),
        };
        let header = append_entries_header_len(&rpc);
        let sizes: Vec<usize> = rpc.entries.iter().map(codec::encoded_len).collect();
        let FrameFit::First(n) = entries_that_fit(header, sizes.iter().copied(), MAX_FRAME) else {
            return Err("ten full entries must not fit one frame".into());
        };
        assert!(n >= 2, "{n}");
        // The first n really encode within the limit, n + 1 really do not.
        let frame = |k: usize| {
            Frame::Request(
                u64::MAX,
                PeerRequest::AppendEntries(AppendEntriesRequest {
                    vote: rpc.vote,
                    prev_log_id: rpc.prev_log_id,
                    leader_commit: rpc.leader_commit,
                    entries: rpc.entries[..k].to_vec(),
                }),
            )
        };
        let fits = encode_frame(&frame(n))?;
        assert!(fits.len() <= MAX_FRAME + 4);
        match encode_frame(&frame(n + 1)) {
            Err(FrameError::TooLarge { bytes }) => assert!(bytes > MAX_FRAME, "{bytes}"),
            other => {
                let got = other.map(|b| b.len());
                return Err(format!("{} entries: {got:?}", n + 1).into());
            }
        }
        // One entry at the cap always fits (the compile-time assertion, checked for real).
        assert_eq!(
            entries_that_fit(header, [sizes[0]], MAX_FRAME),
            FrameFit::All
        );
        Ok(())
    }
}
