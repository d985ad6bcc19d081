//! Prints the cost of `Store::apply` per envelope for a few batch sizes (figures, not asserts).
//! Run: cargo bench -p outpost-storage --bench apply

use std::time::Instant;

use outpost_storage::{Command, Envelope, Scope, Store, encode_batch};

fn env(at_ms: i64, command: Command) -> Envelope {
    Envelope {
        at_ms,
        actor: "bench".into(),
        command,
    }
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
    for batch in [1usize, 16, 64, 256] {
        let calls = (4096 / batch).max(8);
        let start = Instant::now();
        for c in 0..calls {
            let envs: Vec<Envelope> = (0..batch)
                .map(|i| {
                    let key = format!("bench/{}", (c * batch + i) % 512);
                    env(
                        2,
                        Command::SetConfig {
                            scope: Scope::Global,
                            key,
                            value: value.clone(),
                        },
                    )
                })
                .collect();
            rt.block_on(store.apply(vec![Some(encode_batch(&envs))], vec![0]))?;
        }
        let el = start.elapsed();
        let n = (calls * batch) as f64;
        println!(
            "batch {batch:>4}: {:>8.1} us/envelope, {:>8.0} envelopes/s, {:.2} ms/apply",
            el.as_secs_f64() * 1e6 / n,
            n / el.as_secs_f64(),
            el.as_secs_f64() * 1e3 / calls as f64
        );
    }
    Ok(())
}
