//! Signed bundles as `bundle import` and `bundle list` see them, and the rolling upgrade of the
//! nodes to a bundle's release (`/v1/upgrade`).

use outpost_bundles::TrustDocument;
use serde::{Deserialize, Serialize};

use super::cluster::MemberBuild;

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

/// A committed bundle with its payloads and which nodes hold each blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    pub id: String,
    pub manifest_sha256: String,
    pub bundle_type: BundleType,
    pub channel: Option<String>,
    pub version: u64,
    pub created: i64,
    pub expires: i64,
    pub signers: Vec<String>,
    pub imported_at_ms: i64,
    pub imported_by: String,
    pub node_id: u64,
    pub payloads: Vec<PayloadHolding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleType {
    Content,
    Trust,
}

impl BundleType {
    /// The name as the JSON carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            BundleType::Content => "content",
            BundleType::Trust => "trust",
        }
    }
}

/// A payload and the nodes that reported holding its blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadHolding {
    pub name: String,
    /// `artifact`, `config` or `outpost-release`.
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    pub held_by: Vec<u64>,
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

/// `POST /v1/upgrade`: roll the nodes to the release of an imported bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeStart {
    pub bundle_id: String,
}

/// `GET /v1/upgrade`: the current or last roll and what every member runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeView {
    pub roll: Option<RollRecord>,
    pub nodes: Vec<MemberBuild>,
}

/// The rolling upgrade (at most one at a time; the last one is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollRecord {
    pub bundle_id: String,
    /// The payload's name in its bundle.
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// `running`, `done` or `stopped`.
    pub state: String,
    /// The node asked to switch now.
    pub node: Option<u64>,
    /// Why it stopped.
    pub reason: String,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
}
