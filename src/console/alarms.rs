//! The overview's alarms, decided from facts already gathered: what an operator must see first,
//! worst first. Pure, so the rules are one table test; `overview` gathers the facts and renders.

use outpost_storage::{DeploymentProgress, RolloutState};

use crate::console::views::{Alarm, NodeRow};
use crate::console::{ago, when};

/// A node this many entries behind the most advanced one is shown as lagging.
pub const LAG_ALARM: u64 = 100;
/// Certificates ending within this many days raise an alarm.
pub const CERT_ALARM_DAYS: i64 = 30;

/// What the alarms are decided from.
pub struct Facts<'a> {
    pub has_leader: bool,
    /// This node's name, and why it is not ready (None when it is).
    pub this_name: &'a str,
    pub this_not_ready: Option<&'a str>,
    /// Every member's row, in member order (health, readiness and lag already decided).
    pub nodes: &'a [NodeRow],
    /// Each certificate shown, and when it ends (unix seconds).
    pub certs: &'a [(&'static str, i64)],
    /// The rolling upgrade's payload name and why it stopped, when it stopped.
    pub stopped_roll: Option<(&'a str, &'a str)>,
    pub deployments: &'a [DeploymentProgress],
    /// Rollouts that need a person: (id, state, reason), halted or waiting for approval.
    pub rollouts: &'a [(String, RolloutState, String)],
    pub now_ms: i64,
}

/// Whole days from `now_ms` until `at` (unix seconds); negative once it has passed.
pub fn days_left(at: i64, now_ms: i64) -> i64 {
    (at - now_ms / 1000) / 86_400
}

/// The alarms, in the order the overview shows them: the cluster, this node, each other node,
/// certificates, the rolling upgrade, rollouts that need a person, deployments' failures.
pub fn alarms(f: &Facts) -> Vec<Alarm> {
    let mut out = Vec::new();
    let bad = |text: String| Alarm { level: "bad", text };
    if !f.has_leader {
        out.push(bad(
            "No leader: the cluster cannot commit (a quorum of nodes is not reachable).".into(),
        ));
    }
    if let Some(reason) = f.this_not_ready {
        out.push(bad(format!(
            "This node ({}) is not ready: {reason}.",
            f.this_name
        )));
    }
    for n in f.nodes {
        if !n.this && !n.ready {
            out.push(bad(format!("Node {} ({}) {}.", n.id, n.name, n.health)));
        }
        if n.lagging {
            out.push(Alarm {
                level: "warn",
                text: format!("Node {} ({}) is {} entries behind.", n.id, n.name, n.lag),
            });
        }
    }
    for &(kind, at) in f.certs {
        if days_left(at, f.now_ms) < CERT_ALARM_DAYS {
            out.push(Alarm {
                level: if at * 1000 <= f.now_ms { "bad" } else { "warn" },
                text: format!(
                    "{kind} certificate ends {} ({}).",
                    when(at * 1000),
                    ago(at * 1000, f.now_ms)
                ),
            });
        }
    }
    if let Some((name, reason)) = f.stopped_roll {
        out.push(bad(format!(
            "The rolling upgrade to {name} stopped: {reason}."
        )));
    }
    for (id, state, reason) in f.rollouts {
        match state {
            RolloutState::Halted => out.push(bad(format!(
                "Deployment {id} halted: {reason}. Resume or abort it on its page."
            ))),
            RolloutState::WaitingApproval => out.push(Alarm {
                level: "warn",
                text: format!(
                    "Deployment {id} waits for approval by someone other than its creator."
                ),
            }),
            _ => {}
        }
    }
    for p in f.deployments.iter().filter(|p| p.failed > 0) {
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
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use outpost_storage::DeploymentRecord;

    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const DAY: i64 = 86_400;

    fn node(id: u64, this: bool, ready: bool, lag: u64) -> NodeRow {
        NodeRow {
            id,
            name: format!("n{id}"),
            api_addr: String::new(),
            role: "voter".into(),
            leader: false,
            this,
            health: if ready {
                "up".into()
            } else {
                "no answer: refused".into()
            },
            ready,
            version: String::new(),
            applied: String::new(),
            lag: lag.to_string(),
            lagging: lag > LAG_ALARM,
        }
    }

    fn failed(n: u64) -> DeploymentProgress {
        DeploymentProgress {
            deployment: DeploymentRecord {
                id: "d1".into(),
                artifact: "app".into(),
                version: 3,
                kind: "file".into(),
                sha256: String::new(),
                size: 0,
                bundle_id: String::new(),
                group: "lab".into(),
                created_at_ms: 0,
                created_by: String::new(),
            },
            targeted: 10,
            installed: 10 - n,
            failed: n,
        }
    }

    fn quiet<'a>(nodes: &'a [NodeRow]) -> Facts<'a> {
        Facts {
            has_leader: true,
            this_name: "n1",
            this_not_ready: None,
            nodes,
            certs: &[],
            stopped_roll: None,
            deployments: &[],
            rollouts: &[],
            now_ms: NOW,
        }
    }

    /// Each rule alone: the facts that raise it, and the alarms (level, start of text).
    #[test]
    fn each_rule_raises_its_alarm_and_nothing_else() {
        let healthy = [node(1, true, true, 0), node(2, false, true, 0)];
        let down = [node(1, true, true, 0), node(2, false, false, 0)];
        let this_down = [node(1, true, false, 0)];
        let behind = [node(1, true, true, 0), node(2, false, true, LAG_ALARM + 1)];
        let at_limit = [node(1, true, true, 0), node(2, false, true, LAG_ALARM)];
        let expired = [("Cluster CA", NOW / 1000 - 1)];
        let soon = [("This node's", NOW / 1000 + 29 * DAY + 10)];
        let later = [("This node's", NOW / 1000 + 31 * DAY)];
        let failed_one = [failed(1)];
        let failed_none = [failed(0)];
        let mut rollout = failed(1);
        rollout.deployment.group = String::new();
        let failed_rollout = [rollout];
        let people = [
            (
                "d2".to_string(),
                RolloutState::Halted,
                "2 failures > 1 allowed: c-1, c-2".to_string(),
            ),
            ("d3".into(), RolloutState::WaitingApproval, String::new()),
            ("d4".into(), RolloutState::Paused, "lunch".into()),
        ];
        type Case<'a> = (&'a str, Facts<'a>, &'a [(&'a str, &'a str)]);
        let cases: Vec<Case> = vec![
            ("all well", quiet(&healthy), &[]),
            (
                "no leader",
                Facts {
                    has_leader: false,
                    ..quiet(&healthy)
                },
                &[("bad", "No leader: the cluster cannot commit")],
            ),
            (
                "this node not ready",
                Facts {
                    this_not_ready: Some("no leader known"),
                    ..quiet(&this_down)
                },
                &[("bad", "This node (n1) is not ready: no leader known.")],
            ),
            (
                "another node down",
                quiet(&down),
                &[("bad", "Node 2 (n2) no answer: refused.")],
            ),
            (
                "a node behind",
                quiet(&behind),
                &[("warn", "Node 2 (n2) is 101 entries behind.")],
            ),
            ("a node at the lag limit", quiet(&at_limit), &[]),
            (
                "an expired certificate",
                Facts {
                    certs: &expired,
                    ..quiet(&healthy)
                },
                &[("bad", "Cluster CA certificate ends ")],
            ),
            (
                "a certificate ending within 30 days",
                Facts {
                    certs: &soon,
                    ..quiet(&healthy)
                },
                &[("warn", "This node's certificate ends ")],
            ),
            (
                "a certificate ending later",
                Facts {
                    certs: &later,
                    ..quiet(&healthy)
                },
                &[],
            ),
            (
                "a stopped rolling upgrade",
                Facts {
                    stopped_roll: Some(("outpost-2", "node 2 did not come back")),
                    ..quiet(&healthy)
                },
                &[(
                    "bad",
                    "The rolling upgrade to outpost-2 stopped: node 2 did not come back.",
                )],
            ),
            (
                "a deployment that failed somewhere",
                Facts {
                    deployments: &failed_one,
                    ..quiet(&healthy)
                },
                &[(
                    "warn",
                    "Deployment d1 (app @3) failed on 1 of 10 clients of lab.",
                )],
            ),
            (
                "a rollout's failure to its selector",
                Facts {
                    deployments: &failed_rollout,
                    ..quiet(&healthy)
                },
                &[(
                    "warn",
                    "Deployment d1 (app @3) failed on 1 of 10 clients it targets.",
                )],
            ),
            (
                "rollouts that need a person",
                Facts {
                    rollouts: &people,
                    ..quiet(&healthy)
                },
                &[
                    (
                        "bad",
                        "Deployment d2 halted: 2 failures > 1 allowed: c-1, c-2. Resume",
                    ),
                    ("warn", "Deployment d3 waits for approval"),
                ],
            ),
            (
                "a deployment without failures",
                Facts {
                    deployments: &failed_none,
                    ..quiet(&healthy)
                },
                &[],
            ),
        ];
        for (name, facts, want) in cases {
            let got = alarms(&facts);
            assert_eq!(got.len(), want.len(), "{name}: {:?}", texts(&got));
            for (a, (level, text)) in got.iter().zip(want.iter()) {
                assert_eq!(a.level, *level, "{name}: {}", a.text);
                assert!(a.text.starts_with(text), "{name}: {} vs {text}", a.text);
            }
        }
    }

    /// Everything wrong at once: the cluster first, then this node, each node in member order,
    /// certificates, the upgrade, deployments.
    #[test]
    fn alarms_come_worst_and_nearest_first() {
        let nodes = [
            node(1, true, false, 0),
            node(2, false, false, 500),
            node(3, false, true, 200),
        ];
        let certs = [("Cluster CA", NOW / 1000 + DAY)];
        let deployments = [failed(2)];
        let got = alarms(&Facts {
            has_leader: false,
            this_name: "n1",
            this_not_ready: Some("no leader known"),
            nodes: &nodes,
            certs: &certs,
            stopped_roll: Some(("outpost-2", "stalled")),
            deployments: &deployments,
            rollouts: &[("d9".into(), RolloutState::Halted, "1 failure > 0".into())],
            now_ms: NOW,
        });
        let starts: Vec<&str> = got
            .iter()
            .map(|a| &a.text[..12.min(a.text.len())])
            .collect();
        assert_eq!(
            starts,
            [
                "No leader: t",
                "This node (n",
                "Node 2 (n2) ",
                "Node 2 (n2) ",
                "Node 3 (n3) ",
                "Cluster CA c",
                "The rolling ",
                "Deployment d",
                "Deployment d",
            ],
            "{:?}",
            texts(&got)
        );
        assert!(
            got[3].text.contains("500 entries behind"),
            "{}",
            got[3].text
        );
    }

    fn texts(a: &[Alarm]) -> Vec<&str> {
        a.iter().map(|a| a.text.as_str()).collect()
    }
}
