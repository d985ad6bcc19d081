//! `outpost bench audit`: the cost of checking the audit chain as it grows. One temporary
//! node; for each N (ascending) its log is grown to at least N records by the write bench
//! (config writes through the API, many at once), then timed: `audit verify` (the first call,
//! which moves the node's verified mark, and the second, incremental), `audit verify --full`
//! and one GET of the console's Audit page (which checks from the same mark). The figures are
//! printed per N and as ratios to the smallest N; nothing is asserted.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::bench::{WriteBench, write};
use crate::harness::console::{sign_in, time_audit_page};
use crate::harness::localcluster::{LocalCluster, LocalOptions};
use crate::shared::client::{NO_BODY, local_client};
use crate::shared::datadir::DataDir;
use crate::wire::AuditVerifyView;

#[derive(Debug, Serialize)]
pub struct AuditRow {
    /// Records in the log when measured (at least the N asked for).
    pub records: u64,
    pub write_s: f64,
    /// `audit verify` right after the writes (from the previous mark: reads what is new).
    pub verify_first_ms: f64,
    /// `audit verify` again (incremental: nothing new but the head).
    pub verify_ms: f64,
    pub verify_rows_read: u64,
    pub verify_full_ms: f64,
    pub full_rows_read: u64,
    pub page_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct AuditBenchReport {
    pub rows: Vec<AuditRow>,
}

impl std::fmt::Display for AuditBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "audit checks on one node (ms; rows read by the check in brackets):"
        )?;
        writeln!(
            f,
            "  {:>10}  {:>12}  {:>18}  {:>22}  {:>12}",
            "records", "verify 1st", "verify (incr.)", "verify --full", "Audit page"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "  {:>10}  {:>12.1}  {:>9.1} [{:>6}]  {:>11.1} [{:>8}]  {:>12.1}",
                r.records,
                r.verify_first_ms,
                r.verify_ms,
                r.verify_rows_read,
                r.verify_full_ms,
                r.full_rows_read,
                r.page_ms
            )?;
        }
        if let Some(first) = self.rows.first() {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            for r in self.rows.iter().skip(1) {
                writeln!(
                    f,
                    "  {} vs {} records ({:.0}x): verify {:.2}x, verify --full {:.2}x, Audit page {:.2}x",
                    r.records,
                    first.records,
                    ratio(r.records as f64, first.records as f64),
                    ratio(r.verify_ms, first.verify_ms),
                    ratio(r.verify_full_ms, first.verify_full_ms),
                    ratio(r.page_ms, first.page_ms)
                )?;
            }
        }
        Ok(())
    }
}

/// The most write rounds spent growing the log to one N.
const MAX_ROUNDS: usize = 200;

pub async fn bench(mut counts: Vec<u64>) -> Result<AuditBenchReport> {
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() || counts[0] == 0 {
        bail!("--records needs positive counts, e.g. 1000,1000000");
    }
    let root = tempfile::Builder::new()
        .prefix("outpost-bench-audit-")
        .tempdir()?;
    let exe = std::env::current_exe()?;
    let opts = LocalOptions {
        log_level: "warn".into(),
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(root.path(), &exe, 1, opts).await?;
    let r = measure_all(&c, &counts).await;
    c.kill9(0);
    r
}

async fn measure_all(c: &LocalCluster, counts: &[u64]) -> Result<AuditBenchReport> {
    let dd = DataDir::new(&c.nodes[0].dir);
    let mut api = local_client(&c.nodes[0].dir);
    // A full check of a long log in a debug build takes a while.
    api.set_timeout(Duration::from_secs(600));
    let cookie = sign_in(c, 0, "bench").await?;
    let mut rows = Vec::new();
    for &n in counts {
        let started = Instant::now();
        let mut records = head(&api).await?;
        let mut rounds = 0;
        while records < n {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                bail!("the log holds {records} records after {MAX_ROUNDS} write rounds; {n} asked");
            }
            // Rounds of about 1/10 of what is missing at the last rate, 1 s to 60 s.
            let rate = (records as f64 / started.elapsed().as_secs_f64().max(1.0)).max(500.0);
            let seconds = (((n - records) as f64 / rate) / 2.0).clamp(1.0, 60.0) as u64;
            let w = write(
                &dd,
                WriteBench {
                    // Under the API's cap of connections per identity (32).
                    clients: 24,
                    seconds,
                    value_bytes: 64,
                },
            )
            .await
            .context("writing records")?;
            if w.writes == 0 {
                bail!("no write succeeded ({} errors)", w.errors);
            }
            records = head(&api).await?;
        }
        let write_s = started.elapsed().as_secs_f64();
        let (verify_first_ms, _) = verify(&api, false).await?;
        let (verify_ms, incremental) = verify(&api, false).await?;
        let (verify_full_ms, full) = verify(&api, true).await?;
        let page_ms = time_audit_page(c, 0, &cookie).await?.as_secs_f64() * 1000.0;
        rows.push(AuditRow {
            records,
            write_s,
            verify_first_ms,
            verify_ms,
            verify_rows_read: incremental.local.walked,
            verify_full_ms,
            full_rows_read: full.local.walked,
            page_ms,
        });
    }
    Ok(AuditBenchReport { rows })
}

/// The newest record's seq.
async fn head(api: &crate::shared::client::ApiClient) -> Result<u64> {
    let recs: Vec<crate::wire::AuditRecord> =
        api.call(Method::GET, "/v1/audit?limit=1", NO_BODY).await?;
    Ok(recs.last().map(|r| r.seq).unwrap_or(0))
}

async fn verify(
    api: &crate::shared::client::ApiClient,
    full: bool,
) -> Result<(f64, AuditVerifyView)> {
    let path = if full {
        "/v1/audit/verify?full=true"
    } else {
        "/v1/audit/verify"
    };
    let t = Instant::now();
    let v: AuditVerifyView = api.call(Method::GET, path, NO_BODY).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !v.ok {
        bail!("the chain did not verify: {v:?}");
    }
    Ok((ms, v))
}
