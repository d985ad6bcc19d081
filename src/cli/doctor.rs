//! `outpost doctor`: asks a node (`GET /v1/doctor`) to check the site, prints each finding
//! (severity, subject, sentence, then what to do) and exits 0, 1 or 2 by the worst of them;
//! `--prometheus-rules` prints the alert rules of the same table instead.

use std::io::Write;

use anyhow::Result;
use hyper::Method;

use crate::cli::{DataDirArg, Remote, api};
use crate::shared::client::NO_BODY;
use crate::wire::{DoctorReport, Finding, Severity};

pub(super) async fn run(
    remote: &Remote,
    dir: DataDirArg,
    json: bool,
    prometheus_rules: bool,
) -> Result<()> {
    if prometheus_rules {
        print!("{}", crate::health::rules_yaml());
        return Ok(());
    }
    let report = match ask(remote, &dir).await {
        Ok(r) => r,
        Err(tried) => unreachable_report(tried),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    let code = report.worst().exit_code();
    std::io::stdout().flush()?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// The report of the node asked, or a sentence naming the node and why it did not answer.
async fn ask(remote: &Remote, dir: &DataDirArg) -> std::result::Result<DoctorReport, String> {
    let target = match &remote.server {
        Some(s) => format!("the node at {s}"),
        None => format!("the local node ({})", dir.data_dir.display()),
    };
    let client = api(remote, dir).map_err(|e| format!("{target}: {e:#}"))?;
    client
        .call(Method::GET, "/v1/doctor", NO_BODY)
        .await
        .map_err(|e| {
            format!(
                "{target} does not answer: {}",
                crate::shared::text::error_line(&e)
            )
        })
}

fn unreachable_report(tried: String) -> DoctorReport {
    DoctorReport {
        node_id: 0,
        checked_at_ms: outpost_raft::now_ms(),
        findings: vec![Finding {
            rule: "OutpostNodeDown".into(),
            severity: Severity::Problem,
            subject: "cluster".into(),
            text: format!("No node answered: {tried}."),
            action:
                "Check that the node runs (systemctl status outpost) or name another with --server."
                    .into(),
        }],
    }
}

/// One line per finding, and its action on the next.
fn render(r: &DoctorReport) -> String {
    let mut out = String::new();
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Ok => "ok",
            Severity::Warning => "WARNING",
            Severity::Problem => "PROBLEM",
        };
        out.push_str(&format!("{sev:<8} {:<14} {}\n", f.subject, f.text));
        if !f.action.is_empty() {
            out.push_str(&format!("         → {}\n", f.action));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_severity_subject_text_and_action() {
        let r = DoctorReport {
            node_id: 1,
            checked_at_ms: 0,
            findings: vec![
                Finding {
                    rule: "OutpostNodeDown".into(),
                    severity: Severity::Problem,
                    subject: "node 3 (n3)".into(),
                    text: "node 3 (n3) does not answer: refused.".into(),
                    action: "Start it.".into(),
                },
                Finding {
                    rule: "OutpostRolloutHalted".into(),
                    severity: Severity::Ok,
                    subject: "rollouts".into(),
                    text: "No rollout is halted.".into(),
                    action: String::new(),
                },
            ],
        };
        assert_eq!(
            render(&r),
            "PROBLEM  node 3 (n3)    node 3 (n3) does not answer: refused.\n         → Start it.\nok       rollouts       No rollout is halted.\n"
        );
        let down = unreachable_report("the node at 127.0.0.1:1 does not answer: refused".into());
        assert_eq!(down.worst().exit_code(), 2);
        assert!(down.findings[0].text.contains("127.0.0.1:1"));
    }
}
