//! People's roles (`SetRole`): one row per person name, replaced whole.

use rusqlite::{Connection, params};

use super::{Fail, invalid};
use crate::model::{Envelope, Grant, Response};
use crate::rules::check_id;

pub(super) fn set_role(
    conn: &Connection,
    env: &Envelope,
    name: &str,
    grant: &Grant,
) -> Result<Response, Fail> {
    check_id("person", name).map_err(invalid)?;
    grant
        .check()
        .map_err(|e| invalid(format!("the role of {name}: {e}")))?;
    let scopes = serde_json::to_string(&grant.scopes)
        .map_err(|e| invalid(format!("the scope of {name} does not encode: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO roles (name, role, scopes, updated_at_ms, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET role = excluded.role, scopes = excluded.scopes,
             updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
    )?
    .execute(params![
        name,
        grant.role.as_str(),
        scopes,
        env.at_ms,
        env.actor
    ])?;
    Ok(Response::Done)
}
