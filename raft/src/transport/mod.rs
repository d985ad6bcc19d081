//! The peer transport: persistent mTLS TCP connections carrying length-prefixed bincode frames.
//!
//! One connection per (local node, target node). Every frame carries a request id, so many RPCs
//! are in flight at once on one connection (AppendEntries are pipelined, a vote is never stuck
//! behind a snapshot chunk). Snapshots travel in chunks through openraft's `Chunked` sender,
//! each chunk one `InstallSnapshot` frame.
//!
//! Who is who comes from certificates, never from addresses: the dialler checks (through
//! rustls) that the server's certificate carries the name bound to the node id it meant to
//! reach; the listener maps the client certificate to a node id with `PeerTls::authorize`
//! and refuses anything that is not a node certificate of this cluster's CA.
//!
//! A certificate proves who a peer is, not that it still belongs: every request is also checked
//! against this node's current Raft membership (`admission`), so a node removed while connected
//! is refused from its next request on. A node with no membership yet (a fresh learner) takes
//! everyone but removed ids, so the leader's first AppendEntries reaches it. A node id the state
//! records as removed gets nothing after the handshake (ids are never reused).
//!
//! What a connection may cost before and after its sender is known (connections per source
//! and per node, idle time, frame sizes per request kind, bytes of frames being read) is in
//! `peer_limits`; any Raft message naming a term above `peer_limits::MAX_TERM` is refused
//! before openraft sees it, in a request or in an answer to ours.
//!
//! Frames are at most `MAX_FRAME` bytes, and every Raft entry at most
//! `outpost_storage::MAX_ENTRY_BYTES`, so one entry always fits a frame: an AppendEntries
//! request that would not fit is never sent; openraft is asked to split it (`PayloadTooLarge`).
//!
//! The files: `tls` (what the node hands in), `frame` (the messages and their frames, pure),
//! `read` (reading a frame under the port's limits), `admission` (who is served, pure),
//! `client` (the dialling side), `server` (the accepting side), `network` (openraft's
//! `RaftNetwork` over the client) and `forge` (hand-made frames for tests).

pub(crate) mod admission;
mod client;
#[doc(hidden)]
pub mod forge;
pub(crate) mod frame;
mod network;
mod read;
mod server;
mod tls;

pub(crate) use admission::MemberView;
pub use client::{PeerClients, TransportError, ping};
pub(crate) use frame::{ENTRIES_PER_FRAME_BYTES, PeerRequest, PeerResponse};
pub use frame::{FrameError, MAX_FRAME};
pub use network::{Network, PeerNetwork};
pub(crate) use server::{PeerHandler, serve};
pub use tls::{Authorize, PEER_ALPN, PeerTls};
