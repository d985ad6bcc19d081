//! Which clients a selector targets, the checks of a selector, and fact matching.

use serde_json::Value;

use crate::model::Selector;
use crate::rules::{ALL_CLIENTS, check_name};

/// Most terms of one kind (groups, labels, facts, clients, each exclusion) in a selector.
pub const MAX_SELECTOR_TERMS: usize = 256;

/// What a selector looks at of one client. Revoked clients are left out before this.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub id: &'a str,
    pub groups: &'a [String],
    pub labels: &'a [String],
    /// The client's latest facts; None when it reported none (or the caller did not load
    /// them because the selector has no fact term).
    pub facts: Option<&'a Value>,
}

impl Selector {
    /// Whether the selector targets this client: within one kind any term may match, across
    /// kinds all must, an exclusion wins, and a selector with no positive term targets nobody.
    pub fn matches(&self, t: &Target<'_>) -> bool {
        self.matches_except_facts(t) && self.facts_match(t.facts)
    }

    /// `matches` without the fact terms: the cheap part, checked before facts are parsed.
    pub fn matches_except_facts(&self, t: &Target<'_>) -> bool {
        if !self.has_positive_term()
            || self.exclude_clients.iter().any(|c| c == t.id)
            || self.exclude_labels.iter().any(|l| t.labels.contains(l))
        {
            return false;
        }
        (self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|g| g == ALL_CLIENTS || t.groups.contains(g)))
            && (self.labels.is_empty() || self.labels.iter().any(|l| t.labels.contains(l)))
            && (self.clients.is_empty() || self.clients.iter().any(|c| c == t.id))
    }

    /// The fact terms alone: true when there are none, else any of them matches `facts`.
    pub fn facts_match(&self, facts: Option<&Value>) -> bool {
        self.facts.is_empty()
            || facts.is_some_and(|f| self.facts.iter().any(|(p, v)| fact_matches(f, p, v)))
    }

    /// Whether matching needs the clients' facts.
    pub fn needs_facts(&self) -> bool {
        !self.facts.is_empty()
    }

    /// Whether it names any target (an exclusion alone names none).
    pub fn has_positive_term(&self) -> bool {
        !(self.groups.is_empty()
            && self.labels.is_empty()
            && self.facts.is_empty()
            && self.clients.is_empty())
    }

    /// Whether it targets every client of the cluster (a group `all`), which asks for
    /// approval whatever the count.
    pub fn names_all(&self) -> bool {
        self.groups.iter().any(|g| g == ALL_CLIENTS)
    }

    /// The checks of input: a positive term, at most `MAX_SELECTOR_TERMS` of each kind, names
    /// like groups, fact paths and values non-empty. Err names the term.
    pub fn check(&self) -> Result<(), String> {
        if !self.has_positive_term() {
            return Err("name a target: --group, --label, --where or --client".to_owned());
        }
        let kinds: [(&str, &[String]); 5] = [
            ("group", &self.groups),
            ("label", &self.labels),
            ("client", &self.clients),
            ("excluded label", &self.exclude_labels),
            ("excluded client", &self.exclude_clients),
        ];
        for (what, terms) in kinds {
            if terms.len() > MAX_SELECTOR_TERMS {
                return Err(format!(
                    "{} {what} terms, at most {MAX_SELECTOR_TERMS} allowed",
                    terms.len()
                ));
            }
            for t in terms {
                check_name(what, t)?;
            }
        }
        if self.facts.len() > MAX_SELECTOR_TERMS {
            return Err(format!(
                "{} fact terms, at most {MAX_SELECTOR_TERMS} allowed",
                self.facts.len()
            ));
        }
        for (path, value) in &self.facts {
            check_name("fact path", path)?;
            if value.len() > crate::rules::MAX_NAME_BYTES || value.chars().any(char::is_control) {
                return Err(format!(
                    "value of fact term {path:?} must be at most {} bytes without control characters",
                    crate::rules::MAX_NAME_BYTES
                ));
            }
            if path.split('.').all(str::is_empty) {
                return Err(format!("fact term {path:?}={value:?} has no path"));
            }
        }
        Ok(())
    }
}

/// Does `facts` have `want` at `path` (dot-separated)? Arrays on the way match if any
/// element matches: `packages.name=openssl`, `network.addresses=10.0.0.5`, `os.id=debian`.
/// Numbers and booleans compare by their JSON text (`cpu.count=2`).
pub fn fact_matches(facts: &Value, path: &str, want: &str) -> bool {
    fn walk(v: &Value, parts: &[&str], want: &str) -> bool {
        match v {
            Value::Array(items) => items.iter().any(|i| walk(i, parts, want)),
            _ => match parts.split_first() {
                None => match v {
                    Value::String(s) => s == want,
                    Value::Null => false,
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

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn selector_kinds_and_exclusions() {
        let facts = json!({"os": {"version_id": "12"}, "packages": [{"name": "openssl"}]});
        let groups = s(&["lab"]);
        let labels = s(&["line2", "quarantine"]);
        let plain = s(&["line2"]);
        let none: Vec<String> = vec![];
        let a = Target {
            id: "a",
            groups: &groups,
            labels: &plain,
            facts: Some(&facts),
        };
        let q = Target {
            id: "q",
            groups: &groups,
            labels: &labels,
            facts: Some(&facts),
        };
        let bare = Target {
            id: "b",
            groups: &none,
            labels: &none,
            facts: None,
        };
        let sel = |f: fn(&mut Selector)| {
            let mut x = Selector::default();
            f(&mut x);
            x
        };
        // (selector, [a, q, bare])
        let cases: Vec<(Selector, [bool; 3])> = vec![
            (sel(|x| x.groups = s(&["lab"])), [true, true, false]),
            (sel(|x| x.groups = s(&["all"])), [true, true, true]),
            (
                sel(|x| x.groups = s(&["other", "lab"])),
                [true, true, false],
            ),
            (sel(|x| x.labels = s(&["line2"])), [true, true, false]),
            (
                sel(|x| {
                    x.labels = s(&["line2"]);
                    x.exclude_labels = s(&["quarantine"]);
                }),
                [true, false, false],
            ),
            (
                sel(|x| {
                    x.groups = s(&["all"]);
                    x.exclude_clients = s(&["b"]);
                }),
                [true, true, false],
            ),
            // Across kinds all must match.
            (
                sel(|x| {
                    x.groups = s(&["all"]);
                    x.clients = s(&["q"]);
                }),
                [false, true, false],
            ),
            (
                sel(|x| x.facts = vec![("os.version_id".into(), "12".into())]),
                [true, true, false],
            ),
            (
                sel(|x| {
                    x.facts = vec![
                        ("os.version_id".into(), "11".into()),
                        ("packages.name".into(), "openssl".into()),
                    ]
                }),
                [true, true, false],
            ),
            (
                sel(|x| {
                    x.facts = vec![("os.version_id".into(), "12".into())];
                    x.labels = s(&["nothing"]);
                }),
                [false, false, false],
            ),
            (sel(|x| x.clients = s(&["b"])), [false, false, true]),
            // Exclusions alone name nobody.
            (
                sel(|x| x.exclude_clients = s(&["a"])),
                [false, false, false],
            ),
            (Selector::default(), [false, false, false]),
        ];
        for (i, (selector, want)) in cases.iter().enumerate() {
            let got = [a, q, bare].map(|t| selector.matches(&t));
            assert_eq!(&got, want, "case {i}: {selector:?}");
        }
    }

    #[test]
    fn selector_checks() {
        let mut ok = Selector {
            labels: s(&["line2"]),
            ..Selector::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let empty = Selector {
            exclude_labels: s(&["x"]),
            ..Selector::default()
        };
        assert_eq!(
            empty.check(),
            Err("name a target: --group, --label, --where or --client".to_owned())
        );
        ok.labels = vec!["bad\nname".into()];
        assert!(ok.check().is_err_and(|e| e.contains("label")));
        ok.labels = (0..=MAX_SELECTOR_TERMS).map(|i| format!("l{i}")).collect();
        assert!(ok.check().is_err_and(|e| e.contains("at most 256")));
        let fact = Selector {
            facts: vec![("..".into(), "1".into())],
            ..Selector::default()
        };
        assert!(fact.check().is_err_and(|e| e.contains("no path")));
        assert!(fact.needs_facts());
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
            assert_eq!(fact_matches(&facts, path, want), expect, "{path}={want}");
        }
    }
}
