//! `outpost audit verify` through the real binary: a healthy cluster's chains verify and
//! agree; a record altered on one node's disk is named by `--full`, by that node and by the
//! others (the default check reads only what follows each node's verified mark, which is
//! past the altered record here: tests/audit_export.rs shows that side).

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, local::audit_verify, or_dump, serial};

use std::time::Duration;

use anyhow::{Context, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_agrees_then_names_an_altered_record() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, LocalOptions::default())
        .await
        .expect("three-node cluster");
    let r = async {
        for i in 0..5 {
            c.cli(i % 3, &["config", "set", &format!("audited.{i}"), "v"])?;
        }
        // Every node has applied the writes before the chains are compared.
        c.cli(2, &["config", "get", "audited.4", "--linearizable"])?;
        let json = c.cli(0, &["audit", "verify", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        assert_eq!(v["ok"], true, "{v}");
        let peers = v["peers"].as_array().context("peers")?;
        assert_eq!(peers.len(), 2, "{v}");
        assert!(peers.iter().all(|p| p["agrees"] == true), "{v}");
        let (ok, out, err) = audit_verify(&c, 1, true)?;
        assert!(ok, "{out}{err}");
        assert!(out.contains("intact"), "{out}");

        // Node 3 (index 2) is stopped, one record of its audit is altered on disk, it is
        // started again.
        let victim = c.status(2).await?.node_id;
        assert!(c.stop(2, Duration::from_secs(10))?, "clean stop");
        {
            let db = rusqlite::Connection::open(c.nodes[2].dir.join("state.db"))?;
            let n = db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3", [])?;
            assert_eq!(n, 1);
        }
        c.serve(2).await?;
        c.wait_ready(2, T).await?;

        let (ok, out, err) = audit_verify(&c, 2, true)?;
        assert!(!ok, "an altered chain verified: {out}");
        assert!(err.contains("record 3 does not verify"), "{out}{err}");
        let (ok, out, err) = audit_verify(&c, 0, true)?;
        assert!(!ok, "a member's altered chain went unnoticed: {out}");
        assert!(
            err.contains(&format!("node {victim}: record 3 does not verify")),
            "{out}{err}"
        );
        if out.is_empty() {
            bail!("verify printed nothing on stdout");
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
