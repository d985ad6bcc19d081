//! Configuration keys and their scopes (`/v1/config`, `/v1/config-effective`).

use serde::{Deserialize, Serialize};

/// Where a configuration key lives: global < group < client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Global,
    Group(String),
    Client(String),
}

/// A configuration entry as `config list` and `config get` read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub scope: Scope,
    pub key: String,
    pub value: String,
    pub version: u64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigSetRequest {
    pub key: String,
    pub value: String,
    pub scope: Scope,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigSetResponse {
    pub version: u64,
}
