//! What the integration tests share, once: each test file includes it with `mod support;`
//! and uses the part it needs (hence `dead_code` allowed here).
//!
//! - this file: running one test at a time (`serial`), the built binary (`exe`), polling
//!   with a deadline (`wait_for`), running the binary (`run_ok`, `run_exe`, `ok`) or any command (`output`, `command_ok`, `text`), small
//!   helpers (`s`, `now`, `sha256_hex`, file sizes, `status_of`, `raise_nofile`);
//! - `local`: loopback clusters of `outpost::harness::localcluster` (one node, N nodes,
//!   bundle-trust keys), their logs, a CA and an admin identity or API client, `audit verify`
//!   on a node, a background writer;
//! - `agents`: fleets of real `outpost agent` processes, each in its own state directory
//!   (enroll many, sync them, install a bundle from a file on one);
//! - `tls`: connections from a chosen loopback source address, and waiting for their close;
//! - `netns`: a `Site` of network namespaces for the tests that need real hosts; `site`:
//!   `outpost` nodes on its hosts;
//! - `checker.rs` and `nemesis.rs` belong to `tests/faults.rs` alone, which includes them
//!   by path (their unit tests would run again in every binary otherwise).
#![allow(dead_code)]

pub mod agents;
pub mod local;
pub mod netns;
pub mod site;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::LocalCluster;
use outpost::shared::client::ApiFailure;

/// What most test files take from `local`, at the top of `support` (each takes a subset).
#[allow(unused_imports)]
pub use local::{Written, cluster, dump_logs, one_node, or_dump, writer};

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

/// A path as an argument (temporary paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Unix time in seconds, as the nodes count it.
pub fn now() -> i64 {
    outpost_raft::now_ms() / 1000
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A file's length, 0 when it does not exist.
pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// raft.db with its WAL: what a Raft write would grow.
pub fn raft_bytes(dir: &Path) -> u64 {
    file_len(&dir.join("raft.db")) + file_len(&dir.join("raft.db-wal"))
}

/// The HTTP status of an error the node answered.
pub fn status_of(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<ApiFailure>().map(|f| f.status.as_u16())
}

/// Polls `f` every 100 ms until it returns `Some`, or panics naming `what` at `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `outpost ARGS` with the cluster's environment (not a node process); its stdout, or an
/// error with its stderr.
pub fn run_ok(c: &LocalCluster, args: &[&str]) -> Result<String> {
    c.run_ok(args)
}

/// `outpost ARGS` outside any cluster: whether it succeeded, its stdout and its stderr.
pub fn run_exe(args: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new(exe())
        .args(args)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running outpost {}", args.join(" ")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

/// `run_exe` that must succeed: its stdout, or an error with its stderr.
pub fn ok(args: &[&str]) -> Result<String> {
    let (good, stdout, stderr) = run_exe(args)?;
    if !good {
        bail!("outpost {} failed: {stderr}", args.join(" "));
    }
    Ok(stdout)
}

/// A command's output (stdin closed); a panic when it cannot run at all.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The stdout of a command that must succeed (a panic with its status and output if not).
pub fn command_ok(cmd: &mut Command) -> String {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stdout then its stderr, as one text to search or show.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The stdout of `outpost WHAT` that must have succeeded (a panic with its stderr if not).
pub fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "outpost {what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Raises this process's descriptor limit toward `want` (nodes started afterwards inherit
/// it): past the hard limit when allowed, else up to it. Returns the limit in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= want {
            return Ok(lim.rlim_cur);
        }
        let wanted = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
            return Ok(want);
        }
        // Not allowed past the hard limit (a container without CAP_SYS_RESOURCE).
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
        Ok(lim.rlim_cur)
    }
}
