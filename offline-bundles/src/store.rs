//! The content-addressed blob store: `sha256/ab/abcdef...` for blobs, `tmp/` for partial files.
//!
//! A blob appears under its hash only after its bytes were hashed, fsynced and renamed, and
//! the directory fsynced: a crash leaves at most temp files (removed by [`BlobStore::clean_tmp`]
//! at start-up) and complete, correct blobs nobody references yet (removed by [`BlobStore::gc`]).
//!
//! Imports, [`BlobStore::put_verified`], `gc` and `clean_tmp` on one store run one at a time,
//! serialized by an exclusive lock on the file `lock` (flock, so it also holds across
//! processes): a refused import removes the blobs it created, and no other writer can have
//! come to rely on them meanwhile.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::error::BundleError;
use crate::fsutil::{fsync_dir, random_hex};
use crate::manifest::is_sha256_hex;

/// Read and hash buffer size: large reads keep syscalls and copies few.
pub const IO_BUFFER: usize = 1 << 20;

/// A content-addressed directory of blobs named by their sha256.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// What [`BlobStore::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobStatus {
    /// Present and its content hashes to its name.
    Ok,
    /// Not in the store.
    Missing,
    /// Present but the content does not match the name.
    Corrupt,
}

/// What [`BlobStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Hashes of removed blobs.
    pub removed: Vec<String>,
    /// Bytes freed.
    pub bytes: u64,
}

impl BlobStore {
    /// Open (creating if needed, mode 0700) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BundleError> {
        let root = root.into();
        for dir in [root.clone(), root.join("tmp"), root.join("sha256")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| BundleError::io(format!("creating {}", dir.display()), e))?;
        }
        let store = BlobStore { root };
        drop(store.lock()?);
        Ok(store)
    }

    /// Take the store's exclusive writer lock (blocks until free; released on drop).
    fn lock(&self) -> Result<File, BundleError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| BundleError::io(format!("opening {}", path.display()), e))?;
        file.lock()
            .map_err(|e| BundleError::io(format!("locking {}", path.display()), e))?;
        Ok(file)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this hash lives (whether or not it is present).
    pub fn blob_path(&self, sha256: &str) -> Result<PathBuf, BundleError> {
        if !is_sha256_hex(sha256) {
            return Err(BundleError::InvalidHash {
                hash: sha256.to_string(),
            });
        }
        Ok(self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }

    /// Is the blob present (not re-hashed; see [`BlobStore::verify`])?
    pub fn contains(&self, sha256: &str) -> bool {
        self.blob_path(sha256).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Re-hash a blob and compare with its name.
    pub fn verify(&self, sha256: &str) -> Result<BlobStatus, BundleError> {
        let path = self.blob_path(sha256)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BlobStatus::Missing),
            Err(e) => return Err(BundleError::io(format!("opening {}", path.display()), e)),
        };
        let (actual, _) = hash_reader(file, &format!("blob {sha256}"))?;
        Ok(if actual == sha256 {
            BlobStatus::Ok
        } else {
            BlobStatus::Corrupt
        })
    }

    /// Every blob hash in the store, sorted.
    pub fn list(&self) -> Result<Vec<String>, BundleError> {
        let mut out = Vec::new();
        for (hash, _) in self.walk()? {
            out.push(hash);
        }
        out.sort();
        Ok(out)
    }

    /// Remove every file in `tmp/` (partial imports of a previous run). Call at start-up,
    /// before any import runs. Returns how many were removed.
    pub fn clean_tmp(&self) -> Result<usize, BundleError> {
        let _lock = self.lock()?;
        let dir = self.root.join("tmp");
        let entries = fs::read_dir(&dir)
            .map_err(|e| BundleError::io(format!("listing {}", dir.display()), e))?;
        let mut n = 0;
        for entry in entries {
            let entry =
                entry.map_err(|e| BundleError::io(format!("listing {}", dir.display()), e))?;
            let path = entry.path();
            fs::remove_file(&path)
                .map_err(|e| BundleError::io(format!("removing {}", path.display()), e))?;
            n += 1;
        }
        if n > 0 {
            fsync_dir(&dir)?;
        }
        Ok(n)
    }

    /// Remove every blob whose hash is not in `keep` (the hashes the replicated state references).
    pub fn gc(&self, keep: &BTreeSet<String>) -> Result<GcReport, BundleError> {
        let _lock = self.lock()?;
        let mut report = GcReport::default();
        let mut dirs = BTreeSet::new();
        for (hash, path) in self.walk()? {
            if keep.contains(&hash) {
                continue;
            }
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path)
                .map_err(|e| BundleError::io(format!("removing {}", path.display()), e))?;
            report.bytes += len;
            report.removed.push(hash);
            dirs.insert(crate::fsutil::parent_of(&path));
        }
        for dir in dirs {
            // An emptied fan-out directory goes too (fails harmlessly when not empty).
            if fs::remove_dir(&dir).is_err() {
                fsync_dir(&dir)?;
            }
        }
        if !report.removed.is_empty() {
            fsync_dir(&self.root.join("sha256"))?;
        }
        report.removed.sort();
        Ok(report)
    }

    /// Store a blob received from elsewhere (a peer), verifying size and hash while streaming.
    /// Nothing is left behind on error. Returns the blob's path.
    pub fn put_verified(
        &self,
        reader: impl Read,
        sha256: &str,
        size: u64,
    ) -> Result<PathBuf, BundleError> {
        let path = self.blob_path(sha256)?;
        let mut txn = StoreTxn::new(self)?;
        if path.is_file() {
            return Ok(path);
        }
        let mut writer = txn.begin()?;
        let mut reader = reader.take(size.saturating_add(1));
        let mut buf = vec![0u8; IO_BUFFER];
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BundleError::io(format!("reading blob {sha256}"), e)),
            };
            done += n as u64;
            if done > size {
                break;
            }
            hasher.update(&buf[..n]);
            writer.write(&buf[..n], sha256)?;
        }
        if done != size {
            return Err(BundleError::SizeMismatch {
                entry: sha256.to_string(),
                declared: size,
                actual: done,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            return Err(BundleError::HashMismatch {
                entry: sha256.to_string(),
                declared: sha256.to_string(),
                actual,
            });
        }
        txn.finish(writer, sha256)?;
        txn.commit();
        Ok(path)
    }

    /// (hash, path) of every well-named blob file.
    fn walk(&self) -> Result<Vec<(String, PathBuf)>, BundleError> {
        let top = self.root.join("sha256");
        let list = |d: &Path| {
            fs::read_dir(d).map_err(|e| BundleError::io(format!("listing {}", d.display()), e))
        };
        let mut out = Vec::new();
        for sub in list(&top)? {
            let sub = sub.map_err(|e| BundleError::io(format!("listing {}", top.display()), e))?;
            if !sub.path().is_dir() {
                continue;
            }
            for f in list(&sub.path())? {
                let f = f.map_err(|e| BundleError::io("listing blob directory", e))?;
                let name = f.file_name().to_string_lossy().into_owned();
                if is_sha256_hex(&name) && f.path().is_file() {
                    out.push((name, f.path()));
                }
            }
        }
        Ok(out)
    }
}

/// Hash everything a reader yields; returns (hex sha256, bytes).
pub(crate) fn hash_reader(mut r: impl Read, what: &str) -> Result<(String, u64), BundleError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; IO_BUFFER];
    let mut total = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::io(format!("reading {what}"), e)),
        }
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Everything one import adds to the store. Dropped without [`StoreTxn::commit`], it removes
/// its temp file and every blob it created (blobs that were already present stay).
pub(crate) struct StoreTxn<'a> {
    store: &'a BlobStore,
    created: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
    temp: Option<PathBuf>,
    committed: bool,
    _lock: File,
}

/// A payload being streamed into `tmp/`.
pub(crate) struct BlobWriter {
    file: File,
    tmp: PathBuf,
}

impl BlobWriter {
    pub(crate) fn write(&mut self, data: &[u8], what: &str) -> Result<(), BundleError> {
        self.file
            .write_all(data)
            .map_err(|e| BundleError::io(format!("payload {what:?} in {}", self.tmp.display()), e))
    }
}

/// Writes a payload's buffers to its temp file on a second thread, so hashing the next
/// buffer overlaps writing this one. Buffers travel by move and are recycled: no copies.
pub(crate) struct PipelinedWriter {
    tx: Option<SyncSender<(Vec<u8>, usize)>>,
    free: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<std::io::Result<File>>>,
    tmp: PathBuf,
    allocated: usize,
}

/// Buffers in flight per payload (one being hashed, up to two queued or being written).
const PIPELINE_BUFFERS: usize = 3;

impl PipelinedWriter {
    pub(crate) fn start(w: BlobWriter, what: &str) -> Self {
        let (tx, rx) = sync_channel::<(Vec<u8>, usize)>(PIPELINE_BUFFERS - 1);
        let (free_tx, free) = sync_channel::<Vec<u8>>(PIPELINE_BUFFERS);
        let BlobWriter { mut file, tmp } = w;
        let thread = std::thread::Builder::new()
            .name(format!("blob-writer {what}"))
            .spawn(move || {
                for (buf, len) in rx {
                    file.write_all(&buf[..len])?;
                    let _ = free_tx.try_send(buf);
                }
                Ok(file)
            });
        match thread {
            Ok(t) => PipelinedWriter {
                tx: Some(tx),
                free,
                thread: Some(t),
                tmp,
                allocated: 1,
            },
            // No thread: keep the file on this side and fail at the first send.
            Err(e) => {
                tracing::warn!(error = %e, "could not start the blob writer thread");
                PipelinedWriter {
                    tx: None,
                    free,
                    thread: None,
                    tmp,
                    allocated: 1,
                }
            }
        }
    }

    /// Hand `buf[..len]` to the writer; `buf` is replaced by a recycled buffer of the same size.
    pub(crate) fn send(
        &mut self,
        buf: &mut Vec<u8>,
        len: usize,
        what: &str,
    ) -> Result<(), BundleError> {
        let fresh = match self.free.try_recv() {
            Ok(b) => b,
            Err(_) if self.allocated < PIPELINE_BUFFERS => {
                self.allocated += 1;
                vec![0u8; buf.len()]
            }
            Err(_) => match self.free.recv() {
                Ok(b) => b,
                Err(_) => return Err(self.failure(what)),
            },
        };
        let full = std::mem::replace(buf, fresh);
        let sent = match &self.tx {
            Some(tx) => tx.send((full, len)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.failure(what));
        }
        Ok(())
    }

    /// Wait for every buffer to be written; the file comes back for fsync and rename.
    pub(crate) fn finish(mut self, what: &str) -> Result<BlobWriter, BundleError> {
        self.tx = None;
        let tmp = self.tmp.clone();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(file))) => Ok(BlobWriter { file, tmp }),
            Some(Ok(Err(e))) => Err(BundleError::io(
                format!("payload {what:?} in {}", tmp.display()),
                e,
            )),
            _ => Err(self.failure(what)),
        }
    }

    /// The writer stopped: collect its error.
    fn failure(&mut self, what: &str) -> BundleError {
        self.tx = None;
        let context = format!("payload {what:?} in {}", self.tmp.display());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => BundleError::io(context, e),
            _ => BundleError::io(context, std::io::Error::other("blob writer thread stopped")),
        }
    }
}

impl Drop for PipelinedWriter {
    fn drop(&mut self) {
        // Stop and wait, so no write lands after the import's clean-up removed the temp file.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<'a> StoreTxn<'a> {
    /// Start a transaction: waits for the store's writer lock.
    pub(crate) fn new(store: &'a BlobStore) -> Result<Self, BundleError> {
        Ok(StoreTxn {
            _lock: store.lock()?,
            store,
            created: Vec::new(),
            created_dirs: Vec::new(),
            temp: None,
            committed: false,
        })
    }

    /// Open a new temp file in `tmp/`.
    pub(crate) fn begin(&mut self) -> Result<BlobWriter, BundleError> {
        let tmp = self
            .store
            .root
            .join("tmp")
            .join(format!("{}.part", random_hex(12)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| BundleError::io(format!("creating {}", tmp.display()), e))?;
        self.temp = Some(tmp.clone());
        Ok(BlobWriter { file, tmp })
    }

    /// fsync the temp file, rename it to its hash path, fsync the directories.
    pub(crate) fn finish(&mut self, w: BlobWriter, sha256: &str) -> Result<PathBuf, BundleError> {
        let dest = self.store.blob_path(sha256)?;
        // After sync_all the blob's bytes are on disk, under its temp name.
        w.file
            .sync_all()
            .map_err(|e| BundleError::io(format!("fsync of {}", w.tmp.display()), e))?;
        drop(w.file);
        if dest.is_file() {
            // Same content already present (a duplicate payload or a concurrent import).
            fs::remove_file(&w.tmp)
                .map_err(|e| BundleError::io(format!("removing {}", w.tmp.display()), e))?;
            self.temp = None;
            return Ok(dest);
        }
        let dir = crate::fsutil::parent_of(&dest);
        let new_dir = !dir.is_dir();
        if new_dir {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
                .map_err(|e| BundleError::io(format!("creating {}", dir.display()), e))?;
            self.created_dirs.push(dir.clone());
        }
        fs::rename(&w.tmp, &dest)
            .map_err(|e| BundleError::io(format!("renaming into {}", dest.display()), e))?;
        self.temp = None;
        self.created.push(dest.clone());
        // After these fsyncs the blob is durable under its hash name (and its directory too).
        fsync_dir(&dir)?;
        if new_dir {
            fsync_dir(&self.store.root.join("sha256"))?;
        }
        Ok(dest)
    }

    /// Keep what was added.
    pub(crate) fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for StoreTxn<'_> {
    fn drop(&mut self) {
        if let Some(tmp) = self.temp.take()
            && let Err(e) = fs::remove_file(&tmp)
        {
            tracing::warn!(path = %tmp.display(), error = %e, "could not remove temp file");
        }
        if self.committed {
            return;
        }
        for blob in self.created.drain(..) {
            if let Err(e) = fs::remove_file(&blob) {
                tracing::warn!(path = %blob.display(), error = %e, "could not remove blob of a refused import");
            }
        }
        // Fan-out directories this import made go too, so the store looks exactly as before.
        for dir in self.created_dirs.drain(..) {
            let _ = fs::remove_dir(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn put_verify_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs")).unwrap();
        let a = sha(b"alpha");
        let b = sha(b"beta");
        store.put_verified(&b"alpha"[..], &a, 5).unwrap();
        store.put_verified(&b"beta"[..], &b, 4).unwrap();
        assert_eq!(store.verify(&a).unwrap(), BlobStatus::Ok);
        assert_eq!(store.verify(&sha(b"x")).unwrap(), BlobStatus::Missing);
        assert!(store.verify("nothex").is_err());
        let mut list = vec![a.clone(), b.clone()];
        list.sort();
        assert_eq!(store.list().unwrap(), list);

        // Wrong size or hash: refused, nothing kept.
        let c = sha(b"gamma");
        let cases: &[(&[u8], u64, &str)] = &[
            (b"gamma", 4, "SizeMismatch"),
            (b"gamma", 6, "SizeMismatch"),
            (b"gammx", 5, "HashMismatch"),
        ];
        for (data, size, want) in cases {
            let err = store.put_verified(*data, &c, *size).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{err:?}");
            assert!(!store.contains(&c));
            assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
        }

        // Corruption is seen.
        fs::write(store.blob_path(&b).unwrap(), b"BETA").unwrap();
        assert_eq!(store.verify(&b).unwrap(), BlobStatus::Corrupt);

        let report = store.gc(&BTreeSet::from([a.clone()])).unwrap();
        assert_eq!(report.removed, vec![b.clone()]);
        assert_eq!(report.bytes, 4);
        assert_eq!(store.list().unwrap(), vec![a]);
    }

    #[test]
    fn pipelined_writer_writes_in_order_and_reports_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut txn = StoreTxn::new(&store).unwrap();
        let mut w = PipelinedWriter::start(txn.begin().unwrap(), "p");
        let mut expect = Vec::new();
        let mut buf = vec![0u8; 4096];
        for i in 0..20u8 {
            buf.fill(i);
            expect.extend_from_slice(&buf[..100 + usize::from(i)]);
            w.send(&mut buf, 100 + usize::from(i), "p").unwrap();
            assert_eq!(buf.len(), 4096);
        }
        let w = w.finish("p").unwrap();
        let path = txn.finish(w, &sha(&expect)).unwrap();
        txn.commit();
        assert_eq!(fs::read(path).unwrap(), expect);

        let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut w = PipelinedWriter::start(
            BlobWriter {
                file: full,
                tmp: PathBuf::from("/dev/full"),
            },
            "big",
        );
        let mut err = None;
        for _ in 0..10 {
            if let Err(e) = w.send(&mut buf, 4096, "big") {
                err = Some(e);
                break;
            }
        }
        let err = match err {
            Some(e) => e,
            None => w.finish("big").map(|_| ()).unwrap_err(),
        };
        assert!(matches!(err, BundleError::DiskFull { .. }), "{err:?}");
        assert!(err.to_string().contains("big"), "{err}");
    }

    #[test]
    fn writers_hold_the_store_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let other = File::options()
            .write(true)
            .open(dir.path().join("lock"))
            .unwrap();
        {
            let _txn = StoreTxn::new(&store).unwrap();
            assert!(matches!(
                other.try_lock(),
                Err(fs::TryLockError::WouldBlock)
            ));
        }
        other.try_lock().unwrap();
        other.unlock().unwrap();
    }

    #[test]
    fn clean_tmp_removes_partials() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("tmp/x.part"), b"half").unwrap();
        fs::write(dir.path().join("tmp/y.part"), b"half").unwrap();
        assert_eq!(store.clean_tmp().unwrap(), 2);
        assert_eq!(store.clean_tmp().unwrap(), 0);
    }

    #[test]
    fn dropped_txn_removes_what_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let kept = sha(b"kept");
        store.put_verified(&b"kept"[..], &kept, 4).unwrap();
        {
            let mut txn = StoreTxn::new(&store).unwrap();
            let mut w = txn.begin().unwrap();
            w.write(b"new", "n").unwrap();
            txn.finish(w, &sha(b"new")).unwrap();
            let mut w = txn.begin().unwrap();
            w.write(b"kept", "k").unwrap();
            txn.finish(w, &kept).unwrap();
            let mut w = txn.begin().unwrap();
            w.write(b"partial", "p").unwrap();
            // dropped mid-payload
        }
        assert_eq!(store.list().unwrap(), vec![kept]);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("sha256")).unwrap().count(), 1);
    }
}
