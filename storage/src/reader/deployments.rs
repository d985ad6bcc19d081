//! Deployment queries: deployments, results, and what each client is asked to install.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{OptionalExtension, Row, params};

use super::Reader;
use crate::error::StorageError;
use crate::model::{
    Assignment, DeploymentProgress, DeploymentRecord, DeploymentResult, DeploymentStatus,
    RolloutRecord, RolloutState,
};
use crate::rollout::{Windows, phase_of};
use crate::rollout_rows::{Candidate, candidate, matches_with, targeted as targeted_by};
use crate::rows::{FromRow, all, corrupt, one, u64_col};
use crate::rules::ALL_CLIENTS;

impl Reader {
    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<DeploymentRecord>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY seq", [])?))
    }

    pub fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StorageError> {
        self.with(|c| Ok(one(c, "WHERE id = ?1", [id])?))
    }

    /// Every deployment, newest first, with how many clients it targets now (its group's, or
    /// a rollout's selector's; revoked ones left out) and how many reported it installed or
    /// failed.
    pub fn deployment_progress(&self) -> Result<Vec<DeploymentProgress>, StorageError> {
        self.with(|c| {
            let deployments: Vec<DeploymentRecord> = all(c, "ORDER BY seq DESC", [])?;
            let mut targeted = c.prepare_cached(&format!(
                "SELECT COUNT(*) FROM clients WHERE revoked = 0 AND (?1 = '{ALL_CLIENTS}' OR
                     EXISTS (SELECT 1 FROM json_each(clients.groups_json) WHERE value = ?1))"
            ))?;
            let mut results = c.prepare_cached(
                "SELECT COALESCE(SUM(status = 'installed'), 0), COALESCE(SUM(status = 'failed'), 0)
                 FROM deployment_results WHERE deployment_id = ?1",
            )?;
            let mut out = Vec::with_capacity(deployments.len());
            let rollouts: HashMap<String, RolloutRecord> = all::<RolloutRecord>(c, "", [])?
                .into_iter()
                .map(|r| (r.deployment_id.clone(), r))
                .collect();
            for d in deployments {
                let t: i64 = match rollouts.get(&d.id) {
                    Some(r) => targeted_by(c, &r.selector)?.len() as i64,
                    None => targeted.query_row([&d.group], |r| r.get(0))?,
                };
                let (ok, failed): (i64, i64) =
                    results.query_row([&d.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                out.push(DeploymentProgress {
                    targeted: u64::try_from(t).unwrap_or(0),
                    installed: u64::try_from(ok).unwrap_or(0),
                    failed: u64::try_from(failed).unwrap_or(0),
                    deployment: d,
                });
            }
            Ok(out)
        })
    }

    /// The newest `limit` failed results of deployment `id`, newest first.
    pub fn deployment_failures(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<DeploymentResult>, StorageError> {
        self.with(|c| {
            Ok(all(
                c,
                "WHERE deployment_id = ?1 AND status = 'failed'
                 ORDER BY at_ms DESC, client_id LIMIT ?2",
                params![id, limit],
            )?)
        })
    }

    /// Every client's latest result for deployment `id`.
    pub fn deployment_results(&self, id: &str) -> Result<Vec<DeploymentResult>, StorageError> {
        self.with(|c| Ok(all(c, "WHERE deployment_id = ?1 ORDER BY client_id", [id])?))
    }

    /// The kind of payload `name` (at `version`, or any) that a deployment of it would carry:
    /// `artifact` when an imported bundle has such an artifact, else `outpost-release` when
    /// one has such a release, else None. The API picks the command by it (an artifact keeps
    /// the older `CreateDeployment`, which every node of a mixed cluster knows).
    pub fn deployable_kind(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<Option<String>, StorageError> {
        let version = match version.map(i64::try_from) {
            Some(Err(_)) => return Ok(None),
            Some(Ok(v)) => Some(v),
            None => None,
        };
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT p.kind FROM payloads p JOIN bundles b ON b.seq = p.bundle_seq
                 WHERE p.name = ?1 AND p.kind IN ('artifact', 'outpost-release')
                   AND (?2 IS NULL OR b.version = ?2)
                 ORDER BY p.kind = 'artifact' DESC LIMIT 1",
            )?
            .query_row(params![name, version], |r| r.get(0))
            .optional()?)
        })
    }

    /// What `client_id` is asked to install at `now_ms`: for each artifact name, the newest
    /// deployment that targets the client now (its selector; a plain deployment's group), with
    /// the client's own last result for it, sent only while that deployment is running or
    /// done, the client's phase is open and a window is open (site time zone). Otherwise
    /// nothing for that artifact: a newer paused, halted or aborted deployment stops the older.
    pub fn assignments(
        &self,
        client_id: &str,
        now_ms: i64,
    ) -> Result<Vec<Assignment>, StorageError> {
        self.with(|c| {
            // An unknown or revoked client still lists plain deployments to `all`, as it
            // always did (the API asks only for clients it let in); rollouts skip it.
            let found = candidate(c, client_id)?;
            let revoked = found.is_none();
            let me = found.unwrap_or_else(|| Candidate {
                id: client_id.to_owned(),
                groups: vec![],
                labels: vec![],
                last_seen: None,
                enrolled_at_ms: 0,
            });
            let rollouts: HashMap<String, RolloutRecord> = all::<RolloutRecord>(c, "", [])?
                .into_iter()
                .map(|r| (r.deployment_id.clone(), r))
                .collect();
            // Later deployments of the same artifact replace earlier ones.
            let mut latest: BTreeMap<String, (DeploymentRecord, RolloutRecord)> = BTreeMap::new();
            let mut facts = None;
            for d in all::<DeploymentRecord>(c, "ORDER BY seq", [])? {
                let r = match rollouts.get(&d.id) {
                    Some(_) if revoked => continue,
                    Some(r) => r.clone(),
                    None => RolloutRecord::plain(&d),
                };
                if matches_with(c, &r.selector, &me, &mut facts)? {
                    latest.insert(d.artifact.clone(), (d, r));
                }
            }
            let mut tz = None;
            let mut out = Vec::with_capacity(latest.len());
            for (_, (deployment, r)) in latest {
                let live = matches!(r.state, RolloutState::Running | RolloutState::Done);
                let phase_open =
                    phase_of(&deployment.id, client_id, &r.phases) as u64 <= u64::from(r.phase);
                if !(live && phase_open) {
                    continue;
                }
                if !r.windows.is_empty() {
                    let tz = match &tz {
                        Some(tz) => tz,
                        None => tz.insert(super::rollouts::site_tz(c)?),
                    };
                    if !Windows::parse(&r.windows).is_ok_and(|w| w.open_at(tz, now_ms)) {
                        continue;
                    }
                }
                let result = one(
                    c,
                    "WHERE deployment_id = ?1 AND client_id = ?2",
                    params![deployment.id, client_id],
                )?;
                out.push(Assignment { deployment, result });
            }
            Ok(out)
        })
    }
}

impl FromRow for DeploymentRecord {
    const SELECT: &'static str = "SELECT id, artifact, version, kind, sha256, size, bundle_id, \
                                  group_name, created_at_ms, created_by FROM deployments";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<DeploymentRecord> {
        Ok(DeploymentRecord {
            id: r.get(0)?,
            artifact: r.get(1)?,
            version: u64_col(r, 2)?,
            kind: r.get(3)?,
            sha256: r.get(4)?,
            size: u64_col(r, 5)?,
            bundle_id: r.get(6)?,
            group: r.get(7)?,
            created_at_ms: r.get(8)?,
            created_by: r.get(9)?,
        })
    }
}

impl FromRow for DeploymentResult {
    const SELECT: &'static str = "SELECT deployment_id, client_id, status, detail, at_ms, \
                                  attempts FROM deployment_results";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<DeploymentResult> {
        let deployment_id: String = r.get(0)?;
        let client_id: String = r.get(1)?;
        let status: String = r.get(2)?;
        let Some(status) = DeploymentStatus::parse(&status) else {
            return Err(corrupt(
                2,
                format!("deployment {deployment_id} result of {client_id}: status {status:?}"),
            ));
        };
        Ok(DeploymentResult {
            deployment_id,
            client_id,
            status,
            detail: r.get(3)?,
            at_ms: r.get(4)?,
            attempts: u64_col(r, 5)?,
        })
    }
}
