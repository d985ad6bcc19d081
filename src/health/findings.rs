//! The findings of one check of the site, decided from plain facts at an explicit time:
//! what `GET /v1/doctor` answers and the console's overview shows as alarms. Each finding
//! names its rule (`health::RULES`), what it is about, a sentence and what to do; each area
//! checked that is well gives one `Ok` finding, so a report says what was checked.

use crate::health::{
    BACKUP_DAYS, CERT_DAYS, CLOCK_OFFSET_SECONDS, DAY_MS, DISK_FREE_RATIO, HEADROOM_DAYS,
    LAG_ENTRIES, UNSEEN_DAYS, rule,
};
use crate::wire::{Finding, NodeHealth, Severity};

/// What a check of the site is decided from, gathered by the answering node.
#[derive(Debug, Clone, Default)]
pub struct SiteFacts {
    /// The leader the answering node knows, and its term.
    pub leader_id: Option<u64>,
    pub term: u64,
    /// Every member, in member order.
    pub members: Vec<MemberFacts>,
    /// Not-after (unix seconds) of the cluster CA, and of the soonest admin and client
    /// certificates presented to the answering node in the last day.
    pub ca_not_after: Option<i64>,
    pub admin_not_after: Option<i64>,
    pub client_not_after: Option<i64>,
    /// The site's clients (None: not read).
    pub clients: Option<ClientCounts>,
    /// Rollouts halted on failures: (deployment id, why).
    pub halted: Vec<(String, String)>,
    /// The rolling upgrade, when it stopped: (payload name, why).
    pub stopped_roll: Option<(String, String)>,
    /// When the cluster was initialised (unix ms), if known.
    pub created_at_ms: Option<i64>,
}

/// One member as the answering node sees it.
#[derive(Debug, Clone)]
pub struct MemberFacts {
    pub id: u64,
    pub name: String,
    pub voter: bool,
    /// Its report of itself, or why it could not be had.
    pub health: Result<NodeHealth, String>,
    /// Entries it lacks, in the leader's view (None: not known).
    pub lag_entries: Option<u64>,
    /// Its clock minus the answering node's (ms), when measured.
    pub offset_ms: Option<i64>,
}

impl MemberFacts {
    fn subject(&self) -> String {
        format!("node {} ({})", self.id, self.name)
    }
}

/// The site's clients, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Enrolled and not revoked.
    pub active: u64,
    /// Of those, not seen for `UNSEEN_DAYS`: last seen before then, or never seen and
    /// enrolled before then (a client enrolled a moment ago has not had its chance yet).
    pub unseen: u64,
    /// Of those, never seen at all (whenever enrolled).
    pub never: u64,
    /// Of those, with at least one failing health check (None: not known).
    pub failing: Option<u64>,
}

/// Every finding, worst first (in the order of the areas below within a severity).
pub fn findings(f: &SiteFacts, now_ms: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    quorum(f, &mut out);
    members(f, &mut out);
    lag(f, &mut out);
    disks(f, &mut out);
    disk_floors(f, &mut out);
    certificates(f, now_ms, &mut out);
    clocks(f, &mut out);
    versions(f, &mut out);
    clients(f, &mut out);
    rollouts(f, &mut out);
    backup(f, now_ms, &mut out);
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

fn found(name: &str, subject: impl Into<String>, text: String) -> Finding {
    let r = rule(name);
    Finding {
        rule: r.name.into(),
        severity: r.severity,
        subject: subject.into(),
        text,
        action: r.action.into(),
    }
}

fn well(name: &str, subject: &str, text: String) -> Finding {
    Finding {
        rule: rule(name).name.into(),
        severity: Severity::Ok,
        subject: subject.into(),
        text,
        action: String::new(),
    }
}

fn quorum(f: &SiteFacts, out: &mut Vec<Finding>) {
    let voters: Vec<&MemberFacts> = f.members.iter().filter(|m| m.voter).collect();
    let answering = voters.iter().filter(|m| m.health.is_ok()).count();
    let majority = voters.len() / 2 + 1;
    if answering < majority {
        out.push(found(
            "OutpostLostQuorum",
            "cluster",
            format!(
                "Only {answering} of {} voters answer; {majority} are needed to commit.",
                voters.len()
            ),
        ));
    }
    match f.leader_id {
        None => out.push(found(
            "OutpostNoLeader",
            "cluster",
            "No leader is known: the site cannot commit changes.".into(),
        )),
        Some(l) => {
            let name = f
                .members
                .iter()
                .find(|m| m.id == l)
                .map(MemberFacts::subject)
                .unwrap_or_else(|| format!("node {l}"));
            out.push(well(
                "OutpostNoLeader",
                "cluster",
                format!(
                    "{name} leads in term {}; {answering} of {} voters answer.",
                    f.term,
                    voters.len()
                ),
            ));
        }
    }
}

fn members(f: &SiteFacts, out: &mut Vec<Finding>) {
    let mut ready = 0;
    for m in &f.members {
        match &m.health {
            Err(e) => out.push(found(
                "OutpostNodeDown",
                m.subject(),
                format!("{} does not answer: {e}.", m.subject()),
            )),
            Ok(h) if !h.ready => out.push(found(
                "OutpostNodeNotReady",
                m.subject(),
                format!("{} is not ready: {}.", m.subject(), h.not_ready_reason),
            )),
            Ok(_) => ready += 1,
        }
    }
    if ready == f.members.len() {
        out.push(well(
            "OutpostNodeNotReady",
            "nodes",
            format!("{ready} of {} nodes answer and are ready.", f.members.len()),
        ));
    }
}

fn lag(f: &SiteFacts, out: &mut Vec<Finding>) {
    let mut known = 0;
    let mut behind = 0;
    for m in &f.members {
        let Some(lag) = m.lag_entries else { continue };
        known += 1;
        if lag > LAG_ENTRIES {
            behind += 1;
            out.push(found(
                "OutpostFollowerLag",
                m.subject(),
                format!("{} is {lag} entries behind the leader.", m.subject()),
            ));
        }
    }
    if known > 0 && behind == 0 {
        out.push(well(
            "OutpostFollowerLag",
            "replication",
            format!("No follower is more than {LAG_ENTRIES} entries behind the leader."),
        ));
    }
}

fn disks(f: &SiteFacts, out: &mut Vec<Finding>) {
    let mut checked = 0;
    let mut bad = 0;
    for m in &f.members {
        let Ok(h) = &m.health else { continue };
        let d = &h.disk;
        if d.total_bytes == 0 {
            continue;
        }
        checked += 1;
        let ratio = d.free_bytes as f64 / d.total_bytes as f64;
        if ratio < DISK_FREE_RATIO {
            bad += 1;
            out.push(found(
                "OutpostDiskLow",
                m.subject(),
                format!(
                    "The data directory of {} has {} free of {} ({:.1} %).",
                    m.subject(),
                    bytes(d.free_bytes),
                    bytes(d.total_bytes),
                    ratio * 100.0
                ),
            ));
            continue;
        }
        if let Some(g) = h.growth_bytes_per_day.filter(|g| *g > 0.0) {
            let days = d.free_bytes as f64 / g;
            if days < HEADROOM_DAYS as f64 {
                bad += 1;
                out.push(found(
                    "OutpostDiskHeadroom",
                    m.subject(),
                    format!(
                        "The data directory of {} grows {} a day: its {} free last {:.0} days.",
                        m.subject(),
                        bytes(g as u64),
                        bytes(d.free_bytes),
                        days.floor()
                    ),
                ));
            }
        }
    }
    if checked > 0 && bad == 0 {
        out.push(well(
            "OutpostDiskLow",
            "disks",
            format!(
                "{checked} nodes have over {:.0} % of their disk free and room for {HEADROOM_DAYS} days at their growth.",
                DISK_FREE_RATIO * 100.0
            ),
        ));
    }
}

/// A node below its free-space floor refuses operator writes: a problem of its
/// own, beside (not instead of) the low-disk warning.
fn disk_floors(f: &SiteFacts, out: &mut Vec<Finding>) {
    for m in &f.members {
        let Ok(h) = &m.health else { continue };
        if !h.below_floor {
            continue;
        }
        out.push(found(
            "OutpostDiskFloor",
            m.subject(),
            format!(
                "The data directory of {} has {} free, below its floor of {}: it refuses operator writes (HTTP 507) until space is freed.",
                m.subject(),
                bytes(h.disk.free_bytes),
                bytes(h.floor_bytes)
            ),
        ));
    }
}

fn certificates(f: &SiteFacts, now_ms: i64, out: &mut Vec<Finding>) {
    let mut certs: Vec<(String, i64)> = Vec::new();
    if let Some(at) = f.ca_not_after {
        certs.push(("the cluster CA".into(), at));
    }
    for m in &f.members {
        if let Ok(h) = &m.health {
            certs.push((m.subject(), h.node_cert_not_after));
        }
    }
    if let Some(at) = f.admin_not_after {
        certs.push(("the soonest admin certificate seen in a day".into(), at));
    }
    if let Some(at) = f.client_not_after {
        certs.push(("the soonest client certificate seen in a day".into(), at));
    }
    let mut soonest: Option<(String, i64)> = None;
    let mut bad = 0;
    for (what, at) in certs {
        let left_ms = at.saturating_mul(1000) - now_ms;
        let days = left_ms.div_euclid(DAY_MS);
        if left_ms <= 0 {
            bad += 1;
            out.push(Finding {
                severity: Severity::Problem,
                ..found(
                    "OutpostCertificateExpiring",
                    format!("certificate of {what}"),
                    format!(
                        "The certificate of {what} has ended ({} ago).",
                        days_n(-days)
                    ),
                )
            });
        } else if days < CERT_DAYS {
            bad += 1;
            out.push(found(
                "OutpostCertificateExpiring",
                format!("certificate of {what}"),
                format!("The certificate of {what} ends in {}.", days_n(days)),
            ));
        }
        if soonest.as_ref().is_none_or(|(_, s)| at < *s) {
            soonest = Some((what, at));
        }
    }
    if let Some((what, at)) = soonest
        && bad == 0
    {
        out.push(well(
            "OutpostCertificateExpiring",
            "certificates",
            format!(
                "No certificate ends within {CERT_DAYS} days (the soonest, of {what}, in {}).",
                days_n((at.saturating_mul(1000) - now_ms).div_euclid(DAY_MS))
            ),
        ));
    }
}

fn clocks(f: &SiteFacts, out: &mut Vec<Finding>) {
    let limit_ms = (CLOCK_OFFSET_SECONDS * 1000.0) as i64;
    let mut measured = 0;
    let mut off = 0;
    for m in &f.members {
        let Some(o) = m.offset_ms else { continue };
        measured += 1;
        if o.abs() > limit_ms {
            off += 1;
            out.push(found(
                "OutpostClockOffset",
                m.subject(),
                format!(
                    "The clock of {} is {:.1} s {} this node's.",
                    m.subject(),
                    o.abs() as f64 / 1000.0,
                    if o > 0 { "ahead of" } else { "behind" }
                ),
            ));
        }
    }
    if measured > 0 && off == 0 {
        out.push(well(
            "OutpostClockOffset",
            "clocks",
            format!("The clocks of {measured} nodes agree within {CLOCK_OFFSET_SECONDS} s."),
        ));
    }
}

fn versions(f: &SiteFacts, out: &mut Vec<Finding>) {
    let mut by: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for m in &f.members {
        if let Ok(h) = &m.health {
            by.entry(h.version.as_str()).or_default().push(m.id);
        }
    }
    match by.len() {
        0 => {}
        1 => out.push(well(
            "OutpostVersionMix",
            "versions",
            format!(
                "Every node that answers runs {}.",
                by.keys().next().copied().unwrap_or_default()
            ),
        )),
        _ => {
            let mix: Vec<String> = by
                .iter()
                .map(|(v, ids)| {
                    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                    format!("{v} on node {}", ids.join(", "))
                })
                .collect();
            out.push(found(
                "OutpostVersionMix",
                "versions",
                format!("The nodes run different versions: {}.", mix.join("; ")),
            ));
        }
    }
}

fn clients(f: &SiteFacts, out: &mut Vec<Finding>) {
    let Some(c) = f.clients else { return };
    if c.unseen > 0 {
        out.push(found(
            "OutpostClientsUnseen",
            "clients",
            format!(
                "{} of {} clients have not synced for {UNSEEN_DAYS} days ({} never did).",
                c.unseen, c.active, c.never
            ),
        ));
    } else {
        out.push(well(
            "OutpostClientsUnseen",
            "clients",
            format!("All {} clients synced within {UNSEEN_DAYS} days.", c.active),
        ));
    }
    match c.failing {
        Some(0) => out.push(well(
            "OutpostClientChecksFailing",
            "clients",
            "No client reports a failing health check.".into(),
        )),
        Some(n) => out.push(found(
            "OutpostClientChecksFailing",
            "clients",
            format!("{n} of {} clients report a failing health check.", c.active),
        )),
        None => {}
    }
}

fn rollouts(f: &SiteFacts, out: &mut Vec<Finding>) {
    for (id, why) in &f.halted {
        out.push(found(
            "OutpostRolloutHalted",
            format!("deployment {id}"),
            format!("Deployment {id} halted: {why}."),
        ));
    }
    if f.halted.is_empty() {
        out.push(well(
            "OutpostRolloutHalted",
            "rollouts",
            "No rollout is halted.".into(),
        ));
    }
    match &f.stopped_roll {
        Some((name, why)) => out.push(found(
            "OutpostUpgradeRollStopped",
            "upgrade",
            format!("The rolling upgrade to {name} stopped: {why}."),
        )),
        None => out.push(well(
            "OutpostUpgradeRollStopped",
            "upgrade",
            "No rolling upgrade is stopped.".into(),
        )),
    }
}

/// The newest backup any answering node made. When members have a backup schedule
/// (`[backup]`), the newest must be younger than twice the shortest interval among them (none
/// at all is a warning). Without any schedule: a site younger than a day that has none yet is
/// well (a fresh cluster is not yet worth a warning); after that, none or one older than
/// `BACKUP_DAYS` is a warning.
fn backup(f: &SiteFacts, now_ms: i64, out: &mut Vec<Finding>) {
    let healths = || f.members.iter().filter_map(|m| m.health.as_ref().ok());
    let last = healths().filter_map(|h| h.last_backup_ms).max();
    let every = healths()
        .filter_map(|h| h.backup_every_secs)
        .filter(|s| *s > 0)
        .min();
    if let Some(every) = every {
        let every_text = humantime::format_duration(std::time::Duration::from_secs(every));
        let limit_ms = i64::try_from(every).unwrap_or(i64::MAX / 2000) * 2000;
        match last {
            None => out.push(found(
                "OutpostBackupOld",
                "backup",
                format!(
                    "No node that answers has made a backup, though backups are scheduled every {every_text}."
                ),
            )),
            Some(at) => {
                let age_s = u64::try_from((now_ms - at).max(0) / 1000).unwrap_or(0);
                let text = format!(
                    "The last backup of the site was taken {} ago; the shortest schedule is every {every_text}.",
                    humantime::format_duration(std::time::Duration::from_secs(age_s))
                );
                if now_ms - at > limit_ms {
                    out.push(found("OutpostBackupOld", "backup", text));
                } else {
                    out.push(well("OutpostBackupOld", "backup", text));
                }
            }
        }
        return;
    }
    let young = f.created_at_ms.is_some_and(|c| now_ms - c < DAY_MS);
    match last {
        None if young => out.push(well(
            "OutpostBackupOld",
            "backup",
            "No backup yet (the cluster is less than a day old); take one with `outpost backup`."
                .into(),
        )),
        None => out.push(found(
            "OutpostBackupOld",
            "backup",
            "No node that answers has served a backup of the site.".into(),
        )),
        Some(at) => {
            let days = (now_ms - at).div_euclid(DAY_MS);
            let text = format!(
                "The last backup of the site was taken {} ago.",
                days_n(days)
            );
            if days >= BACKUP_DAYS {
                out.push(found("OutpostBackupOld", "backup", text));
            } else {
                out.push(well("OutpostBackupOld", "backup", text));
            }
        }
    }
}

/// `1 day`, `N days`.
fn days_n(n: i64) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

/// Bytes in the largest whole unit (KiB, MiB, GiB, TiB).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DiskUse;

    const NOW: i64 = 1_800_000_000_000;
    const DAY: i64 = 86_400;
    const GIB: u64 = 1 << 30;

    fn health(id: u64) -> NodeHealth {
        NodeHealth {
            node_id: id,
            version: "0.3.0".into(),
            ready: true,
            not_ready_reason: String::new(),
            disk: DiskUse {
                free_bytes: 50 * GIB,
                total_bytes: 100 * GIB,
                ..DiskUse::default()
            },
            growth_bytes_per_day: Some(1e6),
            node_cert_not_after: NOW / 1000 + 300 * DAY,
            last_backup_ms: Some(NOW - DAY_MS),
            backup_every_secs: None,
            now_ms: NOW,
            below_floor: false,
            floor_bytes: GIB,
        }
    }

    fn member(id: u64) -> MemberFacts {
        MemberFacts {
            id,
            name: format!("n{id}"),
            voter: true,
            health: Ok(health(id)),
            lag_entries: Some(0),
            offset_ms: Some(3),
        }
    }

    fn site() -> SiteFacts {
        SiteFacts {
            leader_id: Some(1),
            term: 4,
            members: vec![member(1), member(2), member(3)],
            ca_not_after: Some(NOW / 1000 + 3650 * DAY),
            admin_not_after: Some(NOW / 1000 + 300 * DAY),
            client_not_after: Some(NOW / 1000 + 300 * DAY),
            clients: Some(ClientCounts {
                active: 10,
                unseen: 0,
                never: 0,
                failing: Some(0),
            }),
            halted: vec![],
            stopped_roll: None,
            created_at_ms: Some(NOW - 30 * DAY_MS),
        }
    }

    fn bad(f: &[Finding]) -> Vec<(Severity, &str, &str, &str)> {
        f.iter()
            .filter(|f| f.severity > Severity::Ok)
            .map(|f| {
                (
                    f.severity,
                    f.rule.as_str(),
                    f.subject.as_str(),
                    f.text.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn a_well_site_says_what_it_checked() {
        let got = findings(&site(), NOW);
        assert!(bad(&got).is_empty(), "{got:?}");
        let texts: Vec<&str> = got.iter().map(|f| f.text.as_str()).collect();
        for want in [
            "node 1 (n1) leads in term 4; 3 of 3 voters answer.",
            "3 of 3 nodes answer and are ready.",
            "No follower is more than 100 entries behind the leader.",
            "3 nodes have over 10 % of their disk free",
            "No certificate ends within 30 days (the soonest, of node 1 (n1), in 300 days).",
            "The clocks of 3 nodes agree within 1 s.",
            "Every node that answers runs 0.3.0.",
            "All 10 clients synced within 7 days.",
            "No client reports a failing health check.",
            "No rollout is halted.",
            "No rolling upgrade is stopped.",
            "The last backup of the site was taken 1 day ago.",
        ] {
            assert!(
                texts.iter().any(|t| t.starts_with(want)),
                "{want} not in {texts:#?}"
            );
        }
        assert!(
            got.iter()
                .all(|f| crate::health::RULES.iter().any(|r| r.name == f.rule))
        );
    }

    /// Each rule alone: the facts that raise it, and the findings above Ok it gives.
    #[test]
    fn each_rule_finds_what_it_should_and_nothing_else() {
        use Severity::{Problem, Warning};
        type Change = fn(&mut SiteFacts);
        type Want = &'static [(Severity, &'static str, &'static str, &'static str)];
        let cases: &[(&str, Change, Want)] = &[
            ("all well", |_| {}, &[]),
            (
                "a killed follower",
                |s| s.members[2].health = Err("connection refused".into()),
                &[(
                    Problem,
                    "OutpostNodeDown",
                    "node 3 (n3)",
                    "node 3 (n3) does not answer: connection refused.",
                )],
            ),
            (
                "two voters down: no quorum, no leader",
                |s| {
                    s.leader_id = None;
                    s.members[1].health = Err("timed out".into());
                    s.members[2].health = Err("timed out".into());
                },
                &[
                    (
                        Problem,
                        "OutpostLostQuorum",
                        "cluster",
                        "Only 1 of 3 voters answer; 2 are needed to commit.",
                    ),
                    (
                        Problem,
                        "OutpostNoLeader",
                        "cluster",
                        "No leader is known: the site cannot commit changes.",
                    ),
                    (
                        Problem,
                        "OutpostNodeDown",
                        "node 2 (n2)",
                        "node 2 (n2) does not answer: timed out.",
                    ),
                    (
                        Problem,
                        "OutpostNodeDown",
                        "node 3 (n3)",
                        "node 3 (n3) does not answer: timed out.",
                    ),
                ],
            ),
            (
                "a node not ready",
                |s| {
                    let Ok(h) = &mut s.members[1].health else {
                        return;
                    };
                    h.ready = false;
                    h.not_ready_reason = "no leader known".into();
                },
                &[(
                    Problem,
                    "OutpostNodeNotReady",
                    "node 2 (n2)",
                    "node 2 (n2) is not ready: no leader known.",
                )],
            ),
            (
                "lag over the limit",
                |s| s.members[1].lag_entries = Some(101),
                &[(
                    Warning,
                    "OutpostFollowerLag",
                    "node 2 (n2)",
                    "node 2 (n2) is 101 entries behind the leader.",
                )],
            ),
            (
                "lag at the limit",
                |s| s.members[1].lag_entries = Some(100),
                &[],
            ),
            (
                "disk low",
                |s| {
                    let Ok(h) = &mut s.members[0].health else {
                        return;
                    };
                    h.disk.free_bytes = 9 * GIB;
                },
                &[(
                    Warning,
                    "OutpostDiskLow",
                    "node 1 (n1)",
                    "The data directory of node 1 (n1) has 9.0 GiB free of 100.0 GiB (9.0 %).",
                )],
            ),
            (
                "disk fills within 30 days",
                |s| {
                    let Ok(h) = &mut s.members[2].health else {
                        return;
                    };
                    h.growth_bytes_per_day = Some(2.0 * GIB as f64);
                },
                &[(
                    Warning,
                    "OutpostDiskHeadroom",
                    "node 3 (n3)",
                    "The data directory of node 3 (n3) grows 2.0 GiB a day: its 50.0 GiB free last 25 days.",
                )],
            ),
            (
                "a node below its disk floor (and so low on disk too)",
                |s| {
                    let Ok(h) = &mut s.members[2].health else {
                        return;
                    };
                    h.disk.free_bytes = GIB / 2;
                    h.below_floor = true;
                },
                &[
                    (
                        Problem,
                        "OutpostDiskFloor",
                        "node 3 (n3)",
                        "The data directory of node 3 (n3) has 512.0 MiB free, below its floor of 1.0 GiB: it refuses operator writes (HTTP 507) until space is freed.",
                    ),
                    (
                        Warning,
                        "OutpostDiskLow",
                        "node 3 (n3)",
                        "The data directory of node 3 (n3) has 512.0 MiB free of 100.0 GiB (0.5 %).",
                    ),
                ],
            ),
            (
                "disk fills in 50 days",
                |s| {
                    let Ok(h) = &mut s.members[2].health else {
                        return;
                    };
                    h.growth_bytes_per_day = Some(GIB as f64);
                },
                &[],
            ),
            (
                "CA at 29 days",
                |s| s.ca_not_after = Some(NOW / 1000 + 29 * DAY + 60),
                &[(
                    Warning,
                    "OutpostCertificateExpiring",
                    "certificate of the cluster CA",
                    "The certificate of the cluster CA ends in 29 days.",
                )],
            ),
            (
                "CA at 31 days",
                |s| s.ca_not_after = Some(NOW / 1000 + 31 * DAY),
                &[],
            ),
            (
                "a node's certificate at 29 days",
                |s| {
                    let Ok(h) = &mut s.members[1].health else {
                        return;
                    };
                    h.node_cert_not_after = NOW / 1000 + 29 * DAY + 60;
                },
                &[(
                    Warning,
                    "OutpostCertificateExpiring",
                    "certificate of node 2 (n2)",
                    "The certificate of node 2 (n2) ends in 29 days.",
                )],
            ),
            (
                "an admin certificate at 29 days",
                |s| s.admin_not_after = Some(NOW / 1000 + 29 * DAY + 60),
                &[(
                    Warning,
                    "OutpostCertificateExpiring",
                    "certificate of the soonest admin certificate seen in a day",
                    "The certificate of the soonest admin certificate seen in a day ends in 29 days.",
                )],
            ),
            (
                "a client certificate ended",
                |s| s.client_not_after = Some(NOW / 1000 - 2 * DAY),
                &[(
                    Problem,
                    "OutpostCertificateExpiring",
                    "certificate of the soonest client certificate seen in a day",
                    "The certificate of the soonest client certificate seen in a day has ended (2 days ago).",
                )],
            ),
            (
                "a client certificate at 31 days",
                |s| s.client_not_after = Some(NOW / 1000 + 31 * DAY),
                &[],
            ),
            (
                "a clock 1.5 s behind",
                |s| s.members[2].offset_ms = Some(-1500),
                &[(
                    Warning,
                    "OutpostClockOffset",
                    "node 3 (n3)",
                    "The clock of node 3 (n3) is 1.5 s behind this node's.",
                )],
            ),
            (
                "a clock 1 s ahead",
                |s| s.members[2].offset_ms = Some(1000),
                &[],
            ),
            (
                "two versions",
                |s| {
                    let Ok(h) = &mut s.members[2].health else {
                        return;
                    };
                    h.version = "0.3.1".into();
                },
                &[(
                    Warning,
                    "OutpostVersionMix",
                    "versions",
                    "The nodes run different versions: 0.3.0 on node 1, 2; 0.3.1 on node 3.",
                )],
            ),
            (
                "unseen and failing clients",
                |s| {
                    s.clients = Some(ClientCounts {
                        active: 10,
                        unseen: 3,
                        never: 1,
                        failing: Some(2),
                    })
                },
                &[
                    (
                        Warning,
                        "OutpostClientsUnseen",
                        "clients",
                        "3 of 10 clients have not synced for 7 days (1 never did).",
                    ),
                    (
                        Warning,
                        "OutpostClientChecksFailing",
                        "clients",
                        "2 of 10 clients report a failing health check.",
                    ),
                ],
            ),
            (
                "a halted rollout",
                |s| s.halted = vec![("d2".into(), "2 failures > 1 allowed".into())],
                &[(
                    Warning,
                    "OutpostRolloutHalted",
                    "deployment d2",
                    "Deployment d2 halted: 2 failures > 1 allowed.",
                )],
            ),
            (
                "a stopped roll",
                |s| {
                    s.stopped_roll =
                        Some(("outpost-0.3.1".into(), "node 2 did not come back".into()))
                },
                &[(
                    Problem,
                    "OutpostUpgradeRollStopped",
                    "upgrade",
                    "The rolling upgrade to outpost-0.3.1 stopped: node 2 did not come back.",
                )],
            ),
            (
                "never backed up, a month old",
                |s| {
                    for m in &mut s.members {
                        if let Ok(h) = &mut m.health {
                            h.last_backup_ms = None;
                        }
                    }
                },
                &[(
                    Warning,
                    "OutpostBackupOld",
                    "backup",
                    "No node that answers has served a backup of the site.",
                )],
            ),
            (
                "never backed up, an hour old",
                |s| {
                    s.created_at_ms = Some(NOW - 3_600_000);
                    for m in &mut s.members {
                        if let Ok(h) = &mut m.health {
                            h.last_backup_ms = None;
                        }
                    }
                },
                &[],
            ),
            (
                "backup 8 days old",
                |s| {
                    for m in &mut s.members {
                        if let Ok(h) = &mut m.health {
                            h.last_backup_ms = Some(NOW - 8 * DAY_MS);
                        }
                    }
                },
                &[(
                    Warning,
                    "OutpostBackupOld",
                    "backup",
                    "The last backup of the site was taken 8 days ago.",
                )],
            ),
            (
                "scheduled every 6h on one member, the newest 11h old: well",
                |s| {
                    for m in &mut s.members {
                        if let Ok(h) = &mut m.health {
                            h.last_backup_ms = Some(NOW - 11 * 3_600_000);
                        }
                    }
                    if let Ok(h) = &mut s.members[1].health {
                        h.backup_every_secs = Some(6 * 3600);
                    }
                },
                &[],
            ),
            (
                "scheduled every 6h and 1d, the newest 13h old on another member",
                |s| {
                    for m in &mut s.members {
                        if let Ok(h) = &mut m.health {
                            h.last_backup_ms = None;
                            h.backup_every_secs = Some(86_400);
                        }
                    }
                    if let Ok(h) = &mut s.members[0].health {
                        h.backup_every_secs = Some(6 * 3600);
                    }
                    if let Ok(h) = &mut s.members[2].health {
                        h.last_backup_ms = Some(NOW - 13 * 3_600_000);
                    }
                },
                &[(
                    Warning,
                    "OutpostBackupOld",
                    "backup",
                    "The last backup of the site was taken 13h ago; the shortest schedule is every 6h.",
                )],
            ),
            (
                "scheduled, none yet, even on a young site",
                |s| {
                    s.created_at_ms = Some(NOW - 3_600_000);
                    for m in &mut s.members {
                        if let Ok(h) = &mut m.health {
                            h.last_backup_ms = None;
                        }
                    }
                    if let Ok(h) = &mut s.members[2].health {
                        h.backup_every_secs = Some(30);
                    }
                },
                &[(
                    Warning,
                    "OutpostBackupOld",
                    "backup",
                    "No node that answers has made a backup, though backups are scheduled every 30s.",
                )],
            ),
        ];
        for (name, change, want) in cases {
            let mut s = site();
            change(&mut s);
            let got = findings(&s, NOW);
            assert_eq!(bad(&got), want.to_vec(), "{name}");
            for f in got.iter().filter(|f| f.severity > Severity::Ok) {
                assert!(!f.action.is_empty(), "{name}: {f:?}");
            }
        }
    }

    #[test]
    fn worst_first_and_the_report_exit_code() {
        let mut s = site();
        s.members[1].lag_entries = Some(500);
        s.members[2].health = Err("refused".into());
        let got = findings(&s, NOW);
        assert_eq!(got[0].severity, Severity::Problem);
        assert_eq!(got[1].severity, Severity::Warning);
        assert!(got.windows(2).all(|w| w[0].severity >= w[1].severity));
        let report = crate::wire::DoctorReport {
            node_id: 1,
            checked_at_ms: NOW,
            findings: got,
        };
        assert_eq!(report.worst().exit_code(), 2);
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(9 * GIB), "9.0 GiB");
    }
}
