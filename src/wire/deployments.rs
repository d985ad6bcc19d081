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

/// Which clients a deployment (or a `plan`) targets. Within one kind any term may match;
/// across kinds all must; an exclusion wins. Group `all` is every client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorArgs {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    /// `PATH=VALUE` (dotted path into the client's inventory facts).
    #[serde(default)]
    pub facts: Vec<String>,
    #[serde(default)]
    pub clients: Vec<String>,
    #[serde(default)]
    pub exclude_labels: Vec<String>,
    #[serde(default)]
    pub exclude_clients: Vec<String>,
}

impl SelectorArgs {
    /// No positive term (only exclusions, or nothing).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
            && self.labels.is_empty()
            && self.facts.is_empty()
            && self.clients.is_empty()
    }
}

/// `deployment create`: an artifact (name, and channel version or the newest) for a group
/// (as before) or a selector, with optional phases, soak, brake, windows and start time.
/// Every field after `id` is newer: an older CLI sends only `group`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeploymentRequest {
    pub artifact: String,
    pub version: Option<u64>,
    /// A group, as `--group` before selectors (empty: none; the selector names the target).
    #[serde(default)]
    pub group: String,
    pub id: Option<String>,
    #[serde(default)]
    pub selector: SelectorArgs,
    /// Cumulative percents, e.g. `5%,25%,100%`.
    #[serde(default)]
    pub phases: Option<String>,
    /// How long a phase soaks inside windows before the next opens (humantime: `30m`).
    #[serde(default)]
    pub soak: Option<String>,
    /// The brake: `2` failures, or `10%` of the clients reached.
    #[serde(default)]
    pub max_failures: Option<String>,
    /// `DAYS HH:MM-HH:MM` in the site's time zone; empty: always open.
    #[serde(default)]
    pub windows: Vec<String>,
    /// RFC 3339; nothing installs before it.
    #[serde(default)]
    pub start_at: Option<String>,
}

/// What `POST /v1/deployments` answers: the record (as before, so an older CLI reads it) and
/// the rollout's state (`running`, `scheduled`, `waiting-approval`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedDeployment {
    #[serde(flatten)]
    pub deployment: DeploymentRecord,
    #[serde(default)]
    pub state: String,
}

/// `deployment plan`: the clients a selector reaches, split as a deployment with `id` (or a
/// fresh one) and `phases` would split them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanRequest {
    #[serde(default)]
    pub selector: SelectorArgs,
    /// Same as a `--group` in the selector (what `deployment create --group` sends as `group`).
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub phases: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

/// The preview: every targeted client counted; the clients seen within a day listed by
/// phase; the others listed apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    pub count: u64,
    pub phases: Vec<PlanPhaseView>,
    pub unseen: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPhaseView {
    pub percent: u8,
    pub clients: Vec<String>,
}

/// `deployment approve | pause | resume | abort ID`: why, and for abort whether clients that
/// installed it remove it again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepRequest {
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub uninstall: bool,
}

/// What a step answers: the deployment and the state the step left it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResponse {
    pub id: String,
    pub state: String,
}

/// One phase of a rollout as `deployment status` counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseView {
    pub percent: u8,
    /// Targeted clients in this phase.
    pub clients: u64,
    pub installed: u64,
    pub failed: u64,
    pub pending: u64,
    pub outside_window: u64,
    pub waiting: u64,
    pub removed: u64,
    pub remove_failed: u64,
}

/// One targeted client of a rollout: its phase (1-based) and where it stands (`installed`,
/// `failed`, `removed`, `remove-failed`, `pending`, `outside-window`, `waiting`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientProgressView {
    pub id: String,
    pub phase: u32,
    pub status: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub at_ms: Option<i64>,
}

/// `deployment status ID`: the deployment, each client's result, and the clients of the
/// group that have not reported yet; and (newer) the rollout: its state, phase (1-based),
/// per-phase counts and per-client progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentStatusView {
    pub deployment: DeploymentRecord,
    pub results: Vec<DeploymentResult>,
    pub pending: Vec<String>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub phase: u32,
    #[serde(default)]
    pub phases: Vec<PhaseView>,
    #[serde(default)]
    pub clients: Vec<ClientProgressView>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub approved_by: Option<String>,
    #[serde(default)]
    pub windows: Vec<String>,
    #[serde(default)]
    pub window_open: bool,
    #[serde(default)]
    pub selector: SelectorArgs,
    #[serde(default)]
    pub soak_ms: u64,
    /// The brake as given (`2`, `10%`).
    #[serde(default)]
    pub max_failures: String,
    #[serde(default)]
    pub allowed_failures: u64,
    #[serde(default)]
    pub start_at_ms: Option<i64>,
    #[serde(default)]
    pub uninstall: bool,
}

/// Longest result detail a node keeps (the tail of the handler's stderr); the agent sends
/// no more.
pub const RESULT_DETAIL_BYTES: usize = 2000;

/// What an agent reports: an install's outcome, or (after `abort --uninstall`) a removal's.
/// Only `ResultReport` carries it: `Assignment.result` keeps `DeploymentStatus`, so what an
/// older agent decodes there never holds a value it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportStatus {
    Installed,
    Failed,
    Removed,
    RemoveFailed,
}

impl ReportStatus {
    /// The name as the JSON carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Installed => "installed",
            ReportStatus::Failed => "failed",
            ReportStatus::Removed => "removed",
            ReportStatus::RemoveFailed => "remove-failed",
        }
    }
}

impl From<DeploymentStatus> for ReportStatus {
    fn from(s: DeploymentStatus) -> Self {
        match s {
            DeploymentStatus::Installed => ReportStatus::Installed,
            DeploymentStatus::Failed => ReportStatus::Failed,
        }
    }
}

/// An agent's result for one deployment (`/v1/agent/results`): installed or failed, or for a
/// removal removed or remove-failed (a node from before removals refuses those two).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultReport {
    pub deployment_id: String,
    pub status: ReportStatus,
    pub detail: String,
}
