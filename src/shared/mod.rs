//! Helpers both sides of the API use: the API client, tokens, a node's data directory.

pub mod client;
pub mod datadir;
pub mod token;
