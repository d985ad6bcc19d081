//! `outpost backup schedule` (the `[backup]` table of this host's node.toml, which the running
//! node re-reads: `crate::node::backups`) and `outpost backup verify FILE` (a backup checked
//! end to end without restoring it: `crate::shared::backup::check_file`). `outpost backup -o
//! FILE` itself is in `recovery`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::DataDirArg;
use crate::shared::backup;
use crate::shared::datadir::{BackupSchedule, DataDir};
use crate::shared::text::format_ms;

#[derive(Subcommand, Debug)]
pub(super) enum BackupCmd {
    /// Show, set or turn off this node's scheduled backups (the `[backup]` table of its
    /// node.toml; the running node applies a change within 10 s, without a restart).
    Schedule {
        #[command(flatten)]
        dir: DataDirArg,
        /// How often (e.g. `6h`, `30m`; at least 10s).
        #[arg(long)]
        every: Option<humantime::Duration>,
        /// How many of this node's backups to keep in DIR (1 to 1000); older ones are deleted.
        #[arg(long)]
        keep: Option<u32>,
        /// The directory the node writes its backups into (must exist and be writable).
        #[arg(long = "dir", value_name = "DIR")]
        backup_dir: Option<PathBuf>,
        /// A file whose first line (12 characters or more) seals the CA key into each backup.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Turn scheduled backups off (files already written stay).
        #[arg(long, conflicts_with_all = ["every", "keep", "backup_dir", "passphrase_file"])]
        off: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check a backup file without restoring it: header, digest, signature (with
    /// --expect-ca), that its state opens (quick_check, schema, the entry its header names),
    /// and that the sealed CA key opens (with --passphrase-file).
    Verify {
        /// The backup file.
        file: PathBuf,
        /// Opens the CA key sealed in the backup.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// The cluster's CA certificate: the backup must be signed by it and unchanged since.
        #[arg(long, value_name = "CA_CRT")]
        expect_ca: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(cmd: BackupCmd) -> Result<()> {
    match cmd {
        BackupCmd::Schedule {
            dir,
            every,
            keep,
            backup_dir,
            passphrase_file,
            off,
            json,
        } => {
            let change = if off {
                Change::Off
            } else if every.is_none()
                && keep.is_none()
                && backup_dir.is_none()
                && passphrase_file.is_none()
            {
                Change::Show
            } else {
                Change::Set {
                    every: every.map(Into::into),
                    keep,
                    dir: backup_dir,
                    passphrase_file,
                }
            };
            schedule(&DataDir::new(&dir.data_dir), change, json)
        }
        BackupCmd::Verify {
            file,
            passphrase_file,
            expect_ca,
            json,
        } => {
            verify(
                &file,
                passphrase_file.as_deref(),
                expect_ca.as_deref(),
                json,
            )
            .await
        }
    }
}

enum Change {
    Show,
    Off,
    /// Given values; missing ones are kept from the current schedule.
    Set {
        every: Option<Duration>,
        keep: Option<u32>,
        dir: Option<PathBuf>,
        passphrase_file: Option<PathBuf>,
    },
}

fn schedule(dd: &DataDir, change: Change, json: bool) -> Result<()> {
    let mut file = dd.load_node_file()?;
    match change {
        Change::Show => {}
        Change::Off => {
            file.backup = None;
            dd.save_node_file(&file)?;
        }
        Change::Set {
            every,
            keep,
            dir,
            passphrase_file,
        } => {
            let old = file.backup.clone();
            let missing = |what: &str| {
                anyhow::anyhow!(
                    "no backup schedule is set yet: give {what} (e.g. --every 6h --keep 14 --dir /var/backups/outpost)"
                )
            };
            let next = BackupSchedule {
                every: every
                    .or(old.as_ref().map(|o| o.every))
                    .ok_or_else(|| missing("--every"))?,
                keep: keep
                    .or(old.as_ref().map(|o| o.keep))
                    .ok_or_else(|| missing("--keep"))?,
                dir: match dir {
                    Some(d) => d,
                    None => old
                        .as_ref()
                        .map(|o| o.dir.clone())
                        .ok_or_else(|| missing("--dir"))?,
                },
                passphrase_file: passphrase_file
                    .or(old.as_ref().and_then(|o| o.passphrase_file.clone())),
            };
            let next = check_here(next)?;
            file.backup = Some(next);
            dd.save_node_file(&file)?;
        }
    }
    let view = file.backup.as_ref().map(crate::node::backups::view);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    match &file.backup {
        None => println!(
            "backup schedule: off ({}); set one with `outpost backup schedule --every 6h --keep 14 --dir DIR`",
            dd.node_file().display()
        ),
        Some(s) => {
            println!(
                "backup schedule: every {}, keep the newest {}, into {}",
                humantime::format_duration(s.every),
                s.keep,
                s.dir.display()
            );
            match &s.passphrase_file {
                Some(p) => println!("  CA key:  sealed with the passphrase in {}", p.display()),
                None => println!(
                    "  CA key:  not included (no --passphrase-file: a restore needs --new-ca)"
                ),
            }
            println!(
                "  the running node applies changes within 10 s; `outpost status` shows its last backup"
            );
        }
    }
    Ok(())
}

/// The checks `outpost backup schedule` makes where it runs: the values, the directory exists
/// and this process can write into it, the passphrase file reads. Paths made absolute (the
/// node's working directory is not ours).
fn check_here(mut s: BackupSchedule) -> Result<BackupSchedule> {
    s.dir =
        std::path::absolute(&s.dir).with_context(|| format!("backup dir {}", s.dir.display()))?;
    s.check()?;
    let meta = std::fs::metadata(&s.dir)
        .with_context(|| format!("backup dir {} does not exist", s.dir.display()))?;
    if !meta.is_dir() {
        bail!("backup dir {} is not a directory", s.dir.display());
    }
    let probe = s
        .dir
        .join(format!(".outpost-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("backup dir {} is not writable", s.dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    if let Some(p) = &s.passphrase_file {
        let abs =
            std::path::absolute(p).with_context(|| format!("passphrase file {}", p.display()))?;
        backup::read_passphrase(&abs)?;
        s.passphrase_file = Some(abs);
    }
    Ok(s)
}

async fn verify(
    file: &Path,
    passphrase_file: Option<&Path>,
    expect_ca: Option<&Path>,
    json: bool,
) -> Result<()> {
    let passphrase = passphrase_file.map(backup::read_passphrase).transpose()?;
    let ca = expect_ca
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the expected CA certificate {}", p.display()))
        })
        .transpose()?;
    let c = backup::check_file(
        file,
        passphrase.as_deref().map(|p| p.as_str()),
        ca.as_deref(),
    )
    .await
    .with_context(|| format!("backup {} does not verify", file.display()))?;
    if json {
        let mut v = serde_json::to_value(&c)?;
        // The sealed key's ciphertext and the certificate are not a report.
        if let Some(h) = v.get_mut("header").and_then(|h| h.as_object_mut()) {
            h.remove("ca_key");
            h.remove("ca_cert_pem");
            h.remove("signature");
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let h = &c.header;
    println!("backup {}: OK", file.display());
    println!("  cluster:   {} ({})", h.cluster_id, h.cluster_name);
    println!(
        "  made:      {} by node {} (outpost {}){}",
        format_ms(h.created_ms),
        h.node_id,
        h.outpost_version,
        if h.current {
            ""
        } else {
            "; the node could not confirm it was current"
        }
    );
    println!(
        "  state:     {} bytes, sha256 {}: opens, quick_check ok, schema {}, entry {}",
        h.state_bytes, h.state_sha256, h.schema_version, c.state_applied_index
    );
    println!(
        "  signature: {}",
        if c.signature_checked {
            "made by the expected CA; unchanged since"
        } else if h.signature.is_some() {
            "present, NOT CHECKED (give --expect-ca ca.crt)"
        } else {
            "none (format 1)"
        }
    );
    println!(
        "  CA key:    {}",
        match (&h.ca_key, c.ca_key_unsealed) {
            (Some(_), true) => "sealed; the passphrase opens it and it belongs to the CA",
            (Some(_), false) => "sealed, NOT CHECKED (give --passphrase-file)",
            (None, _) => "not included (a restore needs --new-ca)",
        }
    );
    println!("  size:      {} bytes", c.bytes);
    Ok(())
}
