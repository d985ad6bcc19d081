//! `outpost agent enroll | sync --once | run | install | status`: the client agent's commands;
//! the agent itself is `crate::agent`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum AgentCmd {
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
    /// Install a bundle from a file with no node: verified with the bundle trust pinned at
    /// enrollment; artifacts go to their handlers, an outpost release replaces this binary.
    /// The results reach the cluster at the next sync (inventory fact offline_installs).
    Install {
        file: PathBuf,
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Show the agent's state (identity, pinned bundle trust, offline installs), checking
    /// that it reads; no node is contacted.
    Status {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(cmd: AgentCmd) -> Result<()> {
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
            let exe = crate::agent::own_exe()?;
            let r = crate::agent::sync_once(&state_dir, &exe, &mut Default::default()).await?;
            if let Some(what) = &r.recovered {
                println!("{what}");
            }
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
            if let Some(v) = r.trust_pinned {
                println!("bundle trust pinned: version {v}");
            }
        }
        AgentCmd::Install { file, state_dir } => {
            let r = crate::agent::install(&state_dir, &file).await?;
            if let Some(id) = &r.already {
                println!("bundle {id} is already installed here: nothing to do");
                return Ok(());
            }
            for n in &r.notes {
                println!("{n}");
            }
            for i in &r.results {
                println!(
                    "{} {}@{} ({}): {} ({})",
                    i.payload,
                    i.channel,
                    i.version,
                    i.kind,
                    i.status,
                    i.detail.lines().last().unwrap_or("")
                );
            }
            let failed = r.results.iter().filter(|i| i.status == "failed").count();
            if failed > 0 {
                bail!(
                    "{failed} of {} payload(s) failed; the results reach the cluster at the next sync",
                    r.results.len()
                );
            }
            println!("the results reach the cluster at the next sync");
        }
        AgentCmd::Status { state_dir, json } => {
            let s = crate::agent::status(&state_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            println!("client {} of cluster {}", s.client_id, s.cluster_id);
            println!("nodes: {}", s.servers.join(", "));
            println!(
                "certificate valid until {}",
                crate::shared::text::format_ms(s.cert_not_after.saturating_mul(1000))
            );
            match s.bundle_trust_version {
                Some(v) => println!("bundle trust: version {v}"),
                None => println!("bundle trust: none pinned (agent install needs one sync)"),
            }
            for (c, v) in &s.channels {
                println!("channel {c}: version {v} installed from a file");
            }
            println!(
                "offline installs kept: {} (reported as inventory fact offline_installs)",
                s.offline_installs.len()
            );
            if let Some(p) = &s.pending_upgrade {
                println!("upgrade pending: {} to sha256 {}", p.origin, p.sha256);
            }
            println!("executable: {}", s.exe.display());
            let failing: Vec<_> = s.checks.iter().filter(|(_, r)| !r.ok).collect();
            println!(
                "health checks at the last sync: {}, failing: {}",
                s.checks.len(),
                failing.len()
            );
            for (name, r) in failing {
                println!("  {name}: {}", r.detail);
            }
        }
        AgentCmd::Run {
            state_dir,
            interval,
        } => crate::agent::run(&state_dir, interval.into()).await?,
    }
    Ok(())
}
