//! Compaction by size: openraft's snapshot policy counts entries only, so a task here asks for
//! a snapshot (and purges the log behind it) once the bytes appended since the last one pass
//! `SNAPSHOT_AFTER_BYTES`. `due_by_size` is the pure rule, table-tested below.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::status::core_ended;
use crate::types::Raft;

/// A snapshot is built (and the log purged behind it) once the entries appended since the
/// last one pass this many bytes, whatever their count: openraft's policy counts entries only,
/// and 20,000 entries of up to `MAX_ENTRY_BYTES` each would be gigabytes of raft.db.
pub const SNAPSHOT_AFTER_BYTES: u64 = 64 << 20;

/// `SNAPSHOT_AFTER_BYTES`, or `OUTPOST_SNAPSHOT_AFTER_BYTES` when set (tests), at least 1 MiB.
pub(super) fn snapshot_after_bytes() -> u64 {
    std::env::var("OUTPOST_SNAPSHOT_AFTER_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| v.max(1 << 20))
        .unwrap_or(SNAPSHOT_AFTER_BYTES)
}

/// Whether the log has grown enough since the last snapshot to build one (pure).
fn due_by_size(appended: u64, at_last_snapshot: u64, limit: u64, asked: bool) -> bool {
    !asked && appended.saturating_sub(at_last_snapshot) >= limit
}

/// Compaction by size: once the bytes appended since the last snapshot pass `limit`, asks
/// openraft for a snapshot, and when it is built purges the log up to it (not keeping
/// `keep_entries_behind_snapshot` entries: those are what made the log big; a follower that
/// needs them gets the snapshot).
pub(super) async fn compact_by_size(
    raft: Raft,
    appended: Arc<std::sync::atomic::AtomicU64>,
    limit: u64,
) {
    use std::sync::atomic::Ordering;
    let mut metrics = raft.metrics();
    let mut snapshot = metrics.borrow().snapshot;
    let mut base = appended.load(Ordering::Relaxed);
    // When a snapshot was asked for and not built yet (asked again after a minute: openraft
    // skips a trigger while it builds one).
    let mut asked: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if core_ended(&metrics) {
            return;
        }
        let now = metrics.borrow_and_update().snapshot;
        if now != snapshot {
            snapshot = now;
            base = appended.load(Ordering::Relaxed);
            if asked.is_some()
                && let Some(s) = now
            {
                asked = None;
                if let Err(e) = raft.trigger().purge_log(s.index).await {
                    tracing::debug!(error = %e, "purging the log after a snapshot by size");
                }
            }
        }
        let total = appended.load(Ordering::Relaxed);
        let waiting = asked.is_some_and(|t| t.elapsed() < Duration::from_secs(60));
        if due_by_size(total, base, limit, waiting) {
            tracing::info!(
                bytes = total - base,
                limit,
                "the log passed its size since the last snapshot; building one"
            );
            asked = Some(Instant::now());
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::debug!(error = %e, "asking for a snapshot by size");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_by_size_once_per_snapshot() {
        // (appended, at last snapshot, limit, asked) -> due
        let cases = [
            (0, 0, 64, false, false),
            (63, 0, 64, false, false),
            (64, 0, 64, false, true),
            (164, 100, 64, false, true),
            (163, 100, 64, false, false),
            (1000, 0, 64, true, false), // already asked: wait for it
            (5, 10, 64, false, false),  // never underflows
        ];
        for (appended, base, limit, asked, want) in cases {
            assert_eq!(
                due_by_size(appended, base, limit, asked),
                want,
                "{appended} {base} {limit} {asked}"
            );
        }
    }
}
