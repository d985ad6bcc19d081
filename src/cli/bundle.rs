//! `outpost bundle`: authoring commands that need no cluster (keygen, create, sign, inspect,
//! verify), and on a node's host `import` and `list`.
//!
//! Import runs in the `outpost bundle import` process on the node's host, beside the node:
//! it asks the node (Unix socket) for the import context (trust, floors, cluster time floor),
//! streams the file once through `outpost_bundles::import_file` into the node's blob store
//! (the store's lock file keeps writers apart), then asks the node to commit the bundle in one
//! Raft command (`api::bundles`). Anything refused leaves nothing: the crate removes what it
//! stored on error, and blobs of a refused commit are collected at once (and at every
//! start-up).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use outpost_bundles::{
    BlobStore, BundleType as WireBundleType, ChannelFloor, ImportContext, ImportOutcome, Limits,
    PayloadKind, Progress, PublicKey, TrustDocument, VerifiedBundle, VerifyOptions,
};

use clap::Subcommand;

use super::{DataDirArg, Remote, api};
use crate::shared::client::{ApiClient, NO_BODY};
use crate::wire::{BundleCommit, BundleCommitted, BundleContext, BundleList, MAX_CONFIG_PAYLOAD};

#[derive(Subcommand, Debug)]
pub(super) enum BundleCmd {
    /// Make an Ed25519 signing key: KEY (secret, mode 0600) and KEY.pub.
    Keygen {
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Build and sign a bundle from a TOML spec (payload paths relative to the spec);
    /// `--key KEY` is the signing key.
    Create {
        #[arg(long)]
        spec: PathBuf,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Add the signature of `--key KEY` to a bundle (m-of-n thresholds).
    Sign { file: PathBuf },
    /// Show a bundle's manifest and signers (signatures not checked).
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle against trusted public keys: signatures, expiry, every payload's hash.
    Verify {
        file: PathBuf,
        /// Trusted public key (repeatable).
        #[arg(long = "trust")]
        trust: Vec<PathBuf>,
        /// Signatures needed (default 1).
        #[arg(long)]
        threshold: Option<usize>,
        /// Also check the bundle targets this cluster id.
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Import a bundle on this node's host: verify, store, commit through Raft.
    Import {
        file: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
        /// Do not start a rolling upgrade of the nodes to the bundle's outpost-release payload
        /// (it stays deployable to agents; importing the bundle again starts the roll).
        #[arg(long)]
        no_roll: bool,
    },
    /// Every imported bundle, its payloads, and which nodes hold each blob.
    List {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(remote: &Remote, cmd: BundleCmd) -> Result<()> {
    match cmd {
        BundleCmd::Keygen { out } => keygen(&out),
        BundleCmd::Create { spec, out } => {
            let key = remote
                .key
                .clone()
                .context("bundle create needs the signing key: --key KEY")?;
            create(&spec, &[key], &out)
        }
        BundleCmd::Sign { file } => {
            let key = remote
                .key
                .clone()
                .context("bundle sign needs the signing key: --key KEY")?;
            sign(&file, &key)
        }
        BundleCmd::Inspect { file, json } => inspect(&file, json),
        BundleCmd::Verify {
            file,
            trust,
            threshold,
            cluster,
            json,
        } => verify(&file, &trust, threshold, cluster, json),
        BundleCmd::Import { file, dir, no_roll } => {
            if remote.server.is_some() {
                bail!(
                    "bundle import runs on a node's host (its blob store is local); drop --server"
                );
            }
            check_node_dir(&dir.data_dir)?;
            import(&api(remote, &dir)?, &dir.data_dir, &file, !no_roll).await
        }
        BundleCmd::List { dir, json } => list_cmd(&api(remote, &dir)?, json).await,
    }
}

// ---- authoring (no cluster needed) -----------------------------------------------------

pub fn keygen(out: &Path) -> Result<()> {
    let public = outpost_bundles::keygen(out)?;
    println!(
        "wrote {} (secret, mode 0600) and {}\nkey id {}",
        out.display(),
        outpost_bundles::public_key_path(out).display(),
        public.key_id()
    );
    Ok(())
}

pub fn create(spec: &Path, keys: &[PathBuf], out: &Path) -> Result<()> {
    if keys.is_empty() {
        bail!("give at least one --key to sign the bundle with");
    }
    let keys = keys
        .iter()
        .map(|k| outpost_bundles::load_signing_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let m = outpost_bundles::create_bundle(spec, &keys, out, crate::shared::now_secs())?;
    let bytes: u64 = m.payloads.iter().map(|p| p.size).sum();
    println!(
        "wrote {}: bundle {}, {} payload(s), {bytes} bytes, signed by {} key(s)",
        out.display(),
        m.id,
        m.payloads.len(),
        keys.len()
    );
    Ok(())
}

pub fn sign(file: &Path, key: &Path) -> Result<()> {
    let key = outpost_bundles::load_signing_key(key)?;
    let entry = outpost_bundles::sign_bundle(file, &key)?;
    println!("{} signed by key {}", file.display(), entry.key_id);
    Ok(())
}

pub fn inspect(file: &Path, json: bool) -> Result<()> {
    let i = outpost_bundles::inspect_file(file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        print!("{}", i.to_text());
    }
    Ok(())
}

pub fn verify(
    file: &Path,
    trust: &[PathBuf],
    threshold: Option<usize>,
    cluster: Option<String>,
    json: bool,
) -> Result<()> {
    if trust.is_empty() {
        bail!("give the trusted public keys with --trust KEY.pub (repeatable)");
    }
    let keys = trust
        .iter()
        .map(|k| outpost_bundles::load_public_key(k))
        .collect::<Result<Vec<PublicKey>, _>>()?;
    let n = keys.len();
    let doc = TrustDocument::initial(keys, threshold.unwrap_or(1).min(n.max(1)))?;
    let opts = VerifyOptions {
        trust: doc,
        cluster_id: cluster,
        time_floor: Some(crate::shared::now_secs()),
        limits: Limits::default(),
    };
    let v = outpost_bundles::verify_file(file, &opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: good: bundle {}, {} payload(s) verified, signed by {}",
            file.display(),
            v.manifest.id,
            v.payloads.len(),
            v.signers.join(", ")
        );
    }
    Ok(())
}

/// The trust pinned by `outpost init --bundle-trust KEY.pub... --bundle-threshold M`, as JSON.
pub fn initial_trust(keys: &[PathBuf], threshold: Option<usize>) -> Result<Option<(u64, String)>> {
    if keys.is_empty() {
        if threshold.is_some() {
            bail!("--bundle-threshold needs --bundle-trust KEY.pub");
        }
        return Ok(None);
    }
    let public = keys
        .iter()
        .map(|k| outpost_bundles::load_public_key(k))
        .collect::<Result<Vec<PublicKey>, _>>()?;
    let doc = TrustDocument::initial(public, threshold.unwrap_or(1))?;
    Ok(Some((doc.version, serde_json::to_string(&doc)?)))
}

// ---- import -------------------------------------------------------------------------------

/// `outpost bundle import FILE`: verify and store on this host's node, then commit.
pub async fn import(api: &ApiClient, data_dir: &Path, file: &Path, roll: bool) -> Result<()> {
    // The payloads are written into the node's blob store by this process.
    crate::shared::datadir::DataDir::new(data_dir).check_owner()?;
    let ctx: BundleContext = api
        .call(hyper::Method::GET, "/v1/bundles/context", NO_BODY)
        .await
        .context("asking the node for the import context")?;
    let import_ctx = ImportContext {
        trust: ctx.trust.clone(),
        cluster_id: ctx.cluster_id.clone(),
        channel_floors: ctx
            .channels
            .iter()
            .map(|(name, version, sha)| {
                (
                    name.clone(),
                    ChannelFloor {
                        version: *version,
                        manifest_sha256: sha.clone(),
                    },
                )
            })
            .collect(),
        time_floor: ctx.time_floor,
        limits: Limits::default(),
    };
    let store_dir = data_dir.join("blobs");
    let path = file.to_path_buf();
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        let store = BlobStore::open(&store_dir)?;
        let mut bar = ProgressLine::new();
        let r = outpost_bundles::import_file(&path, &store, &import_ctx, &mut |p| bar.update(p));
        bar.finish();
        r.map_err(anyhow::Error::from)
    })
    .await
    .context("import thread")?
    .with_context(|| format!("bundle {} refused", file.display()))?;
    let vb = match outcome {
        ImportOutcome::AlreadyImported { id, .. } => {
            println!("bundle {id} is already imported: nothing to do");
            return Ok(());
        }
        ImportOutcome::Imported(vb) => vb,
    };
    let secs = started.elapsed().as_secs_f64();
    let bytes: u64 = vb.payloads.iter().map(|p| p.size).sum();
    let committed: Result<BundleCommitted> = async {
        let body = commit_body(&vb, roll)?;
        api.call(hyper::Method::POST, "/v1/bundles", Some(&body))
            .await
    }
    .await;
    match committed {
        Ok(c) => {
            let what = match (&vb.manifest.channel, vb.manifest.bundle_type) {
                (_, WireBundleType::Trust) => format!("trust version {}", vb.manifest.version),
                (Some(c), _) => format!("channel {c} version {}", vb.manifest.version),
                (None, _) => format!("version {}", vb.manifest.version),
            };
            if c.imported {
                println!(
                    "imported bundle {}: {what}, {} payload(s), {bytes} bytes in {secs:.1} s ({:.0} MiB/s); other nodes fetch the blobs now",
                    vb.manifest.id,
                    vb.payloads.len(),
                    bytes as f64 / 1048576.0 / secs.max(1e-6)
                );
            } else {
                println!(
                    "bundle {} is already imported: nothing to do",
                    vb.manifest.id
                );
            }
            if let Some(sha) = &c.roll {
                println!(
                    "release {sha}: a rolling upgrade of every node runs now (followers first, the leader last); follow it with: outpost upgrade status"
                );
            }
            if let Some(why) = &c.roll_refused {
                println!("the release's rolling upgrade did not start: {why}");
            }
            Ok(())
        }
        Err(e) => {
            // The blobs stored for a refused bundle must not stay behind.
            let _ = api
                .call::<serde_json::Value>(hyper::Method::POST, "/v1/bundles/gc", NO_BODY)
                .await;
            Err(e.context(format!("bundle {} refused by the cluster", vb.manifest.id)))
        }
    }
}

/// The commit request for a verified bundle: its exact signed bytes. The `config` payloads
/// are parsed here first only to refuse a bad one before the node is asked.
fn commit_body(vb: &VerifiedBundle, roll: bool) -> Result<BundleCommit> {
    use base64::Engine;
    for p in vb.payloads.iter().filter(|p| p.kind == PayloadKind::Config) {
        if p.size > MAX_CONFIG_PAYLOAD {
            bail!(
                "config payload {} is {} bytes, at most {MAX_CONFIG_PAYLOAD} allowed",
                p.name,
                p.size
            );
        }
        let path = p
            .path
            .as_ref()
            .with_context(|| format!("config payload {} was not stored", p.name))?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("config payload {} is not UTF-8 text", p.name))?;
        for (scope, key, value) in outpost_storage::parse_config_payload(&text)
            .map_err(|e| anyhow!("config payload {}: {e}", p.name))?
        {
            outpost_storage::check_retention_entry(&scope, &key, &value)
                .map_err(|e| anyhow!("config payload {}: {e}", p.name))?;
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(BundleCommit {
        manifest: b64.encode(&vb.manifest_bytes),
        signatures: b64.encode(&vb.signature_bytes),
        roll,
    })
}

pub async fn list_cmd(api: &ApiClient, json: bool) -> Result<()> {
    let v: BundleList = api.call(hyper::Method::GET, "/v1/bundles", NO_BODY).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if v.bundles.is_empty() {
        println!("no bundles imported");
        return Ok(());
    }
    let name_of = |id: u64| {
        v.nodes
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| format!("node{id}"))
    };
    for b in &v.bundles {
        println!(
            "{} {} {} v{}  created {}  expires {}  signed by {}",
            b.id,
            b.bundle_type.as_str(),
            b.channel.as_deref().unwrap_or("-"),
            b.version,
            outpost_bundles::format_time(b.created),
            outpost_bundles::format_time(b.expires),
            b.signers.len()
        );
        for p in &b.payloads {
            let held: Vec<String> = p.held_by.iter().map(|n| name_of(*n)).collect();
            println!(
                "  {:<24} {:<15} {:>12} bytes  {}  on {}/{}: {}",
                p.name,
                p.kind,
                p.size,
                &p.sha256[..16.min(p.sha256.len())],
                p.held_by.len(),
                v.nodes.len(),
                held.join(", ")
            );
        }
    }
    Ok(())
}

/// Import progress: a redrawn line on a terminal, a plain line every 10% otherwise.
struct ProgressLine {
    tty: bool,
    started: Instant,
    last_decile: u64,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_decile: 0,
            last_draw: None,
            drawn: false,
        }
    }

    fn update(&mut self, p: Progress) {
        let text = progress_text(p, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        if self.tty {
            if self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
            {
                return;
            }
            self.last_draw = Some(Instant::now());
            self.drawn = true;
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
        } else if let Some(total) = p.total.filter(|t| *t > 0) {
            let decile = p.done.saturating_mul(10) / total;
            if decile > self.last_decile {
                self.last_decile = decile;
                let _ = writeln!(err, "{text}");
            }
        }
    }

    fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// "importing: 512.0/1024.0 MiB (50%), 410 MiB/s, ETA 1 s". Pure.
fn progress_text(p: Progress, elapsed: Duration) -> String {
    let mib = |b: u64| b as f64 / 1048576.0;
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = mib(p.done) / secs;
    match p.total {
        Some(total) if total > 0 => {
            let pct = p.done.saturating_mul(100) / total;
            let left = mib(total.saturating_sub(p.done));
            let eta = if rate > 0.0 {
                format!("{:.0} s", left / rate)
            } else {
                "?".into()
            };
            format!(
                "importing: {:.1}/{:.1} MiB ({pct}%), {rate:.0} MiB/s, ETA {eta}",
                mib(p.done),
                mib(total)
            )
        }
        _ => format!("importing: {:.1} MiB, {rate:.0} MiB/s", mib(p.done)),
    }
}

/// Errors a user sees carry the cause chain; refuse early when the data dir is not a node's.
pub fn check_node_dir(data_dir: &Path) -> Result<()> {
    if !data_dir.join("node.toml").is_file() {
        return Err(anyhow!(
            "{} is not a node's data directory (no node.toml); import runs on a node's host with --data-dir",
            data_dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_texts() {
        let cases = [
            (
                Progress {
                    done: 512 << 20,
                    total: Some(1 << 30),
                },
                2,
                "importing: 512.0/1024.0 MiB (50%), 256 MiB/s, ETA 2 s",
            ),
            (
                Progress {
                    done: 1 << 20,
                    total: None,
                },
                1,
                "importing: 1.0 MiB, 1 MiB/s",
            ),
            (
                Progress {
                    done: 0,
                    total: Some(10),
                },
                1,
                "importing: 0.0/0.0 MiB (0%), 0 MiB/s, ETA ?",
            ),
        ];
        for (p, secs, want) in cases {
            assert_eq!(progress_text(p, Duration::from_secs(secs)), want);
        }
    }
}
