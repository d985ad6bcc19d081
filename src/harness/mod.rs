//! Real `outpost` processes driven from the outside: `localcluster` (nodes on loopback), the
//! demo and the benchmarks.

pub mod bench;
pub mod demo;
pub mod flood;
pub mod localcluster;
pub mod recovery;
