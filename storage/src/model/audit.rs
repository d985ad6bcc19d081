//! The audit log's boundary types: a record, the chain's base (a checkpoint), a point of the
//! chain (a verified mark) and what a check of the chain found.

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
/// The fields after `hash` came with 0.4 (serde defaults: an older node's answer decodes as a
/// full check from genesis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChain {
    pub check: AuditCheck,
    pub at_seq: u64,
    pub hash: Option<String>,
    /// The chain's base: the newest checkpoint (None: genesis).
    #[serde(default)]
    pub base: Option<AuditCheckpoint>,
    /// The last record proven (its seq and hash), when the chain is intact: the node's new
    /// verified mark.
    #[serde(default)]
    pub verified: Option<AuditMark>,
    /// Rows read by this check.
    #[serde(default)]
    pub walked: u64,
    /// True when the check started from the node's verified mark rather than the base.
    #[serde(default)]
    pub incremental: bool,
}

/// A point of the chain: a record's seq and hash (a verified mark, a checkpoint's head).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditMark {
    pub seq: u64,
    pub hash: String,
}

/// The newest row of `audit_checkpoints`: records 1..=seq moved out of the live table by a
/// compaction; `hash` is record seq's hash, from which the remaining chain is proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    pub seq: u64,
    pub hash: String,
    /// The time of record `seq`.
    pub record_at_ms: i64,
    /// When the compaction that wrote this row was proposed.
    pub compacted_at_ms: i64,
    /// Records this compaction removed.
    pub removed: u64,
}

/// An audit record with its link to the previous one (what an export file holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedAuditRecord {
    pub record: AuditRecord,
    pub prev_hash: String,
}

/// What one walk of the chain found (`Reader::verify_audit_since`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerify {
    pub check: AuditCheck,
    pub base: Option<AuditCheckpoint>,
    /// The last record proven, when intact (the caller's new mark).
    pub verified: Option<AuditMark>,
    /// Rows read.
    pub walked: u64,
    /// Started from the caller's mark (false: from the base).
    pub incremental: bool,
}

/// Result of walking the audit hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditCheck {
    /// `records` is the seq of the last record (the records since genesis, those moved out
    /// by compaction included).
    Intact { records: u64 },
    /// `seq` is the first record that does not verify (last seq + 1 when records are missing
    /// at the end of the chain).
    Broken { seq: u64 },
}
