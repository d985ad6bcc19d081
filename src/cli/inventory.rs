//! `outpost inventory query | show`: client facts, through the API.

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::{NO_BODY, urlencode};

#[derive(Subcommand, Debug)]
pub(super) enum InventoryCmd {
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

pub(super) async fn run(remote: &Remote, cmd: InventoryCmd) -> Result<()> {
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
                    println!("{} changed: {}", format_ms(h.at_ms), h.changed.join(", "));
                }
            }
        }
    }
    Ok(())
}
