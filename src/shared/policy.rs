//! Pure rules both sides apply: when a certificate is due for renewal (the node refuses an
//! early renewal, the agent asks in time) and whether inventory facts match a query (the
//! node answers `inventory query` with it).

use serde_json::Value;

/// Less than a third of [not_before, not_after] left at `now`. Pure.
pub fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    let life = (not_after - not_before).max(0);
    not_after - now < life / 3
}

/// Does `facts` have `want` at `path` (dot-separated)? Arrays on the way match if any
/// element matches: `packages.name=openssl`, `network.addresses=10.0.0.5`, `os.id=debian`.
pub fn matches(facts: &Value, path: &str, want: &str) -> bool {
    fn walk(v: &Value, parts: &[&str], want: &str) -> bool {
        match v {
            Value::Array(items) => items.iter().any(|i| walk(i, parts, want)),
            _ => match parts.split_first() {
                None => match v {
                    Value::String(s) => s == want,
                    Value::Null => false,
                    // Numbers and booleans compare by their JSON text (`cpu.count=2`).
                    #[allow(clippy::cmp_owned)]
                    other => other.to_string() == want,
                },
                Some((head, rest)) => v.get(*head).is_some_and(|next| walk(next, rest, want)),
            },
        }
    }
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    walk(facts, &parts, want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renewal_windows() {
        // (not_before, not_after, now, due)
        for (nb, na, now, due) in [
            (0, 90, 10, false),
            (0, 90, 59, false),
            (0, 90, 61, true),
            (0, 90, 100, true),
        ] {
            assert_eq!(renewal_due(nb, na, now), due, "{nb} {na} {now}");
        }
    }

    #[test]
    fn fact_matching_table() {
        let facts = json!({
            "os": {"id": "debian", "version_id": "12"},
            "cpu": {"count": 2},
            "packages": [{"name": "openssl", "version": "3.0"}, {"name": "zlib", "version": "1.2"}],
            "network": [{"name": "eth0", "addresses": ["10.0.0.5", "fe80::1"]}],
        });
        let cases = [
            ("os.id", "debian", true),
            ("os.id", "ubuntu", false),
            ("cpu.count", "2", true),
            ("packages.name", "openssl", true),
            ("packages.name", "curl", false),
            ("packages.version", "1.2", true),
            ("network.addresses", "10.0.0.5", true),
            ("network.name", "eth1", false),
            ("missing.path", "x", false),
        ];
        for (path, want, expect) in cases {
            assert_eq!(matches(&facts, path, want), expect, "{path}={want}");
        }
    }
}
