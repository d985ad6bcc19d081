//! Clients and what their agents say to a node: enrollment, the sync (configuration, bundle
//! trust, assignments), certificate renewal, and the client list of the CLI.

use outpost_bundles::TrustDocument;
use serde::{Deserialize, Serialize};

use super::deployments::{Assignment, DeploymentRecord};

/// An enrolled client (a managed machine), as `client list` and `client show` read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub id: String,
    pub hostname: String,
    pub groups: Vec<String>,
    pub cert_serial: String,
    pub enrolled_at_ms: i64,
    pub revoked: bool,
    pub last_seen: Option<i64>,
    pub last_seen_node: Option<u64>,
    /// The operator's labels (sorted); newer than the record.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The names of the health checks failing in the client's latest facts (sorted); newer
    /// than the record (an older node sends none; none is not sent, so a record without
    /// failing checks reads as it did before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<String>,
}

/// `client label`: add and remove labels on clients named by id, or on every client whose
/// facts match `where_fact` (`PATH=VALUE`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabelRequest {
    #[serde(default)]
    pub clients: Vec<String>,
    #[serde(default)]
    pub where_fact: Option<String>,
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// What `client label` changed: the clients it labelled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelResponse {
    pub clients: Vec<String>,
}

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
    pub assignments: Vec<Assignment>,
    /// Deployments aborted with `--uninstall` that this client installed: it runs their
    /// remove handler and reports `removed` or `remove-failed`. Newer than the sync.
    #[serde(default)]
    pub removals: Vec<DeploymentRecord>,
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
