//! Prints the cost of `Store::apply` per envelope for a few batch sizes (figures, not asserts),
//! for the write `outpost bench write` makes: a 1 KiB config value under one of 4096 keys,
//! wrapped in a request id (`Command::Once`), on a state that already remembers the most
//! request ids it keeps (`REQUEST_IDS_KEPT`), as a node does after a few minutes of load.
//! Run: cargo bench -p outpost-storage --bench apply

use std::time::Instant;

use outpost_storage::{Command, Envelope, REQUEST_IDS_KEPT, Scope, Store, encode_batch};
use sha2::{Digest, Sha256};

const KEYS: usize = 4096;

fn env(at_ms: i64, command: Command) -> Envelope {
    Envelope {
        at_ms,
        actor: "bench".into(),
        command,
    }
}

/// The n-th write, under a request id shaped like the API's: the time it was made (12 hex
/// digits; here the write's number) and a hash.
fn write(n: usize, value: &str) -> Envelope {
    let hash = hex::encode(Sha256::digest(format!("bench\n{n}\n0")));
    let request_id = format!("{n:012x}{}", &hash[..52]);
    env(
        2,
        Command::Once {
            request_id,
            command: Box::new(Command::SetConfig {
                scope: Scope::Global,
                key: format!("bench/{}", n % KEYS),
                value: value.to_owned(),
            }),
        },
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.db"))?;
    let init = Command::InitCluster {
        cluster_id: "bench".into(),
        name: "bench".into(),
        ca_cert_pem: "-".into(),
    };
    rt.block_on(store.apply(vec![Some(encode_batch(&[env(1, init)]))], vec![0]))?;
    let value = "x".repeat(1024);
    let mut n = 0usize;
    let start = Instant::now();
    let warm = REQUEST_IDS_KEPT as usize;
    while n < warm {
        let envs: Vec<Envelope> = (n..n + 1000).map(|i| write(i, &value)).collect();
        n += envs.len();
        rt.block_on(store.apply(vec![Some(encode_batch(&envs))], vec![0]))?;
    }
    println!(
        "warm-up: {warm} writes in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    for batch in [1usize, 16, 64, 256] {
        let calls = (8192 / batch).max(16);
        let start = Instant::now();
        for _ in 0..calls {
            let envs: Vec<Envelope> = (n..n + batch).map(|i| write(i, &value)).collect();
            n += batch;
            rt.block_on(store.apply(vec![Some(encode_batch(&envs))], vec![0]))?;
        }
        let el = start.elapsed();
        let total = (calls * batch) as f64;
        println!(
            "batch {batch:>4}: {:>8.1} us/envelope, {:>8.0} envelopes/s, {:.2} ms/apply",
            el.as_secs_f64() * 1e6 / total,
            total / el.as_secs_f64(),
            el.as_secs_f64() * 1e3 / calls as f64
        );
    }
    Ok(())
}
