//! The overview: every node (role, health, version, applied index and lag), the leader,
//! certificates, and the alarms an operator must see first: the findings of the site's check
//! (`api::doctor::report`, the same `outpost doctor` prints) and the workflow notices of
//! `alarms`. This node's state is read locally; each other member is asked for its Raft
//! status over the peer channel (a second at most), since only a node knows whether it is up.
//! Below, this node's backups: its schedule, the last good one and the last failure (each
//! node's schedule is its own node.toml setting: `outpost backup schedule` on its host; the
//! console shows it and does not edit it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::NodeStatus;
use axum::extract::State;
use axum::response::Response;
use outpost_storage::RolloutState;

use crate::console::alarms::{alarms, days_left};
use crate::console::session::failed;
use crate::console::views::*;
use crate::console::{Console, Operator, ago, when};
use crate::health::{CERT_DAYS, LAG_ENTRIES};

pub async fn overview(State(con): State<Arc<Console>>, op: Operator) -> Response {
    let app = &con.app;
    let status = app.status_view().await;
    let read = app
        .read(|r| {
            Ok((
                r.cluster()?,
                r.client_counts()?,
                r.roll()?,
                r.deployment_progress()?,
                r.bundles()?.len(),
                waiting_approval(r)?,
            ))
        })
        .await;
    let (cluster, (clients, revoked), roll, progress, bundles, waiting) = match read {
        Ok(v) => v,
        Err(e) => return failed(&con, Some(&op), e),
    };
    let (peers, report) = tokio::join!(
        peer_statuses(&con, &status.raft),
        crate::api::doctor::report(app)
    );
    let now = outpost_raft::now_ms();
    let applied: BTreeMap<u64, u64> = status
        .members
        .iter()
        .filter_map(|m| match peers.get(&m.id) {
            _ if m.id == app.node_id => Some((m.id, status.applied_index)),
            Some(Ok(s)) => Some((m.id, s.applied_index)),
            _ => None,
        })
        .collect();
    let top = applied.values().copied().max().unwrap_or(0);
    let mut nodes = Vec::new();
    for m in &status.members {
        let this = m.id == app.node_id;
        let (health, ready) = if this {
            match &status.ready {
                Some(r) => (r.reason.clone(), r.ready),
                None => ("unknown".into(), false),
            }
        } else {
            match peers.get(&m.id) {
                Some(Ok(s)) => peer_health(s),
                Some(Err(e)) => (format!("no answer: {e}"), false),
                None => ("not asked".into(), false),
            }
        };
        let lag = applied.get(&m.id).map(|a| top.saturating_sub(*a));
        let build = status.builds.iter().find(|b| b.id == m.id);
        nodes.push(NodeRow {
            id: m.id,
            name: m.name.clone(),
            api_addr: m.api_addr.clone(),
            role: if m.voter { "voter" } else { "learner" }.into(),
            leader: status.leader_id == Some(m.id),
            this,
            health,
            ready,
            version: build.map(|b| b.version.clone()).unwrap_or_default(),
            applied: applied.get(&m.id).map(u64::to_string).unwrap_or("?".into()),
            lag: lag.map(|l| l.to_string()).unwrap_or("?".into()),
            lagging: lag.is_some_and(|l| l > LAG_ENTRIES),
        });
    }
    let expiry = status.cert_expiry.clone().unwrap_or_default();
    let ends: Vec<(&'static str, i64)> = [
        ("Cluster CA", expiry.ca),
        ("This node's", expiry.node),
        ("Soonest admin certificate seen here", expiry.admin),
        ("Soonest client certificate seen here", expiry.client),
    ]
    .into_iter()
    .filter_map(|(kind, at)| Some((kind, at?)))
    .collect();
    let certs = ends
        .iter()
        .map(|&(kind, at)| {
            let days = days_left(at, now);
            CertRow {
                kind,
                ends: when(at * 1000),
                left: format!("{days} days"),
                soon: days < CERT_DAYS,
            }
        })
        .collect();
    let alarms = alarms(&report.findings, &waiting, &progress);
    let roll = match roll {
        Some(r) if r.state == "stopped" => format!("stopped ({})", r.reason),
        Some(r) if r.state == "running" => format!(
            "running, node {} switching",
            r.node.map(|n| n.to_string()).unwrap_or("-".into())
        ),
        Some(r) => format!("{} to {} {}", r.state, r.name, ago(r.updated_at_ms, now)),
        None => "none".into(),
    };
    let leader = status
        .leader_id
        .and_then(|l| status.members.iter().find(|m| m.id == l))
        .map(|m| format!("{} (node {})", m.name, m.id))
        .unwrap_or_else(|| "none".into());
    let backup = backup_lines(&status.backup.clone().unwrap_or_default(), now);
    render(&Overview {
        c: Chrome::new(&con, &op, "Overview", "overview"),
        cluster_name: cluster.map(|c| c.name).unwrap_or_default(),
        leader,
        term: status.term,
        alarms,
        nodes,
        certs,
        clients,
        revoked,
        bundles,
        deployments: progress.len(),
        roll,
        backup,
    })
}

/// This node's backups as lines of the overview (pure: `now` given).
fn backup_lines(b: &crate::wire::BackupStatus, now: i64) -> Vec<BackupLine> {
    let line = |label, value, bad| BackupLine { label, value, bad };
    let mut out = vec![match &b.schedule {
        Some(s) => line(
            "Schedule",
            format!(
                "every {}, keep {}, into {}{}",
                humantime::format_duration(Duration::from_secs(s.every_secs)),
                s.keep,
                s.dir,
                if s.sealed {
                    " (CA key sealed)"
                } else {
                    " (no CA key)"
                }
            ),
            false,
        ),
        None => line(
            "Schedule",
            "none (on this node's host: outpost backup schedule --every 6h --keep 14 --dir DIR)"
                .into(),
            false,
        ),
    }];
    match (&b.last_good, b.last_ms) {
        (Some(f), _) => out.push(line(
            "Last scheduled",
            format!(
                "{} ({}), {}, {} bytes",
                when(f.at_ms),
                ago(f.at_ms, now),
                f.path,
                f.bytes
            ),
            false,
        )),
        (None, Some(at)) => out.push(line(
            "Last backup",
            format!("{} ({})", when(at), ago(at, now)),
            false,
        )),
        (None, None) => out.push(line("Last backup", "none made by this node".into(), false)),
    }
    if let Some(e) = &b.last_error {
        out.push(line(
            "Last failure",
            format!("{} ({}): {}", when(e.at_ms), ago(e.at_ms, now), e.message),
            true,
        ));
    }
    if b.schedule.is_some() || b.made > 0 {
        out.push(line(
            "Since start",
            format!("{} made, {} failed", b.made, b.failures),
            b.failures > 0 && b.last_error.is_some(),
        ));
    }
    out
}

fn peer_health(s: &NodeStatus) -> (String, bool) {
    match (&s.fatal, s.leader_id) {
        (Some(f), _) => (format!("stopped applying: {f}"), false),
        (None, None) => ("knows no leader".into(), false),
        (None, Some(_)) => (format!("up ({})", s.state.to_lowercase()), true),
    }
}

/// Every other member's Raft status, asked at once over the peer channel (1 s each at most).
async fn peer_statuses(
    con: &Console,
    me: &NodeStatus,
) -> BTreeMap<u64, Result<NodeStatus, String>> {
    let app = &con.app;
    let ask = serde_json::to_vec(&crate::peer_app::PeerAsk::Status).unwrap_or_default();
    let calls = me.members.iter().filter(|m| m.id != app.node_id).map(|m| {
        let ask = ask.clone();
        async move {
            let answer = app
                .node
                .app_call(m.id, ask, Duration::from_secs(1))
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<NodeStatus>(&b).map_err(|e| e.to_string()));
            (m.id, answer)
        }
    });
    futures::future::join_all(calls).await.into_iter().collect()
}

/// The deployments whose rollout waits for approval, by id.
fn waiting_approval(
    r: &outpost_storage::Reader,
) -> Result<Vec<String>, outpost_storage::StorageError> {
    let mut out = Vec::new();
    for d in r.deployments()? {
        if let Some(ro) = r.rollout(&d.id)?
            && ro.state == RolloutState::WaitingApproval
        {
            out.push(d.id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{BackupFailure, BackupFileView, BackupScheduleView, BackupStatus};

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn backup_lines_say_schedule_last_and_failure() {
        let sched = BackupScheduleView {
            every_secs: 6 * 3600,
            keep: 14,
            dir: "/srv/b".into(),
            sealed: true,
        };
        let good = BackupFileView {
            at_ms: NOW - 120_000,
            path: "/srv/b/x.obk".into(),
            bytes: 42,
        };
        // (status, the lines wanted: label, the start of the value, shown as bad)
        type Lines<'a> = Vec<(&'a str, &'a str, bool)>;
        let cases: Vec<(BackupStatus, Lines)> = vec![
            (
                BackupStatus::default(),
                vec![
                    ("Schedule", "none (", false),
                    ("Last backup", "none made", false),
                ],
            ),
            (
                BackupStatus {
                    schedule: Some(sched.clone()),
                    last_ms: Some(good.at_ms),
                    last_good: Some(good.clone()),
                    made: 3,
                    ..BackupStatus::default()
                },
                vec![
                    (
                        "Schedule",
                        "every 6h, keep 14, into /srv/b (CA key sealed)",
                        false,
                    ),
                    (
                        "Last scheduled",
                        "2023-11-14 22:11:20 UTC (2 min ago), /srv/b/x.obk, 42 bytes",
                        false,
                    ),
                    ("Since start", "3 made, 0 failed", false),
                ],
            ),
            (
                BackupStatus {
                    schedule: Some(sched),
                    last_ms: Some(NOW - 3_600_000),
                    last_error: Some(BackupFailure {
                        at_ms: NOW - 5_000,
                        message: "disk full".into(),
                    }),
                    failures: 2,
                    ..BackupStatus::default()
                },
                vec![
                    ("Schedule", "every 6h", false),
                    ("Last backup", "2023-11-14 21:13:20 UTC (1 h ago)", false),
                    (
                        "Last failure",
                        "2023-11-14 22:13:15 UTC (5 s ago): disk full",
                        true,
                    ),
                    ("Since start", "0 made, 2 failed", true),
                ],
            ),
        ];
        for (b, want) in cases {
            let got = backup_lines(&b, NOW);
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, (label, starts, bad)) in got.iter().zip(want) {
                assert_eq!(g.label, label, "{got:?}");
                assert!(g.value.starts_with(starts), "{}: {}", g.label, g.value);
                assert_eq!(g.bad, bad, "{}", g.label);
            }
        }
    }
}
