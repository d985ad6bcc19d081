//! Cluster and node queries.

use rusqlite::{OptionalExtension, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::{ClusterInfo, NodeRecord, NodeRole};

impl Reader {
    pub fn cluster(&self) -> Result<Option<ClusterInfo>, StorageError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id, name, ca_cert_pem, created_at_ms FROM cluster",
                [],
                |r| {
                    Ok(ClusterInfo {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        ca_cert_pem: r.get(2)?,
                        created_at_ms: r.get(3)?,
                    })
                },
            )
            .optional()?)
        })
    }

    /// All nodes, removed ones included, by id.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("{NODE_SELECT} ORDER BY id"))?;
            let rows = stmt.query_map([], raw_node)?;
            rows.map(|r| node_from_raw(r?)).collect()
        })
    }

    pub fn node(&self, id: u64) -> Result<Option<NodeRecord>, StorageError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.with(|c| {
            c.query_row(&format!("{NODE_SELECT} WHERE id = ?1"), [id], raw_node)
                .optional()?
                .map(node_from_raw)
                .transpose()
        })
    }
}

const NODE_SELECT: &str =
    "SELECT id, name, api_addr, peer_addr, role, version, joined_at_ms FROM nodes";

type RawNode = (i64, String, String, String, String, String, i64);

fn raw_node(r: &Row<'_>) -> rusqlite::Result<RawNode> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn node_from_raw(r: RawNode) -> Result<NodeRecord, StorageError> {
    let (id, name, api_addr, peer_addr, role, version, joined_at_ms) = r;
    let role = NodeRole::parse(&role)
        .ok_or_else(|| StorageError::Corrupt(format!("node {id} has unknown role {role:?}")))?;
    Ok(NodeRecord {
        id: id as u64,
        name,
        api_addr,
        peer_addr,
        role,
        version,
        joined_at_ms,
    })
}
