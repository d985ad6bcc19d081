//! What `bench years` measures at the end of each simulated year, with the drive paused:
//! file sizes, the audit's extent, `audit verify` (incremental and `--full`), the console's
//! Audit page, a backup, a new node's catch-up and a follower's restart. Each through the
//! real binary or the real routes, as an operator would.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::console::{sign_in, time_audit_page};
use crate::harness::localcluster::LocalCluster;
use crate::shared::client::local_client;
use crate::wire::AuditRecord;

/// How long a joining node may take to catch up, and a restarted one to be ready.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(900);
const READY_DEADLINE: Duration = Duration::from_secs(300);
/// How long a manual backup waits for a scheduled one to end.
const BUSY_DEADLINE: Duration = Duration::from_secs(300);

/// The figures of one simulated year.
#[derive(Debug, Clone, Serialize)]
pub struct Measures {
    /// Node 1's state.db and raft.db, each with its -wal.
    pub state_db_bytes: u64,
    pub raft_db_bytes: u64,
    /// The newest audit record's seq, and the records still live (head - base).
    pub audit_head: u64,
    pub audit_live: u64,
    /// `outpost audit verify` on node 1 (incremental), seconds.
    pub verify_s: f64,
    /// `outpost audit verify --full`, seconds (None: this build has no `--full`).
    pub verify_full_s: Option<f64>,
    /// One GET of the console's Audit page on node 1 with a session.
    pub page_s: f64,
    /// `outpost backup -o FILE` on node 1, seconds, and the file's size.
    pub backup_s: f64,
    pub backup_bytes: u64,
    /// Scheduled backups in the schedule's directory now, and the newest one's size.
    pub scheduled_files: usize,
    pub scheduled_newest_bytes: u64,
    /// A fourth node: `outpost join` with a token until it is ready with the leader's
    /// applied index at the join.
    pub catch_up_s: f64,
    /// A follower: stopped, started, until ready.
    pub restart_s: f64,
}

/// Measures the cluster at the end of simulated year `year`; `work` holds temporary
/// files, `schedule_dir` the scheduled backups, `pass` a passphrase file.
pub async fn year(
    c: &mut LocalCluster,
    year: u64,
    work: &Path,
    schedule_dir: &Path,
    pass: &Path,
) -> Result<Measures> {
    let dir = c.nodes[0].dir.clone();
    let (state_db_bytes, raft_db_bytes) = (db_bytes(&dir, "state.db"), db_bytes(&dir, "raft.db"));
    let (audit_head, audit_live) = audit_extent(&dir).await?;

    let t = Instant::now();
    c.cli(0, &["audit", "verify"]).context("audit verify")?;
    let verify_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let verify_full_s = match c.cli(0, &["audit", "verify", "--full"]) {
        Ok(_) => Some(t.elapsed().as_secs_f64()),
        Err(e) if format!("{e:#}").contains("unexpected argument '--full'") => None,
        Err(e) => return Err(e.context("audit verify --full")),
    };

    let cookie = sign_in(c, 0, &format!("bench-year-{year}")).await?;
    let page_s = time_audit_page(c, 0, &cookie).await?.as_secs_f64();

    let file = work.join(format!("year-{year}.obk"));
    let backup_s = backup(c, &file, pass).await?;
    let backup_bytes = std::fs::metadata(&file)?.len();
    std::fs::remove_file(&file)?;
    let (scheduled_files, scheduled_newest_bytes) = scheduled(schedule_dir)?;

    let catch_up_s = catch_up(c).await?;
    let restart_s = restart(c).await?;
    Ok(Measures {
        state_db_bytes,
        raft_db_bytes,
        audit_head,
        audit_live,
        verify_s,
        verify_full_s,
        page_s,
        backup_s,
        backup_bytes,
        scheduled_files,
        scheduled_newest_bytes,
        catch_up_s,
        restart_s,
    })
}

/// `outpost backup -o FILE` on node 1, timed. The node makes one backup at a time: when
/// its schedule is writing one, the manual one is refused ("already being made") and is
/// asked again, as an operator would, and only the attempt that ran is timed.
async fn backup(c: &LocalCluster, file: &Path, pass: &Path) -> Result<f64> {
    let deadline = Instant::now() + BUSY_DEADLINE;
    loop {
        let t = Instant::now();
        let args = [
            "backup",
            "-o",
            &file.to_string_lossy(),
            "--passphrase-file",
            &pass.to_string_lossy(),
        ];
        match c.cli(0, &args) {
            Ok(_) => return Ok(t.elapsed().as_secs_f64()),
            Err(e)
                if format!("{e:#}").contains("already being made") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context("outpost backup")),
        }
    }
}

/// A database file with its write-ahead log (what it holds on disk, checkpointed or not).
fn db_bytes(dir: &Path, name: &str) -> u64 {
    [name.to_string(), format!("{name}-wal")]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// The newest audit record's seq and how many records are live: newest - oldest + 1.
async fn audit_extent(dir: &Path) -> Result<(u64, u64)> {
    let client = local_client(dir);
    let newest: Vec<AuditRecord> = client
        .call(Method::GET, "/v1/audit?limit=1", None::<&()>)
        .await?;
    let oldest: Vec<AuditRecord> = client
        .call(Method::GET, "/v1/audit?after=0&limit=1", None::<&()>)
        .await?;
    match (newest.last(), oldest.first()) {
        (Some(n), Some(o)) => Ok((n.seq, n.seq.saturating_sub(o.seq) + 1)),
        _ => bail!("node 1's audit log is empty"),
    }
}

/// The scheduled backup files in `dir` and the newest one's size.
fn scheduled(dir: &Path) -> Result<(usize, u64)> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("outpost-backup-") && name.ends_with(".obk") {
            files.push((name, e.metadata()?.len()));
        }
    }
    // The names end in a UTC time stamp: the greatest is the newest.
    files.sort();
    Ok((files.len(), files.last().map(|f| f.1).unwrap_or(0)))
}

/// A fourth node joins with a token and is timed until it is ready with an applied index
/// at least the leader's at the join; then it is removed and its directory deleted.
async fn catch_up(c: &mut LocalCluster) -> Result<f64> {
    let leader = c.leader(Duration::from_secs(30)).await?;
    let target = c.status(leader).await?.applied_index;
    let t = Instant::now();
    let i = c.join_node().context("joining a fourth node")?;
    c.serve(i).await?;
    c.wait_for(i, CATCH_UP_DEADLINE, "caught up and ready", |s| {
        s.applied_index >= target && s.ready.as_ref().is_some_and(|r| r.ready)
    })
    .await?;
    let catch_up_s = t.elapsed().as_secs_f64();
    let id = c.status(i).await?.node_id;
    c.cli(0, &["node", "remove", &id.to_string()])
        .context("removing the fourth node")?;
    c.stop(i, Duration::from_secs(10))?;
    std::fs::remove_dir_all(&c.nodes[i].dir)
        .with_context(|| format!("deleting {}", c.nodes[i].dir.display()))?;
    c.wait_voters(3, Duration::from_secs(60)).await?;
    Ok(catch_up_s)
}

/// A follower other than node 1 is stopped (SIGTERM), started, and timed until ready.
async fn restart(c: &mut LocalCluster) -> Result<f64> {
    let leader = c.leader(Duration::from_secs(30)).await?;
    let f = (1..3)
        .find(|&i| i != leader)
        .context("a follower to restart")?;
    c.stop(f, Duration::from_secs(30))?;
    let t = Instant::now();
    c.serve(f).await?;
    c.wait_for(f, READY_DEADLINE, "ready", |s| {
        s.ready.as_ref().is_some_and(|r| r.ready)
    })
    .await?;
    Ok(t.elapsed().as_secs_f64())
}
