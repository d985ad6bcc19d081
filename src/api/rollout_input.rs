//! What a rollout request may carry, and how its texts become values: the caps on every list
//! (selector terms, windows, labels, client ids), a `PATH=VALUE` fact term, the soak
//! (humantime), the start time (RFC 3339), a step's reason. Pure: no clock, no state; a
//! refusal names the field and the rule and echoes at most a short prefix of what was sent.
//! The phases, the brake and the windows' grammar are storage's (`outpost_storage::rollout`),
//! so `apply` and the API read the same texts the same way.

use std::time::Duration;

use axum::http::StatusCode;

use crate::api::ApiError;
use crate::api::fields;
use crate::shared::text::shown;
use crate::wire::SelectorArgs;

/// Terms of one kind in a selector (groups, labels, facts, clients, each exclusion).
pub const MAX_SELECTOR_TERMS: usize = 64;
/// Windows of one deployment.
pub const MAX_WINDOWS: usize = 8;
/// One window's text (`Mon-Fri 22:00-05:00` is 19).
pub const MAX_WINDOW_BYTES: usize = 64;
/// Labels added or removed by one request (and on one client).
pub const MAX_LABELS: usize = 32;
/// Clients one `client label` may change.
pub const MAX_LABEL_CLIENTS: usize = 10_000;
/// A step's reason.
pub const MAX_REASON_BYTES: usize = 500;
/// A `PATH=VALUE` fact term.
pub const MAX_FACT_TERM_BYTES: usize = 512;
/// The longest soak: a phase that must wait longer is a new deployment.
pub const MAX_SOAK: Duration = Duration::from_secs(30 * 24 * 3600);
/// Body of `POST /v1/clients/labels`: room for `MAX_LABEL_CLIENTS` ids of the longest kind.
pub const LABELS_BODY_LIMIT: usize = 1 << 20;

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// At most `max` items in `what`.
pub fn count<T>(what: &str, items: &[T], max: usize) -> Result<(), ApiError> {
    if items.len() > max {
        return Err(bad(format!(
            "{what}: {} given, at most {max} allowed",
            items.len()
        )));
    }
    Ok(())
}

/// At most `max` names, each a valid name (`A-Z a-z 0-9 . _ -`, 1-64).
pub fn names(what: &str, items: &[String], max: usize) -> Result<(), ApiError> {
    count(what, items, max)?;
    items.iter().try_for_each(|s| fields::id(what, s))
}

/// `PATH=VALUE` (a dotted path into the facts; the value compared as text) → its parts.
pub fn fact_term(s: &str) -> Result<(String, String), ApiError> {
    if s.len() > MAX_FACT_TERM_BYTES {
        return Err(bad(format!(
            "fact {} is {} bytes, at most {MAX_FACT_TERM_BYTES} allowed",
            shown(s),
            s.len()
        )));
    }
    match s.split_once('=') {
        Some((path, value))
            if !path.trim().is_empty()
                && !path.chars().any(|c| c.is_whitespace() || c.is_control())
                && !value.chars().any(char::is_control) =>
        {
            Ok((path.to_string(), value.to_string()))
        }
        _ => Err(bad(format!(
            "fact {} must look like PATH=VALUE (e.g. os.version_id=12)",
            shown(s)
        ))),
    }
}

/// A selector's groups (with the older single `--group` joined) and its facts split.
pub type SelectorTerms = (Vec<String>, Vec<(String, String)>);

/// Every list of a selector within its cap, every name a valid name, every fact a
/// `PATH=VALUE`; `group` (the older single `--group`) joins the groups. Returns the facts
/// split. Says nothing of an empty selector: storage's `Selector::check` does.
pub fn selector_terms(args: &SelectorArgs, group: &str) -> Result<SelectorTerms, ApiError> {
    let mut groups = args.groups.clone();
    if !group.is_empty() && !groups.iter().any(|g| g == group) {
        groups.push(group.to_string());
    }
    names("group", &groups, MAX_SELECTOR_TERMS)?;
    names("label", &args.labels, MAX_SELECTOR_TERMS)?;
    names("client", &args.clients, MAX_SELECTOR_TERMS)?;
    names("excluded label", &args.exclude_labels, MAX_SELECTOR_TERMS)?;
    names("excluded client", &args.exclude_clients, MAX_SELECTOR_TERMS)?;
    count("fact", &args.facts, MAX_SELECTOR_TERMS)?;
    let facts = args
        .facts
        .iter()
        .map(|f| fact_term(f))
        .collect::<Result<_, _>>()?;
    Ok((groups, facts))
}

/// The soak as milliseconds: humantime text (`30m`, `1h 30m`), none = 0, at most `MAX_SOAK`.
pub fn soak_ms(s: Option<&str>) -> Result<u64, ApiError> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let d = humantime::parse_duration(s).map_err(|e| {
        bad(format!(
            "soak {} is not a duration like 30m or 2h ({e})",
            shown(s)
        ))
    })?;
    if d > MAX_SOAK {
        return Err(bad(format!(
            "soak {} is longer than {}",
            shown(s),
            humantime::format_duration(MAX_SOAK)
        )));
    }
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The start time as Unix milliseconds: RFC 3339 in UTC (`2026-12-24T22:00:00Z`).
pub fn start_at_ms(s: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        bad(format!(
            "start time {} is not an RFC 3339 time in UTC like 2026-12-24T22:00:00Z ({e})",
            shown(s)
        ))
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| bad(format!("start time {} is before 1970", shown(s))))?;
    Ok(Some(ms))
}

/// At most `MAX_WINDOWS` windows of at most `MAX_WINDOW_BYTES` each (their grammar is
/// storage's `Windows::parse`).
pub fn windows(list: &[String]) -> Result<(), ApiError> {
    count("window", list, MAX_WINDOWS)?;
    for w in list {
        if w.len() > MAX_WINDOW_BYTES || w.chars().any(char::is_control) {
            return Err(bad(format!(
                "window {} must be at most {MAX_WINDOW_BYTES} bytes of text like \"Mon-Fri 22:00-05:00\"",
                shown(w)
            )));
        }
    }
    Ok(())
}

/// A step's reason, trimmed: may be empty, at most `MAX_REASON_BYTES`, one line of text.
pub fn reason(s: &str) -> Result<String, ApiError> {
    if s.len() > MAX_REASON_BYTES {
        return Err(bad(format!(
            "reason is {} bytes, at most {MAX_REASON_BYTES} allowed",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(format!("reason {} has control characters", shown(s))));
    }
    Ok(s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused<T: std::fmt::Debug>(r: Result<T, ApiError>) -> String {
        r.expect_err("refused").message().to_string()
    }

    #[test]
    fn fact_terms() {
        for (s, want) in [
            ("os.version_id=12", Some(("os.version_id", "12"))),
            (
                "packages.openssl=3.0.11",
                Some(("packages.openssl", "3.0.11")),
            ),
            ("a=", Some(("a", ""))),
            ("a=b=c", Some(("a", "b=c"))),
            ("=12", None),
            ("os.id", None),
            ("os id=1", None),
            ("", None),
            ("a=\n", None),
        ] {
            let got = fact_term(s).ok();
            let want = want.map(|(p, v)| (p.to_string(), v.to_string()));
            assert_eq!(got, want, "{s:?}");
        }
        let long = format!("a={}", "x".repeat(MAX_FACT_TERM_BYTES));
        assert!(refused(fact_term(&long)).contains("at most"));
    }

    #[test]
    fn soaks() {
        for (s, want) in [
            (None, Some(0)),
            (Some(""), Some(0)),
            (Some("30m"), Some(1_800_000)),
            (Some("1h 30m"), Some(5_400_000)),
            (Some("90s"), Some(90_000)),
            (Some("30 days"), Some(2_592_000_000)),
            (Some("31days"), None),
            (Some("soon"), None),
            (Some("-5m"), None),
        ] {
            assert_eq!(soak_ms(s).ok(), want, "{s:?}");
        }
        assert!(refused(soak_ms(Some("soon"))).contains("soak \"soon\""));
    }

    #[test]
    fn start_times() {
        for (s, want) in [
            (None, Some(None)),
            (Some("2026-12-24T22:00:00Z"), Some(Some(1_798_149_600_000))),
            (
                Some("2026-12-24T22:00:00.5Z"),
                Some(Some(1_798_149_600_500)),
            ),
            (Some("2026-12-24 22:00:00"), Some(Some(1_798_149_600_000))),
            (Some("tomorrow"), None),
            (Some("2026-13-01T00:00:00Z"), None),
        ] {
            assert_eq!(start_at_ms(s).ok(), want, "{s:?}");
        }
        assert!(refused(start_at_ms(Some("tomorrow"))).contains("RFC 3339"));
    }

    #[test]
    fn selector_caps_name_the_field() {
        let many: Vec<String> = (0..=MAX_SELECTOR_TERMS).map(|i| format!("l{i}")).collect();
        let cases: [(SelectorArgs, &str); 6] = [
            (
                SelectorArgs {
                    labels: many.clone(),
                    ..Default::default()
                },
                "label: 65 given, at most 64",
            ),
            (
                SelectorArgs {
                    exclude_clients: many.clone(),
                    ..Default::default()
                },
                "excluded client: 65 given",
            ),
            (
                SelectorArgs {
                    facts: many.iter().map(|l| format!("{l}=1")).collect(),
                    ..Default::default()
                },
                "fact: 65 given",
            ),
            (
                SelectorArgs {
                    groups: many.clone(),
                    ..Default::default()
                },
                "group: 65 given",
            ),
            (
                SelectorArgs {
                    labels: vec!["line 2".into()],
                    ..Default::default()
                },
                "label \"line 2\" must be",
            ),
            (
                SelectorArgs {
                    facts: vec!["nopath".into()],
                    ..Default::default()
                },
                "PATH=VALUE",
            ),
        ];
        for (args, want) in cases {
            let msg = refused(selector_terms(&args, ""));
            assert!(msg.contains(want), "{msg} lacks {want}");
        }
        let ok = SelectorArgs {
            groups: vec!["lab".into()],
            labels: many[..MAX_SELECTOR_TERMS].to_vec(),
            facts: vec!["os.id=debian".into()],
            ..Default::default()
        };
        let (groups, facts) = selector_terms(&ok, "lab").expect("within caps");
        assert_eq!(groups, ["lab"]);
        assert_eq!(facts, [("os.id".to_string(), "debian".to_string())]);
        let (groups, _) = selector_terms(&SelectorArgs::default(), "all").expect("group");
        assert_eq!(groups, ["all"]);
    }

    #[test]
    fn windows_reasons_and_names() {
        let nine: Vec<String> = (0..9).map(|_| "daily 01:00-02:00".into()).collect();
        assert!(refused(windows(&nine)).contains("window: 9 given, at most 8"));
        assert!(windows(&nine[..8]).is_ok());
        assert!(refused(windows(&["x".repeat(65)])).contains("window"));
        assert_eq!(reason("  rollback  ").ok().as_deref(), Some("rollback"));
        assert_eq!(reason("").ok().as_deref(), Some(""));
        assert!(refused(reason(&"r".repeat(501))).contains("reason is 501 bytes"));
        assert!(reason(&"r".repeat(500)).is_ok());
        assert!(refused(reason("a\u{7}b")).contains("control"));
        let labels: Vec<String> = (0..33).map(|i| format!("l{i}")).collect();
        assert!(refused(names("label", &labels, MAX_LABELS)).contains("label: 33 given"));
        assert!(names("label", &labels[..32], MAX_LABELS).is_ok());
        assert!(refused(names("client", &["a/b".into()], 10)).contains("client \"a/b\""));
    }
}
