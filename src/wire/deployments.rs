//! Deployments: what the CLI creates and reads, what an agent is assigned, and the results it
//! reports back.

use serde::{Deserialize, Serialize};

/// An artifact assigned to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub artifact: String,
    pub version: u64,
    pub kind: String,
    pub sha256: String,
    pub size: u64,
    pub bundle_id: String,
    pub group: String,
    pub created_at_ms: i64,
    pub created_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    Installed,
    Failed,
}

impl DeploymentStatus {
    /// The name as the JSON carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Installed => "installed",
            DeploymentStatus::Failed => "failed",
        }
    }
}

/// One client's latest result for a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentResult {
    pub deployment_id: String,
    pub client_id: String,
    pub status: DeploymentStatus,
    pub detail: String,
    pub at_ms: i64,
    pub attempts: u64,
}

/// What a client is asked to install: a deployment and its own last result, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub deployment: DeploymentRecord,
    pub result: Option<DeploymentResult>,
}

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
