//! Pure validation and merge rules, table-tested, used by `apply` and the reader.

use std::collections::BTreeMap;

use crate::model::{ConfigEntry, Scope};

/// Longest key, scope id, token id or group name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest configuration value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The group name that targets every client.
pub const ALL_CLIENTS: &str = "all";

/// A key, scope id, token id or group name: non-empty, at most 256 bytes, no control characters.
/// Err names the problem; `what` says which thing ("config key", "group id").
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} is {} bytes, at most {MAX_NAME_BYTES} allowed",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("{what} {s:?} contains control character {c:?}"));
    }
    Ok(())
}

/// An identifier that also appears in certificates and file names (client ids, certificate
/// serials): 1-64 of A-Z a-z 0-9 . _ -
pub fn check_id(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {s:?} must be 1-64 of A-Z a-z 0-9 . _ -"))
    }
}

pub fn check_scope(scope: &Scope) -> Result<(), String> {
    match scope {
        Scope::Global => Ok(()),
        Scope::Group(g) => check_name("group id", g),
        Scope::Client(c) => check_name("client id", c),
    }
}

pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "value of {key:?} is {} bytes, at most {MAX_VALUE_BYTES} allowed",
            value.len()
        ));
    }
    Ok(())
}

/// A non-empty free-text field (node name, address, version) without control characters.
pub fn check_text(what: &str, s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("{what} {s:?} contains control character {c:?}"));
    }
    Ok(())
}

/// A sha256 as 64 hex digits; returns it lowercased.
pub fn normalize_sha256(what: &str, s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{what} is not 64 hex digits"))
    }
}

/// Equality that does not stop at the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The effective configuration of a client: global < each group (in the order given; later
/// wins) < client. Entries of other clients and of groups not listed are ignored.
pub fn effective_config(
    entries: &[ConfigEntry],
    client_id: &str,
    groups: &[String],
) -> BTreeMap<String, String> {
    let rank = |scope: &Scope| -> Option<usize> {
        match scope {
            Scope::Global => Some(0),
            // A group listed twice ranks at its last position.
            Scope::Group(g) => groups.iter().rposition(|x| x == g).map(|i| i + 1),
            Scope::Client(c) if c == client_id => Some(groups.len() + 1),
            Scope::Client(_) => None,
        }
    };
    let mut ranked: Vec<(usize, &ConfigEntry)> = entries
        .iter()
        .filter_map(|e| rank(&e.scope).map(|r| (r, e)))
        .collect();
    // Stable sort: equal ranks keep input order (cannot collide on a key within one scope).
    ranked.sort_by_key(|(r, _)| *r);
    let mut out = BTreeMap::new();
    for (_, e) in ranked {
        out.insert(e.key.clone(), e.value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long = "k".repeat(MAX_NAME_BYTES);
        let too_long = "k".repeat(MAX_NAME_BYTES + 1);
        let cases: &[(&str, bool)] = &[
            ("ntp.server", true),
            ("é/ü", true),
            (&long, true),
            ("", false),
            (&too_long, false),
            ("a\nb", false),
            ("tab\there", false),
            ("nul\0", false),
        ];
        for (s, ok) in cases {
            assert_eq!(check_name("key", s).is_ok(), *ok, "{s:?}");
        }
    }

    #[test]
    fn values_and_texts() {
        assert!(check_value("k", &"x".repeat(MAX_VALUE_BYTES)).is_ok());
        assert!(check_value("k", &"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert!(check_value("k", "").is_ok());
        assert!(check_text("name", "node-a").is_ok());
        assert!(check_text("name", "  ").is_err());
        assert!(check_text("name", "a\rb").is_err());
        assert!(check_scope(&Scope::Global).is_ok());
        assert!(check_scope(&Scope::Group(String::new())).is_err());
        assert!(check_scope(&Scope::Client("c\u{7}".into())).is_err());
    }

    #[test]
    fn sha256_and_eq() {
        let upper = "AB".repeat(32);
        assert_eq!(normalize_sha256("s", &upper), Ok("ab".repeat(32)));
        assert!(normalize_sha256("s", "ab").is_err());
        assert!(normalize_sha256("s", &"zz".repeat(32)).is_err());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    fn e(scope: Scope, key: &str, value: &str) -> ConfigEntry {
        ConfigEntry {
            scope,
            key: key.into(),
            value: value.into(),
            version: 1,
            updated_at_ms: 0,
            updated_by: "t".into(),
        }
    }

    #[test]
    fn effective_merge_table() {
        let g = |s: &str| Scope::Group(s.into());
        let c = |s: &str| Scope::Client(s.into());
        let entries = vec![
            e(c("c1"), "a", "client"),
            e(g("lab"), "a", "lab"),
            e(g("lab"), "b", "lab"),
            e(g("ship"), "b", "ship"),
            e(g("ship"), "c", "ship"),
            e(Scope::Global, "a", "global"),
            e(Scope::Global, "d", "global"),
            e(c("other"), "d", "other"),
            e(g("unlisted"), "d", "unlisted"),
        ];
        type Case = (
            &'static str,
            Vec<&'static str>,
            Vec<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            ("nobody", vec![], vec![("a", "global"), ("d", "global")]),
            ("c1", vec![], vec![("a", "client"), ("d", "global")]),
            (
                "x",
                vec!["lab", "ship"],
                vec![("a", "lab"), ("b", "ship"), ("c", "ship"), ("d", "global")],
            ),
            (
                "x",
                vec!["ship", "lab"],
                vec![("a", "lab"), ("b", "lab"), ("c", "ship"), ("d", "global")],
            ),
            (
                "c1",
                vec!["lab", "ship", "lab"],
                vec![
                    ("a", "client"),
                    ("b", "lab"),
                    ("c", "ship"),
                    ("d", "global"),
                ],
            ),
        ];
        for (client, groups, want) in cases {
            let groups: Vec<String> = groups.into_iter().map(String::from).collect();
            let got = effective_config(&entries, client, &groups);
            let want: BTreeMap<String, String> = want
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(got, want, "client {client} groups {groups:?}");
        }
    }
}

/// Largest inventory report `apply` accepts, in bytes of JSON. This is what nodes accepted
/// when the command shipped, so it stays: a smaller limit here would make nodes of two
/// versions disagree on the same entry. The API refuses more than `REPORT_MAX_FACTS_BYTES`
/// (the documented limit) before it proposes.
pub const MAX_FACTS_BYTES: usize = 4 << 20;

/// Largest inventory report the API proposes, in bytes of JSON (canonical, as committed).
/// A Debian host's facts as the agent gathers them are a few hundred KiB (packages included).
pub const REPORT_MAX_FACTS_BYTES: usize = 1 << 20;

/// Most JSON values (objects, arrays and leaves, counted recursively) in a report the API
/// proposes. The agent's collector gives about three per installed package plus a few
/// hundred; 100,000 is over thirty thousand packages.
pub const REPORT_MAX_FACTS: usize = 100_000;

/// Changes of one client's facts the API lets through in any hour, cluster-wide (counted
/// from the replicated history, so every node sees the same count): 60 a hour and a burst
/// of 3, the per-node rate's own budget. Must stay below `INVENTORY_HISTORY_KEPT`.
pub const INVENTORY_CHANGES_PER_HOUR: u32 = 63;

/// History rows kept per client: the insert of a new row deletes that client's older rows
/// beyond this many in the same apply (deterministic: it depends on the rows alone). The
/// console and `inventory show` read the last 50.
pub const INVENTORY_HISTORY_KEPT: usize = 100;

/// Pure, the proposer's check of an inventory report: `Err(why)` when its canonical JSON is
/// longer than `REPORT_MAX_FACTS_BYTES` or it holds more than `REPORT_MAX_FACTS` values.
pub fn check_report_size(facts: &serde_json::Value, json_len: usize) -> Result<(), String> {
    if json_len > REPORT_MAX_FACTS_BYTES {
        return Err(format!(
            "inventory is {json_len} bytes of JSON; at most {REPORT_MAX_FACTS_BYTES} are accepted"
        ));
    }
    // Iterative: the depth is bounded by the JSON parser, the count by the limit.
    let mut count = 0usize;
    let mut stack = vec![facts];
    while let Some(v) = stack.pop() {
        count += 1;
        if count > REPORT_MAX_FACTS {
            return Err(format!(
                "inventory holds more than {REPORT_MAX_FACTS} facts (JSON values)"
            ));
        }
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter()),
            serde_json::Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    Ok(())
}

/// Pure: the top-level facts that differ between two fact objects (added, removed, changed),
/// sorted. A non-object counts as an empty object.
pub fn changed_facts(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod facts_tests {
    use super::{REPORT_MAX_FACTS, REPORT_MAX_FACTS_BYTES, changed_facts, check_report_size};
    use serde_json::json;

    #[test]
    fn report_size_table() {
        let many = |n: usize| json!({ "packages": vec![0u8; n] });
        let cases = [
            (json!({}), 2, true),
            (json!({"os": {"id": "debian"}}), 25, true),
            (json!({}), REPORT_MAX_FACTS_BYTES, true),
            (json!({}), REPORT_MAX_FACTS_BYTES + 1, false),
            // The object, the array and its elements.
            (many(REPORT_MAX_FACTS - 2), 10, true),
            (many(REPORT_MAX_FACTS - 1), 10, false),
            (json!([[[[1]]]]), 9, true),
        ];
        for (facts, len, ok) in cases {
            let got = check_report_size(&facts, len);
            assert_eq!(got.is_ok(), ok, "{len} bytes: {got:?}");
        }
    }

    #[test]
    fn changed_facts_table() {
        let cases = [
            (json!({}), json!({"os": 1}), vec!["os"]),
            (
                json!({"os": 1, "k": 2}),
                json!({"os": 1, "k": 3}),
                vec!["k"],
            ),
            (json!({"os": 1, "gone": 2}), json!({"os": 1}), vec!["gone"]),
            (json!({"a": [1, 2]}), json!({"a": [1, 2]}), vec![]),
            (json!(null), json!({"b": 1, "a": 1}), vec!["a", "b"]),
        ];
        for (old, new, want) in cases {
            assert_eq!(changed_facts(&old, &new), want, "{old} -> {new}");
        }
    }
}
