//! Token queries and the token pre-check.

use rusqlite::Row;

use super::Reader;
use crate::error::StorageError;
use crate::model::{TokenCheck, TokenKind, TokenRecord};
use crate::rows::{FromRow, all, corrupt, json, one};
use crate::token_check::{load_token, token_verdict};

impl Reader {
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StorageError> {
        self.with(|c| Ok(one(c, "WHERE id = ?1", [id])?))
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY id", [])?))
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

impl FromRow for TokenRecord {
    const SELECT: &'static str = "SELECT id, kind, expires_at_ms, uses_left, groups_json, revoked, \
                                  created_at_ms FROM tokens";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
        let id: String = r.get(0)?;
        let bad = |col: usize, what: &str| corrupt(col, format!("token {id} has bad {what}"));
        let kind = TokenKind::parse(&r.get::<_, String>(1)?).ok_or_else(|| bad(1, "kind"))?;
        let uses_left = r
            .get::<_, Option<i64>>(3)?
            .map(u32::try_from)
            .transpose()
            .map_err(|_| bad(3, "uses_left"))?;
        let groups = json(r, 4, |_| format!("token {id} has bad groups"))?;
        Ok(TokenRecord {
            kind,
            expires_at_ms: r.get(2)?,
            uses_left,
            groups,
            revoked: r.get(5)?,
            created_at_ms: r.get(6)?,
            id,
        })
    }
}
