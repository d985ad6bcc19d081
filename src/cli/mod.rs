//! The command line: clap definitions and what each command does (through the API client or
//! the runtime).

mod bundle;
mod deployment;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hyper::Method;
use outpost_raft::RaftTuning;
use outpost_storage::{ConfigEntry, NodeRecord, Scope};

use crate::node;
use crate::shared::client::{ApiClient, Endpoint, NO_BODY, local_client, urlencode};
use crate::shared::datadir::DataDir;
use crate::wire::{ConfigSetRequest, ConfigSetResponse, StatusView, TokenRequest, TokenResponse};

const DEFAULT_DATA_DIR: &str = "/var/lib/outpost";

#[derive(Parser, Debug)]
#[command(
    name = "outpost",
    version,
    about = "Outpost: a replicated appliance for air-gapped sites"
)]
pub struct Cli {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: Cmd,
}

/// Remote administration over HTTPS with an admin certificate, instead of the local socket.
#[derive(Args, Debug, Clone)]
struct Remote {
    /// A node's API address (HOST:PORT); needs --cert, --key and --ca.
    #[arg(long, global = true, requires_all = ["tls_cert", "tls_key", "tls_ca"])]
    server: Option<String>,
    /// Admin certificate (PEM) for --server.
    #[arg(long = "cert", id = "tls_cert", global = true)]
    cert: Option<PathBuf>,
    /// Its private key (PEM). Also the signing key of `bundle create` and `bundle sign`.
    #[arg(long = "key", id = "tls_key", global = true)]
    key: Option<PathBuf>,
    /// The cluster CA certificate.
    #[arg(long = "ca", id = "tls_ca", global = true)]
    ca: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct DataDirArg {
    /// The node's data directory.
    #[arg(long, env = "OUTPOST_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct Addrs {
    /// This node's name (unique in the cluster).
    #[arg(long)]
    name: String,
    /// HTTPS API address (agents, admins).
    #[arg(long)]
    api_addr: String,
    /// Raft peer address.
    #[arg(long)]
    peer_addr: String,
    /// Raft heartbeat interval in ms.
    #[arg(long, default_value_t = RaftTuning::default().heartbeat_ms)]
    heartbeat_ms: u64,
    /// Election timeout range in ms, as MIN-MAX.
    #[arg(long, default_value = "150-300")]
    election_timeout_ms: String,
    /// Build a snapshot after this many entries.
    #[arg(long, default_value_t = RaftTuning::default().snapshot_after_entries)]
    snapshot_after: u64,
}

impl Addrs {
    fn tuning(&self) -> Result<RaftTuning> {
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
struct NetArgs {
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
    fn options(&self) -> Result<node::NetOptions> {
        for p in &self.static_peers {
            outpost_discovery::PeerSpec::parse(p)
                .with_context(|| format!("--static-peer {p:?}"))?;
        }
        Ok(node::NetOptions {
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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a new cluster: its CA, this first node, and join/enrollment tokens.
    Init {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        addrs: Addrs,
        /// Public key (KEY.pub from `outpost bundle keygen`) trusted to sign bundles
        /// (repeatable). Without it the cluster accepts no bundle.
        #[arg(long = "bundle-trust")]
        bundle_trust: Vec<PathBuf>,
        /// Signatures a bundle needs, of the --bundle-trust keys (default 1).
        #[arg(long = "bundle-threshold")]
        bundle_threshold: Option<usize>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Join an existing cluster with a node token.
    Join {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        addrs: Addrs,
        #[command(flatten)]
        net: NetArgs,
        #[arg(long)]
        token: String,
        /// A node's API address to contact (repeatable); default: the addresses in the token,
        /// the --static-peer entries, then nodes of the token's cluster found by mDNS.
        #[arg(long)]
        peer: Vec<String>,
        /// How long to browse mDNS for a node of the token's cluster.
        #[arg(long, default_value = "5s")]
        discover_timeout: humantime::Duration,
    },
    /// List the Outpost nodes visible on the network (mDNS and --static-peer entries).
    Discover {
        /// Browse this long: mDNS answers trickle in, there is no "complete" signal.
        #[arg(long, default_value = "3s")]
        timeout: humantime::Duration,
        /// Only nodes of this cluster id.
        #[arg(long)]
        cluster: Option<String>,
        /// Use mDNS only on this interface (repeatable).
        #[arg(long = "mdns-interface", value_name = "IF")]
        mdns_interfaces: Vec<String>,
        /// Also list this node API address (repeatable).
        #[arg(long = "static-peer", value_name = "HOST:PORT")]
        static_peers: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run the node in the foreground (SIGTERM stops it cleanly).
    Serve {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Show this node's view of the cluster.
    Status {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Join and enrollment tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Cluster nodes.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Configuration key/values, scoped global < group < client.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// The hash-chained audit log.
    Audit {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// The client agent on a managed machine.
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
    },
    /// Enrolled clients.
    Client {
        #[command(subcommand)]
        cmd: ClientCmd,
    },
    /// Client inventory: query by fact, show one client's facts and changes.
    Inventory {
        #[command(subcommand)]
        cmd: InventoryCmd,
    },
    /// Administrator certificates for remote administration (--server).
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Signed offline bundles: authoring (keygen, create, sign, inspect, verify) and, on a
    /// node's host, import and list.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCmd,
    },
    /// Artifacts from imported bundles assigned to groups of clients.
    Deployment {
        #[command(subcommand)]
        cmd: DeploymentCmd,
    },
    /// Start a three-node cluster on 127.0.0.1 in a temporary directory and show it working.
    Demo {
        /// Exit after the walk-through instead of running until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DeploymentCmd {
    /// Assign an artifact (NAME or NAME@VERSION, the bundle's channel version; default the
    /// newest) to a group (`all` = every client). Prints the deployment id.
    Create {
        #[arg(long)]
        artifact: String,
        #[arg(long)]
        group: String,
        /// Choose the id (default: generated).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Every deployment.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// One deployment with each client's result, and who has not reported yet.
    Status {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BundleCmd {
    /// Make an Ed25519 signing key: KEY (secret, mode 0600) and KEY.pub.
    Keygen {
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Build and sign a bundle from a TOML spec (payload paths relative to the spec);
    /// `--key KEY` is the signing key.
    Create {
        #[arg(long)]
        spec: PathBuf,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Add the signature of `--key KEY` to a bundle (m-of-n thresholds).
    Sign { file: PathBuf },
    /// Show a bundle's manifest and signers (signatures not checked).
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle against trusted public keys: signatures, expiry, every payload's hash.
    Verify {
        file: PathBuf,
        /// Trusted public key (repeatable).
        #[arg(long = "trust")]
        trust: Vec<PathBuf>,
        /// Signatures needed (default 1).
        #[arg(long)]
        threshold: Option<usize>,
        /// Also check the bundle targets this cluster id.
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Import a bundle on this node's host: verify, store, commit through Raft.
    Import {
        file: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Every imported bundle, its payloads, and which nodes hold each blob.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Print a new token (only the token, on stdout).
    Create {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, value_parser = ["node", "client"])]
        kind: String,
        /// Lifetime, e.g. 30m, 24h, 7d (default: 1h for node tokens, 24h for client tokens).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// Uses allowed (default: 1 for node tokens, unlimited within the lifetime for client
        /// tokens).
        #[arg(long)]
        uses: Option<u32>,
        /// Groups given to clients enrolled with it (client tokens).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Every token: id, kind, groups, uses left, expiry (never the secret).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Revoke a token: it can no longer join or enroll anything.
    Revoke {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Subcommand, Debug)]
enum AgentCmd {
    /// Enroll this machine with a client token.
    Enroll {
        #[arg(long)]
        token: String,
        /// A node's API address (repeatable); default: the addresses in the token.
        #[arg(long)]
        server: Vec<String>,
        #[arg(long)]
        state_dir: PathBuf,
        /// The name this machine reports (default: the system host name).
        #[arg(long)]
        hostname: Option<String>,
        /// With no --server and no address in the token: how long to browse mDNS for a node
        /// of the token's cluster.
        #[arg(long, default_value = "5s")]
        discover_timeout: humantime::Duration,
    },
    /// Sync once with the first node that answers and exit.
    Sync {
        #[arg(long, required = true)]
        once: bool,
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Sync every interval (with jitter) until stopped.
    Run {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, default_value = "60s")]
        interval: humantime::Duration,
    },
}

#[derive(Subcommand, Debug)]
enum ClientCmd {
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client: every node refuses its certificate once the revocation commits.
    Revoke {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Subcommand, Debug)]
enum InventoryCmd {
    /// Clients whose facts match PATH=VALUE (e.g. os.id=debian, packages.name=openssl).
    Query {
        fact: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// One client's latest facts and the history of what changed.
    Show {
        client: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Issue an admin certificate from this node's CA into DIR (admin.crt, admin.key, ca.crt).
    IssueCert {
        #[arg(long)]
        name: String,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Revoke every admin certificate named NAME issued until now (on every node as soon as
    /// the revocation commits); a certificate issued afterwards under the name works.
    Revoke {
        name: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
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

#[derive(Args, Debug, Clone)]
struct ScopeArgs {
    #[arg(long, conflicts_with = "client")]
    group: Option<String>,
    #[arg(long)]
    client: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
        match (&self.group, &self.client) {
            (Some(g), _) => Scope::Group(g.clone()),
            (None, Some(c)) => Scope::Client(c.clone()),
            (None, None) => Scope::Global,
        }
    }

    fn query(&self) -> String {
        match (&self.group, &self.client) {
            (Some(g), _) => format!("group={}", urlencode(g)),
            (None, Some(c)) => format!("client={}", urlencode(c)),
            (None, None) => String::new(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Print the value alone.
    Get {
        key: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Read through the leader's read index instead of this node's local state.
        #[arg(long)]
        linearizable: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
    Delete {
        key: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        dir: DataDirArg,
    },
    List {
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// A client's effective configuration (global < its groups < itself), as JSON.
    Effective {
        #[arg(long)]
        client: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Replicated writes/s through the API port (mTLS), spread over every member.
    Write {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        #[arg(long)]
        json: bool,
    },
    /// Writes/s without and then under an anonymous flood (enrollment requests of ~64 KiB and
    /// idle anonymous TLS connections against every member), and raft.db growth during a
    /// window of flood alone; one run, so the ratio compares like with like.
    Flood {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1024)]
        value_bytes: usize,
        #[arg(long, default_value_t = 200)]
        enroll_per_s: u32,
        #[arg(long, default_value_t = 3000)]
        idle: usize,
        /// Source address of the flood (e.g. 127.0.0.2 against a loopback cluster).
        #[arg(long)]
        from: Option<std::net::IpAddr>,
        #[arg(long)]
        json: bool,
    },
    /// Simulated agents (each enrolled with its own certificate, one keep-alive connection
    /// each) syncing their configuration; prints syncs/s and latency.
    Sync {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Each agent syncs once per interval; 0s = as fast as it can.
        #[arg(long, default_value = "0s")]
        interval: humantime::Duration,
        #[arg(long)]
        json: bool,
    },
    /// A bundle of --size-mib MiB: `outpost bundle import` time as a ratio to `sha256sum` of
    /// the same file, and the time until all three nodes of a temporary cluster hold it.
    Bundle {
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Where the bundle and the temporary cluster live (a disk, not tmpfs).
        #[arg(long, default_value = ".")]
        work_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Milliseconds from kill -9 of the leader to a write accepted by a survivor, on a
    /// temporary three-node cluster of real `outpost serve` processes.
    Failover {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Heartbeat interval of the temporary nodes, in ms.
        #[arg(long, default_value_t = RaftTuning::default().heartbeat_ms)]
        heartbeat_ms: u64,
        /// Election timeout range of the temporary nodes, MIN-MAX in ms.
        #[arg(long, default_value = "150-300")]
        election_timeout_ms: String,
        #[arg(long)]
        json: bool,
    },
}

impl Cli {
    pub fn is_long_running(&self) -> bool {
        matches!(
            self.command,
            Cmd::Serve { .. }
                | Cmd::Demo { .. }
                | Cmd::Agent {
                    cmd: AgentCmd::Run { .. }
                }
        )
    }
}

/// A time in ms since the epoch as RFC 3339 UTC, to the second.
pub(crate) fn format_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The node to talk to: the remote one named by --server, or the local socket.
fn api(remote: &Remote, dir: &DataDirArg) -> Result<ApiClient> {
    match &remote.server {
        None => Ok(local_client(&dir.data_dir)),
        Some(server) => {
            let read = |p: &Option<PathBuf>, what: &str| -> Result<String> {
                let p = p
                    .as_ref()
                    .with_context(|| format!("--{what} is required with --server"))?;
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
            };
            let ca = read(&remote.ca, "ca")?;
            let id = outpost_certs::TlsIdentity::from_pem(
                &read(&remote.cert, "cert")?,
                &read(&remote.key, "key")?,
                &ca,
            )?;
            let config = outpost_certs::client_config(&ca, Some(&id), &[b"http/1.1"])?;
            Ok(ApiClient::new(Endpoint::Tls {
                addr: server.clone(),
                config,
                server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
            }))
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let remote = cli.remote.clone();
    match cli.command {
        Cmd::Init {
            dir,
            addrs,
            net,
            bundle_trust,
            bundle_threshold,
        } => {
            let dd = DataDir::new(&dir.data_dir);
            let bundle_trust = bundle::initial_trust(&bundle_trust, bundle_threshold)?;
            let out = node::init(
                &dd,
                node::InitOptions {
                    name: addrs.name.clone(),
                    api_addr: addrs.api_addr.clone(),
                    peer_addr: addrs.peer_addr.clone(),
                    tuning: addrs.tuning()?,
                    bundle_trust,
                    net: net.options()?,
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
                node::INIT_NODE_TOKEN_USES
            );
            println!("next: outpost serve --data-dir {}", dir.data_dir.display());
        }
        Cmd::Join {
            dir,
            addrs,
            net,
            token,
            peer,
            discover_timeout,
        } => {
            let dd = DataDir::new(&dir.data_dir);
            let resp = node::join(
                &dd,
                node::JoinOptions {
                    name: addrs.name.clone(),
                    api_addr: addrs.api_addr.clone(),
                    peer_addr: addrs.peer_addr.clone(),
                    token,
                    peers: peer,
                    tuning: addrs.tuning()?,
                    net: net.options()?,
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
        }
        Cmd::Serve { dir } => node::serve(&DataDir::new(&dir.data_dir)).await?,
        Cmd::Discover {
            timeout,
            cluster,
            mdns_interfaces,
            static_peers,
            json,
        } => discover(timeout.into(), cluster, mdns_interfaces, static_peers, json).await?,
        Cmd::Status { dir, json } => {
            let s: StatusView = api(&remote, &dir)?
                .call(Method::GET, "/v1/status", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
        }
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    dir,
                    kind,
                    ttl,
                    uses,
                    groups,
                },
        } => {
            let node = kind == "node";
            let ttl = ttl
                .map(|t| t.as_secs())
                .unwrap_or(if node { 3600 } else { 24 * 3600 });
            let uses = uses.or(node.then_some(1));
            let req = TokenRequest {
                kind: kind.clone(),
                ttl_secs: ttl,
                uses,
                groups,
            };
            let r: TokenResponse = api(&remote, &dir)?
                .call(Method::POST, "/v1/tokens", Some(&req))
                .await?;
            // stdout carries only the token; what was made goes to stderr.
            eprintln!(
                "{kind} token {}: {}, expires {} (widen with --uses / --ttl)",
                r.id,
                match uses {
                    Some(1) => "1 use".to_string(),
                    Some(n) => format!("{n} uses"),
                    None => "unlimited uses".to_string(),
                },
                format_ms(r.expires_at_ms)
            );
            println!("{}", r.token);
        }
        Cmd::Token {
            cmd: TokenCmd::List { json, dir },
        } => {
            let tokens: Vec<outpost_storage::TokenRecord> = api(&remote, &dir)?
                .call(Method::GET, "/v1/tokens", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!(
                    "{:<18} {:<7} {:<10} {:<26} {:<8} GROUPS",
                    "ID", "KIND", "USES LEFT", "EXPIRES", "STATE"
                );
                let now = outpost_raft::now_ms();
                for t in tokens {
                    let state = if t.revoked {
                        "revoked"
                    } else if t.expires_at_ms <= now {
                        "expired"
                    } else if t.uses_left == Some(0) {
                        "used"
                    } else {
                        "valid"
                    };
                    println!(
                        "{:<18} {:<7} {:<10} {:<26} {:<8} {}",
                        t.id,
                        t.kind.as_str(),
                        t.uses_left
                            .map(|u| u.to_string())
                            .unwrap_or_else(|| "unlimited".into()),
                        format_ms(t.expires_at_ms),
                        state,
                        t.groups.join(",")
                    );
                }
            }
        }
        Cmd::Token {
            cmd: TokenCmd::Revoke { id, dir },
        } => {
            let _: serde_json::Value = api(&remote, &dir)?
                .call(
                    Method::POST,
                    &format!("/v1/tokens/{}/revoke", urlencode(&id)),
                    NO_BODY,
                )
                .await?;
            println!("token {id} revoked");
        }
        Cmd::Admin {
            cmd: AdminCmd::Revoke { name, dir },
        } => {
            let _: serde_json::Value = api(&remote, &dir)?
                .call(
                    Method::POST,
                    &format!("/v1/admins/{}/revoke", urlencode(&name)),
                    NO_BODY,
                )
                .await?;
            println!(
                "admin certificates of {name} issued until now are revoked on every node; issue a new one with: outpost admin issue-cert --name {name} -o DIR"
            );
        }
        Cmd::Node {
            cmd: NodeCmd::List { dir, json },
        } => {
            let nodes: Vec<NodeRecord> = api(&remote, &dir)?
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
        Cmd::Node {
            cmd: NodeCmd::Remove { id, dir },
        } => {
            let _: serde_json::Value = api(&remote, &dir)?
                .call(Method::DELETE, &format!("/v1/nodes/{id}"), NO_BODY)
                .await?;
            println!("node {id} removed");
        }
        Cmd::Config { cmd } => config(&remote, cmd).await?,
        Cmd::Audit { dir, limit, json } => {
            let path = format!("/v1/audit?limit={limit}");
            let recs: Vec<outpost_storage::AuditRecord> = api(&remote, &dir)?
                .call(Method::GET, &path, NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&recs)?);
            } else {
                for r in recs {
                    println!(
                        "{:>6} {} {:<14} {:<16} {:<24} {}",
                        r.seq,
                        fmt_ms(r.at_ms),
                        r.actor,
                        r.action,
                        r.target,
                        r.outcome
                    );
                }
            }
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Write {
                    dir,
                    clients,
                    seconds,
                    value_bytes,
                    json,
                },
        } => {
            let opts = crate::harness::bench::WriteBench {
                clients,
                seconds,
                value_bytes,
            };
            let report = crate::harness::bench::write(&DataDir::new(&dir.data_dir), opts).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Flood {
                    dir,
                    clients,
                    seconds,
                    value_bytes,
                    enroll_per_s,
                    idle,
                    from,
                    json,
                },
        } => {
            let opts = crate::harness::bench::FloodBench {
                write: crate::harness::bench::WriteBench {
                    clients,
                    seconds,
                    value_bytes,
                },
                enroll_per_s,
                idle,
                from,
            };
            let report = crate::harness::bench::flood(&DataDir::new(&dir.data_dir), opts).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Failover {
                    runs,
                    heartbeat_ms,
                    election_timeout_ms,
                    json,
                },
        } => {
            let node_args = vec![
                "--heartbeat-ms".to_string(),
                heartbeat_ms.to_string(),
                "--election-timeout-ms".to_string(),
                election_timeout_ms,
            ];
            let report = crate::harness::bench::failover(runs, node_args).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
        }
        Cmd::Demo { exit } => crate::harness::demo::run(exit).await?,
        Cmd::Bench {
            cmd:
                BenchCmd::Sync {
                    dir,
                    clients,
                    seconds,
                    interval,
                    json,
                },
        } => {
            let opts = crate::harness::bench::SyncBench {
                clients,
                seconds,
                interval: interval.into(),
            };
            let report = crate::harness::bench::sync(&DataDir::new(&dir.data_dir), opts).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Bundle {
                    size_mib,
                    work_dir,
                    json,
                },
        } => {
            let report = crate::harness::bench::bundle(size_mib, &work_dir).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
        }
        Cmd::Agent { cmd } => agent(cmd).await?,
        Cmd::Bundle { cmd } => bundle(&remote, cmd).await?,
        Cmd::Deployment { cmd } => match cmd {
            DeploymentCmd::Create {
                artifact,
                group,
                id,
                dir,
            } => deployment::create_cmd(&api(&remote, &dir)?, &artifact, &group, id).await?,
            DeploymentCmd::List { dir, json } => {
                deployment::list_cmd(&api(&remote, &dir)?, json).await?
            }
            DeploymentCmd::Status { id, dir, json } => {
                deployment::status_cmd(&api(&remote, &dir)?, &id, json).await?
            }
        },
        Cmd::Client { cmd } => client(&remote, cmd).await?,
        Cmd::Inventory { cmd } => inventory(&remote, cmd).await?,
        Cmd::Admin {
            cmd:
                AdminCmd::IssueCert {
                    name,
                    out,
                    days,
                    dir,
                },
        } => {
            let dd = DataDir::new(&dir.data_dir);
            dd.check()?;
            let ca_pem = dd.read(&dd.ca_cert())?;
            let ca = outpost_certs::CertAuthority::from_pem(&ca_pem, &dd.read(&dd.ca_key())?)?;
            let validity = outpost_certs::Validity::days_from(outpost_raft::now_ms() / 1000, days);
            let (cert, key) =
                ca.issue_with_new_key(&outpost_certs::Role::Admin(name.clone()), &validity)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            outpost_certs::write_public_file(&out.join("admin.crt"), cert.as_bytes())?;
            outpost_certs::write_secret_file(&out.join("admin.key"), key.as_bytes())?;
            outpost_certs::write_public_file(&out.join("ca.crt"), ca_pem.as_bytes())?;
            println!(
                "admin certificate for {name} in {}: use --server HOST:PORT --cert {0}/admin.crt --key {0}/admin.key --ca {0}/ca.crt",
                out.display()
            );
        }
    }
    Ok(())
}

/// `outpost discover`: one browse, then a table (or JSON) of what answered.
async fn discover(
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

async fn config(remote: &Remote, cmd: ConfigCmd) -> Result<()> {
    match cmd {
        ConfigCmd::Set {
            key,
            value,
            scope,
            dir,
        } => {
            let req = ConfigSetRequest {
                key,
                value,
                scope: scope.scope(),
            };
            let r: ConfigSetResponse = api(remote, &dir)?
                .call(Method::PUT, "/v1/config", Some(&req))
                .await?;
            println!("version {}", r.version);
        }
        ConfigCmd::Get {
            key,
            scope,
            linearizable,
            dir,
        } => {
            let mut q = scope.query();
            if linearizable {
                q = if q.is_empty() {
                    "linearizable=true".into()
                } else {
                    format!("{q}&linearizable=true")
                };
            }
            let path = format!("/v1/config/{}?{q}", urlencode(&key));
            let e: ConfigEntry = api(remote, &dir)?.call(Method::GET, &path, NO_BODY).await?;
            println!("{}", e.value);
        }
        ConfigCmd::Delete { key, scope, dir } => {
            let path = format!("/v1/config/{}?{}", urlencode(&key), scope.query());
            let _: serde_json::Value = api(remote, &dir)?
                .call(Method::DELETE, &path, NO_BODY)
                .await?;
            println!("deleted {key}");
        }
        ConfigCmd::Effective { client, dir } => {
            let path = format!("/v1/config-effective/{}", urlencode(&client));
            let map: std::collections::BTreeMap<String, String> =
                api(remote, &dir)?.call(Method::GET, &path, NO_BODY).await?;
            println!("{}", serde_json::to_string_pretty(&map)?);
        }
        ConfigCmd::List { scope, json, dir } => {
            let path = format!("/v1/config?{}", scope.query());
            let entries: Vec<ConfigEntry> =
                api(remote, &dir)?.call(Method::GET, &path, NO_BODY).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in entries {
                    let scope = match &e.scope {
                        Scope::Global => "global".to_string(),
                        Scope::Group(g) => format!("group:{g}"),
                        Scope::Client(c) => format!("client:{c}"),
                    };
                    println!("{:<20} {:<32} v{:<4} {}", scope, e.key, e.version, e.value);
                }
            }
        }
    }
    Ok(())
}

async fn bundle(remote: &Remote, cmd: BundleCmd) -> Result<()> {
    use crate::cli::bundle as bundles;
    match cmd {
        BundleCmd::Keygen { out } => bundles::keygen(&out),
        BundleCmd::Create { spec, out } => {
            let key = remote
                .key
                .clone()
                .context("bundle create needs the signing key: --key KEY")?;
            bundles::create(&spec, &[key], &out)
        }
        BundleCmd::Sign { file } => {
            let key = remote
                .key
                .clone()
                .context("bundle sign needs the signing key: --key KEY")?;
            bundles::sign(&file, &key)
        }
        BundleCmd::Inspect { file, json } => bundles::inspect(&file, json),
        BundleCmd::Verify {
            file,
            trust,
            threshold,
            cluster,
            json,
        } => bundles::verify(&file, &trust, threshold, cluster, json),
        BundleCmd::Import { file, dir } => {
            if remote.server.is_some() {
                bail!(
                    "bundle import runs on a node's host (its blob store is local); drop --server"
                );
            }
            bundles::check_node_dir(&dir.data_dir)?;
            bundles::import(&api(remote, &dir)?, &dir.data_dir, &file).await
        }
        BundleCmd::List { dir, json } => bundles::list_cmd(&api(remote, &dir)?, json).await,
    }
}

async fn agent(cmd: AgentCmd) -> Result<()> {
    match cmd {
        AgentCmd::Enroll {
            token,
            server,
            state_dir,
            hostname,
            discover_timeout,
        } => {
            let hostname = match hostname {
                Some(h) => h,
                None => crate::agent::system_hostname(),
            };
            let r = crate::agent::enroll(
                &state_dir,
                &token,
                &server,
                &hostname,
                discover_timeout.into(),
            )
            .await?;
            println!(
                "enrolled as client {} of cluster {} (groups: {}); next: outpost agent run --state-dir {}",
                r.client_id,
                r.cluster_id,
                if r.groups.is_empty() {
                    "none".to_string()
                } else {
                    r.groups.join(", ")
                },
                state_dir.display()
            );
        }
        AgentCmd::Sync { once: _, state_dir } => {
            let r = crate::agent::sync_once(&state_dir).await?;
            println!(
                "synced with {}: {} configuration keys, inventory {}",
                r.server,
                r.config_keys,
                if r.inventory_uploaded {
                    "uploaded"
                } else {
                    "unchanged"
                }
            );
            for line in &r.deployments {
                println!("deployment {line}");
            }
            if let Some(serial) = &r.renewed {
                println!("certificate renewed: serial {serial}");
            }
        }
        AgentCmd::Run {
            state_dir,
            interval,
        } => crate::agent::run(&state_dir, interval.into()).await?,
    }
    Ok(())
}

async fn client(remote: &Remote, cmd: ClientCmd) -> Result<()> {
    match cmd {
        ClientCmd::List { dir, json } => {
            let list: Vec<outpost_storage::ClientRecord> = api(remote, &dir)?
                .call(Method::GET, "/v1/clients", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<16} {:<24} {:<20} {:<8} LAST SEEN",
                    "ID", "HOSTNAME", "GROUPS", "REVOKED"
                );
                for c in list {
                    let seen = c.last_seen.map(fmt_ms).unwrap_or_else(|| "never".into());
                    println!(
                        "{:<16} {:<24} {:<20} {:<8} {}",
                        c.id,
                        c.hostname,
                        c.groups.join(","),
                        c.revoked,
                        seen
                    );
                }
            }
        }
        ClientCmd::Show { id, dir, json } => {
            let c: outpost_storage::ClientRecord = api(remote, &dir)?
                .call(
                    Method::GET,
                    &format!("/v1/clients/{}", urlencode(&id)),
                    NO_BODY,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("client {} ({})", c.id, c.hostname);
                println!("groups: {}", c.groups.join(", "));
                println!("certificate serial: {}", c.cert_serial);
                println!("enrolled: {}", fmt_ms(c.enrolled_at_ms));
                println!(
                    "last seen: {}",
                    c.last_seen.map(fmt_ms).unwrap_or_else(|| "never".into())
                );
                println!("revoked: {}", c.revoked);
            }
        }
        ClientCmd::Revoke { id, dir } => {
            let path = format!("/v1/clients/{}/revoke", urlencode(&id));
            let _: serde_json::Value = api(remote, &dir)?
                .call(Method::POST, &path, NO_BODY)
                .await?;
            println!("client {id} revoked");
        }
    }
    Ok(())
}

async fn inventory(remote: &Remote, cmd: InventoryCmd) -> Result<()> {
    match cmd {
        InventoryCmd::Query {
            fact,
            group,
            json,
            dir,
        } => {
            let mut q = Vec::new();
            if let Some(f) = &fact {
                q.push(format!("fact={}", urlencode(f)));
            }
            if let Some(g) = &group {
                q.push(format!("group={}", urlencode(g)));
            }
            let path = format!("/v1/inventory?{}", q.join("&"));
            let found: Vec<crate::wire::InventoryMatch> =
                api(remote, &dir)?.call(Method::GET, &path, NO_BODY).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                for m in found {
                    println!(
                        "{:<16} {:<24} {}",
                        m.client_id,
                        m.hostname,
                        m.groups.join(",")
                    );
                }
            }
        }
        InventoryCmd::Show { client, json, dir } => {
            let path = format!("/v1/inventory/{}", urlencode(&client));
            let v: crate::wire::InventoryView =
                api(remote, &dir)?.call(Method::GET, &path, NO_BODY).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&v.inventory.facts)?);
                for h in &v.history {
                    println!("{} changed: {}", fmt_ms(h.at_ms), h.changed.join(", "));
                }
            }
        }
    }
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
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
