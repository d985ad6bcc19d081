//! Durable file writes: temp file + fsync + rename + fsync of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::BundleError;

/// fsync a directory so a rename or create inside it survives a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), BundleError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BundleError::io(format!("fsync of directory {}", dir.display()), e))
}

/// The directory holding `path` ("." for a bare file name).
pub(crate) fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temp file beside `path`, created exclusively with `mode`.
pub(crate) fn create_temp_beside(path: &Path, mode: u32) -> Result<(File, PathBuf), BundleError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_of(path).join(format!(".{name}.{}.tmp", random_hex(8)));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| BundleError::io(format!("creating {}", tmp.display()), e))?;
    Ok((file, tmp))
}

/// Make `tmp` (already written and fsynced) the file at `path`, durably.
pub(crate) fn commit_temp(tmp: &Path, path: &Path) -> Result<(), BundleError> {
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        BundleError::io(format!("renaming into {}", path.display()), e)
    })?;
    // The rename is durable once the directory is fsynced.
    fsync_dir(&parent_of(path))
}

/// Write `bytes` to `path` atomically and durably with `mode`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundleError> {
    let (mut file, tmp) = create_temp_beside(path, mode)?;
    let res = file
        .write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| BundleError::io(format!("writing {}", path.display()), e));
    drop(file);
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    commit_temp(&tmp, path)
}

/// `n` random bytes as hex, for temp names and bundle ids.
pub(crate) fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}
