//! Files that must survive a crash whole: the one place in `src/` that renames a file into
//! place durably; and the one streamed sha256 of a file. (Key and certificate files go through `outpost_certs::write_*_file`, which
//! writes a temp file, fsyncs it and renames it the same way.)

use std::io;
use std::path::Path;

/// Renames `from` (already written and fsynced by the caller) to `to`, then fsyncs the
/// directory of `to`: once this returns, a crash leaves the new file under `to`.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// The sha256 of a file's bytes, hex, read in 1 MiB pieces; an error names the file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(named)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(named)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_into_place() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let (a, b) = (d.path().join("a.partial"), d.path().join("a"));
        std::fs::write(&a, "x")?;
        rename_durably(&a, &b)?;
        assert!(!a.exists());
        assert_eq!(std::fs::read_to_string(&b)?, "x");
        assert!(rename_durably(&a, &b).is_err());
        Ok(())
    }
}
