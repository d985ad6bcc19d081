//! `outpost client list | show | revoke`: enrolled clients, through the API.

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::{NO_BODY, urlencode};

#[derive(Subcommand, Debug)]
pub(super) enum ClientCmd {
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

pub(super) async fn run(remote: &Remote, cmd: ClientCmd) -> Result<()> {
    match cmd {
        ClientCmd::List { dir, json } => {
            let list: Vec<crate::wire::ClientRecord> = api(remote, &dir)?
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
                    let seen = c.last_seen.map(format_ms).unwrap_or_else(|| "never".into());
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
            let c: crate::wire::ClientRecord = api(remote, &dir)?
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
                println!("enrolled: {}", format_ms(c.enrolled_at_ms));
                println!(
                    "last seen: {}",
                    c.last_seen.map(format_ms).unwrap_or_else(|| "never".into())
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
