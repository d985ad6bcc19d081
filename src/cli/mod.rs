//! The command line: the `Cli` type, the options every command shares (`--server` and its
//! certificate, `--data-dir`), and the dispatch to one file per noun, which owns that noun's
//! arguments and printing (`node`: init, join, discover, status, node; `token`, `admin`,
//! `config`, `audit`, `client`, `inventory`, `bundle`, `deployment`, `agent`, `bench`,
//! `console`, `role`, `recovery`: backup, restore, recover; `backup`: backup schedule and verify;
//! `upgrade`: the rolling upgrade; `doctor`: the site's check and its alert rules).
//! Commands speak to a node through `crate::shared::client` with `crate::wire` bodies, or
//! call start-up (`crate::node`), the agent (`crate::agent`) or the harness.

mod admin;
mod agent;
mod audit;
mod backup;
mod bench;
mod bundle;
mod client;
mod config;
mod console;
mod deployment;
mod doctor;
mod inventory;
mod node;
mod recovery;
mod role;
mod token;
mod upgrade;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::shared::client::{ApiClient, Endpoint, local_client};
use crate::shared::datadir::DataDir;

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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a new cluster: its CA, this first node, and join/enrollment tokens.
    Init {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        addrs: node::Addrs,
        /// Public key (KEY.pub from `outpost bundle keygen`) trusted to sign bundles
        /// (repeatable). Without it the cluster accepts no bundle.
        #[arg(long = "bundle-trust")]
        bundle_trust: Vec<PathBuf>,
        /// Signatures a bundle needs, of the --bundle-trust keys (default 1).
        #[arg(long = "bundle-threshold")]
        bundle_threshold: Option<usize>,
        #[command(flatten)]
        net: node::NetArgs,
    },
    /// Join an existing cluster with a node token.
    Join {
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        addrs: node::Addrs,
        #[command(flatten)]
        net: node::NetArgs,
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
        cmd: token::TokenCmd,
    },
    /// Cluster nodes.
    Node {
        #[command(subcommand)]
        cmd: node::NodeCmd,
    },
    /// Configuration key/values, scoped global < group < client.
    Config {
        #[command(subcommand)]
        cmd: config::ConfigCmd,
    },
    /// The hash-chained audit log (the newest records; `audit verify` checks the chain, `audit
    /// export` writes records with their hashes, `audit checkpoint` shows the chain's base).
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        cmd: Option<audit::AuditCmd>,
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only the records of one person (NAME: their certificate and console records,
        /// whatever role they held) or of one actor (`local-admin`, `node:3`, `admin:NAME`).
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// People's roles: viewer, operator or admin, each limited to a scope of groups and
    /// labels or not (a name never set is an admin).
    Role {
        #[command(subcommand)]
        cmd: role::RoleCmd,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// The client agent on a managed machine.
    Agent {
        #[command(subcommand)]
        cmd: agent::AgentCmd,
    },
    /// Enrolled clients.
    Client {
        #[command(subcommand)]
        cmd: client::ClientCmd,
    },
    /// Client inventory: query by fact, show one client's facts and changes.
    Inventory {
        #[command(subcommand)]
        cmd: inventory::InventoryCmd,
    },
    /// Administrator certificates for remote administration (--server).
    Admin {
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
    /// Signed offline bundles: authoring (keygen, create, sign, inspect, verify) and, on a
    /// node's host, import and list.
    Bundle {
        #[command(subcommand)]
        cmd: bundle::BundleCmd,
    },
    /// Artifacts from imported bundles assigned to groups of clients.
    Deployment {
        #[command(subcommand)]
        cmd: deployment::DeploymentCmd,
    },
    /// Copy the replicated state at one applied entry into a backup file (from this host's
    /// node, or the one named by --server). With --passphrase-file the CA key is included,
    /// sealed; no other private key is ever in a backup. `backup schedule` makes the node
    /// write them itself; `backup verify FILE` checks one.
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        #[command(subcommand)]
        cmd: Option<backup::BackupCmd>,
        #[command(flatten)]
        dir: DataDirArg,
        /// The backup file to write (must not exist).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// A file whose first line (12 characters or more) seals the CA key into the backup.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Make a new one-node cluster from a backup file in a new data directory (the node must
    /// not run yet). Other nodes then join it with new tokens.
    Restore {
        /// The backup file.
        file: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
        #[command(flatten)]
        addrs: node::Addrs,
        #[command(flatten)]
        net: node::NetArgs,
        /// Opens the CA key sealed in the backup (the same file given to `backup`).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Make a new CA instead of using the backup's (every client must enroll again).
        #[arg(long)]
        new_ca: bool,
        /// The cluster's CA certificate (its ca.crt, kept apart from the backup): the backup
        /// must be signed by that CA and unchanged since, or nothing is restored. Without it
        /// the file is trusted as it is.
        #[arg(long, value_name = "CA_CRT")]
        expect_ca: Option<PathBuf>,
    },
    /// On a stopped node, after the cluster lost its quorum for good: make this node the only
    /// member, keeping every entry it holds.
    Recover {
        #[command(flatten)]
        dir: DataDirArg,
        /// Required: says that the other nodes are lost and this node goes on alone.
        #[arg(long)]
        force_new_cluster: bool,
    },
    /// Rolling upgrades: a bundle's outpost-release payload, one node at a time.
    Upgrade {
        #[command(subcommand)]
        cmd: upgrade::UpgradeCmd,
    },
    /// The web console: one-time sign-in links, operator accounts and sessions.
    Console {
        #[command(subcommand)]
        cmd: console::ConsoleCmd,
    },
    /// Check what an operator should worry about (quorum, readiness, lag, clocks,
    /// certificates, disks, versions, clients, rollouts, backups); exit 0 when all is well,
    /// 1 with warnings, 2 with problems.
    Doctor {
        #[command(flatten)]
        dir: DataDirArg,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// Print the Prometheus alert rules of the same checks instead.
        #[arg(long)]
        prometheus_rules: bool,
    },
    /// Start a three-node cluster on 127.0.0.1 in a temporary directory and show it working.
    Demo {
        /// Exit after the walk-through instead of running until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
}

impl Cli {
    pub fn is_long_running(&self) -> bool {
        matches!(
            self.command,
            Cmd::Serve { .. }
                | Cmd::Demo { .. }
                | Cmd::Agent {
                    cmd: agent::AgentCmd::Run { .. }
                }
        )
    }
}

use crate::shared::text::format_ms;

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
    let remote = &cli.remote;
    match cli.command {
        Cmd::Init {
            dir,
            addrs,
            net,
            bundle_trust,
            bundle_threshold,
        } => node::init(dir, addrs, net, bundle_trust, bundle_threshold).await,
        Cmd::Join {
            dir,
            addrs,
            net,
            token,
            peer,
            discover_timeout,
        } => node::join(dir, addrs, net, token, peer, discover_timeout).await,
        Cmd::Serve { dir } => crate::node::serve(&DataDir::new(&dir.data_dir)).await,
        Cmd::Discover {
            timeout,
            cluster,
            mdns_interfaces,
            static_peers,
            json,
        } => node::discover(timeout.into(), cluster, mdns_interfaces, static_peers, json).await,
        Cmd::Status { dir, json } => node::status(remote, dir, json).await,
        Cmd::Node { cmd } => node::run(remote, cmd).await,
        Cmd::Token { cmd } => token::run(remote, cmd).await,
        Cmd::Admin { cmd } => admin::run(remote, cmd).await,
        Cmd::Config { cmd } => config::run(remote, cmd).await,
        Cmd::Audit { cmd: Some(cmd), .. } => audit::command(remote, cmd).await,
        Cmd::Audit {
            cmd: None,
            dir,
            limit,
            actor,
            json,
        } => audit::run(remote, dir, limit, actor, json).await,
        Cmd::Role { cmd } => role::run(remote, cmd).await,
        Cmd::Client { cmd } => client::run(remote, cmd).await,
        Cmd::Inventory { cmd } => inventory::run(remote, cmd).await,
        Cmd::Bundle { cmd } => bundle::run(remote, cmd).await,
        Cmd::Deployment { cmd } => deployment::run(remote, cmd).await,
        Cmd::Agent { cmd } => agent::run(cmd).await,
        Cmd::Bench { cmd } => bench::run(cmd).await,
        Cmd::Backup { cmd: Some(cmd), .. } => backup::run(cmd).await,
        Cmd::Backup {
            cmd: None,
            dir,
            output,
            passphrase_file,
        } => {
            let output = output.context(
                "give the file to write (outpost backup -o FILE), or a subcommand: schedule, verify",
            )?;
            recovery::backup(remote, dir, output, passphrase_file).await
        }
        Cmd::Restore {
            file,
            dir,
            addrs,
            net,
            passphrase_file,
            new_ca,
            expect_ca,
        } => recovery::restore(file, dir, addrs, net, passphrase_file, new_ca, expect_ca).await,
        Cmd::Recover {
            dir,
            force_new_cluster,
        } => recovery::recover(dir, force_new_cluster).await,
        Cmd::Upgrade { cmd } => upgrade::run(remote, cmd).await,
        Cmd::Console { cmd } => console::run(remote, cmd).await,
        Cmd::Doctor {
            dir,
            json,
            prometheus_rules,
        } => doctor::run(remote, dir, json, prometheus_rules).await,
        Cmd::Demo { exit } => crate::harness::demo::run(exit).await,
    }
}
