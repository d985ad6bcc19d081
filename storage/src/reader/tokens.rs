//! Token queries and the token pre-check.

use rusqlite::{OptionalExtension, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::{TokenCheck, TokenKind, TokenRecord};
use crate::token_check::{load_token, token_verdict};

impl Reader {
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StorageError> {
        self.with(|c| {
            c.query_row(&format!("{TOKEN_SELECT} WHERE id = ?1"), [id], raw_token)
                .optional()?
                .map(token_from_raw)
                .transpose()
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("{TOKEN_SELECT} ORDER BY id"))?;
            let rows = stmt.query_map([], raw_token)?;
            rows.map(|r| token_from_raw(r?)).collect()
        })
    }

    /// Whether a `kind` token with this secret hash may be used at `at_ms`, without using it:
    /// the same verdict `apply` reaches (exists, kind, secret in constant time, not revoked,
    /// not expired, uses left), so a request that would be refused never reaches Raft.
    pub fn check_token(
        &self,
        token_id: &str,
        secret_sha256: &str,
        kind: TokenKind,
        at_ms: i64,
    ) -> Result<TokenCheck, StorageError> {
        self.with(|c| {
            let row = load_token(c, token_id)?;
            let verdict =
                token_verdict(row.as_ref(), token_id, secret_sha256, kind.as_str(), at_ms);
            Ok(match (row, verdict) {
                (_, Ok(())) => TokenCheck::Usable,
                (None, Err(r)) => TokenCheck::Unknown(r),
                (Some(_), Err(r)) => TokenCheck::Refused(r),
            })
        })
    }
}

const TOKEN_SELECT: &str = "SELECT id, kind, expires_at_ms, uses_left, groups_json, revoked, \
                            created_at_ms FROM tokens";

type RawToken = (String, String, i64, Option<i64>, String, bool, i64);

fn raw_token(r: &Row<'_>) -> rusqlite::Result<RawToken> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn token_from_raw(r: RawToken) -> Result<TokenRecord, StorageError> {
    let (id, kind, expires_at_ms, uses_left, groups_json, revoked, created_at_ms) = r;
    let bad = |what: &str| StorageError::Corrupt(format!("token {id} has bad {what}"));
    let kind = TokenKind::parse(&kind).ok_or_else(|| bad("kind"))?;
    let uses_left = uses_left
        .map(u32::try_from)
        .transpose()
        .map_err(|_| bad("uses_left"))?;
    let groups: Vec<String> = serde_json::from_str(&groups_json).map_err(|_| bad("groups"))?;
    Ok(TokenRecord {
        id,
        kind,
        expires_at_ms,
        uses_left,
        groups,
        revoked,
        created_at_ms,
    })
}
