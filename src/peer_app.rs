//! The node's own calls to other nodes over the peer channel (`RaftNode::app_call`, the
//! persistent mTLS peer connection): what one node may ask another ([`PeerAsk`]), the handler
//! that answers those asks, and the cluster time floor built from the voters' clocks.
//!
//! An ask is a small JSON [`PeerAsk`]; the answer is raw bytes (a chunk, 8 clock bytes, or JSON).
//! The peer port has already checked the caller (a member's certificate) and the frame's size
//! before a request reaches [`handler`]. Blob chunks are read on blocking threads, so are audit
//! chains (SQLite), checked from this node's own verified mark (the same mark `audit verify`
//! and the console move).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use outpost_bundles::BlobStore;
use outpost_raft::{AppFuture, AppHandler, RaftNode};
use serde::{Deserialize, Serialize};

use crate::shared::audit_file::VerifiedMark;
use crate::shared::now_secs;

/// Bytes per chunk request, and the most a node answers in one.
pub const CHUNK: u64 = 1 << 20;

/// What one node asks another over the peer channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PeerAsk {
    /// Bytes `offset..offset+len` of a blob the answering node holds.
    Chunk {
        sha256: String,
        offset: u64,
        len: u64,
    },
    /// The answering node's clock, unix seconds as 8 bytes little-endian (for the time floor).
    Clock,
    /// The answering node's own audit chain checked and its hash at `at_seq`, as JSON
    /// `outpost_storage::AuditChain` (for `audit verify`). The check starts from the answering
    /// node's own verified mark unless `full` (0.4; a node older than 0.4 ignores the flag and
    /// always checks from genesis).
    AuditChain {
        at_seq: u64,
        #[serde(default)]
        full: bool,
    },
    /// The answering node's Raft status, as JSON `outpost_raft::NodeStatus` (the console's
    /// overview: each node's state, applied index and whether it knows a leader).
    Status,
    /// The answering node's clock, unix milliseconds as 8 bytes little-endian (clock offset:
    /// `crate::metrics::clock`). A node older than 0.3 answers an error (unknown variant).
    ClockMs,
    /// The answering node's report of itself, as JSON `wire::NodeHealth` (`outpost doctor`).
    /// A node older than 0.3 answers an error (unknown variant).
    Health,
}

/// What answers a `Health` ask: this node's report of itself, already encoded (JSON
/// `wire::NodeHealth`), or why there is none. Set by the node at start.
pub type HealthProvider = Arc<dyn Fn() -> HealthFuture + Send + Sync>;
pub type HealthFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send>>;

/// The handler other nodes' asks reach: blob chunks from `store`, the node's report of itself
/// from `health`, everything else from `node`.
pub fn handler(
    node: RaftNode,
    store: BlobStore,
    health: HealthProvider,
    audit_mark: Arc<VerifiedMark>,
) -> Arc<dyn AppHandler> {
    Arc::new(PeerServer {
        node,
        store,
        health,
        audit_mark,
    })
}

/// The cluster time floor for bundle expiry: the highest of the voters' median clock and the
/// newest `created` already accepted, so one node's wrong clock changes nothing.
pub async fn cluster_time_floor(node: &RaftNode, voters: &[u64], accepted: i64) -> i64 {
    let me = node.id();
    let mut clocks = Vec::with_capacity(voters.len());
    for &v in voters {
        if v == me {
            clocks.push(now_secs());
            continue;
        }
        let req = serde_json::to_vec(&PeerAsk::Clock).unwrap_or_default();
        match node.app_call(v, req, Duration::from_secs(2)).await {
            Ok(b) if b.len() == 8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b);
                clocks.push(i64::from_le_bytes(a));
            }
            Ok(_) => tracing::warn!(node = v, "clock answer of the wrong size"),
            Err(e) => tracing::warn!(node = v, error = %e, "no clock reading"),
        }
    }
    median(&mut clocks).unwrap_or_else(now_secs).max(accepted)
}

fn median(v: &mut [i64]) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

struct PeerServer {
    node: RaftNode,
    store: BlobStore,
    health: HealthProvider,
    audit_mark: Arc<VerifiedMark>,
}

impl AppHandler for PeerServer {
    fn handle(&self, from: u64, request: Vec<u8>) -> AppFuture {
        let (node, store, health) = (self.node.clone(), self.store.clone(), self.health.clone());
        let audit_mark = self.audit_mark.clone();
        Box::pin(async move {
            let ask: PeerAsk = serde_json::from_slice(&request)
                .map_err(|e| format!("request from node {from} does not parse: {e}"))?;
            match ask {
                PeerAsk::Clock => Ok(now_secs().to_le_bytes().to_vec()),
                PeerAsk::ClockMs => Ok(outpost_raft::now_ms().to_le_bytes().to_vec()),
                PeerAsk::Health => health().await,
                PeerAsk::Status => serde_json::to_vec(&node.status()).map_err(|e| e.to_string()),
                PeerAsk::AuditChain { at_seq, full } => {
                    let reader = node.reader();
                    let view = tokio::task::spawn_blocking(move || {
                        let view = reader
                            .audit_chain_since(at_seq, audit_mark.get(), full)
                            .map_err(|e| format!("audit chain: {e}"))?;
                        if let Some(m) = &view.verified
                            && let Err(e) = audit_mark.advance(m.seq, &m.hash)
                        {
                            tracing::warn!(error = %e, "the audit mark was not saved");
                        }
                        Ok::<_, String>(view)
                    })
                    .await
                    .map_err(|e| e.to_string())??;
                    serde_json::to_vec(&view).map_err(|e| e.to_string())
                }
                PeerAsk::Chunk {
                    sha256,
                    offset,
                    len,
                } => {
                    if len > CHUNK {
                        return Err(format!("chunk of {len} bytes asked; at most {CHUNK}"));
                    }
                    let path = store.blob_path(&sha256).map_err(|e| e.to_string())?;
                    tokio::task::spawn_blocking(move || read_range(&path, offset, len))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("blob {sha256}: {e}"))
                }
            }
        })
    }
}

/// Reads exactly `len` bytes at `offset` (fewer is an error: the blob is shorter than asked).
pub fn read_range(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} bytes at offset {offset}, {len} asked", buf.len()),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_clocks() {
        let cases: [(&[i64], Option<i64>); 4] = [
            (&[], None),
            (&[5], Some(5)),
            (&[9, 1, 5], Some(5)),
            (&[100, 1, 2, 3], Some(2)),
        ];
        for (input, want) in cases {
            assert_eq!(median(&mut input.to_vec()), want, "{input:?}");
        }
    }

    #[test]
    fn read_range_is_exact() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("b");
        std::fs::write(&p, b"0123456789")?;
        assert_eq!(read_range(&p, 2, 3)?, b"234");
        assert!(read_range(&p, 8, 5).is_err());
        Ok(())
    }
}
