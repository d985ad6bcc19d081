//! Retention through the store: a compaction gives its pages back to the file system, state
//! files are incremental-vacuum (new ones, and older ones converted once at open), and the
//! reader answers the leader's retention pass.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{env, init_batch};
use outpost_storage::{Command, Response, RetentionPolicy, Scope, Store, encode_batch};

fn set(at_ms: i64, key: &str, value: &str) -> outpost_storage::Envelope {
    env(
        at_ms,
        Command::SetConfig {
            scope: Scope::Global,
            key: key.into(),
            value: value.into(),
        },
    )
}

fn compact(at_ms: i64, through: u64) -> outpost_storage::Envelope {
    env(
        at_ms,
        Command::CompactHistory {
            audit_through_seq: through,
            inventory_before_ms: None,
            results_before_ms: None,
        },
    )
}

/// Checkpoints the WAL into the file (from a connection of its own) and returns the file size.
fn checkpointed_size(db: &Path) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(std::fs::metadata(db)?.len())
}

fn auto_vacuum(db: &Path) -> anyhow::Result<i64> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?)
}

#[tokio::test]
async fn a_compaction_shrinks_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    let store = Store::open(&db)?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], b"m".to_vec())
        .await?;
    // 20,000 audit records (about 300 bytes each) in batches of 1,000.
    for b in 0..20i64 {
        let batch: Vec<_> = (0..1000)
            .map(|i| set(1_000 + b * 1000 + i, &format!("k{}", i % 7), "value"))
            .collect();
        store
            .apply(vec![Some(encode_batch(&batch))], b"m".to_vec())
            .await?;
    }
    let before = checkpointed_size(&db)?;
    let r = store.reader();
    let (newest, _) = tokio::task::spawn_blocking(move || r.audit_head())
        .await??
        .ok_or_else(|| anyhow::anyhow!("no audit head"))?;
    let out = store
        .apply(
            vec![Some(encode_batch(&[compact(90_000, newest - 1)]))],
            b"m".to_vec(),
        )
        .await?;
    let outcome = out.into_iter().flatten().flatten().next();
    assert!(
        matches!(outcome, Some(Ok(Response::Compacted { audit_removed, .. })) if audit_removed == newest - 1),
        "{outcome:?}"
    );
    let after = checkpointed_size(&db)?;
    assert!(
        after * 4 < before,
        "state.db was {before} bytes before the compaction and {after} after"
    );
    // What is left still applies and reads.
    store
        .apply(
            vec![Some(encode_batch(&[set(95_000, "k", "v")]))],
            b"m".to_vec(),
        )
        .await?;
    let r = store.reader();
    let left = tokio::task::spawn_blocking(move || r.audit(0, 10)).await??;
    assert_eq!(
        left.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [newest, newest + 1, newest + 2]
    );
    Ok(())
}

#[tokio::test]
async fn state_files_are_incremental_vacuum_and_older_ones_are_converted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    {
        let store = Store::open(&db)?;
        store
            .apply(vec![Some(encode_batch(&init_batch()))], b"m".to_vec())
            .await?;
    }
    assert_eq!(auto_vacuum(&db)?, 2, "a new file is incremental");
    // An older file (made before this version) has no auto-vacuum.
    {
        let conn = rusqlite::Connection::open(&db)?;
        conn.pragma_update(None, "auto_vacuum", "NONE")?;
        conn.execute_batch("VACUUM")?;
    }
    assert_eq!(auto_vacuum(&db)?, 0);
    let store = Store::open(&db)?;
    assert_eq!(auto_vacuum(&db)?, 2, "converted at open");
    let r = store.reader();
    let cluster = tokio::task::spawn_blocking(move || r.cluster()).await??;
    assert_eq!(cluster.map(|c| c.name), Some("plant".to_owned()));
    // A snapshot is a page copy: the state it restores keeps the setting.
    let snap = dir.path().join("snap");
    store.export_snapshot(&snap).await?;
    let other = dir.path().join("other.db");
    let fresh = Store::open(&other)?;
    fresh.import_snapshot(&snap).await?;
    drop(fresh);
    assert_eq!(auto_vacuum(&other)?, 2, "kept through a snapshot");
    Ok(())
}

#[tokio::test]
async fn the_reader_answers_the_retention_pass() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.db"))?;
    // init_batch writes records 1..=3 at 1..=3 ms; then records 4..=8 at 100, 200, ..., 500.
    let mut batch = init_batch();
    batch.extend((1..=5).map(|i| set(i * 100, &format!("k{i}"), "v")));
    batch.push(set(600, "retention.audit", "400d"));
    batch.push(set(601, "retention.results", "12h"));
    store
        .apply(vec![Some(encode_batch(&batch))], b"m".to_vec())
        .await?;
    let r = store.reader();
    let answers = tokio::task::spawn_blocking(move || {
        anyhow::Ok((
            [0, 2, 4, 150, 300, 301, 10_000].map(|cut| r.audit_cut_seq(cut).ok().flatten()),
            r.retention_policy()?,
            r.members_at_least("0.4.0")?,
            r.members_at_least("0.1.0")?,
            r.inventory_history_before(i64::MAX)?,
            r.removable_results_before(i64::MAX)?,
        ))
    })
    .await??;
    let (cuts, policy, at_4, at_1, inventory, results) = answers;
    // Records: 1..=3 at 1..=3 ms, 4..=8 at 100..=500, 9 at 600, 10 at 601 (the newest, never
    // cut).
    assert_eq!(
        cuts,
        [None, Some(1), Some(3), Some(4), Some(5), Some(6), Some(9)]
    );
    assert_eq!(
        policy,
        RetentionPolicy {
            audit: Some(Duration::from_secs(400 * 86_400)),
            inventory_history: None,
            results: Some(Duration::from_secs(12 * 3600)),
        }
    );
    // init_batch's node runs 0.1.0.
    assert!(!at_4 && at_1);
    assert!(!inventory && !results);
    // After a compaction the walk starts at the checkpoint.
    store
        .apply(vec![Some(encode_batch(&[compact(700, 4)]))], b"m".to_vec())
        .await?;
    let r = store.reader();
    let cuts = tokio::task::spawn_blocking(move || {
        [0, 150, 10_000].map(|cut| r.audit_cut_seq(cut).ok().flatten())
    })
    .await?;
    // Records 5..=11 remain (11 the compaction's own, at 700).
    assert_eq!(cuts, [None, None, Some(10)]);
    Ok(())
}
