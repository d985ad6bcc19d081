//! Deployment commands: `CreateDeployment` resolves an artifact of an imported bundle and
//! assigns it to a group (`CreateReleaseDeployment` the same for an `outpost-release`);
//! `ReportDeployment` records a client's result.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Fail, invalid, reject, version_sql};
use crate::model::{DeploymentStatus, Envelope, RejectCode, Response};
use crate::rules::{ALL_CLIENTS, check_id, check_name};

/// Longest result detail a client may report, in bytes.
pub const MAX_DETAIL_BYTES: usize = 16 << 10;
/// The payload kind `CreateDeployment` carries to clients (their handlers install it).
pub(super) const ARTIFACT_KIND: &str = "artifact";
/// The payload kind `CreateReleaseDeployment` carries (agents replace their own binary).
pub(super) const RELEASE_KIND: &str = "outpost-release";

/// Records deployment `id` for `group` of the newest payload `name` of `kind` (at `version`
/// when given) of an imported bundle.
pub(super) fn create_deployment(
    conn: &Connection,
    env: &Envelope,
    (id, group): (&str, &str),
    (kind, name, version): (&str, &str, Option<u64>),
) -> Result<Response, Fail> {
    // The checks in the order older nodes make them: the first failing one is the audited
    // rejection, which every node must word the same.
    check_id("deployment id", id).map_err(invalid)?;
    check_name("artifact name", name).map_err(invalid)?;
    check_name("group", group).map_err(invalid)?;
    insert_deployment(conn, env, (id, group), (kind, name, version))
}

/// The deployments row of `create_deployment` (and `CreateRollout`, whose group is its
/// selector's first group or ""), once the id and the name are checked: resolves the payload.
pub(super) fn insert_deployment(
    conn: &Connection,
    env: &Envelope,
    (id, group): (&str, &str),
    (kind, name, version): (&str, &str, Option<u64>),
) -> Result<Response, Fail> {
    let version = version
        .map(|v| version_sql("artifact version", v))
        .transpose()?;
    let taken: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM deployments WHERE id = ?1)")?
        .query_row([id], |r| r.get(0))?;
    if taken {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("deployment {id} already exists"),
        ));
    }
    let found: Option<(String, i64, String, i64, String)> = conn
        .prepare_cached(
            "SELECT p.kind, p.size, p.sha256, b.version, b.id
             FROM payloads p JOIN bundles b ON b.seq = p.bundle_seq
             WHERE p.name = ?1 AND p.kind = ?2 AND (?3 IS NULL OR b.version = ?3)
             ORDER BY b.version DESC, b.seq DESC LIMIT 1",
        )?
        .query_row(params![name, kind, version], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((kind, size, sha256, version, bundle_id)) = found else {
        let at = version.map(|v| format!("@{v}")).unwrap_or_default();
        return Err(reject(
            RejectCode::NotFound,
            format!("no {kind} {name}{at} in any imported bundle"),
        ));
    };
    conn.prepare_cached(
        "INSERT INTO deployments (id, artifact, version, kind, sha256, size, bundle_id, group_name,
                                  created_at_ms, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        id, name, version, kind, sha256, size, bundle_id, group, env.at_ms, env.actor
    ])?;
    Ok(Response::Done)
}

pub(super) fn report_deployment(
    conn: &Connection,
    at_ms: i64,
    deployment_id: &str,
    client_id: &str,
    status: DeploymentStatus,
    detail: &str,
) -> Result<Response, Fail> {
    if detail.len() > MAX_DETAIL_BYTES {
        return Err(invalid(format!(
            "result detail of client {client_id} is {} bytes, at most {MAX_DETAIL_BYTES} allowed",
            detail.len()
        )));
    }
    let client: Option<(bool, String)> = conn
        .prepare_cached("SELECT revoked, groups_json FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let groups: Vec<String> = match client {
        None => {
            return Err(reject(
                RejectCode::NotFound,
                format!("client {client_id} does not exist"),
            ));
        }
        Some((true, _)) => return Err(invalid(format!("client {client_id} is revoked"))),
        Some((false, g)) => serde_json::from_str(&g).unwrap_or_default(),
    };
    let group: Option<String> = conn
        .prepare_cached("SELECT group_name FROM deployments WHERE id = ?1")?
        .query_row([deployment_id], |r| r.get(0))
        .optional()?;
    let Some(group) = group else {
        return Err(reject(
            RejectCode::NotFound,
            format!("deployment {deployment_id} does not exist"),
        ));
    };
    // A rollout (format 8) targets by its selector; a plain deployment keeps exactly the
    // group check older nodes apply, so old logs apply the same everywhere.
    let rollout = super::brake::rollout_row(conn, deployment_id)?;
    match &rollout {
        Some(r) => super::brake::check_reporter(conn, r, client_id)?,
        None if group != ALL_CLIENTS && !groups.contains(&group) => {
            return Err(invalid(format!(
                "deployment {deployment_id} targets group {group}, which client {client_id} is not in"
            )));
        }
        None => {}
    }
    conn.prepare_cached(
        "INSERT INTO deployment_results (deployment_id, client_id, status, detail, at_ms, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, 1)
         ON CONFLICT (deployment_id, client_id) DO UPDATE SET status = excluded.status,
             detail = excluded.detail, at_ms = excluded.at_ms, attempts = attempts + 1",
    )?
    .execute(params![
        deployment_id,
        client_id,
        status.as_str(),
        detail,
        at_ms
    ])?;
    match rollout {
        Some(r) if status == DeploymentStatus::Failed => super::brake::brake(conn, r),
        _ => Ok(Response::Done),
    }
}
