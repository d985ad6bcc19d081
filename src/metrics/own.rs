//! This node's view of itself: what its data directory holds (by part) and its file system's
//! room, how fast the directory grows (a sample every 10 minutes, kept 8 days), when it last
//! made a backup (`<data>/last-backup.json`: any backup's time, the last good scheduled one's
//! path and size, the schedule's interval) and how its scheduled backups fare, and the SHA-256
//! of its running binary. From these, with readiness and its certificate, the node's
//! `wire::NodeHealth` (the `health` peer ask, `outpost doctor`, `/metrics`) and the `backup` of
//! `/v1/status`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::metrics::ConstFamily;
use crate::shared::files::sha256_file;
use crate::shared::process::{dir_bytes, fs_room, prefixed_file_bytes};
use crate::wire::{
    BackupFailure, BackupFileView, BackupScheduleView, BackupStatus, DiskUse, NodeHealth,
};

/// How often the data directory's size is sampled for its growth.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(600);
/// How long samples are kept.
const KEEP_MS: i64 = 8 * 24 * 3600 * 1000;
/// Growth is not reported before the samples span this long.
const MIN_SPAN_MS: i64 = 3600 * 1000;
/// A disk reading is reused this long (scrapes, health asks).
const DISK_FRESH: Duration = Duration::from_secs(10);
/// Most directory entries walked per part (a bounded walk on a huge store).
const MAX_ENTRIES: usize = 1_000_000;
/// The file a node writes when it made a backup.
pub const LAST_BACKUP_FILE: &str = "last-backup.json";

/// `last-backup.json`. Files of 0.3 (`at_ms` alone) load unchanged.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LastBackup {
    /// The last backup of any kind (served by `POST /v1/backup` or scheduled).
    at_ms: i64,
    /// The last good scheduled backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled: Option<BackupFileView>,
    /// The schedule's interval when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every_secs: Option<u64>,
}

/// How this node's scheduled backups fare (in memory; the last good one also on disk).
#[derive(Debug, Default)]
struct Scheduled {
    schedule: Option<BackupScheduleView>,
    last_good: Option<BackupFileView>,
    last_error: Option<BackupFailure>,
    made: u64,
    failures: u64,
}

/// The node's own measurements, shared by the API, the peer handler and the sampler.
pub struct NodeSelf {
    data_dir: PathBuf,
    /// (unix ms, bytes of the data directory) every `SAMPLE_EVERY`.
    samples: Mutex<VecDeque<(i64, u64)>>,
    disk: Mutex<Option<(Instant, DiskUse)>>,
    last_backup: Mutex<LastBackup>,
    scheduled: Mutex<Scheduled>,
    binary_sha256: OnceLock<String>,
}

impl NodeSelf {
    /// Reads `last-backup.json` if there is one (a file that does not parse is logged and
    /// ignored: the next backup writes it again).
    pub fn open(data_dir: &Path) -> NodeSelf {
        let path = data_dir.join(LAST_BACKUP_FILE);
        let last = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice::<LastBackup>(&b) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "last backup record does not parse; ignored");
                    LastBackup::default()
                }
            },
            Err(_) => LastBackup::default(),
        };
        let scheduled = Scheduled {
            last_good: last.scheduled.clone(),
            ..Scheduled::default()
        };
        NodeSelf {
            data_dir: data_dir.to_path_buf(),
            samples: Mutex::new(VecDeque::new()),
            disk: Mutex::new(None),
            last_backup: Mutex::new(last),
            scheduled: Mutex::new(scheduled),
            binary_sha256: OnceLock::new(),
        }
    }

    /// Measures the data directory now (blocking: file sizes, a walk of blobs and snapshots,
    /// statvfs). Run on a blocking thread.
    pub fn measure_disk(&self) -> DiskUse {
        let root = &self.data_dir;
        let (free, total) = fs_room(root).unwrap_or((0, 0));
        let d = DiskUse {
            raft_db_bytes: prefixed_file_bytes(root, "raft.db"),
            state_db_bytes: prefixed_file_bytes(root, "state.db"),
            blobs_bytes: dir_bytes(&root.join("blobs"), MAX_ENTRIES),
            snapshots_bytes: dir_bytes(&root.join("snapshots"), MAX_ENTRIES),
            free_bytes: free,
            total_bytes: total,
        };
        *lock(&self.disk) = Some((Instant::now(), d.clone()));
        d
    }

    /// The last disk reading if it is at most 10 s old, else a new one (blocking).
    pub fn disk(&self) -> DiskUse {
        if let Some((at, d)) = lock(&self.disk).as_ref()
            && at.elapsed() < DISK_FRESH
        {
            return d.clone();
        }
        self.measure_disk()
    }

    /// Records one growth sample (the data directory's bytes at `now_ms`).
    pub fn add_sample(&self, now_ms: i64, bytes: u64) {
        let mut s = lock(&self.samples);
        s.push_back((now_ms, bytes));
        while s.front().is_some_and(|(at, _)| now_ms - at > KEEP_MS) {
            s.pop_front();
        }
    }

    /// Growth of the data directory in bytes per day (None before an hour of samples).
    pub fn growth_bytes_per_day(&self) -> Option<f64> {
        growth_per_day(lock(&self.samples).make_contiguous())
    }

    /// When this node last made a backup (served or scheduled).
    pub fn last_backup_ms(&self) -> Option<i64> {
        let l = lock(&self.last_backup);
        (l.at_ms > 0).then_some(l.at_ms)
    }

    /// Records a backup served at `at_ms`: `last-backup.json` written durably (temp file,
    /// fsync, rename, directory fsync). Blocking.
    pub fn record_backup(&self, at_ms: i64) -> std::io::Result<()> {
        let mut l = lock(&self.last_backup);
        let next = LastBackup {
            at_ms,
            scheduled: l.scheduled.clone(),
            every_secs: l.every_secs,
        };
        self.write_last_backup(&next)?;
        *l = next;
        Ok(())
    }

    /// Records a good scheduled backup: in `last-backup.json` (durably, blocking) with the
    /// schedule's interval, and in the counts `/v1/status` and `/metrics` show.
    pub fn record_scheduled(&self, file: BackupFileView, every_secs: u64) -> std::io::Result<()> {
        {
            let mut s = lock(&self.scheduled);
            s.made += 1;
            s.last_good = Some(file.clone());
            s.last_error = None;
        }
        let mut l = lock(&self.last_backup);
        let next = LastBackup {
            at_ms: file.at_ms,
            scheduled: Some(file),
            every_secs: Some(every_secs),
        };
        self.write_last_backup(&next)?;
        *l = next;
        Ok(())
    }

    /// Records a scheduled backup that failed (logged by the caller).
    pub fn record_failure(&self, at_ms: i64, message: String) {
        let mut s = lock(&self.scheduled);
        s.failures += 1;
        s.last_error = Some(BackupFailure { at_ms, message });
    }

    /// The schedule the node applies now (None: off), as its backup task last read it.
    pub fn set_schedule(&self, schedule: Option<BackupScheduleView>) {
        lock(&self.scheduled).schedule = schedule;
    }

    /// This node's backups for `/v1/status`.
    pub fn backup_status(&self) -> BackupStatus {
        let s = lock(&self.scheduled);
        BackupStatus {
            schedule: s.schedule.clone(),
            last_ms: self.last_backup_ms(),
            last_good: s.last_good.clone(),
            last_error: s.last_error.clone(),
            made: s.made,
            failures: s.failures,
        }
    }

    /// `outpost_backup_*` for `/metrics`: the last good backup's time (any kind), the failed
    /// scheduled ones, the schedule's interval (0: no schedule).
    pub fn backup_families(&self) -> Vec<ConstFamily> {
        let b = self.backup_status();
        let mut out = vec![
            ConstFamily::counter(
                "outpost_backup_failures",
                "Scheduled backups of this node that failed since it started.",
            )
            .int(b.failures),
            ConstFamily::gauge(
                "outpost_backup_schedule_seconds",
                "Interval of this node's backup schedule ([backup] every); 0 when it has none.",
            )
            .int(b.schedule.as_ref().map(|s| s.every_secs).unwrap_or(0)),
        ];
        if let Some(ms) = b.last_ms {
            out.push(
                ConstFamily::gauge(
                    "outpost_backup_last_success_timestamp_seconds",
                    "Unix time of the last backup this node made (outpost backup or scheduled).",
                )
                .int(ms / 1000),
            );
        }
        out
    }

    fn write_last_backup(&self, l: &LastBackup) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.data_dir.join(LAST_BACKUP_FILE);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec(l).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        crate::shared::files::rename_durably(&tmp, &path)
    }

    /// SHA-256 (hex) of the running binary, once hashed (`hash_binary`).
    pub fn binary_sha256(&self) -> Option<&str> {
        self.binary_sha256.get().map(String::as_str)
    }

    /// Hashes the running binary once (blocking: reads the whole file).
    pub fn hash_binary(&self) {
        if self.binary_sha256.get().is_some() {
            return;
        }
        match std::env::current_exe().and_then(|p| sha256_file(&p)) {
            Ok(h) => {
                let _ = self.binary_sha256.set(h);
            }
            Err(e) => tracing::warn!(error = %e, "cannot hash the running binary"),
        }
    }

    /// The node's report of itself from its parts (pure but for the disk reading passed in).
    pub fn health(&self, facts: OwnFacts, disk: DiskUse) -> NodeHealth {
        NodeHealth {
            node_id: facts.node_id,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: facts.ready,
            not_ready_reason: if facts.ready {
                String::new()
            } else {
                facts.reason
            },
            disk,
            growth_bytes_per_day: self.growth_bytes_per_day(),
            node_cert_not_after: facts.node_cert_not_after,
            last_backup_ms: self.last_backup_ms(),
            backup_every_secs: lock(&self.scheduled)
                .schedule
                .as_ref()
                .map(|s| s.every_secs),
            now_ms: facts.now_ms,
            // Set by `AppState::own_health` from the node's `DiskGuard`.
            below_floor: false,
            floor_bytes: 0,
        }
    }

    /// Every 10 minutes: the data directory's size as a growth sample (a blocking thread).
    pub async fn sampler(self: std::sync::Arc<Self>) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let me = self.clone();
            let Ok(d) = tokio::task::spawn_blocking(move || me.measure_disk()).await else {
                return;
            };
            let bytes = d.raft_db_bytes + d.state_db_bytes + d.blobs_bytes + d.snapshots_bytes;
            self.add_sample(outpost_raft::now_ms(), bytes);
        }
    }
}

/// What the API knows of the node that `NodeSelf` does not.
#[derive(Debug, Clone)]
pub struct OwnFacts {
    pub node_id: u64,
    pub ready: bool,
    pub reason: String,
    pub node_cert_not_after: i64,
    pub now_ms: i64,
}

/// Bytes per day between the oldest and the newest sample; None when they span less than an
/// hour.
pub fn growth_per_day(samples: &[(i64, u64)]) -> Option<f64> {
    let (first, last) = (samples.first()?, samples.last()?);
    let span = last.0 - first.0;
    if span < MIN_SPAN_MS {
        return None;
    }
    let delta = last.1 as f64 - first.1 as f64;
    Some(delta / span as f64 * 86_400_000.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * 1000;

    #[test]
    fn growth_needs_an_hour_and_is_per_day() {
        type Case<'a> = (&'a [(i64, u64)], Option<f64>);
        let cases: [Case; 6] = [
            (&[], None),
            (&[(0, 100)], None),
            (&[(0, 100), (H - 1, 200)], None),
            (&[(0, 100), (H, 200)], Some(2400.0)),
            (&[(0, 1000), (12 * H, 1500), (24 * H, 3000)], Some(2000.0)),
            (&[(0, 5000), (24 * H, 4000)], Some(-1000.0)),
        ];
        for (samples, want) in cases {
            assert_eq!(growth_per_day(samples), want, "{samples:?}");
        }
    }

    #[test]
    fn samples_older_than_eight_days_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = NodeSelf::open(dir.path());
        me.add_sample(0, 100);
        me.add_sample(24 * H, 200);
        me.add_sample(9 * 24 * H, 1000);
        // Only the last two remain: 800 bytes over 8 days.
        assert_eq!(me.growth_bytes_per_day(), Some(100.0));
    }

    #[test]
    fn last_backup_survives_a_restart() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(NodeSelf::open(dir.path()).last_backup_ms(), None);
        NodeSelf::open(dir.path()).record_backup(1_700_000_000_000)?;
        assert_eq!(
            NodeSelf::open(dir.path()).last_backup_ms(),
            Some(1_700_000_000_000)
        );
        std::fs::write(dir.path().join(LAST_BACKUP_FILE), b"garbage")?;
        assert_eq!(NodeSelf::open(dir.path()).last_backup_ms(), None);
        // A scheduled one: its file survives a restart, and a served backup after it keeps it.
        let file = BackupFileView {
            at_ms: 1_700_000_100_000,
            path: "/b/outpost-backup-c-1-20231114T222820Z.obk".into(),
            bytes: 4096,
        };
        let me = NodeSelf::open(dir.path());
        me.record_failure(1_700_000_050_000, "disk full".into());
        assert_eq!(me.backup_status().failures, 1);
        me.record_scheduled(file.clone(), 30)?;
        let b = me.backup_status();
        assert_eq!(
            (b.made, b.last_error, b.last_good),
            (1, None, Some(file.clone()))
        );
        me.record_backup(1_700_000_200_000)?;
        let again = NodeSelf::open(dir.path());
        assert_eq!(again.last_backup_ms(), Some(1_700_000_200_000));
        assert_eq!(again.backup_status().last_good, Some(file));
        Ok(())
    }

    #[test]
    fn backup_metrics_say_last_success_failures_and_schedule() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let me = NodeSelf::open(dir.path());
        let text = crate::metrics::Metrics::new(true, |_| {}).encode(me.backup_families());
        assert!(
            text.contains("outpost_backup_schedule_seconds 0\n"),
            "{text}"
        );
        assert!(text.contains("outpost_backup_failures_total 0\n"), "{text}");
        assert!(!text.contains("outpost_backup_last_success"), "{text}");
        me.set_schedule(Some(BackupScheduleView {
            every_secs: 30,
            keep: 3,
            dir: "/b".into(),
            sealed: false,
        }));
        me.record_failure(1_700_000_000_000, "no room".into());
        me.record_scheduled(
            BackupFileView {
                at_ms: 1_700_000_030_500,
                path: "/b/f.obk".into(),
                bytes: 1,
            },
            30,
        )?;
        let text = crate::metrics::Metrics::new(true, |_| {}).encode(me.backup_families());
        for want in [
            "outpost_backup_schedule_seconds 30\n",
            "outpost_backup_failures_total 1\n",
            "outpost_backup_last_success_timestamp_seconds 1700000030\n",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let facts = OwnFacts {
            node_id: 1,
            ready: true,
            reason: String::new(),
            node_cert_not_after: 0,
            now_ms: 1_700_000_031_000,
        };
        let h = me.health(facts, DiskUse::default());
        assert_eq!(
            (h.backup_every_secs, h.last_backup_ms),
            (Some(30), Some(1_700_000_030_500))
        );
        Ok(())
    }
}
