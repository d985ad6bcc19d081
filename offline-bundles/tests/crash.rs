//! kill -9 in the middle of an import, at several points: afterwards the store holds only
//! complete, correct blobs, and start-up clean-up (`clean_tmp` + `gc` of what the replicated
//! state does not reference) leaves it exactly as before the import.
//!
//! The importing process is this test binary itself, re-run with `CRASH_HELPER_*` set: it
//! imports from a reader that stops at a given byte offset and then hangs until killed.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use outpost_bundles::{BlobStatus, import_bundle};

const ONE: &[u8] = &[1u8; 300_000];
const TWO: &[u8] = &[2u8; 200_000];

fn bundle() -> Vec<u8> {
    Draft::new(&[("one", ONE), ("two", TWO)]).to_bytes()
}

/// Yields the bundle up to `stop`, then announces it and blocks forever.
struct StallingReader {
    data: Vec<u8>,
    pos: usize,
    stop: usize,
}

impl Read for StallingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.stop {
            println!("stalled");
            loop {
                std::thread::park();
            }
        }
        let n = buf.len().min(self.stop - self.pos).min(64 * 1024);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn crash_helper() {
    // Only does something when re-run by `kill_9_mid_import_leaves_no_trace`.
    let (Ok(dir), Ok(stop)) = (
        std::env::var("CRASH_HELPER_STORE"),
        std::env::var("CRASH_HELPER_STOP"),
    ) else {
        return;
    };
    let store = outpost_bundles::BlobStore::open(PathBuf::from(dir)).unwrap();
    let reader = StallingReader {
        data: bundle(),
        pos: 0,
        stop: stop.parse().unwrap(),
    };
    let _ = import_bundle(reader, None, &store, &context(), &mut |_| {});
    panic!("the stalling reader never returns");
}

#[test]
fn kill_9_mid_import_leaves_no_trace() {
    let bytes = bundle();
    let head = tar_entries(&Draft::new(&[("one", ONE), ("two", TWO)]).head_parts()).len();
    let points = [
        ("inside the first payload", head + 512 + 150_000),
        (
            "inside the second payload",
            head + 512 + ONE.len() + 512 + 100_000,
        ),
        ("before the end blocks", bytes.len() - 1024),
    ];
    let exe = std::env::current_exe().unwrap();
    for (what, stop) in points {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store
            .put_verified(&b"older"[..], &sha(b"older"), 5)
            .unwrap();
        let keep: BTreeSet<String> = store.list().unwrap().into_iter().collect();
        let before = snapshot(dir.path());

        let mut child = Command::new(&exe)
            .args(["--exact", "crash_helper", "--nocapture", "--test-threads=1"])
            .env("CRASH_HELPER_STORE", store.root())
            .env("CRASH_HELPER_STOP", stop.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("stalled") {
                    let _ = tx.send(());
                    return;
                }
            }
        });
        let stalled = rx.recv_timeout(Duration::from_secs(30)).is_ok();
        // Let the writer thread finish the buffers already read (the temp files stop
        // growing), then kill -9.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut last, mut stable) = (u64::MAX, 0);
        while Instant::now() < deadline && stable < 3 {
            let now = tmp_bytes(&store);
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(stalled, "{what}: the helper never reached its stop point");

        // What a restarted node sees before clean-up: no partial blob under a hash name.
        for hash in store.list().unwrap() {
            assert_eq!(store.verify(&hash).unwrap(), BlobStatus::Ok, "{what}");
        }
        let leftovers = snapshot(dir.path()) != before;
        assert!(
            leftovers,
            "{what}: the kill left nothing to clean, the point is wrong"
        );

        // Start-up: temp files go, unreferenced blobs go (the bundle never committed).
        store.clean_tmp().unwrap();
        store.gc(&keep).unwrap();
        assert_eq!(snapshot(dir.path()), before, "{what}");
    }
}

fn tmp_bytes(store: &outpost_bundles::BlobStore) -> u64 {
    std::fs::read_dir(store.root().join("tmp"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
