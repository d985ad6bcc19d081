//! Rolling self-upgrade through the real binary: a three-node cluster rolls to a new release
//! (the same binary with bytes appended: it runs, its SHA-256 differs) while a writer keeps
//! writing through every node; then a release that does not start (a script that exits 1)
//! is refused on the first node and the roll stops with the reason, the cluster unchanged.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, local::keygen, local::trusting, or_dump, s, serial, writer};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use sha2::{Digest, Sha256};

const T: Duration = Duration::from_secs(30);

fn sha256(path: &Path) -> Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

/// A signed bundle on channel `outpost` at `version` carrying `release` as its
/// outpost-release payload.
fn release_bundle(
    c: &LocalCluster,
    root: &Path,
    key: &Path,
    release: &Path,
    version: u64,
) -> Result<PathBuf> {
    let dir = root.join(format!("v{version}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(release, dir.join("outpost"))?;
    let spec = dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "channel = \"outpost\"\nversion = {version}\n\n[[payload]]\npath = \"outpost\"\nkind = \"outpost-release\"\nname = \"outpost\"\n"
        ),
    )?;
    let out = dir.join("release.obundle");
    let r = c.run(&[
        "bundle",
        "create",
        "--spec",
        s(&spec),
        "--key",
        s(key),
        "-o",
        s(&out),
    ])?;
    if !r.status.success() {
        bail!("bundle create: {}", String::from_utf8_lossy(&r.stderr));
    }
    Ok(out)
}

/// Polls `upgrade status --json` through any answering node until the roll is no longer
/// running; returns its JSON.
async fn wait_roll_end(c: &LocalCluster, timeout: Duration) -> Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        for i in 0..c.nodes.len() {
            if let Ok(out) = c.cli(i, &["upgrade", "status", "--json"]) {
                let v: serde_json::Value = serde_json::from_str(&out)?;
                let state = v["roll"]["state"].as_str().unwrap_or("");
                if state == "done" || state == "stopped" {
                    return Ok(v);
                }
                last = out;
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the roll did not end within {timeout:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_rolls_to_a_new_release_and_refuses_one_that_does_not_start() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let key = keygen(root, "signer");
    let opts = LocalOptions {
        env: vec![("OUTPOST_ROLL_STEP_SECS".into(), "90".into())],
        ..trusting(&key)
    };
    let mut c = LocalCluster::start(&root.join("cluster"), &exe(), 3, opts)
        .await
        .expect("three-node cluster");
    let r = async {
        let old_sha = sha256(&exe())?;
        // Every node reports what it runs.
        let deadline = Instant::now() + T;
        loop {
            let st = c.status(0).await?;
            if st.builds.len() == 3 && st.builds.iter().all(|b| b.binary_sha256 == old_sha) {
                break;
            }
            if Instant::now() > deadline {
                bail!("nodes did not report their executable: {:?}", st.builds);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let release = root.join("outpost-next");
        let mut bytes = std::fs::read(exe())?;
        bytes.extend_from_slice(b"\nappended: a release that differs\n");
        std::fs::write(&release, &bytes)?;
        let new_sha = sha256(&release)?;
        let bundle = release_bundle(&c, root, &key, &release, 1)?;

        let stop = Arc::new(AtomicBool::new(false));
        let dirs = c.nodes.iter().map(|n| n.dir.clone()).collect();
        let w = writer(c.exe.clone(), dirs, "roll", stop.clone(), 100_000);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        let said = c.cli(0, &["bundle", "import", s(&bundle)])?;
        assert!(said.contains("rolling upgrade"), "{said}");
        let v = wait_roll_end(&c, Duration::from_secs(240)).await?;
        let roll_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        let written = w.join().map_err(|_| anyhow::anyhow!("writer panicked"))?;
        let (acked, refused): (Vec<String>, u64) = (
            written.acked.into_iter().map(|(k, _)| k).collect(),
            written.refused,
        );
        assert_eq!(v["roll"]["state"], "done", "{v}");
        println!(
            "three-node roll: {roll_secs:.1} s; writes during it: {} acknowledged, {refused} refused",
            acked.len()
        );
        for i in 0..3 {
            let link = std::fs::read_link(c.nodes[i].dir.join("bin/current"))
                .with_context(|| format!("node {i} has no bin/current"))?;
            assert!(link.to_string_lossy().ends_with(&new_sha), "{}", link.display());
        }
        let leader = c.leader(T).await?;
        let st = c.status(leader).await?;
        assert_eq!(st.builds.len(), 3);
        assert!(st.builds.iter().all(|b| b.binary_sha256 == new_sha), "{:?}", st.builds);
        // Every acknowledged write is on every node.
        c.cli(leader, &["config", "set", "after.roll", "yes"])?;
        for i in 0..3 {
            c.cli(i, &["config", "get", "after.roll", "--linearizable"])?;
            let list: serde_json::Value =
                serde_json::from_str(&c.cli(i, &["config", "list", "--json"])?)?;
            let have: BTreeSet<&str> = list
                .as_array()
                .context("list")?
                .iter()
                .filter_map(|e| e["key"].as_str())
                .collect();
            let missing: Vec<&String> = acked.iter().filter(|k| !have.contains(k.as_str())).collect();
            assert!(missing.is_empty(), "node {i} lost {missing:?}");
        }
        let audit = c.cli(0, &["audit", "--limit", "500"])?;
        assert!(audit.contains("upgrade.done"), "{audit}");

        // A release that does not start: refused on the first node, the roll stops, nothing
        // changes.
        let broken = root.join("broken");
        std::fs::write(&broken, "#!/bin/sh\necho broken >&2\nexit 1\n")?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755))?;
        }
        let bundle = release_bundle(&c, root, &key, &broken, 2)?;
        // Imported without a roll (a release only for agents), then rolled on demand.
        let said = c.cli(leader, &["bundle", "import", s(&bundle), "--no-roll"])?;
        assert!(!said.contains("rolling upgrade"), "{said}");
        let id = said
            .split_whitespace()
            .nth(2)
            .map(|w| w.trim_end_matches(':').to_owned())
            .context("bundle id in the import output")?;
        let v: serde_json::Value =
            serde_json::from_str(&c.cli(leader, &["upgrade", "status", "--json"])?)?;
        assert_eq!(v["roll"]["state"], "done", "no new roll: {v}");
        let said = c.cli(leader, &["upgrade", "start", &id])?;
        assert!(said.contains("running"), "{said}");
        let v = wait_roll_end(&c, Duration::from_secs(120)).await?;
        assert_eq!(v["roll"]["state"], "stopped", "{v}");
        let reason = v["roll"]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("does not start"), "{reason}");
        let st = c.status(leader).await?;
        assert!(st.builds.iter().all(|b| b.binary_sha256 == new_sha), "{:?}", st.builds);
        c.cli(leader, &["config", "set", "after.broken", "yes"])?;
        let human = c.cli(0, &["upgrade", "status"])?;
        assert!(human.contains("stopped: node"), "{human}");
        // Started again (the operator's retry), the node tries the release afresh and refuses
        // it again, rather than leaving the roll to stop at its deadline ("did not come back").
        c.cli(leader, &["upgrade", "start", &id])?;
        let v = wait_roll_end(&c, Duration::from_secs(120)).await?;
        let reason = v["roll"]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("does not start"), "{reason}");

        // A release that answers --version but dies when it serves: the node's process ends
        // after the switch; its next start (what systemd's Restart= does, here by hand) finds
        // the unconfirmed trial, goes back to the release before and stops the roll.
        let crashing = root.join("crashing");
        std::fs::write(
            &crashing,
            "#!/bin/sh\ncase \"$1\" in --version) echo 'outpost 9.9.9';; *) echo crashed >&2; exit 1;; esac\n",
        )?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&crashing, std::fs::Permissions::from_mode(0o755))?;
        }
        let bundle = release_bundle(&c, root, &key, &crashing, 3)?;
        c.cli(leader, &["bundle", "import", s(&bundle)])?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let dead = loop {
            if let Some(i) = (0..3).find(|&i| !c.nodes[i].is_running()) {
                break i;
            }
            if Instant::now() > deadline {
                bail!("no node switched to the crashing release");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        c.serve(dead).await?;
        let v = wait_roll_end(&c, Duration::from_secs(120)).await?;
        assert_eq!(v["roll"]["state"], "stopped", "{v}");
        let reason = v["roll"]["reason"].as_str().unwrap_or("");
        assert!(reason.contains("stopped before it was ready"), "{reason}");
        c.wait_ready(dead, T).await?;
        let deadline = Instant::now() + T;
        loop {
            let st = c.status(dead).await?;
            if st.builds.iter().all(|b| b.binary_sha256 == new_sha) {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {dead} did not go back to the release: {:?}", st.builds);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c.cli(dead, &["config", "set", "after.crash", "yes"])?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
