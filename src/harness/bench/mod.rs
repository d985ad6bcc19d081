//! `outpost bench`: figures printed, never asserted. This file holds the write, failover,
//! sync and bundle benchmarks; the others have a file each:
//!
//! - `flood`: `bench flood`, writes while agents, attackers or a backlog load the cluster;
//! - `attacks` (with `attackers`, the attacking connections): `bench flood --attack KIND`;
//! - `audit`: `bench audit`, `audit verify` (incremental and full) and the Audit page as
//!   the log grows;
//! - `backup`: `bench backup`, backup and restore times;
//! - `console`: `bench console`, the time to render console pages;
//! - `rollout`: `bench rollout`, plan and status times and a phased rollout to simulated
//!   agents;
//! - `agents`: simulated agents enrolled for real (own key, CSR, client certificate);
//! - `members`: what a bench samples of every member (memory, TLS handshakes);
//! - `metrics_overhead`: `bench metrics-overhead`, writes/s with metrics collected and with
//!   `OUTPOST_METRICS=off`, alternating, and their ratio;
//! - `admin`: the admin certificate a bench calls the cluster with;
//! - `years`: `bench years`, a site of N clients through Y simulated years (compressed
//!   time), one row of sizes and operation times a year.

pub mod admin;
pub mod agents;
mod attackers;
pub mod attacks;
pub mod audit;
pub mod backup;
pub mod console;
pub mod flood;
pub mod members;
pub mod metrics_overhead;
pub mod rollout;
pub mod years;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::localcluster::{LocalCluster, LocalOptions};
use crate::shared::client::local_client;
use crate::shared::client::{ApiClient, Endpoint};
use crate::shared::datadir::DataDir;
use crate::wire::{ConfigSetRequest, ConfigSetResponse, Scope, StatusView};
use admin::admin_tls;
pub use members::NodeRss;
use members::{RssSampler, handshakes_during};

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

/// Joins the load tasks: every latency (sorted) and the error count.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<(Vec<Duration>, u64)>>,
) -> Result<(Vec<Duration>, u64)> {
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    all.sort();
    Ok((all, errors))
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
    let tls = admin_tls(dd, &ca_pem)?;
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
    let (all, errors) = gather(tasks).await?;
    let secs = start.elapsed().as_secs_f64();
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
        ..LocalOptions::default()
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
        cluster.serve(leader).await?;
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

pub struct SyncBench {
    pub clients: usize,
    pub seconds: u64,
    /// Each simulated agent syncs once per interval (0: as fast as it can).
    pub interval: Duration,
}

/// The requests of one sync of a real agent whose inventory, deployments and certificate
/// need nothing (`agent::sync_with`): one read of its configuration, the bundle trust it
/// re-pins and its deployment assignments.
const SYNC_REQUESTS: [&str; 1] = ["/v1/agent/sync"];

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub syncs_per_s: f64,
    pub syncs: u64,
    pub errors: u64,
    pub clients: usize,
    pub nodes: usize,
    pub seconds: f64,
    pub interval_s: f64,
    pub enroll_s: f64,
    /// Requests per sync, all on the sync's own connection.
    pub requests_per_sync: usize,
    /// Whether each agent connected from a loopback address of its own (the cluster is on
    /// loopback), else all from this host's one address.
    pub source_per_agent: bool,
    /// Latency of a whole sync: connect, TLS handshake, every request.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Each member's largest resident memory seen during the syncs (its `/v1/status`, every
    /// few seconds and at the end).
    pub node_rss: Vec<NodeRss>,
    /// This load generator's own resident memory at the end.
    pub bench_rss_bytes: Option<u64>,
    /// TLS handshakes the members completed while the agents synced, summed (None: a member
    /// did not say). After its first sync an agent resumes with the ticket the node gave it.
    pub tls_handshakes: Option<crate::wire::TlsHandshakes>,
    /// Each agent's first sync alone (counted in the figures above too): a full handshake,
    /// all agents within the first interval, as when a whole fleet starts at once. A fleet
    /// that has run for a while makes nearly only the later, resumed ones.
    pub first_syncs: Phase,
    /// Every other sync: an agent back after one interval, resuming its TLS session.
    pub later_syncs: Phase,
}

/// Counts and latency of a subset of the syncs.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub syncs: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Phase {
    fn of(results: Vec<Result<Duration, ()>>) -> Phase {
        let errors = results.iter().filter(|r| r.is_err()).count() as u64;
        let mut ok: Vec<Duration> = results.into_iter().flatten().collect();
        ok.sort();
        Phase {
            syncs: ok.len() as u64,
            errors,
            p50_ms: percentile(&ok, 0.50),
            p99_ms: percentile(&ok, 0.99),
        }
    }
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: Option<u64>| match b {
            Some(b) => format!("{:.0} MiB", b as f64 / 1048576.0),
            None => "unknown".into(),
        };
        write!(
            f,
            "{:.0} syncs/s ({} syncs, {} errors in {:.1} s; {} agents over {} nodes, interval {:.0} s; enrolled in {:.1} s)\n\
             each sync: a new TLS connection with the agent's certificate (resuming the TLS session of its last sync, as `outpost agent run` does), {} requests, closed; nothing held open between syncs; {}\n\
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.syncs_per_s,
            self.syncs,
            self.errors,
            self.seconds,
            self.clients,
            self.nodes,
            self.interval_s,
            self.enroll_s,
            self.requests_per_sync,
            if self.source_per_agent {
                "each agent from its own loopback address"
            } else {
                "all agents from this host's address"
            },
            self.p50_ms,
            self.p99_ms,
            self.max_ms
        )?;
        let nodes: Vec<String> = self
            .node_rss
            .iter()
            .map(|n| format!("{} {}", n.name, mib(n.max_bytes)))
            .collect();
        write!(
            f,
            "\nnode RSS (max during the run): {}; bench process {}",
            nodes.join(", "),
            mib(self.bench_rss_bytes)
        )?;
        for (what, p) in [
            ("first sync of each agent", &self.first_syncs),
            ("later syncs", &self.later_syncs),
        ] {
            write!(
                f,
                "\n{what}: {} ok, {} errors, p50 {:.2} ms, p99 {:.2} ms",
                p.syncs, p.errors, p.p50_ms, p.p99_ms
            )?;
        }
        if let Some(h) = self.tls_handshakes {
            write!(
                f,
                "\nTLS handshakes on the members during the syncs: {} full, {} resumed",
                h.full, h.resumed
            )?;
        }
        Ok(())
    }
}

/// Simulated agents. Each enrolls for real (own key, CSR, client certificate) and then syncs
/// once per interval as `outpost agent run` does: a new TCP connection and a TLS handshake
/// with its client certificate (full the first time, then resuming with the session ticket
/// the node gave at the last sync, as a real agent keeps its TLS configuration and session
/// cache from one sync to the next), the requests of a sync in which nothing changed
/// (`SYNC_REQUESTS`) on that connection, then the connection is closed. Between syncs an
/// agent holds no connection, only its identity and its session ticket. Agents are spread over every
/// member; against a loopback cluster each connects from a loopback address of its own
/// (`agents::agent_source`), as real agents come from their own machines. While they sync, every
/// member's resident memory is sampled.
pub async fn sync(dd: &DataDir, opts: SyncBench) -> Result<SyncReport> {
    if opts.clients == 0 || opts.seconds == 0 {
        bail!("--clients and --seconds must be positive");
    }
    let fleet = agents::enroll(dd, opts.clients, "bench").await?;
    let (status, ca_pem, enroll_s) = (fleet.status, fleet.ca_pem, fleet.enroll_s);
    let (addrs, own_sources) = (fleet.addrs, fleet.own_sources);
    let agents: Vec<(Endpoint, Option<std::net::IpAddr>)> = fleet
        .agents
        .into_iter()
        .map(|a| (a.endpoint, a.source))
        .collect();

    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.seconds);
    let sampler = RssSampler::start(dd, &ca_pem, &status)?;
    let interval = opts.interval;
    // The first few failures are logged, whichever agents they hit; all are counted.
    let logged = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for (i, (endpoint, source)) in agents.into_iter().enumerate() {
        let logged = logged.clone();
        tasks.push(tokio::spawn(async move {
            // Spread the first syncs over one interval, as real agents' jitter does.
            if !interval.is_zero() {
                let offset = interval.mul_f64((i as f64 * 0.618_033_988_75) % 1.0);
                tokio::time::sleep(offset).await;
            }
            // Each result of this agent's syncs, its first apart.
            let mut first = None;
            let mut later = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let synced = sync_like_an_agent(&endpoint, source).await;
                let result = synced.as_ref().map(|()| t.elapsed()).map_err(|_| ());
                match first {
                    None => first = Some(result),
                    Some(_) => later.push(result),
                }
                match synced {
                    Ok(()) => {}
                    Err(e) => {
                        if logged.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
                            tracing::warn!(
                                agent = i,
                                error = format!("{e:#}"),
                                "simulated sync failed"
                            );
                        }
                    }
                }
                if !interval.is_zero() {
                    let next = t + interval;
                    if next >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(next.into()).await;
                }
            }
            (first, later)
        }));
    }
    let (mut firsts, mut laters) = (Vec::with_capacity(tasks.len()), Vec::new());
    for t in tasks {
        let (first, later) = t.await?;
        firsts.extend(first);
        laters.extend(later);
    }
    let mut all: Vec<Duration> = firsts.iter().chain(&laters).flatten().copied().collect();
    all.sort();
    let errors = firsts.iter().chain(&laters).filter(|r| r.is_err()).count() as u64;
    let secs = start.elapsed().as_secs_f64();
    let node_rss = sampler.finish().await;
    let (first_syncs, later_syncs) = (Phase::of(firsts), Phase::of(laters));
    Ok(SyncReport {
        syncs_per_s: all.len() as f64 / secs,
        syncs: all.len() as u64,
        errors,
        clients: opts.clients,
        nodes: addrs.len(),
        seconds: secs,
        interval_s: interval.as_secs_f64(),
        enroll_s,
        requests_per_sync: SYNC_REQUESTS.len(),
        source_per_agent: own_sources,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        max_ms: all.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
        tls_handshakes: handshakes_during(&node_rss),
        first_syncs,
        later_syncs,
        node_rss,
        bench_rss_bytes: crate::shared::process::resident_bytes(),
    })
}

/// One sync as `agent::sync_any` makes it when nothing changed: a client of its own (a new
/// connection, the agent's 5 s timeout), `SYNC_REQUESTS` in order, dropped at the end (the
/// connection closes).
async fn sync_like_an_agent(endpoint: &Endpoint, source: Option<std::net::IpAddr>) -> Result<()> {
    let mut client = ApiClient::new(endpoint.clone());
    client.set_timeout(Duration::from_secs(5));
    if let Some(source) = source {
        client.set_source(source);
    }
    for path in SYNC_REQUESTS {
        client.call_raw(Method::GET, path, None::<&()>).await?;
    }
    Ok(())
}

/// Figures of `outpost bench bundle`.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub payload_bytes: u64,
    pub bundle_bytes: u64,
    pub sha256sum_s: f64,
    pub import_s: f64,
    /// import time / sha256sum time of the same file (aim: under 1.3).
    pub ratio: f64,
    /// From the start of the import until every node holds every blob.
    pub all_nodes_s: f64,
}

impl std::fmt::Display for BundleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = self.bundle_bytes as f64 / 1048576.0;
        write!(
            f,
            "bundle of {mib:.0} MiB: sha256sum {:.2} s ({:.0} MiB/s); outpost bundle import {:.2} s ({:.0} MiB/s) = {:.2}x sha256sum; every blob on all 3 nodes after {:.2} s",
            self.sha256sum_s,
            mib / self.sha256sum_s.max(1e-9),
            self.import_s,
            mib / self.import_s.max(1e-9),
            self.ratio,
            self.all_nodes_s
        )
    }
}

/// Builds a bundle with one payload of `size_mib` MiB under `work` (a disk directory, not
/// tmpfs, so fsync costs what it costs), times `sha256sum` of it (after one warm-up read) and
/// `outpost bundle import` of it into a follower of a temporary three-node cluster, and the
/// time until every node holds the blob.
pub async fn bundle(size_mib: u64, work: &std::path::Path) -> Result<BundleReport> {
    use std::io::Write as _;
    use std::process::Command as Proc;
    std::fs::create_dir_all(work)?;
    let root = tempfile::Builder::new()
        .prefix("outpost-bench-bundle-")
        .tempdir_in(work)?;
    let exe = std::env::current_exe()?;
    let key = root.path().join("release");
    outpost_bundles::keygen(&key)?;
    let payload = root.path().join("payload.bin");
    {
        // Incompressible-looking bytes, quickly: a xorshift stream.
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&payload)?);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..size_mib {
            for chunk in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf)?;
        }
        f.flush()?;
    }
    let spec = root.path().join("spec.toml");
    std::fs::write(
        &spec,
        "channel = \"bench\"\nversion = 1\n[[payload]]\npath = \"payload.bin\"\nkind = \"artifact\"\nname = \"payload\"\n",
    )?;
    let file = root.path().join("bench.obundle");
    let signing = outpost_bundles::load_signing_key(&key)?;
    outpost_bundles::create_bundle(&spec, &[signing], &file, crate::shared::now_secs())?;
    std::fs::remove_file(&payload)?;
    let bundle_bytes = std::fs::metadata(&file)?.len();

    let time_sha = || -> Result<f64> {
        let t = Instant::now();
        let out = Proc::new("sha256sum").arg(&file).output()?;
        if !out.status.success() {
            anyhow::bail!("sha256sum failed");
        }
        Ok(t.elapsed().as_secs_f64())
    };
    time_sha()?; // warm the page cache for both
    let sha256sum_s = time_sha()?;

    let opts = LocalOptions {
        log_level: "warn".into(),
        init_args: vec!["--bundle-trust".into(), format!("{}.pub", key.display())],
        ..LocalOptions::default()
    };
    let mut cluster = LocalCluster::start(&root.path().join("cluster"), &exe, 3, opts).await?;
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let follower = (leader + 1) % 3;
    let t = Instant::now();
    let out = Proc::new(&exe)
        .args(["bundle", "import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&cluster.nodes[follower].dir)
        .stderr(std::process::Stdio::null())
        .output()?;
    let import_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        anyhow::bail!("import failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let client = local_client(&cluster.nodes[leader].dir);
    let all_nodes_s = loop {
        let v: crate::wire::BundleList =
            client.call(Method::GET, "/v1/bundles", None::<&()>).await?;
        let done = v.bundles.iter().all(|b| {
            b.payloads
                .iter()
                .all(|p| p.held_by.len() == cluster.nodes.len())
        });
        if done && !v.bundles.is_empty() {
            break t.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            anyhow::bail!("the blob did not reach every node within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for i in 0..cluster.nodes.len() {
        cluster.stop(i, Duration::from_secs(5))?;
    }
    Ok(BundleReport {
        payload_bytes: size_mib << 20,
        bundle_bytes,
        sha256sum_s,
        import_s,
        ratio: import_s / sha256sum_s.max(1e-9),
        all_nodes_s,
    })
}
