//! The `outpost` binary's code, as a library so that the integration tests and the demo drive
//! nodes through exactly the same functions as `outpost serve` does.
//!
//! Map: `cli` (commands) → `runtime` (node start-up: init, join, serve) → `api` + `server`
//! (HTTPS and Unix-socket API) over `outpost_raft::RaftNode`. `client` is the API client the
//! CLI uses; `localcluster` runs real `outpost` processes on loopback for the demo, the
//! benchmarks and the tests.

pub mod agent;
pub mod api;
pub mod bench;
pub mod blobs;
pub mod bundles;
pub mod cli;
pub mod client;
pub mod clients;
pub mod datadir;
pub mod demo;
pub mod deployments;
pub mod discovery;
pub mod fields;
pub mod inventory;
pub mod limits;
pub mod localcluster;
pub mod refusals;
pub mod runtime;
pub mod server;
pub mod token;
