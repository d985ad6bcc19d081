//! The web console's operator side as the CLI drives it: one-time sign-in links, operator
//! accounts and sessions.

use serde::{Deserialize, Serialize};

/// Rows on one page of a console list (clients, audit, failures).
pub const CONSOLE_PAGE: u32 = 50;

/// `console login`: a one-time sign-in link for `user` (an operator's name, as the audit
/// log will show it: `console:NAME`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleLinkRequest {
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleLinkResponse {
    /// `https://API_ADDR/login/link/ID.SECRET`, usable once.
    pub url: String,
    pub expires_at_ms: i64,
}

/// `console user add`: the account's name and an Argon2id PHC hash made by the CLI (the
/// password itself never reaches the node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleUserRequest {
    pub name: String,
    pub password_hash: String,
}

/// An operator account as listed: never its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleUserView {
    pub name: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

/// A console session as listed: never its secret or the secret's hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleSessionView {
    pub id: String,
    pub user: String,
    /// `link` or `password`.
    pub via: String,
    pub started_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_seen_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// Open now: not ended, not past its end, not idle too long.
    pub active: bool,
}
