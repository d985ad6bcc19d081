//! Mixed versions during a rolling upgrade (issue 22): a cluster formed by the previous
//! release (`OUTPOST_PREVIOUS_BIN`), two of its three nodes restarted on this build, and an
//! agent of the previous release. A plain `deployment create --artifact A --group G` still
//! uses the old commands, so the old node applies it and the old agent installs it. A rollout
//! (a new selector kind) is a format-8 command: the old node stops applying at that entry
//! (its status and log say it needs an upgrade, its applied index stays put) while the new
//! nodes go on; restarted on this build it applies the rest, and every node's audit chain is
//! intact and alike (it never diverged).
//!
//! Without `OUTPOST_PREVIOUS_BIN` the test fails with a clear message when `CI` is set (CI
//! builds it in `.ci/run`), and is skipped with the reason otherwise.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::agents::{Agent, Fleet};
use support::{exe, local::keygen, local::settle, local::trusting, or_dump, run_ok, s, serial};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// The previous release's binary, or `None` (skip) when it is not given outside CI.
fn previous_bin() -> Option<PathBuf> {
    match std::env::var_os("OUTPOST_PREVIOUS_BIN") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "OUTPOST_PREVIOUS_BIN={} is not a file: build the previous release (see .ci/run)",
                p.display()
            );
            Some(p)
        }
        None if std::env::var_os("CI").is_some() => panic!(
            "OUTPOST_PREVIOUS_BIN is not set: the mixed-version test needs the previous release's \
             `outpost` binary (.ci/run builds it from the commit before issue 22)"
        ),
        None => {
            eprintln!(
                "skipped: OUTPOST_PREVIOUS_BIN is not set (the previous release's `outpost` \
                 binary; e.g. OUTPOST_PREVIOUS_BIN=/work/prev-outpost, or see .ci/run)"
            );
            None
        }
    }
}

/// Polls `deployment status ID --json` through node `i` until `client` has a result.
async fn wait_result(c: &LocalCluster, i: usize, id: &str, client: &str) -> Result<Value> {
    let deadline = Instant::now() + T;
    loop {
        let v: Value = serde_json::from_str(&c.cli(i, &["deployment", "status", id, "--json"])?)?;
        if let Some(r) = v["results"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["client_id"] == client))
        {
            return Ok(r.clone());
        }
        if Instant::now() > deadline {
            bail!("no result of {client} for {id} on node {}: {v}", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether both other members answered `audit verify` and agree with the asking node.
fn every_peer_agrees(v: &Value) -> bool {
    v["peers"]
        .as_array()
        .is_some_and(|ps| ps.len() == 2 && ps.iter().all(|p| p["agrees"] == true))
}

/// Restarts node `i` on `bin` and waits until it answers.
async fn restart_on(c: &mut LocalCluster, i: usize, bin: &Path) -> Result<()> {
    c.stop(i, Duration::from_secs(20))?;
    c.exe = bin.to_path_buf();
    c.serve(i).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_nodes_stop_and_old_agents_keep_installing_plain_deployments() {
    let Some(prev) = previous_bin() else {
        return;
    };
    let _g = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let key = keygen(&root, "release");
    let opts = LocalOptions {
        env: vec![("OUTPOST_ENROLL_RATE".into(), "50".into())],
        ..trusting(&key)
    };
    // The cluster as it ran before: every node on the previous release.
    let mut c = LocalCluster::start(&root.join("cluster"), &prev, 3, opts)
        .await
        .expect("a cluster of the previous release");
    let new = exe();
    let r = async {
        // Rolling upgrade, under way: nodes 1 and 2 on this build, node 3 still on the old one
        // (restarted on it if it led, so that a new node leads).
        for i in 0..2 {
            restart_on(&mut c, i, &new).await?;
            c.wait_voters(3, T).await?;
        }
        if c.leader(T).await? == 2 {
            restart_on(&mut c, 2, &prev).await?;
            c.exe = new.clone();
        }
        c.wait_voters(3, T).await?;
        let leader = c.leader(T).await?;
        assert!(leader < 2, "the old node leads");

        std::fs::write(root.join("tool.bin"), b"tool 1\n")?;
        std::fs::write(root.join("tool2.bin"), b"tool2 1\n")?;
        std::fs::write(
            root.join("handlers.toml"),
            "[global]\n\"agent.handler.artifact\" = \"echo \\\"$OUTPOST_DEPLOYMENT\\\" >> installed.txt\"\n",
        )?;
        std::fs::write(
            root.join("spec.toml"),
            "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"tool.bin\"\nkind = \"artifact\"\nname = \"tool\"\n[[payload]]\npath = \"tool2.bin\"\nkind = \"artifact\"\nname = \"tool2\"\n[[payload]]\npath = \"handlers.toml\"\nkind = \"config\"\nname = \"handlers\"\n",
        )?;
        let bundle = root.join("site.obundle");
        run_ok(&c, &["bundle", "create", "--spec", s(&root.join("spec.toml")), "--key", s(&key), "-o", s(&bundle)])?;
        c.cli(0, &["bundle", "import", s(&bundle)])?;
        let token = c.cli(0, &["token", "create", "--kind", "client", "--group", "lab"])?.trim().to_string();
        let old_fleet = Fleet::new(&prev);
        let new_fleet = Fleet::new(&new);
        let servers: Vec<String> = c.nodes[..2].iter().map(|n| n.api_addr.clone()).collect();
        let old_agent: Agent = old_fleet.enroll(&root.join("agents"), "old", 1, &token, &servers)?.remove(0);
        let new_agent: Agent = new_fleet.enroll(&root.join("agents"), "new", 1, &token, &servers[1..])?.remove(0);

        // A plain deployment: the old commands, applied by every node; the old agent installs.
        let plain = c.cli(1, &["deployment", "create", "--artifact", "tool", "--group", "lab", "--id", "plain"])?;
        assert!(plain.starts_with("plain"), "{plain}");
        settle(&c, &[0, 1, 2]).await?;
        let out = old_fleet.sync(&old_agent)?;
        assert!(out.contains("deployment plain tool@1: installed"), "{out}");
        assert_eq!(old_agent.lines("installed.txt"), ["plain"]);
        let out = new_fleet.sync(&new_agent)?;
        assert!(out.contains("deployment plain tool@1: installed"), "{out}");
        // Every node applied both results, the old one too (read through its own CLI).
        for i in 0..3 {
            wait_result(&c, i, "plain", &old_agent.id).await?;
            wait_result(&c, i, "plain", &new_agent.id).await?;
        }
        let out = std::process::Command::new(&prev)
            .args(["deployment", "status", "plain", "--json", "--data-dir", s(&c.nodes[2].dir)])
            .env("RUST_LOG", "warn")
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("old CLI on node 3: {}", String::from_utf8_lossy(&out.stderr)))?;
        assert_eq!(v["results"].as_array().map(Vec::len), Some(2), "{v}");

        // A rollout: a format-8 command. The new nodes apply it; the old one stops there.
        let before = c.status(2).await?.applied_index;
        let out = c.cli(0, &["deployment", "create", "--artifact", "tool2", "--client", &new_agent.id, "--id", "phased"])?;
        assert!(out.starts_with("phased"), "{out}");
        let stopped = c.wait_for(2, T, "stopped applying", |s| s.fatal.is_some()).await?;
        let why = stopped.fatal.clone().unwrap_or_default();
        assert!(why.contains("newer than the supported format"), "{why}");
        let log = std::fs::read_to_string(&c.nodes[2].log)?;
        assert!(log.contains("newer than the supported format"), "node 3's log does not say it needs an upgrade");
        settle(&c, &[0, 1]).await?;
        // The new nodes go on: writes commit, the rollout installs on the new agent.
        for n in 0..3 {
            c.cli(n % 2, &["config", "set", &format!("after.rollout.{n}"), "v"])?;
        }
        let out = new_fleet.sync(&new_agent)?;
        assert!(out.contains("deployment phased tool2@1: installed"), "{out}");
        let ahead = c.wait_for(1, T, "applied the later writes", |s| s.applied_index > before + 3).await?;
        let old = c.status(2).await?;
        assert!(old.fatal.is_some());
        assert!(
            old.applied_index < ahead.applied_index && old.applied_index >= before,
            "old node applied {} (before the rollout {before}), new node {}",
            old.applied_index,
            ahead.applied_index
        );
        // What the old node applied is what the others applied up to there: its audit chain
        // (asked over the peer port, as far as it goes) agrees with node 1's.
        let v: Value = serde_json::from_str(&c.cli(0, &["audit", "verify", "--json"])?)?;
        assert!(v["ok"] == true && every_peer_agrees(&v), "{v}");
        // The old agent keeps syncing with the new nodes; nothing of the rollout for it.
        let out = old_fleet.sync(&old_agent)?;
        assert!(out.starts_with("synced with") && !out.contains("phased"), "{out}");

        // The upgrade completes: node 3 on this build applies the rest, and every audit chain
        // is intact and alike (what the old node applied equals what the others applied).
        restart_on(&mut c, 2, &new).await?;
        let target = c.status(0).await?.applied_index;
        c.wait_for(2, T, "caught up", |s| s.fatal.is_none() && s.applied_index >= target).await?;
        for i in 0..3 {
            let v: Value = serde_json::from_str(&c.cli(i, &["audit", "verify", "--json"])?)?;
            assert!(v["ok"] == true && every_peer_agrees(&v), "node {}: {v}", i + 1);
        }
        let v: Value = serde_json::from_str(&c.cli(2, &["deployment", "status", "phased", "--json"])?)?;
        assert_eq!(v["results"][0]["status"], "installed", "{v}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
    eprintln!(
        "old_nodes_stop_and_old_agents_keep_installing_plain_deployments: {:?}",
        started.elapsed()
    );
}
