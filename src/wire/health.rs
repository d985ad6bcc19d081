//! What `outpost doctor`, the console's overview and the nodes say about the site's health:
//! one node's report of itself to another ([`NodeHealth`], the `health` peer ask), and the
//! findings of a check of the whole site ([`DoctorReport`], `GET /v1/doctor`).

use serde::{Deserialize, Serialize};

/// How bad a finding is. Ordered: `Ok < Warning < Problem`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Ok,
    Warning,
    Problem,
}

impl Severity {
    /// `outpost doctor`'s exit code for a report whose worst finding is this: 0, 1 or 2.
    pub fn exit_code(self) -> i32 {
        match self {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Problem => 2,
        }
    }
}

/// One thing a check found: what it is about, a sentence that explains it, and what to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// The rule that decided it (`outpost_health::RULES` name, e.g. `NodeNotReady`), so a
    /// finding and the Prometheus alert of the same rule carry the same name.
    pub rule: String,
    pub severity: Severity,
    /// What it is about, e.g. `node 2 (n2)`, `certificate of admin alice`, `clients`.
    pub subject: String,
    /// One sentence: what is the matter (or that all is well).
    pub text: String,
    /// What the operator should do; empty when nothing.
    #[serde(default)]
    pub action: String,
}

/// `GET /v1/doctor`: every finding of one check of the site, worst first, as the node that
/// answered saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoctorReport {
    /// The node that gathered the findings.
    pub node_id: u64,
    pub checked_at_ms: i64,
    pub findings: Vec<Finding>,
}

impl DoctorReport {
    /// The worst severity among the findings (`Ok` when there are none).
    pub fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }
}

/// Bytes a node's data directory holds, by part, and its file system's room.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskUse {
    pub raft_db_bytes: u64,
    pub state_db_bytes: u64,
    pub blobs_bytes: u64,
    pub snapshots_bytes: u64,
    /// Free bytes on the data directory's file system (for an unprivileged user), and its size.
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// What one node reports of itself to another (peer ask `health`), as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeHealth {
    pub node_id: u64,
    /// `CARGO_PKG_VERSION` of its binary.
    pub version: String,
    pub ready: bool,
    /// Why it is not ready (empty when it is).
    #[serde(default)]
    pub not_ready_reason: String,
    pub disk: DiskUse,
    /// Growth of the data directory in bytes per day, from the samples the node took since it
    /// started (None until it has at least an hour of them).
    #[serde(default)]
    pub growth_bytes_per_day: Option<f64>,
    /// Not-after (unix seconds) of the node's own certificate.
    pub node_cert_not_after: i64,
    /// When this node last served a backup (unix ms), if it ever did.
    #[serde(default)]
    pub last_backup_ms: Option<i64>,
    /// The interval of this node's backup schedule in seconds (None: no schedule, or an older
    /// node). Doctor warns when the newest backup is older than twice the shortest.
    #[serde(default)]
    pub backup_every_secs: Option<u64>,
    /// The node's clock when it answered (unix ms).
    pub now_ms: i64,
    /// Its data directory's free space is below the floor (min(2 %, 1 GiB) of the file
    /// system): it refuses operator writes (HTTP 507). False from a node before 0.4.0.
    #[serde(default)]
    pub below_floor: bool,
    /// That floor in bytes (0: unknown).
    #[serde(default)]
    pub floor_bytes: u64,
}
