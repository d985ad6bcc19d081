//! Scheduled backups through the real binary.
//!
//! - `backup schedule` refuses bad input by name (every under 10 s, keep 0, a missing
//!   directory, a short passphrase) and leaves node.toml as it was.
//! - `backup schedule --every 30s --keep 3 --dir DIR --passphrase-file F` on a running node:
//!   three minutes later exactly 3 of its files are in DIR though at least 5 were made, each
//!   passes `backup verify` with the passphrase and the expected CA, `status --json` shows the
//!   last good one; a damaged copy fails `backup verify`; the newest restores into a new node
//!   that serves and passes `audit verify`.
//! - `backup schedule --off`: the node says so in `status`, and no new file comes in two
//!   intervals.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, one_node, or_dump, s, serial};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};

const T: Duration = Duration::from_secs(30);
const EVERY_S: u64 = 30;

/// This node's finished backup files in `dir`, sorted.
fn own_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("outpost-backup-") && n.ends_with(".obk"))
        })
        .collect();
    v.sort();
    Ok(v)
}

fn err_text(r: Result<String>) -> String {
    match r {
        Ok(out) => format!("UNEXPECTED SUCCESS: {out}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_keeps_the_newest_verified_backups_and_stops_when_off() {
    let _g = serial();
    let (dir, c) = one_node().await;
    let root = dir.path().to_path_buf();
    let r = async {
        let backups = root.join("backups");
        std::fs::create_dir(&backups)?;
        let pass = root.join("pass");
        std::fs::write(&pass, "a long site passphrase\n")?;
        let short = root.join("short");
        std::fs::write(&short, "too short\n")?;
        let ca = c.nodes[0].dir.join("ca.crt");
        let node_toml = std::fs::read_to_string(c.nodes[0].dir.join("node.toml"))?;

        // Bad input: refused by name, node.toml unchanged.
        let d = s(&backups);
        let cases: [(Vec<&str>, &str); 5] = [
            (
                vec!["--every", "5s", "--keep", "3", "--dir", d],
                "shorter than the minimum 10s",
            ),
            (
                vec!["--every", "30s", "--keep", "0", "--dir", d],
                "keep 0 is not between 1 and 1000",
            ),
            (
                vec![
                    "--every",
                    "30s",
                    "--keep",
                    "3",
                    "--dir",
                    "/nonexistent/outpost-b",
                ],
                "backup dir /nonexistent/outpost-b does not exist",
            ),
            (
                vec![
                    "--every",
                    "30s",
                    "--keep",
                    "3",
                    "--dir",
                    d,
                    "--passphrase-file",
                    s(&short),
                ],
                "shorter than 12 characters",
            ),
            (vec!["--every", "30s", "--dir", d], "give --keep"),
        ];
        for (args, want) in cases {
            let mut all = vec!["backup", "schedule"];
            all.extend(args.iter().copied());
            let err = err_text(c.cli(0, &all));
            assert!(err.contains(want), "{args:?}: {err}");
        }
        assert_eq!(
            std::fs::read_to_string(c.nodes[0].dir.join("node.toml"))?,
            node_toml,
            "a refused schedule leaves node.toml as it was"
        );
        let shown = c.cli(0, &["backup", "schedule"])?;
        assert!(shown.contains("backup schedule: off"), "{shown}");

        // The schedule, set while the node runs.
        let started = Instant::now();
        let every = format!("{EVERY_S}s");
        let set = c.cli(
            0,
            &[
                "backup",
                "schedule",
                "--every",
                &every,
                "--keep",
                "3",
                "--dir",
                d,
                "--passphrase-file",
                s(&pass),
            ],
        )?;
        assert!(set.contains("every 30s, keep the newest 3"), "{set}");
        // Three minutes on, and at least five made (the first at once, then every 30 s).
        let st = c
            .wait_for(
                0,
                Duration::from_secs(300),
                "3 minutes and 5 backups",
                |st| {
                    started.elapsed() >= Duration::from_secs(180)
                        && st.backup.as_ref().is_some_and(|b| b.made >= 5)
                },
            )
            .await?;
        let b = st.backup.context("status has backup")?;
        println!(
            "after {:.0} s: {} made, {} failed",
            started.elapsed().as_secs_f64(),
            b.made,
            b.failures
        );
        assert_eq!(b.failures, 0, "{b:?}");
        let sched = b.schedule.as_ref().context("the schedule is shown")?;
        assert_eq!(
            (sched.every_secs, sched.keep, sched.sealed),
            (EVERY_S, 3, true)
        );
        let files = own_files(&backups)?;
        assert_eq!(files.len(), 3, "keep 3: {files:?}");
        let leftovers: Vec<_> = std::fs::read_dir(&backups)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // status --json (the CLI) names the last good one, the newest file.
        let json: serde_json::Value = serde_json::from_str(&c.cli(0, &["status", "--json"])?)?;
        let last = json["backup"]["last_good"]["path"]
            .as_str()
            .context("status --json has backup.last_good.path")?
            .to_string();
        let newest = files.last().context("a newest file")?;
        // The node may have made one more between the listing and the status.
        let now_files = own_files(&backups)?;
        assert!(
            now_files.iter().any(|f| f.to_string_lossy() == last),
            "{last} in {now_files:?}"
        );
        assert!(
            json["backup"]["last_good"]["bytes"].as_u64().unwrap_or(0) > 0,
            "{json}"
        );

        for f in &files {
            let out = c.run_ok(&[
                "backup",
                "verify",
                s(f),
                "--passphrase-file",
                s(&pass),
                "--expect-ca",
                s(&ca),
            ]);
            // Deleted by the schedule between the listing and now: only the oldest may be.
            if !f.exists() {
                continue;
            }
            let out = out?;
            assert!(out.contains(": OK"), "{out}");
            assert!(out.contains("made by the expected CA"), "{out}");
            assert!(out.contains("the passphrase opens it"), "{out}");
        }
        let json: serde_json::Value = serde_json::from_str(&c.run_ok(&[
            "backup",
            "verify",
            s(newest),
            "--passphrase-file",
            s(&pass),
            "--expect-ca",
            s(&ca),
            "--json",
        ])?)?;
        assert_eq!(json["signature_checked"], true, "{json}");
        assert_eq!(json["ca_key_unsealed"], true, "{json}");

        // A damaged copy is refused, naming what failed.
        let damaged = root.join("damaged.obk");
        let mut bytes = std::fs::read(newest)?;
        let last_byte = bytes.len() - 1;
        bytes[last_byte] ^= 1;
        std::fs::write(&damaged, &bytes)?;
        let err = err_text(c.run_ok(&["backup", "verify", s(&damaged)]));
        assert!(err.contains("the file is damaged"), "{err}");
        let wrong = root.join("wrong");
        std::fs::write(&wrong, "not the site passphrase\n")?;
        let err = err_text(c.run_ok(&[
            "backup",
            "verify",
            s(newest),
            "--passphrase-file",
            s(&wrong),
        ]));
        assert!(err.contains("wrong passphrase"), "{err}");

        // Off: the node says so within its re-read interval.
        let off = c.cli(0, &["backup", "schedule", "--off"])?;
        assert!(off.contains("backup schedule: off"), "{off}");
        let st = c
            .wait_for(0, T, "the schedule off", |st| {
                st.backup.as_ref().is_some_and(|b| b.schedule.is_none())
            })
            .await?;
        let made_at_off = st.backup.map(|b| b.made).unwrap_or(0);
        let files_at_off = own_files(&backups)?;
        let off_at = Instant::now();

        // Meanwhile: the newest restores into a new node that serves and verifies its audit.
        let copy = root.join("restore-me.obk");
        std::fs::copy(files_at_off.last().context("a file")?, &copy)?;
        let mut n = LocalCluster::new(&root.join("new"), &exe(), LocalOptions::default());
        let restored = async {
            let (r0, out) = n.restore_node(
                &copy,
                &["--passphrase-file", s(&pass), "--expect-ca", s(&ca)],
            )?;
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{said}");
            n.serve(r0).await?;
            n.wait_ready(r0, T).await?;
            let v: serde_json::Value =
                serde_json::from_str(&n.cli(r0, &["audit", "verify", "--json"])?)?;
            assert_eq!(v["ok"], true, "{v}");
            Ok::<(), anyhow::Error>(())
        }
        .await;
        or_dump(&n, restored);

        // Two intervals after off, nothing new.
        let quiet = Duration::from_secs(2 * EVERY_S);
        let deadline = off_at + quiet + T;
        loop {
            let st = c.status(0).await?;
            let made = st.backup.map(|b| b.made).unwrap_or(0);
            if made != made_at_off {
                bail!("a backup was made after --off: {made} > {made_at_off}");
            }
            if off_at.elapsed() >= quiet {
                break;
            }
            if Instant::now() > deadline {
                bail!("the quiet check overran");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            own_files(&backups)?,
            files_at_off,
            "no new file after --off"
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
