//! `outpost token create | list | revoke`: join and enrollment tokens, through the API.

use anyhow::Result;
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::{NO_BODY, urlencode};
use crate::wire::{TokenRequest, TokenResponse};

#[derive(Subcommand, Debug)]
pub(super) enum TokenCmd {
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

pub(super) async fn run(remote: &Remote, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            dir,
            kind,
            ttl,
            uses,
            groups,
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
            let r: TokenResponse = api(remote, &dir)?
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
        TokenCmd::List { json, dir } => {
            let tokens: Vec<crate::wire::TokenRecord> = api(remote, &dir)?
                .call(Method::GET, "/v1/tokens", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!(
                    "{:<18} {:<7} {:<10} {:<26} {:<8} GROUPS",
                    "ID", "KIND", "USES LEFT", "EXPIRES", "STATE"
                );
                let now = crate::shared::now_ms();
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
        TokenCmd::Revoke { id, dir } => {
            let _: serde_json::Value = api(remote, &dir)?
                .call(
                    Method::POST,
                    &format!("/v1/tokens/{}/revoke", urlencode(&id)),
                    NO_BODY,
                )
                .await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}
