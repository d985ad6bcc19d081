//! Helpers both sides of the API use: the API client, tokens, a node's data directory, text
//! for people. Nothing here knows the node's API internals or the agent.

pub mod backup;
pub mod client;
pub mod datadir;
pub mod files;
pub mod policy;
pub mod process;
pub mod request_id;
pub mod text;
pub mod token;

/// Milliseconds since the Unix epoch (0 if the clock is before it): what the agent and the
/// CLI stamp and compare. The Raft crate keeps its own for the commands it proposes.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The node's clock as the time floor uses it: unix seconds.
pub fn now_secs() -> i64 {
    now_ms() / 1000
}
