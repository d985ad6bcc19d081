//! Files that must survive a crash whole: the one place in `src/` that renames a file into
//! place durably. (Key and certificate files go through `outpost_certs::write_*_file`, which
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
