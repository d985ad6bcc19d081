//! `outpost audit export`, `audit verify --file` (offline), `audit checkpoint` and the
//! incremental `audit verify` through the real binary on three nodes: an export verifies
//! offline with no data dir and fails after a byte flip or a cut naming the record; a live
//! record's hash proves the file (a wrong one is a mismatch); a node whose old records were
//! moved out behind a checkpoint (inserted by SQL here) proves its chain from it and refuses
//! to export what is gone, naming the checkpoint; an old row edited on one node's disk passes
//! the incremental check (its mark is past it) and fails `--full`, named.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, local::audit_verify, or_dump, serial, text};

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};

const T: Duration = Duration::from_secs(30);

/// `outpost audit verify --file F [--checkpoint C]` with no data dir at all: (ok, stdout,
/// stderr).
fn verify_file(c: &LocalCluster, file: &Path, cp: Option<&str>) -> Result<(bool, String)> {
    let mut args = vec!["audit", "verify", "--file", file.to_str().context("utf-8")?];
    if let Some(cp) = cp {
        args.extend(["--checkpoint", cp]);
    }
    args.extend(["--data-dir", "/nonexistent/outpost"]);
    let out = c.run(&args)?;
    Ok((out.status.success(), text(&out)))
}

/// The records of node i's log (newest 500), as JSON values.
fn records(c: &LocalCluster, i: usize) -> Result<Vec<serde_json::Value>> {
    let json = c.cli(i, &["audit", "--json", "--limit", "500"])?;
    Ok(serde_json::from_str(&json)?)
}

fn record(recs: &[serde_json::Value], seq: u64) -> Result<&serde_json::Value> {
    recs.iter()
        .find(|r| r["seq"] == seq)
        .with_context(|| format!("record {seq} not listed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verifies_offline_and_checks_stay_incremental() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, LocalOptions::default())
        .await
        .expect("three-node cluster");
    let r = async {
        for i in 0..8 {
            c.cli(i % 3, &["config", "set", &format!("exported.{i}"), "v"])?;
        }
        c.cli(1, &["config", "get", "exported.7", "--linearizable"])?;
        c.cli(2, &["config", "get", "exported.7", "--linearizable"])?;

        // The whole live log, exported from node 1 and checked offline.
        let file = dir.path().join("audit.jsonl");
        let fs = file.to_str().context("utf-8")?;
        let out = c.cli(0, &["audit", "export", "-o", fs])?;
        assert!(out.contains("wrote"), "{out}");
        let lines: Vec<String> = std::fs::read_to_string(&file)?
            .lines()
            .map(str::to_string)
            .collect();
        let header: serde_json::Value = serde_json::from_str(&lines[0])?;
        assert_eq!(header["format"], "outpost-audit-export", "{header}");
        assert_eq!(header["first_seq"], 1, "{header}");
        let last = header["last_seq"].as_u64().context("last_seq")?;
        assert_eq!(lines.len() as u64, last + 1, "one line per record");
        assert!(last >= 10, "{header}");
        let (ok, out) = verify_file(&c, &file, None)?;
        assert!(ok, "{out}");
        assert!(out.contains("intact"), "{out}");
        // An existing file is never replaced.
        let again = c.cli(0, &["audit", "export", "-o", fs]);
        let err = again
            .err()
            .context("a second export over the file succeeded")?;
        assert!(err.to_string().contains("exists"), "{err}");

        // A live record's hash, read from another node, proves the file; a wrong one fails.
        let recs = records(&c, 2)?;
        let r5 = record(&recs, 5)?;
        let good = format!("5:{}", r5["hash"].as_str().context("hash")?);
        let (ok, out) = verify_file(&c, &file, Some(&good))?;
        assert!(ok && out.contains("matches"), "{out}");
        let wrong = format!("5:{}", record(&recs, 6)?["hash"].as_str().context("hash")?);
        let (ok, out) = verify_file(&c, &file, Some(&wrong))?;
        assert!(!ok, "a wrong checkpoint passed: {out}");
        assert!(out.contains("checkpoint mismatch: record 5"), "{out}");

        // One byte flipped inside record 4's actor (line 5), and a file cut inside record 7.
        let flipped = dir.path().join("flipped.jsonl");
        let mut bytes = std::fs::read(&file)?;
        let line5 = lines[..4].iter().map(|l| l.len() + 1).sum::<usize>();
        let at = line5 + lines[4].find("\"actor\":\"").context("actor")? + 9;
        bytes[at] ^= 0x01;
        std::fs::write(&flipped, &bytes)?;
        let (ok, out) = verify_file(&c, &flipped, None)?;
        assert!(!ok, "a flipped byte passed: {out}");
        assert!(out.contains("record 4 (line 5) does not verify"), "{out}");
        let cut = dir.path().join("cut.jsonl");
        let line8 = lines[..7].iter().map(|l| l.len() + 1).sum::<usize>();
        std::fs::write(&cut, &std::fs::read(&file)?[..line8 + 20])?;
        let (ok, out) = verify_file(&c, &cut, None)?;
        assert!(!ok, "a cut file passed: {out}");
        assert!(out.contains("record 7 (line 8) does not parse"), "{out}");

        // --until: only the prefix no later than record 6's time.
        let until = record(&recs, 6)?["at_ms"].as_i64().context("at_ms")?;
        let part = dir.path().join("until.jsonl");
        let ps = part.to_str().context("utf-8")?;
        c.cli(
            1,
            &["audit", "export", "--until", &until.to_string(), "-o", ps],
        )?;
        let text = std::fs::read_to_string(&part)?;
        let mut lines_until = text.lines();
        let h: serde_json::Value = serde_json::from_str(lines_until.next().context("header")?)?;
        assert!(h["last_seq"].as_u64() >= Some(6) && h["last_seq"].as_u64() < Some(last));
        for l in lines_until {
            let rec: serde_json::Value = serde_json::from_str(l)?;
            assert!(rec["at_ms"].as_i64() <= Some(until), "{rec}");
        }
        assert!(verify_file(&c, &part, None)?.0);

        // Node 2 (index 1): records 1..=3 moved out behind a checkpoint, as a compaction
        // leaves them (the rows are removed by SQL here; the command is storage's).
        assert!(c.stop(1, Duration::from_secs(10))?, "clean stop");
        let h3 = record(&recs, 3)?["hash"]
            .as_str()
            .context("hash")?
            .to_string();
        {
            let db = rusqlite::Connection::open(c.nodes[1].dir.join("state.db"))?;
            db.execute(
                "INSERT INTO audit_checkpoints VALUES (3, ?1, 1, 2, 3)",
                [&h3],
            )?;
            assert_eq!(db.execute("DELETE FROM audit WHERE seq <= 3", [])?, 3);
        }
        c.serve(1).await?;
        c.wait_ready(1, T).await?;
        let cp = c.cli(1, &["audit", "checkpoint"])?;
        assert!(cp.starts_with(&format!("3:{h3}")), "{cp}");
        assert!(c.cli(0, &["audit", "checkpoint"])?.starts_with("none"));
        let (ok, out, err) = audit_verify(&c, 1, true)?;
        assert!(
            ok,
            "the chain from the checkpoint did not verify: {out}{err}"
        );
        assert!(out.contains(&format!("checkpoint 3:{h3}")), "{out}{err}");
        let gone = dir.path().join("gone.jsonl");
        let err = c
            .cli(
                1,
                &[
                    "audit",
                    "export",
                    "--from",
                    "2",
                    "-o",
                    gone.to_str().context("utf-8")?,
                ],
            )
            .err()
            .context("exported records that were moved out")?;
        assert!(
            err.to_string().contains(&format!("checkpoint 3:{h3}")),
            "{err}"
        );
        assert!(!gone.exists());
        // The older export proves records 1..=3 against that checkpoint, offline.
        let (ok, out) = verify_file(&c, &file, Some(&format!("3:{h3}")))?;
        assert!(ok, "{out}");

        // Node 3 (index 2): checked (its mark moves to the head), stopped, record 2 altered
        // on disk, started. The incremental check starts after the mark and passes; --full
        // names the record, on that node and through the others.
        let (ok, out, err) = audit_verify(&c, 2, false)?;
        assert!(ok, "{out}{err}");
        assert!(c.nodes[2].dir.join("audit-verified.json").exists());
        let victim = c.status(2).await?.node_id;
        assert!(c.stop(2, Duration::from_secs(10))?, "clean stop");
        {
            let db = rusqlite::Connection::open(c.nodes[2].dir.join("state.db"))?;
            let n = db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2", [])?;
            assert_eq!(n, 1);
        }
        c.serve(2).await?;
        c.wait_ready(2, T).await?;
        let (ok, out, err) = audit_verify(&c, 2, false)?;
        assert!(ok, "the incremental check read before its mark: {out}{err}");
        assert!(out.contains("since this node's last check"), "{out}{err}");
        let (ok, out, err) = audit_verify(&c, 2, true)?;
        assert!(!ok, "--full missed an altered record: {out}{err}");
        assert!(err.contains("record 2 does not verify"), "{out}{err}");
        let (ok, out, err) = audit_verify(&c, 0, true)?;
        assert!(!ok, "--full through a peer missed it: {out}{err}");
        assert!(
            err.contains(&format!("node {victim}: record 2 does not verify")),
            "{out}{err}"
        );
        if out.is_empty() && err.is_empty() {
            bail!("verify printed nothing");
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
