//! The leader's retention pass. A task on every node; each tick it reads the retention policy
//! (signed-only global keys `retention.audit`, `retention.inventory_history`,
//! `retention.results`); while the node is the Raft leader and every member runs a version
//! that decodes format 9, it computes the cuts (now - policy) and proposes ONE
//! `Command::CompactHistory` when something is older than a cut: audit records through the
//! last one before the cut (walked from the chain's base, at most `MAX_AUDIT_CUT` a command,
//! never the newest record), inventory history before its cut, and results that nothing
//! depends on before theirs (`Reader::removable_results_before`). The command is proposed as
//! actor `node:N` and applied alike on every node, which then gives the freed pages back to
//! the file system. A pass comes every min(60 s, shortest policy / 4), at least 1 s, so a
//! record outlives its policy by at most a quarter of it (or a minute), and at once when
//! the policy changes (read every second).
//!
//! Time is read here (the proposer), never in apply. Before compacting, the proposer keeps the
//! audit records it moves out in `D/audit-archive/` (`archive`); an operator may also export
//! them (`outpost audit export --until ...`). The checkpoint the compaction leaves proves both
//! offline. SQLite and files are read and written on blocking threads.

use std::sync::Arc;
use std::time::Duration;

use outpost_storage::{Command, FORMAT_9_VERSION, Response, RetentionPolicy};

use crate::api::{AppState, Caller};

/// The longest wait between two passes (and the wait without any policy).
const MAX_TICK: Duration = Duration::from_secs(60);
/// The shortest wait between two passes.
const MIN_TICK: Duration = Duration::from_secs(1);

/// Runs for as long as the node does. The policy is read every second (one small query), so
/// a new or changed policy takes effect at once; a pass runs when the policy changed or its
/// tick (`tick`) has passed since the last one.
pub async fn run(st: Arc<AppState>) {
    let mut seen: Option<RetentionPolicy> = None;
    let mut due = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(MIN_TICK).await;
        let policy = match st.read(|r| r.retention_policy()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e.message(), "retention policy unread");
                continue;
            }
        };
        let now = tokio::time::Instant::now();
        if seen == Some(policy) && now < due {
            continue;
        }
        seen = Some(policy);
        due = now + tick(&policy);
        if let Err(e) = once(&st, &policy).await {
            tracing::warn!(error = %e, "retention pass skipped");
        }
    }
}

/// How long to wait before the next pass under `policy`: min(60 s, shortest / 4), >= 1 s.
pub fn tick(policy: &RetentionPolicy) -> Duration {
    policy
        .shortest()
        .map_or(MAX_TICK, |d| (d / 4).clamp(MIN_TICK, MAX_TICK))
}

/// The cut times (ms since the epoch) of `policy` at `now_ms`: records before them go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cuts {
    pub audit: Option<i64>,
    pub inventory: Option<i64>,
    pub results: Option<i64>,
}

/// Pure: now - policy for each history that has a policy.
pub fn cuts(policy: &RetentionPolicy, now_ms: i64) -> Cuts {
    let cut = |d: Option<Duration>| {
        d.map(|d| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    };
    Cuts {
        audit: cut(policy.audit),
        inventory: cut(policy.inventory_history),
        results: cut(policy.results),
    }
}

/// What the state holds beyond the cuts: the audit seq to cut through, and whether
/// inventory history / removable results older than their cut exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Found {
    pub audit_through: Option<u64>,
    pub inventory: bool,
    pub results: bool,
}

/// Pure: the command to propose, if anything is older than a cut.
pub fn command(cuts: &Cuts, found: &Found) -> Option<Command> {
    let inventory_before_ms = cuts.inventory.filter(|_| found.inventory);
    let results_before_ms = cuts.results.filter(|_| found.results);
    if found.audit_through.is_none() && inventory_before_ms.is_none() && results_before_ms.is_none()
    {
        return None;
    }
    Some(Command::CompactHistory {
        audit_through_seq: found.audit_through.unwrap_or(0),
        inventory_before_ms,
        results_before_ms,
    })
}

/// One pass under `policy`: on the leader with every member at format 9, propose what is due.
async fn once(st: &AppState, policy: &RetentionPolicy) -> Result<(), String> {
    if policy.shortest().is_none() || st.node.status().leader_id != Some(st.node_id) {
        return Ok(());
    }
    let all_new = st
        .read(|r| r.members_at_least(FORMAT_9_VERSION))
        .await
        .map_err(|e| e.message().to_string())?;
    if !all_new {
        tracing::debug!("retention waits until every member runs {FORMAT_9_VERSION} or newer");
        return Ok(());
    }
    let cut = cuts(policy, outpost_raft::now_ms());
    let found = st
        .read(move |r| {
            Ok(Found {
                audit_through: match cut.audit {
                    Some(ms) => r.audit_cut_seq(ms)?,
                    None => None,
                },
                inventory: match cut.inventory {
                    Some(ms) => r.inventory_history_before(ms)?,
                    None => false,
                },
                results: match cut.results {
                    Some(ms) => r.removable_results_before(ms)?,
                    None => false,
                },
            })
        })
        .await
        .map_err(|e| e.message().to_string())?;
    let Some(cmd) = command(&cut, &found) else {
        return Ok(());
    };
    // What leaves the live log is kept first (`archive`); without it nothing is cut.
    if let Some(through) = found.audit_through {
        let reader = st.node.reader();
        let (dir, id) = (st.data_dir.clone(), st.node_id);
        let kept = tokio::task::spawn_blocking(move || {
            crate::node::archive::keep(&reader, &dir, id, through)
        })
        .await
        .map_err(|e| format!("archive thread: {e}"))?
        .map_err(|e| {
            format!("the records to move out could not be archived, nothing is cut: {e}")
        })?;
        tracing::info!(path = %kept.display(), through, "audit records archived before the cut");
    }
    match st.commit(&Caller::Node(st.node_id), cmd).await {
        Ok(Response::Compacted {
            audit_removed,
            checkpoint_seq,
            checkpoint_hash,
            inventory_removed,
            results_removed,
        }) => tracing::info!(
            audit_removed,
            checkpoint_seq,
            %checkpoint_hash,
            inventory_removed,
            results_removed,
            "retention compacted the history"
        ),
        Ok(other) => tracing::warn!(?other, "retention compaction answered unexpectedly"),
        // Another leader compacted first, or the state moved: the next pass looks again.
        Err(e) => tracing::debug!(error = %e.message(), "retention compaction not applied"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(audit: Option<u64>, inventory: Option<u64>, results: Option<u64>) -> RetentionPolicy {
        RetentionPolicy {
            audit: audit.map(Duration::from_secs),
            inventory_history: inventory.map(Duration::from_secs),
            results: results.map(Duration::from_secs),
        }
    }

    #[test]
    fn ticks_follow_the_shortest_policy() {
        let cases = [
            (policy(None, None, None), 60_000),
            (policy(Some(400 * 86_400), None, None), 60_000),
            (policy(Some(5), None, None), 1_250),
            (policy(Some(86_400), Some(2), None), 1_000),
            (policy(None, None, Some(120)), 30_000),
        ];
        for (p, ms) in cases {
            assert_eq!(tick(&p), Duration::from_millis(ms), "{p:?}");
        }
    }

    #[test]
    fn cuts_and_commands() {
        let p = policy(Some(5), Some(10), None);
        let c = cuts(&p, 100_000);
        assert_eq!(
            c,
            Cuts {
                audit: Some(95_000),
                inventory: Some(90_000),
                results: None
            }
        );
        assert_eq!(
            cuts(&policy(Some(36_500 * 86_400), None, None), 5)
                .audit
                .map(|c| c < 0),
            Some(true)
        );
        // (found, expected command)
        let compact = |a, i, r| {
            Some(Command::CompactHistory {
                audit_through_seq: a,
                inventory_before_ms: i,
                results_before_ms: r,
            })
        };
        let cases = [
            (Found::default(), None),
            (
                Found {
                    audit_through: Some(7),
                    ..Found::default()
                },
                compact(7, None, None),
            ),
            (
                Found {
                    inventory: true,
                    ..Found::default()
                },
                compact(0, Some(90_000), None),
            ),
            // Results found but no results policy: nothing (the reader is not asked then).
            (
                Found {
                    results: true,
                    ..Found::default()
                },
                None,
            ),
            (
                Found {
                    audit_through: Some(3),
                    inventory: true,
                    results: false,
                },
                compact(3, Some(90_000), None),
            ),
        ];
        for (found, want) in cases {
            assert_eq!(command(&c, &found), want, "{found:?}");
        }
    }
}
