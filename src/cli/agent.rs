//! `outpost agent enroll | sync --once | run`: the client agent's commands; the agent itself
//! is `crate::agent`.

use std::path::PathBuf;

use anyhow::Result;
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
