//! Configuration commands: `SetConfig`, `DeleteConfig` (bundles' config payloads also go
//! through `set_config`). Every key carries a version that grows with each set.

use rusqlite::{Connection, params};

use super::{Fail, invalid, reject};
use crate::model::{Envelope, RejectCode, Response, Scope};
use crate::rules::{check_name, check_scope, check_value};

pub(super) fn set_config(
    conn: &Connection,
    env: &Envelope,
    scope: &Scope,
    key: &str,
    value: &str,
) -> Result<Response, Fail> {
    check_scope(scope).map_err(invalid)?;
    check_name("config key", key).map_err(invalid)?;
    check_value(key, value).map_err(invalid)?;
    let (kind, sid) = scope.to_columns();
    // One statement: a new key starts at version 1, a set key goes one up (and stays at
    // i64::MAX, as a saturating add would).
    let version: i64 = conn
        .prepare_cached(
            "INSERT INTO config (scope_kind, scope_id, key, value, version, updated_at_ms, updated_by)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6)
             ON CONFLICT (scope_kind, scope_id, key) DO UPDATE SET value = excluded.value,
                 version = CASE WHEN config.version < 9223372036854775807
                                THEN config.version + 1 ELSE config.version END,
                 updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by
             RETURNING version",
        )?
        .query_row(params![kind, sid, key, value, env.at_ms, env.actor], |r| {
            r.get(0)
        })?;
    Ok(Response::ConfigVersion(version as u64))
}

pub(super) fn delete_config(conn: &Connection, scope: &Scope, key: &str) -> Result<Response, Fail> {
    check_scope(scope).map_err(invalid)?;
    check_name("config key", key).map_err(invalid)?;
    let (kind, sid) = scope.to_columns();
    let n = conn
        .prepare_cached("DELETE FROM config WHERE scope_kind = ?1 AND scope_id = ?2 AND key = ?3")?
        .execute(params![kind, sid, key])?;
    if n == 0 {
        return Err(reject(
            RejectCode::NotFound,
            format!("config key {key} is not set in scope {scope}"),
        ));
    }
    Ok(Response::Done)
}
