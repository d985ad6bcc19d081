//! `outpost bench rollout`: on a temporary three-node cluster of real `outpost serve`
//! processes (loopback, no mDNS) with `--clients` enrolled clients and an imported artifact
//! bundle, the time the API takes to answer `plan` (every client targeted) and `status` (a
//! running rollout over every client), each the median of a few calls over HTTPS with an
//! admin certificate, and the time from `create` to `done` of a three-phase rollout
//! (`--phases 10%,50%,100% --soak 0s`) to `--agents` simulated agents.
//!
//! A simulated agent is a tokio task with its own client certificate (enrolled for real,
//! `bench::agents`) speaking the real agent routes: `/v1/agent/sync`, the artifact download
//! of each assignment it has not installed, and `/v1/agent/results` with `installed`. The
//! agents sync in rounds (each agent that has not installed yet syncs once per round, at most
//! `CONCURRENT_SYNCS` at a time), as a fleet syncing on its interval would, with no wait
//! between rounds: the figure is the cluster's time to walk the phases, not an interval's.
//! The leader opens each phase on its own (`node::rollouts`, once a second) when the one
//! before has soaked (0 s) within the brake, and marks the rollout done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::bench::admin::admin_tls;
use crate::harness::bench::agents::{self, SimAgent};
use crate::harness::localcluster::{LocalCluster, LocalOptions};
use crate::shared::client::{ApiClient, Endpoint};
use crate::shared::datadir::DataDir;
use crate::wire::{
    AgentSync, AuditRecord, CreatedDeployment, DeploymentRequest, DeploymentStatusView,
    PlanRequest, PlanView, ReportStatus, ResultReport, SelectorArgs,
};

/// Calls of `plan` and of `status` whose median is printed.
const RUNS: usize = 7;
/// Simulated agents syncing at once.
const CONCURRENT_SYNCS: usize = 64;
/// The rollout must be done within this, or the bench fails.
const DONE_DEADLINE: Duration = Duration::from_secs(900);
/// Pages of the audit log read for the measured rollout's steps.
const AUDIT_PAGES: usize = 20;
/// The phases of the measured rollout.
const PHASES: &str = "10%,50%,100%";
/// The groups the clients are enrolled in: the simulated agents, and the others.
const AGENTS_GROUP: &str = "bench-agents";
const OTHERS_GROUP: &str = "bench-others";

/// What `bench rollout` measures.
pub struct RolloutBench {
    pub clients: usize,
    /// How many of the clients are simulated agents that install (at most `clients`).
    pub agents: usize,
}

#[derive(Debug, Serialize)]
pub struct RolloutReport {
    pub clients: usize,
    pub agents: usize,
    pub enroll_s: f64,
    /// Clients `plan` counted (every client: selector `--group all`).
    pub plan_count: u64,
    /// `POST /v1/deployments/plan`, median and max of `RUNS` calls, ms.
    pub plan_ms: (f64, f64),
    /// `GET /v1/deployments/{id}` of a running rollout over every client, median and max, ms.
    pub status_ms: (f64, f64),
    /// Clients that status listed one by one.
    pub status_clients: usize,
    /// From `POST /v1/deployments` to the state `done`, seconds.
    pub create_to_done_s: f64,
    /// Agent syncs made while the rollout ran, and their rounds.
    pub syncs: u64,
    pub rounds: u32,
    /// The rollout's steps as the audit log records them (`open phase 2`, ..., `finish`),
    /// each with its seconds after the create (both stamped by the nodes that proposed them).
    pub steps: Vec<(String, f64)>,
}

impl std::fmt::Display for RolloutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} enrolled clients (enrolled in {:.1} s) on a 3-node loopback cluster; API calls over HTTPS with an admin certificate, each the median (max) of {RUNS}:",
            self.clients, self.enroll_s
        )?;
        writeln!(
            f,
            "  plan --group all --phases {PHASES} ({} clients)   {:8.1} ms ({:.1})",
            self.plan_count, self.plan_ms.0, self.plan_ms.1
        )?;
        writeln!(
            f,
            "  status of a running rollout over all clients ({} listed)  {:8.1} ms ({:.1})",
            self.status_clients, self.status_ms.0, self.status_ms.1
        )?;
        let opened: Vec<String> = self
            .steps
            .iter()
            .map(|(step, s)| format!("{step} at {s:.1} s"))
            .collect();
        write!(
            f,
            "  create -> done, --phases {PHASES} --soak 0s, {} simulated agents (own certificates; sync, download, report installed; {CONCURRENT_SYNCS} at a time): {:.1} s ({} syncs in {} rounds; audited steps: {})",
            self.agents,
            self.create_to_done_s,
            self.syncs,
            self.rounds,
            opened.join(", ")
        )
    }
}

/// Runs the benchmark (see the module's documentation).
pub async fn bench(opts: RolloutBench) -> Result<RolloutReport> {
    if opts.clients == 0 || opts.agents == 0 || opts.agents > opts.clients {
        bail!("--clients must be positive and --agents between 1 and --clients");
    }
    let root = tempfile::Builder::new()
        .prefix("outpost-bench-rollout-")
        .tempdir()?;
    let exe = std::env::current_exe()?;
    let key = root.path().join("release");
    outpost_bundles::keygen(&key)?;
    let bundle = make_bundle(root.path(), &key, 1)?;
    // Every simulated agent enrolls from this host: widen the per-source enroll rate.
    let opts_local = LocalOptions {
        log_level: "warn".into(),
        env: vec![("OUTPOST_ENROLL_RATE".into(), "5000".into())],
        init_args: vec!["--bundle-trust".into(), format!("{}.pub", key.display())],
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(&root.path().join("cluster"), &exe, 3, opts_local).await?;
    let result = run(&mut c, &bundle, &opts).await;
    for i in 0..c.nodes.len() {
        c.kill9(i);
    }
    result
}

/// Everything after the cluster started; the caller stops it whatever this returns.
async fn run(
    c: &mut LocalCluster,
    bundle: &std::path::Path,
    opts: &RolloutBench,
) -> Result<RolloutReport> {
    let dd = DataDir::new(&c.nodes[0].dir);
    let t = Instant::now();
    let fleet = agents::enroll(&dd, opts.agents, AGENTS_GROUP).await?;
    if opts.clients > opts.agents {
        agents::enroll(&dd, opts.clients - opts.agents, OTHERS_GROUP).await?;
    }
    let enroll_s = t.elapsed().as_secs_f64();
    c.cli(0, &["bundle", "import", &bundle.to_string_lossy()])
        .context("importing the bench's bundle")?;

    let leader = c.leader(Duration::from_secs(10)).await?;
    let f = (0..3).find(|&i| i != leader).context("a follower")?;
    // The admin's calls go to a follower, as an operator's may.
    let admin = ApiClient::new(Endpoint::Tls {
        addr: c.nodes[f].api_addr.clone(),
        config: admin_tls(&dd, &fleet.ca_pem)?,
        server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
    });
    // Every enrollment applied on the follower before it is measured.
    c.cli(f, &["config", "get", "bench.none", "--linearizable"])
        .ok();

    let all = SelectorArgs {
        groups: vec!["all".into()],
        ..SelectorArgs::default()
    };
    let plan_req = PlanRequest {
        selector: all.clone(),
        group: String::new(),
        phases: Some(PHASES.into()),
        id: Some("bench-status".into()),
    };
    let (mut plan_count, mut times) = (0, Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        let t = Instant::now();
        let p: PlanView = admin
            .call(Method::POST, "/v1/deployments/plan", Some(&plan_req))
            .await?;
        times.push(t.elapsed());
        plan_count = p.count;
    }
    let plan_ms = median_max(times);

    // A running rollout over every client, held in its first phase (a long soak), whose
    // status is measured; aborted before the measured rollout starts.
    let held = request("bench-status", all, "1h");
    let _: CreatedDeployment = admin
        .call(Method::POST, "/v1/deployments", Some(&held))
        .await
        .context("creating the rollout whose status is measured")?;
    let (mut status_clients, mut times) = (0, Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        let t = Instant::now();
        let s: DeploymentStatusView = admin
            .call(Method::GET, "/v1/deployments/bench-status", None::<&()>)
            .await?;
        times.push(t.elapsed());
        if s.state != "running" {
            bail!("the rollout whose status is measured is {}", s.state);
        }
        status_clients = s.clients.len();
    }
    let status_ms = median_max(times);
    admin
        .call_raw(
            Method::POST,
            "/v1/deployments/bench-status/abort",
            Some(&crate::wire::StepRequest {
                reason: "bench: measured".into(),
                uninstall: false,
            }),
        )
        .await?;

    let measured = request(
        "bench-rollout",
        SelectorArgs {
            groups: vec![AGENTS_GROUP.into()],
            ..SelectorArgs::default()
        },
        "0s",
    );
    let before: Vec<AuditRecord> = admin
        .call(Method::GET, "/v1/audit?limit=1", None::<&()>)
        .await?;
    let after_seq = before.last().map(|a| a.seq).unwrap_or(0);
    let t0 = Instant::now();
    let _: CreatedDeployment = admin
        .call(Method::POST, "/v1/deployments", Some(&measured))
        .await
        .context("creating the measured rollout")?;
    let walk = walk_phases(&admin, fleet.agents, t0).await?;
    let steps = audited_steps(&admin, after_seq, "deployment:bench-rollout").await?;
    Ok(RolloutReport {
        clients: opts.clients,
        agents: opts.agents,
        enroll_s,
        plan_count,
        plan_ms,
        status_ms,
        status_clients,
        create_to_done_s: walk.done_s,
        syncs: walk.syncs,
        rounds: walk.rounds,
        steps,
    })
}

/// `deployment create --artifact tool SELECTOR --phases PHASES --soak SOAK --id ID`.
fn request(id: &str, selector: SelectorArgs, soak: &str) -> DeploymentRequest {
    DeploymentRequest {
        artifact: "tool".into(),
        version: None,
        group: String::new(),
        id: Some(id.into()),
        selector,
        phases: Some(PHASES.into()),
        soak: Some(soak.into()),
        max_failures: None,
        windows: Vec::new(),
        start_at: None,
    }
}

/// What the agents' part measured.
struct Walk {
    done_s: f64,
    syncs: u64,
    rounds: u32,
}

/// Rounds of syncs by the agents that have not installed yet, until the rollout is done.
async fn walk_phases(admin: &ApiClient, agents: Vec<SimAgent>, t0: Instant) -> Result<Walk> {
    let mut waiting: Vec<Arc<SimAgent>> = agents.into_iter().map(Arc::new).collect();
    let (mut syncs, mut rounds) = (0u64, 0u32);
    let deadline = t0 + DONE_DEADLINE;
    loop {
        let s: DeploymentStatusView = admin
            .call(Method::GET, "/v1/deployments/bench-rollout", None::<&()>)
            .await?;
        if s.state == "done" {
            return Ok(Walk {
                done_s: t0.elapsed().as_secs_f64(),
                syncs,
                rounds,
            });
        }
        if s.state != "running" {
            bail!("the rollout is {}: {}", s.state, s.reason);
        }
        if Instant::now() > deadline {
            bail!(
                "the rollout was not done within {} s ({} agents still to install)",
                DONE_DEADLINE.as_secs(),
                waiting.len()
            );
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_SYNCS));
        let mut tasks = Vec::with_capacity(waiting.len());
        for a in &waiting {
            let permit = sem.clone().acquire_owned().await?;
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                sync_and_install(&a).await
            }));
        }
        let mut still = Vec::with_capacity(waiting.len());
        let mut installed = 0usize;
        for (a, t) in waiting.into_iter().zip(tasks) {
            match t.await? {
                Ok(true) => installed += 1,
                Ok(false) => still.push(a),
                Err(e) => {
                    tracing::warn!(agent = %a.client_id, error = format!("{e:#}"), "simulated agent failed; it tries again next round");
                    still.push(a);
                }
            }
        }
        syncs += (installed + still.len()) as u64;
        rounds += 1;
        waiting = still;
        if installed == 0 {
            // Nothing to install in this round: the leader has not opened the next phase
            // yet (it looks once a second), or the last reports are being applied.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The steps of `target` in the audit records after `after_seq`, with their seconds after
/// its create: pages of at most 10,000 records, at most `AUDIT_PAGES` of them.
async fn audited_steps(
    admin: &ApiClient,
    mut after_seq: u64,
    target: &str,
) -> Result<Vec<(String, f64)>> {
    let (mut created, mut steps) = (None, Vec::new());
    for _ in 0..AUDIT_PAGES {
        let page: Vec<AuditRecord> = admin
            .call(
                Method::GET,
                &format!("/v1/audit?after={after_seq}&limit=10000"),
                None::<&()>,
            )
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after_seq = last.seq;
        for a in page
            .iter()
            .filter(|a| a.target == target && a.outcome == "ok")
        {
            match a.action.as_str() {
                "deployment.create" => created = Some(a.at_ms),
                "deployment.step" => {
                    let detail: serde_json::Value =
                        serde_json::from_str(&a.detail).unwrap_or_default();
                    let step = detail["step"].as_str().unwrap_or("?").to_string();
                    steps.push((step, a.at_ms));
                }
                _ => {}
            }
        }
    }
    let created = created.context("the audit log has no create of the measured rollout")?;
    Ok(steps
        .into_iter()
        .map(|(step, at)| (step, (at - created) as f64 / 1000.0))
        .collect())
}

/// One sync of one agent: the assignment of the measured rollout, if any, downloaded and
/// reported installed. `Ok(true)` once installed.
async fn sync_and_install(a: &SimAgent) -> Result<bool> {
    let client = a.client();
    let sync: AgentSync = client
        .call(Method::GET, "/v1/agent/sync", None::<&()>)
        .await?;
    let Some(assigned) = sync
        .assignments
        .iter()
        .find(|x| x.deployment.id == "bench-rollout")
    else {
        return Ok(false);
    };
    let d = &assigned.deployment;
    let blob = client
        .call_raw(
            Method::GET,
            &format!("/v1/agent/artifacts/{}", d.sha256),
            None::<&()>,
        )
        .await?;
    if blob.len() as u64 != d.size {
        bail!("downloaded {} bytes of {}", blob.len(), d.size);
    }
    let report = ResultReport {
        deployment_id: d.id.clone(),
        status: ReportStatus::Installed,
        detail: "bench".into(),
    };
    client
        .call_raw(Method::POST, "/v1/agent/results", Some(&report))
        .await?;
    Ok(true)
}

/// Median and max of `times`, in ms.
fn median_max(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    (ms(times.get(times.len() / 2)), ms(times.last()))
}

/// A signed bundle with one small artifact `tool` (kind `artifact`) at channel version
/// `version` (its bytes differ by version), written under `dir`; `bench years` imports one
/// a simulated month.
pub(super) fn make_bundle(
    dir: &std::path::Path,
    key: &std::path::Path,
    version: u64,
) -> Result<std::path::PathBuf> {
    let mut bytes = vec![0x5a_u8; 4096];
    bytes[..8].copy_from_slice(&version.to_le_bytes());
    std::fs::write(dir.join("tool.bin"), bytes)?;
    let spec = dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "channel = \"bench\"\nversion = {version}\n[[payload]]\npath = \"tool.bin\"\nkind = \"artifact\"\nname = \"tool\"\n"
        ),
    )?;
    let file = dir.join(format!("tool-{version}.obundle"));
    let signing = outpost_bundles::load_signing_key(key)?;
    outpost_bundles::create_bundle(&spec, &[signing], &file, crate::shared::now_secs())?;
    Ok(file)
}
