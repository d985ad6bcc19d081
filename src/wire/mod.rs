//! The request and response bodies of the API: what the node's routes (`api`), the CLI, the
//! agent, the console and the benchmarks say to each other. Plain serde data with no
//! behaviour; this folder is the contract an agent or a CLI of another version reads.
//!
//! The rule: **a new API field goes in `wire/<subject>.rs`; `api/` converts storage and Raft
//! records into these types (`api/convert.rs`, `From` impls); storage stays free to rename.**
//! Nothing here imports the storage or Raft crates, and neither does `agent/`, so a change of
//! a stored row never changes what an older agent decodes by accident.
//!
//! Compatibility: `tests/fixtures/wire/<version>/` holds raw response bodies a node of that
//! version served, and `tests/wire_compat.rs` decodes every one with today's types, encodes
//! it again and requires the same JSON. When a field is ADDED:
//! 1. it is `#[serde(default)]` (an older node does not send it, an older agent ignores it);
//! 2. the release captures a new fixture directory for its own version
//!    (`tests/fixtures/wire/capture/` has the scripts, `0.1.0/README.md` the steps) and
//!    appends the version to `VERSIONS` in `tests/wire_compat.rs`;
//! 3. the field goes in `ADDED` there (first version, fixture, path): the older fixtures stay
//!    as they are and may encode back with that field more, and with nothing else different.
//!
//! Removing or renaming a field fails those tests: it would break older agents too.
//!
//! - `cluster`: `/v1/status` (Raft status, readiness, expiries, builds), nodes, join, backup.
//! - `tokens`: join and enrollment tokens.
//! - `config`: configuration entries and their scopes.
//! - `clients`: client records and their labels, enrollment, the agent's sync (with its
//!   removals), trust and renewal.
//! - `deployments`: deployments and their rollouts (selectors, the plan, steps, the status
//!   by phase and client), assignments and results.
//! - `inventory`: inventory records, changes, queries and the report caps.
//! - `audit`: audit records and the chain check.
//! - `bundles`: bundle import, list and commit; the nodes' rolling upgrade.
//! - `console`: console sign-in links, operator accounts and sessions.
//! - `roles`: people's roles and scopes.
//! - `health`: `outpost doctor`'s findings and what one node reports of itself to another.

pub mod audit;
pub mod bundles;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod console;
pub mod deployments;
pub mod health;
pub mod inventory;
pub mod roles;
pub mod tokens;

pub use audit::*;
pub use bundles::*;
pub use clients::*;
pub use cluster::*;
pub use config::*;
pub use console::*;
pub use deployments::*;
pub use health::*;
pub use inventory::*;
pub use roles::*;
pub use tokens::*;
