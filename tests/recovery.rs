//! Backup, restore and `recover --force-new-cluster` through the real binary.
//!
//! - A backup taken from a follower while a writer keeps writing restores into a new cluster
//!   that holds every write acknowledged before the backup was asked for, keeps the bundle
//!   channel floors and the CA (an admin certificate of the old cluster still works), and has
//!   no private key in plain text; a fresh node joins it and catches up. Restores that cannot
//!   keep the CA say why, and `--new-ca` makes a new one.
//! - Two of three nodes are lost for good; `recover` on the survivor (refused while it runs)
//!   makes it the only member with every acknowledged key; a former member that comes back is
//!   refused and cannot take writes; a fresh node joins and catches up.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, local::keygen, local::trusting, or_dump, s, serial, text, writer};

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};

const T: Duration = Duration::from_secs(30);

/// Every global config key node `i` holds (a local read).
fn keys(c: &LocalCluster, i: usize) -> Result<BTreeSet<String>> {
    let json = c.cli(i, &["config", "list", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    Ok(v.as_array()
        .context("config list is an array")?
        .iter()
        .filter_map(|e| e["key"].as_str().map(str::to_owned))
        .collect())
}

/// Waits until node `i` has every key of `want` (it is catching up).
async fn wait_keys(c: &LocalCluster, i: usize, want: &BTreeSet<String>) -> Result<()> {
    let deadline = Instant::now() + T;
    loop {
        let have = keys(c, i).unwrap_or_default();
        let missing: Vec<&String> = want.difference(&have).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} misses {} acknowledged keys, e.g. {:?}",
                c.nodes[i].name,
                missing.len(),
                missing.iter().take(5).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_from_a_follower_under_load_restores_into_a_new_cluster() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // Bundle trust, so that a channel floor exists to keep.
    let key = keygen(root, "signer");
    let opts = trusting(&key);
    let mut c = LocalCluster::start(&root.join("old"), &exe(), 3, opts)
        .await
        .expect("three-node cluster");
    let r = async {
        std::fs::write(root.join("site.toml"), "[global]\nsite.mode = \"strict\"\n")?;
        std::fs::write(
            root.join("spec.toml"),
            "channel = \"site\"\nversion = 4\n\n[[payload]]\npath = \"site.toml\"\nkind = \"config\"\n",
        )?;
        let bundle = root.join("b.obundle");
        let out = c.run(&[
            "bundle", "create", "--spec", s(&root.join("spec.toml")), "--key", s(&key), "-o",
            s(&bundle),
        ])?;
        assert!(out.status.success(), "{}", text(&out));
        c.cli(0, &["bundle", "import", s(&bundle)])?;
        let admin = root.join("admin");
        c.cli(
            0,
            &[
                "admin",
                "issue-cert",
                "--name",
                "ops",
                "--role",
                "admin",
                "-o",
                s(&admin),
            ],
        )?;

        let leader = c.leader(T).await?;
        let follower = (0..3).find(|&i| i != leader).context("a follower")?;
        let pass = root.join("pass");
        std::fs::write(&pass, "a long site passphrase\n")?;
        let file = root.join("site.backup");

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = writer(exe(), vec![c.nodes[leader].dir.clone()], "load", stop.clone(), 400);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let asked = Instant::now();
        let started = Instant::now();
        let out = c.cli(
            follower,
            &["backup", "-o", s(&file), "--passphrase-file", s(&pass)],
        )?;
        let backup_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acked = w.join().map_err(|_| anyhow::anyhow!("writer panicked"))?.acked;
        let before: BTreeSet<String> = acked
            .iter()
            .filter(|(_, at)| *at < asked)
            .map(|(k, _)| k.clone())
            .collect();
        assert!(out.contains("sealed with the passphrase"), "{out}");
        assert!(
            before.len() >= 5 && acked.len() > before.len(),
            "the backup ran under load: {} writes before it, {} in all",
            before.len(),
            acked.len()
        );
        println!(
            "backup of a follower under load: {backup_secs:.2} s; {} writes acknowledged before it, {} in all",
            before.len(),
            acked.len()
        );

        // No private key in plain text: neither PEM armour nor any line of the CA's or a
        // node's key.
        let bytes = std::fs::read(&file)?;
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains("PRIVATE KEY"), "PEM private key in the backup");
        for k in [
            c.nodes[0].dir.join("ca.key"),
            c.nodes[follower].dir.join("node.key"),
        ] {
            let pem = std::fs::read_to_string(&k)?;
            for line in pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 16) {
                assert!(!hay.contains(line), "a line of {} is in the backup", k.display());
            }
        }
        let old_ca = std::fs::read_to_string(c.nodes[0].dir.join("ca.crt"))?;

        // The old cluster is gone: the site restores into new machines.
        for i in 0..3 {
            c.kill9(i);
        }
        let mut n = LocalCluster::new(&root.join("new"), &exe(), LocalOptions::default());
        // The sealed CA key: no passphrase, then a wrong one, are refused and explained.
        let (_, out) = n.restore_node(&file, &[])?;
        assert!(!out.status.success());
        assert!(text(&out).contains("--passphrase-file"), "{}", text(&out));
        let wrong = root.join("wrong");
        std::fs::write(&wrong, "not the site passphrase\n")?;
        let (_, out) = n.restore_node(&file, &["--passphrase-file", s(&wrong)])?;
        assert!(!out.status.success());
        assert!(text(&out).contains("wrong passphrase"), "{}", text(&out));

        let started = Instant::now();
        let (r0, out) = n.restore_node(&file, &["--passphrase-file", s(&pass)])?;
        let restore_secs = started.elapsed().as_secs_f64();
        let said = text(&out);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("site: version 4"), "floors are printed: {said}");
        assert!(said.contains("the backup's own"), "{said}");
        n.serve(r0).await?;
        n.wait_ready(r0, T).await?;
        let serve_secs = started.elapsed().as_secs_f64();
        println!("restore: {restore_secs:.2} s; ready to serve after {serve_secs:.2} s");
        assert_eq!(
            std::fs::read_to_string(n.nodes[r0].dir.join("ca.crt"))?,
            old_ca,
            "the restored cluster keeps its CA"
        );
        wait_keys(&n, r0, &before).await?;
        assert_eq!(n.cli(r0, &["config", "get", "site.mode"])?.trim(), "strict");
        let list = n.cli(r0, &["bundle", "list", "--json"])?;
        assert!(list.contains("\"site\""), "{list}");
        n.cli(r0, &["config", "set", "after.restore", "yes"])?;

        // An admin certificate of the old cluster works against the restored node.
        let status = n.run(&[
            "status",
            "--json",
            "--server",
            &n.nodes[r0].api_addr,
            "--cert",
            s(&admin.join("admin.crt")),
            "--key",
            s(&admin.join("admin.key")),
            "--ca",
            s(&admin.join("ca.crt")),
        ])?;
        assert!(status.status.success(), "{}", text(&status));
        let st: serde_json::Value = serde_json::from_slice(&status.stdout)?;
        let members = st["members"].as_array().context("members")?;
        assert_eq!(members.len(), 1, "{st}");

        // A fresh node joins with a new token and catches up.
        let j = n.join_node()?;
        n.serve(j).await?;
        n.wait_voters(2, T).await?;
        let mut want = before.clone();
        want.insert("after.restore".into());
        wait_keys(&n, j, &want).await?;
        let audit = n.cli(r0, &["audit", "--limit", "500"])?;
        assert!(audit.contains("cluster.reform"), "{audit}");

        // A backup made without a passphrase holds no CA key: restore needs --new-ca, and
        // then says that clients must enroll again.
        let plain = root.join("plain.backup");
        n.cli(r0, &["backup", "-o", s(&plain)])?;
        let (_, out) = n.restore_node(&plain, &[])?;
        assert!(!out.status.success());
        assert!(text(&out).contains("--new-ca"), "{}", text(&out));
        let (k, out) = n.restore_node(&plain, &["--new-ca"])?;
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("enroll again"), "{}", text(&out));
        assert_ne!(
            std::fs::read_to_string(n.nodes[k].dir.join("ca.crt"))?,
            old_ca,
            "--new-ca makes a new CA"
        );
        n.serve(k).await?;
        n.wait_ready(k, T).await?;
        assert_eq!(n.cli(k, &["config", "get", "after.restore"])?.trim(), "yes");
        n.cli(k, &["config", "set", "after.new.ca", "yes"])?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_on_the_last_survivor_keeps_every_acknowledged_write() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, LocalOptions::default())
        .await
        .expect("three-node cluster");
    let r = async {
        let mut acked = BTreeSet::new();
        for n in 0..30 {
            let key = format!("kept.{n}");
            c.cli(n % 3, &["config", "set", &key, "v"])?;
            acked.insert(key);
        }
        // The leader and one follower are lost for good.
        let leader = c.leader(T).await?;
        let survivor = (0..3).find(|&i| i != leader).context("a follower")?;
        let lost: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
        let survivor_id = c.status(survivor).await?.node_id;
        for &i in &lost {
            c.kill9(i);
        }

        let refused = c.cli(survivor, &["recover", "--force-new-cluster"]);
        let err = format!(
            "{:#}",
            refused.err().context("recover ran beside the node")?
        );
        assert!(err.contains("is running"), "{err}");
        assert!(c.stop(survivor, T)?, "clean stop");
        let without = c.cli(survivor, &["recover"]);
        assert!(without.is_err(), "recover needs --force-new-cluster");

        let started = Instant::now();
        let out = c.cli(survivor, &["recover", "--force-new-cluster"])?;
        assert!(out.contains("only member"), "{out}");
        assert!(
            out.contains("wipe"),
            "it says what to do with the others: {out}"
        );
        c.serve(survivor).await?;
        let deadline = Instant::now() + T;
        loop {
            if c.cli(survivor, &["config", "set", "after.recover", "yes"])
                .is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("no write accepted within {T:?} of recover");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "recover: first write accepted {:.2} s after `outpost recover` started",
            started.elapsed().as_secs_f64()
        );
        acked.insert("after.recover".into());
        wait_keys(&c, survivor, &acked).await?;
        let st = c.status(survivor).await?;
        assert_eq!(st.members.len(), 1, "{st:?}");
        assert_eq!(st.leader_id, Some(survivor_id));

        // A former member comes back as it was: the survivor's peer port refuses it, it finds
        // no quorum, and the survivor keeps taking writes.
        let back = lost[0];
        c.serve(back).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        c.cli(survivor, &["config", "set", "while.old.node.runs", "yes"])?;
        let stale = c.cli(back, &["config", "set", "split.brain", "no"]);
        assert!(stale.is_err(), "a former member took a write");
        let st = c.status(survivor).await?;
        assert_eq!(st.members.len(), 1, "{st:?}");
        assert_eq!(st.leader_id, Some(survivor_id));
        assert!(
            c.cli(survivor, &["config", "get", "split.brain"]).is_err(),
            "the former member's write reached the survivor"
        );
        c.kill9(back);

        // A fresh node joins with a new token and catches up.
        let j = c.join_node()?;
        c.serve(j).await?;
        c.wait_voters(2, T).await?;
        acked.insert("while.old.node.runs".into());
        wait_keys(&c, j, &acked).await?;
        let audit = c.cli(survivor, &["audit", "--limit", "500"])?;
        assert!(audit.contains("cluster.reform"), "{audit}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// The newest complete snapshot in a node's data directory: its file and the index in its name.
fn newest_snapshot(data: &Path) -> Result<Option<(std::path::PathBuf, u64)>> {
    let mut best = None;
    for e in std::fs::read_dir(data.join("snapshots"))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(rest) = name.strip_prefix("snap-") else {
            continue;
        };
        let Some(rest) = rest.strip_suffix(".meta") else {
            continue;
        };
        let index: u64 = rest.split('-').next().unwrap_or("").parse()?;
        if best.as_ref().is_none_or(|(_, i)| index > *i) {
            best = Some((p.with_extension("snap"), index));
        }
    }
    Ok(best)
}

/// state.db commits without an fsync (`synchronous=NORMAL`); the Raft log, fsynced at every
/// append, is what makes an applied write durable. The most a power cut can take from
/// state.db is what it applied since its last sync, and it is synced before every snapshot,
/// which is the only point behind which the log is purged. This puts a killed node's state.db
/// back to its newest snapshot (older than anything a power cut could leave) while its log
/// stays as it was: restarted, the node applies the rest again from its own log and ends with
/// every key and an audit chain that verifies and agrees with its peers'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_rolled_back_to_its_last_sync_is_applied_again_from_the_log() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        init_args: vec!["--snapshot-after".into(), "40".into()],
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, opts)
        .await
        .expect("three-node cluster");
    let r = async {
        let data = c.nodes[0].dir.clone();
        let mut want = BTreeSet::new();
        // Enough writes for node 1 (index 0) to build snapshots and purge its log behind them,
        // then some beyond its newest snapshot.
        let mut n = 0;
        let deadline = Instant::now() + T;
        let snap_index = loop {
            let key = format!("synced.{n}");
            c.cli(n % 3, &["config", "set", &key, "v"])?;
            want.insert(key);
            n += 1;
            if let Some((_, index)) = newest_snapshot(&data)?
                && index >= 80
            {
                break index;
            }
            if Instant::now() > deadline || n > 400 {
                bail!("no snapshot at index 80 or above after {n} writes");
            }
        };
        for m in 0..30 {
            let key = format!("after.{m}");
            c.cli(m % 3, &["config", "set", &key, "v"])?;
            want.insert(key);
        }
        wait_keys(&c, 0, &want).await?;

        c.kill9(0);
        let (snap, index) = newest_snapshot(&data)?.context("the snapshot went away")?;
        assert!(index >= snap_index);
        // A snapshot file is a 64-byte header, then the SQLite database.
        let bytes = std::fs::read(&snap)?;
        let state = data.join("state.db");
        for suffix in ["-wal", "-shm"] {
            let mut p = state.clone().into_os_string();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        std::fs::write(&state, &bytes[64..])?;
        let held: i64 = rusqlite::Connection::open(&state)?.query_row(
            "SELECT COUNT(*) FROM config",
            [],
            |r| r.get(0),
        )?;
        assert!(
            (held as usize) < want.len(),
            "the rolled-back state already holds all {held} keys: nothing to apply again"
        );

        c.serve(0).await?;
        c.wait_ready(0, T).await?;
        wait_keys(&c, 0, &want).await?;
        let json = c.cli(0, &["audit", "verify", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        assert_eq!(v["ok"], true, "{v}");
        let peers = v["peers"].as_array().context("peers")?;
        assert!(peers.iter().all(|p| p["agrees"] == true), "{v}");
        Ok::<_, anyhow::Error>((held, want.len()))
    }
    .await;
    let (held, total) = or_dump(&c, r);
    println!("state rolled back to {held} of {total} keys; all applied again from the log");
}
