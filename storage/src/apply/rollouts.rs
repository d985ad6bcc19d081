//! Rollout commands (format 8): `LabelClients` (the operator's labels), `CreateRollout` (a
//! deployment with a selector, phases, a soak, a brake, windows and a start time),
//! `RolloutStep` (the transitions of `rollout::step_target`), `ReportRemoval` (a client's
//! result of removing an aborted `--uninstall` deployment). What `ReportDeployment` does on a
//! deployment with a rollout row (who may report, the brake) is in `brake`.

use rusqlite::{Connection, OptionalExtension, params};

use super::brake::rollout_row;
use super::deployments::{ARTIFACT_KIND, MAX_DETAIL_BYTES, RELEASE_KIND, insert_deployment};
use super::{Fail, invalid, reject};
use crate::model::{
    APPROVAL_ABOVE_KEY, Envelope, RejectCode, Response, RolloutRecord, RolloutSpec, RolloutState,
    RolloutStep,
};
use crate::rollout::{ApprovalRule, Windows, check_phases, same_person, step_target};
use crate::rollout_rows::{
    allowed_failures, failed_clients, global_config, load_rollout, store_rollout, targeted,
};
use crate::rules::{check_id, check_name};

/// Most clients one `LabelClients` may name.
pub const MAX_LABEL_CLIENTS: usize = 10_000;
/// Most labels one `LabelClients` may add and remove together.
pub const MAX_LABELS_PER_COMMAND: usize = 32;
/// Most labels a client may carry.
pub const MAX_LABELS_PER_CLIENT: usize = 32;
/// Longest reason a rollout step keeps, in bytes.
pub const MAX_STEP_REASON_BYTES: usize = 2048;

/// An id (1-64 of A-Z a-z 0-9 . _ -); a long one is refused by its size, not echoed.
fn check_short_id(what: &str, s: &str) -> Result<(), Fail> {
    if s.len() > 64 {
        return Err(invalid(format!(
            "{what} is {} bytes, at most 64 allowed",
            s.len()
        )));
    }
    check_id(what, s).map_err(invalid)
}

pub(super) fn label_clients(
    conn: &Connection,
    clients: &[String],
    add: &[String],
    remove: &[String],
) -> Result<Response, Fail> {
    if clients.is_empty() || clients.len() > MAX_LABEL_CLIENTS {
        return Err(invalid(format!(
            "{} clients named: name 1 to {MAX_LABEL_CLIENTS}",
            clients.len()
        )));
    }
    let labels = add.len() + remove.len();
    if labels == 0 || labels > MAX_LABELS_PER_COMMAND {
        return Err(invalid(format!(
            "{labels} labels to add or remove: name 1 to {MAX_LABELS_PER_COMMAND}"
        )));
    }
    for l in add.iter().chain(remove) {
        check_name("label", l).map_err(invalid)?;
    }
    if let Some(both) = add.iter().find(|l| remove.contains(l)) {
        return Err(invalid(format!("label {both} is both added and removed")));
    }
    let mut exists = conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM clients WHERE id = ?1)")?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO client_labels (client_id, label) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    let mut delete =
        conn.prepare_cached("DELETE FROM client_labels WHERE client_id = ?1 AND label = ?2")?;
    let mut count =
        conn.prepare_cached("SELECT COUNT(*) FROM client_labels WHERE client_id = ?1")?;
    for c in clients {
        check_short_id("client id", c)?;
        if !exists.query_row([c], |r| r.get::<_, bool>(0))? {
            return Err(reject(
                RejectCode::NotFound,
                format!("client {c} does not exist"),
            ));
        }
        for l in remove {
            delete.execute(params![c, l])?;
        }
        for l in add {
            insert.execute(params![c, l])?;
        }
        let n: i64 = count.query_row([c], |r| r.get(0))?;
        if n > MAX_LABELS_PER_CLIENT as i64 {
            return Err(invalid(format!(
                "client {c} would carry {n} labels, at most {MAX_LABELS_PER_CLIENT} allowed"
            )));
        }
    }
    Ok(Response::Done)
}

pub(super) fn create_rollout(
    conn: &Connection,
    env: &Envelope,
    spec: &RolloutSpec,
) -> Result<Response, Fail> {
    check_short_id("deployment id", &spec.id)?;
    check_name("artifact name", &spec.name).map_err(invalid)?;
    let kind = match spec.kind.as_str() {
        ARTIFACT_KIND => ARTIFACT_KIND,
        RELEASE_KIND => RELEASE_KIND,
        other => {
            let echo: String = other.chars().take(40).collect();
            return Err(invalid(format!(
                "deployment kind {echo:?} must be {ARTIFACT_KIND} or {RELEASE_KIND}"
            )));
        }
    };
    spec.selector.check().map_err(invalid)?;
    check_phases(&spec.phases).map_err(|e| invalid(format!("phases: {e}")))?;
    Windows::parse(&spec.windows).map_err(invalid)?;
    if i64::try_from(spec.soak_ms).is_err() {
        return Err(invalid(format!("soak of {} ms is too long", spec.soak_ms)));
    }
    if let crate::model::FailureLimit::Percent(p) = spec.max_failures
        && p > 100
    {
        return Err(invalid(format!("max failures {p}% is above 100%")));
    }
    let group = spec.selector.groups.first().map_or("", String::as_str);
    insert_deployment(
        conn,
        env,
        (&spec.id, group),
        (kind, &spec.name, spec.version),
    )?;
    let mut r = RolloutRecord {
        deployment_id: spec.id.clone(),
        selector: spec.selector.clone(),
        phases: spec.phases.clone(),
        soak_ms: spec.soak_ms,
        max_failures: spec.max_failures,
        windows: spec.windows.clone(),
        start_at_ms: spec.start_at_ms,
        state: RolloutState::Running,
        phase: 0,
        phase_opened_at_ms: env.at_ms,
        allowed_failures: 0,
        failure_base: 0,
        reason: String::new(),
        approved_by: None,
        uninstall: false,
    };
    r.state = if needs_approval(conn, &r)? {
        RolloutState::WaitingApproval
    } else if spec.start_at_ms.is_some_and(|s| s > env.at_ms) {
        RolloutState::Scheduled
    } else {
        RolloutState::Running
    };
    r.allowed_failures = allowed_failures(conn, &r)?;
    store_rollout(conn, &r)?;
    Ok(Response::Done)
}

/// The four-eyes policy (`rollout::ApprovalRule`): `deploy.approval_above = N` set, and the
/// selector names `all` or targets more than N clients now.
fn needs_approval(conn: &Connection, r: &RolloutRecord) -> Result<bool, Fail> {
    let rule = ApprovalRule::of(global_config(conn, APPROVAL_ABOVE_KEY)?.as_deref());
    let mut count = None;
    if matches!(rule, ApprovalRule::Above(_)) && !r.selector.names_all() {
        count = Some(targeted(conn, &r.selector)?.len() as u64);
    }
    Ok(rule.needed(r.selector.names_all(), || count.unwrap_or(0)))
}

pub(super) fn rollout_step(
    conn: &Connection,
    env: &Envelope,
    id: &str,
    step: RolloutStep,
    reason: &str,
) -> Result<Response, Fail> {
    check_short_id("deployment id", id)?;
    if reason.len() > MAX_STEP_REASON_BYTES {
        return Err(invalid(format!(
            "reason is {} bytes, at most {MAX_STEP_REASON_BYTES} allowed",
            reason.len()
        )));
    }
    let Some((deployment, mut r, had_row)) = load_rollout(conn, id)? else {
        return Err(reject(
            RejectCode::NotFound,
            format!("deployment {id} does not exist"),
        ));
    };
    if !had_row {
        // The default row of a plain deployment, with its allowance as of now.
        r.allowed_failures = allowed_failures(conn, &r)?;
    }
    let from = r.state;
    let to = step_target(&r, step, env.at_ms).map_err(invalid)?;
    let opens_phase = match step {
        RolloutStep::Approve => {
            if same_person(&env.actor, &deployment.created_by) {
                return Err(invalid(
                    "the creator cannot approve their own deployment".to_owned(),
                ));
            }
            r.approved_by = Some(env.actor.clone());
            to == RolloutState::Running
        }
        RolloutStep::Start => true,
        RolloutStep::Resume => {
            if from == RolloutState::Halted {
                // The operator has seen these failures: only new ones count.
                r.failure_base = failed_clients(conn, id)?.len() as u64;
            }
            true
        }
        RolloutStep::OpenPhase(k) => {
            r.phase = k;
            true
        }
        RolloutStep::Abort { uninstall } => {
            if uninstall && deployment.kind == RELEASE_KIND {
                return Err(invalid(
                    "a release cannot be uninstalled: deploy the previous release".to_owned(),
                ));
            }
            r.uninstall = uninstall;
            false
        }
        RolloutStep::Pause | RolloutStep::Finish => false,
    };
    r.state = to;
    r.reason = reason.to_owned();
    if opens_phase {
        r.phase_opened_at_ms = env.at_ms;
        r.allowed_failures = allowed_failures(conn, &r)?;
    }
    store_rollout(conn, &r)?;
    Ok(Response::Done)
}

pub(super) fn report_removal(
    conn: &Connection,
    at_ms: i64,
    (deployment_id, client_id): (&str, &str),
    ok: bool,
    detail: &str,
) -> Result<Response, Fail> {
    check_short_id("deployment id", deployment_id)?;
    check_short_id("client id", client_id)?;
    if detail.len() > MAX_DETAIL_BYTES {
        return Err(invalid(format!(
            "removal detail of client {client_id} is {} bytes, at most {MAX_DETAIL_BYTES} allowed",
            detail.len()
        )));
    }
    let Some(r) = rollout_row(conn, deployment_id)? else {
        let exists: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM deployments WHERE id = ?1)")?
            .query_row([deployment_id], |row| row.get(0))?;
        return Err(if exists {
            invalid(format!(
                "deployment {deployment_id} was not aborted with --uninstall"
            ))
        } else {
            reject(
                RejectCode::NotFound,
                format!("deployment {deployment_id} does not exist"),
            )
        });
    };
    if !(r.state == RolloutState::Aborted && r.uninstall) {
        return Err(invalid(format!(
            "deployment {deployment_id} was not aborted with --uninstall"
        )));
    }
    let installed: Option<String> = conn
        .prepare_cached(
            "SELECT status FROM deployment_results WHERE deployment_id = ?1 AND client_id = ?2",
        )?
        .query_row(params![deployment_id, client_id], |row| row.get(0))
        .optional()?;
    if installed.as_deref() != Some("installed") {
        return Err(invalid(format!(
            "client {client_id} has not installed deployment {deployment_id}"
        )));
    }
    conn.prepare_cached(
        "INSERT INTO deployment_removals (deployment_id, client_id, ok, detail, at_ms, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, 1)
         ON CONFLICT (deployment_id, client_id) DO UPDATE SET ok = excluded.ok,
             detail = excluded.detail, at_ms = excluded.at_ms, attempts = attempts + 1",
    )?
    .execute(params![deployment_id, client_id, ok, detail, at_ms])?;
    Ok(Response::Done)
}
