//! The verdict on using a token, shared by `apply` (which then consumes a use) and the read
//! side's pre-check (`Reader::check_token`), so that both read the same columns and reach the
//! same verdict.

use rusqlite::{Connection, Row};

use crate::model::{RejectCode, Rejection};
use crate::rows::{FromRow, one};
use crate::rules::{constant_time_eq, normalize_sha256};

/// A token row as stored, for the checks shared by `apply` and the pre-check on the read side.
pub(crate) struct TokenRow {
    pub kind: String,
    pub secret_sha256: String,
    pub expires_at_ms: i64,
    pub uses_left: Option<i64>,
    pub revoked: bool,
    pub groups_json: String,
}

impl FromRow for TokenRow {
    const SELECT: &'static str =
        "SELECT kind, secret_sha256, expires_at_ms, uses_left, revoked, groups_json FROM tokens";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
        Ok(TokenRow {
            kind: r.get(0)?,
            secret_sha256: r.get(1)?,
            expires_at_ms: r.get(2)?,
            uses_left: r.get(3)?,
            revoked: r.get(4)?,
            groups_json: r.get(5)?,
        })
    }
}

pub(crate) fn load_token(
    conn: &Connection,
    token_id: &str,
) -> Result<Option<TokenRow>, rusqlite::Error> {
    one(conn, "WHERE id = ?1", [token_id])
}

/// Whether a token of `kind` may be used at `at_ms` with this secret hash: it exists, is of
/// that kind, the secret matches (compared in constant time), it is not revoked, not expired
/// and has uses left. Pure; the same verdict in the API's pre-check and in `apply`.
pub(crate) fn token_verdict(
    row: Option<&TokenRow>,
    token_id: &str,
    secret_sha256: &str,
    kind: &str,
    at_ms: i64,
) -> Result<(), Rejection> {
    let token_invalid = |why: String| Rejection {
        code: RejectCode::TokenInvalid,
        message: why,
    };
    let Some(row) = row else {
        return Err(token_invalid(format!("token {token_id} does not exist")));
    };
    if row.kind != kind {
        return Err(token_invalid(format!(
            "token {token_id} is not a {kind} token"
        )));
    }
    let secret_ok = normalize_sha256("secret_sha256", secret_sha256)
        .map(|s| constant_time_eq(s.as_bytes(), row.secret_sha256.as_bytes()))
        .unwrap_or(false);
    if !secret_ok {
        return Err(token_invalid(format!(
            "the secret does not match token {token_id}"
        )));
    }
    if row.revoked {
        return Err(token_invalid(format!("token {token_id} is revoked")));
    }
    if at_ms >= row.expires_at_ms {
        return Err(Rejection {
            code: RejectCode::TokenExpired,
            message: format!("token {token_id} expired at {}", row.expires_at_ms),
        });
    }
    if row.uses_left.is_some_and(|left| left <= 0) {
        return Err(Rejection {
            code: RejectCode::TokenUsedUp,
            message: format!("token {token_id} has no uses left"),
        });
    }
    Ok(())
}
