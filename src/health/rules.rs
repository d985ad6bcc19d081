//! The rule table: each health rule once, with its Prometheus expression (built from the
//! thresholds in `health`), and the rule file `outpost doctor --prometheus-rules` prints
//! (shipped as `packaging/prometheus/outpost-rules.yml`).

use crate::health::{
    CERT_DAYS, CLOCK_OFFSET_SECONDS, DISK_FREE_RATIO, HEADROOM_DAYS, LAG_ENTRIES, LAG_SECONDS,
    UNSEEN_DAYS,
};
use crate::wire::Severity;

/// One health rule: the name an alert and a finding share, how bad it is, and what to do.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Prometheus `alert:` name and `Finding.rule`.
    pub name: &'static str,
    /// What the finding is when the rule fires (`Warning` → alert severity `warning`,
    /// `Problem` → `critical`).
    pub severity: Severity,
    /// How long the expression must hold before Prometheus fires (`for:`).
    pub for_: &'static str,
    /// The PromQL expression over the metrics of `/metrics`; None for a rule only
    /// `outpost doctor` checks (no series carries what it needs).
    pub expr: Option<fn() -> String>,
    pub summary: &'static str,
    pub action: &'static str,
}

/// Every rule, in the order the rule file lists them.
pub const RULES: &[Rule] = &[
    Rule {
        name: "OutpostNoLeader",
        severity: Severity::Problem,
        for_: "1m",
        expr: Some(|| "max by (instance) (outpost_raft_has_leader) == 0".into()),
        summary: "Node {{ $labels.instance }} knows no Raft leader: it cannot commit.",
        action: "Check that a majority of the voters run and reach each other's peer ports; `outpost status` on each node shows whom it sees.",
    },
    Rule {
        name: "OutpostLostQuorum",
        severity: Severity::Problem,
        for_: "1m",
        expr: Some(|| {
            "sum(outpost_raft_has_leader) < floor(max(outpost_raft_voters) / 2) + 1".into()
        }),
        summary: "Fewer than a majority of the voters know a leader: the site cannot commit.",
        action: "Bring the stopped nodes back (systemctl start outpost); if a node is lost for good, see `outpost recovery` in the README.",
    },
    Rule {
        name: "OutpostFollowerLag",
        severity: Severity::Warning,
        for_: "5m",
        expr: Some(|| {
            format!(
                "max by (instance, follower) (outpost_raft_replication_lag_entries) > {LAG_ENTRIES} \
                 or max by (instance, follower) (outpost_raft_replication_lag_seconds) > {LAG_SECONDS}"
            )
        }),
        summary: "Follower {{ $labels.follower }} is behind the leader {{ $labels.instance }}.",
        action: "Check the follower's disk and its network to the leader; its journal says why it is slow.",
    },
    Rule {
        name: "OutpostNodeNotReady",
        severity: Severity::Problem,
        for_: "2m",
        expr: Some(|| "max by (instance) (outpost_node_ready) == 0".into()),
        summary: "Node {{ $labels.instance }} is not ready (its /readyz fails).",
        action: "Read its /readyz answer and journal (journalctl -u outpost); `outpost status` on it says what it waits for.",
    },
    Rule {
        name: "OutpostNodeDown",
        severity: Severity::Problem,
        for_: "1m",
        expr: Some(|| "up{job=\"outpost\"} == 0".into()),
        summary: "Node {{ $labels.instance }} does not answer.",
        action: "Check that its service runs (systemctl status outpost) and that its API and peer ports are reachable.",
    },
    Rule {
        name: "OutpostDiskLow",
        severity: Severity::Warning,
        for_: "5m",
        expr: Some(|| {
            format!(
                "max by (instance) (outpost_disk_free_bytes / outpost_disk_size_bytes) < {DISK_FREE_RATIO}"
            )
        }),
        summary: "The data directory of {{ $labels.instance }} has less than 10 % of its disk free.",
        action: "Free or add room on that file system; `outpost bundle gc` removes payloads no deployment needs.",
    },
    Rule {
        name: "OutpostDiskHeadroom",
        severity: Severity::Warning,
        for_: "1h",
        expr: Some(|| {
            format!(
                "predict_linear(outpost_disk_free_bytes[6h], {}) < 0",
                HEADROOM_DAYS * 86_400
            )
        }),
        summary: "The data directory of {{ $labels.instance }} fills within 30 days at its current growth.",
        action: "Plan more room for that file system, or remove bundles no deployment needs (`outpost bundle gc`).",
    },
    Rule {
        name: "OutpostDiskFloor",
        severity: Severity::Problem,
        for_: "1m",
        expr: Some(|| "max by (instance) (outpost_disk_below_floor) == 1".into()),
        summary: "The data directory of {{ $labels.instance }} is below its free-space floor: it refuses operator writes.",
        action: "Free room on that file system now (remove what is not Outpost's, `outpost bundle gc`, or grow it); the node takes writes again by itself, and restarts its Raft core if the disk filled under it.",
    },
    Rule {
        name: "OutpostCertificateExpiring",
        severity: Severity::Warning,
        for_: "1h",
        expr: Some(|| {
            format!(
                "min by (instance, kind) (outpost_cert_expiry_seconds) < {}",
                CERT_DAYS * 86_400
            )
        }),
        summary: "A {{ $labels.kind }} certificate seen by {{ $labels.instance }} ends within 30 days.",
        action: "Renew it: nodes and agents renew their own; an admin asks for a new certificate (`outpost admin`); the CA needs a planned rotation.",
    },
    Rule {
        name: "OutpostClockOffset",
        severity: Severity::Warning,
        for_: "5m",
        expr: Some(|| {
            format!(
                "max by (instance) (abs(outpost_clock_offset_seconds)) > {CLOCK_OFFSET_SECONDS}"
            )
        }),
        summary: "The clock of {{ $labels.instance }} is more than 1 s off the leader's.",
        action: "Check time synchronisation on that node (timedatectl; chrony or systemd-timesyncd).",
    },
    Rule {
        name: "OutpostVersionMix",
        severity: Severity::Warning,
        for_: "1h",
        expr: Some(|| "count(count by (version) (outpost_build_info)) > 1".into()),
        summary: "The nodes run different Outpost versions.",
        action: "Finish the upgrade (`outpost upgrade status`), or roll it back on the newer nodes.",
    },
    Rule {
        name: "OutpostClientsUnseen",
        severity: Severity::Warning,
        for_: "1h",
        expr: Some(|| format!("max(outpost_clients_unseen_{UNSEEN_DAYS}d) > 0")),
        summary: "{{ $value }} clients have not synced for 7 days.",
        action: "List them (`outpost client list --unseen 7d`); revoke the ones that are gone, check the agent on the others.",
    },
    Rule {
        name: "OutpostClientChecksFailing",
        severity: Severity::Warning,
        for_: "15m",
        expr: Some(|| "max(outpost_clients_failing_checks) > 0".into()),
        summary: "{{ $value }} clients report a failing health check.",
        action: "List them (`outpost client list --failing`); `outpost client show ID` gives each check's detail.",
    },
    Rule {
        name: "OutpostRolloutHalted",
        severity: Severity::Warning,
        for_: "5m",
        expr: Some(|| "max(outpost_rollouts_halted) > 0".into()),
        summary: "{{ $value }} rollouts halted on failures.",
        action: "Look at the failures (`outpost deployment status ID`), then resume or abort it (on its console page or `outpost deployment resume|abort ID`).",
    },
    Rule {
        name: "OutpostUpgradeRollStopped",
        severity: Severity::Problem,
        for_: "5m",
        expr: Some(|| "max(outpost_upgrade_roll_stopped) > 0".into()),
        summary: "The rolling upgrade of the nodes stopped.",
        action: "`outpost upgrade status` says why; fix the node it names, then start the upgrade again.",
    },
    Rule {
        name: "OutpostBackupOld",
        severity: Severity::Warning,
        for_: "",
        expr: None,
        summary: "No backup of the site in twice the shortest backup schedule's interval (without a schedule: in the last 7 days).",
        action: "Take one: `outpost backup --output FILE`, and keep it off the nodes; or schedule them: `outpost backup schedule --every 6h --keep 14 --dir DIR`. With a schedule, `outpost status` on each node says why its last one failed.",
    },
];

/// The rule of this name. Panics on a name not in [`RULES`]: callers name rules by constant.
pub fn rule(name: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no health rule named {name}"))
}

/// The Prometheus rule file: one group `outpost` with every rule that has an expression.
pub fn rules_yaml() -> String {
    let mut out = String::from(
        "# Outpost's alert rules. Generated: outpost doctor --prometheus-rules > packaging/prometheus/outpost-rules.yml\n\
         # The same rules decide the findings of `outpost doctor` and the console's alarms.\n\
         groups:\n  - name: outpost\n    rules:\n",
    );
    for r in RULES {
        let Some(expr) = r.expr else { continue };
        let severity = match r.severity {
            Severity::Problem => "critical",
            Severity::Warning | Severity::Ok => "warning",
        };
        out.push_str(&format!("      - alert: {}\n", r.name));
        out.push_str(&format!("        expr: {}\n", quote(&expr())));
        out.push_str(&format!("        for: {}\n", r.for_));
        out.push_str(&format!(
            "        labels:\n          severity: {severity}\n"
        ));
        out.push_str(&format!(
            "        annotations:\n          summary: {}\n          action: {}\n",
            quote(r.summary),
            quote(r.action)
        ));
    }
    out
}

/// A YAML double-quoted scalar.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped rule file is what the table writes.
    #[test]
    fn shipped_rule_file_is_generated_from_the_table() {
        let shipped = include_str!("../../packaging/prometheus/outpost-rules.yml");
        assert!(
            shipped == rules_yaml(),
            "packaging/prometheus/outpost-rules.yml is out of date with src/health/rules.rs; \
             regenerate it: outpost doctor --prometheus-rules > packaging/prometheus/outpost-rules.yml"
        );
    }

    #[test]
    fn names_are_unique_and_expressions_use_the_thresholds() {
        let mut names: Vec<&str> = RULES.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
        for r in RULES {
            assert!(r.name.starts_with("Outpost"), "{}", r.name);
            assert!(r.severity > Severity::Ok, "{}", r.name);
            assert!(!r.action.is_empty() && !r.summary.is_empty(), "{}", r.name);
            assert_eq!(r.expr.is_some(), !r.for_.is_empty(), "{}", r.name);
        }
        let expr = |n: &str| (rule(n).expr.expect("has an expression"))();
        assert!(expr("OutpostFollowerLag").contains("> 100"));
        assert!(expr("OutpostFollowerLag").contains("> 30"));
        assert!(expr("OutpostDiskLow").ends_with("< 0.1"));
        assert!(expr("OutpostDiskFloor").contains("outpost_disk_below_floor"));
        assert_eq!(rule("OutpostDiskFloor").severity, Severity::Problem);
        assert!(expr("OutpostCertificateExpiring").ends_with("< 2592000"));
        assert!(expr("OutpostClockOffset").ends_with("> 1"));
        assert!(expr("OutpostClientsUnseen").contains("outpost_clients_unseen_7d"));
        assert!(rule("OutpostBackupOld").expr.is_none());
    }

    #[test]
    fn yaml_quotes_what_it_must() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        let y = rules_yaml();
        assert!(y.contains("      - alert: OutpostNodeDown\n        expr: \"up{job=\\\"outpost\\\"} == 0\"\n        for: 1m\n"));
        assert!(!y.contains("OutpostBackupOld"));
    }
}
