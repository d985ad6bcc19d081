//! The error types of `RaftNode`: what starting, writing, reading, copying the state and
//! changing the membership can fail with. Each keeps the error underneath as its `source()`.

use std::path::PathBuf;
use std::time::Duration;

use crate::log_store::LogStoreError;
use crate::state_machine::StoppedApplying;
use crate::types::{NodeId, RaftFatal, RaftInitError, RaftWriteError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    #[error("state database: {0}")]
    State(#[from] outpost_storage::StorageError),
    #[error("snapshot directory {path}: {source}")]
    SnapshotDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blocking task that opens the stores did not finish (it panicked, or the runtime
    /// is shutting down).
    #[error("opening the stores: {0}")]
    Open(#[source] tokio::task::JoinError),
    #[error("invalid raft settings: {0}")]
    Config(#[from] openraft::ConfigError),
    /// openraft could not start (e.g. reading its stores back failed).
    #[error("raft: {0}")]
    Raft(#[source] RaftFatal),
    /// `initialize` was refused (e.g. this node already has a membership) or Raft stopped.
    #[error("raft: {0}")]
    Initialize(#[source] RaftInitError),
}

#[derive(Debug, thiserror::Error)]
pub enum CopyStateError {
    #[error("copying the state: {0}")]
    Storage(#[from] outpost_storage::StorageError),
    #[error("the copy's applied marker does not decode: {0}")]
    Marker(#[from] bincode::error::DecodeError),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("no leader within {0:?}: is a majority of the voters running and reachable?")]
    NoLeader(Duration),
    #[error("this node has stopped: {0}")]
    Stopped(#[source] StopCause),
    /// The command alone would make a Raft entry of `bytes` bytes (format header and batch
    /// length included), more than `outpost_storage::MAX_ENTRY_BYTES`. It never reaches Raft.
    #[error("a command of {bytes} bytes exceeds the {cap}-byte Raft entry cap")]
    TooLarge { bytes: usize, cap: usize },
}

/// Why a node takes no more writes, with the error behind it where there is one. Clone: one
/// failed batch answers every write it carried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StopCause {
    /// The write batcher has ended (the node is shutting down).
    #[error("write batcher stopped")]
    Batcher,
    /// The batcher ended while the write waited for its answer.
    #[error("write batcher dropped the request")]
    Dropped,
    /// This node stopped applying committed entries (e.g. it needs an upgrade).
    #[error("{0}")]
    Applying(#[source] StoppedApplying),
    /// openraft refused the write or has stopped.
    #[error("{0}")]
    Raft(#[source] RaftWriteError),
    /// The state machine answered a batch with another number of outcomes (a bug).
    #[error("batch of {sent} commands got {got} outcomes")]
    Outcomes { sent: usize, got: usize },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("no leader confirmed a read index within {0:?}")]
    NoLeader(Duration),
    #[error("this node did not catch up to the read index {index} within {timeout:?}")]
    Lagging { index: u64, timeout: Duration },
    #[error("this node has stopped: {0}")]
    Stopped(#[source] StoppedApplying),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    #[error("removing node {0} would leave no voter")]
    LastVoter(NodeId),
    #[error("membership change failed: {0}")]
    Raft(#[source] RaftWriteError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

#[derive(Debug, thiserror::Error)]
pub enum AppCallError {
    #[error("node {0} is not in the membership")]
    UnknownNode(NodeId),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("node {node}: {reason}")]
    Remote { node: NodeId, reason: String },
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::sync::Arc;

    use openraft::error::RaftError;

    use super::*;
    use crate::node::tests::source_as;

    #[test]
    fn a_stopped_write_keeps_its_cause() {
        use openraft::error::Fatal;
        type Check = fn(&StopCause) -> bool;
        // (cause, its text, what its own source is)
        let cases: Vec<(StopCause, &str, Check)> = vec![
            (StopCause::Batcher, "write batcher stopped", |c| {
                c.source().is_none()
            }),
            (
                StopCause::Dropped,
                "write batcher dropped the request",
                |c| c.source().is_none(),
            ),
            (
                StopCause::Outcomes { sent: 3, got: 2 },
                "batch of 3 commands got 2 outcomes",
                |c| c.source().is_none(),
            ),
            (
                StopCause::Raft(RaftError::Fatal(Fatal::Stopped)),
                "raft stopped",
                |c| {
                    matches!(
                        source_as::<RaftWriteError>(c),
                        Some(RaftError::Fatal(Fatal::Stopped))
                    )
                },
            ),
            (
                StopCause::Applying(StoppedApplying::new(
                    outpost_storage::StorageError::NeedsUpgrade {
                        found: 9,
                        supported: 3,
                    },
                )),
                "stopped applying: command format 9 is newer than the supported format 3: \
                 upgrade this node; install a newer outpost release on this node",
                |c| {
                    source_as::<StoppedApplying>(c)
                        .and_then(|s| source_as::<Arc<outpost_storage::StorageError>>(s))
                        .is_some_and(|e| {
                            matches!(
                                **e,
                                outpost_storage::StorageError::NeedsUpgrade {
                                    found: 9,
                                    supported: 3
                                }
                            )
                        })
                },
            ),
        ];
        for (cause, text, check) in cases {
            // One failed batch answers each of its writes with a clone.
            let e = WriteError::Stopped(cause.clone());
            assert_eq!(
                e.clone().to_string(),
                format!("this node has stopped: {text}")
            );
            let got = source_as::<StopCause>(&e);
            assert!(got.is_some_and(check), "{text}: {got:?}");
        }
    }
}
