//! `outpost bench years --clients N --years Y [--year-secs S]`: a 3-node loopback cluster of
//! real `outpost serve` processes driven through Y simulated years of a site of N clients,
//! time compressed by scaling: one simulated year lasts S real seconds, and
//! every rate and policy is scaled by the same factor (printed in the header).
//!
//! The site: N clients enrolled for real in year 0 (`bench::agents`); each client's facts
//! change about twice a simulated month (a package update); one rollout a simulated month to
//! every client, each reporting its result; one configuration change a simulated day; a
//! sample of agents syncing (they change only last-seen, which leaves no audit row since
//! issue 24); scheduled backups on node 1 (`outpost backup schedule --every <6 h scaled>
//! --keep 14`, raised to the node's 10 s floor when the scale makes it shorter); retention
//! through a signed bundle (`retention.audit` 400 d, `retention.inventory_history` 180 d,
//! `retention.results` 400 d, scaled). Per-client report rates are real-time limits of the
//! nodes: the bench raises them (`OUTPOST_INVENTORY_RATE`, `OUTPOST_INVENTORY_PER_HOUR`),
//! as the scale compresses a client's month into seconds.
//!
//! At the end of each simulated year the drive pauses and `years/measure.rs` takes one
//! row. The nodes' own clocks (retention cuts, the backup schedule) keep running during
//! the pause: a row is measured slightly after its year's end in simulated time.
//!
//! A part the build lacks (the backup schedule, retention) makes the bench refuse at once,
//! naming it: nothing is skipped or faked. Files: `years/schedule.rs` (the pure calendar),
//! `years/drive.rs` (the traffic), `years/measure.rs` (the row).

mod drive;
mod measure;
pub mod schedule;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::bench::agents;
use crate::harness::localcluster::{LocalCluster, LocalOptions};
use crate::shared::client::local_client;
use crate::shared::datadir::DataDir;
use drive::{Drive, Site};
use measure::Measures;
use schedule::Scale;

/// The default length of a simulated year: 10,000 clients x 5 years (about 360,000 agent
/// writes a year) in under about 45 minutes on a 2-core machine, measurements included.
pub const DEFAULT_YEAR_SECS: f64 = 360.0;
/// The goals the table flags: state.db under 2 GB, every operation under 2 s.
pub const GOAL_STATE_BYTES: u64 = 2_000_000_000;
pub const GOAL_OP_SECS: f64 = 2.0;

pub struct YearsBench {
    pub clients: usize,
    pub years: u64,
    pub year_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct YearsReport {
    pub clients: usize,
    pub years: u64,
    pub year_secs: f64,
    /// Simulated seconds per real second.
    pub factor: f64,
    pub backup_every_s: u64,
    /// Whether the node's 10 s floor raised the scaled backup interval.
    pub backup_every_raised: bool,
    /// Each retention key and its scaled value.
    pub retention: Vec<(String, String)>,
    /// Agents syncing during the drive, every `SYNC_EVERY`.
    pub sampled_syncs: usize,
    pub enroll_s: f64,
    pub rows: Vec<YearRow>,
}

#[derive(Debug, Serialize)]
pub struct YearRow {
    pub year: u64,
    pub drive: Drive,
    #[serde(flatten)]
    pub measures: Measures,
}

impl YearRow {
    /// Each timed operation of the row, named as in the table.
    pub fn operations(&self) -> Vec<(&'static str, f64)> {
        let m = &self.measures;
        let mut ops = vec![("audit verify", m.verify_s)];
        if let Some(full) = m.verify_full_s {
            ops.push(("audit verify --full", full));
        }
        ops.extend([
            ("Audit page", m.page_s),
            ("backup", m.backup_s),
            ("catch-up", m.catch_up_s),
            ("restart", m.restart_s),
        ]);
        ops
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// A time in seconds, flagged `!` over the goal.
fn secs(s: f64) -> String {
    let flag = if s >= GOAL_OP_SECS { "!" } else { "" };
    format!("{s:.2}{flag}")
}

/// The simulated days `retention.audit` keeps (the first of `RETENTION_DAYS`).
const AUDIT_DAYS: f64 = schedule::RETENTION_DAYS[0].1;

impl YearsReport {
    /// The years at whose end records older than the audit policy existed and yet none had
    /// been compacted (every record still live): retention did not work.
    pub fn uncompacted(&self) -> Vec<u64> {
        self.rows
            .iter()
            .filter(|r| r.year as f64 * 365.25 > AUDIT_DAYS)
            .filter(|r| r.measures.audit_live >= r.measures.audit_head)
            .map(|r| r.year)
            .collect()
    }

    /// One line: whether every row met the goals, naming the worst figures.
    pub fn goals(&self) -> String {
        let state = self
            .rows
            .iter()
            .map(|r| r.measures.state_db_bytes)
            .max()
            .unwrap_or(0);
        let slowest = self
            .rows
            .iter()
            .flat_map(|r| r.operations().into_iter().map(move |(n, s)| (r.year, n, s)))
            .max_by(|a, b| a.2.total_cmp(&b.2));
        let state_ok = state < GOAL_STATE_BYTES;
        let mut line = format!(
            "goals: state.db < 2 GB {} (largest {} MB); every operation < 2 s ",
            if state_ok { "met" } else { "NOT met" },
            mb(state)
        );
        match slowest {
            Some((year, name, s)) => line.push_str(&format!(
                "{} (slowest: {name} in year {year}, {s:.2} s)",
                if s < GOAL_OP_SECS { "met" } else { "NOT met" }
            )),
            None => line.push_str("(no rows)"),
        }
        line
    }
}

impl std::fmt::Display for YearsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let retention: Vec<String> = self
            .retention
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        writeln!(
            f,
            "bench years: {} clients, {} simulated years on a 3-node loopback cluster; one year = {:.0} s real (factor {:.0}: one simulated day = {:.3} s)",
            self.clients,
            self.years,
            self.year_secs,
            self.factor,
            86_400.0 / self.factor
        )?;
        writeln!(
            f,
            "per simulated year: {} enrollments in year 0 only (took {:.1} s); {} inventory changes per client (about two a month: one package update each); {} rollouts to every client, each client reporting its result; {} configuration changes; {} agents syncing every {} s real (syncs touch only last-seen, which leaves no audit row)",
            self.clients,
            self.enroll_s,
            schedule::INVENTORY_PER_CLIENT,
            schedule::ROLLOUTS,
            schedule::CONFIG_CHANGES,
            self.sampled_syncs,
            drive::SYNC_EVERY.as_secs()
        )?;
        writeln!(
            f,
            "scheduled backups on node 1: every {} s, keep {}{}; retention (signed bundle): {}",
            self.backup_every_s,
            schedule::BACKUP_KEEP,
            if self.backup_every_raised {
                " (6 h scaled is shorter: raised to the node's 10 s floor)"
            } else {
                " (6 h scaled)"
            },
            retention.join(", ")
        )?;
        writeln!(
            f,
            "sizes on node 1 with their -wal, MB; times in s (! = over the 2 s goal); audit = newest seq / live records; sched = scheduled backup files kept"
        )?;
        writeln!(
            f,
            "{:>4} {:>7} {:>9} {:>9} {:>10} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7}",
            "year",
            "drive s",
            "state.db",
            "raft.db",
            "audit",
            "live",
            "verify",
            "--full",
            "page",
            "backup",
            "bak MB",
            "catchup",
            "restart",
            "sched",
            "writes",
            "failed"
        )?;
        for r in &self.rows {
            let m = &r.measures;
            let d = &r.drive;
            let writes = d.inventory.ok + d.results.ok + d.config.ok;
            let failed = d.inventory.failed
                + d.results.failed
                + d.config.failed
                + d.rollouts.failed
                + d.syncs.failed;
            writeln!(
                f,
                "{:>4} {:>7.0} {:>9} {:>9} {:>10} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7}",
                r.year,
                d.seconds,
                mb(m.state_db_bytes),
                mb(m.raft_db_bytes),
                m.audit_head,
                m.audit_live,
                secs(m.verify_s),
                m.verify_full_s.map(secs).unwrap_or_else(|| "-".into()),
                secs(m.page_s),
                secs(m.backup_s),
                mb(m.backup_bytes),
                secs(m.catch_up_s),
                secs(m.restart_s),
                m.scheduled_files,
                writes,
                failed
            )?;
        }
        if self.rows.iter().any(|r| r.measures.verify_full_s.is_none()) {
            writeln!(f, "--full: this build's `audit verify` has no --full")?;
        }
        for r in self.uncompacted() {
            writeln!(
                f,
                "year {r}: no audit record was compacted, though the site is older than retention.audit ({AUDIT_DAYS:.0} simulated days)"
            )?;
        }
        write!(f, "{}", self.goals())
    }
}

/// Runs the benchmark (see the module's documentation).
pub async fn bench(opts: YearsBench) -> Result<YearsReport> {
    if opts.clients == 0 || opts.years == 0 {
        bail!("--clients and --years must be positive");
    }
    let scale = Scale::new(opts.year_secs).map_err(anyhow::Error::msg)?;
    let root = tempfile::Builder::new()
        .prefix("outpost-bench-years-")
        .tempdir()?;
    let exe = std::env::current_exe()?;
    let key = root.path().join("release");
    outpost_bundles::keygen(&key)?;
    let local = LocalOptions {
        log_level: "warn".into(),
        env: vec![
            // Every simulated agent enrolls from this host.
            ("OUTPOST_ENROLL_RATE".into(), "5000".into()),
            // A client's month lasts seconds here: its report rates are scaled with it.
            ("OUTPOST_INVENTORY_RATE".into(), "100000".into()),
            ("OUTPOST_INVENTORY_PER_HOUR".into(), "1000000".into()),
        ],
        init_args: vec!["--bundle-trust".into(), format!("{}.pub", key.display())],
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(&root.path().join("cluster"), &exe, 3, local).await?;
    let result = run(&mut c, root.path(), &exe, &key, &opts, scale).await;
    for i in 0..c.nodes.len() {
        c.kill9(i);
    }
    result
}

/// Everything after the cluster started; the caller stops it whatever this returns.
async fn run(
    c: &mut LocalCluster,
    root: &std::path::Path,
    exe: &std::path::Path,
    key: &std::path::Path,
    opts: &YearsBench,
    scale: Scale,
) -> Result<YearsReport> {
    let work = root.join("work");
    let schedule_dir = root.join("scheduled-backups");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&schedule_dir)?;
    let pass = root.join("passphrase");
    std::fs::write(&pass, "a bench passphrase\n")?;

    set_retention(c, &work, key, &scale).await?;
    let (backup_every_s, backup_every_raised) = scale.backup_every();
    c.cli(
        0,
        &[
            "backup",
            "schedule",
            "--every",
            &format!("{backup_every_s}s"),
            "--keep",
            &schedule::BACKUP_KEEP.to_string(),
            "--dir",
            &schedule_dir.to_string_lossy(),
            "--passphrase-file",
            &pass.to_string_lossy(),
        ],
    )
    .context(
        "scheduled backups are a part of this bench, and `outpost backup schedule` failed (a build without them needs r24-backup)",
    )?;

    let t = Instant::now();
    let fleet = agents::enroll(&DataDir::new(&c.nodes[0].dir), opts.clients, "bench")
        .await
        .context("enrolling the clients")?;
    let enroll_s = t.elapsed().as_secs_f64();
    let site = Site {
        agents: Arc::new(fleet.agents),
        node_dir: c.nodes[0].dir.clone(),
        exe: exe.to_path_buf(),
        key: key.to_path_buf(),
        work: work.clone(),
        scale,
    };
    let mut rows = Vec::new();
    for year in 1..=opts.years {
        let drive = drive::year(&site, year).await?;
        let measures = measure::year(c, year, &work, &schedule_dir, &pass).await?;
        let row = YearRow {
            year,
            drive,
            measures,
        };
        tracing::info!(year, row = ?row, "bench years: a simulated year");
        rows.push(row);
    }
    Ok(YearsReport {
        clients: opts.clients,
        years: opts.years,
        year_secs: scale.year_secs,
        factor: scale.factor(),
        backup_every_s,
        backup_every_raised,
        retention: scale
            .retention()
            .into_iter()
            .map(|(k, v, _)| (k.to_string(), v))
            .collect(),
        sampled_syncs: site.sampled(),
        enroll_s,
        rows,
    })
}

/// Sets the retention policy through a signed bundle (channel `retention`), after checking
/// that this build knows it: a build with retention refuses `retention.*` from the API
/// (signed bundles only), one without accepts it as any key and would never compact.
async fn set_retention(
    c: &LocalCluster,
    work: &std::path::Path,
    key: &std::path::Path,
    scale: &Scale,
) -> Result<()> {
    let probe = crate::wire::ConfigSetRequest {
        key: "retention.audit".into(),
        value: "400d".into(),
        scope: crate::wire::Scope::Global,
    };
    let answer = local_client(&c.nodes[0].dir)
        .call_raw(Method::PUT, "/v1/config", Some(&probe))
        .await;
    if answer.is_ok() {
        bail!(
            "this build has no retention: `config set retention.audit` was accepted as an ordinary key (retention.* is signed-only where retention exists; a build without it needs r24-storage)"
        );
    }
    std::fs::write(work.join("retention.toml"), schedule::retention_toml(scale))?;
    let spec = work.join("retention-spec.toml");
    std::fs::write(
        &spec,
        "channel = \"retention\"\nversion = 1\n[[payload]]\npath = \"retention.toml\"\nkind = \"config\"\nname = \"retention\"\n",
    )?;
    let file = work.join("retention.obundle");
    let signing = outpost_bundles::load_signing_key(key)?;
    outpost_bundles::create_bundle(&spec, &[signing], &file, crate::shared::now_secs())?;
    c.cli(0, &["bundle", "import", &file.to_string_lossy()])
        .context("importing the retention bundle")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use drive::Tally;

    fn row(year: u64, state: u64, verify: f64, full: Option<f64>) -> YearRow {
        YearRow {
            year,
            drive: Drive {
                seconds: 20.0,
                inventory: Tally { ok: 480, failed: 0 },
                results: Tally { ok: 240, failed: 1 },
                config: Tally { ok: 365, failed: 0 },
                rollouts: Tally { ok: 12, failed: 0 },
                syncs: Tally { ok: 40, failed: 0 },
            },
            measures: Measures {
                state_db_bytes: state,
                raft_db_bytes: 3_000_000,
                audit_head: 1_500 * year,
                audit_live: 1_200,
                verify_s: verify,
                verify_full_s: full,
                page_s: 0.05,
                backup_s: 0.4,
                backup_bytes: 1_000_000,
                scheduled_files: 3,
                scheduled_newest_bytes: 900_000,
                catch_up_s: 1.5,
                restart_s: 0.8,
            },
        }
    }

    fn report(rows: Vec<YearRow>) -> YearsReport {
        let scale = Scale::new(20.0).expect("a scale");
        YearsReport {
            clients: 20,
            years: rows.len() as u64,
            year_secs: 20.0,
            factor: scale.factor(),
            backup_every_s: 10,
            backup_every_raised: true,
            retention: vec![("retention.audit".into(), "22s".into())],
            sampled_syncs: 5,
            enroll_s: 1.0,
            rows,
        }
    }

    #[test]
    fn the_table_has_a_row_a_year_and_flags_what_misses_a_goal() {
        let r = report(vec![
            row(1, 5_000_000, 0.1, Some(0.2)),
            row(2, 2_500_000_000, 2.5, None),
        ]);
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let rows: Vec<&&str> = lines
            .iter()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.parse::<u64>().is_ok())
            })
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[0].contains(" 5.0 "), "{}", rows[0]);
        assert!(rows[1].contains("2500.0"), "{}", rows[1]);
        assert!(rows[1].contains("2.50!"), "{}", rows[1]);
        assert!(!rows[0].contains('!'), "{}", rows[0]);
        // Writes accepted and requests failed, summed over the kinds.
        assert!(
            rows[0].ends_with(&format!("{:>8} {:>7}", 1085, 1)),
            "{}",
            rows[0]
        );
        assert!(text.contains("factor 1577880"), "{text}");
        assert!(text.contains("raised to the node's 10 s floor"), "{text}");
        assert!(
            text.contains("this build's `audit verify` has no --full"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "goals: state.db < 2 GB NOT met (largest 2500.0 MB); every operation < 2 s NOT met (slowest: audit verify in year 2, 2.50 s)"
            ),
            "{text}"
        );
    }

    #[test]
    fn goals_met_when_every_row_is_under_them() {
        let r = report(vec![row(1, 5_000_000, 0.1, Some(0.2))]);
        assert_eq!(
            r.goals(),
            "goals: state.db < 2 GB met (largest 5.0 MB); every operation < 2 s met (slowest: catch-up in year 1, 1.50 s)"
        );
        assert!(!r.to_string().contains("has no --full"));
        // Year 1 is younger than the 400-day policy: nothing to compact yet.
        assert!(r.uncompacted().is_empty());
        let mut stale = row(2, 5_000_000, 0.1, Some(0.2));
        stale.measures.audit_live = stale.measures.audit_head;
        let r = report(vec![row(1, 5_000_000, 0.1, Some(0.2)), stale]);
        assert_eq!(r.uncompacted(), vec![2]);
        assert!(r.to_string().contains(
            "year 2: no audit record was compacted, though the site is older than retention.audit (400 simulated days)"
        ));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["rows"][0]["audit_live"], 1_200);
        assert_eq!(json["rows"][0]["drive"]["results"]["failed"], 1);
    }
}
