//! Who is calling: decided once per connection (certificate role, local socket or none) and
//! checked by each handler (`require_admin`, `require_member`).

use axum::http::StatusCode;
use outpost_certs::Role;

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
    Console(String),
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
            },
            Role::Client(id) => Caller::Client {
                id,
                serial: outpost_certs::serial_hex(leaf)?,
                not_before: outpost_certs::not_before_unix(leaf)?,
                not_after: outpost_certs::not_after_unix(leaf)?,
            },
        })
    }

    pub(crate) fn actor(&self) -> String {
        match self {
            Caller::Local => "local-admin".into(),
            Caller::Admin { name, .. } => format!("admin:{name}"),
            Caller::Node(id) => format!("node:{id}"),
            Caller::Client { id, .. } => format!("client:{id}"),
            Caller::Anonymous => "anonymous".into(),
            Caller::Console(user) => format!("console:{user}"),
        }
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
