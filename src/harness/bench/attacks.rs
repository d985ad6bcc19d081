//! `outpost bench flood --attack KIND`: what one identity class can make the cluster spend.
//! Each attack of issue 20's list runs against a running cluster (found through the local
//! node's data dir) while writes are measured, and every member's resident memory and open
//! file descriptors are sampled before, at the peak, and a while after the attack stopped.
//! Figures printed, never asserted: the tests assert the budgets, this prints what they cost.
//!
//! Only the cluster's own addresses are attacked; against a loopback cluster the attacks come
//! from other loopback addresses (127.x.y.z), as from other machines.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::bench::admin::admin_tls;
pub use crate::harness::bench::attackers::Attack;
use crate::harness::bench::attackers::{OPEN_EVERY, Target, resolve, start};
use crate::harness::bench::flood::raft_db_bytes;
use crate::harness::bench::{WriteBench, WriteReport, write};
use crate::shared::client::{ApiClient, Endpoint, local_client};
use crate::shared::datadir::DataDir;
use crate::wire::StatusView;

pub struct AttackBench {
    pub write: WriteBench,
    pub attack: Attack,
    /// Connections (or sign-in attempts); None: `Attack::default_size`.
    pub size: Option<usize>,
    /// How long after the attack stopped the members are sampled again.
    pub after_secs: u64,
}

/// One member's resident memory and open descriptors: before, the largest during, and after.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeUse {
    pub name: String,
    pub rss_idle: Option<u64>,
    pub rss_peak: Option<u64>,
    pub rss_after: Option<u64>,
    pub fds_idle: Option<u64>,
    pub fds_peak: Option<u64>,
    pub fds_after: Option<u64>,
    /// Status requests (a remote admin over TLS) that failed during the attack.
    pub status_failures: u64,
}

#[derive(Debug, Serialize)]
pub struct AttackReport {
    pub attack: Attack,
    pub size: usize,
    pub baseline: WriteReport,
    pub attacked: WriteReport,
    /// attacked writes/s ÷ baseline writes/s.
    pub ratio: f64,
    /// The attack's answers: HTTP status, or what ended the connection.
    pub answers: BTreeMap<String, u64>,
    /// Growth of the local node's raft.db (+ WAL) while the attack ran.
    pub raft_db_growth_bytes: u64,
    pub after_secs: u64,
    pub nodes: Vec<NodeUse>,
}

fn mb(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| format!("{}", b >> 20))
}

fn n(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

impl std::fmt::Display for AttackReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "attack {:?} ({}):", self.attack, self.size)?;
        writeln!(f, "without attack: {}", self.baseline)?;
        writeln!(f, "under attack:   {}", self.attacked)?;
        writeln!(
            f,
            "ratio {:.2}; raft.db grew {} bytes; answers {:?}",
            self.ratio, self.raft_db_growth_bytes, self.answers
        )?;
        for u in &self.nodes {
            writeln!(
                f,
                "  {}: resident MB idle {} peak {} after {} s {}; fds idle {} peak {} after {}; failed status calls {}",
                u.name,
                mb(u.rss_idle),
                mb(u.rss_peak),
                self.after_secs,
                mb(u.rss_after),
                n(u.fds_idle),
                n(u.fds_peak),
                n(u.fds_after),
                u.status_failures
            )?;
        }
        Ok(())
    }
}

/// Every member's status over TLS with a bench admin certificate, once a second.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<NodeUse>>,
}

/// One status of every member: (resident bytes, open fds) each, None where it did not answer.
async fn sample(clients: &[(String, ApiClient)]) -> Vec<Option<(Option<u64>, Option<u64>)>> {
    let mut out = Vec::new();
    for (_, c) in clients {
        out.push(
            c.call::<StatusView>(Method::GET, "/v1/status", None::<&()>)
                .await
                .ok()
                .map(|s| (s.resident_bytes, s.open_fds)),
        );
    }
    out
}

fn status_clients(
    dd: &DataDir,
    ca_pem: &str,
    status: &StatusView,
) -> Result<Vec<(String, ApiClient)>> {
    let tls = admin_tls(dd, ca_pem)?;
    Ok(status
        .raft
        .members
        .iter()
        .map(|m| {
            let mut c = ApiClient::new(Endpoint::Tls {
                addr: m.api_addr.clone(),
                config: tls.clone(),
                server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
            });
            c.set_timeout(Duration::from_secs(5));
            (m.name.clone(), c)
        })
        .collect())
}

impl Sampler {
    fn start(clients: Vec<(String, ApiClient)>, idle: Vec<NodeUse>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let mut uses = idle;
            loop {
                for (u, s) in uses.iter_mut().zip(sample(&clients).await) {
                    match s {
                        Some((rss, fds)) => {
                            u.rss_peak = u.rss_peak.max(rss);
                            u.fds_peak = u.fds_peak.max(fds);
                        }
                        None => u.status_failures += 1,
                    }
                }
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            uses
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> Vec<NodeUse> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// Writes/s without and under one attack, in one run, with every member's memory and
/// descriptors before, at the peak and `after_secs` after the attack stopped.
pub async fn attack(dd: &DataDir, opts: AttackBench) -> Result<AttackReport> {
    dd.check()?;
    let ca_pem = dd.read(&dd.ca_cert())?;
    let status: StatusView = local_client(&dd.root)
        .call(Method::GET, "/v1/status", None::<&()>)
        .await
        .context("asking the local node for the members")?;
    let members = &status.raft.members;
    if members.is_empty() {
        bail!("the local node knows no members");
    }
    let mut peers = Vec::new();
    for m in members {
        peers.push((m.id, resolve(&m.peer_addr)?));
    }
    if let Some(leader) = status.raft.leader_id {
        peers.sort_by_key(|(id, _)| *id != leader);
    }
    let api = members
        .iter()
        .map(|m| resolve(&m.api_addr))
        .collect::<Result<Vec<_>>>()?;
    let target = Target {
        loopback: api.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
        ca_pem: ca_pem.clone(),
        api,
        peers,
    };
    let clients = status_clients(dd, &ca_pem, &status)?;
    let WriteBench {
        clients: writers,
        seconds,
        value_bytes,
    } = opts.write;
    let write_opts = || WriteBench {
        clients: writers,
        seconds,
        value_bytes,
    };
    let baseline = write(dd, write_opts()).await?;
    let idle: Vec<NodeUse> = clients
        .iter()
        .zip(sample(&clients).await)
        .map(|((name, _), s)| NodeUse {
            name: name.clone(),
            rss_idle: s.and_then(|s| s.0),
            fds_idle: s.and_then(|s| s.1),
            ..NodeUse::default()
        })
        .collect();
    let size = opts.size.unwrap_or(opts.attack.default_size());
    let sampler = Sampler::start(status_clients(dd, &ca_pem, &status)?, idle);
    let before = raft_db_bytes(dd);
    let running = start(dd, &target, opts.attack, size).await?;
    // Let the attack reach its size before the writes are measured (connections are opened
    // at a pace).
    let ramp = match opts.attack {
        Attack::PeerConns | Attack::RevokedConns => {
            OPEN_EVERY * u32::try_from(size).unwrap_or(u32::MAX)
        }
        _ => Duration::ZERO,
    };
    tokio::time::sleep(ramp.max(Duration::from_secs(5))).await;
    let attacked = write(dd, write_opts()).await?;
    let growth = raft_db_bytes(dd).saturating_sub(before);
    let size = running.size;
    let answers = running.stop().await;
    let mut nodes = sampler.finish().await;
    tokio::time::sleep(Duration::from_secs(opts.after_secs)).await;
    for (u, s) in nodes.iter_mut().zip(sample(&clients).await) {
        u.rss_after = s.and_then(|s| s.0);
        u.fds_after = s.and_then(|s| s.1);
    }
    Ok(AttackReport {
        attack: opts.attack,
        size,
        ratio: attacked.writes_per_s / baseline.writes_per_s.max(1e-9),
        baseline,
        attacked,
        answers,
        raft_db_growth_bytes: growth,
        after_secs: opts.after_secs,
        nodes,
    })
}
