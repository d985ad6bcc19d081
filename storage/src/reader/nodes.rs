//! Cluster and node queries.

use rusqlite::Row;

use super::Reader;
use crate::error::StorageError;
use crate::model::{ClusterInfo, NodeRecord, NodeRole};
use crate::rows::{FromRow, all, corrupt, one};

impl Reader {
    pub fn cluster(&self) -> Result<Option<ClusterInfo>, StorageError> {
        self.with(|c| Ok(one(c, "", [])?))
    }

    /// All nodes, removed ones included, by id.
    /// The id the next node to join or be added gets.
    pub fn next_node_id(&self) -> Result<u64, StorageError> {
        self.with(|c| {
            let v: i64 = c.query_row(
                "SELECT value FROM meta WHERE key = 'next_node_id'",
                [],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(v).unwrap_or(0))
        })
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY id", [])?))
    }

    pub fn node(&self, id: u64) -> Result<Option<NodeRecord>, StorageError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.with(|c| Ok(one(c, "WHERE id = ?1", [id])?))
    }
}

impl FromRow for ClusterInfo {
    const SELECT: &'static str = "SELECT id, name, ca_cert_pem, created_at_ms FROM cluster";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<ClusterInfo> {
        Ok(ClusterInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            ca_cert_pem: r.get(2)?,
            created_at_ms: r.get(3)?,
        })
    }
}

impl FromRow for NodeRecord {
    const SELECT: &'static str = "SELECT id, name, api_addr, peer_addr, role, version, joined_at_ms, binary_sha256 FROM nodes";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<NodeRecord> {
        let id: i64 = r.get(0)?;
        let role: String = r.get(4)?;
        Ok(NodeRecord {
            id: id as u64,
            name: r.get(1)?,
            api_addr: r.get(2)?,
            peer_addr: r.get(3)?,
            role: NodeRole::parse(&role)
                .ok_or_else(|| corrupt(4, format!("node {id} has unknown role {role:?}")))?,
            version: r.get(5)?,
            joined_at_ms: r.get(6)?,
            binary_sha256: r.get(7)?,
        })
    }
}
