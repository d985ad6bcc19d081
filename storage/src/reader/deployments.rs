//! Deployment queries: deployments, results, and what each client is asked to install.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};

use super::{Reader, u64_col};
use crate::error::StorageError;
use crate::model::{Assignment, DeploymentRecord, DeploymentResult, DeploymentStatus};
use crate::rules::ALL_CLIENTS;

impl Reader {
    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<DeploymentRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("{DEPLOYMENT_SELECT} ORDER BY seq"))?;
            let rows = stmt.query_map([], deployment_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StorageError> {
        self.with(|c| {
            Ok(
                c.prepare_cached(&format!("{DEPLOYMENT_SELECT} WHERE id = ?1"))?
                    .query_row([id], deployment_row)
                    .optional()?,
            )
        })
    }

    /// Every client's latest result for deployment `id`.
    pub fn deployment_results(&self, id: &str) -> Result<Vec<DeploymentResult>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{RESULT_SELECT} WHERE deployment_id = ?1 ORDER BY client_id"
            ))?;
            let rows = stmt.query_map([id], raw_result)?;
            rows.map(|r| result_from_raw(r?)).collect()
        })
    }

    /// What `client_id` is asked to install: for each artifact name, the newest deployment to
    /// one of its groups (or to all clients), with the client's own last result for it.
    pub fn assignments(&self, client_id: &str) -> Result<Vec<Assignment>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "{DEPLOYMENT_SELECT} WHERE group_name = '{ALL_CLIENTS}' OR group_name IN
                    (SELECT j.value FROM clients, json_each(clients.groups_json) AS j
                     WHERE clients.id = ?1 AND clients.revoked = 0)
                 ORDER BY seq"
            ))?;
            let all: Vec<DeploymentRecord> = stmt
                .query_map([client_id], deployment_row)?
                .collect::<Result<_, _>>()?;
            // Later deployments of the same artifact replace earlier ones.
            let mut latest: BTreeMap<String, DeploymentRecord> = BTreeMap::new();
            for d in all {
                latest.insert(d.artifact.clone(), d);
            }
            let mut rstmt = c.prepare_cached(&format!(
                "{RESULT_SELECT} WHERE deployment_id = ?1 AND client_id = ?2"
            ))?;
            let mut out = Vec::with_capacity(latest.len());
            for (_, deployment) in latest {
                let result = rstmt
                    .query_row(params![deployment.id, client_id], raw_result)
                    .optional()?
                    .map(result_from_raw)
                    .transpose()?;
                out.push(Assignment { deployment, result });
            }
            Ok(out)
        })
    }
}

const DEPLOYMENT_SELECT: &str = "SELECT id, artifact, version, kind, sha256, size, bundle_id,
    group_name, created_at_ms, created_by FROM deployments";

const RESULT_SELECT: &str =
    "SELECT deployment_id, client_id, status, detail, at_ms, attempts FROM deployment_results";

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRecord> {
    Ok(DeploymentRecord {
        id: r.get(0)?,
        artifact: r.get(1)?,
        version: u64_col(r.get::<_, i64>(2)?),
        kind: r.get(3)?,
        sha256: r.get(4)?,
        size: u64_col(r.get::<_, i64>(5)?),
        bundle_id: r.get(6)?,
        group: r.get(7)?,
        created_at_ms: r.get(8)?,
        created_by: r.get(9)?,
    })
}

type RawResult = (String, String, String, String, i64, i64);

fn raw_result(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawResult> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn result_from_raw(raw: RawResult) -> Result<DeploymentResult, StorageError> {
    let (deployment_id, client_id, status, detail, at_ms, attempts) = raw;
    let status = DeploymentStatus::parse(&status).ok_or_else(|| {
        StorageError::Corrupt(format!(
            "deployment {deployment_id} result of {client_id}: status {status:?}"
        ))
    })?;
    Ok(DeploymentResult {
        deployment_id,
        client_id,
        status,
        detail,
        at_ms,
        attempts: u64_col(attempts),
    })
}
