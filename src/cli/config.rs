//! `outpost config set | get | delete | list | effective`: configuration keys scoped
//! global < group < client, through the API.

use crate::wire::{ConfigEntry, Scope};
use anyhow::Result;
use clap::{Args, Subcommand};
use hyper::Method;

use super::{DataDirArg, Remote, api};
use crate::shared::client::{NO_BODY, urlencode};
use crate::wire::{ConfigSetRequest, ConfigSetResponse};

#[derive(Args, Debug, Clone)]
pub(super) struct ScopeArgs {
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
pub(super) enum ConfigCmd {
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

pub(super) async fn run(remote: &Remote, cmd: ConfigCmd) -> Result<()> {
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
