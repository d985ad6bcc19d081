//! The audit log as the CLI reads it: records (`/v1/audit`) and the chain check of every
//! member (`/v1/audit/verify`).

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
}

/// Result of walking the audit hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditCheck {
    Intact {
        records: u64,
    },
    /// `seq` is the first record that does not verify (last seq + 1 when records are missing
    /// at the end of the chain).
    Broken {
        seq: u64,
    },
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
