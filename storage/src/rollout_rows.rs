//! What `apply` and the reader must read alike about rollouts: the rollout row of a
//! deployment (`load_rollout`, the plain default when there is none), the clients a selector
//! targets (`targeted`, `targets`), the counts the brake and the leader use (`progress`), and
//! the global settings rollouts follow (`global_config`). Both sides reach the same answer
//! from the same state, so a rule changed here changes what `apply` does: a format change.
//!
//! Cost: one query for every client with its labels, facts parsed only for the clients that
//! passed the cheaper kinds of a selector with fact terms, one query for a deployment's
//! results.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::{
    DeploymentRecord, FailureLimit, Progress, RolloutRecord, RolloutState, Selector,
};
use crate::rollout::{Target, phase_of, seen};
use crate::rows::{FromRow, corrupt, json, one, u64_col};

/// A client that is not revoked, as a selector sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) id: String,
    pub(crate) groups: Vec<String>,
    /// Sorted.
    pub(crate) labels: Vec<String>,
    pub(crate) last_seen: Option<i64>,
    pub(crate) enrolled_at_ms: i64,
}

/// The labels of a client as `ClientRecord`'s SELECT reads them (newline-separated: a label
/// holds no control character), sorted.
pub(crate) fn split_labels(joined: Option<String>) -> Vec<String> {
    let mut labels: Vec<String> = joined
        .map(|j| j.split('\n').map(str::to_owned).collect())
        .unwrap_or_default();
    labels.sort();
    labels.dedup();
    labels
}

/// Every client that is not revoked, by id, with its groups and labels (one query).
pub(crate) fn candidates(conn: &Connection) -> rusqlite::Result<Vec<Candidate>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.groups_json, c.last_seen_ms, c.enrolled_at_ms,
                (SELECT group_concat(l.label, char(10)) FROM client_labels l
                 WHERE l.client_id = c.id)
         FROM clients c WHERE c.revoked = 0 ORDER BY c.id",
    )?;
    let rows = stmt.query_map([], candidate_row)?;
    rows.collect()
}

/// A client's latest facts, if it reported any.
pub(crate) fn facts_of(conn: &Connection, id: &str) -> rusqlite::Result<Option<serde_json::Value>> {
    conn.prepare_cached("SELECT facts_json FROM inventory WHERE client_id = ?1")?
        .query_row([id], |r| {
            json(r, 0, |e| format!("inventory.facts_json of {id}: {e}"))
        })
        .optional()
}

/// Whether `selector` targets `c`, reading its facts only when the cheaper kinds matched and
/// the selector has fact terms.
pub(crate) fn matches(
    conn: &Connection,
    selector: &Selector,
    c: &Candidate,
) -> rusqlite::Result<bool> {
    matches_with(conn, selector, c, &mut None)
}

/// `matches` for several selectors over one client: `facts` keeps the client's facts once
/// read (None: not read yet), so a sync facing many `--where` deployments parses them once.
pub(crate) fn matches_with(
    conn: &Connection,
    selector: &Selector,
    c: &Candidate,
    facts: &mut Option<Option<serde_json::Value>>,
) -> rusqlite::Result<bool> {
    let target = Target {
        id: &c.id,
        groups: &c.groups,
        labels: &c.labels,
        facts: None,
    };
    if !selector.matches_except_facts(&target) {
        return Ok(false);
    }
    if !selector.needs_facts() {
        return Ok(true);
    }
    if facts.is_none() {
        *facts = Some(facts_of(conn, &c.id)?);
    }
    Ok(selector.facts_match(facts.as_ref().and_then(Option::as_ref)))
}

/// The clients `selector` targets now, by id.
pub(crate) fn targeted(conn: &Connection, selector: &Selector) -> rusqlite::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for c in candidates(conn)? {
        if matches(conn, selector, &c)? {
            out.push(c);
        }
    }
    Ok(out)
}

/// Client `id` as a selector sees it, if it exists and is not revoked.
pub(crate) fn candidate(conn: &Connection, id: &str) -> rusqlite::Result<Option<Candidate>> {
    conn.prepare_cached(
        "SELECT c.id, c.groups_json, c.last_seen_ms, c.enrolled_at_ms,
                (SELECT group_concat(l.label, char(10)) FROM client_labels l
                 WHERE l.client_id = c.id)
         FROM clients c WHERE c.id = ?1 AND c.revoked = 0",
    )?
    .query_row([id], candidate_row)
    .optional()
}

fn candidate_row(r: &Row<'_>) -> rusqlite::Result<Candidate> {
    let id: String = r.get(0)?;
    Ok(Candidate {
        groups: json(r, 1, |e| format!("clients.groups_json of {id}: {e}"))?,
        last_seen: r.get(2)?,
        enrolled_at_ms: r.get(3)?,
        labels: split_labels(r.get(4)?),
        id,
    })
}

/// Whether `selector` targets client `id` now (false for an unknown or revoked client).
pub(crate) fn targets(conn: &Connection, selector: &Selector, id: &str) -> rusqlite::Result<bool> {
    match candidate(conn, id)? {
        Some(c) => matches(conn, selector, &c),
        None => Ok(false),
    }
}

/// Deployment `id`'s rollout row; for a deployment without one, its plain reading; None when
/// there is no such deployment.
pub(crate) fn load_rollout(
    conn: &Connection,
    id: &str,
) -> rusqlite::Result<Option<(DeploymentRecord, RolloutRecord, bool)>> {
    let Some(d) = one::<DeploymentRecord>(conn, "WHERE id = ?1", [id])? else {
        return Ok(None);
    };
    match one::<RolloutRecord>(conn, "WHERE deployment_id = ?1", [id])? {
        Some(r) => Ok(Some((d, r, true))),
        None => {
            let plain = RolloutRecord::plain(&d);
            Ok(Some((d, plain, false)))
        }
    }
}

/// The latest result of every client that reported for deployment `id`: status text and
/// (detail, at_ms), in one query.
pub(crate) fn results_of(
    conn: &Connection,
    id: &str,
) -> rusqlite::Result<HashMap<String, (String, String, i64)>> {
    conn.prepare_cached(
        "SELECT client_id, status, detail, at_ms FROM deployment_results WHERE deployment_id = ?1",
    )?
    .query_map([id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?
    .collect()
}

/// The failed clients of deployment `id` (latest result `failed`), sorted.
pub(crate) fn failed_clients(conn: &Connection, id: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT client_id FROM deployment_results
         WHERE deployment_id = ?1 AND status = 'failed' ORDER BY client_id",
    )?
    .query_map([id], |r| r.get(0))?
    .collect()
}

/// The counts of `rollout` over the `targeted` clients and the deployment's results.
pub(crate) fn progress(
    rollout: &RolloutRecord,
    targeted: &[Candidate],
    results: &HashMap<String, (String, String, i64)>,
    now_ms: i64,
) -> Progress {
    let phased = targeted
        .iter()
        .map(|c| (c, phase_of(&rollout.deployment_id, &c.id, &rollout.phases)));
    progress_of(rollout, phased, results, now_ms)
}

/// `progress` over targeted clients whose phases (0-based) the caller already has; `now_ms`
/// tells which clients count as seen (`rollout::seen`).
pub(crate) fn progress_of<'a>(
    rollout: &RolloutRecord,
    targeted: impl Iterator<Item = (&'a Candidate, usize)>,
    results: &HashMap<String, (String, String, i64)>,
    now_ms: i64,
) -> Progress {
    let mut p = Progress {
        failures: results.values().filter(|(s, _, _)| s == "failed").count() as u64,
        ..Progress::default()
    };
    for (c, phase) in targeted {
        let open = phase as u64 <= u64::from(rollout.phase);
        let installed = results.get(&c.id).is_some_and(|(s, _, _)| s == "installed");
        p.targeted += 1;
        p.installed += u64::from(installed);
        if open {
            p.targeted_in_open_phases += 1;
            p.installed_in_open_phases += u64::from(installed);
            let awaited =
                !results.contains_key(&c.id) && seen(c.last_seen, c.enrolled_at_ms, now_ms);
            p.awaited_in_open_phases += u64::from(awaited);
        }
    }
    p
}

/// The brake's allowance for `rollout` with its current phase open now.
pub(crate) fn allowed_failures(
    conn: &Connection,
    rollout: &RolloutRecord,
) -> rusqlite::Result<u64> {
    let reach = match rollout.max_failures {
        FailureLimit::Count(_) => 0,
        FailureLimit::Percent(_) => targeted(conn, &rollout.selector)?
            .iter()
            .filter(|c| {
                phase_of(&rollout.deployment_id, &c.id, &rollout.phases) as u64
                    <= u64::from(rollout.phase)
            })
            .count() as u64,
    };
    Ok(rollout.max_failures.allowed(reach))
}

/// A global configuration value (`site.timezone`, `deploy.approval_above`).
pub(crate) fn global_config(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT value FROM config WHERE scope_kind = 'global' AND scope_id = '' AND key = ?1",
    )?
    .query_row([key], |r| r.get(0))
    .optional()
}

/// Writes `r` as deployment's rollout row (insert or replace).
pub(crate) fn store_rollout(conn: &Connection, r: &RolloutRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO rollouts (deployment_id, selector_json, phases_json, soak_ms, max_failures,
             windows_json, start_at_ms, state, phase, phase_opened_at_ms, allowed_failures,
             failure_base, reason, approved_by, uninstall)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (deployment_id) DO UPDATE SET selector_json = excluded.selector_json,
             phases_json = excluded.phases_json, soak_ms = excluded.soak_ms,
             max_failures = excluded.max_failures, windows_json = excluded.windows_json,
             start_at_ms = excluded.start_at_ms, state = excluded.state, phase = excluded.phase,
             phase_opened_at_ms = excluded.phase_opened_at_ms,
             allowed_failures = excluded.allowed_failures, failure_base = excluded.failure_base,
             reason = excluded.reason, approved_by = excluded.approved_by,
             uninstall = excluded.uninstall",
    )?
    .execute(params![
        r.deployment_id,
        text(&r.selector),
        text(&r.phases),
        i64::try_from(r.soak_ms).unwrap_or(i64::MAX),
        r.max_failures.to_string(),
        text(&r.windows),
        r.start_at_ms,
        r.state.as_str(),
        i64::from(r.phase),
        r.phase_opened_at_ms,
        i64::try_from(r.allowed_failures).unwrap_or(i64::MAX),
        i64::try_from(r.failure_base).unwrap_or(i64::MAX),
        r.reason,
        r.approved_by,
        r.uninstall,
    ])?;
    Ok(())
}

/// JSON text of a row's structured column (vectors of strings and numbers: serde_json
/// cannot fail on them).
fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl FromRow for RolloutRecord {
    const SELECT: &'static str = "SELECT deployment_id, selector_json, phases_json, soak_ms, \
        max_failures, windows_json, start_at_ms, state, phase, phase_opened_at_ms, \
        allowed_failures, failure_base, reason, approved_by, uninstall FROM rollouts";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<RolloutRecord> {
        let id: String = r.get(0)?;
        let limit: String = r.get(4)?;
        let state: String = r.get(7)?;
        Ok(RolloutRecord {
            selector: json(r, 1, |e| format!("rollouts.selector_json of {id}: {e}"))?,
            phases: json(r, 2, |e| format!("rollouts.phases_json of {id}: {e}"))?,
            soak_ms: u64_col(r, 3)?,
            max_failures: FailureLimit::parse(&limit)
                .map_err(|e| corrupt(4, format!("rollout {id}: {e}")))?,
            windows: json(r, 5, |e| format!("rollouts.windows_json of {id}: {e}"))?,
            start_at_ms: r.get(6)?,
            state: RolloutState::parse(&state)
                .ok_or_else(|| corrupt(7, format!("rollout {id}: state {state:?}")))?,
            phase: u32::try_from(r.get::<_, i64>(8)?)
                .map_err(|_| corrupt(8, format!("rollout {id}: phase out of range")))?,
            phase_opened_at_ms: r.get(9)?,
            allowed_failures: u64_col(r, 10)?,
            failure_base: u64_col(r, 11)?,
            reason: r.get(12)?,
            approved_by: r.get(13)?,
            uninstall: r.get(14)?,
            deployment_id: id,
        })
    }
}
