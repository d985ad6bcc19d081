//! The sign-in form's budget, as pure decisions (the handler in `session` does the I/O).
//!
//! - At most `argon2_permits()` password checks run at once on a node (one per core, at most
//!   four; each holds 19 MiB); a sign-in that finds none free is answered 429 at once.
//! - Wrong passwords are counted per node in memory, per account and per source (an IPv4
//!   address, or the /64 of an IPv6 one: `outpost_storage::signin_source_key`). When a key
//!   reaches `FAILURE_LIMIT` failures within `FAILURE_WINDOW_MS` on one node, that node commits
//!   `Command::LockSignIn`, and every node refuses password sign-ins for the key until the lock
//!   ends, before any hash is checked. So across the cluster an account or a source gets at
//!   most `FAILURE_LIMIT` guesses per node before it is locked.
//! - A lock lasts `base` (one minute) and doubles with each lock of the same key within a day,
//!   up to 15 times `base` (fifteen minutes): an attacked account is never locked for good,
//!   and its owner can always sign in with a one-time link from `outpost console login` (root
//!   on a node, through the local socket), which no lock covers.
//! - Only accounts that exist are counted (a made-up name costs a check, but no room), and
//!   accounts and sources are counted in tables of their own: sources made up by the
//!   hundred never push an account out.
//! - A node proposes at most `LOCKS_PER_MINUTE` locks a minute, and remembers at most
//!   `MAX_TRACKED` keys of each table: the commands and the memory a flood can cost are
//!   bounded. A key stays at the limit until its lock is proposed: when the node's locks
//!   for the minute are spent, its next failure asks again (a count is never dropped).

use std::collections::HashMap;

use outpost_storage::SignInLock;

/// Failures of one key on one node that lock it.
pub const FAILURE_LIMIT: u32 = 10;
/// Failures older than this are forgotten (the count starts again).
pub const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;
/// The first lock of a key; each further lock within a day is twice the last.
pub const LOCK_BASE_MS: i64 = 60 * 1000;
/// The longest lock, as a multiple of the base.
const LOCK_CAP_FACTOR: i64 = 15;
/// Locks a node proposes per minute at most (a key whose lock waits stays at the limit).
pub const LOCKS_PER_MINUTE: u32 = 30;
/// Keys whose failures a node remembers at most, in each table (accounts, sources).
pub const MAX_TRACKED: usize = 10_000;
/// A lock's strikes count only while its row is kept (a day after it ended, in storage).
const STRIKES_KEPT_MS: i64 = 24 * 3600 * 1000;

/// How many password checks may run at once: one per core, at least one, at most four.
pub fn argon2_permits(cores: usize) -> usize {
    cores.clamp(1, 4)
}

/// The base lock length: `OUTPOST_SIGNIN_LOCK_MS` when set to a number of milliseconds from
/// 1,000 to the default (tests use a short one), else `LOCK_BASE_MS`.
pub fn lock_base_ms(env: Option<&str>) -> i64 {
    env.and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|ms| (1000..=LOCK_BASE_MS).contains(ms))
        .unwrap_or(LOCK_BASE_MS)
}

/// How long the next lock of a key lasts, given the strikes it already has.
pub fn lock_len_ms(strikes: u32, base_ms: i64) -> i64 {
    let doubled = base_ms.saturating_mul(1i64 << strikes.min(16));
    doubled.min(base_ms.saturating_mul(LOCK_CAP_FACTOR))
}

/// When the next lock of a key ends if it is committed at `now`: its strikes are those of
/// its row unless that row's lock ended more than a day ago.
pub fn next_lock_until(existing: Option<&SignInLock>, now: i64, base_ms: i64) -> i64 {
    let strikes = existing
        .filter(|l| l.until_ms.saturating_add(STRIKES_KEPT_MS) >= now)
        .map_or(0, |l| l.strikes);
    now.saturating_add(lock_len_ms(strikes, base_ms))
}

/// The latest end of the locks in force at `now`, if any.
pub fn locked_until(locks: &[SignInLock], now: i64) -> Option<i64> {
    locks.iter().map(|l| l.until_ms).filter(|u| *u > now).max()
}

/// Which table a failure is counted in. Accounts and sources have a table each, so that
/// sources (which anyone can make up by the hundred) never take an account's room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// An account that exists (`account:NAME`): names without an account are not counted.
    Account,
    /// A source address or network (`addr:…`, `net:…`).
    Source,
}

/// The keys a wrong password counts against: the account when it exists (made-up names
/// would only take room), first, so that it gets the node's last lock of the minute; and
/// the source.
pub fn failure_keys(account_exists: bool, account: String, source: String) -> Vec<(Scope, String)> {
    let mut keys = Vec::with_capacity(2);
    if account_exists {
        keys.push((Scope::Account, account));
    }
    keys.push((Scope::Source, source));
    keys
}

/// Failures per key on this node, accounts and sources apart (at most `MAX_TRACKED` each).
#[derive(Debug, Default)]
pub struct Failures {
    accounts: Counts,
    sources: Counts,
}

/// Keys with a count and when its window started.
#[derive(Debug, Default)]
struct Counts(HashMap<String, (u32, i64)>);

impl Counts {
    /// The entry of `key` at `now` (its window restarted if it passed), or None when the
    /// key is new and `MAX_TRACKED` keys within their window are already tracked.
    fn entry(&mut self, key: &str, now: i64) -> Option<&mut (u32, i64)> {
        if !self.0.contains_key(key) && self.0.len() >= MAX_TRACKED {
            self.0
                .retain(|_, (_, since)| now.saturating_sub(*since) < FAILURE_WINDOW_MS);
            if self.0.len() >= MAX_TRACKED {
                return None;
            }
        }
        let entry = self.0.entry(key.to_owned()).or_insert((0, now));
        if now.saturating_sub(entry.1) >= FAILURE_WINDOW_MS {
            *entry = (0, now);
        }
        Some(entry)
    }
}

impl Failures {
    fn table(&mut self, scope: Scope) -> &mut Counts {
        match scope {
            Scope::Account => &mut self.accounts,
            Scope::Source => &mut self.sources,
        }
    }

    /// Counts a failure of `key` at `now`; true when the key is at `FAILURE_LIMIT`. The count
    /// stays there until `proposed` says its lock was proposed, so that when a lock cannot
    /// be proposed (this node's locks for the minute are spent) the next failure tries
    /// again. A new key is not counted while `MAX_TRACKED` keys of its scope are within their
    /// window.
    pub fn fail(&mut self, scope: Scope, key: &str, now: i64) -> bool {
        match self.table(scope).entry(key, now) {
            Some(entry) => {
                entry.0 = entry.0.saturating_add(1).min(FAILURE_LIMIT);
                entry.0 >= FAILURE_LIMIT
            }
            None => false,
        }
    }

    /// A lock of `key` was proposed: its count starts again, so the next lock needs as many.
    pub fn proposed(&mut self, scope: Scope, key: &str) {
        self.table(scope).0.remove(key);
    }

    /// A proposed lock of `key` was not committed: the key is at the limit again, so that its
    /// next failure proposes the lock again.
    pub fn not_committed(&mut self, scope: Scope, key: &str, now: i64) {
        if let Some(entry) = self.table(scope).entry(key, now) {
            entry.0 = FAILURE_LIMIT;
        }
    }

    /// Forgets the failures of `key` (its owner signed in).
    pub fn forget(&mut self, scope: Scope, key: &str) {
        self.table(scope).0.remove(key);
    }

    #[cfg(test)]
    pub fn tracked(&self, scope: Scope) -> usize {
        match scope {
            Scope::Account => self.accounts.0.len(),
            Scope::Source => self.sources.0.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(until_ms: i64, strikes: u32) -> SignInLock {
        SignInLock {
            key: "account:alice".into(),
            until_ms,
            strikes,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn locks_grow_to_a_cap_and_strikes_are_forgotten_after_a_day() {
        let base = LOCK_BASE_MS;
        for (strikes, want) in [
            (0, base),
            (1, 2 * base),
            (2, 4 * base),
            (3, 8 * base),
            (4, 15 * base),
            (40, 15 * base),
        ] {
            assert_eq!(lock_len_ms(strikes, base), want, "strikes {strikes}");
        }
        let now = 10 * STRIKES_KEPT_MS;
        for (existing, want) in [
            (None, now + base),
            (Some(lock(now - 1000, 2)), now + 4 * base),
            (Some(lock(now - STRIKES_KEPT_MS, 3)), now + 8 * base),
            (Some(lock(now - STRIKES_KEPT_MS - 1, 3)), now + base),
        ] {
            assert_eq!(
                next_lock_until(existing.as_ref(), now, base),
                want,
                "{existing:?}"
            );
        }
    }

    #[test]
    fn locks_in_force() {
        assert_eq!(locked_until(&[], 100), None);
        assert_eq!(locked_until(&[lock(100, 1)], 100), None);
        assert_eq!(locked_until(&[lock(101, 1), lock(300, 1)], 100), Some(300));
        assert_eq!(locked_until(&[lock(50, 1), lock(101, 1)], 100), Some(101));
    }

    #[test]
    fn base_from_the_environment() {
        for (env, want) in [
            (None, LOCK_BASE_MS),
            (Some("2000"), 2000),
            (Some(" 1000 "), 1000),
            (Some("999"), LOCK_BASE_MS),
            (Some("600000"), LOCK_BASE_MS),
            (Some("soon"), LOCK_BASE_MS),
        ] {
            assert_eq!(lock_base_ms(env), want, "{env:?}");
        }
        for (cores, want) in [(0, 1), (1, 1), (2, 2), (4, 4), (64, 4)] {
            assert_eq!(argon2_permits(cores), want);
        }
    }

    #[test]
    fn failures_lock_at_the_limit_within_the_window() {
        use Scope::Source;
        let mut f = Failures::default();
        for i in 1..FAILURE_LIMIT {
            assert!(!f.fail(Source, "a", i as i64), "failure {i}");
        }
        assert!(f.fail(Source, "a", 100));
        // The count starts again once the lock is proposed.
        f.proposed(Source, "a");
        assert!(!f.fail(Source, "a", 101));
        // Failures spread over more than the window never lock.
        let mut f = Failures::default();
        for i in 0..3 * FAILURE_LIMIT as i64 {
            assert!(!f.fail(Source, "b", i * FAILURE_WINDOW_MS / 5));
        }
        f.forget(Source, "b");
        assert_eq!(f.tracked(Source), 0);
    }

    #[test]
    fn only_accounts_that_exist_are_counted() {
        let keys = |exists| failure_keys(exists, "account:a".into(), "addr:192.0.2.1".into());
        assert_eq!(
            keys(true),
            [
                (Scope::Account, "account:a".to_owned()),
                (Scope::Source, "addr:192.0.2.1".to_owned())
            ]
        );
        assert_eq!(keys(false), [(Scope::Source, "addr:192.0.2.1".to_owned())]);
        // Made-up names from many sources, however many, leave an account's count alone.
        let mut f = Failures::default();
        for i in 0..2 * MAX_TRACKED {
            for (scope, key) in failure_keys(false, format!("account:junk{i}"), format!("addr:{i}"))
            {
                f.fail(scope, &key, 0);
            }
        }
        assert_eq!(f.tracked(Scope::Account), 0);
        for i in 1..FAILURE_LIMIT {
            assert!(!f.fail(Scope::Account, "account:a", i as i64));
        }
        assert!(f.fail(Scope::Account, "account:a", 20));
    }

    #[test]
    fn a_key_whose_lock_was_not_proposed_stays_at_the_limit() {
        for scope in [Scope::Account, Scope::Source] {
            let mut f = Failures::default();
            for i in 1..FAILURE_LIMIT {
                assert!(!f.fail(scope, "account:alice", i as i64));
            }
            // At the limit, and no lock proposed (the node's locks for the minute are spent):
            // every further failure asks again, however many.
            for i in 0..3 * FAILURE_LIMIT as i64 {
                assert!(
                    f.fail(scope, "account:alice", 100 + i),
                    "{scope:?} failure {i}"
                );
            }
            // Proposed, then not committed: the next failure asks again.
            f.proposed(scope, "account:alice");
            f.not_committed(scope, "account:alice", 200);
            assert!(f.fail(scope, "account:alice", 201), "{scope:?}");
            // Proposed and committed: a new count.
            f.proposed(scope, "account:alice");
            assert!(!f.fail(scope, "account:alice", 202), "{scope:?}");
        }
    }

    #[test]
    fn sources_never_take_an_accounts_room() {
        use Scope::{Account, Source};
        let mut f = Failures::default();
        assert!(!f.fail(Account, "account:alice", 0));
        // A flood from more sources than are tracked, all within the window.
        for i in 0..MAX_TRACKED + 50 {
            f.fail(Source, &format!("addr:{i}"), 1);
        }
        assert_eq!(f.tracked(Source), MAX_TRACKED);
        // The account already counted keeps its count, and one first seen now is counted.
        for i in 2..FAILURE_LIMIT as i64 {
            assert!(!f.fail(Account, "account:alice", i));
        }
        assert!(f.fail(Account, "account:alice", 20));
        for i in 1..FAILURE_LIMIT {
            assert!(!f.fail(Account, "account:bob", 20 + i as i64));
        }
        assert!(f.fail(Account, "account:bob", 40));
        assert_eq!(f.tracked(Account), 2);
    }

    #[test]
    fn failures_track_a_bounded_number_of_keys() {
        for scope in [Scope::Account, Scope::Source] {
            let mut f = Failures::default();
            for i in 0..MAX_TRACKED + 50 {
                f.fail(scope, &format!("k:{i}"), 0);
            }
            assert_eq!(f.tracked(scope), MAX_TRACKED);
            // A new key is not counted while the table is full within the window...
            assert!(!f.fail(scope, "late", FAILURE_WINDOW_MS - 1));
            assert_eq!(f.tracked(scope), MAX_TRACKED);
            // ...and once their window has passed, old keys make room.
            f.fail(scope, "late", FAILURE_WINDOW_MS);
            assert_eq!(f.tracked(scope), 1);
        }
    }
}
