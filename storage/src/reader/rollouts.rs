//! Rollout queries: the preview of a selector (`plan`), a rollout's record and status, the
//! rollouts the leader drives and its next step for each, and what a client must remove.
//! Who is targeted and the counts come from `rollout_rows`, which `apply` reads alike.

use std::collections::HashMap;

use rusqlite::Connection;

use super::Reader;
use crate::error::StorageError;
use crate::model::{
    ClientProgress, DeploymentRecord, PhaseCounts, Plan, PlanPhase, RolloutRecord, RolloutState,
    RolloutStatus, RolloutStep, SITE_TIMEZONE_KEY, Selector,
};
use crate::rollout::{TimeZone, Windows, next_step, phase_of, seen, site_timezone};
use crate::rollout_rows::{
    global_config, load_rollout, progress, progress_of, results_of, targeted,
};
use crate::rows::all;

impl Reader {
    /// The clients `selector` targets now, by phase of deployment `deployment_id` (the split
    /// `CreateRollout` with that id will use); clients not seen for a day are listed apart.
    pub fn plan(
        &self,
        selector: &Selector,
        phases: &[u8],
        deployment_id: &str,
        now_ms: i64,
    ) -> Result<Plan, StorageError> {
        self.with(|c| {
            let mut plan = Plan {
                count: 0,
                phases: phases
                    .iter()
                    .map(|p| PlanPhase {
                        percent: *p,
                        clients: vec![],
                    })
                    .collect(),
                unseen: vec![],
            };
            for t in targeted(c, selector)? {
                plan.count += 1;
                if !seen(t.last_seen, t.enrolled_at_ms, now_ms) {
                    plan.unseen.push(t.id);
                } else if let Some(p) = plan.phases.get_mut(phase_of(deployment_id, &t.id, phases))
                {
                    p.clients.push(t.id);
                }
            }
            Ok(plan)
        })
    }

    /// Deployment `id`'s rollout row (the default reading of a plain deployment).
    pub fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StorageError> {
        self.with(|c| Ok(load_rollout(c, id)?.map(|(_, r, _)| r)))
    }

    /// Deployment `id` and where each client stands at `now_ms`: every targeted client, and
    /// any other that reported a result. Counts per phase, the brake's inputs, and whether a
    /// window is open now (site time zone).
    pub fn rollout_status(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<RolloutStatus>, StorageError> {
        self.with(|c| {
            let Some((deployment, rollout, _)) = load_rollout(c, id)? else {
                return Ok(None);
            };
            let tz = site_tz(c)?;
            let window_open =
                Windows::parse(&rollout.windows).is_ok_and(|w| w.open_at(&tz, now_ms));
            let targets = targeted(c, &rollout.selector)?;
            let results = results_of(c, id)?;
            let removals: HashMap<String, (bool, String, i64)> = c
                .prepare_cached(
                    "SELECT client_id, ok, detail, at_ms FROM deployment_removals
                     WHERE deployment_id = ?1",
                )?
                .query_map([id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?
                .collect::<Result<_, _>>()?;
            let mut ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
            let targeted_count = ids.len();
            ids.extend(
                results
                    .keys()
                    .map(String::as_str)
                    .filter(|k| targets.binary_search_by(|t| t.id.as_str().cmp(k)).is_err()),
            );
            ids[targeted_count..].sort_unstable();
            let mut phases: Vec<PhaseCounts> = rollout
                .phases
                .iter()
                .map(|p| PhaseCounts {
                    percent: *p,
                    ..PhaseCounts::default()
                })
                .collect();
            let live = matches!(rollout.state, RolloutState::Running | RolloutState::Done);
            let mut clients = Vec::with_capacity(ids.len());
            let mut targeted_phases = Vec::with_capacity(targeted_count);
            for (i, client) in ids.into_iter().enumerate() {
                let k = phase_of(id, client, &rollout.phases);
                if let Some(t) = targets.get(i).filter(|_| i < targeted_count) {
                    targeted_phases.push((t, k));
                }
                let (status, detail, at_ms) = match (removals.get(client), results.get(client)) {
                    (Some((ok, detail, at)), _) => {
                        let s = if *ok { "removed" } else { "remove-failed" };
                        (s, detail.clone(), Some(*at))
                    }
                    (None, Some((s, detail, at))) => {
                        let s = if s == "installed" {
                            "installed"
                        } else {
                            "failed"
                        };
                        (s, detail.clone(), Some(*at))
                    }
                    (None, None) if live && k as u64 <= u64::from(rollout.phase) => {
                        let s = if window_open {
                            "pending"
                        } else {
                            "outside-window"
                        };
                        (s, String::new(), None)
                    }
                    (None, None) => ("waiting", String::new(), None),
                };
                if let Some(p) = phases.get_mut(k) {
                    p.clients += 1;
                    let n = match status {
                        "installed" => &mut p.installed,
                        "failed" => &mut p.failed,
                        "removed" => &mut p.removed,
                        "remove-failed" => &mut p.remove_failed,
                        "pending" => &mut p.pending,
                        "outside-window" => &mut p.outside_window,
                        _ => &mut p.waiting,
                    };
                    *n += 1;
                }
                clients.push(ClientProgress {
                    id: client.to_owned(),
                    phase: u32::try_from(k + 1).unwrap_or(u32::MAX),
                    status: status.to_owned(),
                    detail,
                    at_ms,
                });
            }
            let progress = progress_of(&rollout, targeted_phases.into_iter(), &results, now_ms);
            Ok(Some(RolloutStatus {
                deployment,
                rollout,
                phases,
                clients,
                window_open,
                progress,
            }))
        })
    }

    /// Ids and reasons of the halted rollouts, by id (at most `limit`): what `doctor` and the
    /// console's overview name.
    pub fn rollouts_halted(&self, limit: u32) -> Result<Vec<(String, String)>, StorageError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT deployment_id, reason FROM rollouts WHERE state = 'halted'
                 ORDER BY deployment_id LIMIT ?1",
            )?
            .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
        })
    }

    /// Ids of the rollouts in `scheduled` or `running` (the ones the leader drives), by id.
    pub fn rollouts_active(&self) -> Result<Vec<String>, StorageError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT deployment_id FROM rollouts WHERE state IN ('scheduled', 'running')
                 ORDER BY deployment_id",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
        })
    }

    /// What the leader should propose for rollout `id` at `now_ms` (`rollout::next_step`
    /// over its row, its counts and the site's time zone), with the reason to audit.
    pub fn rollout_next_step(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<(RolloutStep, String)>, StorageError> {
        self.with(|c| {
            let Some((_, rollout, _)) = load_rollout(c, id)? else {
                return Ok(None);
            };
            if !matches!(
                rollout.state,
                RolloutState::Scheduled | RolloutState::Running
            ) {
                return Ok(None);
            }
            let targets = targeted(c, &rollout.selector)?;
            let progress = progress(&rollout, &targets, &results_of(c, id)?, now_ms);
            Ok(next_step(&rollout, &progress, &site_tz(c)?, now_ms))
        })
    }

    /// Deployments `client_id` must remove: aborted with `--uninstall`, installed there, and
    /// not removed yet (a `remove-failed` stays listed: the agent bounds its own retries, as
    /// it does installs). Oldest first.
    pub fn removals(&self, client_id: &str) -> Result<Vec<DeploymentRecord>, StorageError> {
        self.with(|c| {
            Ok(all(
                c,
                "WHERE id IN (SELECT r.deployment_id FROM rollouts r
                     JOIN deployment_results x ON x.deployment_id = r.deployment_id
                     WHERE r.state = 'aborted' AND r.uninstall = 1 AND x.client_id = ?1
                       AND x.status = 'installed'
                       AND NOT EXISTS (SELECT 1 FROM deployment_removals m
                                       WHERE m.deployment_id = r.deployment_id
                                         AND m.client_id = ?1 AND m.ok = 1))
                 ORDER BY seq",
                [client_id],
            )?)
        })
    }

    /// The site's time zone (`site.timezone`, UTC when unset).
    pub fn site_timezone(&self) -> Result<TimeZone, StorageError> {
        self.with(site_tz)
    }
}

/// The site's time zone; a name the tz database does not know reads as UTC, with a warning
/// (signed config only sets it, so this is an operator's typo, not an attack).
pub(super) fn site_tz(c: &Connection) -> Result<TimeZone, StorageError> {
    let name = global_config(c, SITE_TIMEZONE_KEY)?;
    Ok(site_timezone(name.as_deref()).unwrap_or_else(|e| {
        tracing::warn!("{e}: rollout windows are read in UTC");
        TimeZone::UTC
    }))
}
