//! The node's own commands: `init`, `join`, `discover`, `status` and `node list | remove`
//! (`serve` is `crate::node::serve`). Start-up itself is `crate::node`.

use std::path::PathBuf;
use std::time::Duration;

use crate::wire::NodeRecord;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hyper::Method;
use outpost_raft::RaftTuning;

use super::{DataDirArg, Remote, api};
use crate::shared::client::NO_BODY;
use crate::shared::datadir::{ClusterConfig, DataDir};
use crate::wire::StatusView;

#[derive(Args, Debug, Clone)]
pub(super) struct Addrs {
    /// This node's name (unique in the cluster).
    #[arg(long)]
    pub(super) name: String,
    /// HTTPS API address (agents, admins).
    #[arg(long)]
    pub(super) api_addr: String,
    /// Raft peer address.
    #[arg(long)]
    pub(super) peer_addr: String,
    /// Raft heartbeat interval in ms.
    #[arg(long, default_value_t = RaftTuning::default().heartbeat_ms)]
    heartbeat_ms: u64,
    /// Election timeout range in ms, as MIN-MAX.
    #[arg(long, default_value = "150-300")]
    election_timeout_ms: String,
    /// Build a snapshot after this many entries.
    #[arg(long, default_value_t = RaftTuning::default().snapshot_after_entries)]
    snapshot_after: u64,
    /// As leader, remove a member unreachable this long (e.g. 30m), if the voters left keep a
    /// quorum and at least three; written to node.toml as `[cluster] auto_remove_after`.
    #[arg(long, value_name = "DURATION")]
    auto_remove_after: Option<humantime::Duration>,
}

impl Addrs {
    /// The node that `init`, `join` or `restore` makes.
    pub(super) fn spec(&self, net: &NetArgs) -> Result<crate::node::NodeSpec> {
        Ok(crate::node::NodeSpec {
            name: self.name.clone(),
            api_addr: self.api_addr.clone(),
            peer_addr: self.peer_addr.clone(),
            tuning: self.tuning()?,
            cluster: self.cluster()?,
            net: net.options()?,
        })
    }

    pub(super) fn cluster(&self) -> Result<ClusterConfig> {
        let auto_remove_after = self
            .auto_remove_after
            .map(|d| ClusterConfig::check_auto_remove_after(d.into()))
            .transpose()
            .context("--auto-remove-after")?;
        Ok(ClusterConfig { auto_remove_after })
    }

    pub(super) fn tuning(&self) -> Result<RaftTuning> {
        let (lo, hi) = self
            .election_timeout_ms
            .split_once('-')
            .context("--election-timeout-ms must look like 150-300")?;
        let lo: u64 = lo.trim().parse().context("--election-timeout-ms minimum")?;
        let hi: u64 = hi.trim().parse().context("--election-timeout-ms maximum")?;
        if lo <= self.heartbeat_ms || hi <= lo {
            bail!(
                "--election-timeout-ms must satisfy heartbeat < min < max (got {lo}-{hi}, heartbeat {})",
                self.heartbeat_ms
            );
        }
        Ok(RaftTuning {
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: lo,
            election_timeout_max_ms: hi,
            snapshot_after_entries: self.snapshot_after.max(10),
            keep_entries_behind_snapshot: RaftTuning::default()
                .keep_entries_behind_snapshot
                .min(self.snapshot_after),
            ..RaftTuning::default()
        })
    }
}

/// Listening addresses and discovery, for `init` and `join` (written to node.toml).
#[derive(Args, Debug, Clone)]
pub(super) struct NetArgs {
    /// Where the API listens when not on --api-addr, e.g. 0.0.0.0:7443: the node keeps serving
    /// when its advertised address changes (DHCP).
    #[arg(long, value_name = "HOST:PORT")]
    api_listen: Option<String>,
    /// Where the Raft peer transport listens when not on --peer-addr, e.g. 0.0.0.0:7444.
    #[arg(long, value_name = "HOST:PORT")]
    peer_listen: Option<String>,
    /// Neither advertise nor browse mDNS (only --static-peer entries are used).
    #[arg(long)]
    no_mdns: bool,
    /// Use mDNS only on this interface (repeatable); default: every non-loopback multicast one.
    #[arg(long = "mdns-interface", value_name = "IF")]
    mdns_interfaces: Vec<String>,
    /// A node's API address to find the cluster through when multicast does not reach
    /// (repeatable); kept in node.toml as `[discovery] peers`.
    #[arg(long = "static-peer", value_name = "HOST:PORT")]
    static_peers: Vec<String>,
}

impl NetArgs {
    pub(super) fn options(&self) -> Result<crate::node::NetOptions> {
        for p in &self.static_peers {
            outpost_discovery::PeerSpec::parse(p)
                .with_context(|| format!("--static-peer {p:?}"))?;
        }
        Ok(crate::node::NetOptions {
            api_listen: self.api_listen.clone(),
            peer_listen: self.peer_listen.clone(),
            discovery: outpost_discovery::DiscoveryConfig {
                mdns: !self.no_mdns,
                interfaces: self.mdns_interfaces.clone(),
                peers: self.static_peers.clone(),
            },
        })
    }
}

/// `outpost init`.
pub(super) async fn init(
    dir: DataDirArg,
    addrs: Addrs,
    net: NetArgs,
    bundle_trust: Vec<PathBuf>,
    bundle_threshold: Option<usize>,
) -> Result<()> {
    let dd = DataDir::new(&dir.data_dir);
    let bundle_trust = super::bundle::initial_trust(&bundle_trust, bundle_threshold)?;
    let out = crate::node::init(
        &dd,
        crate::node::InitOptions {
            node: addrs.spec(&net)?,
            bundle_trust,
        },
    )
    .await?;
    println!(
        "cluster {} initialised; this is node 1 ({})",
        out.cluster_id, addrs.name
    );
    println!("node join token:         {}", out.node_token);
    println!("client enrollment token: {}", out.client_token);
    println!(
        "(the node token allows {} joins within an hour; later ones: outpost token create --kind node)",
        crate::node::INIT_NODE_TOKEN_USES
    );
    println!("next: outpost serve --data-dir {}", dir.data_dir.display());
    Ok(())
}

/// `outpost join`.
pub(super) async fn join(
    dir: DataDirArg,
    addrs: Addrs,
    net: NetArgs,
    token: String,
    peer: Vec<String>,
    discover_timeout: humantime::Duration,
) -> Result<()> {
    let dd = DataDir::new(&dir.data_dir);
    let resp = crate::node::join(
        &dd,
        crate::node::JoinOptions {
            node: addrs.spec(&net)?,
            token,
            peers: peer,
            discover_timeout: discover_timeout.into(),
        },
    )
    .await?;
    println!(
        "joined cluster {} ({}) as node {}; next: outpost serve --data-dir {}",
        resp.cluster_id,
        resp.cluster_name,
        resp.node_id,
        dir.data_dir.display()
    );
    Ok(())
}

/// `outpost discover`: one browse, then a table (or JSON) of what answered.
pub(super) async fn discover(
    timeout: Duration,
    cluster: Option<String>,
    interfaces: Vec<String>,
    peers: Vec<String>,
    json: bool,
) -> Result<()> {
    let cfg = outpost_discovery::DiscoveryConfig {
        mdns: true,
        interfaces,
        peers,
    };
    let view = tokio::task::spawn_blocking(move || {
        outpost_discovery::discover(&cfg, cluster.as_deref(), timeout)
    })
    .await
    .context("the discovery thread failed")?
    .context("browsing mDNS")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view.peers)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<24} {:<6} {:<6} {:<34} {:<5} VERSION",
        "NAME", "ADDRESSES", "API", "PEER", "CLUSTER", "NODE"
    );
    let dash = || "-".to_string();
    for p in &view.peers {
        let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
        println!(
            "{:<16} {:<24} {:<6} {:<6} {:<34} {:<5} {}",
            p.name
                .clone()
                .unwrap_or_else(|| format!("(static {})", p.static_entries.join(","))),
            addrs.join(","),
            p.api_port,
            p.peer_port.map(|x| x.to_string()).unwrap_or_else(dash),
            p.cluster.clone().unwrap_or_else(dash),
            p.node_id.map(|x| x.to_string()).unwrap_or_else(dash),
            p.version.clone().unwrap_or_else(dash),
        );
    }
    if view.is_empty() {
        eprintln!("no Outpost node answered within {timeout:?}");
    }
    Ok(())
}

/// `outpost status`.
pub(super) async fn status(remote: &Remote, dir: DataDirArg, json: bool) -> Result<()> {
    let s: StatusView = api(remote, &dir)?
        .call(Method::GET, "/v1/status", NO_BODY)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_status(&s);
    }
    Ok(())
}

fn print_status(s: &StatusView) {
    println!(
        "cluster {} ({}), node {} ({}) is {}",
        s.cluster_name.as_deref().unwrap_or("?"),
        s.cluster_id,
        s.node_id,
        s.name,
        s.state.to_lowercase()
    );
    match s.leader_id {
        Some(l) => println!("leader: node {l}, term {}", s.term),
        None => println!("leader: none (term {})", s.term),
    }
    println!(
        "applied index {}, last log index {}",
        s.applied_index, s.last_log_index
    );
    if let Some(f) = &s.fatal {
        println!("STOPPED: {f}");
    }
    if let Some(b) = s.resident_bytes {
        println!("resident memory {:.1} MiB", b as f64 / 1048576.0);
    }
    if let Some(fds) = s.open_fds {
        println!("open file descriptors {fds}");
    }
    if let Some(h) = &s.tls_handshakes {
        println!(
            "API TLS handshakes since start: {} full, {} resumed (agents' later syncs)",
            h.full, h.resumed
        );
    }
    let p = &s.peer_port;
    if *p != Default::default() {
        println!(
            "peer port refused since start: {} absurd terms, {} from removed nodes, {} from non-members, {} full in handshake, {} full per node, {} taken over, {} idle, {} frames, {} failed handshakes",
            p.absurd_term,
            p.removed,
            p.not_member,
            p.pre_handshake_full,
            p.node_full,
            p.taken_over,
            p.idle_closed,
            p.frame_refused,
            p.handshake_failed
        );
    }
    if let Some(e) = &s.cert_expiry {
        let at = |v: Option<i64>| {
            v.map(|t| crate::shared::text::format_ms(t.saturating_mul(1000)))
                .unwrap_or_else(|| "none seen".into())
        };
        println!(
            "certificates end: CA {}, this node {}, admins {}, clients {} (admins and clients: soonest presented here in the last day)",
            at(e.ca),
            at(e.node),
            at(e.admin),
            at(e.client)
        );
    }
    println!(
        "{:<4} {:<16} {:<8} {:<22} MATCHED",
        "ID", "NAME", "ROLE", "API"
    );
    for m in &s.members {
        let role = if m.voter { "voter" } else { "learner" };
        let matched = m
            .matched_index
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<4} {:<16} {:<8} {:<22} {}",
            m.id, m.name, role, m.api_addr, matched
        );
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum NodeCmd {
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Remove a node from the cluster (its id is never reused).
    Remove {
        id: u64,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

pub(super) async fn run(remote: &Remote, cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::List { dir, json } => {
            let nodes: Vec<NodeRecord> = api(remote, &dir)?
                .call(Method::GET, "/v1/nodes", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                println!(
                    "{:<4} {:<16} {:<10} {:<22} {:<22} VERSION",
                    "ID", "NAME", "ROLE", "API", "PEER"
                );
                for n in nodes {
                    println!(
                        "{:<4} {:<16} {:<10} {:<22} {:<22} {}",
                        n.id,
                        n.name,
                        format!("{:?}", n.role).to_lowercase(),
                        n.api_addr,
                        n.peer_addr,
                        n.version
                    );
                }
            }
        }
        NodeCmd::Remove { id, dir } => {
            let _: serde_json::Value = api(remote, &dir)?
                .call(Method::DELETE, &format!("/v1/nodes/{id}"), NO_BODY)
                .await?;
            println!("node {id} removed");
        }
    }
    Ok(())
}
