//! The writer thread and the async face of the store.
//!
//! One `std::thread` owns the read-write connection and serves requests from a bounded
//! channel, one at a time, each answered on its own oneshot. Snapshot export and import's
//! file work run on short-lived threads of their own. No tokio runtime is needed here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::apply::apply_entries;
use crate::error::StorageError;
use crate::model::Outcome;
use crate::reader::{Reader, open_read_only};
use crate::schema::{self, SCHEMA_VERSION, meta_blob, quick_check, user_version};
use crate::snapshot::{
    self, SnapshotInfo, backup_one_step, create_private, prepare_import, remove_db_files,
    sync_parent,
};

/// Handle to the state database. Cheap to clone; the writer thread stops (and the write
/// connection closes) when the last clone is dropped. Dropping a future does not cancel a
/// request the writer already received.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Creates (mode 0600) or opens + migrates + quick_checks the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        let conn = open_writer(path)?;
        snapshot::remove_stale_imports(path)?;
        tracing::info!(path = %path.display(), schema = SCHEMA_VERSION, "storage opened");
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let identities = Arc::new(AtomicU64::new(0));
        let epoch = identities.clone();
        let thread = std::thread::Builder::new()
            .name("outpost-storage-writer".to_owned())
            .spawn({
                let path = path.to_owned();
                move || writer_loop(&path, conn, rx, &epoch)
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                tx: Some(tx),
                thread: Some(thread),
                reader: Reader::new(path, identities),
            }),
        })
    }

    /// ONE SQLite transaction for the whole call: each Some(payload) is decoded and its envelopes
    /// applied in order (each in a SAVEPOINT; a Rejection rolls back only that envelope); then
    /// `applied_marker` (opaque bytes from the caller) is stored in meta; commit. Returns, per
    /// input entry, None for a None input or Some(one Outcome per envelope). Decode/NeedsUpgrade
    /// or SQLite errors abort the whole transaction (nothing applied, marker unchanged).
    pub async fn apply(
        &self,
        entries: Vec<Option<Vec<u8>>>,
        applied_marker: Vec<u8>,
    ) -> Result<Vec<Option<Vec<Outcome>>>, StorageError> {
        self.call(|reply| Request::Apply {
            entries,
            applied_marker,
            reply,
        })
        .await?
    }

    /// Makes every apply committed so far durable (fsync of the WAL). Commits do not fsync
    /// (`synchronous=NORMAL`): an apply lost to a power cut is applied again from the Raft
    /// log, which is durable. The log is purged only behind a snapshot, and the snapshot
    /// builder calls this first, so the log always holds what state.db may have lost.
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.call(|reply| Request::Sync { reply }).await?
    }

    /// The marker stored by the last successful `apply` (or found in an imported snapshot).
    pub async fn applied_marker(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.call(|reply| Request::Marker { reply }).await?
    }

    /// Consistent copy of the whole state into `dest` (a new file): a header (magic
    /// b"OUTPOST-SNAPSHOT", header format u32, schema version u32, body length u64, sha256 of
    /// body) followed by the SQLite database bytes made with the backup API in one step from a
    /// read-only connection (on its own std::thread so writes are not blocked). File fsynced.
    pub async fn export_snapshot(&self, dest: &Path) -> Result<SnapshotInfo, StorageError> {
        let live = self.inner.path.clone();
        let dest = dest.to_owned();
        let info = run_on_thread("outpost-snapshot-export", move || {
            snapshot::export_blocking(&live, &dest)
        })
        .await?;
        tracing::info!(size = info.size, sha256 = %info.sha256, "snapshot exported");
        Ok(info)
    }

    /// Verifies header, length, sha256 and schema version, copies the body into a temp DB file,
    /// quick_checks it, then replaces the live state atomically through the writer connection
    /// (rusqlite backup API `restore` into main). Any fault => Err and the live state untouched.
    /// Returns the applied_marker found in the snapshot.
    pub async fn import_snapshot(&self, src: &Path) -> Result<Option<Vec<u8>>, StorageError> {
        let live = self.inner.path.clone();
        let src = src.to_owned();
        let src_name = src.display().to_string();
        let (tmp_db, marker) = run_on_thread("outpost-snapshot-import", move || {
            prepare_import(&src, &live)
        })
        .await?;
        tracing::info!(src = %src_name, "snapshot verified; replacing the live state");
        let restored = self
            .call(|reply| Request::Restore {
                from: tmp_db.clone(),
                reply,
            })
            .await;
        let cleanup = remove_db_files(&tmp_db);
        restored??;
        cleanup?;
        tracing::info!(src = %src_name, "snapshot imported");
        Ok(marker)
    }

    pub fn reader(&self) -> Reader {
        self.inner.reader.clone()
    }

    /// The database file this store serves.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// Requests waiting for the writer; senders wait (async) when it is full.
const REQUEST_QUEUE: usize = 64;

struct Inner {
    path: PathBuf,
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    reader: Reader,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop after the request in hand; joining makes
        // "last handle dropped" mean "write connection closed".
        self.tx.take();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("storage writer thread panicked");
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

enum Request {
    Apply {
        entries: Vec<Option<Vec<u8>>>,
        applied_marker: Vec<u8>,
        reply: Reply<Vec<Option<Vec<Outcome>>>>,
    },
    Marker {
        reply: Reply<Option<Vec<u8>>>,
    },
    Restore {
        from: PathBuf,
        reply: Reply<()>,
    },
    Sync {
        reply: Reply<()>,
    },
}

impl Store {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, StorageError> {
        let sender = self.inner.tx.as_ref().ok_or(StorageError::WriterStopped)?;
        let (reply, rx) = oneshot::channel();
        sender
            .send(make(reply))
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        rx.await.map_err(|_| StorageError::WriterStopped)
    }
}

fn writer_loop(
    path: &Path,
    mut conn: Connection,
    mut rx: mpsc::Receiver<Request>,
    identities: &AtomicU64,
) {
    while let Some(req) = rx.blocking_recv() {
        // A caller that went away just drops its answer; the work is done either way.
        match req {
            Request::Apply {
                entries,
                applied_marker,
                reply,
            } => {
                let result = apply_entries(&mut conn, entries, &applied_marker);
                // After a committed compaction: give the freed pages back to the file system
                // (state.db is auto_vacuum=INCREMENTAL), so the file shrinks. Outside the
                // apply's transaction; a failure leaves free pages for the next one.
                if result.as_ref().is_ok_and(|r| r.compacted)
                    && let Err(e) = incremental_vacuum(&conn)
                {
                    tracing::warn!(error = %e, "incremental vacuum after a compaction failed");
                }
                // After the commit, so a reader that sees the new epoch reads the new state.
                if result.as_ref().map_or(true, |r| r.identities_changed) {
                    identities.fetch_add(1, Ordering::AcqRel);
                }
                let _ = reply.send(result.map(|r| r.outcomes));
            }
            Request::Marker { reply } => {
                let _ = reply.send(meta_blob(&conn, "applied_marker").map_err(Into::into));
            }
            Request::Restore { from, reply } => {
                let result = restore(&mut conn, &from).and_then(|()| sync_wal(path));
                identities.fetch_add(1, Ordering::AcqRel);
                let _ = reply.send(result);
            }
            Request::Sync { reply } => {
                let _ = reply.send(sync_wal(path));
            }
        }
    }
    // The last handle is gone: leave everything applied on disk.
    if let Err(e) = sync_wal(path) {
        tracing::warn!(error = %e, "syncing the state's WAL at close failed");
    }
}

/// fsync of `<state.db>-wal`: every frame committed so far, hence every committed apply, is
/// durable after it (SQLite fsyncs the database file itself after each checkpoint).
fn sync_wal(db: &Path) -> Result<(), StorageError> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::File::open(&wal) {
        Ok(f) => Ok(f.sync_all()?),
        // No WAL (nothing written since the last checkpoint deleted it): nothing to sync.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the live state with the checked database at `from` in one write transaction.
fn restore(conn: &mut Connection, from: &Path) -> Result<(), StorageError> {
    let src = open_read_only(from)?;
    backup_one_step(&src, conn)?;
    // One write transaction committed the whole new state; the caller syncs it.
    let found = user_version(conn)?;
    if found != SCHEMA_VERSION {
        return Err(StorageError::Corrupt(format!(
            "restored state has schema {found}, expected {SCHEMA_VERSION}"
        )));
    }
    Ok(())
}

/// Opens the write connection: create 0600 if missing, refuse newer schemas and corrupt files,
/// set the PRAGMAs, migrate.
fn open_writer(path: &Path) -> Result<Connection, StorageError> {
    match create_private(path) {
        Ok(()) => sync_parent(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Wait (bounded) rather than fail when a checkpoint or another process holds a lock.
    conn.busy_timeout(Duration::from_secs(5))?;
    let found = user_version(&conn).map_err(|e| schema::corrupt_or(e, path))?;
    if found > SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    quick_check(&conn, path)?;
    ensure_incremental_vacuum(&conn, path)?;
    // WAL: readers never block the writer and vice versa; commits append to the -wal file.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Corrupt(format!(
            "{}: journal_mode stayed {mode:?}, WAL required",
            path.display()
        )));
    }
    // NORMAL: commits append to the WAL without an fsync; checkpoints still fsync. The state
    // is consistent after any crash, and an apply a power cut takes away is applied again
    // from the Raft log (fsynced at every append), which keeps every entry state.db may have
    // lost: it is purged only behind a snapshot, and building one calls `Store::sync` first.
    // This halves the fsyncs of a write on every node; see ARCHITECTURE.md, "Durability".
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // apply runs a couple of dozen distinct statements per batch; keep them all prepared.
    conn.set_prepared_statement_cache_capacity(64);
    // 64 MiB of page cache: the hot pages (config, the audit tail, indexes) stay in memory
    // instead of being re-read through the kernel at every apply.
    conn.pragma_update(None, "cache_size", -65536)?;
    // Checkpoint every ~16 MiB of WAL instead of every 4 MiB: a page rewritten by many
    // applies is copied back into the database file once per checkpoint, not once per 1000
    // pages. Durability is unchanged (commits still fsync the WAL).
    conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// auto_vacuum = INCREMENTAL, so that pages a compaction frees can go back to the file
/// system (`incremental_vacuum`). A new, empty file takes it before its first table; an
/// older file is converted once here with a VACUUM (which rewrites it: it takes as long as
/// copying the file, and needs that much free space). Snapshots and backups are page copies
/// (the backup API, `VACUUM INTO`), so they keep the setting; a state restored from an older
/// copy is converted at the next open.
fn ensure_incremental_vacuum(conn: &Connection, path: &Path) -> Result<(), StorageError> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if tables > 0 {
        tracing::info!(path = %path.display(), "converting the state to incremental auto-vacuum (once)");
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

/// Returns every free page to the file system (the file shrinks on the next checkpoint).
fn incremental_vacuum(conn: &Connection) -> Result<(), rusqlite::Error> {
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    if free > 0 {
        // A pragma that returns a row per step: run it to the end.
        let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        tracing::info!(pages = free, "incremental vacuum after a compaction");
    }
    Ok(())
}

/// Runs blocking file work on its own thread and awaits the result without a runtime.
async fn run_on_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    rx.await.map_err(|_| {
        StorageError::Io(std::io::Error::other(
            "storage worker thread ended without an answer",
        ))
    })?
}
