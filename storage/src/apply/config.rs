//! Configuration commands: `SetConfig`, `DeleteConfig` (bundles' config payloads also go
//! through `set_config`). Every key carries a version that grows with each set.

use rusqlite::{Connection, OptionalExtension, params};

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
    let old: Option<i64> = conn
        .prepare_cached(
            "SELECT version FROM config WHERE scope_kind = ?1 AND scope_id = ?2 AND key = ?3",
        )?
        .query_row(params![kind, sid, key], |r| r.get(0))
        .optional()?;
    let version = old.unwrap_or(0).saturating_add(1);
    conn.prepare_cached(
        "INSERT INTO config (scope_kind, scope_id, key, value, version, updated_at_ms, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (scope_kind, scope_id, key) DO UPDATE SET value = excluded.value,
             version = excluded.version, updated_at_ms = excluded.updated_at_ms,
             updated_by = excluded.updated_by",
    )?
    .execute(params![
        kind, sid, key, value, version, env.at_ms, env.actor
    ])?;
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
