//! The agent without a node: the bundle trust it pins, `outpost agent install FILE.obundle`
//! (Mender's standalone mode), the channel floors it keeps, and the record of what it
//! installed, which reaches the cluster as inventory facts at the next good sync.
//!
//! Files in the state dir `S`, each written whole (temp, fsync, rename):
//! - `bundle-trust.json`: the cluster's bundle trust (`wire::AgentTrust`), pinned at
//!   enrollment and replaced at a sync when the cluster's trust version grew (over the
//!   agent's mTLS connection) or by a trust bundle installed from a file (verified against the
//!   pinned root keys by the bundle crate);
//! - `channels.json`: per channel the highest version installed from a file here, and the
//!   newest `created` accepted (the agent's time floor, with its own clock);
//! - `offline-installs.json`: the last `KEPT_INSTALLS` payload results of `agent install`.
//!
//! A bundle is read once through `outpost_bundles::import_file` into a blob store of the
//! agent's own (`S/bundles`): signatures against the pinned trust, target (this cluster),
//! expiry, the channel floor, then every payload streamed, size-checked and hashed, with the
//! sum of the payloads capped by the free space of `S`. Then `artifact` payloads go to their
//! handler (`agent.handler.<kind>` of the last synced configuration), an `outpost-release`
//! through the self-upgrade (`release`, proved offline), and `config` payloads are skipped:
//! a client's configuration is the cluster's merge of scopes (global < group < client), which
//! a single machine cannot redo; the cluster delivers it at the next sync.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use outpost_bundles::{
    BlobStore, BundleError, BundleType, ChannelFloor, ImportContext, ImportOutcome, Limits,
    PayloadKind, VerifiedBundle,
};
use serde::{Deserialize, Serialize};

use crate::agent::deployments::{Job, run_handler};
use crate::agent::release;
use crate::shared::files::rename_durably;
use crate::shared::text::tail;
use crate::wire::AgentTrust;

/// How many offline payload results the agent keeps (and reports as facts).
pub const KEPT_INSTALLS: usize = 20;
/// Longest detail kept per offline result.
pub const DETAIL_BYTES: usize = 500;
/// Left free in the state dir's file system after a bundle's payloads.
const FREE_RESERVE: u64 = 64 << 20;

fn trust_path(dir: &Path) -> PathBuf {
    dir.join("bundle-trust.json")
}
fn channels_path(dir: &Path) -> PathBuf {
    dir.join("channels.json")
}
fn installs_path(dir: &Path) -> PathBuf {
    dir.join("offline-installs.json")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrustFile {
    format: u32,
    #[serde(flatten)]
    pinned: AgentTrust,
}

/// The bundle trust pinned in `dir`, if any.
pub fn pinned_trust(dir: &Path) -> Result<Option<AgentTrust>> {
    let path = trust_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let f: TrustFile =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    if f.format != 1 {
        bail!(
            "{} has format {}; this agent reads format 1",
            path.display(),
            f.format
        );
    }
    Ok(Some(f.pinned))
}

/// Pins `t` unless the pinned trust is as new or newer (a trust version never goes back).
/// Returns whether it was written.
pub fn pin_trust(dir: &Path, t: &AgentTrust) -> Result<bool> {
    if let Some(have) = pinned_trust(dir)?
        && have.version >= t.version
    {
        return Ok(false);
    }
    t.trust
        .check()
        .map_err(|e| anyhow!("the cluster's bundle trust: {e}"))?;
    let f = TrustFile {
        format: 1,
        pinned: t.clone(),
    };
    outpost_certs::write_public_file(&trust_path(dir), &serde_json::to_vec_pretty(&f)?)?;
    Ok(true)
}

/// `channels.json`: the agent's own rollback floor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floors {
    pub format: u32,
    /// Per channel, the highest version installed here from a file, with its manifest hash.
    pub channels: BTreeMap<String, ChannelFloor>,
    /// The newest `created` (unix seconds) of a bundle installed here.
    pub newest_created: i64,
}

impl Floors {
    pub fn load(dir: &Path) -> Result<Floors> {
        let path = channels_path(dir);
        match std::fs::read(&path) {
            Ok(b) => {
                let f: Floors = serde_json::from_slice(&b)
                    .with_context(|| format!("parsing {}", path.display()))?;
                if f.format != 1 {
                    bail!(
                        "{} has format {}; this agent reads format 1",
                        path.display(),
                        f.format
                    );
                }
                Ok(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Floors {
                format: 1,
                ..Floors::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, dir: &Path) -> Result<()> {
        outpost_certs::write_public_file(&channels_path(dir), &serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// A bundle whose every payload went in raises its channel's floor (a trust bundle applies
    /// its root-signed resets). Pure.
    pub fn accept(&mut self, vb: &VerifiedBundle) {
        let m = &vb.manifest;
        self.newest_created = self.newest_created.max(m.created);
        match (m.bundle_type, &m.channel) {
            (BundleType::Content, Some(c)) => {
                self.channels.insert(
                    c.clone(),
                    ChannelFloor {
                        version: m.version,
                        manifest_sha256: vb.manifest_sha256.clone(),
                    },
                );
            }
            _ => {
                for (c, v) in &m.channel_resets {
                    self.channels.insert(
                        c.clone(),
                        ChannelFloor {
                            version: *v,
                            manifest_sha256: String::new(),
                        },
                    );
                }
            }
        }
    }
}

/// One payload handled by `agent install`, as it is kept and reported (inventory fact
/// `offline_installs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineInstall {
    pub bundle: String,
    pub channel: String,
    pub version: u64,
    pub payload: String,
    pub kind: String,
    pub sha256: String,
    /// `installed`, `failed` or `skipped` (config payloads).
    pub status: String,
    pub detail: String,
    /// Unix seconds (the agent's clock).
    pub at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct InstallsFile {
    format: u32,
    installs: Vec<OfflineInstall>,
}

/// The offline results kept in `dir`, oldest first.
pub fn offline_installs(dir: &Path) -> Result<Vec<OfflineInstall>> {
    let path = installs_path(dir);
    match std::fs::read(&path) {
        Ok(b) => {
            let f: InstallsFile = serde_json::from_slice(&b)
                .with_context(|| format!("parsing {}", path.display()))?;
            Ok(f.installs)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn record_installs(dir: &Path, new: &[OfflineInstall]) -> Result<()> {
    let mut all = offline_installs(dir)?;
    all.extend(new.iter().cloned());
    let cut = all.len().saturating_sub(KEPT_INSTALLS);
    all.drain(..cut);
    let f = InstallsFile {
        format: 1,
        installs: all,
    };
    outpost_certs::write_public_file(&installs_path(dir), &serde_json::to_vec_pretty(&f)?)?;
    Ok(())
}

/// What one `agent install` did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// `Some(id)` when the very same bundle was installed here before: nothing was done.
    pub already: Option<String>,
    pub results: Vec<OfflineInstall>,
    /// Notes for the operator (skipped config payloads, a trust rotation).
    pub notes: Vec<String>,
    /// An `outpost-release` replaced the agent's binary.
    pub upgraded: bool,
}

/// `outpost agent install FILE`: verifies the bundle with the pinned trust and floors and
/// installs its payloads. The caller holds the state-dir lock.
pub async fn install(
    dir: &Path,
    exe: &Path,
    file: &Path,
    cluster_id: &str,
) -> Result<InstallReport> {
    let trust = pinned_trust(dir)?.with_context(|| {
        format!(
            "{} pins no bundle trust: the agent was enrolled before agents pinned it, or the \
             cluster pins none; sync once with the cluster first",
            dir.display()
        )
    })?;
    let mut floors = Floors::load(dir)?;
    let config: BTreeMap<String, String> = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut limits = Limits::default();
    if let Some(free) = free_bytes(dir) {
        limits.max_total_bytes = limits
            .max_total_bytes
            .min(free.saturating_sub(FREE_RESERVE));
    }
    let ctx = ImportContext {
        trust: trust.trust.clone(),
        cluster_id: cluster_id.to_string(),
        channel_floors: floors.channels.clone(),
        time_floor: crate::shared::now_secs().max(floors.newest_created),
        limits,
    };
    let store_dir = dir.join("bundles");
    let path = file.to_path_buf();
    let (store, outcome) = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = BlobStore::open(&store_dir)?;
        store.clean_tmp()?;
        match outpost_bundles::import_file(&path, &store, &ctx, &mut |_| {}) {
            Ok(outcome) => Ok((store, outcome)),
            Err(e @ BundleError::VersionNotGreater { .. }) => Err(anyhow::Error::from(e).context(
                "this agent installed a newer version of the channel from a file; an older \
                 bundle could bring back what that one replaced (a rollback), so it is refused",
            )),
            Err(e) => Err(e.into()),
        }
    })
    .await
    .context("bundle thread")?
    .with_context(|| format!("bundle {} refused", file.display()))?;
    let vb = match outcome {
        ImportOutcome::AlreadyImported { id, .. } => {
            return Ok(InstallReport {
                already: Some(id),
                results: Vec::new(),
                notes: Vec::new(),
                upgraded: false,
            });
        }
        ImportOutcome::Imported(vb) => vb,
    };
    let r = install_payloads(dir, exe, &vb, &config).await;
    // Whatever happened, the agent's blob store keeps nothing: payloads that went in were
    // moved to S/artifacts, the rest (config payloads, a failure's leftovers) goes now.
    let gc = tokio::task::spawn_blocking(move || store.gc(&BTreeSet::new())).await;
    if let Ok(Err(e)) = gc {
        tracing::warn!(error = %e, "clearing the agent's bundle store");
    }
    let mut report = r?;
    if let (BundleType::Trust, Some(new)) = (vb.manifest.bundle_type, &vb.manifest.trust) {
        // Verified by the crate: signed by the pinned root keys and by its own.
        pin_trust(
            dir,
            &AgentTrust {
                version: new.version,
                trust: new.clone(),
            },
        )?;
        report
            .notes
            .push(format!("bundle trust is now version {}", new.version));
    }
    record_installs(dir, &report.results)?;
    if report.results.iter().all(|r| r.status != "failed") {
        floors.accept(&vb);
        floors.save(dir)?;
    }
    Ok(report)
}

async fn install_payloads(
    dir: &Path,
    exe: &Path,
    vb: &VerifiedBundle,
    config: &BTreeMap<String, String>,
) -> Result<InstallReport> {
    let m = &vb.manifest;
    let origin = format!("offline-{}", m.id);
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    let mut report = InstallReport {
        already: None,
        results: Vec::new(),
        notes: Vec::new(),
        upgraded: false,
    };
    for p in &vb.payloads {
        let (status, detail) = match p.kind {
            PayloadKind::Config => {
                report.notes.push(format!(
                    "config payload {} skipped: an agent's configuration is the cluster's merge of \
                     scopes; it arrives at the next sync once the bundle is imported on a node",
                    p.name
                ));
                (
                    "skipped",
                    "configuration comes from the cluster".to_string(),
                )
            }
            PayloadKind::Artifact | PayloadKind::OutpostRelease => {
                let stored = p
                    .path
                    .as_ref()
                    .with_context(|| format!("payload {} was not stored", p.name))?;
                // Where online artifacts live too; the same bytes may already be there.
                let kept = artifacts.join(&p.sha256);
                rename_durably(stored, &kept)
                    .with_context(|| format!("moving payload {} to {}", p.name, kept.display()))?;
                let (status, detail) = if p.kind == PayloadKind::Artifact {
                    let job = Job {
                        name: &p.name,
                        kind: p.kind.as_str(),
                        version: m.version,
                        sha256: &p.sha256,
                        origin: &origin,
                    };
                    run_handler(config, &job, &kept).await
                } else {
                    let limit = crate::agent::deployments::upgrade_timeout(config);
                    let u = release::install(
                        dir,
                        exe,
                        &kept,
                        &p.sha256,
                        &origin,
                        (release::Proof::Offline, limit),
                    )
                    .await;
                    report.upgraded |= u.replaced;
                    (u.status, u.detail)
                };
                (status.as_str(), detail)
            }
        };
        report.results.push(OfflineInstall {
            bundle: m.id.clone(),
            channel: m.channel.clone().unwrap_or_default(),
            version: m.version,
            payload: p.name.clone(),
            kind: p.kind.as_str().to_string(),
            sha256: p.sha256.clone(),
            status: status.to_string(),
            detail: tail(&detail, DETAIL_BYTES),
            at: crate::shared::now_secs(),
        });
    }
    Ok(report)
}

/// Bytes available to this user in the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs the call fills in.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // The widths of fsblkcnt_t and c_ulong depend on the target.
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_bundles::{Manifest, PayloadEntry, PublicKey, SigningKey, TrustDocument};

    fn trust(version: u64) -> AgentTrust {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let mut doc = TrustDocument::initial(vec![PublicKey::of(&key)], 1).expect("a valid trust");
        doc.version = version;
        AgentTrust {
            version,
            trust: doc,
        }
    }

    #[test]
    fn trust_is_pinned_only_forward() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(pinned_trust(d.path()).expect("read").is_none());
        // (offered version, written, pinned after)
        for (offered, written, after) in [(2, true, 2), (1, false, 2), (2, false, 2), (3, true, 3)]
        {
            assert_eq!(
                pin_trust(d.path(), &trust(offered)).expect("pin"),
                written,
                "{offered}"
            );
            let have = pinned_trust(d.path()).expect("read").expect("pinned");
            assert_eq!(have.version, after);
        }
    }

    fn verified(channel: Option<&str>, version: u64, created: i64) -> VerifiedBundle {
        VerifiedBundle {
            manifest: Manifest {
                format: 1,
                id: "0".repeat(32),
                bundle_type: if channel.is_some() {
                    BundleType::Content
                } else {
                    BundleType::Trust
                },
                channel: channel.map(String::from),
                version,
                created,
                expires: created + 10,
                targets: vec!["any".into()],
                payloads: vec![PayloadEntry {
                    name: "tool".into(),
                    kind: PayloadKind::Artifact,
                    size: 1,
                    sha256: "a".repeat(64),
                }],
                trust: None,
                channel_resets: [("site".to_string(), 1u64)].into_iter().collect(),
            },
            manifest_sha256: format!("m{version}"),
            signers: Vec::new(),
            payloads: Vec::new(),
            manifest_bytes: Vec::new(),
            signature_bytes: Vec::new(),
        }
    }

    #[test]
    fn floors_move_with_accepted_bundles() {
        let mut f = Floors::default();
        // (bundle, site floor after, newest created after)
        let cases = [
            (verified(Some("site"), 3, 100), Some(3), 100),
            (verified(Some("other"), 9, 50), Some(3), 100),
            (verified(Some("site"), 4, 200), Some(4), 200),
            // A trust bundle's root-signed reset.
            (verified(None, 2, 150), Some(1), 200),
        ];
        for (vb, site, created) in cases {
            f.accept(&vb);
            assert_eq!(f.channels.get("site").map(|c| c.version), site);
            assert_eq!(f.newest_created, created);
        }
        assert_eq!(f.channels.get("other").map(|c| c.version), Some(9));
    }

    #[test]
    fn results_keep_the_newest() {
        let d = tempfile::tempdir().expect("tempdir");
        let one = |i: u64| OfflineInstall {
            bundle: "b".into(),
            channel: "site".into(),
            version: i,
            payload: "tool".into(),
            kind: "artifact".into(),
            sha256: "a".repeat(64),
            status: "installed".into(),
            detail: String::new(),
            at: 0,
        };
        let first: Vec<_> = (0..15).map(one).collect();
        record_installs(d.path(), &first).expect("record");
        let more: Vec<_> = (15..30).map(one).collect();
        record_installs(d.path(), &more).expect("record");
        let kept = offline_installs(d.path()).expect("read");
        assert_eq!(kept.len(), KEPT_INSTALLS);
        assert_eq!(kept.first().map(|i| i.version), Some(10));
        assert_eq!(kept.last().map(|i| i.version), Some(29));
    }
}
