//! What `ReportDeployment` does on a deployment with a rollout row (format 8): a client may
//! report when the selector targets it now or it reported before (`check_reporter`), and a
//! failure over the brake halts a running rollout in the same command (`brake`). Plain
//! deployments (no row) keep exactly their format-3 behaviour in `deployments`.

use rusqlite::{Connection, params};

use super::{Fail, invalid};
use crate::model::{Response, RolloutRecord, RolloutState};
use crate::rollout_rows::{failed_clients, store_rollout, targets};
use crate::rows::one;

/// How many failed clients a halt's reason names.
const HALT_NAMES: usize = 10;

/// Deployment `id`'s rollout row, if it has one (plain deployments have none).
pub(super) fn rollout_row(conn: &Connection, id: &str) -> Result<Option<RolloutRecord>, Fail> {
    Ok(one(conn, "WHERE deployment_id = ?1", [id])?)
}

/// A client may report for a rollout it is targeted by now, or that it reported for before
/// (a client that lost its label still reports the install it had started).
pub(super) fn check_reporter(
    conn: &Connection,
    r: &RolloutRecord,
    client_id: &str,
) -> Result<(), Fail> {
    if targets(conn, &r.selector, client_id)? {
        return Ok(());
    }
    let reported: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM deployment_results
                            WHERE deployment_id = ?1 AND client_id = ?2)",
        )?
        .query_row(params![r.deployment_id, client_id], |row| row.get(0))?;
    if reported {
        Ok(())
    } else {
        Err(invalid(format!(
            "deployment {} does not target client {client_id}",
            r.deployment_id
        )))
    }
}

/// After a failure on a running rollout: more failures than allowed (beyond those the
/// operator saw) halt it, in this same command, naming the failed clients.
pub(super) fn brake(conn: &Connection, mut r: RolloutRecord) -> Result<Response, Fail> {
    if r.state != RolloutState::Running {
        return Ok(Response::Done);
    }
    let failed = failed_clients(conn, &r.deployment_id)?;
    let over = (failed.len() as u64).saturating_sub(r.failure_base);
    if over <= r.allowed_failures {
        return Ok(Response::Done);
    }
    let mut names = failed
        .iter()
        .take(HALT_NAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if failed.len() > HALT_NAMES {
        names.push_str(", ...");
    }
    r.state = RolloutState::Halted;
    let noun = if over == 1 { "failure" } else { "failures" };
    r.reason = format!("{over} {noun} > {} allowed: {names}", r.allowed_failures);
    store_rollout(conn, &r)?;
    Ok(Response::Halted { reason: r.reason })
}
