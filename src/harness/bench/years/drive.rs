//! One simulated year of the site of `bench years`, driven against the cluster in real
//! time compressed by `Scale`: inventory changes, the month's rollout with every client's
//! result, the day's configuration change, and a sample of agent syncs. Every request is a
//! real one (agents with their own certificates, the operator over the admin socket);
//! failures are counted and printed, never hidden.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use super::schedule::{self, Scale};
use crate::harness::bench::agents::SimAgent;
use crate::shared::client::local_client;
use crate::wire::{
    ConfigSetRequest, CreatedDeployment, DeploymentRequest, ReportStatus, ResultReport, Scope,
    SelectorArgs,
};

/// Agent requests in flight at once, per kind of traffic (inventory, results).
const CONCURRENT: usize = 32;
/// How often a sampled agent syncs, in real time. Syncs change only last-seen, which since
/// issue 24 is replicated without an audit row (`Command::Quiet`): compressing them would
/// measure nothing the years change, so a sample syncs at a steady real rate.
pub const SYNC_EVERY: Duration = Duration::from_secs(5);
/// How often the inventory driver looks at what is due.
const TICK: Duration = Duration::from_millis(50);

/// What the drive needs of the site: the agents, node 1's data directory, the release key
/// the monthly bundles are signed with, and a work directory for them.
pub struct Site {
    pub agents: Arc<Vec<SimAgent>>,
    pub node_dir: PathBuf,
    pub exe: PathBuf,
    pub key: PathBuf,
    pub work: PathBuf,
    pub scale: Scale,
}

impl Site {
    /// The agents that sync during the drive: 1 % of the fleet, at least 5, at most 100.
    pub fn sampled(&self) -> usize {
        (self.agents.len() / 100)
            .clamp(5, 100)
            .min(self.agents.len())
    }
}

/// Requests of one kind during a year: accepted and failed.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Count {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Count {
    fn add<T>(&self, what: &str, r: &Result<T>) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                let n = self.failed.fetch_add(1, Ordering::Relaxed);
                if n < 3 {
                    tracing::warn!(error = format!("{e:#}"), "bench years: {what} failed");
                }
                n
            }
        };
    }
    fn tally(&self) -> Tally {
        Tally {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// What one simulated year sent.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Drive {
    /// Real seconds the year's traffic took (the scale's `year_secs`, or more when the
    /// cluster could not keep up).
    pub seconds: f64,
    pub inventory: Tally,
    pub results: Tally,
    pub config: Tally,
    pub rollouts: Tally,
    pub syncs: Tally,
}

/// Drives simulated year `year` (1-based): returns when all its events were sent and its
/// real duration has passed.
pub async fn year(site: &Site, year: u64) -> Result<Drive> {
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let syncs = Arc::new(Count::default());
    let sampler = tokio::spawn(sync_sample(
        site.agents.clone(),
        site.sampled(),
        stop.clone(),
        syncs.clone(),
    ));
    let (inventory, (rollouts, results), config) = tokio::join!(
        inventory(site, year, start),
        rollouts(site, year, start),
        config_changes(site, year, start),
    );
    let end = start + Duration::from_secs_f64(site.scale.year_secs);
    tokio::time::sleep_until(end.into()).await;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    Ok(Drive {
        seconds: start.elapsed().as_secs_f64(),
        inventory: inventory?,
        results,
        rollouts: rollouts?,
        config,
        syncs: syncs.tally(),
    })
}

/// Each client's facts change `INVENTORY_PER_CLIENT` times a year, spread evenly: the k-th
/// change of the year goes to client k mod N, so every client reports about twice a
/// simulated month.
async fn inventory(site: &Site, year: u64, start: Instant) -> Result<Tally> {
    let n = site.agents.len();
    let total = n as u64 * schedule::INVENTORY_PER_CLIENT;
    let count = Arc::new(Count::default());
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while sent < total {
        let due = schedule::due(&site.scale, total, start.elapsed().as_secs_f64());
        while sent < due {
            let permit = sem.clone().acquire_owned().await?;
            let client = (sent % n as u64) as usize;
            // The changes this client made before: all earlier years', and this year's.
            let changes = (year - 1) * schedule::INVENTORY_PER_CLIENT + sent / n as u64 + 1;
            let (agents, count) = (site.agents.clone(), count.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let facts = schedule::facts(client, changes);
                let r = agents[client]
                    .client()
                    .call_raw(Method::PUT, "/v1/agent/inventory", Some(&facts))
                    .await;
                count.add("an inventory report", &r);
            });
            sent += 1;
        }
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(TICK).await;
    }
    while tasks.join_next().await.is_some() {}
    Ok(count.tally())
}

/// One rollout a simulated month to every client: a new signed bundle of the artifact is
/// imported, the rollout created (`--group all --phases 100% --soak 0s`), and every client
/// reports its result, installed. Returns the rollouts (created or not) and the results.
async fn rollouts(site: &Site, year: u64, start: Instant) -> (Result<Tally>, Tally) {
    let results = Arc::new(Count::default());
    let created = Count::default();
    for m in 0..schedule::ROLLOUTS {
        let at = start + site.scale.spacing(schedule::ROLLOUTS) * m as u32;
        tokio::time::sleep_until(at.into()).await;
        let version = (year - 1) * schedule::ROLLOUTS + m + 1;
        let r = one_rollout(site, version, &results).await;
        if let Err(e) = &r {
            // A rollout that cannot be created stops the bench: the rest of the year
            // would measure a different site.
            return (
                Err(anyhow::anyhow!(
                    "rollout {version} (year {year}, month {}): {e:#}",
                    m + 1
                )),
                results.tally(),
            );
        }
        created.add("a rollout", &r);
    }
    (Ok(created.tally()), results.tally())
}

async fn one_rollout(site: &Site, version: u64, results: &Arc<Count>) -> Result<()> {
    let bundle = crate::harness::bench::rollout::make_bundle(&site.work, &site.key, version)?;
    cli(site, &["bundle", "import", &bundle.to_string_lossy()])
        .await
        .context("importing the month's bundle")?;
    std::fs::remove_file(&bundle).ok();
    let id = format!("bench-{version}");
    let req = DeploymentRequest {
        artifact: "tool".into(),
        version: None,
        group: String::new(),
        id: Some(id.clone()),
        selector: SelectorArgs {
            groups: vec!["all".into()],
            ..SelectorArgs::default()
        },
        phases: Some("100%".into()),
        soak: Some("0s".into()),
        max_failures: None,
        windows: Vec::new(),
        start_at: None,
    };
    let created: CreatedDeployment = local_client(&site.node_dir)
        .call(Method::POST, "/v1/deployments", Some(&req))
        .await
        .context("creating the month's rollout")?;
    if created.state != "running" {
        bail!("the month's rollout is {}, not running", created.state);
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..site.agents.len() {
        let permit = sem.clone().acquire_owned().await?;
        let (agents, results, id) = (site.agents.clone(), results.clone(), id.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let report = ResultReport {
                deployment_id: id,
                status: ReportStatus::Installed,
                detail: "bench years".into(),
            };
            let r = agents[i]
                .client()
                .call_raw(Method::POST, "/v1/agent/results", Some(&report))
                .await;
            results.add("a deployment result", &r);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One configuration change a simulated day (`config set bench.site.day N`, global),
/// through node 1's admin socket.
async fn config_changes(site: &Site, year: u64, start: Instant) -> Tally {
    let count = Count::default();
    let client = local_client(&site.node_dir);
    for d in 0..schedule::CONFIG_CHANGES {
        let at = start + site.scale.spacing(schedule::CONFIG_CHANGES) * d as u32;
        tokio::time::sleep_until(at.into()).await;
        let req = ConfigSetRequest {
            key: "bench.site.day".into(),
            value: ((year - 1) * schedule::CONFIG_CHANGES + d + 1).to_string(),
            scope: Scope::Global,
        };
        let r = client.call_raw(Method::PUT, "/v1/config", Some(&req)).await;
        count.add("a configuration change", &r);
    }
    count.tally()
}

/// The sampled agents sync every `SYNC_EVERY` until `stop`.
async fn sync_sample(
    agents: Arc<Vec<SimAgent>>,
    sampled: usize,
    stop: Arc<AtomicBool>,
    count: Arc<Count>,
) {
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..sampled {
            let (agents, count) = (agents.clone(), count.clone());
            tasks.spawn(async move {
                let r = agents[i]
                    .client()
                    .call_raw(Method::GET, "/v1/agent/sync", None::<&()>)
                    .await;
                count.add("an agent sync", &r);
            });
        }
        while tasks.join_next().await.is_some() {}
        let next = round + SYNC_EVERY;
        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `outpost ARGS --data-dir <node 1>` off the executor; stdout, or an error with stderr.
pub async fn cli(site: &Site, args: &[&str]) -> Result<String> {
    cli_at(&site.exe, &site.node_dir, args).await
}

/// `outpost ARGS --data-dir DIR` off the executor; stdout, or an error with stderr.
pub async fn cli_at(exe: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> Result<String> {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .env("RUST_LOG", "warn");
    let what = args.join(" ");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .with_context(|| format!("running outpost {what}"))?;
    if !out.status.success() {
        bail!(
            "outpost {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
