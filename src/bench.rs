//! `outpost bench`: figures printed, never asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use outpost_certs::{CertAuthority, Role, TlsIdentity, Validity};
use outpost_storage::Scope;
use serde::Serialize;

use crate::api::{ConfigSetRequest, ConfigSetResponse, StatusView};
use crate::client::{ApiClient, Endpoint};
use crate::datadir::DataDir;
use crate::localcluster::{LocalCluster, LocalOptions};
use crate::runtime::local_client;

pub struct WriteBench {
    pub clients: usize,
    pub seconds: u64,
    pub value_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct WriteReport {
    pub writes_per_s: f64,
    pub writes: u64,
    pub errors: u64,
    pub seconds: f64,
    pub clients: usize,
    pub nodes: usize,
    pub value_bytes: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for WriteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} writes/s ({} writes, {} errors in {:.1} s; {} clients over {} nodes, {} B values)\nlatency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.writes_per_s,
            self.writes,
            self.errors,
            self.seconds,
            self.clients,
            self.nodes,
            self.value_bytes,
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Writes 1 KiB (by default) config values from `clients` concurrent HTTPS clients, each with
/// its own keep-alive connection and an admin certificate, spread over every member's API port.
pub async fn write(dd: &DataDir, opts: WriteBench) -> Result<WriteReport> {
    if opts.clients == 0 || opts.seconds == 0 {
        bail!("--clients and --seconds must be positive");
    }
    dd.check()?;
    let ca_pem = dd.read(&dd.ca_cert())?;
    let ca = CertAuthority::from_pem(&ca_pem, &dd.read(&dd.ca_key())?)?;
    let validity = Validity::days_from(outpost_raft::now_ms() / 1000, 1);
    let (cert, key) = ca.issue_with_new_key(&Role::Admin("bench".into()), &validity)?;
    let identity = TlsIdentity::from_pem(&cert, &key, &ca_pem)?;
    let tls = outpost_certs::client_config(&ca_pem, Some(&identity), &[b"http/1.1"])?;
    let status: StatusView = local_client(&dd.root)
        .call(Method::GET, "/v1/status", None::<&()>)
        .await
        .context("asking the local node for the members")?;
    let addrs: Vec<String> = status.members.iter().map(|m| m.api_addr.clone()).collect();
    if addrs.is_empty() {
        bail!("the local node knows no members");
    }
    let value = "x".repeat(opts.value_bytes);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.seconds);
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        let client = Arc::new(ApiClient::new(Endpoint::Tls {
            addr: addrs[c % addrs.len()].clone(),
            config: tls.clone(),
            server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
        }));
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let req = ConfigSetRequest {
                    key: format!("bench/{c}/{}", n % 64),
                    value: value.clone(),
                    scope: Scope::Global,
                };
                let t = Instant::now();
                match client
                    .call::<ConfigSetResponse>(Method::PUT, "/v1/config", Some(&req))
                    .await
                {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            tracing::warn!(
                                client = c,
                                error = format!("{e:#}"),
                                "bench write failed"
                            );
                        }
                    }
                }
                n += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    Ok(WriteReport {
        writes_per_s: all.len() as f64 / secs,
        writes: all.len() as u64,
        errors,
        seconds: secs,
        clients: opts.clients,
        nodes: addrs.len(),
        value_bytes: opts.value_bytes,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        max_ms: all.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
    })
}

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runs: Vec<String> = self.runs_ms.iter().map(|m| format!("{m:.0}")).collect();
        write!(
            f,
            "failover (kill -9 of the leader -> write accepted by a survivor): median {:.0} ms, max {:.0} ms, runs [{}] ms",
            self.median_ms,
            self.max_ms,
            runs.join(", ")
        )
    }
}

/// Kills the leader of a temporary three-node cluster `runs` times and times how long until
/// a survivor accepts a write; the killed node is restarted between runs.
pub async fn failover(runs: usize, node_args: Vec<String>) -> Result<FailoverReport> {
    let root = tempfile::Builder::new()
        .prefix("outpost-failover-")
        .tempdir()?;
    let exe = std::env::current_exe()?;
    let opts = LocalOptions {
        log_level: "warn".into(),
        node_args,
    };
    let mut cluster = LocalCluster::start(root.path(), &exe, 3, opts).await?;
    let mut results = Vec::new();
    for run in 0..runs {
        let leader = cluster.leader(Duration::from_secs(10)).await?;
        let survivor = (leader + 1) % cluster.nodes.len();
        let client = local_client(&cluster.nodes[survivor].dir);
        let req = ConfigSetRequest {
            key: "bench/failover".into(),
            value: run.to_string(),
            scope: Scope::Global,
        };
        // Warm the survivor's path to the leader so the measurement holds only the failover.
        let _: ConfigSetResponse = client.call(Method::PUT, "/v1/config", Some(&req)).await?;
        let t = Instant::now();
        cluster.kill9(leader);
        let _: ConfigSetResponse = client
            .call(Method::PUT, "/v1/config", Some(&req))
            .await
            .context("write after killing the leader")?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        println!("run {}: {ms:.0} ms", run + 1);
        results.push(ms);
        cluster.serve(leader)?;
        cluster.wait_voters(3, Duration::from_secs(30)).await?;
        let applied = cluster.status(survivor).await?.applied_index;
        cluster
            .wait_for(leader, Duration::from_secs(30), "caught up", |s| {
                s.applied_index >= applied
            })
            .await?;
    }
    let mut sorted = results.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.is_empty() {
        0.0
    } else {
        sorted[sorted.len() / 2]
    };
    Ok(FailoverReport {
        max_ms: sorted.last().copied().unwrap_or(0.0),
        median_ms: median,
        runs_ms: results,
    })
}
