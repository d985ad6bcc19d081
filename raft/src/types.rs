//! The openraft type config, declared once, and the concrete aliases the rest of the crate uses.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// Where a node can be reached. Stored in the Raft membership, so it travels with the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub name: String,
    /// HTTPS API (agents, admins, forwarded joins).
    pub api_addr: String,
    /// Raft peer transport (mTLS, bincode frames).
    pub peer_addr: String,
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (peer {}, api {})",
            self.name, self.peer_addr, self.api_addr
        )
    }
}

/// A Raft entry's application payload: one encoded batch of storage envelopes
/// (`outpost_storage::encode_batch`). Opaque to Raft; decoded only by `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal(#[serde(with = "serde_bytes_compat")] pub Vec<u8>);

/// One outcome per envelope of the applied batch (empty for blank/membership entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResponse(pub Vec<outpost_storage::Outcome>);

openraft::declare_raft_types!(
    /// Outpost's Raft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResponse,
        NodeId = u64,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, PeerNode>;
/// Raft stopped for good (a storage failure, a panic, or shutdown).
pub type RaftFatal = openraft::error::Fatal<NodeId>;
/// What a client write or a membership change (`client_write`, `add_learner`,
/// `change_membership`) fails with.
pub type RaftWriteError =
    openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, PeerNode>>;
/// What `initialize` fails with.
pub type RaftInitError =
    openraft::error::RaftError<NodeId, openraft::error::InitializeError<NodeId, PeerNode>>;
/// What a read-index request (`get_read_log_id`) fails with.
pub type RaftReadIndexError =
    openraft::error::RaftError<NodeId, openraft::error::CheckIsLeaderError<NodeId, PeerNode>>;

/// Snapshot bytes as a file on disk, with its path so an install can hand it to storage.
/// Small snapshots received in memory are never needed: everything streams through files.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub file: tokio::fs::File,
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }
    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

/// `Vec<u8>` as one length-prefixed byte string instead of a sequence of u8 elements.
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let b: super::ByteBuf = Deserialize::deserialize(d)?;
        Ok(b.0)
    }
}

/// Minimal owned byte buffer that deserializes from a byte string (or a sequence, for
/// self-describing formats).
struct ByteBuf(Vec<u8>);

impl<'de> serde::Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}
