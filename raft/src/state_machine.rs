//! The openraft state-machine adapter over `outpost_storage::Store`, and snapshot files.
//!
//! Storage knows nothing of Raft: each apply hands it the entries' payloads plus an opaque
//! marker (last applied log id + membership, bincode) that it commits in the same SQLite
//! transaction, so "what is applied" and "the state" can never disagree after a crash.
//!
//! Snapshots live in `<data>/snapshots/` as `snap-<index>-<term>.snap` (storage's snapshot
//! format) beside `snap-<index>-<term>.meta` (openraft's SnapshotMeta). The `.meta` file is
//! written last, so its presence marks a complete snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use outpost_storage::{StorageError as DbError, Store};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::telemetry::RaftTelemetry;
use crate::types::{
    Entry, LogId, ProposalResponse, Snapshot, SnapshotFile, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};

/// What the state database records as "applied", in the same transaction as the state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AppliedMarker {
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

/// Why this node stopped applying committed entries (e.g. it needs an upgrade), with the
/// storage error that stopped it. Cheap to clone: every refused write carries it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stopped applying: {source}; install a newer outpost release on this node")]
pub struct StoppedApplying {
    #[source]
    source: Arc<DbError>,
}

impl StoppedApplying {
    pub(crate) fn new(source: DbError) -> StoppedApplying {
        StoppedApplying {
            source: Arc::new(source),
        }
    }
}

/// A condition that stopped this node from applying, shown by `status` and returned to
/// writes and reads.
#[derive(Debug, Default)]
pub struct Health {
    fatal: std::sync::Mutex<Option<StoppedApplying>>,
}

impl Health {
    pub fn fatal(&self) -> Option<StoppedApplying> {
        self.fatal
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_fatal(&self, why: StoppedApplying) {
        match self.fatal.lock() {
            Ok(mut g) => *g = Some(why),
            Err(p) => *p.into_inner() = Some(why),
        }
    }
}

pub struct StateMachine {
    store: Store,
    dir: PathBuf,
    counter: Arc<AtomicU64>,
    health: Arc<Health>,
    /// Membership as of the last applied entry; loaded once, then kept current by apply/install.
    membership: Option<StoredMembership>,
    /// Apply and snapshot durations and sizes are observed here.
    telemetry: Arc<RaftTelemetry>,
}

impl StateMachine {
    /// `dir` is the snapshot directory; leftovers of interrupted transfers/builds are removed.
    pub fn new(store: Store, dir: &Path, health: Arc<Health>) -> std::io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(StateMachine {
            store,
            dir: dir.to_path_buf(),
            counter: Arc::new(AtomicU64::new(0)),
            health,
            membership: None,
            telemetry: RaftTelemetry::new(false),
        })
    }

    /// Reports applies and snapshots to `telemetry` (unobserved otherwise).
    pub fn observed(self, telemetry: Arc<RaftTelemetry>) -> StateMachine {
        StateMachine { telemetry, ..self }
    }

    /// A snapshot I/O failure for openraft; `AnyError::new` keeps `e`'s source chain.
    fn snapshot_io<E: std::error::Error + 'static>(e: E) -> StorageError {
        StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
    }
}

fn snapshot_name(meta: &SnapshotMeta) -> String {
    match meta.last_log_id {
        Some(id) => format!("snap-{:020}-{}", id.index, id.leader_id.term),
        None => "snap-empty".to_string(),
    }
}

/// Atomically publishes `data_tmp` as the current snapshot described by `meta`, then removes
/// older snapshots.
fn publish_snapshot(dir: &Path, data_tmp: &Path, meta: &SnapshotMeta) -> std::io::Result<()> {
    let name = snapshot_name(meta);
    let data = dir.join(format!("{name}.snap"));
    std::fs::rename(data_tmp, &data)?;
    let meta_tmp = dir.join(format!("{name}.meta.tmp"));
    let bytes = codec::encode(meta).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&meta_tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&meta_tmp, dir.join(format!("{name}.meta")))?;
    // The directory entry of both renames is durable after this fsync: the snapshot is complete.
    std::fs::File::open(dir)?.sync_all()?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem.starts_with("snap-") && stem != name && !path.to_string_lossy().ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// The newest complete snapshot on disk, if any.
fn current_snapshot(dir: &Path) -> std::io::Result<Option<(SnapshotMeta, PathBuf)>> {
    let mut best: Option<(SnapshotMeta, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "meta") {
            continue;
        }
        let data = path.with_extension("snap");
        if !data.exists() {
            continue;
        }
        let meta: SnapshotMeta = match std::fs::read(&path).map(|b| codec::decode(&b)) {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable snapshot meta");
                continue;
            }
            Err(e) => return Err(e),
        };
        if best
            .as_ref()
            .is_none_or(|(b, _)| meta.last_log_id > b.last_log_id)
        {
            best = Some((meta, data));
        }
    }
    Ok(best)
}

/// Builds a snapshot; returns it with its size in bytes.
async fn build(store: &Store, dir: &Path, n: u64) -> Result<(Snapshot, u64), StorageError> {
    let tmp = dir.join(format!("build-{n}.tmp"));
    let info = store
        .export_snapshot(&tmp)
        .await
        .map_err(StateMachine::snapshot_io)?;
    // openraft purges the log behind the snapshot this returns. state.db commits without an
    // fsync and relies on the log to re-apply what a power cut took away, so everything up to
    // the snapshot (and beyond) is made durable before the log behind it can go.
    store.sync().await.map_err(StateMachine::snapshot_io)?;
    let marker: AppliedMarker = match &info.applied_marker {
        Some(b) => codec::decode(b).map_err(StateMachine::snapshot_io)?,
        None => AppliedMarker::default(),
    };
    let snapshot_id = match marker.last_applied {
        Some(id) => format!(
            "{}-{}-{}",
            id.leader_id.term,
            id.index,
            &info.sha256[..12.min(info.sha256.len())]
        ),
        None => format!("empty-{}", &info.sha256[..12.min(info.sha256.len())]),
    };
    let meta = SnapshotMeta {
        last_log_id: marker.last_applied,
        last_membership: marker.membership,
        snapshot_id,
    };
    let dir2 = dir.to_path_buf();
    let meta2 = meta.clone();
    tokio::task::spawn_blocking(move || publish_snapshot(&dir2, &tmp, &meta2))
        .await
        .map_err(StateMachine::snapshot_io)?
        .map_err(StateMachine::snapshot_io)?;
    let path = dir.join(format!("{}.snap", snapshot_name(&meta)));
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(StateMachine::snapshot_io)?;
    tracing::info!(snapshot = %meta.snapshot_id, bytes = info.size, "snapshot built");
    Ok((
        Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path, file }),
        },
        info.size,
    ))
}

pub struct SnapshotBuilder {
    store: Store,
    dir: PathBuf,
    counter: Arc<AtomicU64>,
    telemetry: Arc<RaftTelemetry>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = self.telemetry.start();
        let (snapshot, bytes) = build(
            &self.store,
            &self.dir,
            self.counter.fetch_add(1, Ordering::Relaxed),
        )
        .await?;
        self.telemetry.snapshot_built(started, bytes);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let raw = self.store.applied_marker().await.map_err(|e| {
            StorageError::from(StorageIOError::read_state_machine(AnyError::new(&e)))
        })?;
        let marker: AppliedMarker = match raw {
            Some(b) => codec::decode(&b)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?,
            None => AppliedMarker::default(),
        };
        self.membership = Some(marker.membership.clone());
        Ok((marker.last_applied, marker.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let membership = match &self.membership {
            Some(m) => m.clone(),
            None => self.applied_state().await?.1,
        };
        let mut marker = AppliedMarker {
            membership,
            ..AppliedMarker::default()
        };
        let mut payloads = Vec::new();
        for entry in entries {
            marker.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => payloads.push(None),
                EntryPayload::Normal(p) => payloads.push(Some(p.0)),
                EntryPayload::Membership(m) => {
                    marker.membership = StoredMembership::new(Some(entry.log_id), m);
                    payloads.push(None);
                }
            }
        }
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let last = marker.last_applied;
        let membership = marker.membership.clone();
        let marker_bytes = codec::encode(&marker)
            .map_err(|e| StorageIOError::write_state_machine(AnyError::new(&e)))?;
        let started = self.telemetry.start();
        let applied = self.store.apply(payloads, marker_bytes).await;
        self.telemetry.applied(started);
        let results = match applied {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "applying committed entries failed; this node stops applying");
                let id = last.unwrap_or_default();
                let err = StorageIOError::apply(id, AnyError::new(&e)).into();
                if let DbError::NeedsUpgrade { .. } = &e {
                    self.health.set_fatal(StoppedApplying::new(e));
                }
                return Err(err);
            }
        };
        self.membership = Some(membership);
        Ok(results
            .into_iter()
            .map(|r| ProposalResponse(r.unwrap_or_default()))
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            dir: self.dir.clone(),
            counter: self.counter.clone(),
            telemetry: self.telemetry.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("recv-{n}.tmp"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(Self::snapshot_io)?;
        Ok(Box::new(SnapshotFile { path, file }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let started = self.telemetry.start();
        let SnapshotFile { path, file } = *snapshot;
        // The received bytes are on disk before storage reads them back.
        file.sync_all().await.map_err(Self::snapshot_io)?;
        let bytes = file.metadata().await.map_or(0, |m| m.len());
        drop(file);
        let marker = self.store.import_snapshot(&path).await.map_err(|e| {
            tracing::error!(error = %e, snapshot = %meta.snapshot_id, "refusing a received snapshot");
            Self::snapshot_io(e)
        })?;
        let found: Option<AppliedMarker> = match marker {
            Some(b) => Some(codec::decode(&b).map_err(Self::snapshot_io)?),
            None => None,
        };
        if found.as_ref().map(|m| m.last_applied) != Some(meta.last_log_id) {
            tracing::warn!(snapshot = %meta.snapshot_id, "snapshot content marker differs from its meta");
        }
        self.membership = Some(
            found
                .map(|m| m.membership)
                .unwrap_or_else(|| meta.last_membership.clone()),
        );
        let dir = self.dir.clone();
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || publish_snapshot(&dir, &path, &meta2))
            .await
            .map_err(Self::snapshot_io)?
            .map_err(Self::snapshot_io)?;
        self.telemetry.snapshot_installed(started, bytes);
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let dir = self.dir.clone();
        let found = tokio::task::spawn_blocking(move || current_snapshot(&dir))
            .await
            .map_err(Self::snapshot_io)?
            .map_err(Self::snapshot_io)?;
        match found {
            None => Ok(None),
            Some((meta, path)) => {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(Self::snapshot_io)?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(SnapshotFile { path, file }),
                }))
            }
        }
    }
}
