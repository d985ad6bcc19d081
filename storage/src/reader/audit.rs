//! The audit log's reads: records in pages (the CLI, the console, an export), the chain's base
//! (the newest checkpoint, or genesis) and the chain checks.
//!
//! Two checks, both walking rows in seq order inside one read transaction, never holding the
//! log in memory:
//! - full (`verify_audit_full`): from the base, every live row, then the head in meta;
//! - incremental (`verify_audit_since`): from a mark the caller proved earlier (seq, hash),
//!   only the rows after it, then the head. The mark is trusted only while record `mark.seq`
//!   still holds `mark.hash`; a mark that is gone (moved out by a compaction, older than the
//!   base, beyond the head as after a restore) or changed falls back to the full check.
//!
//! Both return the last record proven, so the caller can move its mark. An edit before the
//! mark is found only by the full check: that is the price of not re-reading history, and
//! why `audit verify --full` exists.

use rusqlite::{OptionalExtension, Row, Transaction};

use super::Reader;
use crate::audit::{AuditFields, ChainWalker, GENESIS_HASH, StoredRow};
use crate::error::StorageError;
use crate::model::{
    AuditChain, AuditCheck, AuditCheckpoint, AuditMark, AuditRecord, AuditVerify,
    ChainedAuditRecord,
};
use crate::rows::{FromRow, all};
use crate::schema::meta_blob;

impl Reader {
    /// Up to `limit` audit records with seq > `after_seq`, oldest first.
    pub fn audit(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRecord>, StorageError> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.with(|c| {
            Ok(all(
                c,
                "WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                rusqlite::params![after, limit],
            )?)
        })
    }

    /// Up to `limit` audit records with seq > `after_seq` and seq <= `through_seq`, oldest
    /// first, each with its prev_hash (an export, a page at a time).
    pub fn audit_chained(
        &self,
        after_seq: u64,
        through_seq: u64,
        limit: u32,
    ) -> Result<Vec<ChainedAuditRecord>, StorageError> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let through = i64::try_from(through_seq).unwrap_or(i64::MAX);
        self.with(|c| {
            let rows: Vec<ChainRow> = all(
                c,
                "WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
                rusqlite::params![after, through, limit],
            )?;
            Ok(rows.into_iter().map(ChainRow::into_chained).collect())
        })
    }

    /// Up to `limit` audit records with seq < `before_seq`, newest first (the console's pages).
    pub fn audit_before(
        &self,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StorageError> {
        let before = i64::try_from(before_seq).unwrap_or(i64::MAX);
        self.with(|c| {
            Ok(all(
                c,
                "WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
                rusqlite::params![before, limit],
            )?)
        })
    }

    /// The seq of the last record whose time is at most `until_ms` such that every record
    /// before it is too (the prefix of the log up to that time): the first record after
    /// `until_ms`, minus one; the newest record when none is later. None: no live record.
    pub fn audit_last_until(&self, until_ms: i64) -> Result<Option<u64>, StorageError> {
        self.with(|c| {
            let later: Option<i64> = c
                .prepare_cached("SELECT MIN(seq) FROM audit WHERE at_ms > ?1")?
                .query_row([until_ms], |r| r.get(0))?;
            let newest: Option<i64> = c
                .prepare_cached("SELECT MAX(seq) FROM audit")?
                .query_row([], |r| r.get(0))?;
            Ok(match (later, newest) {
                (_, None) => None,
                (Some(l), Some(_)) => Some(u64::try_from(l - 1).unwrap_or(0)),
                (None, Some(n)) => Some(u64::try_from(n).unwrap_or(0)),
            })
        })
    }

    /// The chain checked (incrementally from `mark` unless `full`) and the hash held at
    /// `want_seq`, or at the last record when there are fewer: what two nodes compare.
    pub fn audit_chain_since(
        &self,
        want_seq: u64,
        mark: Option<(u64, String)>,
        full: bool,
    ) -> Result<AuditChain, StorageError> {
        let v = if full {
            self.verify_audit_full()?
        } else {
            self.verify_audit_since(mark)?
        };
        let last = self.audit_head()?.map(|(seq, _)| seq).unwrap_or(0);
        let at_seq = want_seq.min(last);
        let hash = self.audit_hash_at(at_seq)?;
        Ok(AuditChain {
            check: v.check,
            at_seq,
            hash,
            base: v.base,
            verified: v.verified,
            walked: v.walked,
            incremental: v.incremental,
        })
    }

    /// `audit_chain_since` with a full check.
    pub fn audit_chain(&self, want_seq: u64) -> Result<AuditChain, StorageError> {
        self.audit_chain_since(want_seq, None, true)
    }

    /// The hash of audit record `seq` (None for 0 or a record this node does not have).
    pub fn audit_hash_at(&self, seq: u64) -> Result<Option<String>, StorageError> {
        if seq == 0 {
            return Ok(None);
        }
        self.with(|c| Ok(hash_at(c, seq)?))
    }

    /// The newest audit record's seq and hash, if any.
    pub fn audit_head(&self) -> Result<Option<(u64, String)>, StorageError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
                    .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                    .optional()?
                    .map(|(seq, hash)| (u64::try_from(seq).unwrap_or(0), hash)),
            )
        })
    }

    /// The newest checkpoint: the chain's base once a compaction has moved records out (None:
    /// the chain starts at genesis).
    pub fn audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StorageError> {
        self.with(|c| Ok(checkpoint(c)?))
    }

    /// The full check: every live row from the base, then the head in meta.
    pub fn verify_audit_chain(&self) -> Result<AuditCheck, StorageError> {
        Ok(self.verify_audit_full()?.check)
    }

    /// The full check, with the last record proven (the caller's new mark).
    pub fn verify_audit_full(&self) -> Result<AuditVerify, StorageError> {
        self.verify_audit_since(None)
    }

    /// The incremental check from `mark` (see the module doc); None or an unusable mark: the
    /// full check.
    pub fn verify_audit_since(
        &self,
        mark: Option<(u64, String)>,
    ) -> Result<AuditVerify, StorageError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let base = checkpoint(&tx)?;
            let (base_seq, base_hash) = base
                .as_ref()
                .map(|b| (b.seq, b.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.to_owned()));
            let start = match mark {
                Some((seq, hash)) if seq > base_seq && hash_at(&tx, seq)? == Some(hash.clone()) => {
                    Some((seq, hash))
                }
                _ => None,
            };
            let incremental = start.is_some();
            let (from_seq, from_hash) = start.unwrap_or((base_seq, base_hash));
            // A full walk reads every row (a row left at or below the base breaks it); an
            // incremental one only the rows after the mark.
            let after = if incremental { from_seq } else { 0 };
            let (check, verified, walked) = walk(&tx, from_seq, &from_hash, after)?;
            Ok(AuditVerify {
                check,
                base,
                verified,
                walked,
                incremental,
            })
        })
    }
}

/// Walks rows with seq > `after` from the base (`from_seq`, `from_hash`), then the head.
fn walk(
    tx: &Transaction<'_>,
    from_seq: u64,
    from_hash: &str,
    after: u64,
) -> Result<(AuditCheck, Option<AuditMark>, u64), StorageError> {
    let head = meta_blob(tx, "audit_head")?.map(|b| String::from_utf8_lossy(&b).into_owned());
    let mut walker = ChainWalker::from_base(from_seq, from_hash);
    {
        // Row by row: the log can be long.
        let mut stmt = tx.prepare(&format!("{} WHERE seq > ?1 ORDER BY seq", ChainRow::SELECT))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        for r in stmt.query_map([after], ChainRow::from_row)? {
            let r = r?;
            let row = StoredRow {
                fields: AuditFields {
                    seq: u64::try_from(r.seq).unwrap_or(0),
                    at_ms: r.at_ms,
                    actor: &r.actor,
                    action: &r.action,
                    target: &r.target,
                    detail: &r.detail,
                    outcome: &r.outcome,
                },
                prev_hash: &r.prev_hash,
                hash: &r.hash,
            };
            if let Err(seq) = walker.step(&row) {
                let walked = walker.walked(from_seq);
                return Ok((AuditCheck::Broken { seq }, None, walked));
            }
        }
    }
    let walked = walker.walked(from_seq);
    Ok(match walker.finish(head.as_deref()) {
        Ok((seq, hash)) => (
            AuditCheck::Intact { records: seq },
            (seq > 0).then_some(AuditMark { seq, hash }),
            walked,
        ),
        Err(seq) => (AuditCheck::Broken { seq }, None, walked),
    })
}

fn hash_at(c: &rusqlite::Connection, seq: u64) -> rusqlite::Result<Option<String>> {
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(None);
    };
    c.prepare_cached("SELECT hash FROM audit WHERE seq = ?1")?
        .query_row([seq], |r| r.get(0))
        .optional()
}

fn checkpoint(c: &rusqlite::Connection) -> rusqlite::Result<Option<AuditCheckpoint>> {
    c.prepare_cached(
        "SELECT seq, hash, record_at_ms, compacted_at_ms, removed FROM audit_checkpoints \
         ORDER BY seq DESC LIMIT 1",
    )?
    .query_row([], |r| {
        Ok(AuditCheckpoint {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            hash: r.get(1)?,
            record_at_ms: r.get(2)?,
            compacted_at_ms: r.get(3)?,
            removed: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        })
    })
    .optional()
}

impl FromRow for AuditRecord {
    const SELECT: &'static str =
        "SELECT seq, at_ms, actor, action, target, detail, outcome, hash FROM audit";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
        Ok(AuditRecord {
            seq: r.get::<_, i64>(0)? as u64,
            at_ms: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
            outcome: r.get(6)?,
            hash: r.get(7)?,
        })
    }
}

/// An audit row with its chain columns, as the checks walk it.
struct ChainRow {
    seq: i64,
    at_ms: i64,
    actor: String,
    action: String,
    target: String,
    detail: String,
    outcome: String,
    prev_hash: String,
    hash: String,
}

impl ChainRow {
    fn into_chained(self) -> ChainedAuditRecord {
        ChainedAuditRecord {
            record: AuditRecord {
                seq: u64::try_from(self.seq).unwrap_or(0),
                at_ms: self.at_ms,
                actor: self.actor,
                action: self.action,
                target: self.target,
                detail: self.detail,
                outcome: self.outcome,
                hash: self.hash,
            },
            prev_hash: self.prev_hash,
        }
    }
}

impl FromRow for ChainRow {
    const SELECT: &'static str = "SELECT seq, at_ms, actor, action, target, detail, outcome, \
                                  prev_hash, hash FROM audit";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<ChainRow> {
        Ok(ChainRow {
            seq: r.get(0)?,
            at_ms: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
            outcome: r.get(6)?,
            prev_hash: r.get(7)?,
            hash: r.get(8)?,
        })
    }
}
