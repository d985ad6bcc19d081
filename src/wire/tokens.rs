//! Join and enrollment tokens as the CLI makes and lists them (`/v1/tokens`).

use serde::{Deserialize, Serialize};

/// `token create`: kind (`node` or `client`), lifetime, uses (None: unlimited), groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub kind: String,
    pub ttl_secs: u64,
    pub uses: Option<u32>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub id: String,
    pub expires_at_ms: i64,
}

/// A token as `token list` shows it; never its secret or the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    pub expires_at_ms: i64,
    /// None = unlimited.
    pub uses_left: Option<u32>,
    pub groups: Vec<String>,
    pub revoked: bool,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Node,
    Client,
}

impl TokenKind {
    /// The name as the JSON carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Node => "node",
            TokenKind::Client => "client",
        }
    }
}
