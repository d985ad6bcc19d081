//! People's roles: what an admin certificate or a console account may do, kept in the
//! replicated state (`SetRole`, table `roles`) and looked up on every request, so that a change
//! is in force on every node once it applies there, without a new certificate.
//!
//! One row per person name: the admin certificates named NAME and the console account NAME
//! are the same person and share the row. A name without a row is an admin: that is what every
//! certificate and account was before roles existed (the migration of 0.5.0), and only the
//! holder of the cluster CA's key (root on a node) can make a certificate for a new name.

use serde::{Deserialize, Serialize};

/// Most scope terms on one person.
pub const MAX_ROLE_SCOPES: usize = 32;

/// What a person may do. Ordered: each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersonRole {
    /// Reads everything an admin reads except secrets; changes nothing.
    Viewer,
    /// A viewer that also runs deployments, labels clients and sets config, within its scope.
    Operator,
    /// Everything: tokens, roles, accounts, revocation, nodes, bundles, backups, upgrades.
    Admin,
}

impl PersonRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PersonRole::Viewer => "viewer",
            PersonRole::Operator => "operator",
            PersonRole::Admin => "admin",
        }
    }

    /// `viewer`, `operator` or `admin`; Err names the word and the choices.
    pub fn parse(s: &str) -> Result<PersonRole, String> {
        match s {
            "viewer" => Ok(PersonRole::Viewer),
            "operator" => Ok(PersonRole::Operator),
            "admin" => Ok(PersonRole::Admin),
            other => Err(format!(
                "role {other:?} is not one of viewer, operator, admin"
            )),
        }
    }
}

impl std::fmt::Display for PersonRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One term of a person's scope: the clients of a group, or the clients with a label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RoleScope {
    Group(String),
    Label(String),
}

impl RoleScope {
    /// `group:NAME` or `label:NAME`; Err says what is wrong with `s`. The group `all` is no
    /// scope (a person without scope reaches every client).
    pub fn parse(s: &str) -> Result<RoleScope, String> {
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| format!("scope {s:?} is not group:NAME or label:NAME"))?;
        crate::rules::check_name(&format!("the {kind} of scope {s:?}"), name)?;
        match kind {
            "group" if name == crate::rules::ALL_CLIENTS => Err(format!(
                "scope {s:?} names every client: leave the scope out instead"
            )),
            "group" => Ok(RoleScope::Group(name.to_owned())),
            "label" => Ok(RoleScope::Label(name.to_owned())),
            _ => Err(format!("scope {s:?} is not group:NAME or label:NAME")),
        }
    }
}

impl std::fmt::Display for RoleScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoleScope::Group(g) => write!(f, "group:{g}"),
            RoleScope::Label(l) => write!(f, "label:{l}"),
        }
    }
}

/// A person's role and scope as the state holds them at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Grant {
    pub role: PersonRole,
    /// Empty: every client of the site. Else the clients any term reaches. Always empty for
    /// an admin.
    pub scopes: Vec<RoleScope>,
}

impl Grant {
    /// The whole site: root on a node, and every name without a row.
    pub fn admin() -> Grant {
        Grant {
            role: PersonRole::Admin,
            scopes: Vec::new(),
        }
    }

    /// Whether the person reaches every client.
    pub fn whole_site(&self) -> bool {
        self.scopes.is_empty()
    }

    /// Whether a client of these groups and labels is within the scope.
    pub fn reaches(&self, groups: &[String], labels: &[String]) -> bool {
        self.scopes.is_empty()
            || self.scopes.iter().any(|s| match s {
                RoleScope::Group(g) => groups.iter().any(|x| x == g),
                RoleScope::Label(l) => labels.iter().any(|x| x == l),
            })
    }

    /// The scope as text: `group:a, label:b`, or `the whole site`.
    pub fn scope_text(&self) -> String {
        if self.scopes.is_empty() {
            "the whole site".to_owned()
        } else {
            self.scopes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// The checks of input, as apply makes them: at most `MAX_ROLE_SCOPES` terms, each a
    /// name, no duplicate, none for an admin.
    pub fn check(&self) -> Result<(), String> {
        if self.role == PersonRole::Admin && !self.scopes.is_empty() {
            return Err(
                "an admin reaches the whole site: scopes are for operators and viewers".into(),
            );
        }
        if self.scopes.len() > MAX_ROLE_SCOPES {
            return Err(format!(
                "{} scope terms, at most {MAX_ROLE_SCOPES} allowed",
                self.scopes.len()
            ));
        }
        for (i, s) in self.scopes.iter().enumerate() {
            let (kind, name) = match s {
                RoleScope::Group(g) => ("group", g),
                RoleScope::Label(l) => ("label", l),
            };
            crate::rules::check_name(&format!("scope {kind}"), name)?;
            if kind == "group" && name == crate::rules::ALL_CLIENTS {
                return Err("scope group:all names every client: leave the scope out".into());
            }
            if self.scopes[..i].contains(s) {
                return Err(format!("scope {s} is named twice"));
            }
        }
        Ok(())
    }
}

/// One row of `roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub name: String,
    pub grant: Grant,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_reach() {
        assert_eq!(
            RoleScope::parse("label:line2"),
            Ok(RoleScope::Label("line2".into()))
        );
        assert!(RoleScope::parse("group:all").is_err());
        assert!(RoleScope::parse("line2").is_err());
        assert!(RoleScope::parse("site:x").is_err());
        assert!(RoleScope::parse("label:").is_err());
        let g = Grant {
            role: PersonRole::Operator,
            scopes: vec![
                RoleScope::Label("line2".into()),
                RoleScope::Group("hmi".into()),
            ],
        };
        assert!(g.reaches(&[], &["line2".into()]));
        assert!(g.reaches(&["hmi".into()], &[]));
        assert!(!g.reaches(&["lab".into()], &["line1".into()]));
        assert!(Grant::admin().reaches(&[], &[]));
        assert_eq!(g.scope_text(), "label:line2, group:hmi");
        assert!(g.check().is_ok());
        let admin_scoped = Grant {
            role: PersonRole::Admin,
            scopes: vec![RoleScope::Label("x".into())],
        };
        assert!(admin_scoped.check().is_err());
        let twice = Grant {
            role: PersonRole::Viewer,
            scopes: vec![RoleScope::Label("x".into()), RoleScope::Label("x".into())],
        };
        assert!(twice.check().unwrap_err().contains("twice"));
        assert!(
            PersonRole::Viewer < PersonRole::Operator && PersonRole::Operator < PersonRole::Admin
        );
        assert!(PersonRole::parse("root").is_err());
    }
}
