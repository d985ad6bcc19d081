//! Request ids: the name under which a write is remembered by every node (`Command::Once`),
//! so a retry gets the first outcome back instead of applying twice.
//!
//! Ids begin with the time they were made (12 hex digits of unix milliseconds), so the nodes'
//! table of recent ids grows at one end and forgets at the other: each write touches the
//! same few index pages instead of a random one, which halved the storage cost of a write
//! (`cargo bench -p outpost-storage --bench apply`). The order only helps performance:
//! an id is looked up by equality, and an id of any shape is still accepted.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Hex digits of the time prefix (unix ms; enough until the year 10889).
const TIME_DIGITS: usize = 12;

/// A fresh id: the time, then 80 random bits (32 characters).
pub fn fresh() -> String {
    let mut b = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!(
        "{:0width$x}{}",
        crate::shared::now_ms().max(0),
        hex::encode(b),
        width = TIME_DIGITS
    )
}

/// The id a node commits a client's request under: the client's time prefix (its first 12
/// characters, whatever they are), then a hash of the caller, the client's id and the
/// commit's number within the request (64 characters). Scoped by caller, so two callers that
/// send the same id never share an outcome.
pub fn scoped(actor: &str, client_id: &str, n: u32) -> String {
    let prefix: String = client_id.chars().take(TIME_DIGITS).collect();
    let digest = hex::encode(Sha256::digest(format!("{actor}\n{client_id}\n{n}")));
    format!("{prefix}{}", &digest[..64 - prefix.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_sort_by_time_and_fit_the_header_rules() {
        let a = fresh();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = fresh();
        assert_eq!(a.len(), 32);
        assert!(a < b, "{a} then {b}");
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn scoped_ids_keep_the_prefix_and_differ_by_caller_and_commit() {
        let id = fresh();
        let s = scoped("admin:a", &id, 0);
        assert_eq!(s.len(), 64);
        assert_eq!(&s[..12], &id[..12]);
        assert_eq!(s, scoped("admin:a", &id, 0));
        assert_ne!(s, scoped("admin:b", &id, 0));
        assert_ne!(s, scoped("admin:a", &id, 1));
        // A short id from another client still gives a 64-character id.
        assert_eq!(scoped("admin:a", "0123456789abcdef", 0).len(), 64);
    }
}
