//! The request and response bodies of the API: what the node's routes (`api`), the CLI, the
//! agent and the benchmarks say to each other. Plain data with serde derives and no behaviour;
//! changing a field here changes the protocol, so it must stay readable by the other side.
//!
//! Types that the storage crate already defines (records such as `ClientRecord`) travel as
//! they are and are not repeated here.

use outpost_bundles::TrustDocument;
use outpost_raft::NodeStatus;
use outpost_storage::{BundleRecord, DeploymentRecord, DeploymentResult, DeploymentStatus, Scope};
use serde::{Deserialize, Serialize};

// ---- cluster: status, tokens, join, configuration ----

/// Whether this node serves a committing cluster, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
}

/// `audit verify`: this node's chain, and every other member's chain compared with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerifyView {
    pub node_id: u64,
    pub local: outpost_storage::AuditChain,
    /// Members that answered, each with whether its hash at `at_seq` equals ours there.
    pub peers: Vec<AuditPeerView>,
    /// Every chain intact and every answering member agrees.
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPeerView {
    /// The member's own chain recomputed, and its hash at our last verified record.
    pub chain: Option<outpost_storage::AuditChain>,
    pub node_id: u64,
    /// None when the member did not answer (not compared).
    pub agrees: Option<bool>,
    pub error: Option<String>,
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

/// The Raft fields read as the view's own (`status.leader_id`), as they appear in its JSON.
impl std::ops::Deref for StatusView {
    type Target = NodeStatus;
    fn deref(&self) -> &NodeStatus {
        &self.raft
    }
}

/// `token create`: kind (`node` or `client`), lifetime, uses (None: unlimited), groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub kind: String,
    pub ttl_secs: u64,
    pub uses: Option<u32>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub id: String,
    pub expires_at_ms: i64,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigSetRequest {
    pub key: String,
    pub value: String,
    pub scope: Scope,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigSetResponse {
    pub version: u64,
}

// ---- the web console: login links, operator accounts, sessions ----

/// Rows on one page of a console list (clients, audit, failures).
pub const CONSOLE_PAGE: u32 = 50;

/// `console login`: a one-time sign-in link for `user` (an operator's name, as the audit
/// log will show it: `console:NAME`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleLinkRequest {
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleLinkResponse {
    /// `https://API_ADDR/login/link/ID.SECRET`, usable once.
    pub url: String,
    pub expires_at_ms: i64,
}

/// `console user add`: the account's name and an Argon2id PHC hash made by the CLI (the
/// password itself never reaches the node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleUserRequest {
    pub name: String,
    pub password_hash: String,
}

/// An operator account as listed: never its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleUserView {
    pub name: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

/// A console session as listed: never its secret or the secret's hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleSessionView {
    pub id: String,
    pub user: String,
    /// `link` or `password`.
    pub via: String,
    pub started_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_seen_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// Open now: not ended, not past its end, not idle too long.
    pub active: bool,
}

// ---- clients: enrollment and inventory ----

/// `/v1/enroll`: a client token, the host name the agent reports, and a CSR for its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token_id: String,
    pub secret: String,
    pub hostname: String,
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub client_id: String,
    pub cluster_id: String,
    pub cert_pem: String,
    pub ca_cert_pem: String,
    pub groups: Vec<String>,
    /// API addresses of the cluster's members when enrolled (the agent's first node list).
    pub servers: Vec<String>,
    /// The cluster's bundle trust, which the agent pins to verify bundles it installs from a
    /// file (`outpost agent install`). None when the cluster pins no trust (or is older).
    #[serde(default)]
    pub bundle_trust: Option<AgentTrust>,
}

/// The cluster's bundle trust as an agent pins it (at enrollment, then from
/// `/v1/agent/trust` at each sync whenever `version` grew).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTrust {
    pub version: u64,
    pub trust: TrustDocument,
}

/// `GET /v1/agent/sync`: everything an agent reads at a sync, in one request on the sync's
/// connection (nodes from before it answer 404; the agent then asks `/v1/agent/config`,
/// `/v1/agent/trust` and `/v1/agent/assignments`, which stay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSync {
    /// Its effective configuration, as `/v1/agent/config`.
    pub config: std::collections::BTreeMap<String, String>,
    /// The cluster's bundle trust, as `/v1/agent/trust`.
    pub trust: Option<AgentTrust>,
    /// Its deployments, as `/v1/agent/assignments`.
    pub assignments: Vec<outpost_storage::Assignment>,
}

/// One client found by `inventory query`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryMatch {
    pub client_id: String,
    pub hostname: String,
    pub groups: Vec<String>,
    pub updated_at_ms: i64,
}

/// `inventory show`: a client's latest facts and what changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryView {
    pub inventory: outpost_storage::InventoryRecord,
    pub history: Vec<outpost_storage::InventoryChange>,
}

// ---- bundles ----

/// What `bundle import` needs from the replicated state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleContext {
    pub cluster_id: String,
    pub trust_version: u64,
    pub trust: TrustDocument,
    pub channels: Vec<(String, u64, String)>,
    /// Unix seconds: max of the voters' median clock and the newest accepted `created`.
    pub time_floor: i64,
}

/// `bundle list`: every bundle with its payloads and which nodes hold each blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleList {
    /// Members of the cluster (id, name), to read `held_by` against.
    pub nodes: Vec<(u64, String)>,
    pub bundles: Vec<BundleRecord>,
}

/// The answer to a commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleCommitted {
    /// False when the very same bundle was already imported.
    pub imported: bool,
    /// The release (sha256) whose rolling upgrade the bundle started or continues.
    #[serde(default)]
    pub roll: Option<String>,
    /// Why the release's roll did not start (e.g. another roll is running).
    #[serde(default)]
    pub roll_refused: Option<String>,
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

/// `POST /v1/upgrade`: roll the nodes to the release of an imported bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeStart {
    pub bundle_id: String,
}

/// `GET /v1/upgrade`: the current or last roll and what every member runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeView {
    pub roll: Option<outpost_storage::RollRecord>,
    pub nodes: Vec<MemberBuild>,
}

/// What `bundle import` posts to commit a bundle it stored: the exact signed bytes. The node
/// verifies them against the trust in its state, finds every payload in its blob store,
/// reads the `config` payloads, and proposes one `ImportSignedBundle`, which every node
/// verifies again in `apply`. Nothing in the body is taken on trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleCommit {
    /// base64 of the manifest bytes.
    pub manifest: String,
    /// base64 of the signature document bytes.
    pub signatures: String,
    /// Start the rolling upgrade of the nodes to the bundle's `outpost-release` payload, if it
    /// has one (`bundle import --no-roll` leaves the nodes alone: the release is then only
    /// deployable to agents, and importing it again rolls the nodes).
    #[serde(default = "roll_by_default")]
    pub roll: bool,
}

fn roll_by_default() -> bool {
    true
}

/// Largest `config` payload of a bundle, in bytes: `bundle import` refuses a larger one before
/// it asks the node, and the node refuses it again.
pub const MAX_CONFIG_PAYLOAD: u64 = 1 << 20;

// ---- deployments and certificate renewal ----

/// `deployment create`: an artifact (name, and channel version or the newest) for a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentRequest {
    pub artifact: String,
    pub version: Option<u64>,
    pub group: String,
    pub id: Option<String>,
}

/// `deployment status ID`: the deployment, each client's result, and the clients of the
/// group that have not reported yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentStatusView {
    pub deployment: DeploymentRecord,
    pub results: Vec<DeploymentResult>,
    pub pending: Vec<String>,
}

/// Longest result detail a node keeps (the tail of the handler's stderr); the agent sends
/// no more.
pub const RESULT_DETAIL_BYTES: usize = 2000;

/// An agent's result for one deployment (`/v1/agent/results`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultReport {
    pub deployment_id: String,
    pub status: DeploymentStatus,
    pub detail: String,
}

/// A client certificate renewal (`/v1/agent/renew`): a CSR for a new key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewResponse {
    pub cert_pem: String,
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
