//! The node's blob store and its replication: every node pulls the blobs the state refers to
//! from the peers that hold them, by sha256 over the mTLS peer channel, verifies them while
//! writing, and reports what it holds through Raft (`BlobsHeld`), so `bundle list` shows
//! per-node availability. A client asking for a blob this node lacks gets it fetched first.
//!
//! Chunks are asked for with `PeerAsk::Chunk` over the peer channel and answered by
//! `crate::peer_app`. Blob files are read and written on blocking threads; the async side only
//! moves chunks.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use outpost_bundles::{BlobStore, BundleError};
use outpost_raft::{AppCallError, RaftNode};
use outpost_storage::{Command, Envelope};
use tokio::sync::mpsc;

use crate::peer_app::{CHUNK, PeerAsk};

/// Chunk requests in flight per blob transfer.
const IN_FLIGHT: usize = 4;
/// How often the replication loop looks for missing blobs.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// After the applied index moves, wait this long before a pass (batches bursts of commits).
const WAKE_DELAY: Duration = Duration::from_millis(100);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} is not referenced by any bundle of this cluster")]
    Unknown(String),
    #[error("no node could supply blob {sha256}: {reasons}")]
    Unavailable { sha256: String, reasons: String },
    #[error(transparent)]
    Store(#[from] BundleError),
    #[error("reading the state: {0}")]
    State(#[from] outpost_storage::StorageError),
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The node's blob store, shared by the API, the replication loop and the peer handler.
pub struct Blobs {
    store: BlobStore,
    node: RaftNode,
    node_id: u64,
    /// One transfer per blob at a time; callers of the same blob wait for it.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Blobs whose holding this node has already reported (or seen recorded).
    reported: Mutex<BTreeSet<String>>,
    /// Wanted blobs this node still lacked after its last replication pass (`/metrics`).
    missing: std::sync::atomic::AtomicU64,
    /// Bytes of blobs fetched from peers since start (`/metrics`).
    fetched_bytes: std::sync::atomic::AtomicU64,
}

impl Blobs {
    /// Opens the store under `root`, removes temp files a killed import or transfer left, and
    /// drops blobs the state does not refer to (an import that never committed).
    pub fn open(root: &Path, node: RaftNode, node_id: u64) -> Result<Arc<Blobs>, BlobError> {
        let store = BlobStore::open(root)?;
        let cleaned = store.clean_tmp()?;
        if cleaned > 0 {
            tracing::info!(
                files = cleaned,
                "removed temp files of an interrupted import or transfer"
            );
        }
        let wanted = node.reader().wanted_blobs()?;
        let keep: BTreeSet<String> = wanted.into_keys().collect();
        let gc = store.gc(&keep)?;
        if !gc.removed.is_empty() {
            tracing::info!(
                blobs = gc.removed.len(),
                bytes = gc.bytes,
                "removed blobs no committed bundle refers to"
            );
        }
        Ok(Arc::new(Blobs {
            store,
            node,
            node_id,
            inflight: Mutex::default(),
            reported: Mutex::default(),
            missing: Default::default(),
            fetched_bytes: Default::default(),
        }))
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The local path of blob `sha256`, fetching it from a peer first if this node lacks it.
    /// Only blobs the state refers to are served or fetched.
    pub async fn local_path(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        let path = self.store.blob_path(sha256)?;
        if path.is_file() {
            return Ok(path);
        }
        let reader = self.node.reader();
        let wanted = tokio::task::spawn_blocking(move || reader.wanted_blobs()).await??;
        let Some(size) = wanted.get(sha256).copied() else {
            return Err(BlobError::Unknown(sha256.to_string()));
        };
        self.fetch(sha256, size).await?;
        self.report(vec![sha256.to_string()]).await;
        Ok(path)
    }

    /// Wanted blobs this node lacked after its last replication pass.
    pub fn missing(&self) -> u64 {
        self.missing.load(Ordering::Relaxed)
    }

    /// Bytes fetched from peers since start.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes.load(Ordering::Relaxed)
    }

    /// Pulls every missing blob the state refers to and reports holdings, forever: a pass
    /// soon after the applied log moves (a bundle may have committed), and every few seconds.
    pub async fn replicate(self: Arc<Self>) {
        let mut metrics = self.node.metrics();
        let mut seen_applied = None;
        loop {
            if let Err(e) = self.replicate_once().await {
                tracing::warn!(error = %e, "blob replication pass failed; retrying");
            }
            let rest = tokio::time::sleep(SCAN_EVERY);
            tokio::pin!(rest);
            loop {
                tokio::select! {
                    _ = &mut rest => break,
                    changed = metrics.changed() => {
                        if changed.is_err() {
                            return; // the node is shutting down
                        }
                        let applied = metrics.borrow_and_update().last_applied.map(|l| l.index);
                        if applied != seen_applied {
                            seen_applied = applied;
                            tokio::time::sleep(WAKE_DELAY).await;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// One pass: fetch what is missing (one blob at a time, biggest transfers are streamed),
    /// then report every wanted blob held here that the state does not yet credit to us.
    pub async fn replicate_once(&self) -> Result<(), BlobError> {
        let reader = self.node.reader();
        let me = self.node_id;
        let (wanted, credited) = tokio::task::spawn_blocking(move || {
            let wanted = reader.wanted_blobs()?;
            let mut credited = BTreeSet::new();
            for sha in wanted.keys() {
                if reader.blob_holders(sha)?.contains(&me) {
                    credited.insert(sha.clone());
                }
            }
            Ok::<_, outpost_storage::StorageError>((wanted, credited))
        })
        .await??;
        let mut held = Vec::new();
        let mut missing = 0u64;
        for (sha, size) in &wanted {
            if !self.store.contains(sha) {
                match self.fetch(sha, *size).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(blob = %sha, error = %e, "blob not fetched yet");
                        missing += 1;
                        continue;
                    }
                }
            }
            if !credited.contains(sha) {
                held.push(sha.clone());
            }
        }
        self.missing.store(missing, Ordering::Relaxed);
        {
            let mut rep = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            held.retain(|s| !rep.contains(s));
            rep.extend(credited);
        }
        self.report(held).await;
        Ok(())
    }

    /// Proposes `BlobsHeld` for `sha256s` (best effort: the next pass retries).
    async fn report(&self, sha256s: Vec<String>) {
        if sha256s.is_empty() {
            return;
        }
        let env = Envelope {
            at_ms: outpost_raft::now_ms(),
            actor: format!("node:{}", self.node_id),
            command: Command::BlobsHeld {
                node_id: self.node_id,
                sha256: sha256s.clone(),
            },
        };
        match self.node.write(env).await {
            Ok(Ok(_)) => {
                let mut rep = self.reported.lock().unwrap_or_else(|p| p.into_inner());
                rep.extend(sha256s);
            }
            Ok(Err(rej)) => tracing::warn!(%rej, "blob holdings refused"),
            Err(e) => tracing::debug!(error = %e, "blob holdings not reported yet"),
        }
    }

    /// Fetches one blob from the nodes recorded as holding it, verified into the store.
    async fn fetch(&self, sha256: &str, size: u64) -> Result<(), BlobError> {
        let gate = {
            let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(sha256.to_string()).or_default().clone()
        };
        let _turn = gate.lock().await;
        if self.store.contains(sha256) {
            return Ok(());
        }
        self.room_for(sha256, size).await?;
        let reader = self.node.reader();
        let sha = sha256.to_string();
        let holders = tokio::task::spawn_blocking(move || reader.blob_holders(&sha)).await??;
        let mut reasons = Vec::new();
        for peer in holders.into_iter().filter(|h| *h != self.node_id) {
            let started = std::time::Instant::now();
            match self.fetch_from(peer, sha256, size).await {
                Ok(()) => {
                    self.fetched_bytes.fetch_add(size, Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(blob = %sha256, from = peer, bytes = size,
                        mib_per_s = format!("{:.0}", size as f64 / 1048576.0 / secs.max(1e-6)),
                        "blob fetched and verified");
                    return Ok(());
                }
                Err(e) => reasons.push(format!("node {peer}: {e}")),
            }
        }
        if reasons.is_empty() {
            reasons.push("no other node holds it yet".into());
        }
        Err(BlobError::Unavailable {
            sha256: sha256.to_string(),
            reasons: reasons.join("; "),
        })
    }

    /// A blob that would take the file system of the store below the disk floor
    /// (`shared::policy::below_floor`, the rule the node's writes stop at) is not fetched; a
    /// later pass tries again once there is room.
    async fn room_for(&self, sha256: &str, size: u64) -> Result<(), BlobError> {
        let path = self.store.blob_path(sha256)?;
        let Some(existing) = path.ancestors().find(|p| p.exists()).map(Path::to_path_buf) else {
            return Ok(());
        };
        let room =
            tokio::task::spawn_blocking(move || crate::shared::process::fs_room(&existing)).await?;
        match room {
            Ok((free, total))
                if crate::shared::policy::below_floor(free.saturating_sub(size), total) =>
            {
                Err(BlobError::Unavailable {
                    sha256: sha256.to_string(),
                    reasons: format!(
                        "not fetched: its {size} bytes would leave {} bytes free, below the disk floor of {}",
                        free.saturating_sub(size),
                        crate::shared::policy::floor_for(total)
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    async fn fetch_from(&self, peer: u64, sha256: &str, size: u64) -> Result<(), BlobError> {
        let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(IN_FLIGHT * 2);
        let store = self.store.clone();
        let sha = sha256.to_string();
        let writer = tokio::task::spawn_blocking(move || {
            store.put_verified(ChannelReader::new(rx), &sha, size)
        });
        let offsets: Vec<u64> = (0..size.div_ceil(CHUNK)).map(|i| i * CHUNK).collect();
        let mut chunks = futures::stream::iter(offsets)
            .map(|offset| {
                let ask = PeerAsk::Chunk {
                    sha256: sha256.to_string(),
                    offset,
                    len: CHUNK.min(size - offset),
                };
                let node = self.node.clone();
                async move {
                    let req = serde_json::to_vec(&ask).unwrap_or_default();
                    node.app_call(peer, req, CALL_TIMEOUT).await
                }
            })
            .buffered(IN_FLIGHT);
        let mut failure: Option<AppCallError> = None;
        while let Some(r) = chunks.next().await {
            match r {
                Ok(bytes) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        break; // the writer stopped (size or hash mismatch): its error says why
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(format!("transfer: {e}"))))
                        .await;
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let stored = writer.await?;
        match (stored, failure) {
            (Ok(_), _) => Ok(()),
            (Err(_), Some(e)) => Err(BlobError::Unavailable {
                sha256: sha256.to_string(),
                reasons: e.to_string(),
            }),
            (Err(e), None) => Err(e.into()),
        }
    }
}

/// Feeds chunks from the async side into a blocking `Read`.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<std::io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_reader_concatenates_and_reports_errors() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"abc".to_vec())).ok();
        tx.try_send(Ok(Vec::new())).ok();
        tx.try_send(Ok(b"de".to_vec())).ok();
        drop(tx);
        let mut out = String::new();
        let r = ChannelReader::new(rx).read_to_string(&mut out);
        assert_eq!((r.ok(), out.as_str()), (Some(5), "abcde"));

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(b"ab".to_vec())).ok();
        tx.try_send(Err(std::io::Error::other("peer went away")))
            .ok();
        let mut out = Vec::new();
        let err = ChannelReader::new(rx).read_to_end(&mut out);
        assert!(err.is_err());
    }
}
