//! The `outpost` binary's code, as a library so that the integration tests and the demo drive
//! nodes through exactly the same functions as `outpost serve` does.
//!
//! Map, by side. Each room uses only the rooms listed after it (`tests/layout.rs` checks):
//!
//! - `cli`: the `Cli` type and dispatch; one file per noun (its arguments and printing).
//! - `harness`: real `outpost` processes on loopback (`localcluster`), the demo, benchmarks.
//! - `agent`: the client agent: enrollment, sync loop, inventory, downloads and handlers,
//!   certificate renewal.
//! - `node`: the running node: start-up (init, join, serve), the accept loops, discovery,
//!   offline restore and recover, the rolling upgrade.
//! - `console`: the web console on the API port: sessions and sign-in, pages, actions, alarms.
//! - `api`: the HTTP API over `outpost_raft::RaftNode`: router, caller, state, errors, input
//!   checks, port limits, one file per resource.
//! - `metrics`: what a node measures (requests, syncs, handshakes, disk, clock, the site's
//!   clients) and its `/metrics` text.
//! - `health`: the health rules (one definition each): Prometheus alert rules, `doctor`'s
//!   findings and the console's alarms come from them.
//! - `blobs`: the node's blob store and its replication between nodes (the API serves from
//!   it; the node starts it).
//! - `peer_app`: what one node asks another over the peer channel (clock, Raft status, audit
//!   chain, blob chunks), the handler that answers, and the cluster time floor.
//! - `shared`: helpers every side may use: the API client, tokens, the data directory, a
//!   durable rename, pure policy (renewal window, fact matching), text for people.
//! - `wire`: the request and response bodies the API, the CLI, the agent and the benchmarks
//!   share.

pub mod agent;
pub mod api;
pub mod blobs;
pub mod cli;
pub mod console;
pub mod harness;
pub mod health;
pub mod metrics;
pub mod node;
pub mod peer_app;
pub mod shared;
pub mod wire;
