//! The audit chain's checks from a base and from a verified mark: the incremental check reads
//! only what follows the mark and catches what changed there; the full check catches what
//! changed before it. Checkpoint rows are inserted by SQL here (the real compaction is a Raft
//! command tested with it).

mod common;

use common::workload;
use outpost_storage::{AuditCheck, AuditVerify, Store};

/// A store holding the 32 audit records of the common workload, and its path.
async fn store32(dir: &std::path::Path) -> anyhow::Result<(Store, std::path::PathBuf)> {
    let db = dir.join("s.db");
    let store = Store::open(&db)?;
    store
        .apply(workload().into_iter().map(Some).collect(), vec![])
        .await?;
    Ok((store, db))
}

fn summary(v: &AuditVerify) -> (AuditCheck, bool, u64, Option<u64>) {
    (
        v.check.clone(),
        v.incremental,
        v.walked,
        v.verified.as_ref().map(|m| m.seq),
    )
}

#[tokio::test]
async fn incremental_check_reads_after_the_mark_and_falls_back_to_full() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, db) = store32(dir.path()).await?;
    let r = store.reader();
    let full = r.verify_audit_full()?;
    assert_eq!(
        summary(&full),
        (AuditCheck::Intact { records: 32 }, false, 32, Some(32))
    );
    assert_eq!(
        full.verified.as_ref().map(|m| m.hash.clone()),
        r.audit_hash_at(32)?
    );
    let h20 = r.audit_hash_at(20)?.unwrap_or_default();
    let mark = Some((20, h20.clone()));
    assert_eq!(
        summary(&r.verify_audit_since(mark.clone())?),
        (AuditCheck::Intact { records: 32 }, true, 12, Some(32))
    );
    // A mark at the head: nothing to read but the head itself.
    let head = full.verified.clone().map(|m| (m.seq, m.hash));
    assert_eq!(
        summary(&r.verify_audit_since(head)?),
        (AuditCheck::Intact { records: 32 }, true, 0, Some(32))
    );

    let raw = rusqlite::Connection::open(&db)?;
    raw.execute_batch("CREATE TEMP TABLE saved AS SELECT * FROM audit")?;
    // (tamper, mark, what the check from that mark finds, whether it started from the mark)
    type Case = (&'static str, Option<(u64, String)>, AuditCheck, bool);
    let cases: Vec<Case> = vec![
        (
            "UPDATE audit SET detail = 'x' WHERE seq = 25",
            mark.clone(),
            AuditCheck::Broken { seq: 25 },
            true,
        ),
        (
            "DELETE FROM audit WHERE seq = 32",
            mark.clone(),
            AuditCheck::Broken { seq: 32 },
            true,
        ),
        (
            "DELETE FROM audit WHERE seq > 30",
            mark.clone(),
            AuditCheck::Broken { seq: 31 },
            true,
        ),
        // Before the mark: the incremental check does not see it (the full one does, below).
        (
            "UPDATE audit SET actor = 'mallory' WHERE seq = 7",
            mark.clone(),
            AuditCheck::Intact { records: 32 },
            true,
        ),
        (
            "UPDATE audit SET actor = 'mallory' WHERE seq = 7",
            None,
            AuditCheck::Broken { seq: 7 },
            false,
        ),
        // The mark's own row changed: its hash no longer matches, so the full check runs.
        (
            "UPDATE audit SET hash = prev_hash WHERE seq = 20",
            mark.clone(),
            AuditCheck::Broken { seq: 20 },
            false,
        ),
        // A mark beyond the head (a restored state) or unknown: full.
        (
            "SELECT 1",
            Some((40, h20.clone())),
            AuditCheck::Intact { records: 32 },
            false,
        ),
        (
            "SELECT 1",
            Some((20, "0".repeat(64))),
            AuditCheck::Intact { records: 32 },
            false,
        ),
    ];
    for (sql, mark, want, incremental) in cases {
        raw.execute_batch(sql)?;
        let got = r.verify_audit_since(mark.clone());
        raw.execute_batch("DELETE FROM audit; INSERT INTO audit SELECT * FROM temp.saved")?;
        let got = got?;
        assert_eq!(got.check, want, "{sql} from {mark:?}");
        assert_eq!(got.incremental, incremental, "{sql} from {mark:?}");
        assert_eq!(
            got.verified.is_some(),
            matches!(want, AuditCheck::Intact { .. }),
            "{sql}: a broken chain moves no mark"
        );
    }
    assert_eq!(r.verify_audit_chain()?, AuditCheck::Intact { records: 32 });
    Ok(())
}

#[tokio::test]
async fn checks_start_from_the_newest_checkpoint() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, db) = store32(dir.path()).await?;
    let r = store.reader();
    assert_eq!(r.audit_checkpoint()?, None);
    let h5 = r.audit_hash_at(5)?.unwrap_or_default();
    let h10 = r.audit_hash_at(10)?.unwrap_or_default();
    let raw = rusqlite::Connection::open(&db)?;
    // Records 1..=10 moved out, as a compaction does; an older checkpoint stays below it.
    raw.execute(
        "INSERT INTO audit_checkpoints VALUES (5, ?1, 50, 1000, 5), (10, ?2, 100, 2000, 5)",
        [&h5, &h10],
    )?;
    raw.execute_batch("DELETE FROM audit WHERE seq <= 10")?;
    let cp = r
        .audit_checkpoint()?
        .ok_or(anyhow::anyhow!("no checkpoint"))?;
    assert_eq!(
        (cp.seq, cp.hash.as_str(), cp.removed),
        (10, h10.as_str(), 5)
    );
    let full = r.verify_audit_full()?;
    assert_eq!(
        summary(&full),
        (AuditCheck::Intact { records: 32 }, false, 22, Some(32))
    );
    assert_eq!(full.base.as_ref().map(|b| b.seq), Some(10));
    // A mark older than the base: full.
    assert_eq!(
        summary(&r.verify_audit_since(Some((5, h5.clone())))?),
        (AuditCheck::Intact { records: 32 }, false, 22, Some(32))
    );
    // The chain must link to the base: a wrong checkpoint hash breaks the first live record.
    raw.execute(
        "UPDATE audit_checkpoints SET hash = ?1 WHERE seq = 10",
        [&h5],
    )?;
    assert_eq!(r.verify_audit_chain()?, AuditCheck::Broken { seq: 11 });
    raw.execute(
        "UPDATE audit_checkpoints SET hash = ?1 WHERE seq = 10",
        [&h10],
    )?;
    // A record moved out but still present breaks the full check.
    raw.execute(
        "INSERT INTO audit (seq, at_ms, actor, action, target, detail, outcome, prev_hash, hash) \
         SELECT 9, at_ms, actor, action, target, detail, outcome, prev_hash, hash FROM audit \
         WHERE seq = 11",
        [],
    )?;
    assert_eq!(r.verify_audit_chain()?, AuditCheck::Broken { seq: 9 });
    raw.execute("DELETE FROM audit WHERE seq = 9", [])?;
    assert_eq!(r.verify_audit_chain()?, AuditCheck::Intact { records: 32 });
    // Pages for an export: bounded, linked, from after the base.
    let page = r.audit_chained(10, 14, 100)?;
    assert_eq!(
        page.iter().map(|c| c.record.seq).collect::<Vec<_>>(),
        [11, 12, 13, 14]
    );
    assert_eq!(page[0].prev_hash, h10);
    assert_eq!(page[1].prev_hash, page[0].record.hash);
    assert_eq!(r.audit_chained(10, 40, 3)?.len(), 3);
    Ok(())
}
