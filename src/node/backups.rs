//! The node's scheduled backups: the `[backup]` table of its node.toml (`every`, `keep`, `dir`,
//! `passphrase_file`), which `outpost backup schedule` writes while the node runs.
//!
//! One task per node (spawned by `start`). Every second it looks at node.toml's mtime and
//! re-reads the file when it changed, and at least every 10 s anyway, so a new schedule (or
//! `--off`) applies without a restart. With a schedule, a backup is due when the newest of this
//! node's own files in DIR is older than `every` (its time is in its name), so a restarted node
//! does not make one twice. A backup is made by the same code as `POST /v1/backup`
//! (`crate::api::backup::make`: read index first, one at a time, signed header, the CA key
//! sealed with the passphrase), written into a temp file in DIR (0600), fsynced, renamed to
//! `outpost-backup-<cluster id>-<node id>-<yyyymmddThhmmssZ>.obk` and DIR fsynced; then the
//! oldest of this node's own files beyond `keep` are deleted (only names of that exact pattern:
//! other nodes' and other clusters' files in the same DIR are never touched). The last good one
//! goes into `last-backup.json` (doctor reads it) with the interval. A failure is logged,
//! counted (`/metrics`, `/v1/status`) and retried 10 s later; it never stops the node.
//!
//! Every node with a schedule backs up on its own (not only the leader): a backup is of the
//! replicated state, so any member's is as good, and each member's schedule is its own file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};

use crate::api::AppState;
use crate::shared::backup::{MAGIC, read_passphrase};
use crate::shared::datadir::{BackupSchedule, DataDir};
use crate::wire::{BackupFileView, BackupScheduleView};

/// How often the task wakes: checks node.toml's mtime and whether a backup is due.
const TICK: Duration = Duration::from_secs(1);
/// node.toml is read again at least this often, mtime or not.
const REREAD: Duration = Duration::from_secs(10);
/// A failed backup is tried again after this long.
const RETRY_MS: i64 = 10_000;
/// Most directory entries looked at in DIR.
const MAX_ENTRIES: usize = 100_000;
/// Suffix of a finished backup file.
const SUFFIX: &str = ".obk";
/// Suffix of one being written (its name starts with a dot).
const PARTIAL: &str = ".partial";

/// Runs this node's backup schedule until the node stops.
pub async fn run(st: Arc<AppState>, dd: DataDir) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<(SystemTime, std::time::Instant)> = None;
    let mut schedule: Option<BackupSchedule> = None;
    let mut newest: Option<i64> = None;
    let mut retry_at = 0i64;
    loop {
        tick.tick().await;
        let path = dd.node_file();
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let stale = seen.is_none_or(|(m, at)| m != mtime || at.elapsed() >= REREAD);
        if stale {
            seen = Some((mtime, std::time::Instant::now()));
            let d = dd.clone();
            let read = tokio::task::spawn_blocking(move || d.load_node_file()).await;
            let next = match read {
                Ok(Ok(file)) => file.backup,
                Ok(Err(e)) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "node.toml does not load; the backup schedule stays as it was"
                    );
                    schedule.clone()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading node.toml failed");
                    schedule.clone()
                }
            };
            if next != schedule {
                match &next {
                    Some(s) => tracing::info!(
                        every = %humantime::format_duration(s.every),
                        keep = s.keep,
                        dir = %s.dir.display(),
                        sealed = s.passphrase_file.is_some(),
                        "backup schedule set"
                    ),
                    None => tracing::info!("backup schedule off"),
                }
                st.own.set_schedule(next.as_ref().map(view));
                newest = match &next {
                    Some(s) => {
                        let (dir, cid, id) = (s.dir.clone(), st.cluster_id.clone(), st.node_id);
                        tokio::task::spawn_blocking(move || newest_own(&dir, &cid, id))
                            .await
                            .unwrap_or(None)
                    }
                    None => None,
                };
                retry_at = 0;
                schedule = next;
            }
        }
        let Some(s) = &schedule else { continue };
        let now = outpost_raft::now_ms();
        if now < retry_at || !due(newest, s.every, now) {
            continue;
        }
        match once(&st, s).await {
            Ok(file) => {
                tracing::info!(path = %file.path, bytes = file.bytes, "scheduled backup written");
                newest = Some(file.at_ms);
                let own = st.own.clone();
                let every = s.every.as_secs();
                match tokio::task::spawn_blocking(move || own.record_scheduled(file, every)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "the last backup was not recorded"),
                    Err(e) => tracing::warn!(error = %e, "the last backup was not recorded"),
                }
                let (dir, cid, id, keep) =
                    (s.dir.clone(), st.cluster_id.clone(), st.node_id, s.keep);
                match tokio::task::spawn_blocking(move || prune(&dir, &cid, id, keep)).await {
                    Ok(Ok(gone)) => {
                        for p in gone {
                            tracing::info!(path = %p.display(), "old scheduled backup deleted");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = format!("{e:#}"), "deleting old backups failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "deleting old backups failed"),
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                tracing::warn!(error = %message, dir = %s.dir.display(), "scheduled backup failed; trying again in 10 s");
                st.own.record_failure(now, message);
                retry_at = now + RETRY_MS;
            }
        }
    }
}

/// Makes one backup into `s.dir`: the file written, fsynced and renamed into place.
async fn once(st: &AppState, s: &BackupSchedule) -> Result<BackupFileView> {
    let passphrase = match s.passphrase_file.clone() {
        None => None,
        Some(p) => Some(tokio::task::spawn_blocking(move || read_passphrase(&p)).await??),
    };
    let made = crate::api::backup::make(st, passphrase)
        .await
        .map_err(|e| anyhow!("{}", e.message()))?;
    let at_ms = made.header.created_ms;
    let name = file_name(&st.cluster_id, st.node_id, at_ms);
    let dir = s.dir.clone();
    let (path, bytes) =
        tokio::task::spawn_blocking(move || write_into(&dir, &name, made)).await??;
    Ok(BackupFileView {
        at_ms,
        path: path.display().to_string(),
        bytes,
    })
}

/// Writes `made` as `dir/name`: a private temp file, fsynced, renamed, the directory fsynced
/// (when this returns, the file is on disk under its name). Blocking.
fn write_into(
    dir: &Path,
    name: &str,
    mut made: crate::api::backup::Made,
) -> Result<(PathBuf, u64)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}{PARTIAL}"));
    let mut write = || -> Result<u64> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        out.write_all(MAGIC)?;
        out.write_all(&made.line)?;
        let n = std::io::copy(&mut made.state, &mut out)?;
        if n != made.header.state_bytes {
            return Err(anyhow!(
                "copied {n} bytes of the state, the header says {}",
                made.header.state_bytes
            ));
        }
        out.flush()?;
        out.sync_all()?;
        if path.exists() {
            return Err(anyhow!("{} exists already", path.display()));
        }
        crate::shared::files::rename_durably(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(made.total_bytes())
    };
    match write() {
        Ok(n) => Ok((path, n)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("writing a backup into {}", dir.display())))
        }
    }
}

/// The time of the newest of this node's own backups in `dir` (None: none, or `dir` cannot be
/// read: the first attempt then says why). Removes this node's leftover partial files.
/// Blocking.
fn newest_own(dir: &Path, cluster_id: &str, node_id: u64) -> Option<i64> {
    let names = list(dir).ok()?;
    for n in &names {
        let partial = n.strip_prefix('.').and_then(|n| n.strip_suffix(PARTIAL));
        if partial.is_some_and(|n| parse_own(n, cluster_id, node_id).is_some()) {
            let _ = std::fs::remove_file(dir.join(n));
        }
    }
    names
        .iter()
        .filter_map(|n| parse_own(n, cluster_id, node_id))
        .max()
}

/// Deletes this node's own backups in `dir` beyond the newest `keep`; returns their paths.
fn prune(dir: &Path, cluster_id: &str, node_id: u64, keep: u32) -> Result<Vec<PathBuf>> {
    let names = list(dir)?;
    let mut gone = Vec::new();
    for name in to_delete(&names, cluster_id, node_id, keep) {
        let p = dir.join(&name);
        std::fs::remove_file(&p).with_context(|| format!("deleting {}", p.display()))?;
        gone.push(p);
    }
    if !gone.is_empty() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(gone)
}

fn list(dir: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .take(MAX_ENTRIES)
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

/// The schedule as `/v1/status` shows it.
pub fn view(s: &BackupSchedule) -> BackupScheduleView {
    BackupScheduleView {
        every_secs: s.every.as_secs(),
        keep: s.keep,
        dir: s.dir.display().to_string(),
        sealed: s.passphrase_file.is_some(),
    }
}

/// `outpost-backup-<cluster id>-<node id>-<yyyymmddThhmmssZ>.obk` (UTC, to the second).
pub fn file_name(cluster_id: &str, node_id: u64, at_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    let stamp: String = humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("outpost-backup-{cluster_id}-{node_id}-{stamp}{SUFFIX}")
}

/// The time (unix ms, whole seconds) in the name of one of this node's own backups; None for
/// any other name.
pub fn parse_own(name: &str, cluster_id: &str, node_id: u64) -> Option<i64> {
    let prefix = format!("outpost-backup-{cluster_id}-{node_id}-");
    let stamp = name.strip_prefix(&prefix)?.strip_suffix(SUFFIX)?;
    let b = stamp.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 16 || !digits(0..8) || b[8] != b'T' || !digits(9..15) || b[15] != b'Z' {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let t = humantime::parse_rfc3339(&text).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

/// A backup is due when there is none, or the newest is `every` old (to the second its name
/// keeps). A newest one in the future (a clock set back) is not waited for longer than
/// `every`.
pub fn due(newest_ms: Option<i64>, every: Duration, now_ms: i64) -> bool {
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    match newest_ms {
        None => true,
        Some(at) => now_ms.saturating_sub(at) >= every_ms || at - now_ms > every_ms,
    }
}

/// Of `names`, this node's own backups beyond the newest `keep`, oldest first.
pub fn to_delete(names: &[String], cluster_id: &str, node_id: u64, keep: u32) -> Vec<String> {
    let mut own: Vec<(i64, &String)> = names
        .iter()
        .filter_map(|n| Some((parse_own(n, cluster_id, node_id)?, n)))
        .collect();
    own.sort();
    let extra = own.len().saturating_sub(keep as usize);
    own.into_iter()
        .take(extra)
        .map(|(_, n)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    #[test]
    fn names_carry_cluster_node_and_utc_time() {
        let n = file_name("c-1", 2, T + 999);
        assert_eq!(n, "outpost-backup-c-1-2-20231114T221320Z.obk");
        let cases: [(&str, Option<i64>); 8] = [
            ("outpost-backup-c-1-2-20231114T221320Z.obk", Some(T)),
            ("outpost-backup-c-1-3-20231114T221320Z.obk", None),
            ("outpost-backup-c-2-2-20231114T221320Z.obk", None),
            ("outpost-backup-c-1-2-20231114T221320Z.obk.partial", None),
            ("outpost-backup-c-1-2-20231114-221320Z.obk", None),
            ("outpost-backup-c-1-2-20231314T221320Z.obk", None),
            ("outpost-backup-c-1-2-2023111T221320Z.obk", None),
            ("backup.obk", None),
        ];
        for (name, want) in cases {
            assert_eq!(parse_own(name, "c-1", 2), want, "{name}");
        }
    }

    #[test]
    fn due_when_none_or_the_newest_is_every_old() {
        let every = Duration::from_secs(30);
        let cases = [
            (None, T, true),
            (Some(T), T, false),
            (Some(T), T + 29_999, false),
            (Some(T), T + 30_000, true),
            (Some(T + 10_000), T, false),
            (Some(T + 31_000), T, true),
        ];
        for (newest, now, want) in cases {
            assert_eq!(due(newest, every, now), want, "{newest:?} at {now}");
        }
    }

    #[test]
    fn only_own_files_beyond_keep_are_deleted_oldest_first() {
        let own = |s: i64| file_name("c", 1, T + s * 1000);
        let names = vec![
            own(60),
            own(0),
            "outpost-backup-c-2-20231114T221320Z.obk".to_string(),
            own(30),
            "notes.txt".to_string(),
            own(90),
            file_name("other", 1, T),
        ];
        assert_eq!(to_delete(&names, "c", 1, 2), vec![own(0), own(30)]);
        assert_eq!(to_delete(&names, "c", 1, 4), Vec::<String>::new());
        assert_eq!(to_delete(&names, "c", 1, 1), vec![own(0), own(30), own(60)]);
        assert_eq!(to_delete(&names, "c", 2, 1), Vec::<String>::new());
    }
}
