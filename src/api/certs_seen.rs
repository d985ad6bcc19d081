//! Certificate expiry as a node can know it: the CA's and its own from its files, and the
//! admin and client certificates presented to it within the last day (admins issue theirs
//! offline and agents renew their own, so no replicated record holds every expiry). A client
//! whose renewal keeps failing shows here days before its certificate ends.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::Caller;
pub use crate::wire::CertExpiry;

/// Certificates presented longer ago than this no longer count.
pub const WINDOW_SECS: i64 = 24 * 3600;
/// Identities remembered per kind (a site has at most a few tens of thousands of clients).
const MAX_IDENTITIES: usize = 200_000;

#[derive(Default)]
struct Seen {
    /// identity -> (not after, last presented), both unix seconds.
    by_id: HashMap<String, (i64, i64)>,
}

impl Seen {
    fn note(&mut self, id: &str, not_after: i64, now: i64) {
        if let Some(e) = self.by_id.get_mut(id) {
            *e = (not_after, now);
            return;
        }
        if self.by_id.len() >= MAX_IDENTITIES {
            self.by_id.retain(|_, (_, seen)| now - *seen <= WINDOW_SECS);
            if self.by_id.len() >= MAX_IDENTITIES {
                return;
            }
        }
        self.by_id.insert(id.to_owned(), (not_after, now));
    }

    fn soonest(&self, now: i64) -> Option<i64> {
        self.by_id
            .values()
            .filter(|(_, seen)| now - *seen <= WINDOW_SECS)
            .map(|(not_after, _)| *not_after)
            .min()
    }
}

/// Admin and client certificates presented to this node.
#[derive(Default)]
pub struct CertsSeen {
    admin: Mutex<Seen>,
    client: Mutex<Seen>,
}

impl CertsSeen {
    /// Remembers the certificate a request came with.
    pub fn note(&self, caller: &Caller, now: i64) {
        let (seen, id, not_after) = match caller {
            Caller::Admin {
                name, not_after, ..
            } => (&self.admin, name, *not_after),
            Caller::Client { id, not_after, .. } => (&self.client, id, *not_after),
            _ => return,
        };
        match seen.lock() {
            Ok(mut s) => s.note(id, not_after, now),
            Err(p) => p.into_inner().note(id, not_after, now),
        }
    }

    /// (admin, client) soonest expiries among certificates presented in the last day.
    pub fn soonest(&self, now: i64) -> (Option<i64>, Option<i64>) {
        let read = |m: &Mutex<Seen>| match m.lock() {
            Ok(s) => s.soonest(now),
            Err(p) => p.into_inner().soonest(now),
        };
        (read(&self.admin), read(&self.client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, not_after: i64) -> Caller {
        Caller::Client {
            id: id.into(),
            serial: "01".into(),
            not_before: 0,
            not_after,
        }
    }

    #[test]
    fn soonest_of_the_last_day_per_kind() {
        let seen = CertsSeen::default();
        seen.note(&client("a", 500), 100);
        seen.note(&client("b", 300), 100);
        seen.note(
            &Caller::Admin {
                name: "ops".into(),
                issued_at: 0,
                not_after: 900,
                grant: outpost_storage::Grant::admin(),
            },
            100,
        );
        seen.note(&Caller::Node(2), 100);
        assert_eq!(seen.soonest(100), (Some(900), Some(300)));
        // b renewed: its new certificate counts, not the old one.
        seen.note(&client("b", 5000), 200);
        assert_eq!(seen.soonest(200), (Some(900), Some(500)));
        // A day later, only what was presented since counts.
        seen.note(&client("c", 7000), 100 + WINDOW_SECS + 50);
        assert_eq!(
            seen.soonest(100 + WINDOW_SECS + 60),
            (None, Some(5000)),
            "a (seen at 100) is out of the window; b (seen at 200) still in"
        );
    }
}
