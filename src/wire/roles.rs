//! People's roles: what an admin certificate or a console account of a name may do.

use serde::{Deserialize, Serialize};

/// `role set NAME`: the role (`viewer`, `operator`, `admin`) and the scope terms
/// (`group:NAME`, `label:NAME`; none: the whole site; never for an admin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleRequest {
    pub role: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A person's role as listed and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleView {
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// `group:NAME` / `label:NAME`; empty: the whole site.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// No role was ever set for the name: an admin, as every certificate and account was
    /// before roles existed.
    #[serde(default)]
    pub implicit: bool,
    /// The name has a console account.
    #[serde(default)]
    pub console_account: bool,
    /// When and by whom the role was last set (absent when implicit).
    #[serde(default)]
    pub updated_at_ms: Option<i64>,
    #[serde(default)]
    pub updated_by: Option<String>,
}
