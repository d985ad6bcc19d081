//! Linearizable reads: a read index confirmed by the leader with a quorum (asked locally or
//! over the peer port), then waited for locally; and waiting for a leader.

use std::time::{Duration, Instant};

use super::errors::ReadError;
use super::{Inner, RaftNode, remaining};
use crate::transport::{PeerRequest, PeerResponse};
use crate::types::{NodeId, RaftReadIndexError};

impl RaftNode {
    /// Returns once this node's state reflects every write committed before the call
    /// (a read index confirmed by the leader with a quorum, then applied locally).
    pub async fn linearizable_barrier(&self, timeout: Duration) -> Result<(), ReadError> {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        let index = loop {
            if let Some(f) = inner.health.fatal() {
                return Err(ReadError::Stopped(f));
            }
            let leader = inner.raft.metrics().borrow().current_leader;
            let attempt = match leader {
                Some(l) if l == inner.id => inner.read_index().await.map_err(ReadIndexError::Local),
                Some(l) => inner.remote_read_index(l, remaining(deadline)).await,
                None => Err(ReadIndexError::NoLeader),
            };
            match attempt {
                Ok(i) => break i,
                Err(why) if Instant::now() >= deadline => {
                    tracing::debug!(%why, "read index not confirmed");
                    return Err(ReadError::NoLeader(timeout));
                }
                Err(_) => inner.wait_leader_change(deadline).await,
            }
        };
        inner
            .raft
            .wait(Some(remaining(deadline)))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|_| ReadError::Lagging { index, timeout })?;
        Ok(())
    }

    /// Waits until some node is leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.inner.raft.metrics().borrow().current_leader {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.inner.wait_leader_change(deadline).await;
        }
    }
}

/// Why one read-index attempt failed (logged; the barrier retries until its deadline).
#[derive(Debug, thiserror::Error)]
enum ReadIndexError {
    #[error("no leader")]
    NoLeader,
    #[error("the address of leader {0} is unknown")]
    LeaderAddress(NodeId),
    #[error("{0}")]
    Local(#[source] RaftReadIndexError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// The leader's refusal: it crossed the wire as text, so a string is all there is.
    #[error("leader {leader}: {reason}")]
    Remote { leader: NodeId, reason: String },
}

impl Inner {
    pub(super) async fn read_index(&self) -> Result<u64, RaftReadIndexError> {
        let (read, _applied) = self.raft.get_read_log_id().await?;
        Ok(read.map(|l| l.index).unwrap_or(0))
    }

    async fn remote_read_index(
        &self,
        leader: NodeId,
        timeout: Duration,
    ) -> Result<u64, ReadIndexError> {
        let addr = self
            .peer_addr_of(leader)
            .ok_or(ReadIndexError::LeaderAddress(leader))?;
        match self
            .clients
            .call(leader, &addr, PeerRequest::ReadIndex, timeout)
            .await?
        {
            PeerResponse::ReadIndex(r) => {
                r.map_err(|reason| ReadIndexError::Remote { leader, reason })
            }
            other => Err(ReadIndexError::Remote {
                leader,
                reason: format!("unexpected response {other:?}"),
            }),
        }
    }
}
