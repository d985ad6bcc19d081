//! `outpost bench console`: the time a follower takes to render console pages (the clients
//! list, the overview, the audit log) with many enrolled clients, on a temporary three-node
//! cluster, through the harness's HTTPS client of the console (`harness::console`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::bench::{SyncBench, sync};
use crate::harness::console::{request, sign_in};
use crate::harness::localcluster::{LocalCluster, LocalOptions};
use crate::shared::datadir::DataDir;

#[derive(Debug, Serialize)]
pub struct ConsoleReport {
    pub clients: usize,
    pub enroll_s: f64,
    /// (page, median ms, max ms, bytes) over `runs` requests each.
    pub pages: Vec<(String, f64, f64, usize)>,
    pub runs: usize,
}

impl std::fmt::Display for ConsoleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "console with {} enrolled clients (enrolled in {:.1} s); {} requests per page, each on a new TLS connection, on a follower:",
            self.clients, self.enroll_s, self.runs
        )?;
        for (page, p50, max, bytes) in &self.pages {
            writeln!(
                f,
                "  {page:<32} median {p50:7.1} ms  max {max:7.1} ms  {bytes} bytes"
            )?;
        }
        Ok(())
    }
}

/// `outpost bench console`: a temporary three-node cluster with `clients` enrolled clients
/// (real enrollments), then the time a follower takes to answer console pages: the clients
/// list (first and last page, a search), the overview and the audit log.
pub async fn bench(clients: usize, runs: usize) -> Result<ConsoleReport> {
    let root = tempfile::Builder::new()
        .prefix("outpost-bench-console-")
        .tempdir()?;
    let exe = std::env::current_exe()?;
    // Every simulated agent enrolls from this host: widen the per-source enroll rate.
    let opts = LocalOptions {
        log_level: "warn".into(),
        env: vec![("OUTPOST_ENROLL_RATE".into(), "2000".into())],
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(root.path(), &exe, 3, opts).await?;
    let enrolled = sync(
        &DataDir::new(&c.nodes[0].dir),
        SyncBench {
            clients,
            seconds: 1,
            interval: Duration::from_secs(60),
        },
    )
    .await
    .context("enrolling the clients")?;
    let leader = c.leader(Duration::from_secs(10)).await?;
    let f = (0..3).find(|&i| i != leader).context("a follower")?;
    // Every enrollment applied on the follower before it is measured.
    c.cli(f, &["config", "get", "bench.none", "--linearizable"])
        .ok();
    let cookie = sign_in(&c, f, "bench").await?;
    let ca = std::fs::read_to_string(c.nodes[f].dir.join("ca.crt"))?;
    let last = clients.div_ceil(crate::wire::CONSOLE_PAGE as usize).max(1);
    let pages = [
        "/clients".to_string(),
        format!("/clients?page={last}"),
        format!("/clients?q=bench-{}", clients.saturating_sub(1)),
        "/clients?group=bench&page=2".to_string(),
        "/".to_string(),
        "/audit".to_string(),
    ];
    let mut out = Vec::new();
    for page in pages {
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        for _ in 0..runs.max(1) {
            let a = request(
                &c.nodes[f].api_addr,
                &ca,
                Method::GET,
                &page,
                &[("cookie", &cookie)],
                None,
            )
            .await?;
            if a.status != 200 {
                bail!("{page} answered {}: {}", a.status, a.body);
            }
            bytes = a.body.len();
            times.push(a.took.as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        out.push((page, times[times.len() / 2], times[times.len() - 1], bytes));
    }
    for i in 0..3 {
        c.kill9(i);
    }
    Ok(ConsoleReport {
        clients,
        enroll_s: enrolled.enroll_s,
        pages: out,
        runs,
    })
}
