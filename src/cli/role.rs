//! `outpost role list | show | set`: people's roles, through the API. `admin issue-cert` and
//! `console user add` set a role the same way (`set`) before they make what they make.

use anyhow::{Context, Result};
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::{ApiClient, NO_BODY, urlencode};
use crate::wire::{RoleRequest, RoleView};

#[derive(Subcommand, Debug)]
pub(super) enum RoleCmd {
    /// Every name with a role, and every console account (an account without a role is an
    /// admin).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// One name's role and scope.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Set a name's role and scope on every node: its certificates and its console account
    /// hold it from their next request.
    Set {
        name: String,
        #[command(flatten)]
        grant: GrantArgs,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

/// A role and its scope, as `role set`, `admin issue-cert` and `console user add` take them.
#[derive(clap::Args, Debug, Clone)]
pub(super) struct GrantArgs {
    /// viewer (reads), operator (also deploys, labels and sets config) or admin (everything).
    #[arg(long, value_parser = ["viewer", "operator", "admin"])]
    pub role: String,
    /// Limit the person to the clients of a group or with a label: group:NAME or label:NAME
    /// (repeatable; any term reaches a client). None: the whole site. Never for an admin.
    #[arg(long = "scope", value_name = "group:G|label:L")]
    pub scopes: Vec<String>,
}

impl GrantArgs {
    fn request(&self) -> RoleRequest {
        RoleRequest {
            role: self.role.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

/// Sets `name`'s role through `client` and returns what the node recorded.
pub(super) async fn set(client: &ApiClient, name: &str, grant: &GrantArgs) -> Result<RoleView> {
    client
        .call(
            Method::PUT,
            &format!("/v1/roles/{}", urlencode(name)),
            Some(&grant.request()),
        )
        .await
}

/// `alice is an operator of label:line2`, `bob is a viewer of the whole site`, `carol is an
/// admin`.
pub(super) fn describe(v: &RoleView, verb: &str) -> String {
    let article = if v.role == "admin" || v.role == "operator" {
        "an"
    } else {
        "a"
    };
    if v.role == "admin" {
        format!("{} {verb} {article} admin", v.name)
    } else if v.scopes.is_empty() {
        format!("{} {verb} {article} {} of the whole site", v.name, v.role)
    } else {
        format!(
            "{} {verb} {article} {} of {}",
            v.name,
            v.role,
            v.scopes.join(", ")
        )
    }
}

fn scope_column(v: &RoleView) -> String {
    if v.scopes.is_empty() {
        "-".to_owned()
    } else {
        v.scopes.join(",")
    }
}

fn origin(v: &RoleView) -> String {
    match (&v.updated_at_ms, &v.updated_by) {
        (Some(at), Some(by)) => format!("set {} by {by}", format_ms(*at)),
        _ if v.implicit => "never set (admin)".to_owned(),
        _ => String::new(),
    }
}

pub(super) async fn run(remote: &Remote, cmd: RoleCmd) -> Result<()> {
    match cmd {
        RoleCmd::List { json, dir } => {
            let views: Vec<RoleView> = api(remote, &dir)?
                .call(Method::GET, "/v1/roles", NO_BODY)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<9} {:<30} {:<8} SET",
                "NAME", "ROLE", "SCOPE", "CONSOLE"
            );
            for v in &views {
                println!(
                    "{:<20} {:<9} {:<30} {:<8} {}",
                    v.name,
                    v.role,
                    scope_column(v),
                    if v.console_account { "yes" } else { "no" },
                    origin(v)
                );
            }
        }
        RoleCmd::Show { name, json, dir } => {
            let v: RoleView = api(remote, &dir)?
                .call(
                    Method::GET,
                    &format!("/v1/roles/{}", urlencode(&name)),
                    NO_BODY,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("{}", describe(&v, "is"));
            println!(
                "console account: {}",
                if v.console_account { "yes" } else { "no" }
            );
            println!("{}", origin(&v));
        }
        RoleCmd::Set { name, grant, dir } => {
            let v = set(&api(remote, &dir)?, &name, &grant)
                .await
                .with_context(|| format!("setting the role of {name}"))?;
            println!("{} on every node", describe(&v, "is now"));
        }
    }
    Ok(())
}
