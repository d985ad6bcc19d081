//! The pure rules of rollouts, shared by `apply` (what a command may do) and the reader (what a
//! client is asked to install, what a preview and a status show), and by the leader's upkeep
//! (`next_step`). No SQL, no clock: every function takes the time it needs.
//!
//! - `selector`: which clients a selector targets (`Selector::matches`, `Target`), the checks
//!   of a selector, and fact matching (`fact_matches`, dotted paths).
//! - `phases`: a client's phase (`phase_of`, a stable hash) and the phase list (`parse_phases`,
//!   `check_phases`).
//! - `windows`: maintenance windows in the site's time zone (`Windows`, `site_timezone`).
//! - `steps`: the legal transitions (`check_step`), who may approve (`same_person`), and what
//!   the leader proposes next (`next_step`).

mod phases;
mod selector;
mod steps;
mod windows;

pub use jiff::tz::TimeZone;
pub use phases::{MAX_PHASES, check_phases, parse_phases, phase_of};
pub use selector::{MAX_SELECTOR_TERMS, Target, fact_matches};
pub use steps::{next_step, same_person, step_target};
pub use windows::{MAX_WINDOW_BYTES, MAX_WINDOWS, Windows, site_timezone};

/// The four-eyes policy as `deploy.approval_above` sets it (read by `apply` at
/// `CreateRollout` and by the console's preview, so both say the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalRule {
    /// The key is not set: no deployment waits.
    Off,
    /// The value is not a count: every rollout waits (a typo must not switch the second
    /// person off).
    Always,
    /// A rollout to `all`, or to more than this many clients, waits.
    Above(u64),
}

impl ApprovalRule {
    /// The rule a `deploy.approval_above` value (None: unset) makes.
    pub fn of(value: Option<&str>) -> ApprovalRule {
        match value.map(|v| v.trim().parse::<u64>()) {
            None => ApprovalRule::Off,
            Some(Err(_)) => ApprovalRule::Always,
            Some(Ok(n)) => ApprovalRule::Above(n),
        }
    }

    /// Whether a rollout that names `all` (or not) and reaches `count()` clients waits for
    /// approval; `count` is asked only when the answer depends on it.
    pub fn needed(self, names_all: bool, count: impl FnOnce() -> u64) -> bool {
        match self {
            ApprovalRule::Off => false,
            ApprovalRule::Always => true,
            ApprovalRule::Above(n) => names_all || count() > n,
        }
    }
}

/// How long a client may stay silent and still count as seen (`plan`'s `unseen`).
pub const SEEN_WITHIN_MS: i64 = 24 * 60 * 60 * 1000;

/// Whether a client last seen at `last_seen` (else enrolled at `enrolled_at_ms`) counts as
/// seen at `now_ms`.
pub fn seen(last_seen: Option<i64>, enrolled_at_ms: i64, now_ms: i64) -> bool {
    now_ms.saturating_sub(last_seen.unwrap_or(enrolled_at_ms)) <= SEEN_WITHIN_MS
}

/// A duration for people: `1h30m`, `45s`, `0s`.
pub fn human_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_rules() {
        // (value, names all, count, waits)
        let cases = [
            (None, true, 100, false),
            (Some("5"), false, 5, false),
            (Some(" 5 "), false, 6, true),
            (Some("50"), true, 2, true),
            (Some("five"), false, 0, true),
            (Some(""), false, 0, true),
        ];
        for (value, all, count, want) in cases {
            assert_eq!(
                ApprovalRule::of(value).needed(all, || count),
                want,
                "{value:?}"
            );
        }
    }

    #[test]
    fn seen_and_durations() {
        let day = SEEN_WITHIN_MS;
        // (last_seen, enrolled, now, seen)
        let cases = [
            (Some(1_000), 0, 1_000 + day, true),
            (Some(1_000), 0, 1_001 + day, false),
            (None, 5, 5 + day, true),
            (None, 5, 6 + day, false),
            (Some(10), 0, 5, true),
        ];
        for (last, enrolled, now, want) in cases {
            assert_eq!(seen(last, enrolled, now), want, "{last:?} {enrolled} {now}");
        }
        for (ms, want) in [
            (0, "0s"),
            (999, "0s"),
            (45_000, "45s"),
            (1_800_000, "30m"),
            (5_400_000, "1h30m"),
            (90_061_000, "1d1h1m1s"),
        ] {
            assert_eq!(human_ms(ms), want);
        }
    }
}
