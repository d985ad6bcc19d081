//! Helpers shared by the tests that run real `outpost` processes on 127.0.0.1 through
//! `localcluster`. Included by each test file with `#[path = "support/local.rs"] mod local;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use outpost::harness::localcluster::LocalCluster;

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests of one file run one at a time: several node processes each on a two-core machine
/// are plenty. Held for a whole test, across awaits, on the test's own runtime.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `outpost` binary cargo built for these tests.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_outpost"))
}

/// On failure, the tail of every node's log helps more than the assertion alone.
pub fn dump_logs(c: &LocalCluster) {
    for n in &c.nodes {
        if let Ok(text) = std::fs::read_to_string(&n.log) {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("---- {} ----\n{}", n.name, tail.join("\n"));
        }
    }
}

/// The value of a test body, or, on failure, the tail of every node's log and then a panic
/// with the error and its causes.
pub fn or_dump<T>(c: &LocalCluster, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            dump_logs(c);
            panic!("{e:#}");
        }
    }
}

/// What a `writer` got: each acknowledged key with the moment its acknowledgement arrived,
/// and how many writes were refused.
pub struct Written {
    pub acked: Vec<(String, Instant)>,
    pub refused: u64,
}

/// Writes `PREFIX.N = v` (`outpost config set`, one process each) through the data dirs of
/// `dirs` in turn, until `stop` is set or `max` writes were tried.
pub fn writer(
    exe: PathBuf,
    dirs: Vec<PathBuf>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    max: usize,
) -> std::thread::JoinHandle<Written> {
    std::thread::spawn(move || {
        let mut w = Written {
            acked: Vec::new(),
            refused: 0,
        };
        for n in 0..max {
            if stop.load(Ordering::Relaxed) || dirs.is_empty() {
                break;
            }
            let key = format!("{prefix}.{n}");
            let ok = std::process::Command::new(&exe)
                .args(["config", "set", &key, "v", "--data-dir"])
                .arg(&dirs[n % dirs.len()])
                .env("RUST_LOG", "off")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                w.acked.push((key, Instant::now()));
            } else {
                w.refused += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        w
    })
}
