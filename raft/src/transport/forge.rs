//! Frames as a peer writes them, for tests that speak the peer protocol by hand against the
//! real binary (forged messages, floods). Not part of the crate's interface.

use openraft::raft::AppendEntriesRequest;

use super::frame::{Frame, PeerRequest, PeerResponse, encode_frame};
use super::read::{ReadLimits, read_frame};
use crate::codec;
use crate::types::{NodeId, TypeConfig, Vote};

/// A whole AppendEntries request frame (length prefix included) from `leader` at `term`,
/// with no entries (a heartbeat).
pub fn append_entries(request_id: u64, term: u64, leader: NodeId) -> Vec<u8> {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, leader),
        prev_log_id: None,
        leader_commit: None,
        entries: Vec::new(),
    };
    encode_frame(&Frame::Request(request_id, PeerRequest::AppendEntries(req))).unwrap_or_default()
}

/// The stored form of a vote for `node` at `term`, not committed (raft.db's `meta` row
/// `vote`), to prepare a stopped node's data as a forged message would have left it.
pub fn stored_vote(term: u64, node: NodeId) -> Vec<u8> {
    codec::encode(&Vote::new(term, node)).unwrap_or_default()
}

/// The first bytes of an AppendEntries frame that declares `len` bytes: its length prefix
/// and head, without the rest.
pub fn announce_append_entries(len: u32) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&[0, 1, 0]);
    out
}

/// The same, with the vote that opens the request: committed, for `leader` at `term` (a
/// sender claiming to lead).
pub fn announce_append_entries_as(len: u32, term: u64, leader: NodeId) -> Vec<u8> {
    let mut out = announce_append_entries(len);
    out.extend(codec::encode(&Vote::new_committed(term, leader)).unwrap_or_default());
    out
}

/// Reads one answer frame: `Ok(Err(reason))` for a refusal (`Failed`), `Ok(Ok(debug))`
/// for any other answer.
pub async fn read_answer<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
) -> std::io::Result<Result<String, String>> {
    match read_frame(rd, &ReadLimits::CLIENT).await? {
        Frame::Response(_, PeerResponse::Failed(why)) => Ok(Err(why)),
        Frame::Response(_, other) => Ok(Ok(format!("{other:?}"))),
        Frame::Request(..) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a request where an answer was expected",
        )),
    }
}
