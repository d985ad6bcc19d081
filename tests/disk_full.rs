//! A full disk harms nothing and heals by itself, on a real
//! three-node loopback cluster whose third node keeps its data directory on a 96 MiB tmpfs
//! this test mounts (and unmounts at the end, also on failure). Needs root: without it the
//! test says why and passes, except under CI, where it fails.
//!
//! Phase 1, below the floor (min(2 %, 1 GiB) of the file system): `config set` through node 3
//! is refused with 507 naming the node and its path; `config get`, `client list`, an agent's
//! sync, `doctor` (which names `OutpostDiskFloor`) and `/metrics` (`outpost_disk_below_floor`
//! is 1) work; once the filler is gone, writes are accepted again. Phase 2, a full disk: writes go on through node 1 until node 3's Raft
//! core stops on the storage error (not ready, the reason names the full disk); once the
//! filler is gone node 3 starts its node again in the same process (same pid), catches up,
//! every node's `audit verify` passes and the fault checker finds the three nodes holding the
//! same config entries, every acknowledged write and no refused one.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

#[path = "support/checker.rs"]
mod checker;
mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use checker::{NodeState, Write, WriteOutcome};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::metrics::diskguard::floor_for;
use outpost::shared::process::fs_room;
use outpost::wire::{ConfigEntry, DoctorReport};
use support::agents::Fleet;
use support::{exe, or_dump, s, serial};

/// The tmpfs the third node's data directory lives on; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path) -> Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let out = support::output(Command::new("mount").args([
            "-t",
            "tmpfs",
            "-o",
            "size=96m,mode=0700",
            "outpost-disk-full",
            s(path),
        ]));
        if !out.status.success() {
            bail!(
                "mount -t tmpfs {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a node process killed a moment ago may still hold a file open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `file` until the file system has at most `leave` bytes free, or (with `leave` 0)
/// until a write fails for want of room. Bounded by the file system's size.
fn fill(file: &Path, leave: u64) -> Result<()> {
    const CHUNK: u64 = 256 << 10;
    let dir = file.parent().context("filler has a directory")?;
    let (_, total) = fs_room(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    let chunk = vec![0x5au8; CHUNK as usize];
    for _ in 0..=(total / 4096) {
        let (free, _) = fs_room(dir)?;
        if leave > 0 && free <= leave {
            return Ok(());
        }
        let n = if leave > 0 {
            (free - leave).min(CHUNK)
        } else {
            CHUNK
        };
        if let Err(e) = f.write_all(&chunk[..n as usize]) {
            if leave == 0 && e.raw_os_error() == Some(libc::ENOSPC) {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    bail!("{} did not fill its file system", file.display())
}

/// `config set KEY VALUE` through node `i`, recorded for the checker; the error text when
/// it failed.
fn set(c: &LocalCluster, i: usize, key: &str, writes: &mut Vec<Write>) -> Option<String> {
    let value = format!("v-{key}");
    let r = c.cli(i, &["config", "set", key, &value]);
    let (outcome, err) = match r {
        Ok(_) => (WriteOutcome::Acked(1), None),
        Err(e) => {
            let text = format!("{e:#}");
            let refused = text.contains("below the floor");
            let o = if refused {
                WriteOutcome::Refused(text.clone())
            } else {
                WriteOutcome::Unknown(text.clone())
            };
            (o, Some(text))
        }
    };
    writes.push(Write {
        key: key.to_string(),
        value,
        node: i,
        invoke: 0,
        complete: 0,
        outcome,
    });
    err
}

/// Every global config entry node `i` holds.
fn entries(c: &LocalCluster, i: usize) -> Result<NodeState> {
    let out = c.cli(i, &["config", "list", "--json"])?;
    let list: Vec<ConfigEntry> =
        serde_json::from_str(&out).with_context(|| format!("config list --json: {out}"))?;
    Ok(list
        .into_iter()
        .map(|e| (e.key, (e.value, e.version)))
        .collect())
}

/// The value of `outpost_disk_below_floor` in node `i`'s `/metrics` (admin socket).
async fn below_floor_metric(c: &LocalCluster, i: usize) -> Result<String> {
    let raw = outpost::shared::client::local_client(&c.nodes[i].dir)
        .call_raw(hyper::Method::GET, "/metrics", None::<&()>)
        .await?;
    let text = String::from_utf8(raw.to_vec())?;
    text.lines()
        .find_map(|l| l.strip_prefix("outpost_disk_below_floor "))
        .map(str::to_string)
        .with_context(|| format!("no outpost_disk_below_floor in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_serving_and_heals_by_itself() {
    let _g = serial();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/disk_full.rs needs root (it mounts a tmpfs) and CI is set"
        );
        eprintln!("skipped: tests/disk_full.rs needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Declared before the cluster: dropped after it, once its processes are killed.
    let mnt = Tmpfs::mount(&dir.path().join("node3")).expect("a tmpfs for node 3");
    let mut c = LocalCluster::new(
        dir.path(),
        &exe(),
        LocalOptions {
            log_level: "info".into(),
            ..LocalOptions::default()
        },
    );
    let r = run(&mut c, dir.path(), &mnt.path).await;
    or_dump(&c, r);
}

async fn run(c: &mut LocalCluster, root: &Path, disk: &Path) -> Result<()> {
    c.init_first()?;
    c.serve(0).await?;
    c.wait_ready(0, Duration::from_secs(20)).await?;
    for _ in 1..3 {
        let i = c.join_node()?;
        c.serve(i).await?;
    }
    assert_eq!(c.nodes[2].dir, disk, "node 3 lives on the tmpfs");
    c.wait_voters(3, Duration::from_secs(30)).await?;
    let node3 = s(&c.nodes[2].dir).to_string();

    let mut writes = Vec::new();
    assert_eq!(set(c, 0, "disk.before", &mut writes), None);
    let token = c
        .cli(0, &["token", "create", "--kind", "client"])?
        .trim()
        .to_string();
    let fleet = Fleet::new(&exe());
    let agents = fleet.enroll(root, "a", 1, &token, &[c.nodes[2].api_addr.clone()])?;
    support::local::settle(c, &[0, 1, 2]).await?;

    // ---- Phase 1: below the floor ------------------------------------------------------
    let (_, total) = fs_room(disk)?;
    let floor = floor_for(total);
    let filler = disk.join("filler");
    fill(&filler, floor * 3 / 4)?;
    // The node reads its disk every 2 s: the first refusal comes within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        let key = format!("disk.p1.{}", writes.len());
        if let Some(e) = set(c, 2, &key, &mut writes) {
            break e;
        }
        if Instant::now() > deadline {
            bail!("node 3 still takes writes 20 s after its disk fell below the floor");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for want in ["below the floor", "node 3 (node3)", node3.as_str()] {
        assert!(
            refusal.contains(want),
            "{want:?} not in the refusal: {refusal}"
        );
    }
    // The same write over the API: HTTP 507.
    let answer = outpost::shared::client::local_client(&c.nodes[2].dir)
        .call::<serde_json::Value>(
            hyper::Method::PUT,
            "/v1/config",
            Some(&outpost::wire::ConfigSetRequest {
                key: "disk.api".into(),
                value: "v".into(),
                scope: outpost::wire::Scope::Global,
            }),
        )
        .await;
    let err = answer
        .err()
        .context("a write over the API below the floor")?;
    assert_eq!(support::status_of(&err), Some(507), "{err:#}");
    // Reads, lists and an agent's sync through node 3 go on.
    assert_eq!(
        c.cli(2, &["config", "get", "disk.before"])?.trim(),
        "v-disk.before"
    );
    let clients = c.cli(2, &["client", "list"])?;
    assert!(clients.contains(&agents[0].id), "{clients}");
    fleet.sync(&agents[0])?;
    // The alarm: doctor (from node 3's own report) names the floor.
    let out = c.run(&["doctor", "--data-dir", &node3, "--json"])?;
    let report: DoctorReport = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("doctor --json: {}", String::from_utf8_lossy(&out.stdout)))?;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.rule == "OutpostDiskFloor" && f.subject.contains("node 3")),
        "{report:?}"
    );
    assert_eq!(below_floor_metric(c, 2).await?, "1");
    // Room again: writes through node 3 are accepted within a few seconds.
    std::fs::remove_file(&filler)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let key = format!("disk.p1.{}", writes.len());
        match set(c, 2, &key, &mut writes) {
            None => break,
            Some(e) if Instant::now() > deadline => bail!("node 3 still refuses: {e}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert_eq!(below_floor_metric(c, 2).await?, "0");

    // ---- Phase 2: the disk fills up under the node ---------------------------------------
    let pid = c.nodes[2].pid().context("node 3 runs")?;
    fill(&filler, 0)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let fatal = loop {
        let key = format!("disk.p2.{}", writes.len());
        set(c, 0, &key, &mut writes);
        let st = c.status(2).await?;
        if let Some(fatal) = st.fatal.clone() {
            break fatal;
        }
        if Instant::now() > deadline {
            bail!("node 3's core did not stop on a full disk within 120 s: {st:?}");
        }
    };
    let low = fatal.to_lowercase();
    if !(low.contains("full") || low.contains("no space")) {
        let log = std::fs::read_to_string(&c.nodes[2].log)?;
        let why: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("panicked") || l.contains("ERROR"))
            .collect();
        bail!(
            "the stop does not name the full disk: {fatal}\n{}",
            why.join("\n")
        );
    }
    // Readiness is reused for a second: the stop shows within a few.
    c.wait_for(2, Duration::from_secs(10), "not ready", |s| {
        s.ready.as_ref().is_some_and(|r| !r.ready)
    })
    .await?;
    // Free the disk: node 3 starts its node again in the same process and catches up.
    std::fs::remove_file(&filler)?;
    c.wait_for(2, Duration::from_secs(60), "ready again", |s| {
        s.fatal.is_none() && s.ready.as_ref().is_some_and(|r| r.ready)
    })
    .await?;
    assert_eq!(c.nodes[2].pid(), Some(pid), "node 3 was not restarted");
    assert!(c.nodes[2].is_running());
    let log = std::fs::read_to_string(&c.nodes[2].log)?;
    assert!(
        log.contains("starting the node again in this process"),
        "node 3's log says it restarted in-process"
    );
    assert_eq!(set(c, 2, "disk.after", &mut writes), None);
    support::local::settle(c, &[0, 1, 2]).await?;
    for i in 0..3 {
        c.cli(i, &["audit", "verify"])
            .with_context(|| format!("audit verify on node {}", i + 1))?;
    }
    let states = (0..3)
        .map(|i| Ok((c.nodes[i].name.clone(), entries(c, i)?)))
        .collect::<Result<Vec<_>>>()?;
    let anomalies = checker::check_final(&[], &writes, "disk.", &states);
    assert!(anomalies.is_empty(), "{}", checker::summary(&anomalies, 5));
    let acked = writes
        .iter()
        .filter(|w| matches!(w.outcome, WriteOutcome::Acked(_)))
        .count();
    let refused = writes.len() - acked;
    assert!(refused >= 1, "at least the first refusal is recorded");
    eprintln!(
        "disk_full: {} writes ({acked} acknowledged), node 3 stopped on \"{fatal}\" and came back as pid {pid}",
        writes.len()
    );
    Ok(())
}
