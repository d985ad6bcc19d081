//! Helpers both sides of the API use. Nothing here knows the node's API internals or the agent.
//!
//! - `audit_file`: the audit export file and its offline check; a node's verified mark;
//! - `client`: the API client (`ApiClient`, `local_client`, `NO_BODY`, `urlencode`);
//! - `token`: join and enrollment tokens as people carry them;
//! - `datadir`: a node's data directory and its `node.toml`;
//! - `files`: the one fsync-then-rename helper;
//! - `backup`: the backup file (header, sealing the CA key);
//! - `policy`: pure rules both sides apply (the renewal window);
//! - `process`: this process's memory and descriptors, and the allocator's tuning;
//! - `request_id`: the name a write is remembered under;
//! - `text`: short echoes and tails for people;
//! - here: the clock (`now_ms`, `now_secs`).

pub mod audit_file;
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
