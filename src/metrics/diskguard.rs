//! The data directory's free-space floor: below it a node refuses
//! operator writes with HTTP 507 (`AppState::commit`), keeps serving reads, agent syncs and
//! agents' reports, and raises an alarm (`outpost_disk_below_floor`, the doctor's and the
//! console's `OutpostDiskFloor`).
//!
//! The floor is min(2 % of the file system, 1 GiB) (`shared::policy::floor_for`, pure). [`DiskGuard`] keeps
//! the last statvfs of the data directory's file system (`shared::process::fs_room`),
//! refreshed every 2 s on a blocking thread by `run`, so that every write asks it in O(1)
//! (`refusal`). It logs once each time the node crosses the floor, either way.
//!
//! It lives in `metrics` (what a node measures), not `node`, because the API room, which
//! refuses the writes, may not import `node`. `node::serve` uses the same floor to decide when
//! a Raft core stopped by a storage error (ENOSPC) may be started again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::health::findings::bytes;

// The rule itself is shared with the blob store, which will not fetch a blob that would
// take the file system below the floor.
pub use crate::shared::policy::{FLOOR_MAX_BYTES, FLOOR_PERCENT, below_floor, floor_for};

/// How often the free space is read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// The answer to a refused write.
pub fn refusal_text(node_id: u64, name: &str, path: &Path, free: u64, floor: u64) -> String {
    format!(
        "node {node_id} ({name}): the data directory {} has {} free, below the floor of {}; \
         writes are refused until space is freed",
        path.display(),
        bytes(free),
        bytes(floor)
    )
}

/// The last reading of the data directory's file system, shared by the writes that ask it.
#[derive(Debug)]
pub struct DiskGuard {
    node_id: u64,
    name: String,
    path: PathBuf,
    free: AtomicU64,
    total: AtomicU64,
    below: AtomicBool,
    /// A failed statvfs is logged once until one succeeds again.
    read_failed: AtomicBool,
}

impl DiskGuard {
    /// A guard of `path` (the data directory) with no reading yet: nothing is refused until
    /// `refresh` or `run` read the file system.
    pub fn new(node_id: u64, name: &str, path: &Path) -> DiskGuard {
        DiskGuard {
            node_id,
            name: name.to_string(),
            path: path.to_path_buf(),
            free: AtomicU64::new(0),
            total: AtomicU64::new(0),
            below: AtomicBool::new(false),
            read_failed: AtomicBool::new(false),
        }
    }

    /// Reads the file system now (blocking: statvfs) and logs a crossing of the floor. A
    /// failed read keeps the last reading.
    pub fn refresh(&self) {
        match crate::shared::process::fs_room(&self.path) {
            Ok((free, total)) => {
                self.read_failed.store(false, Ordering::Relaxed);
                self.set(free, total);
            }
            Err(e) => {
                if !self.read_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read the free space of the data directory's file system; the last reading stands");
                }
            }
        }
    }

    /// Takes a reading (free, total bytes) and logs a crossing of the floor.
    fn set(&self, free: u64, total: u64) {
        self.free.store(free, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        let below = below_floor(free, total);
        let was = self.below.swap(below, Ordering::Relaxed);
        let floor = floor_for(total);
        match (was, below) {
            (false, true) => tracing::error!(
                path = %self.path.display(),
                free,
                floor,
                "free space fell below the floor: operator writes are refused (HTTP 507) until space is freed"
            ),
            (true, false) => tracing::warn!(
                path = %self.path.display(),
                free,
                floor,
                "free space is above the floor again: writes are accepted"
            ),
            _ => {}
        }
    }

    /// Refreshes every `REFRESH_EVERY` on a blocking thread, for as long as the node runs.
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut every = tokio::time::interval(REFRESH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let me = self.clone();
            if tokio::task::spawn_blocking(move || me.refresh())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Free bytes at the last reading.
    pub fn free_bytes(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// The floor of the file system at the last reading (0 before any).
    pub fn floor_bytes(&self) -> u64 {
        floor_for(self.total.load(Ordering::Relaxed))
    }

    /// Whether the last reading was below the floor.
    pub fn below_floor(&self) -> bool {
        self.below.load(Ordering::Relaxed)
    }

    /// Why an operator write is refused now, if it is.
    pub fn refusal(&self) -> Option<String> {
        self.below_floor().then(|| {
            refusal_text(
                self.node_id,
                &self.name,
                &self.path,
                self.free_bytes(),
                self.floor_bytes(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn the_floor_is_two_percent_up_to_one_gib() {
        // (file system size, floor)
        let cases = [
            (0, 0),
            (99, 0),
            (100, 2),
            (96 * MIB, 96 * MIB / 100 * 2),
            (10 * GIB, 10 * GIB / 100 * 2),
            (50 * GIB, 50 * GIB / 100 * 2),
            (51 * GIB, GIB),
            (4 << 40, GIB),
            (u64::MAX, GIB),
        ];
        for (total, floor) in cases {
            assert_eq!(floor_for(total), floor, "total {total}");
        }
    }

    #[test]
    fn below_is_strictly_under_the_floor_of_a_read_file_system() {
        // (free, total, below)
        let cases = [
            (0, 0, false),
            (0, 100 * MIB, true),
            (2 * MIB - 1, 100 * MIB, true),
            (floor_for(100 * MIB), 100 * MIB, false),
            (floor_for(100 * MIB) - 1, 100 * MIB, true),
            (GIB - 1, 100 * GIB, true),
            (GIB, 100 * GIB, false),
        ];
        for (free, total, below) in cases {
            assert_eq!(below_floor(free, total), below, "free {free} of {total}");
        }
    }

    #[test]
    fn the_guard_refuses_below_the_floor_and_names_node_path_and_sizes() {
        let g = DiskGuard::new(3, "n3", Path::new("/var/lib/outpost"));
        assert_eq!(g.refusal(), None, "no reading yet");
        g.set(MIB, 96 * MIB);
        let text = g.refusal().expect("1 MiB of 96 MiB is below the floor");
        assert_eq!(
            text,
            "node 3 (n3): the data directory /var/lib/outpost has 1.0 MiB free, below the \
             floor of 1.9 MiB; writes are refused until space is freed"
        );
        assert!(g.below_floor());
        g.set(10 * MIB, 96 * MIB);
        assert_eq!(g.refusal(), None);
        assert!(!g.below_floor());
        assert_eq!(g.floor_bytes(), floor_for(96 * MIB));
    }

    #[test]
    fn the_guard_reads_a_real_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = DiskGuard::new(1, "n1", dir.path());
        g.refresh();
        assert!(g.floor_bytes() > 0);
        let missing = DiskGuard::new(1, "n1", &dir.path().join("missing"));
        missing.refresh();
        assert_eq!(missing.floor_bytes(), 0, "a failed read leaves no reading");
        assert_eq!(missing.refusal(), None);
    }
}
