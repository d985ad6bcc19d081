//! The overview's alarms: the site's health findings above `Ok` (`health::findings`, the
//! very findings `outpost doctor` prints, so one rule set decides both), then two workflow
//! notices that are not health: rollouts waiting for approval and deployments that failed
//! on some clients. Pure, so the mapping is one table test; `overview` gathers and renders.

use outpost_storage::DeploymentProgress;

use crate::console::views::Alarm;
use crate::wire::{Finding, Severity};

/// Whole days from `now_ms` until `at` (unix seconds); negative once it has passed.
pub fn days_left(at: i64, now_ms: i64) -> i64 {
    (at - now_ms / 1000) / 86_400
}

/// The alarms, worst first as the findings come, then the notices: deployments waiting for
/// approval (by id), then each deployment's failures.
pub fn alarms(
    findings: &[Finding],
    waiting: &[String],
    deployments: &[DeploymentProgress],
) -> Vec<Alarm> {
    let mut out: Vec<Alarm> = findings
        .iter()
        .filter_map(|f| {
            let level = match f.severity {
                Severity::Ok => return None,
                Severity::Warning => "warn",
                Severity::Problem => "bad",
            };
            Some(Alarm {
                level,
                text: f.text.clone(),
                action: f.action.clone(),
            })
        })
        .collect();
    for id in waiting {
        out.push(Alarm {
            level: "warn",
            text: format!("Deployment {id} waits for approval by someone other than its creator."),
            action: String::new(),
        });
    }
    for p in deployments.iter().filter(|p| p.failed > 0) {
        let of = if p.deployment.group.is_empty() {
            "clients it targets".to_owned()
        } else {
            format!("clients of {}", p.deployment.group)
        };
        out.push(Alarm {
            level: "warn",
            text: format!(
                "Deployment {} ({} @{}) failed on {} of {} {of}.",
                p.deployment.id, p.deployment.artifact, p.deployment.version, p.failed, p.targeted,
            ),
            action: String::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use outpost_storage::DeploymentRecord;

    use super::*;

    fn failed(n: u64, group: &str) -> DeploymentProgress {
        DeploymentProgress {
            deployment: DeploymentRecord {
                id: "d1".into(),
                artifact: "app".into(),
                version: 3,
                kind: "file".into(),
                sha256: String::new(),
                size: 0,
                bundle_id: String::new(),
                group: group.into(),
                created_at_ms: 0,
                created_by: String::new(),
            },
            targeted: 10,
            installed: 10 - n,
            failed: n,
        }
    }

    fn finding(severity: Severity, text: &str) -> Finding {
        Finding {
            rule: "OutpostNodeDown".into(),
            severity,
            subject: "node 2 (n2)".into(),
            text: text.into(),
            action: format!("do something about: {text}"),
        }
    }

    #[test]
    fn findings_above_ok_then_notices() {
        let findings = [
            finding(Severity::Problem, "node 2 (n2) does not answer: refused."),
            finding(
                Severity::Warning,
                "node 3 (n3) is 101 entries behind the leader.",
            ),
            finding(Severity::Ok, "No rollout is halted."),
        ];
        let got = alarms(
            &findings,
            &["d3".into()],
            &[failed(1, "lab"), failed(0, "lab"), failed(2, "")],
        );
        let got: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|a| (a.level, a.text.as_str(), a.action.is_empty()))
            .collect();
        assert_eq!(
            got,
            [
                ("bad", "node 2 (n2) does not answer: refused.", false),
                (
                    "warn",
                    "node 3 (n3) is 101 entries behind the leader.",
                    false
                ),
                (
                    "warn",
                    "Deployment d3 waits for approval by someone other than its creator.",
                    true
                ),
                (
                    "warn",
                    "Deployment d1 (app @3) failed on 1 of 10 clients of lab.",
                    true
                ),
                (
                    "warn",
                    "Deployment d1 (app @3) failed on 2 of 10 clients it targets.",
                    true
                ),
            ]
        );
        assert!(alarms(&findings[2..], &[], &[failed(0, "")]).is_empty());
    }

    #[test]
    fn days_left_counts_whole_days() {
        let now = 1_800_000_000_000;
        assert_eq!(days_left(now / 1000 + 86_400 * 29 + 10, now), 29);
        assert_eq!(days_left(now / 1000 - 10, now), 0);
        assert_eq!(days_left(now / 1000 - 86_400, now), -1);
    }
}
