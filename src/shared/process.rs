//! This process as the kernel sees it: its resident memory, which a node reports in
//! `/metrics` and `/v1/status` and `bench sync` prints per node.

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
    fn this_process_has_resident_memory() {
        // Linux only (the appliance's platform): a running test holds at least a page.
        let rss = resident_bytes().expect("procfs");
        assert!(rss >= page_size(), "{rss}");
    }
}
