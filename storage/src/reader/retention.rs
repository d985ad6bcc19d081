//! Queries of the leader's retention pass and of the format-9 gate: the policy in config,
//! where to cut the audit, whether older inventory history or removable results exist, and
//! whether every member runs a version that decodes format 9.

use std::time::Duration;

use rusqlite::OptionalExtension;

use super::Reader;
use crate::error::StorageError;
use crate::retention::{
    MAX_AUDIT_CUT, RESULTS_REMOVABLE, RETENTION_AUDIT_KEY, RETENTION_INVENTORY_KEY,
    RETENTION_RESULTS_KEY, RetentionPolicy, parse_retention, version_at_least,
};

impl Reader {
    /// Whether every member in the state's `nodes` table (removed ones aside) reports
    /// `version` or newer. A version that does not parse counts as older; no member = false.
    pub fn members_at_least(&self, version: &str) -> Result<bool, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT version FROM nodes WHERE role != 'removed'")?;
            let versions = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(!versions.is_empty() && versions.iter().all(|v| version_at_least(v, version)))
        })
    }

    /// The retention policy (global `retention.*` keys). A value that does not parse (only
    /// an older node could have committed one) keeps that history forever, with a warning.
    pub fn retention_policy(&self) -> Result<RetentionPolicy, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT value FROM config WHERE scope_kind = 'global' AND scope_id = '' AND key = ?1",
            )?;
            let mut get = |key: &str| -> Result<Option<Duration>, StorageError> {
                let v: Option<String> = stmt.query_row([key], |r| r.get(0)).optional()?;
                Ok(v.and_then(|v| match parse_retention(&v) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "retention value ignored: keeping forever");
                        None
                    }
                }))
            };
            Ok(RetentionPolicy {
                audit: get(RETENTION_AUDIT_KEY)?,
                inventory_history: get(RETENTION_INVENTORY_KEY)?,
                results: get(RETENTION_RESULTS_KEY)?,
            })
        })
    }

    /// The audit seq a compaction at `cut_ms` cuts through: walking from the chain's base in
    /// seq order, the last record before the first one at or after `cut_ms`, at most
    /// `MAX_AUDIT_CUT` records past the base, never the newest record. None = nothing to cut.
    pub fn audit_cut_seq(&self, cut_ms: i64) -> Result<Option<u64>, StorageError> {
        self.with(|c| {
            let base: i64 = c
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")?
                .query_row([], |r| r.get(0))?;
            let newest: i64 = c
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM audit")?
                .query_row([], |r| r.get(0))?;
            let mut stmt = c.prepare_cached(
                "SELECT seq, at_ms FROM audit WHERE seq > ?1 AND seq < ?2 ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = stmt.query(rusqlite::params![base, newest, MAX_AUDIT_CUT])?;
            let mut through = None;
            while let Some(row) = rows.next()? {
                let (seq, at_ms): (i64, i64) = (row.get(0)?, row.get(1)?);
                if at_ms >= cut_ms {
                    break;
                }
                through = Some(seq as u64);
            }
            Ok(through)
        })
    }

    /// Whether inventory history older than `cut_ms` exists.
    pub fn inventory_history_before(&self, cut_ms: i64) -> Result<bool, StorageError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM inventory_history WHERE at_ms < ?1)",
            )?
            .query_row([cut_ms], |r| r.get(0))?)
        })
    }

    /// Whether deployment results older than `cut_ms` exist that a compaction may remove
    /// (the rule `apply` deletes by: superseded, finished deployments).
    pub fn removable_results_before(&self, cut_ms: i64) -> Result<bool, StorageError> {
        self.with(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM deployment_results AS r
                                WHERE r.at_ms < ?1 AND {RESULTS_REMOVABLE})"
            ))?
            .query_row([cut_ms], |r| r.get(0))?)
        })
    }
}
