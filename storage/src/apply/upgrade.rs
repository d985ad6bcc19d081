//! Rolling upgrade commands: `ReportBinary`, `StartRoll`, `RollNode`, `EndRoll`. One roll row
//! at most (the last one is kept for `upgrade status`); the leader drives it, nodes switch.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Fail, invalid, node_id_sql, reject};
use crate::model::{RejectCode, Response};
use crate::rules::{check_text, normalize_sha256};

/// The state of the current or last roll, if any.
fn roll_state(conn: &Connection) -> Result<Option<(String, String)>, rusqlite::Error> {
    conn.prepare_cached("SELECT state, sha256 FROM roll")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Longest reason a stopped roll keeps (the proposer shortens what it reports).
pub const MAX_ROLL_REASON_BYTES: usize = 2048;

fn check_sha256(sha256: &str) -> Result<(), Fail> {
    match normalize_sha256("release sha256", sha256) {
        Ok(lower) if lower == sha256 => Ok(()),
        Ok(_) => Err(invalid("release sha256 must be lowercase hex".to_owned())),
        Err(e) => Err(invalid(e)),
    }
}

pub(super) fn report_binary(
    conn: &Connection,
    node_id: u64,
    version: &str,
    sha256: &str,
) -> Result<Response, Fail> {
    let id = node_id_sql(node_id)?;
    check_text("node version", version).map_err(invalid)?;
    check_sha256(sha256)?;
    let n = conn
        .prepare_cached(
            "UPDATE nodes SET version = ?1, binary_sha256 = ?2 WHERE id = ?3 AND role != 'removed'",
        )?
        .execute(params![version, sha256, id])?;
    if n == 0 {
        return Err(reject(
            RejectCode::NotFound,
            format!("node {node_id} does not exist or is removed"),
        ));
    }
    Ok(Response::Done)
}

pub(super) fn start_roll(
    conn: &Connection,
    at_ms: i64,
    bundle_id: &str,
    sha256: &str,
) -> Result<Response, Fail> {
    check_sha256(sha256)?;
    let payload: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT p.name, p.size FROM payloads p JOIN bundles b ON b.seq = p.bundle_seq
             WHERE b.id = ?1 AND p.sha256 = ?2 AND p.kind = 'outpost-release'",
        )?
        .query_row(params![bundle_id, sha256], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((name, size)) = payload else {
        return Err(reject(
            RejectCode::NotFound,
            format!("bundle {bundle_id} holds no outpost-release payload {sha256}"),
        ));
    };
    match roll_state(conn)? {
        Some((state, current)) if state == "running" && current == sha256 => {
            return Ok(Response::Unchanged);
        }
        Some((state, current)) if state == "running" => {
            return Err(reject(
                RejectCode::AlreadyExists,
                format!("a roll to release {current} is running; it must end first"),
            ));
        }
        _ => {}
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO roll
             (singleton, bundle_id, name, sha256, size, state, node, reason, started_at_ms, updated_at_ms)
         VALUES (1, ?1, ?2, ?3, ?4, 'running', NULL, '', ?5, ?5)",
    )?
    .execute(params![bundle_id, name, sha256, size, at_ms])?;
    Ok(Response::Done)
}

fn running(conn: &Connection) -> Result<(), Fail> {
    match roll_state(conn)? {
        Some((state, _)) if state == "running" => Ok(()),
        _ => Err(reject(RejectCode::NotFound, "no roll is running")),
    }
}

pub(super) fn roll_node(
    conn: &Connection,
    at_ms: i64,
    node: Option<u64>,
) -> Result<Response, Fail> {
    running(conn)?;
    let node = node.map(node_id_sql).transpose()?;
    conn.prepare_cached("UPDATE roll SET node = ?1, updated_at_ms = ?2")?
        .execute(params![node, at_ms])?;
    Ok(Response::Done)
}

pub(super) fn end_roll(
    conn: &Connection,
    at_ms: i64,
    reason: Option<&str>,
) -> Result<Response, Fail> {
    running(conn)?;
    if let Some(r) = reason {
        check_text("roll stop reason", r).map_err(invalid)?;
        if r.len() > MAX_ROLL_REASON_BYTES {
            return Err(invalid(format!(
                "roll stop reason is {} bytes, more than {MAX_ROLL_REASON_BYTES}",
                r.len()
            )));
        }
    }
    let state = if reason.is_some() { "stopped" } else { "done" };
    conn.prepare_cached(
        "UPDATE roll SET state = ?1, reason = ?2, node = NULL, updated_at_ms = ?3",
    )?
    .execute(params![state, reason.unwrap_or(""), at_ms])?;
    Ok(Response::Done)
}
