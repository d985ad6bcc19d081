//! Real `outpost` processes driven from the outside: `localcluster` (nodes on loopback), the
//! demo, `console` (the web console reached over HTTPS without a browser) and the benchmarks
//! of `outpost bench` under `bench/`.

pub mod bench;
pub mod console;
pub mod demo;
pub mod localcluster;

/// `outpost bench flood` and its attacks, where the CLI calls them.
pub use bench::{attacks, flood};
