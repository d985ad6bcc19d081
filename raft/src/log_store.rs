//! The Raft log and vote in SQLite (`raft.db`), owned by one dedicated writer thread.
//!
//! Every request (reads too) goes through the thread's bounded channel, so a read always sees
//! every append submitted before it, and async code never touches rusqlite. Consecutive appends
//! waiting in the channel are written in one transaction: one fsync covers them all.
//!
//! Reads for replication (`limited_get_log_entries`) are bounded in bytes as well as in count:
//! they return the longest prefix of the range whose stored entries fit one peer frame
//! (`transport::ENTRIES_PER_FRAME_BYTES`, sized from `outpost_storage::MAX_ENTRY_BYTES`), at
//! least one entry. Appends are never refused (they come from the leader); an entry whose
//! payload exceeds `MAX_ENTRY_BYTES` can only have been written before that cap existed: it is
//! read, replicated alone and applied as usual, with a warning.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::telemetry::RaftTelemetry;
use crate::transport::ENTRIES_PER_FRAME_BYTES;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Version of the on-disk log format (table layout + entry encoding).
pub const LOG_FORMAT: i64 = 1;

/// Handle to the log store. Cloning it gives another handle to the same writer thread
/// (that is also the log reader openraft asks for).
#[derive(Clone)]
pub struct LogStore {
    tx: mpsc::Sender<Req>,
    /// Bytes of entries (their stored encoding) appended since the store opened: the node
    /// compacts the log by size as well as by count (`RaftNode`).
    appended: Arc<AtomicU64>,
    /// Appends and their transactions are observed here (and recorded for the lag).
    telemetry: Arc<RaftTelemetry>,
}

impl LogStore {
    /// Opens (or creates, mode 0600) `path` and starts the writer thread, unobserved.
    pub fn open(path: &Path) -> Result<LogStore, LogStoreError> {
        LogStore::open_observed(path, RaftTelemetry::new(false))
    }

    /// `open`, reporting appends to `telemetry`.
    pub fn open_observed(
        path: &Path,
        telemetry: Arc<RaftTelemetry>,
    ) -> Result<LogStore, LogStoreError> {
        let conn = open_conn(path)?;
        let (tx, rx) = mpsc::channel(1024);
        let path = path.to_path_buf();
        let t = telemetry.clone();
        std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || writer_loop(conn, rx, path, t))
            .map_err(LogStoreError::Thread)?;
        Ok(LogStore {
            tx,
            appended: Arc::default(),
            telemetry,
        })
    }

    /// The count of bytes appended since the store opened (shared, live).
    pub fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended.clone()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, OpError>>) -> Req,
    ) -> Result<T, AnyError> {
        let (tx, rx) = oneshot::channel();
        // A closed channel has no cause to keep: the thread is gone.
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| AnyError::error("raft log writer thread stopped"))?;
        rx.await
            .map_err(|_| AnyError::error("raft log writer thread dropped a request"))?
            // AnyError keeps the whole source chain (SQLite, bincode) for openraft.
            .map_err(|e| AnyError::new(&e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("raft log database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("raft log database {path} has format {found}; this build reads format {LOG_FORMAT}")]
    FormatTooNew { path: PathBuf, found: i64 },
    #[error("raft log database {path} failed its integrity check: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("starting the raft log thread: {0}")]
    Thread(#[source] std::io::Error),
}

enum Req {
    State(oneshot::Sender<Result<LogState<TypeConfig>, OpError>>),
    /// [start, end), and at most this many bytes of stored entries (but at least one entry).
    Read(
        u64,
        Option<u64>,
        Option<usize>,
        oneshot::Sender<Result<Vec<Entry>, OpError>>,
    ),
    SaveVote(Vote, oneshot::Sender<Result<(), OpError>>),
    ReadVote(oneshot::Sender<Result<Option<Vote>, OpError>>),
    Append(Vec<Entry>, LogFlushed<TypeConfig>),
    Truncate(LogId, oneshot::Sender<Result<(), OpError>>),
    Purge(LogId, oneshot::Sender<Result<(), OpError>>),
}

pub(crate) fn open_conn(path: &Path) -> Result<Connection, LogStoreError> {
    let err = |source| LogStoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let existed = path.exists();
    let conn = Connection::open(path).map_err(err)?;
    if !existed {
        restrict_mode(path);
    }
    // WAL: appends are sequential writes to the WAL file; readers never block the writer.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    // FULL: every COMMIT fsyncs the WAL before returning, so an entry (or vote) is on disk
    // before openraft is told it is. Raft's safety depends on this; see ARCHITECTURE.md.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    // Fewer, larger checkpoints (every ~16 MiB of WAL) and a larger page cache; durability
    // is unchanged.
    conn.pragma_update(None, "wal_autocheckpoint", 4000)
        .map_err(err)?;
    conn.pragma_update(None, "cache_size", -32768)
        .map_err(err)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(err)?;
    if check != "ok" {
        return Err(LogStoreError::Corrupt {
            path: path.to_path_buf(),
            detail: check,
        });
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, entry BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
    )
    .map_err(err)?;
    let found: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(err)?;
    match found {
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('format', ?1)",
                [LOG_FORMAT],
            )
            .map_err(err)?;
        }
        Some(f) if f > LOG_FORMAT => {
            return Err(LogStoreError::FormatTooNew {
                path: path.to_path_buf(),
                found: f,
            });
        }
        Some(_) => {}
    }
    Ok(conn)
}

fn restrict_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "could not set mode 0600");
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Req>,
    path: PathBuf,
    telemetry: Arc<RaftTelemetry>,
) {
    let mut pending: Option<Req> = None;
    loop {
        let req = match pending.take() {
            Some(r) => r,
            None => match rx.blocking_recv() {
                Some(r) => r,
                None => break,
            },
        };
        match req {
            Req::Append(entries, cb) => {
                // Gather every append already waiting: one transaction, one fsync for all.
                let mut batch = vec![(entries, cb)];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(Req::Append(e, cb)) => batch.push((e, cb)),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let started = telemetry.start();
                let result =
                    append(&mut conn, batch.iter().flat_map(|(e, _)| e.iter())).map_err(Arc::new);
                telemetry.log_appended(started, batch.iter().map(|(e, _)| e.len()).sum());
                // When the callbacks fire, the COMMIT above has returned with synchronous=FULL:
                // the entries are in the fsynced WAL and survive a crash or power loss.
                for (_, cb) in batch {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        // Every append of the transaction fails with the same cause.
                        Err(e) => Err(std::io::Error::other(AppendFailed {
                            path: path.clone(),
                            source: e.clone(),
                        })),
                    };
                    cb.log_io_completed(r);
                }
            }
            Req::State(tx) => drop(tx.send(log_state(&conn))),
            Req::Read(start, end, budget, tx) => drop(tx.send(read(&conn, start, end, budget))),
            Req::SaveVote(v, tx) => drop(tx.send(put_meta(&conn, "vote", &v))),
            Req::ReadVote(tx) => drop(tx.send(get_meta(&conn, "vote"))),
            Req::Truncate(id, tx) => {
                telemetry.record_truncate(id.index);
                let r = conn.execute("DELETE FROM log WHERE idx >= ?1", params![id.index as i64]);
                drop(tx.send(r.map(|_| ()).map_err(OpError::from)))
            }
            Req::Purge(id, tx) => drop(tx.send(purge(&mut conn, &id))),
        }
    }
    tracing::debug!("raft log writer thread exits");
}

/// What the writer thread's SQLite work failed with; sent back to the caller as it is.
/// What a raft log database operation failed with.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("encoding: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding a stored record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

/// A failed append as openraft's flush callback receives it (inside an `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
struct AppendFailed {
    path: PathBuf,
    #[source]
    source: Arc<OpError>,
}

fn append<'a>(
    conn: &mut Connection,
    entries: impl Iterator<Item = &'a Entry>,
) -> Result<(), OpError> {
    let tx = conn.transaction()?;
    insert_entries(&tx, entries)?;
    tx.commit()?;
    Ok(())
}

/// Writes `entries` (replacing any at the same index); the caller owns the transaction.
pub(crate) fn insert_entries<'a>(
    conn: &Connection,
    entries: impl Iterator<Item = &'a Entry>,
) -> Result<(), OpError> {
    let mut stmt =
        conn.prepare_cached("INSERT OR REPLACE INTO log (idx, term, entry) VALUES (?1, ?2, ?3)")?;
    for e in entries {
        let bytes = codec::encode(e)?;
        stmt.execute(params![
            e.log_id.index as i64,
            e.log_id.leader_id.term as i64,
            bytes
        ])?;
    }
    Ok(())
}

pub(crate) fn read(
    conn: &Connection,
    start: u64,
    end: Option<u64>,
    budget: Option<usize>,
) -> Result<Vec<Entry>, OpError> {
    let end = end
        .map(|e| e.min(i64::MAX as u64) as i64)
        .unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT entry, length(entry) FROM log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
    )?;
    let mut rows = stmt.query(params![start.min(i64::MAX as u64) as i64, end])?;
    let mut out = Vec::new();
    let mut used = 0usize;
    while let Some(row) = rows.next()? {
        let len = usize::try_from(row.get::<_, i64>(1)?).unwrap_or(usize::MAX);
        if !within_budget(out.len(), used, len, budget) {
            break;
        }
        used = used.saturating_add(len);
        let bytes: Vec<u8> = row.get(0)?;
        let entry: Entry = codec::decode(&bytes)?;
        if let openraft::EntryPayload::Normal(p) = &entry.payload
            && p.0.len() > outpost_storage::MAX_ENTRY_BYTES
        {
            tracing::warn!(
                index = entry.log_id.index,
                bytes = p.0.len(),
                cap = outpost_storage::MAX_ENTRY_BYTES,
                "log entry exceeds the Raft entry cap (written by an older build); it is replicated alone"
            );
        }
        out.push(entry);
    }
    Ok(out)
}

/// Whether an entry of `len` stored bytes joins a read that holds `count` entries of `used`
/// bytes: always the first, then while the total stays within `budget`.
fn within_budget(count: usize, used: usize, len: usize, budget: Option<usize>) -> bool {
    match budget {
        None => true,
        Some(b) => count == 0 || used.saturating_add(len) <= b,
    }
}

pub(crate) fn log_state(conn: &Connection) -> Result<LogState<TypeConfig>, OpError> {
    let last_purged: Option<LogId> = get_meta(conn, "last_purged")?;
    let last: Option<Vec<u8>> = conn
        .query_row("SELECT entry FROM log ORDER BY idx DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    let last_log_id = match last {
        Some(bytes) => Some(codec::decode::<Entry>(&bytes)?.log_id),
        None => last_purged,
    };
    Ok(LogState {
        last_purged_log_id: last_purged,
        last_log_id,
    })
}

fn purge(conn: &mut Connection, id: &LogId) -> Result<(), OpError> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM log WHERE idx <= ?1", params![id.index as i64])?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_purged', ?1)",
        params![codec::encode(id)?],
    )?;
    tx.commit()?;
    Ok(())
}

fn put_meta<T: serde::Serialize>(conn: &Connection, key: &str, value: &T) -> Result<(), OpError> {
    // One autocommit statement; with synchronous=FULL it is fsynced when execute returns.
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![key, codec::encode(value)?],
    )?;
    Ok(())
}

pub(crate) fn get_meta<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    key: &str,
) -> Result<Option<T>, OpError> {
    let raw: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(match raw {
        Some(b) => Some(codec::decode(&b)?),
        None => None,
    })
}

fn range_to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e.saturating_add(1)),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_to_bounds(&range);
        self.call(|tx| Req::Read(start, end, None, tx))
            .await
            .map_err(|e| StorageIOError::read_logs(e).into())
    }

    /// For replication: the longest prefix of [start, end) that fits one AppendEntries frame
    /// (at least one entry), so a run of large entries is never read, or sent, at once.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.call(|tx| Req::Read(start, Some(end), Some(ENTRIES_PER_FRAME_BYTES), tx))
            .await
            .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.call(Req::State)
            .await
            .map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let v = *vote;
        self.call(|tx| Req::SaveVote(v, tx))
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.call(Req::ReadVote)
            .await
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    // save_committed/read_committed keep openraft's defaults (not persisted): persisting the
    // commit index would cost one more fsync per commit on every node, and a restarted node
    // learns it again from the leader; what is applied is recorded in state.db anyway.

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Returns once queued; the callback fires from the writer thread after the fsync.
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            self.telemetry
                .record_append(first.log_id.index, last.log_id.index);
        }
        let bytes: usize = entries.iter().map(codec::encoded_len).sum();
        self.appended.fetch_add(bytes as u64, Ordering::Relaxed);
        self.tx
            .send(Req::Append(entries, callback))
            .await
            .map_err(|_| {
                StorageIOError::write_logs(AnyError::error("raft log writer thread stopped")).into()
            })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.call(|tx| Req::Truncate(log_id, tx))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.call(|tx| Req::Purge(log_id, tx))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_byte_budget() {
        // (entries held, bytes held, next entry's bytes, budget) -> taken?
        let cases = [
            (0, 0, 10, None, true),
            (5, 1 << 40, 10, None, true),
            (0, 0, 100, Some(10), true), // the first entry always, however large
            (1, 6, 4, Some(10), true),   // exactly at the budget
            (1, 6, 5, Some(10), false),  // one byte over
            (2, 10, 1, Some(10), false),
            (1, usize::MAX, 1, Some(10), false),
        ];
        for (count, used, len, budget, want) in cases {
            assert_eq!(
                within_budget(count, used, len, budget),
                want,
                "{count} {used} {len} {budget:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_read_keeps_its_cause() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("raft.db");
        let mut log = LogStore::open(&path)?;
        open_conn(&path)?.execute(
            "INSERT INTO log (idx, term, entry) VALUES (1, 1, ?1)",
            [vec![0xffu8; 3]],
        )?;
        let Err(e) = log.try_get_log_entries(1..2).await else {
            return Err("an undecodable entry was read".into());
        };
        // Walk the chain: the writer thread's error arrives with its own cause (bincode's),
        // not flattened into a message.
        let mut chain: Vec<&dyn std::error::Error> = vec![&e];
        while let Some(next) = chain[chain.len() - 1].source() {
            chain.push(next);
        }
        let texts: Vec<String> = chain.iter().map(|c| c.to_string()).collect();
        let ours = |t: &String| t.contains("decoding a stored record");
        assert!(texts.iter().any(ours), "{texts:?}");
        // The root cause is bincode's error itself, below our message.
        assert!(texts.last().is_some_and(|t| !ours(t)), "{texts:?}");
        Ok(())
    }

    #[tokio::test]
    async fn limited_reads_fit_a_frame() -> Result<(), Box<dyn std::error::Error>> {
        use openraft::{CommittedLeaderId, EntryPayload};
        let dir = tempfile::tempdir()?;
        let mut log = LogStore::open(&dir.path().join("raft.db"))?;
        // Payloads just under the entry cap: 7 of them pass the frame budget.
        let big = crate::types::Proposal(vec![7u8; outpost_storage::MAX_ENTRY_BYTES]);
        let entries: Vec<Entry> = (1..=10u64)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(big.clone()),
            })
            .collect();
        let conn = open_conn(&dir.path().join("raft.db"))?;
        let mut c = conn;
        append(&mut c, entries.iter())?;
        drop(c);
        let got = log.limited_get_log_entries(1, 11).await?;
        let stored: usize = got.iter().map(codec::encoded_len).sum();
        assert!(!got.is_empty() && got.len() < 10, "{} entries", got.len());
        assert!(stored <= ENTRIES_PER_FRAME_BYTES);
        assert!(stored + codec::encoded_len(&entries[got.len()]) > ENTRIES_PER_FRAME_BYTES);
        assert_eq!(got[0].log_id.index, 1);
        // The unbounded reader still returns the whole range.
        assert_eq!(log.try_get_log_entries(1..11).await?.len(), 10);
        // One entry is returned even when it alone is over the budget.
        assert_eq!(
            read(
                &open_conn(&dir.path().join("raft.db"))?,
                3,
                Some(11),
                Some(1)
            )?
            .len(),
            1
        );
        Ok(())
    }
}
