//! Writing key and certificate files so that a crash leaves the old file or the new one,
//! never a torn one, and a key is never readable by others, not even for an instant.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes a private key/secret: temp file (mode 0600 from creation) + fsync + rename + dir fsync.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomically(path, contents, 0o600)
}

/// Writes public material the same way, mode 0644.
pub fn write_public_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomically(path, contents, 0o644)
}

/// Distinguishes temp files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let written = write_new_file(&tmp, contents, mode).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the temp file holds nothing the caller has not been told failed.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is synced: after this, a crash leaves the new
    // contents under `path`.
    File::open(dir)?.sync_all()
}

fn write_new_file(tmp: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    // The mode is applied at creation (so a secret is never briefly world-readable), then set
    // exactly, since the umask may have taken bits away from a public file.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    f.write_all(contents)?;
    // The data is on disk before the rename can make it visible.
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn modes_contents_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        let cert = dir.path().join("node.crt");
        type Writer = fn(&Path, &[u8]) -> io::Result<()>;
        let cases: [(&Path, Writer, u32); 2] = [
            (&key, write_secret_file, 0o600),
            (&cert, write_public_file, 0o644),
        ];
        for (path, write, want) in cases {
            write(path, b"first").unwrap();
            assert_eq!(mode(path), want, "{}", path.display());
            assert_eq!(std::fs::read(path).unwrap(), b"first");
            write(path, b"second").unwrap();
            assert_eq!(mode(path), want, "{}", path.display());
            assert_eq!(std::fs::read(path).unwrap(), b"second");
        }
        assert_eq!(entries(dir.path()), vec!["node.crt", "node.key"]);
    }

    #[test]
    fn replacing_a_public_file_with_a_secret_tightens_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_public_file(&p, b"x").unwrap();
        write_secret_file(&p, b"y").unwrap();
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn failures_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_secret_file(&dir.path().join("missing/k"), b"x").is_err());
        // Renaming onto a directory fails after the temp file was written.
        std::fs::create_dir(dir.path().join("taken")).unwrap();
        std::fs::write(dir.path().join("taken/inside"), b"x").unwrap();
        assert!(write_secret_file(&dir.path().join("taken"), b"x").is_err());
        assert_eq!(entries(dir.path()), vec!["taken"]);
        assert!(write_secret_file(Path::new("/"), b"x").is_err());
    }
}
