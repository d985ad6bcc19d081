//! Routine liveness is not an audit event, through the real binary: 1,000 simulated agents
//! (`outpost bench sync`: each enrolled with its own certificate through one multi-use
//! token, then syncing once a minute for 3 minutes) add no audit record beyond their
//! enrollments and that token, on any node; and their last-seen times still replicate to
//! every node (`Command::Quiet` around `TouchClients`).

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, or_dump, serial};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};

const AGENTS: usize = 1000;

fn state_db(dir: &Path) -> Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    db.busy_timeout(Duration::from_secs(5))?;
    Ok(db)
}

/// The newest audit seq on a node.
fn newest_seq(dir: &Path) -> Result<i64> {
    Ok(state_db(dir)?.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get(0))?)
}

/// A node's audit records after `seq`, counted by action.
fn actions_after(dir: &Path, seq: i64) -> Result<BTreeMap<String, i64>> {
    let db = state_db(dir)?;
    let mut stmt =
        db.prepare("SELECT action, COUNT(*) FROM audit WHERE seq > ?1 GROUP BY action")?;
    let rows = stmt.query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A node's clients: how many, and how many were seen at least `after_ms` after they
/// enrolled.
fn clients_seen(dir: &Path, after_ms: i64) -> Result<(i64, i64)> {
    Ok(state_db(dir)?.query_row(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE last_seen_ms >= enrolled_at_ms + ?1)
         FROM clients",
        [after_ms],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_fleet_adds_nothing_to_the_audit() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        // One fleet enrolling at once passes the default cluster-wide enrollment rate.
        env: vec![("OUTPOST_ENROLL_RATE".into(), "5000".into())],
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, opts)
        .await
        .expect("three-node cluster");
    let r = async {
        // Everything the cluster did on its own so far (each node's start-up report) is
        // applied on every node.
        c.wait_reported(Duration::from_secs(60)).await?;
        c.cli(0, &["config", "set", "before.fleet", "1"])?;
        support::local::settle(&c, &[0, 1, 2]).await?;
        let before: Vec<i64> = (0..3)
            .map(|i| newest_seq(&c.nodes[i].dir))
            .collect::<Result<_>>()?;
        let json = c.cli(
            0,
            &[
                "bench",
                "sync",
                "--clients",
                &AGENTS.to_string(),
                "--seconds",
                "180",
                "--interval",
                "60s",
                "--json",
            ],
        )?;
        let report: serde_json::Value = serde_json::from_str(&json)?;
        assert_eq!(report["errors"], 0, "{report}");
        // 3 syncs per agent, each within its 3 minutes.
        assert!(
            report["syncs"].as_u64() >= Some(3 * AGENTS as u64),
            "{report}"
        );
        // Every client's third sync reached every node (flushed every 5 s): seen at least
        // 100 s after it enrolled (its syncs come one minute apart).
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..3 {
            loop {
                let (n, seen) = clients_seen(&c.nodes[i].dir, 100_000)?;
                if n == AGENTS as i64 && seen == n {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {i}: {seen} of {n} clients seen 100 s after enrolling");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        c.cli(0, &["config", "set", "after.fleet", "1"])?;
        support::local::settle(&c, &[0, 1, 2]).await?;
        let want: BTreeMap<String, i64> = [
            ("client.enroll".to_owned(), AGENTS as i64),
            ("config.set".to_owned(), 1),
            ("token.create".to_owned(), 1),
        ]
        .into();
        for (i, seq) in before.iter().enumerate() {
            let mut got = actions_after(&c.nodes[i].dir, *seq).context("reading the audit")?;
            // Liveness would read `clients.seen`; none at all.
            assert_eq!(got.get("clients.seen"), None, "node {i}: {got:?}");
            // A node's own start-up report (its version and binary) may land late on a
            // loaded machine: upkeep of the nodes, not of the fleet.
            got.retain(|action, _| !matches!(action.as_str(), "node.binary" | "node.update"));
            assert_eq!(got, want, "node {i}: audit records added during the run");
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
