//! Blocking queries over a small pool of read-only connections.
//!
//! Callers in async code run these on blocking threads (e.g. `spawn_blocking`). Each method
//! takes one connection from the pool for its duration; WAL lets reads run beside the writer.
//!
//! The queries live beside their domain, each file adding its methods to `Reader`: `nodes`
//! (cluster and nodes), `config`, `tokens`, `clients` (clients, certificates, inventory),
//! `bundles` (trust, channels, bundles, blobs), `deployments`, `rollouts` (plan, status, the
//! leader's next step, removals), `upgrade`, `retention` (the retention pass's questions and
//! the format-9 gate), `console` (operator accounts, sessions) and
//! `metrics` (the site's counts for `/metrics`). This file holds the pool and
//! what spans every domain: the audit log and the applied marker. Reads never use `apply`:
//! what both sides need lives in the crate's lower modules (`rows`, `rules`, `token_check`,
//! `schema`). Each record type is read by its `rows::FromRow` impl, beside its queries.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::OptionalExtension;
use rusqlite::{Connection, OpenFlags, Row};

use crate::audit::{AuditFields, ChainWalker, StoredRow};
use crate::error::StorageError;
use crate::model::{AuditChain, AuditCheck, AuditRecord};
use crate::rows::{FromRow, all};
use crate::schema::meta_blob;

mod bundles;
#[macro_use]
mod clients;

pub use clients::{ClientFilter, MAX_FAILING_SHOWN};
mod config;
mod console;
mod deployments;
pub(crate) mod metrics;
mod nodes;
mod retention;
mod rollouts;
mod tokens;
mod upgrade;

/// Pooled read-only access to the state. Cheap to clone.
#[derive(Clone)]
pub struct Reader {
    pool: Arc<Pool>,
}

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

    /// The chain recomputed (`verify_audit_chain`) and the hash held at `want_seq`, or at the
    /// last record when there are fewer: what two nodes compare.
    pub fn audit_chain(&self, want_seq: u64) -> Result<AuditChain, StorageError> {
        let check = self.verify_audit_chain()?;
        let last = self.audit_head()?.map(|(seq, _)| seq).unwrap_or(0);
        let at_seq = want_seq.min(last);
        let hash = self.audit_hash_at(at_seq)?;
        Ok(AuditChain {
            check,
            at_seq,
            hash,
        })
    }

    /// The hash of audit record `seq` (None for 0 or a record this node does not have).
    pub fn audit_hash_at(&self, seq: u64) -> Result<Option<String>, StorageError> {
        if seq == 0 {
            return Ok(None);
        }
        Ok(self
            .audit(seq - 1, 1)?
            .into_iter()
            .find(|r| r.seq == seq)
            .map(|r| r.hash))
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

    /// Walks the whole audit chain in one read transaction and checks every hash and link,
    /// and that the last hash is the head recorded in meta.
    pub fn verify_audit_chain(&self) -> Result<AuditCheck, StorageError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let head =
                meta_blob(&tx, "audit_head")?.map(|b| String::from_utf8_lossy(&b).into_owned());
            let mut walker = ChainWalker::new();
            {
                // Row by row: the log can be long.
                let mut stmt = tx.prepare(&format!("{} ORDER BY seq", ChainRow::SELECT))?;
                for r in stmt.query_map([], ChainRow::from_row)? {
                    let r = r?;
                    let row = StoredRow {
                        fields: AuditFields {
                            seq: r.seq as u64,
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
                        return Ok(AuditCheck::Broken { seq });
                    }
                }
            }
            Ok(match walker.finish(head.as_deref()) {
                Ok(records) => AuditCheck::Intact { records },
                Err(seq) => AuditCheck::Broken { seq },
            })
        })
    }

    /// The applied marker as seen by a read connection (the writer's view may be newer by one
    /// in-flight apply).
    pub fn applied_marker(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.with(|c| Ok(meta_blob(c, "applied_marker")?))
    }
}

impl Reader {
    pub(crate) fn new(path: &Path, identities: Arc<AtomicU64>) -> Reader {
        Reader {
            pool: Arc::new(Pool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
                identities,
            }),
        }
    }

    /// A number that grows after every commit that may change who may call this node: an
    /// admin revoked, a node added, changed or removed, a client enrolled, renewed or revoked, a cluster re-formed, a snapshot
    /// installed. A caller that read an identity's standing while this number was `e` may
    /// reuse what it read for as long as the number is still `e` (read the number first).
    pub fn identity_epoch(&self) -> u64 {
        self.pool.identities.load(Ordering::Acquire)
    }

    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let conn = self.pool.take()?;
        let out = f(&conn);
        self.pool.give_back(conn);
        out
    }
}

/// Idle connections kept for reuse (agent syncs read concurrently); more are opened on demand
/// and closed when over the cap.
const MAX_IDLE: usize = 32;

struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Bumped by the writer after commits that change identities (`identity_epoch`).
    identities: Arc<AtomicU64>,
}

impl Pool {
    fn take(&self) -> Result<Connection, StorageError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        Ok(open_read_only(&self.path)?)
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}

/// A read-only connection (also `query_only`, belt and braces).
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
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

/// An audit row with its chain columns, as `verify_audit_chain` checks it.
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
