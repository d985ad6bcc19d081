//! `outpost backup`, `outpost restore` and `outpost recover --force-new-cluster`: taking the
//! replicated state away, and making a cluster again from a backup or from one survivor.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::node::{Addrs, NetArgs};
use super::{DataDirArg, Remote, api};
use crate::shared::backup;
use crate::shared::datadir::DataDir;
use crate::shared::text::format_ms;
use crate::wire::BackupRequest;

/// Largest backup accepted from a node.
const MAX_BACKUP_BYTES: u64 = 256 << 30;

/// `outpost backup -o FILE [--passphrase-file F]`.
pub(super) async fn backup(
    remote: &Remote,
    dir: DataDirArg,
    output: PathBuf,
    passphrase_file: Option<PathBuf>,
) -> Result<()> {
    let passphrase = passphrase_file
        .as_deref()
        .map(backup::read_passphrase)
        .transpose()?;
    if output.exists() {
        bail!(
            "{} exists: choose a new file (a backup never overwrites one)",
            output.display()
        );
    }
    let partial = partial_path(&output);
    let _ = std::fs::remove_file(&partial);
    // Owner-only from the first byte (the file holds password hashes and, sealed, the CA
    // key): created here 0600, then written into and renamed, which keeps the mode.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
    }
    let mut client = api(remote, &dir)?;
    client.set_timeout(Duration::from_secs(600));
    let started = Instant::now();
    eprintln!(
        "backup: asking {} for a consistent copy of the state{}",
        client.endpoint(),
        if passphrase.is_some() {
            " with the CA key sealed by the passphrase"
        } else {
            " (no passphrase: the CA key is left out)"
        }
    );
    let req = BackupRequest {
        passphrase: passphrase.as_ref().map(|p| p.to_string()),
    };
    let progress = spawn_progress(partial.clone());
    let got = client
        .post_into_file("/v1/backup", &req, &partial, MAX_BACKUP_BYTES)
        .await;
    progress.abort();
    if let Err(e) = got {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context("making the backup"));
    }
    let checked = match backup::read_header(&partial) {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context("checking the backup received"));
        }
    };
    std::fs::rename(&partial, &output)
        .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    let h = checked.header;
    let size = std::fs::metadata(&output)?.len();
    println!("backup: {}", output.display());
    println!("  cluster:   {} ({})", h.cluster_id, h.cluster_name);
    println!(
        "  state:     entry {} (term {}), schema {}, {} clients",
        h.applied_index, h.applied_term, h.schema_version, h.clients
    );
    println!("  made:      {} by node {}", h.created, h.node_id);
    if !h.current {
        eprintln!(
            "backup: WARNING: node {} could not confirm with a quorum that it held every \
             acknowledged write; the backup holds what it had applied",
            h.node_id
        );
    }
    println!("  size:      {size} bytes, state sha256 {}", h.state_sha256);
    println!(
        "  CA key:    {}",
        if h.ca_key.is_some() {
            "sealed with the passphrase (argon2id + xchacha20poly1305)"
        } else {
            "not included (a restore makes a new CA; clients enroll again)"
        }
    );
    eprintln!("backup: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// Prints the bytes received so far every two seconds (stderr) until aborted.
fn spawn_progress(path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tick.tick().await;
            let n = tokio::fs::metadata(&path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            eprintln!("backup: {:.1} MiB received", n as f64 / (1 << 20) as f64);
        }
    })
}

/// `outpost restore FILE --data-dir D --name N --api-addr A --peer-addr P`.
pub(super) async fn restore(
    file: PathBuf,
    dir: DataDirArg,
    addrs: Addrs,
    net: NetArgs,
    passphrase_file: Option<PathBuf>,
    new_ca: bool,
    expect_ca: Option<PathBuf>,
) -> Result<()> {
    let passphrase = passphrase_file
        .as_deref()
        .map(backup::read_passphrase)
        .transpose()?;
    let expect_ca = match &expect_ca {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the expected CA certificate {}", p.display()))?,
        ),
        None => {
            eprintln!(
                "restore: WARNING: no --expect-ca: nothing checks that {} was made by your \
                 cluster or is unchanged since; its contents (accounts, password hashes, \
                 configuration, clients) are TRUSTED AS THEY ARE. Give --expect-ca ca.crt (your \
                 cluster's CA certificate) to refuse an edited backup.",
                file.display()
            );
            None
        }
    };
    let checked = expect_ca.is_some();
    let dd = DataDir::new(&dir.data_dir);
    let started = Instant::now();
    let r = crate::node::recovery::restore(
        &dd,
        crate::node::recovery::RestoreOptions {
            backup: file.clone(),
            passphrase,
            new_ca,
            expect_ca,
            node: addrs.spec(&net)?,
        },
    )
    .await?;
    let h = &r.header;
    println!(
        "restored {} into {} in {:.1} s",
        file.display(),
        dd.root.display(),
        started.elapsed().as_secs_f64()
    );
    println!("  cluster:   {} ({})", h.cluster_id, h.cluster_name);
    if checked {
        println!("  signature: made by the expected CA; the file is unchanged since");
    } else {
        println!("  signature: NOT CHECKED (no --expect-ca): the file was trusted as it is");
    }
    println!(
        "  state:     entry {} (term {}) made {} by node {}; {} clients",
        h.applied_index,
        h.applied_term,
        format_ms(h.created_ms),
        h.node_id,
        h.clients
    );
    println!(
        "  this node: id {} ({}), the only member; former nodes {:?} are marked removed",
        r.node_id,
        addrs.name,
        crate::node::recovery::others(&r.reformed, r.node_id)
    );
    if h.channels.is_empty() {
        println!("  bundle channel floors: none (no bundle was imported)");
    } else {
        println!("  bundle channel floors (an older bundle stays refused):");
        for (channel, version) in &h.channels {
            println!("    {channel}: version {version}");
        }
    }
    println!(
        "  bundle time floor: {}",
        format_ms(h.bundle_time_floor.saturating_mul(1000))
    );
    if r.new_ca {
        println!(
            "  CA: NEW. The backup's CA key was not used, so certificates of the old CA are not \
             accepted: every client must enroll again (outpost token create --kind client), \
             and admins need new certificates (outpost admin issue-cert)."
        );
    } else {
        println!("  CA: the backup's own; enrolled clients and admin certificates keep working.");
    }
    println!("next:");
    println!(
        "  outpost serve --data-dir {}      # start it",
        dd.root.display()
    );
    println!(
        "  outpost token create --kind node   # then `outpost join` on each new node (fresh data dirs)"
    );
    println!(
        "  bundle payloads (blobs) are not in a backup: import the bundles again from their USB sticks \
         where deployments need their files"
    );
    Ok(())
}

/// `outpost recover --force-new-cluster --data-dir D`.
pub(super) async fn recover(dir: DataDirArg, force_new_cluster: bool) -> Result<()> {
    if !force_new_cluster {
        bail!(
            "recover makes this node the only member of a new cluster, from everything it holds; \
             it is for a cluster that lost its quorum for good. Say so with --force-new-cluster"
        );
    }
    let dd = DataDir::new(&dir.data_dir);
    let r = crate::node::recovery::recover(&dd).await?;
    let others = crate::node::recovery::others(&r.reformed, r.node_id);
    println!(
        "recovered: node {} is now the only member of its cluster",
        r.node_id
    );
    println!(
        "  kept every entry it held: log up to entry {}, state applied up to {}",
        r.reformed.last_log_index,
        r.reformed
            .last_applied
            .map(|l| l.index.to_string())
            .unwrap_or_else(|| "nothing".into())
    );
    println!(
        "  former members {:?} are marked removed when it starts (audited as cluster.reform)",
        others
    );
    println!("next:");
    println!(
        "  outpost serve --data-dir {}   # start it; it elects itself and takes writes",
        dd.root.display()
    );
    if !others.is_empty() {
        println!(
            "  on each former node: stop it and wipe its data directory; it is refused by this node \
             if it comes back as it was. Do not start two former nodes together: they could still \
             form a majority of the old membership between themselves."
        );
        println!(
            "  then: outpost token create --kind node, and outpost join on a fresh data directory"
        );
    }
    Ok(())
}
