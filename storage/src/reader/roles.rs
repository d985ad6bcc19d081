//! People's roles, and the audit read by person.

use rusqlite::Row;
use rusqlite::types::Type;

use super::Reader;
use crate::error::StorageError;
use crate::model::{AuditRecord, Grant, PersonRole, RoleRecord, RoleScope, Selector};
use crate::rollout_rows::targeted;
use crate::rows::{FromRow, all, one};

impl Reader {
    /// The row of `name`, if one was set.
    pub fn role(&self, name: &str) -> Result<Option<RoleRecord>, StorageError> {
        self.with(|c| Ok(one(c, "WHERE name = ?1", [name])?))
    }

    /// What `name` may do: its row, or an admin's grant when it has none (see `model/roles.rs`).
    pub fn grant(&self, name: &str) -> Result<Grant, StorageError> {
        Ok(self
            .role(name)?
            .map(|r| r.grant)
            .unwrap_or_else(Grant::admin))
    }

    /// Every row, by name.
    pub fn roles(&self) -> Result<Vec<RoleRecord>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY name", [])?))
    }

    /// The clients `selector` targets now that `grant` does not reach, by id: a scoped
    /// person may deploy only where every target is in reach.
    pub fn targets_outside(
        &self,
        selector: &Selector,
        grant: &Grant,
    ) -> Result<Vec<String>, StorageError> {
        if grant.whole_site() {
            return Ok(Vec::new());
        }
        self.with(|c| {
            Ok(targeted(c, selector)?
                .into_iter()
                .filter(|t| !grant.reaches(&t.groups, &t.labels))
                .map(|t| t.id)
                .collect())
        })
    }

    /// Up to `limit` audit records of one actor, oldest first: after `after_seq` when given,
    /// else the newest. `actor` is a person's name (their `admin:NAME` and `console:NAME`
    /// records, whatever role they held) or a whole actor (`local-admin`, `node:3`,
    /// `admin:NAME`), which also matches the longer texts that begin with it and a space or a
    /// colon (`admin:NAME as viewer`, `node:3:discovery`).
    pub fn audit_by_actor(
        &self,
        actor: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        let whole = actor.contains(':')
            || !actor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            || actor == "local-admin"
            || actor == "auto-remove";
        let (a, b) = if whole {
            (actor.to_owned(), actor.to_owned())
        } else {
            (format!("admin:{actor}"), format!("console:{actor}"))
        };
        // The index on actor serves the range; the exact rule (the whole text, or it and a
        // space or colon) is the filter.
        let matches = "((actor >= ?1 AND actor < ?1 || '~' AND (actor = ?1 OR substr(actor, length(?1) + 1, 1) IN (' ', ':')))
                     OR (actor >= ?2 AND actor < ?2 || '~' AND (actor = ?2 OR substr(actor, length(?2) + 1, 1) IN (' ', ':'))))";
        self.with(|c| {
            Ok(match after_seq {
                Some(after) => all(
                    c,
                    &format!("WHERE {matches} AND seq > ?3 ORDER BY seq LIMIT ?4"),
                    rusqlite::params![a, b, i64::try_from(after).unwrap_or(i64::MAX), limit],
                )?,
                None => {
                    let mut rows: Vec<AuditRecord> = all(
                        c,
                        &format!("WHERE {matches} ORDER BY seq DESC LIMIT ?3"),
                        rusqlite::params![a, b, limit],
                    )?;
                    rows.reverse();
                    rows
                }
            })
        })
    }
}

impl FromRow for RoleRecord {
    const SELECT: &'static str = "SELECT name, role, scopes, updated_at_ms, updated_by FROM roles";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<RoleRecord> {
        let bad = |i: usize, e: String| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                Type::Text,
                Box::<dyn std::error::Error + Send + Sync>::from(e),
            )
        };
        let role = PersonRole::parse(&r.get::<_, String>(1)?).map_err(|e| bad(1, e))?;
        let scopes: Vec<RoleScope> = serde_json::from_str(&r.get::<_, String>(2)?)
            .map_err(|e| bad(2, format!("the scopes of a role: {e}")))?;
        Ok(RoleRecord {
            name: r.get(0)?,
            grant: Grant { role, scopes },
            updated_at_ms: r.get(3)?,
            updated_by: r.get(4)?,
        })
    }
}
