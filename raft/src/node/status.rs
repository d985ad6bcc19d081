//! What `RaftNode::status` reports (`NodeStatus`, `MemberStatus`), built from openraft's
//! metrics by the pure `status_of`, and the watch that notices when the Raft core stopped.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::RaftNode;
use crate::failover::FailoverStats;
use crate::peer_limits::PeerPortStats;
use crate::types::{NodeId, RaftMetrics};

/// A member as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub name: String,
    pub voter: bool,
    pub api_addr: String,
    pub peer_addr: String,
    /// Highest log index known replicated to this member (leader's view only).
    pub matched_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub state: String,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// Why this node stopped applying, if it did (e.g. it needs an upgrade).
    pub fatal: Option<String>,
    /// Campaigns this node started at once because its leader's peer connection closed
    /// (fast failover), since it started.
    #[serde(default)]
    pub fast_elections: u64,
    /// The term of the last of them: a leader whose `term` equals it won by that path.
    #[serde(default)]
    pub fast_election_term: Option<u64>,
    /// What the peer port refused since this node started (`peer_limits`).
    #[serde(default)]
    pub peer_port: PeerPortStats,
}

impl RaftNode {
    pub fn status(&self) -> NodeStatus {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow().clone();
        // The core's own error first: a core that quits on a storage error drops its
        // metrics sender too, and is then not a panic.
        let fatal = self
            .inner
            .health
            .fatal()
            .map(|f| f.to_string())
            .or_else(|| m.running_state.as_ref().err().map(|e| e.to_string()))
            .or_else(|| core_ended(&rx).then(|| CORE_ENDED.to_string()));
        let mut status = status_of(&m, fatal, self.inner.watch.stats());
        status.peer_port = self.inner.port.stats();
        status
    }
}

impl RaftNode {
    /// Why the Raft core stopped on a storage error (openraft's `Fatal::StorageError`: a read
    /// or write of raft.db, state.db or a snapshot failed, e.g. the disk filled up), if it did.
    /// None while it runs, and for every other stop: a node that needs an upgrade
    /// (`StoppedApplying`), a panic, a shutdown. SQLite rolled the failed transaction back,
    /// so starting the node again from its data directory resumes from what is on disk; the
    /// binary does so once free space is back (`node::serve`).
    pub fn storage_stop(&self) -> Option<String> {
        if self.inner.health.fatal().is_some() {
            return None;
        }
        match &self.inner.raft.metrics().borrow().running_state {
            Err(f @ openraft::error::Fatal::StorageError(_)) => Some(f.to_string()),
            _ => None,
        }
    }
}

/// What `status` says (and `/healthz` answers) when the Raft core's task ended without
/// reporting why: it panicked.
pub(super) const CORE_ENDED: &str = "the Raft core stopped (its task ended: it panicked); this node takes \
     no writes and casts no votes until it is restarted, or recovered with `outpost recover \
     --force-new-cluster`";

/// The Raft core's task ended: openraft drops the metrics sender with it, and a panic leaves
/// the last metrics saying it runs.
pub(super) fn core_ended(rx: &tokio::sync::watch::Receiver<RaftMetrics>) -> bool {
    rx.has_changed().is_err()
}

/// Logs once why the Raft core stopped, when it does (a panic, or openraft's fatal error).
pub(super) async fn watch_core(mut rx: tokio::sync::watch::Receiver<RaftMetrics>) {
    loop {
        if let Err(fatal) = &rx.borrow_and_update().running_state {
            if !matches!(fatal, openraft::error::Fatal::Stopped) {
                tracing::error!(error = %fatal, "the Raft core stopped; /healthz fails until this node is restarted or recovered");
            }
            return;
        }
        if rx.changed().await.is_err() {
            tracing::error!("{CORE_ENDED}");
            return;
        }
    }
}

fn status_of(m: &RaftMetrics, fatal: Option<String>, failover: FailoverStats) -> NodeStatus {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| MemberStatus {
            id: *id,
            name: node.name.clone(),
            voter: voters.contains(id),
            api_addr: node.api_addr.clone(),
            peer_addr: node.peer_addr.clone(),
            matched_index: m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).copied().flatten())
                .map(|l| l.index),
        })
        .collect();
    let fatal = fatal.or_else(|| m.running_state.as_ref().err().map(|e| e.to_string()));
    NodeStatus {
        node_id: m.id,
        leader_id: m.current_leader,
        term: m.current_term,
        state: format!("{:?}", m.state),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index),
        members,
        fatal,
        fast_elections: failover.campaigns,
        fast_election_term: failover.last_term,
        peer_port: PeerPortStats::default(),
    }
}
