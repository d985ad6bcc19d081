//! The `outpost` binary's code, as a library so that the integration tests and the demo drive
//! nodes through exactly the same functions as `outpost serve` does.
//!
//! Map: `cli` (commands) → `runtime` (node start-up: init, join, serve) → `api` + `server`
//! (HTTPS and Unix-socket API) over `outpost_raft::RaftNode`. `client` is the API client the
//! CLI uses; `localcluster` runs real `outpost` processes on loopback for the demo, the
//! benchmarks and the tests.

pub mod agent;
pub mod api;
pub mod blobs;
pub mod cli;
pub mod harness;
pub mod node;
pub mod shared;
pub mod wire;
