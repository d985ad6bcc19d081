//! Retention through the real binary: a signed bundle sets a short policy on a 3-node
//! cluster; the leader's pass compacts (a checkpoint on every node, inventory history cut);
//! `audit verify` passes on every node afterwards; state.db shrinks; every checkpoint ends an
//! archive the proposer kept of what it moved out, which verifies offline; an export made before
//! the cut verifies offline against a checkpoint and fails after a byte flip; the policy
//! cannot be set by `config set`, nor by a bundle outside `[global]`.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::agents::Fleet;
use support::local::{settle, trusted_cluster};
use support::{exe, or_dump, run_exe, run_ok, s, serial};

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::LocalCluster;

fn state_db(dir: &Path) -> Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open(dir.join("state.db"))?;
    db.busy_timeout(Duration::from_secs(5))?;
    Ok(db)
}

fn count(dir: &Path, sql: &str) -> Result<i64> {
    Ok(state_db(dir)?.query_row(sql, [], |r| r.get(0))?)
}

/// state.db's size once its WAL is checkpointed into it (from a connection of our own).
fn checkpointed_size(dir: &Path) -> Result<u64> {
    let db = state_db(dir)?;
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(std::fs::metadata(dir.join("state.db"))?.len())
}

/// A signed bundle on channel `channel` whose config payload is `toml`.
fn config_bundle(
    c: &LocalCluster,
    root: &Path,
    key: &Path,
    channel: &str,
    toml: &str,
) -> Result<std::path::PathBuf> {
    let payload = root.join(format!("{channel}.toml"));
    std::fs::write(&payload, toml)?;
    let spec = root.join(format!("{channel}-spec.toml"));
    std::fs::write(
        &spec,
        format!(
            "channel = \"{channel}\"\nversion = 1\n[[payload]]\npath = \"{}\"\nkind = \"config\"\nname = \"policy\"\n",
            payload.display()
        ),
    )?;
    let bundle = root.join(format!("{channel}.obundle"));
    run_ok(
        c,
        &[
            "bundle",
            "create",
            "--spec",
            s(&spec),
            "--key",
            s(key),
            "-o",
            s(&bundle),
        ],
    )?;
    Ok(bundle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_policy_compacts_and_the_chain_still_verifies() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let (key, c) = trusted_cluster(&root, "site", "cluster", 3, &[])
        .await
        .expect("three-node cluster");
    let r = async {
        // History to cut: a few thousand audit records, and one agent's inventory.
        c.cli(0, &["bench", "write", "--clients", "8", "--seconds", "4", "--value-bytes", "16"])?;
        let token = c.cli(0, &["token", "create", "--kind", "client"])?.trim().to_string();
        let servers: Vec<String> = c.nodes.iter().map(|n| n.api_addr.clone()).collect();
        Fleet::new(&exe()).enroll(&root.join("agents"), "pc", 1, &token, &servers)?;
        c.cli(0, &["config", "set", "before.cut", "1"])?;
        settle(&c, &[0, 1, 2]).await?;
        let newest = count(&c.nodes[0].dir, "SELECT MAX(seq) FROM audit")?;
        assert!(newest > 500, "only {newest} audit records to cut");
        for i in 0..3 {
            let rows = count(&c.nodes[i].dir, "SELECT COUNT(*) FROM inventory_history")?;
            assert!(rows > 0, "node {i}: no inventory history to cut");
        }
        let before: Vec<u64> = (0..3).map(|i| checkpointed_size(&c.nodes[i].dir)).collect::<Result<_>>()?;

        // Kept before the cut, with their hashes.
        let export = root.join("audit.jsonl");
        c.cli(0, &["audit", "export", "-o", s(&export)])?;

        // The policy is set only by a signed bundle, and only cluster-wide.
        let e = c.cli(0, &["config", "set", "retention.audit", "1d"]).expect_err("config set retention.audit");
        assert!(format!("{e:#}").contains("retention.audit"), "{e:#}");
        let grouped = config_bundle(&c, &root, &key, "grouped", "[group.lab]\n\"retention.audit\" = \"5s\"\n")?;
        let e = c.cli(0, &["bundle", "import", s(&grouped)]).expect_err("a grouped retention bundle");
        assert!(format!("{e:#}").contains("retention.audit") && format!("{e:#}").contains("[group.lab]"), "{e:#}");

        let policy = config_bundle(
            &c,
            &root,
            &key,
            "policy",
            "[global]\n\"retention.audit\" = \"5s\"\n\"retention.inventory_history\" = \"5s\"\n",
        )?;
        c.cli(1, &["bundle", "import", s(&policy)])?;

        // Every node applies the leader's compaction: records up to `newest` leave.
        let deadline = Instant::now() + Duration::from_secs(90);
        for i in 0..3 {
            loop {
                let cut = count(&c.nodes[i].dir, "SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")?;
                let history = count(&c.nodes[i].dir, "SELECT COUNT(*) FROM inventory_history")?;
                if cut >= newest && history == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {i}: checkpoint at {cut} (want >= {newest}), {history} inventory history rows");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        settle(&c, &[0, 1, 2]).await?;
        for (i, before) in before.iter().enumerate() {
            let out = c.cli(i, &["audit", "verify", "--full"])?;
            assert!(out.contains("intact"), "node {i}: {out}");
            let out = c.cli(i, &["audit", "verify"])?;
            assert!(out.contains("intact"), "node {i}: {out}");
            let after = checkpointed_size(&c.nodes[i].dir)?;
            assert!(after < *before, "node {i}: state.db {before} bytes before, {after} after");
            let compacts = count(&c.nodes[i].dir, "SELECT COUNT(*) FROM audit WHERE action = 'audit.compact'")?;
            assert!(compacts >= 1, "node {i}: the compaction is audited");
        }

        // What left the live log was kept first: every checkpoint is the last record of an
        // archive the proposing node wrote, which verifies offline against it.
        let checkpoints: Vec<(i64, String)> = state_db(&c.nodes[0].dir)?
            .prepare("SELECT seq, hash FROM audit_checkpoints ORDER BY seq")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        assert!(!checkpoints.is_empty(), "no checkpoint on node 0");
        let archives: Vec<std::path::PathBuf> = (0..3)
            .filter_map(|i| std::fs::read_dir(c.nodes[i].dir.join("audit-archive")).ok())
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        for (seq, hash) in &checkpoints {
            let end = format!("-{seq:012}.jsonl");
            let file = archives
                .iter()
                .find(|p| p.to_string_lossy().ends_with(&end))
                .with_context(|| format!("no archive ends at checkpoint {seq}: {archives:?}"))?;
            let cp = format!("{seq}:{hash}");
            let (ok, out, err) = run_exe(&["audit", "verify", "--file", s(file), "--checkpoint", &cp])?;
            assert!(ok, "archive {} against {cp}: {out}{err}", file.display());
        }

        // The export verifies offline against a checkpoint it holds (the newest one not past
        // its last record), and not once one byte of a record changed.
        let text = std::fs::read_to_string(&export)?;
        let last_seq = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["seq"].as_i64())
            .context("the export's last record")?;
        let (cp_seq, cp_hash): (i64, String) = state_db(&c.nodes[2].dir)?.query_row(
            "SELECT seq, hash FROM audit_checkpoints WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1",
            [last_seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let checkpoint = format!("{cp_seq}:{cp_hash}");
        let (ok, out, err) = run_exe(&["audit", "verify", "--file", s(&export), "--checkpoint", &checkpoint])?;
        assert!(ok, "{out}{err}");
        let flipped = root.join("flipped.jsonl");
        let at = text.find("\"actor\":\"").context("an actor in the export")? + "\"actor\":\"".len();
        let mut bytes = text.into_bytes();
        bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
        std::fs::write(&flipped, bytes)?;
        let (ok, out, err) = run_exe(&["audit", "verify", "--file", s(&flipped), "--checkpoint", &checkpoint])?;
        assert!(!ok, "a flipped export verified: {out}{err}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
