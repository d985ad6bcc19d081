//! Snapshot files: a fixed 64-byte header followed by the bytes of a SQLite database.
//!
//! Header (all integers little-endian): magic b"OUTPOST-SNAPSHOT" (16 bytes), header format
//! u32, schema version u32, body length u64, sha256 of the body (32 raw bytes).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};
use sha2::{Digest, Sha256};

use crate::error::StorageError;
use crate::reader::open_read_only;
use crate::schema::{self, SCHEMA_VERSION, meta_blob, quick_check, user_version};

/// What `export_snapshot` wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    /// The applied marker contained in the snapshot.
    pub applied_marker: Option<Vec<u8>>,
    /// Size of the whole snapshot file (header + body) in bytes.
    pub size: u64,
    /// Hex sha256 of the body (the SQLite database bytes), as in the header.
    pub sha256: String,
    /// What the copied state holds, read from the copy itself (so it matches the marker).
    pub summary: StateSummary,
}

/// The facts a backup's header names, read from one consistent copy of the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateSummary {
    /// Absent before `InitCluster` applied.
    pub cluster_id: Option<String>,
    pub cluster_name: Option<String>,
    pub ca_cert_pem: Option<String>,
    /// Bundle channels and their floors (the newest version each accepted), by name.
    pub channels: Vec<(String, u64)>,
    /// The cluster time floor of bundle imports (unix seconds).
    pub bundle_time_floor: i64,
    /// Enrolled clients, revoked ones included.
    pub clients: u64,
    /// The id the next node gets.
    pub next_node_id: u64,
}

/// Reads the summary of the state in `conn`.
pub(crate) fn state_summary(conn: &Connection) -> Result<StateSummary, StorageError> {
    use rusqlite::OptionalExtension;
    let cluster: Option<(String, String, String)> = conn
        .query_row("SELECT id, name, ca_cert_pem FROM cluster", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let mut stmt = conn.prepare("SELECT name, version FROM channels ORDER BY name")?;
    let channels = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .map(|r| r.map(|(n, v)| (n, u64::try_from(v).unwrap_or(0))))
        .collect::<Result<Vec<_>, _>>()?;
    let clients: i64 = conn.query_row("SELECT COUNT(*) FROM clients", [], |r| r.get(0))?;
    let next_node_id: i64 = conn.query_row(
        "SELECT value FROM meta WHERE key = 'next_node_id'",
        [],
        |r| r.get(0),
    )?;
    let (cluster_id, cluster_name, ca_cert_pem) = match cluster {
        Some((id, name, ca)) => (Some(id), Some(name), Some(ca)),
        None => (None, None, None),
    };
    Ok(StateSummary {
        cluster_id,
        cluster_name,
        ca_cert_pem,
        channels,
        bundle_time_floor: schema::bundle_time_floor(conn)?,
        clients: u64::try_from(clients).unwrap_or(0),
        next_node_id: u64::try_from(next_node_id).unwrap_or(0),
    })
}

pub(crate) const MAGIC: &[u8; 16] = b"OUTPOST-SNAPSHOT";
pub(crate) const HEADER_FORMAT: u32 = 1;
pub(crate) const HEADER_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub format: u32,
    pub schema_version: u32,
    pub body_len: u64,
    pub sha256: [u8; 32],
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..16].copy_from_slice(MAGIC);
        out[16..20].copy_from_slice(&self.format.to_le_bytes());
        out[20..24].copy_from_slice(&self.schema_version.to_le_bytes());
        out[24..32].copy_from_slice(&self.body_len.to_le_bytes());
        out[32..64].copy_from_slice(&self.sha256);
        out
    }

    /// Parses and checks a header against the length of the file it came from.
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN], file_len: u64) -> Result<Header, StorageError> {
        let invalid = |m: String| StorageError::SnapshotInvalid(m);
        if &bytes[..16] != MAGIC {
            return Err(invalid("not an Outpost snapshot (bad magic)".to_owned()));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let format = u32_at(16);
        if format != HEADER_FORMAT {
            return Err(invalid(format!(
                "snapshot header format {format} is not the supported format {HEADER_FORMAT}"
            )));
        }
        let schema_version = u32_at(20);
        if schema_version > SCHEMA_VERSION {
            return Err(StorageError::SchemaTooNew {
                found: schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        if schema_version == 0 {
            return Err(invalid("snapshot schema version is 0".to_owned()));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[24..32]);
        let body_len = u64::from_le_bytes(len);
        let have = file_len.saturating_sub(HEADER_LEN as u64);
        if body_len != have {
            return Err(invalid(format!(
                "header says the body is {body_len} bytes but the file holds {have}"
            )));
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&bytes[32..64]);
        Ok(Header {
            format,
            schema_version,
            body_len,
            sha256,
        })
    }
}

/// Writes a consistent snapshot of the database at `live` into `dest` (blocking).
/// The copy is made with the backup API in one step from a read-only connection, so it is
/// one read transaction: a consistent state, and the writer is never blocked (WAL).
pub(crate) fn export_blocking(live: &Path, dest: &Path) -> Result<SnapshotInfo, StorageError> {
    let n = unique();
    let tmp_db = sibling(dest, &format!("{n}.snapshot-db.tmp"));
    let tmp_out = sibling(dest, &format!("{n}.tmp"));
    remove_db_files(&tmp_db)?;
    let result = (|| {
        let (marker, summary) = {
            let src = open_read_only(live)?;
            create_private(&tmp_db)?;
            let mut dst = Connection::open(&tmp_db)?;
            backup_one_step(&src, &mut dst)?;
            (meta_blob(&dst, "applied_marker")?, state_summary(&dst)?)
        };
        let (sha256, body_len) = hash_file(&tmp_db)?;
        let header = Header {
            format: HEADER_FORMAT,
            schema_version: SCHEMA_VERSION,
            body_len,
            sha256,
        };
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp_out)?;
        out.write_all(&header.encode())?;
        let copied = io::copy(&mut File::open(&tmp_db)?, &mut out)?;
        if copied != body_len {
            return Err(StorageError::Io(io::Error::other(format!(
                "{} changed while copying ({copied} of {body_len} bytes)",
                tmp_db.display()
            ))));
        }
        out.sync_all()?;
        drop(out);
        std::fs::rename(&tmp_out, dest)?;
        sync_parent(dest)?;
        // Durable here: the snapshot file's bytes and its directory entry are on disk.
        Ok(SnapshotInfo {
            applied_marker: marker,
            size: HEADER_LEN as u64 + body_len,
            sha256: hex::encode(sha256),
            summary,
        })
    })();
    let cleanup = remove_db_files(&tmp_db);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_out);
    }
    let info = result?;
    cleanup?;
    Ok(info)
}

/// Verifies the snapshot at `src` and turns its body into a checked, migrated database file
/// next to `live` (blocking). Returns that file and the applied marker it contains.
/// Nothing about the live database is touched here.
pub(crate) fn prepare_import(
    src: &Path,
    live: &Path,
) -> Result<(PathBuf, Option<Vec<u8>>), StorageError> {
    let tmp_db = sibling(live, &format!("{IMPORT_TMP}{}.tmp", unique()));
    remove_db_files(&tmp_db)?;
    let result = prepare_into(src, &tmp_db);
    if result.is_err() {
        let _ = remove_db_files(&tmp_db);
    }
    result.map(|marker| (tmp_db, marker))
}

fn prepare_into(src: &Path, tmp_db: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    let mut file = File::open(src)?;
    let file_len = file.metadata()?.len();
    if file_len < HEADER_LEN as u64 {
        return Err(StorageError::SnapshotInvalid(format!(
            "{} is {file_len} bytes, shorter than the {HEADER_LEN}-byte header",
            src.display()
        )));
    }
    let mut head = [0u8; HEADER_LEN];
    file.read_exact(&mut head)?;
    let header = Header::parse(&head, file_len)?;

    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp_db)?;
    let mut hashing = HashingWriter {
        inner: &mut out,
        hasher: Sha256::new(),
    };
    let copied = io::copy(&mut (&mut file).take(header.body_len), &mut hashing)?;
    let digest: [u8; 32] = hashing.hasher.finalize().into();
    drop(out);
    if copied != header.body_len {
        return Err(StorageError::SnapshotInvalid(format!(
            "body ended after {copied} of {} bytes",
            header.body_len
        )));
    }
    if digest != header.sha256 {
        return Err(StorageError::SnapshotInvalid(format!(
            "body sha256 {} does not match the header's {}",
            hex::encode(digest),
            hex::encode(header.sha256)
        )));
    }

    let as_invalid = |e: StorageError| match e {
        StorageError::Corrupt(m) => StorageError::SnapshotInvalid(format!("body: {m}")),
        other => other,
    };
    let mut conn = Connection::open(tmp_db)?;
    let found = user_version(&conn).map_err(|e| as_invalid(schema::corrupt_or(e, tmp_db)))?;
    if found != header.schema_version {
        return Err(StorageError::SnapshotInvalid(format!(
            "header says schema {} but the body has schema {found}",
            header.schema_version
        )));
    }
    quick_check(&conn, tmp_db).map_err(as_invalid)?;
    // A self-contained file: no -wal beside it when the writer reads it back.
    let _mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    // Older snapshots are brought to our schema before they can replace the live state.
    schema::migrate(&mut conn)?;
    Ok(meta_blob(&conn, "applied_marker")?)
}

/// Infix of import temp files: `<live db>.import-<pid>-<n>.tmp`.
const IMPORT_TMP: &str = "import-";

/// `<pid>-<counter>`: temp names that concurrent exports/imports in this process never share.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Removes import temp files a crashed process left beside `live`. Called at open, before
/// this process starts any import of its own.
pub(crate) fn remove_stale_imports(live: &Path) -> Result<(), StorageError> {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = name.to_os_string();
    prefix.push(".");
    prefix.push(IMPORT_TMP);
    let prefix = prefix.to_string_lossy().into_owned();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) {
            tracing::warn!(file = %file, "removing a stale snapshot import file");
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Replaces the whole content of `dst` (main) with `src` in one backup step: one write
/// transaction on `dst`, so readers see either the old or the new state, never a mix.
pub(crate) fn backup_one_step(src: &Connection, dst: &mut Connection) -> Result<(), StorageError> {
    let backup = Backup::new(src, dst)?;
    // Busy/Locked are transient; bounded retries keep a stuck lock from hanging us.
    for _ in 0..200 {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Err(StorageError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some("backup could not finish: database stayed busy".to_owned()),
    )))
}

/// Removes a database file and its journal companions, ignoring ones that do not exist.
pub(crate) fn remove_db_files(db: &Path) -> Result<(), StorageError> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(p)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Creates an empty file with mode 0600 (SQLite treats it as an empty database); fails if
/// it exists.
pub(crate) fn create_private(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .sync_all()
}

/// `<path>.<suffix>` in the same directory (same filesystem, so rename is atomic).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// fsync of the directory holding `path`, so a rename or create in it is durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn hash_file(path: &Path) -> io::Result<([u8; 32], u64)> {
    let mut hashing = HashingWriter {
        inner: io::sink(),
        hasher: Sha256::new(),
    };
    let n = io::copy(&mut File::open(path)?, &mut hashing)?;
    Ok((hashing.hasher.finalize().into(), n))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: HEADER_FORMAT,
            schema_version: SCHEMA_VERSION,
            body_len: 4096,
            sha256: [7; 32],
        }
    }

    #[test]
    fn header_round_trip() -> Result<(), StorageError> {
        let h = header();
        let bytes = h.encode();
        assert_eq!(&bytes[..16], b"OUTPOST-SNAPSHOT");
        assert_eq!(Header::parse(&bytes, 64 + 4096)?, h);
        Ok(())
    }

    #[test]
    fn header_refusals() {
        type Case = (
            &'static str,
            fn(&mut [u8; HEADER_LEN]),
            u64,
            fn(&StorageError) -> bool,
        );
        let invalid = |e: &StorageError| matches!(e, StorageError::SnapshotInvalid(_));
        let cases: Vec<Case> = vec![
            ("magic", |b| b[0] = b'X', 64 + 4096, invalid),
            ("format", |b| b[16] = 2, 64 + 4096, invalid),
            (
                "schema 0",
                |b| b[20..24].copy_from_slice(&0u32.to_le_bytes()),
                64 + 4096,
                invalid,
            ),
            (
                "schema newer",
                |b| b[20..24].copy_from_slice(&(SCHEMA_VERSION + 1).to_le_bytes()),
                64 + 4096,
                |e| matches!(e, StorageError::SchemaTooNew { .. }),
            ),
            ("truncated", |_| {}, 64 + 4095, invalid),
            ("longer", |_| {}, 64 + 4097, invalid),
            ("header only", |_| {}, 64, invalid),
        ];
        for (name, tamper, file_len, check) in cases {
            let mut bytes = header().encode();
            tamper(&mut bytes);
            match Header::parse(&bytes, file_len) {
                Err(e) => assert!(check(&e), "{name}: {e:?}"),
                Ok(h) => panic!("{name}: accepted {h:?}"),
            }
        }
    }
}
