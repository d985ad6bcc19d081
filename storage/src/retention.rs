//! Retention policy and the format-9 gate: pure rules, no I/O.
//!
//! The policy is three signed-only configuration keys of the global scope (`retention.audit`,
//! `retention.inventory_history`, `retention.results`), each a duration like "400d", "12h",
//! "30m" or "45s" between 1 s and 36,500 d; an absent key keeps that history forever. The
//! leader's retention pass (`src/node/retention.rs`) turns it into `Command::CompactHistory`.
//! Format 9 (`Quiet`, `CompactHistory`) is proposed only when every member runs 0.4.0 or
//! newer (`version_at_least`, used by `Reader::members_at_least`): older nodes cannot decode it.

use std::time::Duration;

use crate::model::Scope;

/// Every retention key starts with this (signed-only, global scope).
pub const RETENTION_KEY_PREFIX: &str = "retention.";
/// How long audit records stay in the live table.
pub const RETENTION_AUDIT_KEY: &str = "retention.audit";
/// How long inventory history rows stay.
pub const RETENTION_INVENTORY_KEY: &str = "retention.inventory_history";
/// How long deployment results of superseded, finished deployments stay.
pub const RETENTION_RESULTS_KEY: &str = "retention.results";
/// The retention keys this version knows.
pub const RETENTION_KEYS: [&str; 3] = [
    RETENTION_AUDIT_KEY,
    RETENTION_INVENTORY_KEY,
    RETENTION_RESULTS_KEY,
];
/// The first version whose nodes decode command format 9.
pub const FORMAT_9_VERSION: &str = "0.4.0";

/// Most audit records one `CompactHistory` moves out (a bounded apply).
pub const MAX_AUDIT_CUT: u32 = 200_000;

/// Which `deployment_results` rows (alias `r`) a results cut may remove besides their age:
/// the deployment is superseded (a newer one of the same artifact and kind exists) and no
/// longer moving (no rollout row, or a rollout `done`, or `aborted` without `--uninstall`).
/// Apply deletes by it and the leader's pass asks whether any such row is old enough, so
/// both agree (`apply/compact.rs` says why this rule).
pub(crate) const RESULTS_REMOVABLE: &str = "EXISTS (
    SELECT 1 FROM deployments AS d
    WHERE d.id = r.deployment_id
      AND EXISTS (SELECT 1 FROM deployments AS n
                  WHERE n.artifact = d.artifact AND n.kind = d.kind AND n.seq > d.seq)
      AND NOT EXISTS (SELECT 1 FROM rollouts AS o
                      WHERE o.deployment_id = d.id
                        AND NOT (o.state = 'done' OR (o.state = 'aborted' AND o.uninstall = 0))))";

/// Longest retention: 100 years of days.
const MAX_RETENTION_SECS: u64 = 36_500 * 86_400;

/// Parses a retention duration: a whole number and one unit, `d`, `h`, `m` or `s` ("400d"),
/// from 1 s to 36,500 d. The error names the value and what is allowed.
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "retention {text:?} is not a duration like \"400d\", \"12h\", \"30m\" or \"45s\" \
             (1s to 36500d)"
        )
    };
    let unit = t.chars().last().ok_or_else(bad)?;
    let per = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(bad()),
    };
    let digits = &t[..t.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(per) {
        Some(secs) if (1..=MAX_RETENTION_SECS).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(bad()),
    }
}

/// Checks a `retention.*` entry a signed bundle's config payload carries, before a node
/// commits the bundle: global scope only, a known key, a parsable duration. Other keys pass.
/// (A proposer check: `apply` accepts what older nodes accept, so mixed versions agree.)
pub fn check_retention_entry(scope: &Scope, key: &str, value: &str) -> Result<(), String> {
    if !key.starts_with(RETENTION_KEY_PREFIX) {
        return Ok(());
    }
    if *scope != Scope::Global {
        return Err(format!(
            "{key} is a cluster-wide policy: set it in [global], not in [{}]",
            scope_table(scope)
        ));
    }
    if !RETENTION_KEYS.contains(&key) {
        return Err(format!(
            "{key} is not a retention key (known: {})",
            RETENTION_KEYS.join(", ")
        ));
    }
    parse_retention(value)
        .map(|_| ())
        .map_err(|e| format!("{key}: {e}"))
}

fn scope_table(scope: &Scope) -> String {
    match scope {
        Scope::Global => "global".to_owned(),
        Scope::Group(g) => format!("group.{g}"),
        Scope::Client(c) => format!("client.{c}"),
    }
}

/// The retention policy read from config: None = keep forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub audit: Option<Duration>,
    pub inventory_history: Option<Duration>,
    pub results: Option<Duration>,
}

impl RetentionPolicy {
    /// The shortest period set, if any.
    pub fn shortest(&self) -> Option<Duration> {
        [self.audit, self.inventory_history, self.results]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Whether dotted numeric version `have` is `want` or newer ("0.10.0" >= "0.4.0"). A version
/// that is not dotted numbers (a pre-release, garbage) counts as older.
pub fn version_at_least(have: &str, want: &str) -> bool {
    let parse = |v: &str| -> Option<Vec<u64>> {
        v.trim()
            .split('.')
            .map(|p| {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    None
                } else {
                    p.parse().ok()
                }
            })
            .collect()
    };
    let (Some(mut h), Some(mut w)) = (parse(have), parse(want)) else {
        return false;
    };
    let len = h.len().max(w.len());
    h.resize(len, 0);
    w.resize(len, 0);
    h >= w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_durations() {
        let d = |s| Ok(Duration::from_secs(s));
        let cases: Vec<(&str, Result<Duration, ()>)> = vec![
            ("400d", d(400 * 86_400)),
            ("12h", d(43_200)),
            ("30m", d(1_800)),
            ("45s", d(45)),
            ("1s", d(1)),
            (" 5s ", d(5)),
            ("36500d", d(36_500 * 86_400)),
            ("36501d", Err(())),
            ("0s", Err(())),
            ("0d", Err(())),
            ("", Err(())),
            ("d", Err(())),
            ("5", Err(())),
            ("5w", Err(())),
            ("-5s", Err(())),
            ("+5s", Err(())),
            ("5.5h", Err(())),
            ("5 s", Err(())),
            ("99999999999999999999s", Err(())),
            ("18446744073709551615d", Err(())),
        ];
        for (text, want) in cases {
            let got = parse_retention(text);
            match want {
                Ok(w) => assert_eq!(got, Ok(w), "{text:?}"),
                Err(()) => {
                    let e = got.expect_err(text);
                    assert!(e.contains(&format!("{text:?}")), "{text:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn retention_entries_in_bundles() {
        let g = Scope::Group("lab".into());
        let cases = [
            (Scope::Global, "retention.audit", "400d", None),
            (Scope::Global, "retention.results", "5s", None),
            (g.clone(), "retention.audit", "400d", Some("[group.lab]")),
            (
                Scope::Client("c-1".into()),
                "retention.inventory_history",
                "1d",
                Some("[client.c-1]"),
            ),
            (
                Scope::Global,
                "retention.other",
                "1d",
                Some("not a retention key"),
            ),
            (Scope::Global, "retention.audit", "soon", Some("\"soon\"")),
            (g, "site.name", "anything", None),
        ];
        for (scope, key, value, want) in cases {
            let got = check_retention_entry(&scope, key, value);
            match want {
                None => assert_eq!(got, Ok(()), "{key}"),
                Some(part) => {
                    let e = got.expect_err(key);
                    assert!(e.contains(key) && e.contains(part), "{key}: {e}");
                }
            }
        }
    }

    #[test]
    fn versions_compare_as_numbers() {
        let cases = [
            ("0.4.0", "0.4.0", true),
            ("0.4.1", "0.4.0", true),
            ("0.10.0", "0.4.0", true),
            ("1.0", "0.4.0", true),
            ("0.4", "0.4.0", true),
            ("0.3.9", "0.4.0", false),
            ("0.3.12", "0.4.0", false),
            ("0.4.0-rc1", "0.4.0", false),
            ("", "0.4.0", false),
            ("x.y", "0.4.0", false),
            ("0..4", "0.4.0", false),
        ];
        for (have, want, ok) in cases {
            assert_eq!(version_at_least(have, want), ok, "{have} >= {want}");
        }
    }

    #[test]
    fn the_shortest_policy() {
        let p = RetentionPolicy {
            audit: Some(Duration::from_secs(50)),
            inventory_history: None,
            results: Some(Duration::from_secs(5)),
        };
        assert_eq!(p.shortest(), Some(Duration::from_secs(5)));
        assert_eq!(RetentionPolicy::default().shortest(), None);
    }
}
