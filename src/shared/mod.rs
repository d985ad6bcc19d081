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

/// The node's clock as the time floor uses it: unix seconds.
pub fn now_secs() -> i64 {
    outpost_raft::now_ms() / 1000
}
