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
//! - A node proposes at most `LOCKS_PER_MINUTE` locks a minute, and remembers at most
//!   `MAX_TRACKED` keys: the commands and the memory a flood can cost are bounded.

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
/// Locks a node proposes per minute at most (the rest wait for more failures).
pub const LOCKS_PER_MINUTE: u32 = 30;
/// Keys whose failures a node remembers at most.
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

/// Failures per key on this node: a count and when its window started.
#[derive(Debug, Default)]
pub struct Failures {
    counts: HashMap<String, (u32, i64)>,
}

impl Failures {
    /// Counts a failure of `key` at `now`; true when it reaches `FAILURE_LIMIT` (the count
    /// starts again, so the next lock needs as many). A key not yet tracked when `MAX_TRACKED`
    /// keys are, after forgetting those whose window passed, is not counted.
    pub fn fail(&mut self, key: &str, now: i64) -> bool {
        if !self.counts.contains_key(key) && self.counts.len() >= MAX_TRACKED {
            self.counts
                .retain(|_, (_, since)| now.saturating_sub(*since) < FAILURE_WINDOW_MS);
            if self.counts.len() >= MAX_TRACKED {
                return false;
            }
        }
        let entry = self.counts.entry(key.to_owned()).or_insert((0, now));
        if now.saturating_sub(entry.1) >= FAILURE_WINDOW_MS {
            *entry = (0, now);
        }
        entry.0 += 1;
        if entry.0 >= FAILURE_LIMIT {
            self.counts.remove(key);
            return true;
        }
        false
    }

    /// Forgets the failures of `key` (its owner signed in).
    pub fn forget(&mut self, key: &str) {
        self.counts.remove(key);
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.counts.len()
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
        let mut f = Failures::default();
        for i in 1..FAILURE_LIMIT {
            assert!(!f.fail("a", i as i64), "failure {i}");
        }
        assert!(f.fail("a", 100));
        // The count starts again after a lock.
        assert!(!f.fail("a", 101));
        // Failures spread over more than the window never lock.
        let mut f = Failures::default();
        for i in 0..3 * FAILURE_LIMIT as i64 {
            assert!(!f.fail("b", i * FAILURE_WINDOW_MS / 5));
        }
        f.forget("b");
        assert_eq!(f.tracked(), 0);
    }

    #[test]
    fn failures_track_a_bounded_number_of_keys() {
        let mut f = Failures::default();
        for i in 0..MAX_TRACKED + 50 {
            f.fail(&format!("addr:{i}"), 0);
        }
        assert_eq!(f.tracked(), MAX_TRACKED);
        // Once their window has passed, old keys make room.
        f.fail("late", FAILURE_WINDOW_MS);
        assert_eq!(f.tracked(), 1);
    }
}
