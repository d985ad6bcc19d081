//! Real `outpost` processes driven from the outside: `localcluster` (nodes on loopback), the
//! demo, the benchmarks and `console` (the web console reached over HTTPS without a browser).

mod attackers;
pub mod attacks;
pub mod bench;
pub mod console;
pub mod demo;
pub mod flood;
pub mod localcluster;
pub mod members;
pub mod recovery;
