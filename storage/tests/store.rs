//! The store end to end: writer thread, readers, determinism, audit chain, refusals at open.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use common::{dump, env, init_batch, join, workload};
use outpost_storage::{
    AuditCheck, COMMAND_FORMAT, Command, NodeRole, RejectCode, Response, SCHEMA_VERSION, Scope,
    StorageError, Store, TokenKind, encode_batch,
};

#[test]
fn handles_and_futures_are_send() -> anyhow::Result<()> {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("s.db"))?;
    send_sync(&store);
    send_sync(&store.reader());
    // Built, checked and dropped without being polled.
    send(&store.apply(vec![], vec![]));
    send(&store.applied_marker());
    send(&store.export_snapshot(dir.path()));
    send(&store.import_snapshot(dir.path()));
    Ok(())
}

#[tokio::test]
async fn apply_returns_outcomes_per_entry_and_stores_marker() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("state.db");
    let store = Store::open(&db)?;
    assert_eq!(std::fs::metadata(&db)?.permissions().mode() & 0o777, 0o600);
    assert_eq!(store.applied_marker().await?, None);

    let second = encode_batch(&[
        join(10, "n2"),
        env(
            11,
            Command::DeleteConfig {
                scope: Scope::Global,
                key: "nope".into(),
            },
        ),
    ]);
    let out = store
        .apply(
            vec![Some(encode_batch(&init_batch())), None, Some(second)],
            b"log:3".to_vec(),
        )
        .await?;
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].as_ref().map(Vec::len), Some(3));
    assert!(out[0].iter().flatten().all(Result::is_ok));
    assert_eq!(out[1], None);
    let second = out[2].clone().unwrap_or_default();
    assert_eq!(second[0], Ok(Response::NodeId(2)));
    assert_eq!(
        second[1].as_ref().map_err(|r| r.code),
        Err(RejectCode::NotFound)
    );
    assert_eq!(store.applied_marker().await?, Some(b"log:3".to_vec()));

    // An empty run still moves the marker.
    store.apply(vec![None], b"log:4".to_vec()).await?;
    assert_eq!(store.applied_marker().await?, Some(b"log:4".to_vec()));

    let r = store.reader();
    let reader = r.clone();
    let (cluster, nodes, tokens, audit) = tokio::task::spawn_blocking(move || {
        anyhow::Ok((
            reader.cluster()?,
            reader.nodes()?,
            reader.tokens()?,
            reader.audit(0, 100)?,
        ))
    })
    .await??;
    let cluster = cluster.ok_or_else(|| anyhow::anyhow!("no cluster"))?;
    assert_eq!(
        (
            cluster.id.as_str(),
            cluster.name.as_str(),
            cluster.created_at_ms
        ),
        ("c-1", "plant", 1)
    );
    assert_eq!(nodes.len(), 2);
    assert_eq!((nodes[0].id, nodes[0].role), (1, NodeRole::Voter));
    assert_eq!(
        (nodes[1].id, nodes[1].role, nodes[1].joined_at_ms),
        (2, NodeRole::Joining, 10)
    );
    assert_eq!(r.node(2)?.map(|n| n.name), Some("n2".to_owned()));
    assert_eq!(r.node(42)?, None);
    assert_eq!(r.node(u64::MAX)?, None);
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        (tokens[0].kind, tokens[0].uses_left),
        (TokenKind::Node, Some(4))
    );
    assert_eq!(r.token("nt")?.map(|t| t.revoked), Some(false));
    assert_eq!(r.token("zz")?, None);
    assert_eq!(
        audit.len(),
        5,
        "one audit row per envelope, rejected ones too"
    );
    assert_eq!(
        audit[4].outcome,
        format!("rejected: not_found: config key nope is not set in scope global")
    );
    assert_eq!(audit[3].target, "node:2");
    let page = r.audit(2, 2)?;
    assert_eq!(page.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(r.verify_audit_chain()?, AuditCheck::Intact { records: 5 });
    Ok(())
}

#[tokio::test]
async fn config_queries_and_effective_merge() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("s.db"))?;
    let set = |at, scope: Scope, key: &str, value: &str| {
        env(
            at,
            Command::SetConfig {
                scope,
                key: key.into(),
                value: value.into(),
            },
        )
    };
    let g = |s: &str| Scope::Group(s.into());
    let batch = [
        set(10, Scope::Global, "ntp", "g"),
        set(11, Scope::Global, "dns", "g"),
        set(12, g("lab"), "ntp", "lab"),
        set(13, g("ship"), "ntp", "ship"),
        set(14, g("ship"), "proxy", "ship"),
        set(15, Scope::Client("h1".into()), "dns", "h1"),
        set(16, Scope::Client("h2".into()), "dns", "h2"),
        set(17, Scope::Global, "ntp", "g2"),
    ];
    store
        .apply(
            vec![
                Some(encode_batch(&init_batch())),
                Some(encode_batch(&batch)),
            ],
            vec![1],
        )
        .await?;
    let r = store.reader();
    let e = r
        .config_get(&Scope::Global, "ntp")?
        .ok_or_else(|| anyhow::anyhow!("missing"))?;
    assert_eq!(
        (
            e.value.as_str(),
            e.version,
            e.updated_at_ms,
            e.updated_by.as_str()
        ),
        ("g2", 2, 17, "admin")
    );
    assert_eq!(r.config_get(&g("lab"), "dns")?, None);
    assert_eq!(r.config_list(None)?.len(), 7);
    assert_eq!(r.config_list(Some(&g("ship")))?.len(), 2);
    assert_eq!(r.config_list(Some(&Scope::Global))?.len(), 2);

    let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let cases: Vec<(&str, Vec<&str>, BTreeMap<String, String>)> = vec![
        ("h9", vec![], m(&[("dns", "g"), ("ntp", "g2")])),
        ("h1", vec!["lab"], m(&[("dns", "h1"), ("ntp", "lab")])),
        (
            "h2",
            vec!["lab", "ship"],
            m(&[("dns", "h2"), ("ntp", "ship"), ("proxy", "ship")]),
        ),
        (
            "h2",
            vec!["ship", "lab"],
            m(&[("dns", "h2"), ("ntp", "lab"), ("proxy", "ship")]),
        ),
    ];
    for (client, groups, want) in cases {
        let groups: Vec<String> = groups.into_iter().map(String::from).collect();
        assert_eq!(
            r.config_effective(client, &groups)?,
            want,
            "{client} {groups:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn undecodable_or_newer_entry_aborts_the_whole_call() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("s.db");
    let store = Store::open(&db)?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], b"one".to_vec())
        .await?;
    let before = dump(&db)?;

    let mut newer = encode_batch(&[join(5, "x")]);
    newer[..2].copy_from_slice(&(COMMAND_FORMAT + 1).to_le_bytes());
    let good = Some(encode_batch(&[join(5, "x")]));
    match store
        .apply(vec![good.clone(), Some(newer)], b"two".to_vec())
        .await
    {
        Err(StorageError::NeedsUpgrade { found, supported }) => {
            assert_eq!((found, supported), (COMMAND_FORMAT + 1, COMMAND_FORMAT));
        }
        other => anyhow::bail!("expected NeedsUpgrade, got {other:?}"),
    }
    match store
        .apply(vec![good, Some(vec![1, 0, 9, 9, 9])], b"two".to_vec())
        .await
    {
        Err(StorageError::Decode(_)) => {}
        other => anyhow::bail!("expected Decode, got {other:?}"),
    }
    assert_eq!(store.applied_marker().await?, Some(b"one".to_vec()));
    assert_eq!(dump(&db)?, before, "nothing of an aborted call is applied");
    Ok(())
}

#[tokio::test]
async fn same_batches_give_identical_databases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (sa, sb) = (Store::open(&a)?, Store::open(&b)?);
    let batches = workload();
    // Same entries, split into different apply calls: the result must not depend on grouping.
    sa.apply(batches.iter().cloned().map(Some).collect(), b"end".to_vec())
        .await?;
    for (i, bytes) in batches.iter().enumerate() {
        let marker = if i + 1 == batches.len() {
            b"end".to_vec()
        } else {
            vec![i as u8]
        };
        sb.apply(vec![Some(bytes.clone())], marker).await?;
    }
    let (da, db_) = (dump(&a)?, dump(&b)?);
    assert!(da.iter().any(|l| l.starts_with("audit|")));
    assert_eq!(da, db_);
    assert_eq!(
        sa.reader().verify_audit_chain()?,
        AuditCheck::Intact { records: 32 }
    );
    Ok(())
}

#[tokio::test]
async fn tampered_audit_row_breaks_the_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("s.db");
    let store = Store::open(&db)?;
    store
        .apply(workload().into_iter().map(Some).collect(), vec![])
        .await?;
    let r = store.reader();
    assert_eq!(r.verify_audit_chain()?, AuditCheck::Intact { records: 32 });

    let raw = rusqlite::Connection::open(&db)?;
    let tampers: [(&str, u64); 6] = [
        ("UPDATE audit SET detail = '{}' WHERE seq = 7", 7),
        ("UPDATE audit SET actor = 'mallory' WHERE seq = 3", 3),
        ("UPDATE audit SET at_ms = at_ms + 1 WHERE seq = 32", 32),
        ("UPDATE audit SET hash = prev_hash WHERE seq = 20", 20),
        ("DELETE FROM audit WHERE seq = 12", 12),
        ("DELETE FROM audit WHERE seq = 32", 32),
    ];
    // Each tamper is checked on its own copy of the chain, restored from a saved table.
    raw.execute_batch("CREATE TEMP TABLE saved AS SELECT * FROM audit")?;
    for (sql, want) in tampers {
        raw.execute_batch(sql)?;
        let got = r.verify_audit_chain()?;
        raw.execute_batch("DELETE FROM audit; INSERT INTO audit SELECT * FROM temp.saved")?;
        assert_eq!(got, AuditCheck::Broken { seq: want }, "{sql}");
        assert_eq!(r.verify_audit_chain()?, AuditCheck::Intact { records: 32 });
    }
    Ok(())
}

#[tokio::test]
async fn node_ids_are_never_reused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("s.db");
    let ids = {
        let store = Store::open(&db)?;
        let out = store
            .apply(
                vec![
                    Some(encode_batch(&init_batch())),
                    Some(encode_batch(&[
                        join(10, "a"),
                        env(11, Command::RemoveNode { id: 2 }),
                        join(12, "b"),
                        env(
                            13,
                            Command::AddNode {
                                id: 2,
                                name: "again".into(),
                                api_addr: "x:1".into(),
                                peer_addr: "x:2".into(),
                                version: "1".into(),
                            },
                        ),
                    ])),
                ],
                vec![],
            )
            .await?;
        out.into_iter().flatten().flatten().collect::<Vec<_>>()
    };
    assert_eq!(ids[3], Ok(Response::NodeId(2)));
    assert_eq!(ids[5], Ok(Response::NodeId(3)));
    assert_eq!(
        ids[6].as_ref().map_err(|r| r.code),
        Err(RejectCode::AlreadyExists)
    );
    // The counter survives a restart.
    let store = Store::open(&db)?;
    let out = store
        .apply(vec![Some(encode_batch(&[join(20, "c")]))], vec![])
        .await?;
    assert_eq!(out[0].as_deref(), Some(&[Ok(Response::NodeId(4))][..]));
    assert_eq!(
        store.reader().node(2)?.map(|n| n.role),
        Some(NodeRole::Removed)
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_callers_are_serialized_by_the_writer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("s.db"))?;
    store
        .apply(vec![Some(encode_batch(&init_batch()))], vec![])
        .await?;
    let mut tasks = Vec::new();
    for i in 0..16i64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.apply(
                vec![Some(encode_batch(&[join(100 + i, &format!("n{i}"))]))],
                vec![],
            )
            .await
        }));
    }
    let mut ids = Vec::new();
    let mut used_up = 0;
    for t in tasks {
        for o in t.await??.into_iter().flatten().flatten() {
            match o {
                Ok(Response::NodeId(id)) => ids.push(id),
                Err(r) if r.code == RejectCode::TokenUsedUp => used_up += 1,
                other => anyhow::bail!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(used_up, 11);
    ids.sort_unstable();
    // Token "nt" has 5 uses: exactly 5 joins succeed, with ids 2..=6.
    assert_eq!(ids, vec![2, 3, 4, 5, 6]);
    assert_eq!(
        store.reader().verify_audit_chain()?,
        AuditCheck::Intact { records: 19 }
    );
    Ok(())
}

#[test]
fn newer_schema_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("s.db");
    drop(Store::open(&db)?);
    rusqlite::Connection::open(&db)?.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
    match Store::open(&db) {
        Err(StorageError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        Err(e) => anyhow::bail!("expected SchemaTooNew, got {e:?}"),
        Ok(_) => anyhow::bail!("a newer schema was opened"),
    }
    Ok(())
}

#[test]
fn garbage_and_damaged_files_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let garbage = dir.path().join("garbage.db");
    std::fs::write(
        &garbage,
        b"this is not a database at all, just text".repeat(200),
    )?;
    match Store::open(&garbage) {
        Err(StorageError::Corrupt(m)) => assert!(m.contains("garbage.db"), "{m}"),
        Err(e) => anyhow::bail!("expected Corrupt, got {e:?}"),
        Ok(_) => anyhow::bail!("garbage was opened"),
    }

    // A real database with a damaged b-tree page.
    let db = dir.path().join("damaged.db");
    {
        let mut c = rusqlite::Connection::open(&db)?;
        let tx = c.transaction()?;
        tx.execute_batch("CREATE TABLE t (x TEXT); CREATE INDEX tx ON t (x);")?;
        for i in 0..2000 {
            tx.execute(
                "INSERT INTO t VALUES (?1)",
                [format!("row {i} {}", "y".repeat(50))],
            )?;
        }
        tx.commit()?;
    }
    let mut bytes = std::fs::read(&db)?;
    anyhow::ensure!(bytes.len() > 4096 * 6, "database too small to damage");
    for b in &mut bytes[4096 * 3..4096 * 3 + 200] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes)?;
    match Store::open(&db) {
        Err(StorageError::Corrupt(_)) => Ok(()),
        Err(e) => anyhow::bail!("expected Corrupt, got {e:?}"),
        Ok(_) => anyhow::bail!("a damaged database was opened"),
    }
}
