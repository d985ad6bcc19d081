//! The node ids the state records as removed, kept in memory for the peer port, which refuses
//! them on every connection and request without reading SQLite.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use outpost_storage::NodeRole;

use super::Inner;
use crate::types::NodeId;

/// The ids the state records as removed.
pub(super) fn removed_ids(nodes: &[outpost_storage::NodeRecord]) -> BTreeSet<NodeId> {
    nodes
        .iter()
        .filter(|n| n.role == NodeRole::Removed)
        .map(|n| n.id)
        .collect()
}

/// Keeps `Inner::removed` current: reads the nodes table again whenever the applied index
/// moved, at most every 50 ms (a removal is refused within that of being applied). The
/// peer port reads the set from memory, never from SQLite.
pub(super) async fn track_removed(inner: Arc<Inner>) {
    let mut metrics = inner.raft.metrics();
    let mut seen = None;
    loop {
        let applied = metrics.borrow_and_update().last_applied;
        if applied != seen {
            seen = applied;
            let reader = inner.store.reader();
            match tokio::task::spawn_blocking(move || reader.nodes()).await {
                Ok(Ok(nodes)) => {
                    let ids = removed_ids(&nodes);
                    let mut set = inner.removed.write().unwrap_or_else(|p| p.into_inner());
                    if *set != ids {
                        tracing::info!(removed = ?ids, "node ids refused on the peer port");
                        *set = ids;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "reading the removed nodes"),
                Err(e) => tracing::warn!(error = %e, "reading the removed nodes: task"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
