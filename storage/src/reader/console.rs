//! Console queries: operator accounts and sessions.

use rusqlite::{OptionalExtension, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::{ConsoleSession, ConsoleUser, SignInLock};
use crate::rows::{FromRow, all, one};

impl Reader {
    /// An operator account, with its password hash (to verify a sign-in).
    pub fn console_user(&self, name: &str) -> Result<Option<ConsoleUser>, StorageError> {
        self.with(|c| Ok(one(c, "WHERE name = ?1", [name])?))
    }

    /// Every operator account, by name.
    pub fn console_users(&self) -> Result<Vec<ConsoleUser>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY name", [])?))
    }

    /// The account a login link was made for, if the link exists (used or not).
    pub fn console_link_user(&self, id: &str) -> Result<Option<String>, StorageError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT user FROM console_logins WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    pub fn console_session(&self, id: &str) -> Result<Option<ConsoleSession>, StorageError> {
        self.with(|c| Ok(one(c, "WHERE id = ?1", [id])?))
    }

    /// The newest `limit` sessions (open or not), newest first.
    pub fn console_sessions(&self, limit: u32) -> Result<Vec<ConsoleSession>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY started_at_ms DESC, id LIMIT ?1", [limit])?))
    }
}

impl FromRow for ConsoleUser {
    const SELECT: &'static str =
        "SELECT name, password_hash, created_at_ms, updated_at_ms, updated_by FROM console_users";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<ConsoleUser> {
        Ok(ConsoleUser {
            name: r.get(0)?,
            password_hash: r.get(1)?,
            created_at_ms: r.get(2)?,
            updated_at_ms: r.get(3)?,
            updated_by: r.get(4)?,
        })
    }
}

impl FromRow for ConsoleSession {
    const SELECT: &'static str = "SELECT id, user, secret_sha256, via, started_at_ms, \
                                  expires_at_ms, last_seen_ms, ended_at_ms FROM console_sessions";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<ConsoleSession> {
        Ok(ConsoleSession {
            id: r.get(0)?,
            user: r.get(1)?,
            secret_sha256: r.get(2)?,
            via: r.get(3)?,
            started_at_ms: r.get(4)?,
            expires_at_ms: r.get(5)?,
            last_seen_ms: r.get(6)?,
            ended_at_ms: r.get(7)?,
        })
    }
}

impl Reader {
    /// The sign-in locks of `keys` (an account's and a source's) that exist, ended or not.
    pub fn signin_locks(&self, keys: &[String]) -> Result<Vec<SignInLock>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, until_ms, strikes, updated_at_ms FROM signin_locks WHERE key = ?1",
            )?;
            let mut out = Vec::new();
            for k in keys {
                let row = stmt
                    .query_row([k], |r| {
                        Ok(SignInLock {
                            key: r.get(0)?,
                            until_ms: r.get(1)?,
                            strikes: r.get(2)?,
                            updated_at_ms: r.get(3)?,
                        })
                    })
                    .optional()?;
                out.extend(row);
            }
            Ok(out)
        })
    }
}
