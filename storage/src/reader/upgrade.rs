//! The rolling upgrade: the current or last roll.

use rusqlite::{OptionalExtension, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::RollRecord;
use crate::rows::FromRow;

impl Reader {
    /// The current roll, or the last one (done or stopped); None before any.
    pub fn roll(&self) -> Result<Option<RollRecord>, StorageError> {
        self.with(|c| {
            Ok(c.prepare_cached(RollRecord::SELECT)?
                .query_row([], RollRecord::from_row)
                .optional()?)
        })
    }
}

impl FromRow for RollRecord {
    const SELECT: &'static str = "SELECT bundle_id, name, sha256, size, state, node, reason,
        started_at_ms, updated_at_ms FROM roll";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<RollRecord> {
        Ok(RollRecord {
            bundle_id: r.get(0)?,
            name: r.get(1)?,
            sha256: r.get(2)?,
            size: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            state: r.get(4)?,
            node: r
                .get::<_, Option<i64>>(5)?
                .and_then(|n| u64::try_from(n).ok()),
            reason: r.get(6)?,
            started_at_ms: r.get(7)?,
            updated_at_ms: r.get(8)?,
        })
    }
}
