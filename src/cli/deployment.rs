//! `outpost deployment create | list | status`: artifacts from imported bundles assigned to
//! groups of clients, through the API.

use crate::wire::DeploymentRecord;
use anyhow::{Context, Result, bail};
use hyper::Method;

use clap::Subcommand;

use super::{DataDirArg, Remote, api};
use crate::shared::client::{ApiClient, NO_BODY, urlencode};
use crate::wire::{DeploymentRequest, DeploymentStatusView};

#[derive(Subcommand, Debug)]
pub(super) enum DeploymentCmd {
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

pub(super) async fn run(remote: &Remote, cmd: DeploymentCmd) -> Result<()> {
    match cmd {
        DeploymentCmd::Create {
            artifact,
            group,
            id,
            dir,
        } => create_cmd(&api(remote, &dir)?, &artifact, &group, id).await?,
        DeploymentCmd::List { dir, json } => list_cmd(&api(remote, &dir)?, json).await?,
        DeploymentCmd::Status { id, dir, json } => {
            status_cmd(&api(remote, &dir)?, &id, json).await?
        }
    };
    Ok(())
}

/// `NAME[@VERSION]` as `deployment create --artifact` takes it. Pure.
pub fn parse_artifact(s: &str) -> Result<(String, Option<u64>)> {
    match s.split_once('@') {
        None if !s.is_empty() => Ok((s.to_string(), None)),
        Some((name, v)) if !name.is_empty() => {
            let v = v
                .parse()
                .with_context(|| format!("--artifact {s}: the version after @ must be a number"))?;
            Ok((name.to_string(), Some(v)))
        }
        _ => bail!("--artifact must be NAME or NAME@VERSION"),
    }
}

pub async fn create_cmd(
    api: &ApiClient,
    artifact: &str,
    group: &str,
    id: Option<String>,
) -> Result<()> {
    let (name, version) = parse_artifact(artifact)?;
    let d: DeploymentRecord = api
        .call(
            Method::POST,
            "/v1/deployments",
            Some(&DeploymentRequest {
                artifact: name,
                version,
                group: group.to_string(),
                id,
            }),
        )
        .await?;
    println!(
        "{}  {}@{} (sha256 {}) to group {}",
        d.id,
        d.artifact,
        d.version,
        &d.sha256[..16.min(d.sha256.len())],
        d.group
    );
    Ok(())
}

pub async fn list_cmd(api: &ApiClient, json: bool) -> Result<()> {
    let v: Vec<DeploymentRecord> = api.call(Method::GET, "/v1/deployments", NO_BODY).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if v.is_empty() {
        println!("no deployments");
    } else {
        for d in v {
            println!(
                "{:<14} {}@{:<6} {:<8} group {:<12} by {}",
                d.id, d.artifact, d.version, d.kind, d.group, d.created_by
            );
        }
    }
    Ok(())
}

pub async fn status_cmd(api: &ApiClient, id: &str, json: bool) -> Result<()> {
    let v: DeploymentStatusView = api
        .call(
            Method::GET,
            &format!("/v1/deployments/{}", urlencode(id)),
            NO_BODY,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let d = &v.deployment;
    println!(
        "{}: {}@{} ({} bytes, sha256 {}) to group {}",
        d.id, d.artifact, d.version, d.size, d.sha256, d.group
    );
    for r in &v.results {
        println!(
            "  {:<16} {:<9} attempts {}  {}",
            r.client_id,
            r.status.as_str(),
            r.attempts,
            r.detail.replace('\n', " ")
        );
    }
    for c in &v.pending {
        println!("  {c:<16} pending");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts() {
        assert_eq!(parse_artifact("tool").ok(), Some(("tool".into(), None)));
        assert_eq!(
            parse_artifact("tool@3").ok(),
            Some(("tool".into(), Some(3)))
        );
        for bad in ["", "@3", "tool@x", "tool@"] {
            assert!(parse_artifact(bad).is_err(), "{bad}");
        }
    }
}
