//! Fault injection in the spirit of etcd's robustness tests and Jepsen: three real `outpost`
//! nodes on the hosts of a `Site` (network namespaces; root needed: without it the tests print
//! why and return, and fail when `CI` is set), a nemesis that kills (-9), pauses
//! (SIGSTOP/SIGCONT) and partitions nodes every few seconds (`support/nemesis.rs`), a register
//! workload with linearizable reads and a workload of unique writes, and a checker
//! (`support/checker.rs`) that reports stale, future and phantom reads, lost or duplicated
//! acknowledged writes and divergence between the nodes.
//!
//! Clients reach each node through its admin socket (`D/admin.sock`, the path the CLI takes),
//! with the library's API client, from several tasks of this process: a client sits beside
//! its node, so a partition separates nodes from each other, not a client from its node.
//!
//! `OUTPOST_FAULTS_SECS` sets how long the faults go on (default 120; from 300 on, the first
//! partition of each round of faults holds 20-30 s); `OUTPOST_FAULTS_SEED` repeats a fault
//! schedule; `OUTPOST_FAULTS_LOGS=DIR` keeps the nodes' whole logs there when a test fails,
//! and `OUTPOST_FAULTS_RUST_LOG` sets their filter (default `info`).
//! The run prints its ops, faults, anomalies and recovery times.
//! `local_reads_from_an_isolated_leader_are_caught` shows the checker failing on real
//! histories: plain local reads from a partitioned old leader are reported stale.
//! `a_partitioned_leader_is_replaced_by_the_election_timeout` shows that a partition, which
//! closes no connection, leaves the fast failover out (the election timeout elects), and that
//! kill -9 of the next leader is a fast election across the hosts.

#[path = "support/checker.rs"]
mod checker;
#[path = "support/nemesis.rs"]
mod nemesis;
mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use checker::{Anomaly, AnomalyKind, Micros, NodeState, Read, Seen, Write, WriteOutcome};
use hyper::{Method, StatusCode};
use nemesis::{FaultKind, FaultRecord, LONG_HOLD_MS, Nemesis, Plan};
use outpost::shared::client::{ApiClient, ApiFailure, Endpoint, NO_BODY, urlencode};
use outpost::shared::datadir::DataDir;
use outpost::wire::{
    AuditCheck, AuditVerifyView, ConfigEntry, ConfigSetRequest, ConfigSetResponse, Scope,
    StatusView,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::netns::{Host, Site};
use support::site::{API_PORT, PEER_PORT, run_on, spawn_serve, tail, wait_answers};
use support::{serial, stdout_of, wait_for};

const NODES: usize = 3;
/// A node gives a write 10 s to commit; the client waits a little longer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// A linearizable read waits at most 5 s for its barrier.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const REGISTER_KEYS: [&str; 3] = ["reg.a", "reg.b", "reg.c"];
const UNIQUE_PREFIX: &str = "u.";
/// How long after a heal the cluster has to serve writes through every node again.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// Runs at least this long (s) hold one partition a round for 20-30 s.
const LONG_RUN_SECS: u64 = 300;
/// A bound on every workload loop besides the stop flag.
const MAX_OPS_PER_WORKER: usize = 1_000_000;

// ---------------------------------------------------------------------------------------
// The cluster: three nodes on the hosts of a site, and the faults done to them.

/// One node: a host of the site, its data directory and its `serve` process.
struct Node<'a> {
    host: &'a Host,
    dir: PathBuf,
    log: PathBuf,
    name: String,
    id: u64,
    pid: Option<u32>,
    paused: bool,
}

impl Node<'_> {
    fn dir(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }

    fn socket(&self) -> PathBuf {
        DataDir::new(&self.dir).socket()
    }

    fn addr_args(&self) -> Vec<String> {
        let ip = self.host.addr();
        [
            "--data-dir",
            self.dir(),
            "--name",
            &self.name,
            "--api-addr",
            &format!("{ip}:{API_PORT}"),
            "--peer-addr",
            &format!("{ip}:{PEER_PORT}"),
            "--no-mdns",
            // Small snapshots, so that a node back from a fault often catches up through one.
            "--snapshot-after",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts `serve` on the node's host without waiting (`Cluster::form` waits until it
    /// answers; after a heal, the recovery probes measure how long that takes).
    fn serve(&mut self) {
        let filter = std::env::var("OUTPOST_FAULTS_RUST_LOG").unwrap_or("info".into());
        self.pid = Some(spawn_serve(self.host, self.dir(), &self.log, &filter));
        self.paused = false;
    }

    /// Runs `outpost ARGS --data-dir <dir>` on this node's host.
    fn cli(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--data-dir", self.dir()]);
        run_on(self.host, &all)
    }
}

struct Cluster<'a> {
    site: &'a Site,
    nodes: Vec<Node<'a>>,
}

impl<'a> Cluster<'a> {
    /// `init` on the first host, `join` on the others (no mDNS: `--peer` the first node),
    /// every node serving, three voters.
    fn form(site: &'a Site, root: &Path) -> Cluster<'a> {
        let mut nodes: Vec<Node> = (0..NODES)
            .map(|i| Node {
                host: site.host(i),
                dir: root.join(format!("n{}", i + 1)),
                log: root.join(format!("n{}.log", i + 1)),
                name: format!("n{}", i + 1),
                id: 0,
                pid: None,
                paused: false,
            })
            .collect();
        let mut args = vec!["init".to_string()];
        args.extend(nodes[0].addr_args());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        stdout_of(&run_on(nodes[0].host, &refs), "init");
        nodes[0].serve();
        wait_answers(nodes[0].host, &nodes[0].dir, &nodes[0].name);
        let mut c = Cluster { site, nodes };
        c.wait_voters(1);
        let first = format!("{}:{API_PORT}", c.nodes[0].host.addr());
        for i in 1..NODES {
            let token = stdout_of(
                &c.nodes[0].cli(&["token", "create", "--kind", "node"]),
                "token create",
            );
            let mut args = vec!["join".to_string()];
            args.extend(c.nodes[i].addr_args());
            args.extend([
                "--token".into(),
                token.trim().into(),
                "--peer".into(),
                first.clone(),
            ]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            stdout_of(&run_on(c.nodes[i].host, &refs), &format!("join n{}", i + 1));
            c.nodes[i].serve();
            wait_answers(c.nodes[i].host, &c.nodes[i].dir, &c.nodes[i].name);
        }
        c.wait_voters(NODES);
        for n in c.nodes.iter_mut() {
            let s = wait_for(Duration::from_secs(20), "status", || status_cli(n));
            n.id = s.node_id;
        }
        c
    }

    fn wait_voters(&self, want: usize) {
        wait_for(
            Duration::from_secs(40),
            &format!("{want} voters with a leader"),
            || {
                let s = status_cli(&self.nodes[0])?;
                s.leader_id?;
                (s.members.iter().filter(|m| m.voter).count() == want).then_some(())
            },
        );
    }

    fn sockets(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(Node::socket).collect()
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The leader most serving nodes name (each asked over its socket, 3 s each).
    fn leader(&self, rt: &tokio::runtime::Runtime) -> Option<usize> {
        let sockets: Vec<(usize, PathBuf)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.pid.is_some() && !n.paused)
            .map(|(i, n)| (i, n.socket()))
            .collect();
        let answers = rt.block_on(async {
            let asks = sockets.iter().map(|(_, s)| async move {
                let c = client(s, Duration::from_secs(3));
                c.call::<StatusView>(Method::GET, "/v1/status", NO_BODY)
                    .await
                    .ok()
                    .and_then(|v| v.leader_id)
            });
            futures::future::join_all(asks).await
        });
        let mut votes: Vec<(u64, usize)> = Vec::new();
        for id in answers.into_iter().flatten() {
            match votes.iter_mut().find(|(l, _)| *l == id) {
                Some((_, n)) => *n += 1,
                None => votes.push((id, 1)),
            }
        }
        votes.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        votes.first().and_then(|(id, _)| self.index_of(*id))
    }

    fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(pid) = n.pid.take() {
            n.host.kill9(pid).expect("kill -9");
        }
        n.paused = false;
    }

    fn signal(&mut self, i: usize, sig: libc::c_int) {
        let n = &mut self.nodes[i];
        if let Some(pid) = n.pid {
            n.host.signal(pid, sig).expect("signal");
            n.paused = sig == libc::SIGSTOP;
        }
    }

    /// Drops all traffic between nodes `a` and `b`, both ways.
    fn cut(&self, a: usize, b: usize) {
        let (ha, hb) = (self.site.host(a), self.site.host(b));
        ha.drop_from(hb.addr()).expect("drop_from");
        hb.drop_from(ha.addr()).expect("drop_from");
    }

    fn start_fault(&mut self, plan: &Plan) {
        match plan.kind {
            FaultKind::Kill => self.kill(plan.node),
            FaultKind::Pause => self.signal(plan.node, libc::SIGSTOP),
            FaultKind::Isolate | FaultKind::IsolateLeader | FaultKind::Bridge => {
                for (a, b) in plan.cuts(NODES) {
                    self.cut(a, b);
                }
            }
        }
    }

    /// Undoes every fault: the network whole, paused nodes continued, killed ones restarted.
    fn heal(&mut self) {
        for h in self.site.hosts() {
            h.accept_all().expect("accept_all");
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.signal(i, libc::SIGCONT);
            }
            if self.nodes[i].pid.is_none() {
                self.nodes[i].serve();
            }
        }
    }

    /// Prints each node's log tail; with `OUTPOST_FAULTS_LOGS=DIR` also keeps the whole logs
    /// there, since the test's own directory goes when it ends.
    fn dump_logs(&self) {
        let keep = std::env::var_os("OUTPOST_FAULTS_LOGS").map(PathBuf::from);
        for n in &self.nodes {
            eprintln!("---- {} ----\n{}", n.name, tail(&n.log, 60));
            if let Some(dir) = &keep {
                let kept = std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::copy(&n.log, dir.join(format!("{}.log", n.name))));
                if let Err(e) = kept {
                    eprintln!("could not keep {}'s log in {}: {e}", n.name, dir.display());
                }
            }
        }
    }

    fn stop(&mut self) {
        self.heal();
        for n in self.nodes.iter_mut() {
            if let Some(pid) = n.pid.take() {
                let _ = n.host.stop(pid, Duration::from_secs(10));
            }
        }
    }
}

fn status_cli(n: &Node) -> Option<StatusView> {
    let out = n.cli(&["status", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

// ---------------------------------------------------------------------------------------
// Clients and workloads.

/// What the workload tasks share.
struct Ctx {
    sockets: Vec<PathBuf>,
    t0: Instant,
    stop: AtomicBool,
    seed: u64,
}

impl Ctx {
    fn now(&self) -> Micros {
        self.t0.elapsed().as_micros() as Micros
    }

    fn secs(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
}

/// A fresh connection per operation: a retried request on a kept-alive connection would be a
/// second write with a new request id, not the same one.
fn client(socket: &Path, timeout: Duration) -> ApiClient {
    let mut c = ApiClient::new(Endpoint::Unix(socket.to_path_buf()));
    c.set_timeout(timeout);
    c
}

fn short(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.chars().take(160).collect()
}

/// `PUT /v1/config` through node `node`: acknowledged, refused (a 4xx: not applied), or
/// indeterminate (anything else, a timeout included: it may apply, now or later).
async fn set(ctx: &Ctx, node: usize, key: &str, value: &str, timeout: Duration) -> Write {
    let invoke = ctx.now();
    let req = ConfigSetRequest {
        key: key.into(),
        value: value.into(),
        scope: Scope::Global,
    };
    let r: anyhow::Result<ConfigSetResponse> = client(&ctx.sockets[node], timeout)
        .call(Method::PUT, "/v1/config", Some(&req))
        .await;
    let complete = ctx.now();
    let outcome = match r {
        Ok(resp) => WriteOutcome::Acked(resp.version),
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f)
                if f.status.is_client_error()
                    && f.status != StatusCode::REQUEST_TIMEOUT
                    && f.status != StatusCode::TOO_MANY_REQUESTS =>
            {
                WriteOutcome::Refused(short(&e))
            }
            _ => WriteOutcome::Unknown(short(&e)),
        },
    };
    Write {
        key: key.into(),
        value: value.into(),
        node,
        invoke,
        complete,
        outcome,
    }
}

/// `GET /v1/config/KEY` through node `node`, linearizable or a plain local read.
async fn get(ctx: &Ctx, node: usize, key: &str, linearizable: bool) -> Result<Read, String> {
    let invoke = ctx.now();
    let path = format!(
        "/v1/config/{}{}",
        urlencode(key),
        if linearizable {
            "?linearizable=true"
        } else {
            ""
        }
    );
    let r: anyhow::Result<ConfigEntry> = client(&ctx.sockets[node], READ_TIMEOUT)
        .call(Method::GET, &path, NO_BODY)
        .await;
    let seen = match r {
        Ok(e) => Seen::Value {
            value: e.value,
            version: e.version,
        },
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) if f.status == StatusCode::NOT_FOUND => Seen::Missing,
            _ => return Err(short(&e)),
        },
    };
    Ok(Read {
        key: key.into(),
        node,
        invoke,
        complete: ctx.now(),
        seen,
    })
}

/// Every entry of node `node`, after a linearizable barrier when asked.
async fn list(ctx: &Ctx, node: usize, linearizable: bool) -> Result<NodeState, String> {
    let path = if linearizable {
        "/v1/config?linearizable=true"
    } else {
        "/v1/config"
    };
    let entries: Vec<ConfigEntry> = client(&ctx.sockets[node], READ_TIMEOUT)
        .call(Method::GET, path, NO_BODY)
        .await
        .map_err(|e| short(&e))?;
    Ok(entries
        .into_iter()
        .map(|e| (e.key, (e.value, e.version)))
        .collect())
}

/// After a failed operation, a short breath (a refused connection fails in microseconds).
async fn breathe() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn worker_rng(ctx: &Ctx, salt: u64) -> StdRng {
    StdRng::seed_from_u64(ctx.seed.wrapping_mul(31).wrapping_add(salt))
}

async fn register_writer(ctx: Arc<Ctx>, id: usize) -> Vec<Write> {
    let mut rng = worker_rng(&ctx, 100 + id as u64);
    let mut out = Vec::new();
    while !ctx.stop.load(Ordering::Relaxed) && out.len() < MAX_OPS_PER_WORKER {
        let key = REGISTER_KEYS[rng.gen_range(0..REGISTER_KEYS.len())];
        let node = rng.gen_range(0..ctx.sockets.len());
        let value = format!("w{id}-{}", out.len() + 1);
        let w = set(&ctx, node, key, &value, WRITE_TIMEOUT).await;
        let failed = !matches!(w.outcome, WriteOutcome::Acked(_));
        out.push(w);
        if failed {
            breathe().await;
        }
    }
    out
}

#[derive(Default)]
struct Reads {
    ok: Vec<Read>,
    failed: usize,
}

async fn register_reader(ctx: Arc<Ctx>, id: usize) -> Reads {
    let mut rng = worker_rng(&ctx, 200 + id as u64);
    let mut out = Reads::default();
    for _ in 0..MAX_OPS_PER_WORKER {
        if ctx.stop.load(Ordering::Relaxed) {
            break;
        }
        let key = REGISTER_KEYS[rng.gen_range(0..REGISTER_KEYS.len())];
        let node = rng.gen_range(0..ctx.sockets.len());
        match get(&ctx, node, key, true).await {
            Ok(r) => out.ok.push(r),
            Err(_) => {
                out.failed += 1;
                breathe().await;
            }
        }
    }
    out
}

async fn unique_writer(ctx: Arc<Ctx>, id: usize) -> Vec<Write> {
    let mut rng = worker_rng(&ctx, 300 + id as u64);
    let mut out = Vec::new();
    while !ctx.stop.load(Ordering::Relaxed) && out.len() < MAX_OPS_PER_WORKER {
        let n = out.len() + 1;
        let node = rng.gen_range(0..ctx.sockets.len());
        let key = format!("{UNIQUE_PREFIX}{id}.{n}");
        let w = set(&ctx, node, &key, &format!("v{id}.{n}"), WRITE_TIMEOUT).await;
        let failed = !matches!(w.outcome, WriteOutcome::Acked(_));
        out.push(w);
        if failed {
            breathe().await;
        }
    }
    out
}

/// Recovery after a heal at `healed`: a write through each node, retried (5 s an attempt,
/// each a new unique key) until it is acknowledged or `RECOVERY_DEADLINE` passes. Returns
/// how long until the first node and every node took a write, and every attempt.
async fn recovery(
    ctx: &Ctx,
    round: usize,
    healed: Instant,
) -> (Option<Duration>, Option<Duration>, Vec<Write>) {
    let probes = (0..ctx.sockets.len()).map(|node| async move {
        let mut attempts = Vec::new();
        for attempt in 0..1_000 {
            let key = format!("{UNIQUE_PREFIX}p{round}.{node}.{attempt}");
            let w = set(ctx, node, &key, "probe", Duration::from_secs(5)).await;
            let ok = matches!(w.outcome, WriteOutcome::Acked(_));
            attempts.push(w);
            if ok {
                return (Some(healed.elapsed()), attempts);
            }
            if healed.elapsed() >= RECOVERY_DEADLINE {
                break;
            }
            breathe().await;
        }
        (None, attempts)
    });
    let results = futures::future::join_all(probes).await;
    let first = results.iter().filter_map(|(d, _)| *d).min();
    let every = results
        .iter()
        .map(|(d, _)| *d)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    let writes = results.into_iter().flat_map(|(_, w)| w).collect();
    (first, every, writes)
}

// ---------------------------------------------------------------------------------------
// Final checks and the report.

/// Every node's entries after a linearizable barrier (retried until `RECOVERY_DEADLINE`).
fn final_states(
    ctx: &Ctx,
    rt: &tokio::runtime::Runtime,
) -> Result<Vec<(String, NodeState)>, String> {
    let mut states = Vec::new();
    for node in 0..ctx.sockets.len() {
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        let state = loop {
            match rt.block_on(list(ctx, node, true)) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("n{}: no linearizable list: {e}", node + 1));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        states.push((format!("n{}", node + 1), state));
    }
    Ok(states)
}

/// `outpost audit verify --json` on every node: each chain intact, every member answering and
/// agreeing, and the same record count and head hash everywhere. Also no node stopped.
fn audit_and_health(cluster: &Cluster) -> (Vec<Anomaly>, String) {
    let mut anomalies = Vec::new();
    let mut heads = Vec::new();
    for n in &cluster.nodes {
        let out = n.cli(&["audit", "verify", "--json"]);
        let view: Option<AuditVerifyView> = serde_json::from_slice(&out.stdout).ok();
        let Some(v) = view else {
            anomalies.push(Anomaly {
                kind: AnomalyKind::Divergence,
                detail: format!(
                    "{}: audit verify gave no report: {}",
                    n.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
            continue;
        };
        let unchecked: Vec<String> = v
            .peers
            .iter()
            .filter(|p| p.agrees != Some(true))
            .map(|p| format!("node {} agrees={:?} {:?}", p.node_id, p.agrees, p.error))
            .collect();
        if !v.ok || !unchecked.is_empty() || v.peers.len() + 1 != NODES {
            anomalies.push(Anomaly {
                kind: AnomalyKind::Divergence,
                detail: format!("{}: audit verify ok={} peers {:?}", n.name, v.ok, unchecked),
            });
        }
        let records = match v.local.check {
            AuditCheck::Intact { records } => records,
            AuditCheck::Broken { seq } => {
                anomalies.push(Anomaly {
                    kind: AnomalyKind::Divergence,
                    detail: format!("{}: audit record {seq} does not verify", n.name),
                });
                0
            }
        };
        heads.push((n.name.clone(), records, v.local.hash.clone()));
        if let Some(s) = status_cli(n)
            && let Some(f) = &s.fatal
        {
            anomalies.push(Anomaly {
                kind: AnomalyKind::Unavailable,
                detail: format!("{} reports itself stopped: {f}", n.name),
            });
        }
    }
    if heads
        .windows(2)
        .any(|w| w[0].1 != w[1].1 || w[0].2 != w[1].2)
    {
        anomalies.push(Anomaly {
            kind: AnomalyKind::Divergence,
            detail: format!("audit heads differ: {heads:?}"),
        });
    }
    let text = match heads.first() {
        Some((_, records, Some(hash))) if anomalies.is_empty() => format!(
            "audit chains intact and alike on every node, {records} records, head {}",
            &hash[..hash.len().min(16)]
        ),
        _ => format!("audit chains: {heads:?}"),
    };
    (anomalies, text)
}

fn write_counts(label: &str, writes: &[Write]) -> String {
    let acked = writes
        .iter()
        .filter(|w| matches!(w.outcome, WriteOutcome::Acked(_)))
        .count();
    let refused = writes
        .iter()
        .filter(|w| matches!(w.outcome, WriteOutcome::Refused(_)))
        .count();
    let unknown = writes.len() - acked - refused;
    format!(
        "  {label:<16} {:>7} ops: ok {acked}, refused {refused}, indeterminate {unknown}",
        writes.len()
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs `test` on a cluster formed for it on a site of its own (`site` names it), with a
/// runtime and a client context. Without root or namespaces the test is skipped, or fails
/// when `CI` is set (`Site::build`).
fn with_cluster(site: &str, test: impl FnOnce(&mut Cluster<'_>, &tokio::runtime::Runtime, &Ctx)) {
    let _g = serial();
    let Some(site) = Site::builder(site).hosts(NODES).build() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::form(&site, tmp.path());
    let rt = runtime();
    let ctx = Ctx {
        sockets: cluster.sockets(),
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        seed: 0,
    };
    test(&mut cluster, &rt, &ctx);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------
// The tests.

/// Faults for `OUTPOST_FAULTS_SECS` (default 120) under both workloads; the checker must
/// find nothing, and the cluster must serve writes through every node after each heal.
#[test]
fn nemesis_run_keeps_linearizable_reads_and_every_acknowledged_write() {
    let _g = serial();
    let Some(site) = Site::builder("flt").hosts(NODES).build() else {
        return;
    };
    let secs = env_u64("OUTPOST_FAULTS_SECS").unwrap_or(120);
    let seed = env_u64("OUTPOST_FAULTS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let long_partitions = secs >= LONG_RUN_SECS;
    println!(
        "fault suite: {NODES} nodes, {secs} s of faults{}, seed {seed} (OUTPOST_FAULTS_SEED)",
        if long_partitions {
            ", one long partition a round"
        } else {
            ""
        }
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::form(&site, tmp.path());
    let rt = runtime();
    let ctx = Arc::new(Ctx {
        sockets: cluster.sockets(),
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        seed,
    });

    // Every register key starts with an acknowledged value.
    let mut register_writes = Vec::new();
    for key in REGISTER_KEYS {
        let w = rt.block_on(set(&ctx, 0, key, &format!("{key}-init"), WRITE_TIMEOUT));
        assert!(matches!(w.outcome, WriteOutcome::Acked(_)), "{w:?}");
        register_writes.push(w);
    }
    let writers: Vec<_> = (0..2)
        .map(|i| rt.spawn(register_writer(ctx.clone(), i)))
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|i| rt.spawn(register_reader(ctx.clone(), i)))
        .collect();
    let uniques: Vec<_> = (0..2)
        .map(|i| rt.spawn(unique_writer(ctx.clone(), i)))
        .collect();

    // The nemesis, on this thread: a fault, its hold, the heal, the recovery, a quiet time.
    let mut nemesis = Nemesis::new(seed, NODES);
    if long_partitions {
        nemesis = nemesis.with_long_partitions();
    }
    let mut log: Vec<FaultRecord> = Vec::new();
    let mut anomalies: Vec<Anomaly> = Vec::new();
    let mut probe_writes: Vec<Write> = Vec::new();
    std::thread::sleep(Duration::from_secs(2));
    let faults_end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < faults_end && log.len() < 10_000 {
        let plan = nemesis.next(cluster.leader(&rt));
        let start = ctx.secs();
        cluster.start_fault(&plan);
        std::thread::sleep(plan.hold);
        cluster.heal();
        let healed = Instant::now();
        let healed_at = ctx.secs();
        let (first_write, every_node, probes) = rt.block_on(recovery(&ctx, log.len(), healed));
        probe_writes.extend(probes);
        let rec = FaultRecord {
            plan,
            start,
            healed: healed_at,
            first_write,
            every_node,
        };
        println!("fault {:>3}: {rec}", log.len() + 1);
        if every_node.is_none() {
            anomalies.push(Anomaly {
                kind: AnomalyKind::Unavailable,
                detail: format!(
                    "not every node took a write within {RECOVERY_DEADLINE:?} of healing: {rec}"
                ),
            });
        }
        log.push(rec);
        std::thread::sleep(nemesis.quiet());
    }
    let faults_secs = ctx.secs();

    // A few healthy seconds more, then the workloads stop (each op in flight is bounded).
    std::thread::sleep(Duration::from_secs(3));
    ctx.stop.store(true, Ordering::Relaxed);
    let joined = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut w = Vec::new();
            for h in writers {
                w.extend(h.await.expect("register writer"));
            }
            let mut r = Reads::default();
            for h in readers {
                let x = h.await.expect("register reader");
                r.ok.extend(x.ok);
                r.failed += x.failed;
            }
            let mut u = Vec::new();
            for h in uniques {
                u.extend(h.await.expect("unique writer"));
            }
            (w, r, u)
        })
        .await
    });
    let Ok((reg_w, reads, mut unique_writes)) = joined else {
        cluster.dump_logs();
        panic!("the workloads did not stop within 60 s");
    };
    let ops_secs = ctx.secs();
    register_writes.extend(reg_w);
    unique_writes.extend(probe_writes);

    anomalies.extend(checker::check_register(&register_writes, &reads.ok));
    let states = match final_states(&ctx, &rt) {
        Ok(s) => s,
        Err(e) => {
            cluster.dump_logs();
            panic!("{e}");
        }
    };
    anomalies.extend(checker::check_final(
        &register_writes,
        &unique_writes,
        UNIQUE_PREFIX,
        &states,
    ));
    let (audit_anomalies, audit_text) = audit_and_health(&cluster);
    anomalies.extend(audit_anomalies);

    // The report.
    let total = register_writes.len() + reads.ok.len() + reads.failed + unique_writes.len();
    println!("\n==== fault suite summary (seed {seed}) ====");
    println!(
        "ops: {total} in {ops_secs:.0} s ({:.0}/s), faults for {faults_secs:.0} s",
        total as f64 / ops_secs
    );
    println!("{}", write_counts("register write", &register_writes));
    println!(
        "  {:<16} {:>7} ops: ok {}, failed {} (linearizable)",
        "register read",
        reads.ok.len() + reads.failed,
        reads.ok.len(),
        reads.failed
    );
    println!("{}", write_counts("unique write", &unique_writes));
    let by_kind = nemesis::count_by_kind(&log);
    println!(
        "faults: {} ({})",
        log.len(),
        by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "recovery, heal -> a write acknowledged: {}",
        nemesis::spread(log.iter().map(|r| r.first_write))
    );
    println!(
        "recovery, heal -> a write through every node: {}",
        nemesis::spread(log.iter().map(|r| r.every_node))
    );
    for kind in nemesis::ALL_KINDS {
        let of: Vec<&FaultRecord> = log.iter().filter(|r| r.plan.kind == kind).collect();
        if !of.is_empty() {
            println!(
                "  after {kind}: every node {}",
                nemesis::spread(of.iter().map(|r| r.every_node))
            );
        }
    }
    let is_long = |r: &FaultRecord| r.plan.hold >= Duration::from_millis(LONG_HOLD_MS.start);
    let partition = |r: &FaultRecord| !r.plan.cuts(NODES).is_empty();
    if log.iter().any(is_long) {
        let of = |long: bool| {
            nemesis::spread(
                log.iter()
                    .filter(|r| partition(r) && is_long(r) == long)
                    .map(|r| r.every_node),
            )
        };
        println!("  after a partition held 20-30 s: every node {}", of(true));
        println!("  after a shorter partition: every node {}", of(false));
    }
    if let Some(last) = log.last() {
        println!("after the last heal: {last}");
    }
    let keys: usize = states.first().map(|(_, s)| s.len()).unwrap_or(0);
    println!("final state: {NODES} nodes compared over {keys} keys; {audit_text}");
    println!("{}", checker::summary(&anomalies, 5));
    println!("==== end of summary ====\n");

    if !anomalies.is_empty() {
        cluster.dump_logs();
    }
    assert!(
        anomalies.is_empty(),
        "the fault suite found {} anomalies (seed {seed}), see the summary above",
        anomalies.len()
    );
    assert!(
        by_kind.len() == nemesis::ALL_KINDS.len() || log.len() < nemesis::ALL_KINDS.len(),
        "every kind of fault ran: {by_kind:?}"
    );
    cluster.stop();
}

/// The checker can fail: the leader is cut off, writes commit through the majority, and
/// plain local reads from the old leader are reported stale (while linearizable reads there
/// fail instead of lying); its local state, read without a barrier, lacks acknowledged
/// writes. After the heal, the same checks on barrier reads are clean.
#[test]
fn local_reads_from_an_isolated_leader_are_caught() {
    with_cluster("fneg", |cluster, rt, ctx| {
        let key = "reg.neg";
        let old = wait_for(Duration::from_secs(20), "a leader", || cluster.leader(rt));
        let others: Vec<usize> = (0..NODES).filter(|i| *i != old).collect();
        let mut writes = vec![rt.block_on(set(ctx, old, key, "before", WRITE_TIMEOUT))];
        assert!(
            matches!(writes[0].outcome, WriteOutcome::Acked(1)),
            "{:?}",
            writes[0]
        );

        for &o in &others {
            cluster.cut(old, o);
        }
        println!("n{} (leader) cut off from the others", old + 1);
        // Five register writes and five unique writes acknowledged by the majority (an attempt
        // that ends indeterminate is kept in the history, and the next one writes a new value).
        let mut unique = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 1..=5 {
            for attempt in 0..100 {
                let w = rt.block_on(set(
                    ctx,
                    others[attempt % 2],
                    key,
                    &format!("after-{i}.{attempt}"),
                    WRITE_TIMEOUT,
                ));
                let ok = matches!(w.outcome, WriteOutcome::Acked(_));
                writes.push(w);
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "the majority takes no write");
            }
            for attempt in 0..100 {
                let u = rt.block_on(set(
                    ctx,
                    others[1],
                    &format!("{UNIQUE_PREFIX}neg.{i}.{attempt}"),
                    &format!("n{i}"),
                    WRITE_TIMEOUT,
                ));
                let ok = matches!(u.outcome, WriteOutcome::Acked(_));
                unique.push(u);
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "the majority takes no write");
            }
        }
        let acked_unique = unique
            .iter()
            .filter(|w| matches!(w.outcome, WriteOutcome::Acked(_)))
            .count();

        let mut local = Vec::new();
        for _ in 0..5 {
            local.push(rt.block_on(get(ctx, old, key, false)).expect("local read"));
        }
        let mut linearizable = Vec::new();
        let mut refused = 0;
        for node in [old, old, others[0], others[1]] {
            let t = Instant::now();
            match rt.block_on(get(ctx, node, key, true)) {
                Ok(r) => linearizable.push(r),
                Err(e) => {
                    println!(
                        "linearizable read via n{} failed after {} ms: {e}",
                        node + 1,
                        t.elapsed().as_millis()
                    );
                    refused += 1;
                }
            }
        }
        let states: Vec<(String, NodeState)> = (0..NODES)
            .map(|n| {
                let s = rt.block_on(list(ctx, n, false)).expect("local list");
                (format!("n{}", n + 1), s)
            })
            .collect();

        let stale = checker::check_register(&writes, &local);
        println!(
            "plain local reads from the isolated old leader:\n{}",
            checker::summary(&stale, 3)
        );
        let lin = checker::check_register(&writes, &linearizable);
        println!(
            "linearizable reads: {} answered, {refused} failed; {}",
            linearizable.len(),
            checker::summary(&lin, 3)
        );
        let lost = checker::check_final(&writes, &unique, UNIQUE_PREFIX, &states);
        println!(
            "final state read without a barrier:\n{}",
            checker::summary(&lost, 3)
        );

        cluster.heal();
        let healed = final_states(ctx, rt);
        let after = healed
            .as_ref()
            .map(|s| checker::check_final(&writes, &unique, UNIQUE_PREFIX, s));
        let failed = || cluster.dump_logs();
        let count = |a: &[Anomaly], k| a.iter().filter(|x| x.kind == k).count();
        // Lost on the old leader: every acknowledged unique write, and the register's newest.
        let lost_expected = acked_unique + 1;
        if count(&stale, AnomalyKind::StaleRead) != local.len()
            || !lin.is_empty()
            || count(&lost, AnomalyKind::LostWrite) != lost_expected
            || !matches!(&after, Ok(a) if a.is_empty())
        {
            failed();
        }
        assert_eq!(
            count(&stale, AnomalyKind::StaleRead),
            local.len(),
            "every local read from the old leader is stale"
        );
        assert!(lin.is_empty(), "linearizable reads never lie");
        assert!(refused >= 2, "the old leader cannot confirm a read index");
        assert_eq!(
            count(&lost, AnomalyKind::LostWrite),
            lost_expected,
            "the old leader lacks every write of the majority"
        );
        match after {
            Ok(a) => assert!(a.is_empty(), "after the heal: {}", checker::summary(&a, 5)),
            Err(e) => panic!("after the heal: {e}"),
        }
        cluster.stop();
    });
}

/// A partition closes no connection: its packets are dropped silently, so no FIN or RST
/// reaches anyone and the fast failover (`raft/src/failover.rs`) stays out of it. The majority
/// elects a new leader once the old one's lease and the election timeout have run out, and no
/// node counts a fast campaign, not even when the heal lets the old leader's stale connections
/// close. Then kill -9 of the new leader, across the hosts: its kernel closes its connections
/// and a survivor wins the term of its fast campaign.
#[test]
fn a_partitioned_leader_is_replaced_by_the_election_timeout() {
    with_cluster("fpart", |cluster, rt, ctx| {
        let status = |c: &Cluster, i: usize| {
            wait_for(Duration::from_secs(20), "status", || {
                status_cli(&c.nodes[i])
            })
        };
        let old = wait_for(Duration::from_secs(20), "a leader", || cluster.leader(rt));
        let old_term = status(cluster, old).term;
        let others: Vec<usize> = (0..NODES).filter(|i| *i != old).collect();
        for &o in &others {
            cluster.cut(old, o);
        }
        println!(
            "n{} (leader, term {old_term}) cut off from the others",
            old + 1
        );
        let (new, term) = wait_for(Duration::from_secs(30), "a leader of the majority", || {
            let s = status_cli(&cluster.nodes[others[0]])?;
            let l = cluster.index_of(s.leader_id?)?;
            (l != old && s.term > old_term).then_some((l, s.term))
        });
        println!("n{} leads the majority at term {term}", new + 1);
        for &o in &others {
            let s = status(cluster, o);
            if s.fast_elections != 0 {
                cluster.dump_logs();
            }
            assert_eq!(
                s.fast_elections,
                0,
                "n{}: a campaign without a close",
                o + 1
            );
        }
        let w = rt.block_on(set(ctx, others[0], "part.write", "majority", WRITE_TIMEOUT));
        assert!(matches!(w.outcome, WriteOutcome::Acked(_)), "{w:?}");

        cluster.heal();
        let new_id = cluster.nodes[new].id;
        wait_for(
            Duration::from_secs(30),
            "the old leader follows the new one",
            || {
                let s = status_cli(&cluster.nodes[old])?;
                (s.leader_id == Some(new_id)).then_some(())
            },
        );
        // Through the old leader: the cluster has settled.
        let w = rt.block_on(set(ctx, old, "part.write", "healed", WRITE_TIMEOUT));
        assert!(matches!(w.outcome, WriteOutcome::Acked(_)), "{w:?}");
        for i in 0..NODES {
            let s = status(cluster, i);
            if s.fast_elections != 0 {
                cluster.dump_logs();
            }
            assert_eq!(s.fast_elections, 0, "n{} after the heal", i + 1);
        }

        // kill -9 of the new leader: a fast election among the two left.
        cluster.kill(new);
        let left: Vec<usize> = (0..NODES).filter(|i| *i != new).collect();
        let s = wait_for(Duration::from_secs(30), "a leader after the kill", || {
            left.iter().find_map(|&i| {
                let s = status_cli(&cluster.nodes[i])?;
                (s.leader_id == Some(s.node_id) && s.term > term).then_some(s)
            })
        });
        if s.fast_election_term != Some(s.term) {
            cluster.dump_logs();
        }
        assert_eq!(
            s.fast_election_term,
            Some(s.term),
            "n{} did not win its fast campaign's term: {s:?}",
            cluster.index_of(s.node_id).map_or(0, |i| i + 1)
        );
        println!(
            "after kill -9 of n{}: n{} leads at term {} by a fast campaign",
            new + 1,
            cluster.index_of(s.node_id).map_or(0, |i| i + 1),
            s.term
        );
        cluster.stop();
    });
}

/// A leader cut off from the others takes writes it cannot commit. The majority elects a new
/// leader and writes on until its snapshot is far past the old leader's log, so that after the
/// heal the old leader catches up through a snapshot that covers its uncommitted entries
/// (openraft 0.9 never answers the proposals of entries removed that way). Every write it
/// held is still answered, and the old leader takes new writes again: its write batcher did
/// not stay waiting on them (`Inner::propose` in `raft/src/node/batcher.rs`).
#[test]
fn a_deposed_leader_answers_the_writes_it_held_and_takes_new_ones() {
    with_cluster("fdepose", |cluster, rt, ctx| {
        let old = wait_for(Duration::from_secs(20), "a leader", || cluster.leader(rt));
        let old_status = wait_for(Duration::from_secs(20), "status", || {
            status_cli(&cluster.nodes[old])
        });
        let others: Vec<usize> = (0..NODES).filter(|i| *i != old).collect();
        for &o in &others {
            cluster.cut(old, o);
        }
        // Long enough to outlast the node's own 10 s write deadline many times over.
        const HELD_TIMEOUT: Duration = Duration::from_secs(90);
        let held = std::thread::scope(|scope| {
            // Staggered, so that each write is a batch of its own: the first two take both of
            // the batcher's slots, the others wait for one.
            let held = scope.spawn(|| {
                runtime().block_on(futures::future::join_all((0..4).map(|i| {
                    let ctx = &ctx;
                    async move {
                        tokio::time::sleep(Duration::from_millis(150 * i)).await;
                        let key = format!("depose.held.{i}");
                        set(ctx, old, &key, "held", HELD_TIMEOUT).await
                    }
                })))
            });
            let (new, term) = wait_for(Duration::from_secs(30), "a leader of the majority", || {
                let s = status_cli(&cluster.nodes[others[0]])?;
                let l = cluster.index_of(s.leader_id?)?;
                (l != old && s.term > old_status.term).then_some((l, s.term))
            });
            println!(
                "n{} cut off at term {}; n{} leads the majority at term {term}",
                old + 1,
                old_status.term,
                new + 1
            );
            // One entry per write, until the new leader's snapshot (every 200 entries, 200 kept
            // behind it) leaves the old leader's log far behind.
            let target = old_status.last_log_index + 1_000;
            let mut written = 0;
            for round in 0..40 {
                for i in 0..100 {
                    let key = format!("depose.majority.{round}.{i}");
                    let w = rt.block_on(set(ctx, new, &key, "v", WRITE_TIMEOUT));
                    assert!(matches!(w.outcome, WriteOutcome::Acked(_)), "{w:?}");
                    written += 1;
                }
                let s = status_cli(&cluster.nodes[new]).expect("the new leader's status");
                if s.snapshot_index.is_some_and(|i| i >= target) {
                    break;
                }
            }
            println!("{written} writes through the majority");
            cluster.heal();
            held.join().expect("held writes")
        });
        for w in &held {
            let waited = Duration::from_micros(w.complete.saturating_sub(w.invoke));
            if waited >= HELD_TIMEOUT {
                cluster.dump_logs();
            }
            assert!(
                waited < HELD_TIMEOUT,
                "a write held by the deposed leader was never answered: {w:?}"
            );
        }
        println!(
            "writes held by the deposed leader: {:?}",
            held.iter().map(|w| &w.outcome).collect::<Vec<_>>()
        );
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let w = rt.block_on(set(ctx, old, "depose.after", "ok", WRITE_TIMEOUT));
            if matches!(w.outcome, WriteOutcome::Acked(_)) {
                break;
            }
            if Instant::now() >= deadline {
                cluster.dump_logs();
                panic!(
                    "the deposed leader took no write within {RECOVERY_DEADLINE:?} of the heal: {w:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("a write through the deposed leader acknowledged after {attempts} attempt(s)");
        cluster.stop();
    });
}
