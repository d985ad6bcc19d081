//! Who is calling: decided once per connection (certificate role, local socket or none); a
//! person's role and scope (`Grant`) are read from the state on every request (`crate::api`'s
//! middleware for certificates, `crate::console::session` for console accounts), checked by the
//! route's rule (`crate::api::access`) and by the handlers that filter by scope. Handlers of
//! routes open to several kinds of caller check the kind (`require_admin`, `require_member`).

use axum::http::StatusCode;
use outpost_certs::Role;
use outpost_storage::{Grant, PersonRole};

use crate::api::ApiError;

/// Who is calling, decided per connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// The local Unix socket, by a process of our own user or root.
    Local,
    /// An admin certificate: its name and when it was issued (unix seconds), which decides
    /// whether `admin revoke NAME` covers it.
    Admin {
        name: String,
        issued_at: i64,
        not_after: i64,
        /// The role and scope of `name` as of this request (set by the API's middleware before
        /// any handler runs; a viewer of nothing until then).
        grant: Grant,
    },
    Node(u64),
    /// A client certificate: the client id, the certificate's serial (lowercase hex) and its
    /// validity (unix seconds), which decides whether it may renew.
    Client {
        id: String,
        serial: String,
        not_before: i64,
        not_after: i64,
    },
    /// TLS without a client certificate: only join (and health) are open to it.
    Anonymous,
    /// An operator signed in to the web console (a session cookie, on an anonymous TLS
    /// connection): made by the console for the commands it commits, never from a connection.
    /// `grant` as of this request.
    Console {
        user: String,
        grant: Grant,
    },
}

impl Caller {
    /// The caller behind a leaf certificate that rustls verified against the cluster CA: the
    /// role comes from our own certificate profile.
    pub fn from_cert(leaf: &[u8]) -> Result<Caller, outpost_certs::CertError> {
        Ok(match outpost_certs::role_of(leaf)? {
            Role::Node(id) => Caller::Node(id),
            Role::Admin(name) => Caller::Admin {
                name,
                issued_at: outpost_certs::not_before_unix(leaf)?
                    .saturating_add(outpost_certs::CLOCK_SKEW_SECS),
                not_after: outpost_certs::not_after_unix(leaf)?,
                grant: Caller::unresolved(),
            },
            Role::Client(id) => Caller::Client {
                id,
                serial: outpost_certs::serial_hex(leaf)?,
                not_before: outpost_certs::not_before_unix(leaf)?,
                not_after: outpost_certs::not_after_unix(leaf)?,
            },
        })
    }

    /// A grant that reaches no client and changes nothing: what an admin certificate holds
    /// until the middleware reads the name's grant.
    pub(crate) fn unresolved() -> Grant {
        Grant {
            role: PersonRole::Viewer,
            scopes: vec![outpost_storage::RoleScope::Label("\u{0}".into())],
        }
    }

    /// Who the caller is: `admin:NAME`, `console:NAME`, `node:N`, `client:ID`, `local-admin`.
    /// Names request ids, so it never carries the role (a retry after a role change is still
    /// the same request).
    pub(crate) fn actor(&self) -> String {
        match self {
            Caller::Local => "local-admin".into(),
            Caller::Admin { name, .. } => format!("admin:{name}"),
            Caller::Node(id) => format!("node:{id}"),
            Caller::Client { id, .. } => format!("client:{id}"),
            Caller::Anonymous => "anonymous".into(),
            Caller::Console { user, .. } => format!("console:{user}"),
        }
    }

    /// The actor the audit records: `actor()`, and for a person the role held when asking,
    /// with the scope when there is one (`admin:alice as admin`, `console:bob as operator of
    /// label:line2`).
    pub(crate) fn audit_actor(&self) -> String {
        match self.person() {
            Some((_, g)) if g.whole_site() => format!("{} as {}", self.actor(), g.role),
            Some((_, g)) => format!(
                "{} as {} of {}",
                self.actor(),
                g.role,
                g.scopes
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => self.actor(),
        }
    }

    /// A person's name and grant: an admin certificate or a console account. Root on the
    /// local socket is not one (it is always an admin, `grant`).
    pub fn person(&self) -> Option<(&str, &Grant)> {
        match self {
            Caller::Admin { name, grant, .. } => Some((name, grant)),
            Caller::Console { user, grant } => Some((user, grant)),
            _ => None,
        }
    }

    /// Whether a client of these groups and labels is within the caller's reach: a person's
    /// scope; every client for the local socket and for nodes.
    pub fn reaches(&self, groups: &[String], labels: &[String]) -> bool {
        self.person().is_none_or(|(_, g)| g.reaches(groups, labels))
    }

    /// Whether the caller is a person with less than the whole site in reach.
    pub fn scoped(&self) -> bool {
        self.person().is_some_and(|(_, g)| !g.whole_site())
    }

    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Local | Caller::Admin { .. } => Ok(()),
            Caller::Anonymous => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a client certificate is required",
            )),
            other => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{} may not use the admin API", other.actor()),
            )),
        }
    }

    pub(crate) fn require_member(&self) -> Result<(), ApiError> {
        match self {
            Caller::Local | Caller::Admin { .. } | Caller::Node(_) => Ok(()),
            _ => self.require_admin(),
        }
    }
}
