//! Snapshot export/import: identical state after a round trip, damaged files refused with
//! the live state untouched.

mod common;

use std::path::Path;

use common::{dump, env, init_batch, join, workload};
use outpost_storage::{AuditCheck, Command, Scope, StorageError, Store, encode_batch};

async fn populated(db: &Path) -> anyhow::Result<Store> {
    let store = Store::open(db)?;
    store
        .apply(
            workload().into_iter().map(Some).collect(),
            b"term:2 index:40".to_vec(),
        )
        .await?;
    Ok(store)
}

fn leftovers(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.contains("tmp") {
            names.push(name);
        }
    }
    Ok(names)
}

#[tokio::test]
async fn export_then_import_into_fresh_store_is_identical() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b, snap) = (
        dir.path().join("a.db"),
        dir.path().join("b.db"),
        dir.path().join("x.snap"),
    );
    let src = populated(&a).await?;
    let info = src.export_snapshot(&snap).await?;
    assert_eq!(info.applied_marker, Some(b"term:2 index:40".to_vec()));
    assert_eq!(info.size, std::fs::metadata(&snap)?.len());
    assert_eq!(info.sha256.len(), 64);
    let bytes = std::fs::read(&snap)?;
    assert_eq!(&bytes[..16], b"OUTPOST-SNAPSHOT");

    let dst = Store::open(&b)?;
    let marker = dst.import_snapshot(&snap).await?;
    assert_eq!(marker, Some(b"term:2 index:40".to_vec()));
    assert_eq!(dst.applied_marker().await?, marker);
    assert_eq!(dump(&a)?, dump(&b)?);
    assert_eq!(
        dst.reader().verify_audit_chain()?,
        AuditCheck::Intact { records: 32 }
    );

    // The restored store keeps working and stays in step with the source.
    let next = encode_batch(&[env(
        900,
        Command::SetConfig {
            scope: Scope::Global,
            key: "after".into(),
            value: "restore".into(),
        },
    )]);
    src.apply(vec![Some(next.clone())], b"41".to_vec()).await?;
    dst.apply(vec![Some(next)], b"41".to_vec()).await?;
    assert_eq!(dump(&a)?, dump(&b)?);
    assert_eq!(leftovers(dir.path())?, Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn stale_import_files_are_removed_at_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("a.db");
    drop(Store::open(&db)?);
    let stale = dir.path().join("a.db.import-1-0.tmp");
    let unrelated = dir.path().join("b.db.import-1-0.tmp");
    std::fs::write(&stale, b"half a snapshot")?;
    std::fs::write(&unrelated, b"someone else's")?;
    drop(Store::open(&db)?);
    assert!(!stale.exists());
    assert!(unrelated.exists());
    Ok(())
}

#[tokio::test]
async fn import_replaces_existing_state_and_readers_see_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b, snap) = (
        dir.path().join("a.db"),
        dir.path().join("b.db"),
        dir.path().join("x.snap"),
    );
    // Snapshot of a small state; the target has more state that must disappear.
    let small = Store::open(&a)?;
    small
        .apply(vec![Some(encode_batch(&init_batch()))], b"small".to_vec())
        .await?;
    small.export_snapshot(&snap).await?;
    let big = populated(&b).await?;
    let reader = big.reader();
    assert_eq!(reader.nodes()?.len(), 6);
    big.import_snapshot(&snap).await?;
    assert_eq!(
        reader.nodes()?.len(),
        1,
        "pooled readers see the imported state"
    );
    assert_eq!(big.applied_marker().await?, Some(b"small".to_vec()));
    assert_eq!(dump(&a)?, dump(&b)?);
    drop(big);
    // And it survives a reopen.
    let reopened = Store::open(&b)?;
    assert_eq!(reopened.applied_marker().await?, Some(b"small".to_vec()));
    assert_eq!(dump(&a)?, dump(&b)?);
    Ok(())
}

#[tokio::test]
async fn damaged_snapshots_are_refused_and_leave_the_target_unchanged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b, snap) = (
        dir.path().join("a.db"),
        dir.path().join("b.db"),
        dir.path().join("x.snap"),
    );
    populated(&a).await?.export_snapshot(&snap).await?;
    let good = std::fs::read(&snap)?;

    let target = Store::open(&b)?;
    target
        .apply(
            vec![
                Some(encode_batch(&init_batch())),
                Some(encode_batch(&[join(9, "t")])),
            ],
            b"mine".to_vec(),
        )
        .await?;
    let before = dump(&b)?;

    let flip = |at: usize| {
        let mut v = good.clone();
        v[at] ^= 0x01;
        v
    };
    let mut too_long = good.clone();
    too_long.extend_from_slice(b"extra");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", vec![]),
        ("header only", good[..64].to_vec()),
        ("truncated body", good[..good.len() - 100].to_vec()),
        ("trailing bytes", too_long),
        ("bit flip in magic", flip(3)),
        ("bit flip in schema version", flip(20)),
        ("bit flip in length", flip(24)),
        ("bit flip in hash", flip(40)),
        ("bit flip in body header", flip(64 + 10)),
        ("bit flip deep in body", flip(good.len() - 500)),
    ];
    for (name, bytes) in cases {
        let bad = dir.path().join("bad.snap");
        std::fs::write(&bad, &bytes)?;
        match target.import_snapshot(&bad).await {
            Err(StorageError::SnapshotInvalid(_)) | Err(StorageError::SchemaTooNew { .. }) => {}
            other => anyhow::bail!("{name}: expected a refusal, got {other:?}"),
        }
        assert_eq!(dump(&b)?, before, "{name}: live state changed");
        assert_eq!(
            target.applied_marker().await?,
            Some(b"mine".to_vec()),
            "{name}"
        );
        assert_eq!(
            leftovers(dir.path())?,
            Vec::<String>::new(),
            "{name}: temp files left"
        );
    }
    match target
        .import_snapshot(&dir.path().join("missing.snap"))
        .await
    {
        Err(StorageError::Io(_)) => {}
        other => anyhow::bail!("missing file: expected Io, got {other:?}"),
    }
    assert_eq!(dump(&b)?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_run_beside_writes_and_are_consistent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("a.db");
    let store = populated(&db).await?;
    let mut tasks = Vec::new();
    for i in 0..3i64 {
        let (s, path) = (store.clone(), dir.path().join(format!("s{i}.snap")));
        tasks.push(tokio::spawn(async move {
            s.export_snapshot(&path).await.map(|_| ())
        }));
        let s = store.clone();
        let batch = encode_batch(&[env(
            1000 + i,
            Command::SetConfig {
                scope: Scope::Global,
                key: format!("w{i}"),
                value: "v".into(),
            },
        )]);
        tasks.push(tokio::spawn(async move {
            s.apply(vec![Some(batch)], vec![i as u8]).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Every snapshot is a consistent state: it imports cleanly with an intact chain.
    for i in 0..3 {
        let fresh = Store::open(&dir.path().join(format!("f{i}.db")))?;
        fresh
            .import_snapshot(&dir.path().join(format!("s{i}.snap")))
            .await?;
        assert!(matches!(
            fresh.reader().verify_audit_chain()?,
            AuditCheck::Intact { .. }
        ));
    }
    Ok(())
}
