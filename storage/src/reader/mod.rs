//! Blocking queries over a small pool of read-only connections.
//!
//! Callers in async code run these on blocking threads (e.g. `spawn_blocking`). Each method
//! takes one connection from the pool for its duration; WAL lets reads run beside the writer.
//!
//! The queries live beside their domain, each file adding its methods to `Reader`: `audit`
//! (the log, its checkpoint, the full and incremental chain checks), `nodes`
//! (cluster and nodes), `config`, `tokens`, `clients` (clients, certificates, inventory),
//! `bundles` (trust, channels, bundles, blobs), `deployments`, `rollouts` (plan, status, the
//! leader's next step, removals), `upgrade`, `retention` (the retention pass's questions and
//! the format-9 gate), `console` (operator accounts, sessions) and
//! `metrics` (the site's counts for `/metrics`). This file holds the pool and
//! the applied marker. Reads never use `apply`:
//! what both sides need lives in the crate's lower modules (`rows`, `rules`, `token_check`,
//! `schema`). Each record type is read by its `rows::FromRow` impl, beside its queries.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::StorageError;
use crate::schema::meta_blob;

mod audit;
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
mod roles;
mod rollouts;
mod tokens;
mod upgrade;

/// Pooled read-only access to the state. Cheap to clone.
#[derive(Clone)]
pub struct Reader {
    pool: Arc<Pool>,
}

impl Reader {
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
