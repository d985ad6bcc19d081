//! Import throughput against `sha256sum` of the same file.
//!
//! `BUNDLE_BENCH_MB` (default 256) MiB of payload in four payloads; `BUNDLE_BENCH_DIR` picks the
//! directory (default: the system temp dir). Both runs read a warm page cache; import also
//! writes every payload into a fresh blob store and fsyncs it. Best of `BUNDLE_BENCH_ROUNDS`
//! (default 2) rounds each.
//!
//! `cargo bench -p outpost-bundles --bench import` (release), e.g. `BUNDLE_BENCH_MB=1024`.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use outpost_bundles::{
    BlobStore, ImportContext, ImportOutcome, Limits, TrustDocument, create_bundle, import_file,
    keygen, load_signing_key,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Incompressible-looking bytes, fast (xorshift), so the disk sees real data.
fn write_payload(path: &Path, bytes: u64, seed: u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n])?;
        left -= n as u64;
    }
    w.flush()
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mb = env_u64("BUNDLE_BENCH_MB", 256);
    let rounds = env_u64("BUNDLE_BENCH_ROUNDS", 2).max(1);
    let base = std::env::var_os("BUNDLE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base)?;
    let root = dir.path();

    fs::create_dir(root.join("files"))?;
    let parts = 4u64;
    let mut spec = String::from("channel = \"bench\"\nversion = 1\n");
    for i in 0..parts {
        let size = mb * (1 << 20) / parts + i; // not block-aligned on purpose
        write_payload(&root.join(format!("files/p{i}")), size, 0x9e37_79b9 + i)?;
        spec.push_str(&format!(
            "[[payload]]\npath = \"files/p{i}\"\nkind = \"artifact\"\n"
        ));
    }
    fs::write(root.join("spec.toml"), spec)?;
    let public = keygen(&root.join("key"))?;
    let key = load_signing_key(&root.join("key"))?;
    let bundle = root.join("bench.obundle");
    let now = 1_800_000_000;
    create_bundle(&root.join("spec.toml"), &[key], &bundle, now)?;
    // The sources are no longer needed; free the space and the cache.
    fs::remove_dir_all(root.join("files"))?;
    let size = fs::metadata(&bundle)?.len();

    let ctx = ImportContext {
        trust: TrustDocument::initial(vec![public], 1)?,
        cluster_id: "bench".into(),
        channel_floors: Default::default(),
        time_floor: now,
        limits: Limits::default(),
    };

    // Warm the page cache for both contenders.
    let sha = |_: ()| -> Result<Duration, Box<dyn std::error::Error>> {
        let t = Instant::now();
        let out = Command::new("sha256sum").arg(&bundle).output()?;
        if !out.status.success() {
            return Err("sha256sum failed".into());
        }
        Ok(t.elapsed())
    };
    sha(())?;

    let verify_opts = outpost_bundles::VerifyOptions {
        trust: ctx.trust.clone(),
        cluster_id: None,
        time_floor: None,
        limits: Limits::default(),
    };
    let mut sha_best = Duration::MAX;
    let mut import_best = Duration::MAX;
    for round in 0..rounds {
        let d = sha(())?;
        sha_best = sha_best.min(d);
        let t = Instant::now();
        outpost_bundles::verify_file(&bundle, &verify_opts)?;
        let v = t.elapsed();
        println!(
            "round {round}: verify only (read + hash, no store) {:.3}s ({:.0} MiB/s)",
            v.as_secs_f64(),
            mib_per_s(size, v)
        );
        let store_dir = root.join(format!("store{round}"));
        let store = BlobStore::open(&store_dir)?;
        let t = Instant::now();
        let out = import_file(&bundle, &store, &ctx, &mut |_| {})?;
        let i = t.elapsed();
        import_best = import_best.min(i);
        if !matches!(out, ImportOutcome::Imported(_)) {
            return Err("bundle not imported".into());
        }
        println!(
            "round {round}: sha256sum {:.3}s ({:.0} MiB/s), import {:.3}s ({:.0} MiB/s)",
            d.as_secs_f64(),
            mib_per_s(size, d),
            i.as_secs_f64(),
            mib_per_s(size, i)
        );
        fs::remove_dir_all(&store_dir)?;
    }
    println!(
        "bundle {:.0} MiB: sha256sum {:.3}s ({:.0} MiB/s), import {:.3}s ({:.0} MiB/s), ratio {:.2}x",
        size as f64 / (1 << 20) as f64,
        sha_best.as_secs_f64(),
        mib_per_s(size, sha_best),
        import_best.as_secs_f64(),
        mib_per_s(size, import_best),
        import_best.as_secs_f64() / sha_best.as_secs_f64()
    );
    Ok(())
}
