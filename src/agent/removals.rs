//! The agent's way back (`deployment abort --uninstall`): each sync's `AgentSync.removals`
//! lists the aborted deployments whose removal the cluster asks of this client. For each one
//! this agent installed (its `S/deployments.json`) and has not removed yet, the remove handler
//! of the payload kind, the effective configuration key `agent.handler.remove.<kind>` (set
//! only by a signed bundle, like install handlers), runs through the same runner as installs
//! (`deployments::run_sh`: `sh -c`, the same environment and timeout), and the outcome is
//! reported through `/v1/agent/results` as `removed` or `remove-failed` with the tail of the
//! handler's stderr. An `outpost-release` is never removed (the previous release is deployed
//! instead); no handler configured is a `remove-failed`. Outcomes are remembered in
//! `S/deployments.json` beside the install's: a removal is not run again once it succeeded,
//! and a failed one is tried again on later syncs, `MAX_ATTEMPTS` times in all.
//!
//! What to do about each listed deployment is decided by `decide` (pure, tested below);
//! `remove_step` carries it out.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use outpost_bundles::PayloadKind;

use crate::agent::deployments::{
    Job, LocalResult, MAX_ATTEMPTS, Removal, load_local, report_result, run_sh,
};
use crate::shared::client::ApiClient;
use crate::shared::text::tail;
use crate::wire::{DeploymentRecord, DeploymentStatus, RESULT_DETAIL_BYTES, ResultReport};

/// The configuration key naming the remove handler of payload kind `kind`.
pub fn remove_key(kind: &str) -> String {
    format!("agent.handler.remove.{kind}")
}

/// What the agent does about one deployment the cluster asks it to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: this agent did not install it, already removed it, or gave up on it.
    Nothing,
    /// Run this remove handler (`sh -c`).
    Run(String),
    /// Report `remove-failed` with this reason without running anything; `last` when trying
    /// again cannot change the answer (a release), so no later sync tries.
    Refuse { reason: String, last: bool },
}

/// What to do about `d` (listed in `AgentSync.removals`), given what this agent remembers of
/// it (`local`) and its effective configuration.
pub fn decide(
    local: Option<&LocalResult>,
    d: &DeploymentRecord,
    config: &BTreeMap<String, String>,
) -> Action {
    let Some(entry) = local else {
        return Action::Nothing;
    };
    if entry.status != Some(DeploymentStatus::Installed)
        || entry.removal == Some(Removal::Removed)
        || entry.remove_attempts >= MAX_ATTEMPTS
    {
        return Action::Nothing;
    }
    if d.kind == PayloadKind::OutpostRelease.as_str() {
        return Action::Refuse {
            reason: "a release cannot be uninstalled: deploy the previous release".into(),
            last: true,
        };
    }
    let key = remove_key(&d.kind);
    match config.get(&key) {
        Some(cmd) => Action::Run(cmd.clone()),
        None => Action::Refuse {
            reason: format!("no {key} configured"),
            last: false,
        },
    }
}

/// One sync's removals: for each deployment in `list` that `decide` says to act on, run its
/// remove handler (or refuse), report the outcome, remember it. Returns one line per
/// deployment acted on ("D tool@1: removed (...)").
pub async fn remove_step(
    client: &ApiClient,
    state_dir: &Path,
    config: &BTreeMap<String, String>,
    list: &[DeploymentRecord],
) -> Result<Vec<String>> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let state_path = state_dir.join("deployments.json");
    let mut local = load_local(&state_path);
    let mut lines = Vec::new();
    for d in list {
        let action = decide(local.get(&d.id), d, config);
        let (removal, detail, last) = match action {
            Action::Nothing => continue,
            Action::Refuse { reason, last } => (Removal::RemoveFailed, reason, last),
            Action::Run(cmd) => {
                // Where the install left the artifact; the handler may find it gone.
                let path = state_dir.join("artifacts").join(&d.sha256);
                let (ok, detail) = run_sh(config, &cmd, &Job::of(d), &path).await;
                let removal = if ok {
                    Removal::Removed
                } else {
                    Removal::RemoveFailed
                };
                (removal, detail, false)
            }
        };
        let report = ResultReport {
            deployment_id: d.id.clone(),
            status: removal.status(),
            detail: tail(&detail, RESULT_DETAIL_BYTES),
        };
        report_result(client, &report).await?;
        if let Some(entry) = local.get_mut(&d.id) {
            entry.removal = Some(removal);
            entry.remove_attempts = if last {
                MAX_ATTEMPTS
            } else {
                entry.remove_attempts + 1
            };
        }
        lines.push(format!(
            "{} {}@{}: {} ({})",
            d.id,
            d.artifact,
            d.version,
            removal.as_str(),
            detail.lines().last().unwrap_or("")
        ));
        outpost_certs::write_public_file(&state_path, &serde_json::to_vec_pretty(&local)?)?;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(kind: &str) -> DeploymentRecord {
        DeploymentRecord {
            id: "d1".into(),
            artifact: "tool".into(),
            version: 1,
            kind: kind.into(),
            sha256: "ab".repeat(32),
            size: 3,
            bundle_id: "b".into(),
            group: "g".into(),
            created_at_ms: 0,
            created_by: "admin:a".into(),
        }
    }

    fn entry(
        status: Option<DeploymentStatus>,
        removal: Option<Removal>,
        tries: u32,
    ) -> LocalResult {
        LocalResult {
            status,
            attempts: 1,
            removal,
            remove_attempts: tries,
        }
    }

    #[test]
    fn the_remove_handler_key_names_the_kind() {
        assert_eq!(remove_key("artifact"), "agent.handler.remove.artifact");
        assert_eq!(
            remove_key("outpost-release"),
            "agent.handler.remove.outpost-release"
        );
    }

    #[test]
    fn what_to_remove_given_local_state() {
        use DeploymentStatus::{Failed, Installed};
        let with = BTreeMap::from([(
            "agent.handler.remove.artifact".to_string(),
            "rm -f /opt/tool".to_string(),
        )]);
        let without =
            BTreeMap::from([("agent.handler.artifact".to_string(), "install".to_string())]);
        let for_release = BTreeMap::from([(
            "agent.handler.remove.outpost-release".to_string(),
            "x".to_string(),
        )]);
        let run = Action::Run("rm -f /opt/tool".into());
        let no_handler = Action::Refuse {
            reason: "no agent.handler.remove.artifact configured".into(),
            last: false,
        };
        let release = Action::Refuse {
            reason: "a release cannot be uninstalled: deploy the previous release".into(),
            last: true,
        };
        let cases: Vec<(&str, Option<LocalResult>, &str, &BTreeMap<_, _>, Action)> = vec![
            ("never seen here", None, "artifact", &with, Action::Nothing),
            (
                "never installed",
                Some(entry(None, None, 0)),
                "artifact",
                &with,
                Action::Nothing,
            ),
            (
                "its install failed",
                Some(entry(Some(Failed), None, 0)),
                "artifact",
                &with,
                Action::Nothing,
            ),
            (
                "installed",
                Some(entry(Some(Installed), None, 0)),
                "artifact",
                &with,
                run.clone(),
            ),
            (
                "already removed",
                Some(entry(Some(Installed), Some(Removal::Removed), 1)),
                "artifact",
                &with,
                Action::Nothing,
            ),
            (
                "a failed removal is tried again",
                Some(entry(Some(Installed), Some(Removal::RemoveFailed), 2)),
                "artifact",
                &with,
                run,
            ),
            (
                "until it has been tried MAX_ATTEMPTS times",
                Some(entry(
                    Some(Installed),
                    Some(Removal::RemoveFailed),
                    MAX_ATTEMPTS,
                )),
                "artifact",
                &with,
                Action::Nothing,
            ),
            (
                "no remove handler",
                Some(entry(Some(Installed), None, 0)),
                "artifact",
                &without,
                no_handler,
            ),
            (
                "a release, even with a handler for its kind",
                Some(entry(Some(Installed), None, 0)),
                "outpost-release",
                &for_release,
                release,
            ),
        ];
        for (what, local, kind, config, want) in cases {
            assert_eq!(decide(local.as_ref(), &dep(kind), config), want, "{what}");
        }
    }

    #[test]
    fn local_state_of_an_older_agent_reads_without_removals() {
        let old = r#"{"d1":{"status":"installed","attempts":1}}"#;
        let read: BTreeMap<String, LocalResult> = serde_json::from_str(old).expect("old file");
        assert_eq!(
            read.get("d1"),
            Some(&entry(Some(DeploymentStatus::Installed), None, 0))
        );
        // An entry without a removal is written as before (an older binary reads it back).
        let written = serde_json::to_string(&read).expect("encode");
        assert_eq!(written, old);
        let removed = entry(Some(DeploymentStatus::Installed), Some(Removal::Removed), 1);
        let text = serde_json::to_string(&removed).expect("encode");
        assert!(text.contains(r#""removal":"removed""#), "{text}");
    }

    #[tokio::test]
    async fn a_remove_handler_runs_with_the_job_in_its_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("seen");
        let cmd = format!(
            "echo \"$OUTPOST_DEPLOYMENT $OUTPOST_ARTIFACT_NAME $OUTPOST_ARTIFACT_VERSION\" > {}; echo gone >&2",
            out.display()
        );
        let d = dep("artifact");
        let (ok, detail) = run_sh(&BTreeMap::new(), &cmd, &Job::of(&d), dir.path()).await;
        assert!(ok, "{detail}");
        assert_eq!(detail, "handler exit 0 gone");
        let seen = std::fs::read_to_string(&out).expect("the handler wrote");
        assert_eq!(seen.trim(), "d1 tool 1");
        let (ok, detail) = run_sh(
            &BTreeMap::new(),
            "echo nope >&2; exit 3",
            &Job::of(&d),
            dir.path(),
        )
        .await;
        assert_eq!((ok, detail.as_str()), (false, "handler exit 3: nope"));
    }
}
