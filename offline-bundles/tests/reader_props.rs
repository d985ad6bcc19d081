//! Property tests on the bundle reader: arbitrary bytes and mutations of a valid bundle
//! never panic, and a refused import never leaves a file behind.
//!
//! Cases per property: `PROPTEST_CASES` (default 64, so `cargo test` stays fast).
//! A long run: `PROPTEST_CASES=200000 cargo test --release -p outpost-bundles --test reader_props`.

mod common;

use std::sync::OnceLock;

use common::*;
use outpost_bundles::{ImportOutcome, Limits, import_bundle, inspect_bundle};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

fn valid() -> &'static [u8] {
    static V: OnceLock<Vec<u8>> = OnceLock::new();
    V.get_or_init(|| {
        Draft::new(&[
            ("tool", &[5u8; 1500][..]),
            ("site.conf", b"a=b\n"),
            ("empty", b""),
        ])
        .to_bytes()
    })
}

/// Import `bytes` into a fresh store that already holds one blob; a refusal must leave the
/// store exactly as it was, a success must leave no temp files.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let store = store_in(dir.path());
    store
        .put_verified(&b"a=b\n"[..], &sha(b"a=b\n"), 4)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let before = snapshot(dir.path());
    let _ = inspect_bundle(bytes, &Limits::default());
    let got = import_bundle(
        bytes,
        Some(bytes.len() as u64),
        &store,
        &context(),
        &mut |_| {},
    );
    let tmp_files = std::fs::read_dir(store.root().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(99);
    prop_assert_eq!(tmp_files, 0);
    match got {
        Err(_) => prop_assert_eq!(snapshot(dir.path()), before),
        Ok(ImportOutcome::Imported(b)) => {
            for p in &b.payloads {
                prop_assert!(store.contains(&p.sha256));
            }
        }
        Ok(ImportOutcome::AlreadyImported { .. }) => prop_assert!(false, "no floor matches"),
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Set { at: usize, byte: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    CopyBlock { from: usize, to: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..600)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..1024).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Mutation::CopyBlock { from, to }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match m {
        Mutation::Flip { at, xor } => bytes[at % n] ^= xor,
        Mutation::Set { at, byte } => bytes[at % n] = *byte,
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::Insert { at, bytes: b } => {
            let at = at % (n + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(n);
            bytes.drain(at..end);
        }
        Mutation::CopyBlock { from, to } => {
            // Copy one 512-byte block over another: headers moved around.
            let blocks = n / 512;
            let (f, t) = (from % blocks * 512, to % blocks * 512);
            let block: Vec<u8> = bytes[f..f + 512].to_vec();
            bytes[t..t + 512].copy_from_slice(&block);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_nor_leave_files(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check(&bytes)?;
    }

    #[test]
    fn arbitrary_headers_never_panic(blocks in proptest::collection::vec(any::<[u8; 32]>(), 1..40)) {
        // Mostly-zero blocks with random bytes in the header fields: reaches deeper than noise.
        let mut bytes = Vec::new();
        for b in &blocks {
            let mut block = [0u8; 512];
            block[100..132].copy_from_slice(b);
            block[257..265].copy_from_slice(b"ustar\x0000");
            bytes.extend_from_slice(&block);
        }
        check(&bytes)?;
    }

    #[test]
    fn mutated_bundles_never_panic_nor_leave_files(muts in proptest::collection::vec(mutation(), 1..4)) {
        let mut bytes = valid().to_vec();
        for m in &muts {
            if bytes.len() < 1024 {
                break;
            }
            apply(&mut bytes, m);
        }
        check(&bytes)?;
    }
}

#[test]
fn the_unmutated_bundle_imports() {
    check(valid()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    let out = import_bundle(valid(), None, &store, &context(), &mut |_| {}).unwrap();
    assert!(matches!(out, ImportOutcome::Imported(_)));
}
