//! The audit log as the CLI reads it: records (`/v1/audit`), the chain check of every
//! member (`/v1/audit/verify`, incremental from each node's verified mark unless `full=true`)
//! and the chain's base (`/v1/audit/checkpoint`). The export file (`/v1/audit/export`) is
//! `shared::audit_file`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    /// "ok" or "rejected: <code>: <message>".
    pub outcome: String,
    /// Hex sha256 of the previous hash and this row's fields.
    pub hash: String,
}

/// A node's audit chain recomputed from its rows, and the hash it holds at `at_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChain {
    pub check: AuditCheck,
    pub at_seq: u64,
    pub hash: Option<String>,
    /// The chain's base: the newest checkpoint (None: genesis). Fields from here on came with
    /// 0.4; an older node's answer decodes with their defaults.
    #[serde(default)]
    pub base: Option<AuditCheckpoint>,
    /// The last record proven (the node's verified mark after this check), when intact.
    #[serde(default)]
    pub verified: Option<AuditMark>,
    /// Rows read by this check.
    #[serde(default)]
    pub walked: u64,
    /// The check started from the node's verified mark (false: from the base).
    #[serde(default)]
    pub incremental: bool,
}

/// A record of the chain: its seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditMark {
    pub seq: u64,
    pub hash: String,
}

/// The newest compaction's checkpoint: records 1..=seq moved out of the live log; the
/// remaining chain is proven from `hash` (record seq's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub seq: u64,
    pub hash: String,
    pub record_at_ms: i64,
    pub compacted_at_ms: i64,
    /// Records that compaction removed.
    pub removed: u64,
}

/// Result of walking the audit hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditCheck {
    /// `records`: the seq of the last record (records since genesis, compacted ones included).
    Intact { records: u64 },
    /// `seq` is the first record that does not verify (last seq + 1 when records are missing
    /// at the end of the chain).
    Broken { seq: u64 },
}

/// `audit verify`: this node's chain, and every other member's chain compared with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditVerifyView {
    pub node_id: u64,
    pub local: AuditChain,
    /// Members that answered, each with whether its hash at `at_seq` equals ours there.
    pub peers: Vec<AuditPeerView>,
    /// Every chain intact and every answering member agrees.
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPeerView {
    /// The member's own chain recomputed, and its hash at our last verified record.
    pub chain: Option<AuditChain>,
    pub node_id: u64,
    /// None when the member did not answer (not compared).
    pub agrees: Option<bool>,
    pub error: Option<String>,
}
