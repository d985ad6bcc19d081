//! outpost-raft: openraft 0.9 wired to SQLite and to an mTLS peer transport.
//!
//! It owns the type config (`types`), the SQLite Raft log store (`log_store`), the
//! state-machine adapter over `outpost-storage` (`state_machine`), the peer transport
//! (`transport`: bincode frames over TLS TCP) and `RaftNode` (`node/`, one room each), which
//! batches writes into one entry (group commit, `node::batcher`), forwards them to the leader
//! (`node::forward`), serves linearizable reads (`node::read_index`) and keeps the membership
//! in line with the nodes recorded in the state (`node::upkeep`: a pure plan, then its steps;
//! `dead_members`: the pure rule of which silent member goes). `failover` has the
//! followers of a leader whose process died campaign as soon as its peer connection closes,
//! instead of waiting out the leader lease and the election timeout. `telemetry` holds the Raft
//! series of `/metrics` (`RaftTelemetry`), observed where they happen; the node registers them.
//!
//! One byte cap, `outpost_storage::MAX_ENTRY_BYTES`, bounds every Raft entry: the batcher
//! closes a batch before its encoding would pass it and refuses a command too large for an
//! entry of its own (`WriteError::TooLarge`); the log reader and the transport size
//! AppendEntries requests so that they always fit a peer frame. The peer port serves only
//! current members (never a removed id, within the budget of `peer_limits`), and the leader
//! re-checks and re-stamps (actor, time) writes that other nodes forward to it.
//!
//! It deliberately knows nothing of certificates (the node hands it rustls configs and a
//! function that maps a peer certificate to a node id), of HTTP, or of discovery. openraft's
//! types stay inside; the public surface is `RaftNode`, its config and status types.
//!
//! Errors keep their cause: each error type here holds the error underneath (openraft's, under
//! the aliases in `types`; storage's; SQLite's; I/O) as its `source()`, and its text names it
//! too. Strings remain only where text is all there is: what crossed the wire from a peer (a
//! refusal, an application error) and the reason the node's `authorize` callback gives.
//! `RaftNode::start` opens both databases and the snapshot directory on a blocking thread:
//! async code never calls rusqlite or blocks on the file system.

mod codec;
mod dead_members;
mod failover;
pub mod log_store;
mod node;
pub mod offline;
pub mod peer_limits;
pub mod state_machine;
pub mod telemetry;
pub mod transport;
pub mod types;

pub use node::{
    AppCallError, AppFuture, AppHandler, CopyStateError, MemberStatus, MembershipError, NodeConfig,
    NodeError, NodeStatus, RaftNode, RaftTuning, ReadError, StateCopy, StopCause, WriteError,
    forward_batch, now_ms,
};
pub use state_machine::StoppedApplying;
pub use telemetry::RaftTelemetry;
pub use transport::{PEER_ALPN, PeerTls};
pub use types::{LogId, NodeId, PeerNode};
