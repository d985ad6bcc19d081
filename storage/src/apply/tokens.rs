//! Token commands: `CreateToken`, `RevokeToken`, and the use of a token that admits a node
//! (`JoinNode`, in `nodes`) or a client (`EnrollClient`, in `clients`). The verdict itself is
//! `token_check::token_verdict`, shared with the read side's pre-check.

use rusqlite::{Connection, params};

use super::{Fail, invalid, reject};
use crate::model::{Envelope, RejectCode, Response, TokenKind};
use crate::rules::{check_name, normalize_sha256};
use crate::token_check::{load_token, token_verdict};

/// The fields of a `CreateToken` command.
pub(super) struct NewToken<'a> {
    pub id: &'a str,
    pub kind: TokenKind,
    pub secret_sha256: &'a str,
    pub expires_at_ms: i64,
    pub uses: Option<u32>,
    pub groups: &'a [String],
}

pub(super) fn create_token(
    conn: &Connection,
    env: &Envelope,
    token: NewToken<'_>,
) -> Result<Response, Fail> {
    let NewToken {
        id,
        kind,
        secret_sha256,
        expires_at_ms,
        uses,
        groups,
    } = token;
    check_name("token id", id).map_err(invalid)?;
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE id = ?1)")?
        .query_row([id], |r| r.get(0))?;
    if exists {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("token {id} already exists"),
        ));
    }
    let secret = normalize_sha256("secret_sha256", secret_sha256).map_err(invalid)?;
    if expires_at_ms <= env.at_ms {
        return Err(invalid(format!(
            "token {id} would expire at {expires_at_ms}, not after its creation at {}",
            env.at_ms
        )));
    }
    if uses == Some(0) {
        return Err(invalid(format!("token {id} would have zero uses")));
    }
    for g in groups {
        check_name("group id", g).map_err(invalid)?;
    }
    let groups_json = serde_json::Value::from(groups.to_vec()).to_string();
    conn.prepare_cached(
        "INSERT INTO tokens (id, kind, secret_sha256, expires_at_ms, uses_left,
                             groups_json, revoked, created_at_ms, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
    )?
    .execute(params![
        id,
        kind.as_str(),
        secret,
        expires_at_ms,
        uses,
        groups_json,
        env.at_ms,
        env.actor
    ])?;
    Ok(Response::Done)
}

pub(super) fn revoke_token(conn: &Connection, id: &str) -> Result<Response, Fail> {
    let n = conn
        .prepare_cached("UPDATE tokens SET revoked = 1 WHERE id = ?1")?
        .execute([id])?;
    if n == 0 {
        return Err(reject(
            RejectCode::NotFound,
            format!("token {id} does not exist"),
        ));
    }
    Ok(Response::Done)
}

/// Checks a token of `kind` against its stored secret hash, revocation, expiry (`at_ms`)
/// and uses, consumes one use, and returns the groups it grants.
pub(super) fn consume_token(
    conn: &Connection,
    at_ms: i64,
    token_id: &str,
    secret_sha256: &str,
    kind: &str,
) -> Result<Vec<String>, Fail> {
    let row = load_token(conn, token_id)?;
    token_verdict(row.as_ref(), token_id, secret_sha256, kind, at_ms).map_err(Fail::Reject)?;
    let Some(row) = row else {
        return Err(reject(
            RejectCode::TokenInvalid,
            format!("token {token_id} does not exist"),
        ));
    };
    if let Some(left) = row.uses_left {
        conn.prepare_cached("UPDATE tokens SET uses_left = ?1 WHERE id = ?2")?
            .execute(params![left - 1, token_id])?;
    }
    serde_json::from_str(&row.groups_json).map_err(|e| {
        Fail::Sql(rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            Box::new(e),
        ))
    })
}
