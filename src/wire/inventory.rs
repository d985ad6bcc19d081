//! Client inventory: what `inventory query` and `inventory show` read, and the report caps an
//! agent's upload must respect (`PUT /v1/agent/inventory`).

use serde::{Deserialize, Serialize};

/// Largest inventory report a node accepts, in bytes of JSON (the node's own rule; an `api/`
/// test holds the two equal).
pub const REPORT_MAX_FACTS_BYTES: usize = 1 << 20;

/// Most JSON values (facts) an inventory report may hold (as above).
pub const REPORT_MAX_FACTS: usize = 100_000;

/// A client's latest facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRecord {
    pub client_id: String,
    pub facts: serde_json::Value,
    pub facts_sha256: String,
    pub updated_at_ms: i64,
}

/// One change of a client's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryChange {
    pub client_id: String,
    pub at_ms: i64,
    pub facts_sha256: String,
    /// Top-level facts that were added, removed or changed.
    pub changed: Vec<String>,
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
    pub inventory: InventoryRecord,
    pub history: Vec<InventoryChange>,
}
