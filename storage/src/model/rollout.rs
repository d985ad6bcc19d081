//! Boundary types of rollouts (format 8): who a deployment targets (`Selector`), how it moves
//! (`RolloutSpec`, `RolloutStep`, `RolloutState`, `FailureLimit`), where it stands
//! (`RolloutRecord`, `RolloutStatus`) and what a preview shows (`Plan`).
//!
//! A deployment made by the older `CreateDeployment` / `CreateReleaseDeployment` has no row of
//! its own and reads as `RolloutRecord::plain`: its group, one phase of 100 %, running, no
//! windows, no brake. The pure rules over these types live in `crate::rollout`.

use serde::{Deserialize, Serialize};

use super::{DeploymentRecord, HANDLER_KEY_PREFIX};

/// Configuration keys of the rollout policy (`deploy.approval_above`): signed bundles only.
pub const DEPLOY_KEY_PREFIX: &str = "deploy.";
/// The site's IANA time zone, which rollout windows are read in: signed bundles only.
pub const SITE_TIMEZONE_KEY: &str = "site.timezone";
/// More clients than this in a rollout's plan (or `all`) makes it wait for a second person.
pub const APPROVAL_ABOVE_KEY: &str = "deploy.approval_above";

/// Configuration keys of the health checks agents run at each sync (`agent.check.cmd.NAME`
/// runs a command): set only by signed bundles, like handlers.
pub const CHECK_KEY_PREFIX: &str = "agent.check.";
/// Why a leader refuses a forwarded `SetConfig` of a `signed_only_key`.
pub const SIGNED_ONLY_WHY: &str = "agent.handler.*, agent.check.*, deploy.*, retention.* and \
     site.timezone are set only by a signed bundle";

/// Whether `key` is set only through a signed bundle's config payload, never by `SetConfig`
/// from the API: what agents run (handlers and health checks), the rollout policy and the
/// clock it is read on, and the retention policy (what history the cluster deletes).
pub fn signed_only_key(key: &str) -> bool {
    key.starts_with(HANDLER_KEY_PREFIX)
        || key.starts_with(CHECK_KEY_PREFIX)
        || key.starts_with(DEPLOY_KEY_PREFIX)
        || key.starts_with(crate::retention::RETENTION_KEY_PREFIX)
        || key == SITE_TIMEZONE_KEY
}

/// Which clients a deployment targets. Within one kind any term may match; across kinds all
/// must; an exclusion wins. A kind with no term does not constrain. `groups` may name `all`
/// (every client). Revoked clients never match (the reader leaves them out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub groups: Vec<String>,
    pub labels: Vec<String>,
    /// `(dotted path, value)`, matched by `rollout::fact_matches`.
    pub facts: Vec<(String, String)>,
    pub clients: Vec<String>,
    pub exclude_labels: Vec<String>,
    pub exclude_clients: Vec<String>,
}

/// How many failures a rollout tolerates before it halts: a count, or a percent of the
/// clients it reached (targeted clients in the open phases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureLimit {
    Count(u32),
    Percent(u8),
}

/// What `CreateRollout` carries: the payload to deploy and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// The deployment id (the proposer picks it).
    pub id: String,
    /// `artifact` or `outpost-release`.
    pub kind: String,
    /// The payload's name in its bundle.
    pub name: String,
    /// None = the newest imported one.
    pub version: Option<u64>,
    pub selector: Selector,
    /// Cumulative percents, strictly increasing, the last one 100, at most 10.
    pub phases: Vec<u8>,
    /// How long a phase runs (inside windows) before the next one opens.
    pub soak_ms: u64,
    pub max_failures: FailureLimit,
    /// `DAYS HH:MM-HH:MM` texts (`rollout::Windows::parse`); empty = always open.
    pub windows: Vec<String>,
    /// Not before this time (the rollout waits in `scheduled`).
    pub start_at_ms: Option<i64>,
}

/// One transition of a rollout (`Command::RolloutStep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutStep {
    Approve,
    Start,
    Pause,
    Resume,
    /// `uninstall`: clients that installed it run the kind's remove handler.
    Abort {
        uninstall: bool,
    },
    /// Opens phase k (0-based index; k = current phase + 1).
    OpenPhase(u32),
    Finish,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    WaitingApproval,
    Scheduled,
    Running,
    Paused,
    Halted,
    Aborted,
    Done,
}

/// A rollout as stored (or, for a plain deployment, as it reads: `RolloutRecord::plain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub deployment_id: String,
    pub selector: Selector,
    pub phases: Vec<u8>,
    pub soak_ms: u64,
    pub max_failures: FailureLimit,
    pub windows: Vec<String>,
    pub start_at_ms: Option<i64>,
    pub state: RolloutState,
    /// Index of the highest open phase (0-based).
    pub phase: u32,
    pub phase_opened_at_ms: i64,
    /// The brake's allowance, computed when the current phase opened.
    pub allowed_failures: u64,
    /// Failures the operator has seen (set by `resume` from `halted`): only failures above it
    /// count against `allowed_failures`.
    pub failure_base: u64,
    /// Why it is in its state (a halt's reason, the last step's reason).
    pub reason: String,
    pub approved_by: Option<String>,
    pub uninstall: bool,
}

/// A preview of a selector: every targeted client, by phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Every targeted client (seen or not).
    pub count: u64,
    pub phases: Vec<PlanPhase>,
    /// Targeted clients not seen for more than a day (sorted), listed in no phase.
    pub unseen: Vec<String>,
}

/// One phase of a plan: its cumulative percent and its seen targeted clients (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPhase {
    pub percent: u8,
    pub clients: Vec<String>,
}

/// The counts the leader's decisions need (`rollout::next_step`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Targeted clients whose latest result is `failed`.
    pub failures: u64,
    pub targeted_in_open_phases: u64,
    pub installed_in_open_phases: u64,
    /// Targeted clients of the open phases, seen within a day, with no result yet: the next
    /// phase waits for them (a machine silent for longer does not hold the rollout).
    pub awaited_in_open_phases: u64,
    pub targeted: u64,
    pub installed: u64,
}

/// Per phase of a rollout: how many targeted clients it holds and where they stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub percent: u8,
    pub clients: u64,
    pub installed: u64,
    pub failed: u64,
    pub pending: u64,
    pub outside_window: u64,
    pub waiting: u64,
    pub removed: u64,
    pub remove_failed: u64,
}

/// One targeted client of a rollout (or one that reported a result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientProgress {
    pub id: String,
    /// 1-based, as the status view shows it.
    pub phase: u32,
    /// `installed`, `failed`, `removed`, `remove-failed`, `pending`, `outside-window`, `waiting`.
    pub status: String,
    /// The handler's output for a result.
    pub detail: String,
    /// When the result was reported.
    pub at_ms: Option<i64>,
}

/// A rollout and where every targeted client stands (`Reader::rollout_status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub deployment: DeploymentRecord,
    pub rollout: RolloutRecord,
    pub phases: Vec<PhaseCounts>,
    pub clients: Vec<ClientProgress>,
    /// Whether a window is open at the time asked (site time zone).
    pub window_open: bool,
    pub progress: Progress,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::WaitingApproval => "waiting-approval",
            RolloutState::Scheduled => "scheduled",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Aborted => "aborted",
            RolloutState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<RolloutState> {
        [
            RolloutState::WaitingApproval,
            RolloutState::Scheduled,
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Halted,
            RolloutState::Aborted,
            RolloutState::Done,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RolloutStep {
    /// The step as the refusal "deployment D is STATE: cannot STEP" names it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolloutStep::Approve => f.write_str("approve"),
            RolloutStep::Start => f.write_str("start"),
            RolloutStep::Pause => f.write_str("pause"),
            RolloutStep::Resume => f.write_str("resume"),
            RolloutStep::Abort { uninstall: false } => f.write_str("abort"),
            RolloutStep::Abort { uninstall: true } => f.write_str("abort --uninstall"),
            RolloutStep::OpenPhase(k) => write!(f, "open phase {}", u64::from(*k) + 1),
            RolloutStep::Finish => f.write_str("finish"),
        }
    }
}

impl FailureLimit {
    /// `"2"` (a count) or `"10%"` (a percent, 0-100). Err names what is wrong.
    pub fn parse(s: &str) -> Result<FailureLimit, String> {
        if s.len() > 16 {
            return Err(format!(
                "max failures is {} bytes: give a count (2) or a percent (10%)",
                s.len()
            ));
        }
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(FailureLimit::Percent(p)),
                _ => Err(format!("max failures {s:?}: a percent must be 0% to 100%")),
            }
        } else {
            t.parse::<u32>()
                .map(FailureLimit::Count)
                .map_err(|_| format!("max failures {s:?}: give a count (2) or a percent (10%)"))
        }
    }

    /// How many failures this limit allows among `reach` clients: Count(n) → n,
    /// Percent(p) → floor(p × reach / 100).
    pub fn allowed(self, reach: u64) -> u64 {
        match self {
            FailureLimit::Count(n) => u64::from(n),
            FailureLimit::Percent(p) => u64::from(p).saturating_mul(reach) / 100,
        }
    }
}

impl Default for FailureLimit {
    /// No brake: every reached client may fail (what a plain deployment has always done).
    fn default() -> FailureLimit {
        FailureLimit::Percent(100)
    }
}

impl std::fmt::Display for FailureLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureLimit::Count(n) => write!(f, "{n}"),
            FailureLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl RolloutRecord {
    /// How a deployment without a rollout row reads: its group, one phase of 100 % open
    /// since it was created, running, no windows, no brake.
    pub fn plain(deployment: &DeploymentRecord) -> RolloutRecord {
        RolloutRecord {
            deployment_id: deployment.id.clone(),
            selector: Selector {
                groups: vec![deployment.group.clone()],
                ..Selector::default()
            },
            phases: vec![100],
            soak_ms: 0,
            max_failures: FailureLimit::default(),
            windows: vec![],
            start_at_ms: None,
            state: RolloutState::Running,
            phase: 0,
            phase_opened_at_ms: deployment.created_at_ms,
            allowed_failures: 0,
            failure_base: 0,
            reason: String::new(),
            approved_by: None,
            uninstall: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for s in [
            RolloutState::WaitingApproval,
            RolloutState::Scheduled,
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Halted,
            RolloutState::Aborted,
            RolloutState::Done,
        ] {
            assert_eq!(RolloutState::parse(s.as_str()), Some(s));
        }
        assert_eq!(RolloutState::parse("stopped"), None);
        // (text, parsed)
        let cases = [
            ("2", Ok(FailureLimit::Count(2))),
            (" 0 ", Ok(FailureLimit::Count(0))),
            ("10%", Ok(FailureLimit::Percent(10))),
            ("100%", Ok(FailureLimit::Percent(100))),
            ("101%", Err(())),
            ("-1", Err(())),
            ("two", Err(())),
            ("%", Err(())),
            ("11111111111111111111", Err(())),
        ];
        for (text, want) in cases {
            let got = FailureLimit::parse(text);
            assert_eq!(got.clone().map_err(drop), want, "{text}: {got:?}");
            if let Ok(limit) = got {
                assert_eq!(FailureLimit::parse(&limit.to_string()), Ok(limit));
            }
        }
    }

    /// The rollout policy and the site's clock are set like handlers: by signed bundles only,
    /// so a peer's or an admin's `SetConfig` of them is refused at the leader.
    #[test]
    fn signed_only_keys() {
        use crate::model::{Command, Scope};
        // (key, signed only)
        let cases = [
            ("agent.handler.install.artifact", true),
            ("agent.check.cmd.flag", true),
            ("agent.check.disk", true),
            ("agent.checkx", false),
            ("deploy.approval_above", true),
            ("deploy.anything", true),
            ("site.timezone", true),
            ("retention.audit", true),
            ("retention.inventory_history", true),
            ("retention.results", true),
            ("retentionx", false),
            ("site.name", false),
            ("deployx", false),
            ("agent.interval", false),
        ];
        for (key, want) in cases {
            assert_eq!(signed_only_key(key), want, "{key}");
            let set = Command::SetConfig {
                scope: Scope::Global,
                key: key.into(),
                value: "5".into(),
            };
            assert_eq!(set.refused_from_peers().is_some(), want, "{key}");
            assert_eq!(
                set.refused_from_peer(7, "admin:ops").is_some(),
                want,
                "{key}"
            );
        }
    }

    #[test]
    fn allowed_failures_table() {
        // (limit, reach, allowed)
        let cases = [
            (FailureLimit::Count(2), 0, 2),
            (FailureLimit::Count(2), 100, 2),
            (FailureLimit::Percent(10), 19, 1),
            (FailureLimit::Percent(10), 20, 2),
            (FailureLimit::Percent(0), 20, 0),
            (FailureLimit::Percent(100), 7, 7),
        ];
        for (limit, reach, want) in cases {
            assert_eq!(limit.allowed(reach), want, "{limit} of {reach}");
        }
    }
}
