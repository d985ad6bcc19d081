//! Offline recovery of a site: `restore` makes a new one-node cluster from a backup file, and
//! `recover` reforms the cluster of a stopped survivor around it after quorum is lost for
//! good. Both hold the data directory's lock, so neither runs beside a node, and both change
//! the cluster the same way (`outpost_raft::offline::reform`): a membership of this node alone
//! and a `ReformCluster` command in the log, applied and audited when the node starts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use outpost_certs::CertAuthority;
use outpost_raft::PeerNode;
use outpost_raft::offline::{self, Reform, Reformed};
use outpost_storage::{Command, Envelope};
use zeroize::Zeroizing;

use crate::node::{NodeSpec, VERSION};
use crate::shared::backup::{self, BackupHeader};
use crate::shared::datadir::DataDir;

pub struct RestoreOptions {
    pub backup: PathBuf,
    pub passphrase: Option<Zeroizing<String>>,
    /// Start a new CA although the backup holds the sealed CA key.
    pub new_ca: bool,
    /// The CA certificate (PEM) whose signature the backup must carry (`--expect-ca`); none:
    /// the file is trusted as it is.
    pub expect_ca: Option<String>,
    pub node: NodeSpec,
}

/// What `restore` did.
pub struct Restored {
    pub header: BackupHeader,
    pub node_id: u64,
    /// A new CA was made: every client must enroll again.
    pub new_ca: bool,
    pub reformed: Reformed,
}

/// `outpost restore`: a new one-node cluster in `dd` from a backup file, with the backup's
/// cluster id and (when its key is in the backup and the passphrase opens it) its CA.
pub async fn restore(dd: &DataDir, opts: RestoreOptions) -> Result<Restored> {
    // Reading the whole file (its SHA-256) is blocking work.
    let file = opts.backup.clone();
    let opened = tokio::task::spawn_blocking(move || backup::read_header(&file)).await??;
    let header = opened.header;
    if let Some(ca_pem) = &opts.expect_ca {
        backup::verify(&header, ca_pem)
            .with_context(|| format!("checking {}", opts.backup.display()))?;
    }
    let (ca, new_ca) = match (&header.ca_key, &opts.passphrase, opts.new_ca) {
        (Some(sealed), Some(pass), false) => {
            let key = backup::unseal(sealed, pass, &header.cluster_id, &header.state_sha256)?;
            let key = Zeroizing::new(
                String::from_utf8(key.to_vec()).context("the CA key in the backup is not text")?,
            );
            let ca = CertAuthority::from_pem(&header.ca_cert_pem, &key)
                .context("the CA key in the backup does not belong to its CA certificate")?;
            (ca, false)
        }
        (Some(_), None, false) => bail!(
            "this backup holds the cluster's CA key, sealed with a passphrase: give \
             --passphrase-file F to keep the CA (every enrolled client keeps working), or \
             --new-ca to start a new CA (every client must enroll again)"
        ),
        (None, Some(_), _) => bail!(
            "this backup holds no CA key (it was made without a passphrase), so a passphrase \
             opens nothing: leave out --passphrase-file and give --new-ca to start a new CA \
             (every client must enroll again)"
        ),
        (None, None, false) => bail!(
            "this backup holds no CA key (it was made without a passphrase): give --new-ca to \
             restore it with a new CA (every client must enroll again)"
        ),
        (_, _, true) => (
            CertAuthority::generate(&header.cluster_id, &header.cluster_name)
                .context("creating a new cluster CA")?,
            true,
        ),
    };

    dd.create()?;
    let _lock = dd.lock()?;
    let leftovers: Vec<String> = std::fs::read_dir(&dd.root)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "node.lock")
        .collect();
    if !leftovers.is_empty() {
        bail!(
            "{} is not empty (it holds {}): restore into a new or empty directory",
            dd.root.display(),
            leftovers.join(", ")
        );
    }
    // The state section into its own file, which storage verifies while importing it.
    let snapshot = dd.root.join("restore-state.tmp");
    {
        let (file, offset, to) = (opts.backup.clone(), opened.state_offset, snapshot.clone());
        tokio::task::spawn_blocking(move || backup::copy_section(&file, offset, &to)).await??;
    }
    let imported = offline::import_state(&dd.root, &snapshot).await;
    let _ = std::fs::remove_file(&snapshot);
    let applied = imported.context("restoring the state from the backup")?;
    if applied.map(|l| l.index) != Some(header.applied_index) {
        bail!(
            "the backup's state holds entry {:?}, its header says {}: refusing a mismatched backup",
            applied.map(|l| l.index),
            header.applied_index
        );
    }
    let root = dd.root.clone();
    let node_id = tokio::task::spawn_blocking(move || next_node_id(&root)).await??;

    let validity = crate::api::nodes::node_validity(outpost_raft::now_ms() / 1000);
    let (cert, key) =
        ca.issue_node_with_new_key(node_id, &[opts.node.api_addr.as_str()], &validity)?;
    outpost_certs::write_public_file(&dd.ca_cert(), ca.cert_pem().as_bytes())?;
    outpost_certs::write_secret_file(&dd.ca_key(), ca.key_pem().as_bytes())?;
    outpost_certs::write_public_file(&dd.node_cert(), cert.as_bytes())?;
    outpost_certs::write_secret_file(&dd.node_key(), key.as_bytes())?;

    let me = opts.node.peer();
    let commands = vec![
        Command::AddNode {
            id: node_id,
            name: me.name.clone(),
            api_addr: me.api_addr.clone(),
            peer_addr: me.peer_addr.clone(),
            version: VERSION.to_string(),
        },
        Command::ReformCluster {
            keep: node_id,
            ca_cert_pem: new_ca.then(|| ca.cert_pem().to_string()),
            reason: "restore".into(),
        },
    ];
    let reformed = reform(&dd.root, node_id, me, "restore", commands).await?;
    // node.toml last: its presence marks a complete data directory.
    dd.save_node_file(&opts.node.file(header.cluster_id.clone(), node_id))?;
    Ok(Restored {
        header,
        node_id,
        new_ca,
        reformed,
    })
}

/// What `recover` did.
pub struct Recovered {
    pub node_id: u64,
    pub reformed: Reformed,
}

/// `outpost recover --force-new-cluster`: this stopped node becomes the only member; every
/// entry it holds is kept.
pub async fn recover(dd: &DataDir) -> Result<Recovered> {
    dd.check()?;
    let _lock = dd.lock()?;
    let file = dd.load_node_file()?;
    let me = PeerNode {
        name: file.name.clone(),
        api_addr: file.api_addr.clone(),
        peer_addr: file.peer_addr.clone(),
    };
    let commands = vec![Command::ReformCluster {
        keep: file.node_id,
        ca_cert_pem: None,
        reason: "recover".into(),
    }];
    let reformed = reform(&dd.root, file.node_id, me, "recover", commands).await?;
    if !reformed.former_members.contains(&file.node_id) && !reformed.former_members.is_empty() {
        tracing::warn!(
            node = file.node_id,
            "this node was not a member of the membership it recovered from"
        );
    }
    Ok(Recovered {
        node_id: file.node_id,
        reformed,
    })
}

/// The members other than `me` that a reform left behind.
pub fn others(reformed: &Reformed, me: u64) -> BTreeSet<u64> {
    reformed
        .former_members
        .iter()
        .copied()
        .filter(|id| *id != me)
        .collect()
}

async fn reform(
    root: &Path,
    me: u64,
    node: PeerNode,
    actor: &str,
    commands: Vec<Command>,
) -> Result<Reformed> {
    let at_ms = outpost_raft::now_ms();
    let envelopes = commands
        .into_iter()
        .map(|command| Envelope {
            at_ms,
            actor: actor.to_string(),
            command,
        })
        .collect();
    let root = root.to_path_buf();
    let reformed = tokio::task::spawn_blocking(move || {
        offline::reform(
            &root,
            Reform {
                me,
                node,
                envelopes,
            },
        )
    })
    .await??;
    Ok(reformed)
}

fn next_node_id(root: &Path) -> Result<u64> {
    let id = offline::read_state(root, |r| r.next_node_id())?;
    if id == 0 {
        bail!("the restored state has no node id counter");
    }
    Ok(id)
}
