//! The cluster as the CLI and the console read it: `/v1/status` (this node's Raft view,
//! readiness, certificate expiries, builds), `/v1/nodes`, joining, backups.

use serde::{Deserialize, Serialize};

/// Whether this node serves a committing cluster, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
}

/// `/v1/status`: this node's view of the cluster, its Raft status as the Raft layer reports
/// it (flattened: the JSON keeps one flat object), and its readiness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub name: String,
    pub cluster_id: String,
    pub cluster_name: Option<String>,
    /// `node_id`, `leader_id`, `term`, `state`, `applied_index`, `last_log_index`,
    /// `snapshot_index`, `members`, `fatal`, `fast_elections`, `fast_election_term`.
    #[serde(flatten)]
    pub raft: NodeStatus,
    /// What `/readyz` answers: whether this node serves a committing cluster.
    #[serde(default)]
    pub ready: Option<Readiness>,
    /// Soonest certificate expiries (unix seconds): CA, this node, and the admin and client
    /// certificates presented to this node in the last day.
    #[serde(default)]
    pub cert_expiry: Option<CertExpiry>,
    /// The version and executable SHA-256 each node last reported.
    #[serde(default)]
    pub builds: Vec<MemberBuild>,
    /// Resident memory of the answering node's process, in bytes (None: not known).
    #[serde(default)]
    pub resident_bytes: Option<u64>,
    /// TLS handshakes this node's API port completed since it started (None: an older node).
    #[serde(default)]
    pub tls_handshakes: Option<TlsHandshakes>,
    /// File descriptors the answering node's process holds open (None: not known).
    #[serde(default)]
    pub open_fds: Option<u64>,
    /// The answering node's backups: its schedule, the last good one, the last failure
    /// (None: an older node).
    #[serde(default)]
    pub backup: Option<BackupStatus>,
}

/// A node's backups as `/v1/status` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupStatus {
    /// The `[backup]` schedule of its node.toml as the node applies it (None: off).
    pub schedule: Option<BackupScheduleView>,
    /// When this node last made a backup of any kind (`outpost backup` or scheduled), unix ms.
    pub last_ms: Option<i64>,
    /// The last good scheduled backup.
    pub last_good: Option<BackupFileView>,
    /// The last scheduled backup that failed, if it failed after the last good one.
    pub last_error: Option<BackupFailure>,
    /// Scheduled backups made and failed since the node started.
    pub made: u64,
    pub failures: u64,
}

/// `[backup]` of a node's node.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupScheduleView {
    pub every_secs: u64,
    pub keep: u32,
    pub dir: String,
    /// The CA key is sealed into each backup (a passphrase file is set).
    pub sealed: bool,
}

/// One backup file a node wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupFileView {
    pub at_ms: i64,
    pub path: String,
    pub bytes: u64,
}

/// A scheduled backup that failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupFailure {
    pub at_ms: i64,
    pub message: String,
}

/// The Raft fields read as the view's own (`status.leader_id`), as they appear in its JSON.
impl std::ops::Deref for StatusView {
    type Target = NodeStatus;
    fn deref(&self) -> &NodeStatus {
        &self.raft
    }
}

/// A node's Raft status as `/v1/status` shows it (the Raft layer's own type converts into it
/// in `api/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub leader_id: Option<u64>,
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
    /// What the peer port refused since this node started.
    #[serde(default)]
    pub peer_port: PeerPortStats,
}

/// A member as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberStatus {
    pub id: u64,
    pub name: String,
    pub voter: bool,
    pub api_addr: String,
    pub peer_addr: String,
    /// Highest log index known replicated to this member (leader's view only).
    pub matched_index: Option<u64>,
}

/// What `status --json` shows of the peer port's refusals since the node started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerPortStats {
    /// Raft messages refused (and their connection closed) for a term above the maximum.
    pub absurd_term: u64,
    /// Connections of removed node ids closed right after the handshake.
    pub removed: u64,
    /// Requests refused from a node that is not a member (and not removed).
    pub not_member: u64,
    /// Connections refused at accept: too many in handshake from their source or in all.
    pub pre_handshake_full: u64,
    /// Authenticated connections refused: too many on the port.
    pub node_full: u64,
    /// Connections closed because another took their slot.
    pub taken_over: u64,
    /// Authenticated connections closed after their idle time without a frame.
    pub idle_closed: u64,
    /// Frames refused: their kind unknown, their declared size over their kind's cap, or stalled.
    pub frame_refused: u64,
    /// TLS handshakes that failed or timed out (no certificate, a foreign CA, silence).
    pub handshake_failed: u64,
}

/// Completed TLS handshakes on a node's API port: full ones (certificates signed and
/// verified) and resumed ones (an agent back with the session ticket of its last sync).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsHandshakes {
    pub full: u64,
    pub resumed: u64,
}

/// Soonest expiry (unix seconds) per kind of certificate; `None` when none was seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertExpiry {
    pub ca: Option<i64>,
    /// This node's own certificate.
    pub node: Option<i64>,
    /// Of the admin certificates presented to this node in the last day.
    pub admin: Option<i64>,
    /// Of the client certificates presented to this node in the last day.
    pub client: Option<i64>,
}

impl CertExpiry {
    /// The soonest of all.
    pub fn soonest(&self) -> Option<i64> {
        [self.ca, self.node, self.admin, self.client]
            .into_iter()
            .flatten()
            .min()
    }
}

/// What a member runs: `status` lists it for every node, `upgrade status` too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberBuild {
    pub id: u64,
    pub name: String,
    pub version: String,
    /// SHA-256 of the node's running executable ("" until it reported).
    pub binary_sha256: String,
}

/// A member of the cluster as `/v1/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub name: String,
    pub api_addr: String,
    pub peer_addr: String,
    pub role: NodeRole,
    pub version: String,
    pub joined_at_ms: i64,
    /// SHA-256 of the executable the node last reported running ("" before it reported).
    #[serde(default)]
    pub binary_sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Joining,
    Learner,
    Voter,
    Removed,
}

/// `/v1/join`: a node token, the joiner's addresses and version, and a CSR for its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_id: String,
    pub secret: String,
    pub name: String,
    pub api_addr: String,
    pub peer_addr: String,
    pub version: String,
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: u64,
    pub cluster_id: String,
    pub cluster_name: String,
    pub cert_pem: String,
    pub ca_cert_pem: String,
    /// Every node can sign certificates, so a node holds the CA key (sent only over the
    /// pinned TLS session, stored 0600).
    pub ca_key_pem: String,
}

/// `/v1/backup`: with a passphrase, the CA key is sealed into the backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    #[serde(default)]
    pub passphrase: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_view_json_is_one_flat_object() {
        let v = StatusView {
            name: "a".into(),
            cluster_id: "c".into(),
            cluster_name: None,
            raft: NodeStatus {
                node_id: 1,
                leader_id: Some(1),
                term: 2,
                state: "Leader".into(),
                applied_index: 3,
                last_log_index: 4,
                snapshot_index: None,
                members: Vec::new(),
                fatal: None,
                fast_elections: 0,
                fast_election_term: None,
                peer_port: Default::default(),
            },
            ready: None,
            cert_expiry: None,
            builds: Vec::new(),
            resident_bytes: Some(1 << 20),
            open_fds: Some(12),
            tls_handshakes: Some(TlsHandshakes::default()),
            backup: Some(BackupStatus::default()),
        };
        let json = serde_json::to_value(&v).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "applied_index",
                "backup",
                "builds",
                "cert_expiry",
                "cluster_id",
                "cluster_name",
                "fast_election_term",
                "fast_elections",
                "fatal",
                "last_log_index",
                "leader_id",
                "members",
                "name",
                "node_id",
                "open_fds",
                "peer_port",
                "ready",
                "resident_bytes",
                "snapshot_index",
                "state",
                "term",
                "tls_handshakes"
            ]
        );
        let back: StatusView = serde_json::from_value(json).unwrap();
        assert_eq!((back.node_id, back.term, back.leader_id), (1, 2, Some(1)));
    }
}
