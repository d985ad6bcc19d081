//! Client commands: enrollment and revocation, last-seen times, inventory reports, client
//! certificate renewal (`RenewClientCert`, `RotateClientCert`, `ConfirmClientCert`), and the
//! revocation of admin certificates (`RevokeAdmin`).

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::tokens::consume_token;
use super::{Fail, invalid, node_id_sql, reject};
use crate::model::{RejectCode, Response};
use crate::rules::{check_id, check_name, check_text, normalize_sha256};

/// A client renews its certificate at most once in this many milliseconds.
pub const RENEWAL_INTERVAL_MS: i64 = 3600 * 1000;
/// How long a renewed client's old serial stays valid at most (until the new one is
/// confirmed, or this long).
pub const RETIRED_SERIAL_GRACE_MS: i64 = 3600 * 1000;

pub(super) fn enroll_client(
    conn: &Connection,
    at_ms: i64,
    token_id: &str,
    secret_sha256: &str,
    client_id: &str,
    hostname: &str,
    cert_serial: &str,
) -> Result<Response, Fail> {
    check_id("client id", client_id).map_err(invalid)?;
    check_text("hostname", hostname).map_err(invalid)?;
    check_id("certificate serial", cert_serial).map_err(invalid)?;
    let groups = consume_token(conn, at_ms, token_id, secret_sha256, "client")?;
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM clients WHERE id = ?1)")?
        .query_row([client_id], |r| r.get(0))?;
    if exists {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("client {client_id} already exists"),
        ));
    }
    let groups_json = serde_json::to_string(&groups).unwrap_or_else(|_| "[]".to_owned());
    conn.prepare_cached(
        "INSERT INTO clients (id, hostname, groups_json, cert_serial, enrolled_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![client_id, hostname, groups_json, cert_serial, at_ms])?;
    Ok(Response::Done)
}

pub(super) fn revoke_client(
    conn: &Connection,
    at_ms: i64,
    client_id: &str,
) -> Result<Response, Fail> {
    let serial: Option<String> = conn
        .prepare_cached("SELECT cert_serial FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    let Some(serial) = serial else {
        return Err(reject(
            RejectCode::NotFound,
            format!("client {client_id} does not exist"),
        ));
    };
    conn.prepare_cached("UPDATE clients SET revoked = 1 WHERE id = ?1")?
        .execute([client_id])?;
    conn.prepare_cached(
        "INSERT INTO revoked_serials (serial, client_id, revoked_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (serial) DO NOTHING",
    )?
    .execute(params![serial, client_id, at_ms])?;
    Ok(Response::Done)
}

pub(super) fn touch_clients(
    conn: &Connection,
    node_id: u64,
    seen: &[(String, i64)],
) -> Result<Response, Fail> {
    let node = node_id_sql(node_id)?;
    let mut stmt = conn.prepare_cached(
        "UPDATE clients SET last_seen_ms = ?2, last_seen_node = ?3
         WHERE id = ?1 AND revoked = 0 AND (last_seen_ms IS NULL OR last_seen_ms < ?2)",
    )?;
    for (id, at) in seen {
        stmt.execute(params![id, at, node])?;
    }
    Ok(Response::Done)
}

pub(super) fn report_inventory(
    conn: &Connection,
    at_ms: i64,
    client_id: &str,
    facts_json: &str,
) -> Result<Response, Fail> {
    if facts_json.len() > crate::rules::MAX_FACTS_BYTES {
        return Err(invalid(format!(
            "inventory of client {client_id} is {} bytes, at most {} allowed",
            facts_json.len(),
            crate::rules::MAX_FACTS_BYTES
        )));
    }
    let facts: serde_json::Value = serde_json::from_str(facts_json)
        .map_err(|e| invalid(format!("inventory of client {client_id} is not JSON: {e}")))?;
    if !facts.is_object() {
        return Err(invalid(format!(
            "inventory of client {client_id} is not a JSON object"
        )));
    }
    let revoked: Option<bool> = conn
        .prepare_cached("SELECT revoked FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    match revoked {
        None => {
            return Err(reject(
                RejectCode::NotFound,
                format!("client {client_id} does not exist"),
            ));
        }
        Some(true) => return Err(invalid(format!("client {client_id} is revoked"))),
        Some(false) => {}
    }
    let sha = hex::encode(Sha256::digest(facts_json));
    let old: Option<(String, String)> = conn
        .prepare_cached("SELECT facts_json, facts_sha256 FROM inventory WHERE client_id = ?1")?
        .query_row([client_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if old.as_ref().is_some_and(|(_, s)| *s == sha) {
        return Ok(Response::Done);
    }
    let old_facts = old
        .and_then(|(j, _)| serde_json::from_str(&j).ok())
        .unwrap_or(serde_json::Value::Null);
    let changed = crate::rules::changed_facts(&old_facts, &facts);
    conn.prepare_cached(
        "INSERT INTO inventory (client_id, facts_json, facts_sha256, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (client_id) DO UPDATE SET facts_json = excluded.facts_json,
             facts_sha256 = excluded.facts_sha256, updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![client_id, facts_json, sha, at_ms])?;
    conn.prepare_cached(
        "INSERT INTO inventory_history (client_id, at_ms, facts_sha256, changed_json) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![client_id, at_ms, sha, serde_json::to_string(&changed).unwrap_or_else(|_| "[]".into())])?;
    // History is bounded per client, in the apply that inserts: what is deleted depends on
    // the rows alone, so every node of this version keeps the same rows. A node of an older
    // version keeps every row (reads of old history differ between the two until it is
    // upgraded and this client reports again); no decision depends on these rows.
    conn.prepare_cached(
        "DELETE FROM inventory_history WHERE client_id = ?1 AND seq NOT IN
             (SELECT seq FROM inventory_history WHERE client_id = ?1 ORDER BY seq DESC LIMIT ?2)",
    )?
    .execute(params![
        client_id,
        crate::rules::INVENTORY_HISTORY_KEPT as i64
    ])?;
    Ok(Response::Done)
}

pub(super) fn renew_client_cert(
    conn: &Connection,
    client_id: &str,
    cert_serial: &str,
) -> Result<Response, Fail> {
    check_id("certificate serial", cert_serial).map_err(invalid)?;
    let revoked: Option<bool> = conn
        .prepare_cached("SELECT revoked FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    match revoked {
        None => Err(reject(
            RejectCode::NotFound,
            format!("client {client_id} does not exist"),
        )),
        Some(true) => Err(invalid(format!("client {client_id} is revoked"))),
        Some(false) => {
            conn.prepare_cached("UPDATE clients SET cert_serial = ?2 WHERE id = ?1")?
                .execute(params![client_id, cert_serial])?;
            Ok(Response::Done)
        }
    }
}

/// `RotateClientCert`: the current serial must be `old_serial`, the client enrolled and not
/// revoked, and its last renewal at least `RENEWAL_INTERVAL_MS` ago.
pub(super) fn rotate_client_cert(
    conn: &Connection,
    at_ms: i64,
    client_id: &str,
    (old_serial, new_serial): (&str, &str),
    new_key_sha256: &str,
) -> Result<Response, Fail> {
    check_id("certificate serial", new_serial).map_err(invalid)?;
    let key_sha = normalize_sha256("key sha256", new_key_sha256).map_err(invalid)?;
    let row: Option<(bool, String, Option<i64>)> = conn
        .prepare_cached("SELECT revoked, cert_serial, renewed_at_ms FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((revoked, current, renewed_at)) = row else {
        return Err(reject(
            RejectCode::NotFound,
            format!("client {client_id} does not exist"),
        ));
    };
    if revoked {
        return Err(invalid(format!("client {client_id} is revoked")));
    }
    if current != old_serial {
        return Err(invalid(format!(
            "certificate {old_serial} is not client {client_id}'s current certificate"
        )));
    }
    if let Some(t) = renewed_at
        && at_ms < t.saturating_add(RENEWAL_INTERVAL_MS)
    {
        return Err(invalid(format!(
            "client {client_id} renewed its certificate at {t}; the next renewal is allowed from {}",
            t.saturating_add(RENEWAL_INTERVAL_MS)
        )));
    }
    conn.prepare_cached(
        "UPDATE clients SET cert_serial = ?2, prev_serial = ?3, prev_serial_until_ms = ?4,
                            renewed_at_ms = ?5, cert_key_sha256 = ?6 WHERE id = ?1",
    )?
    .execute(params![
        client_id,
        new_serial,
        old_serial,
        at_ms.saturating_add(RETIRED_SERIAL_GRACE_MS),
        at_ms,
        key_sha
    ])?;
    Ok(Response::Done)
}

/// `ConfirmClientCert`: the client used `serial`, its current certificate; the retired one
/// ends now.
pub(super) fn confirm_client_cert(
    conn: &Connection,
    at_ms: i64,
    client_id: &str,
    serial: &str,
) -> Result<Response, Fail> {
    let current: Option<String> = conn
        .prepare_cached("SELECT cert_serial FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    match current {
        None => Err(reject(
            RejectCode::NotFound,
            format!("client {client_id} does not exist"),
        )),
        Some(c) if c != serial => Err(invalid(format!(
            "certificate {serial} is not client {client_id}'s current certificate"
        ))),
        Some(_) => {
            conn.prepare_cached(
                "UPDATE clients SET prev_serial_until_ms = MIN(prev_serial_until_ms, ?2)
                 WHERE id = ?1 AND prev_serial IS NOT NULL",
            )?
            .execute(params![client_id, at_ms])?;
            Ok(Response::Done)
        }
    }
}

/// Revokes the admin certificates named `name` issued up to `at_ms` (a later revocation of
/// the same name moves the line forward, never back).
pub(super) fn revoke_admin(conn: &Connection, at_ms: i64, name: &str) -> Result<Response, Fail> {
    check_name("admin name", name).map_err(invalid)?;
    conn.prepare_cached(
        "INSERT INTO revoked_admins (name, revoked_at_ms) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET revoked_at_ms = MAX(revoked_at_ms, excluded.revoked_at_ms)",
    )?
    .execute(params![name, at_ms])?;
    Ok(Response::Done)
}
