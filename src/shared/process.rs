//! This process as the kernel sees it: its resident memory, which a node reports in
//! `/metrics` and `/v1/status` and `bench sync` prints per node; and how its allocator gives
//! memory back after a burst.
//!
//! glibc's malloc raises its mmap threshold each time a large mmapped block is freed (up to
//! 32 MiB), after which blocks of that size are carved from the arenas, which shrink only from
//! their top: after a burst of Argon2 checks (19 MiB each), 12 MiB request bodies or 64 MiB
//! peer frames, a node kept hundreds of MB it no longer used. A fixed threshold turns that
//! raising off, so a large block goes back to the kernel when it is freed; a periodic
//! `malloc_trim` hands back the free pages inside the arenas that small blocks left. Measured
//! in docs/performance.md ("Budgets: memory and descriptors under attack").

/// Resident set size of this process in bytes (`/proc/self/statm`), or None where there is
/// no procfs.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    statm_resident_bytes(&statm, page_size())
}

/// The resident bytes in the text of a `statm` file: its second field counts pages.
fn statm_resident_bytes(statm: &str, page_size: u64) -> Option<u64> {
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_size)
}

/// Blocks of this size or larger are mmapped on their own and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 << 10;

/// How often a long-running process hands free arena pages back (`trim_loop`).
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Sets the allocator so that freed memory goes back to the kernel (see the module comment).
/// Call before any thread starts: mallopt is not meant to race with allocations.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and changes only the allocator's parameters; it runs
    // in main before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Hands the free pages of every malloc arena back to the kernel. Cheap when there are none
/// (a walk over the free lists); run on a blocking thread.
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes an integer and only releases memory malloc owns and no longer
    // hands out.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `trim_allocator` every `TRIM_EVERY`, for as long as the process runs (node and agent).
pub async fn trim_loop() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if tokio::task::spawn_blocking(trim_allocator).await.is_err() {
            return;
        }
    }
}

/// File descriptors this process holds open (`/proc/self/fd`), or None where there is no
/// procfs.
pub fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory's own descriptor is among the entries while it is read.
    Some(dir.count().saturating_sub(1) as u64)
}

/// Bytes of the regular files under `path` (recursively; symbolic links are not followed),
/// at most `max_entries` entries visited. A missing path holds 0 bytes; entries that vanish
/// while walked are skipped. Blocking: run on a blocking thread.
pub fn dir_bytes(path: &std::path::Path, max_entries: usize) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![path.to_path_buf()];
    let mut seen = 0usize;
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_file() {
            total = total.saturating_add(meta.len());
        } else if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            for e in entries.flatten() {
                seen += 1;
                if seen > max_entries {
                    return total;
                }
                todo.push(e.path());
            }
        }
    }
    total
}

/// Bytes of the files in `dir` whose name starts with `prefix` (a database and its `-wal`,
/// `-shm` files).
pub fn prefixed_file_bytes(dir: &std::path::Path, prefix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .fold(0u64, u64::saturating_add)
}

/// Free bytes (for an unprivileged user) and size of the file system holding `path`
/// (statvfs): the node's disk metrics and the agent's disk checks.
pub fn fs_room(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is written by statvfs
    // and read only when it returned 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // The widths of fsblkcnt_t and c_ulong depend on the target.
    #[allow(clippy::unnecessary_cast)]
    let frsize = if st.f_frsize > 0 {
        st.f_frsize as u64
    } else {
        st.f_bsize as u64
    };
    #[allow(clippy::unnecessary_cast)]
    let (avail, blocks) = (st.f_bavail as u64, st.f_blocks as u64);
    let total = blocks.saturating_mul(frsize);
    Ok((avail.saturating_mul(frsize).min(total), total))
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no pointer is involved.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_gives_the_second_field_in_bytes() {
        for (statm, page, want) in [
            ("12345 678 90 1 0 2000 0\n", 4096, Some(678 * 4096)),
            ("1 2 3 4 5 6 7", 65536, Some(2 * 65536)),
            ("0 0 0 0 0 0 0", 4096, Some(0)),
            ("12345", 4096, None),
            ("", 4096, None),
            ("12345 lots 1 0 0 1 0", 4096, None),
            ("1 18446744073709551615 0 0 0 0 0", 4096, None),
        ] {
            assert_eq!(statm_resident_bytes(statm, page), want, "{statm:?}");
        }
    }

    #[test]
    fn sizes_of_files_and_directories() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("raft.db"), [0u8; 100])?;
        std::fs::write(dir.path().join("raft.db-wal"), [0u8; 20])?;
        std::fs::write(dir.path().join("state.db"), [0u8; 7])?;
        std::fs::create_dir_all(dir.path().join("blobs/ab"))?;
        std::fs::write(dir.path().join("blobs/ab/x"), [0u8; 1000])?;
        std::fs::write(dir.path().join("blobs/y"), [0u8; 24])?;
        assert_eq!(prefixed_file_bytes(dir.path(), "raft.db"), 120);
        assert_eq!(prefixed_file_bytes(dir.path(), "state.db"), 7);
        assert_eq!(dir_bytes(&dir.path().join("blobs"), 1000), 1024);
        assert_eq!(dir_bytes(&dir.path().join("missing"), 1000), 0);
        let (free, total) = fs_room(dir.path()).expect("statvfs");
        assert!(total > 0 && free <= total, "{free} {total}");
        assert!(fs_room(&dir.path().join("missing")).is_err());
        Ok(())
    }

    #[test]
    fn this_process_has_resident_memory() {
        // Linux only (the appliance's platform): a running test holds at least a page.
        let rss = resident_bytes().expect("procfs");
        assert!(rss >= page_size(), "{rss}");
    }
}
