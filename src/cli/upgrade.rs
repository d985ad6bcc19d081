//! `outpost upgrade status [--json]`: the current or last rolling upgrade, and what every
//! node runs.

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api};
use crate::shared::client::NO_BODY;
use crate::shared::text::format_ms;
use crate::wire::{UpgradeStart, UpgradeView};

#[derive(Subcommand, Debug)]
pub(super) enum UpgradeCmd {
    /// Roll the nodes to the release of an imported bundle: one imported with `--no-roll`,
    /// or again after a roll stopped and its cause was fixed.
    Start {
        /// The bundle's id (`outpost bundle list`).
        bundle: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// The roll (a release imported in a bundle, rolled one node at a time) and each node's
    /// version and executable SHA-256.
    Status {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(remote: &Remote, cmd: UpgradeCmd) -> Result<()> {
    match cmd {
        UpgradeCmd::Start { bundle, dir } => {
            let v: UpgradeView = api(remote, &dir)?
                .call(
                    Method::POST,
                    "/v1/upgrade",
                    Some(&UpgradeStart { bundle_id: bundle }),
                )
                .await?;
            if let Some(r) = &v.roll {
                println!(
                    "roll to release {} ({}): {}; follow it with: outpost upgrade status",
                    r.sha256, r.name, r.state
                );
            }
        }
        UpgradeCmd::Status { dir, json } => {
            let v: UpgradeView = api(remote, &dir)?
                .call(Method::GET, "/v1/upgrade", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            match &v.roll {
                None => println!("no rolling upgrade has run"),
                Some(r) => {
                    println!(
                        "roll to release {} ({} from bundle {}, {} bytes): {}",
                        r.sha256, r.name, r.bundle_id, r.size, r.state
                    );
                    println!(
                        "  started {}, last step {}",
                        format_ms(r.started_at_ms),
                        format_ms(r.updated_at_ms)
                    );
                    if let Some(n) = r.node {
                        println!("  switching now: node {n}");
                    }
                    if !r.reason.is_empty() {
                        println!("  stopped: {}", r.reason);
                    }
                }
            }
            println!(
                "{:<4} {:<16} {:<10} EXECUTABLE SHA-256",
                "ID", "NAME", "VERSION"
            );
            for n in &v.nodes {
                let mark = match &v.roll {
                    Some(r) if r.sha256 == n.binary_sha256 => " (release)",
                    _ => "",
                };
                println!(
                    "{:<4} {:<16} {:<10} {}{mark}",
                    n.id, n.name, n.version, n.binary_sha256
                );
            }
        }
    }
    Ok(())
}
