//! `outpost doctor` and the console's alarms against a real three-node loopback cluster
//! (issue 23): all well → exit 0; a follower killed (SIGKILL) → exit 2 naming it, and the
//! overview shows the same alarm; the follower restarted → exit 0 again.
//!
//! The host's own disk is a fact this test cannot choose: when the file system of the data
//! directories has less than `health::DISK_FREE_RATIO` free, doctor rightly warns about it
//! on every node, and "all well" then means that this disk warning is the only finding above
//! Ok (the test checks the disk itself and says so).

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use outpost::harness::console::{request, sign_in};
use outpost::harness::localcluster::LocalCluster;
use outpost::wire::{DoctorReport, Severity};
use support::{cluster, or_dump, s, serial};

/// Whether the file system holding `dir` has less than the doctor's threshold free.
fn host_disk_low(dir: &Path) -> Result<bool> {
    let path = std::ffi::CString::new(s(dir))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        bail!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    let free = st.f_bavail as f64 * st.f_frsize as f64;
    let total = st.f_blocks as f64 * st.f_frsize as f64;
    Ok(free / total < outpost::health::DISK_FREE_RATIO)
}

/// `outpost doctor` on node `i`: its exit code, its stdout, and (with `--json`) the report.
fn doctor(c: &LocalCluster, i: usize, json: bool) -> Result<(i32, String)> {
    let dir = s(&c.nodes[i].dir).to_string();
    let mut args = vec!["doctor", "--data-dir", &dir];
    if json {
        args.push("--json");
    }
    let out = c.run(&args)?;
    let code = out.status.code().context("doctor killed by a signal")?;
    Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The findings above Ok that "all well" tolerates: the host's disk, when it is low.
fn tolerated(rule: &str, disk_low: bool) -> bool {
    disk_low && (rule == "OutpostDiskLow" || rule == "OutpostDiskHeadroom")
}

/// Polls doctor on node `i` (every 250 ms, up to `within`) until every finding above Ok is
/// tolerated; returns the last report.
async fn wait_all_well(
    c: &LocalCluster,
    i: usize,
    disk_low: bool,
    within: Duration,
) -> Result<DoctorReport> {
    let deadline = Instant::now() + within;
    loop {
        let (code, out) = doctor(c, i, true)?;
        let report: DoctorReport =
            serde_json::from_str(&out).with_context(|| format!("doctor --json: {out}"))?;
        let bad: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Ok && !tolerated(&f.rule, disk_low))
            .collect();
        if bad.is_empty() {
            // The disk warning is a Warning: exit 1 then, else 0.
            assert_eq!(code, i32::from(disk_low), "{out}");
            return Ok(report);
        }
        if Instant::now() >= deadline {
            bail!("doctor still finds (exit {code}): {bad:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_killed_follower_and_clears_after_its_restart() {
    let _g = serial();
    let (_dir, mut c) = cluster(3, &[]).await.expect("three nodes");
    let r = async {
        let disk_low = host_disk_low(&c.nodes[0].dir)?;
        if disk_low {
            eprintln!(
                "note: the host's disk has under 10 % free: doctor warns of it on every node"
            );
        }
        let leader = c.leader(Duration::from_secs(30)).await?;
        let report = wait_all_well(&c, leader, disk_low, Duration::from_secs(60)).await?;
        let texts: Vec<&str> = report.findings.iter().map(|f| f.text.as_str()).collect();
        assert!(
            texts.contains(&"3 of 3 nodes answer and are ready."),
            "{texts:#?}"
        );
        assert!(
            texts.iter().any(|t| t.starts_with("No backup yet")),
            "a fresh cluster has no backup and is not yet warned: {texts:#?}"
        );

        // Kill a follower: doctor on the leader names it and exits 2.
        let follower = (0..3).find(|&i| i != leader).context("a follower")?;
        let id = c.status(follower).await?.node_id;
        let named = format!("node {id} ({})", c.nodes[follower].name);
        c.kill9(follower);
        let deadline = Instant::now() + Duration::from_secs(30);
        let out = loop {
            let (code, out) = doctor(&c, leader, false)?;
            if code == 2 && out.contains(&format!("{named} does not answer")) {
                break out;
            }
            if Instant::now() >= deadline {
                bail!("doctor did not name the killed {named} (exit {code}):\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(out.contains("PROBLEM"), "{out}");
        assert!(out.contains("→ "), "an action under the finding:\n{out}");

        // The console's overview shows the same alarm.
        let cookie = sign_in(&c, leader, "alice").await?;
        let ca = std::fs::read_to_string(c.nodes[leader].dir.join("ca.crt"))?;
        let page = request(
            &c.nodes[leader].api_addr,
            &ca,
            Method::GET,
            "/",
            &[("cookie", &cookie)],
            None,
        )
        .await?;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.body
                .contains(&format!("<li class=\"bad\">{named} does not answer")),
            "the overview's alarm:\n{}",
            page.body
        );

        // Restart it: once it answers, doctor is well again.
        c.serve(follower).await?;
        wait_all_well(&c, leader, disk_low, Duration::from_secs(60)).await?;
        anyhow::Ok(())
    }
    .await;
    or_dump(&c, r);
}
