//! Fault injection in the spirit of etcd's robustness tests and Jepsen. This file so far
//! holds the pure parts and their unit tests: the checker (`support/checker.rs`) and the
//! nemesis plan (`support/nemesis.rs`).

#[path = "support/checker.rs"]
mod checker;
#[path = "support/nemesis.rs"]
mod nemesis;
