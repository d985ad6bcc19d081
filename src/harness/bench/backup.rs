//! `outpost bench backup`: backup and restore times for a state with many enrolled clients, on
//! a temporary three-node cluster of real `outpost serve` processes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::harness::bench::{SyncBench, sync};
use crate::harness::localcluster::{LocalCluster, LocalOptions};
use crate::shared::datadir::DataDir;

#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub clients: u64,
    pub backup_bytes: u64,
    /// `outpost backup` on a follower, start to a checked file (with the CA key sealed).
    pub backup_s: f64,
    /// `outpost restore` into an empty data directory.
    pub restore_s: f64,
    /// From starting the restored node to its first accepted write.
    pub first_write_s: f64,
    pub enroll_s: f64,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "state with {} clients: backup {:.2} s ({:.1} MiB, CA key sealed), restore {:.2} s, restored node's first write {:.2} s after start (enrolling took {:.1} s)",
            self.clients,
            self.backup_s,
            self.backup_bytes as f64 / (1 << 20) as f64,
            self.restore_s,
            self.first_write_s,
            self.enroll_s
        )
    }
}

pub async fn backup(clients: usize) -> Result<BackupReport> {
    let root = tempfile::Builder::new()
        .prefix("outpost-bench-backup-")
        .tempdir()?;
    let exe = std::env::current_exe()?;
    // Every simulated agent enrolls from this host: widen the per-source enroll rate, as a
    // mass rollout behind one address would.
    let opts = LocalOptions {
        log_level: "warn".into(),
        env: vec![("OUTPOST_ENROLL_RATE".into(), "2000".into())],
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(&root.path().join("old"), &exe, 3, opts.clone()).await?;
    let enrolled = sync(
        &DataDir::new(&c.nodes[0].dir),
        SyncBench {
            clients,
            seconds: 1,
            interval: Duration::from_secs(60),
        },
    )
    .await
    .context("enrolling the clients")?;
    if enrolled.errors > 0 {
        bail!("{} errors while enrolling", enrolled.errors);
    }
    let leader = c.leader(Duration::from_secs(10)).await?;
    let follower = (0..3)
        .find(|&i| i != leader)
        .context("no follower to back up")?;
    let pass = root.path().join("passphrase");
    std::fs::write(&pass, "a bench passphrase\n")?;
    let file = root.path().join("site.backup");
    let t = Instant::now();
    c.cli(
        follower,
        &[
            "backup",
            "-o",
            &file.to_string_lossy(),
            "--passphrase-file",
            &pass.to_string_lossy(),
        ],
    )?;
    let backup_s = t.elapsed().as_secs_f64();
    let header = crate::shared::backup::read_header(&file)?.header;
    for i in 0..3 {
        c.kill9(i);
    }

    let mut n = LocalCluster::new(&root.path().join("new"), &exe, opts);
    let t = Instant::now();
    let (r, out) = n.restore_node(&file, &["--passphrase-file", &pass.to_string_lossy()])?;
    if !out.status.success() {
        bail!(
            "restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let restore_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    n.serve(r).await?;
    let deadline = t + Duration::from_secs(60);
    while n
        .cli(r, &["config", "set", "bench.restored", "yes"])
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the restored node took no write within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_write_s = t.elapsed().as_secs_f64();
    Ok(BackupReport {
        clients: header.clients,
        backup_bytes: std::fs::metadata(&file)?.len(),
        backup_s,
        restore_s,
        first_write_s,
        enroll_s: enrolled.enroll_s,
    })
}
