//! Bundle queries: the pinned trust, channel floors, bundles with their payloads, and which
//! nodes hold which blob. Blobs themselves never enter the database: only their hashes and
//! which nodes reported holding them.

use std::collections::BTreeMap;

use rusqlite::{Connection, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::{
    BundleRecord, BundleType, ChannelRecord, PayloadHolding, PayloadRecord, TrustRecord,
};
use crate::rows::{FromRow, all, corrupt, json, one, u64_col};
use crate::schema::bundle_time_floor;

impl Reader {
    /// The pinned bundle trust, if any.
    pub fn bundle_trust(&self) -> Result<Option<TrustRecord>, StorageError> {
        self.with(|c| Ok(one(c, "", [])?))
    }

    /// Every channel's floor, by name.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY name", [])?))
    }

    /// The newest `created` of any accepted bundle (unix seconds): part of the time floor.
    pub fn bundle_time_floor(&self) -> Result<i64, StorageError> {
        self.with(|c| Ok(bundle_time_floor(c)?))
    }

    /// Every bundle, oldest first, with its payloads and their holders.
    pub fn bundles(&self) -> Result<Vec<BundleRecord>, StorageError> {
        self.with(|c| {
            let holders = all_holders(c)?;
            let rows: Vec<BundleRow> = all(c, "ORDER BY seq", [])?;
            let mut out = Vec::with_capacity(rows.len());
            for BundleRow { seq, mut record } in rows {
                let payloads: Vec<PayloadRecord> =
                    all(c, "WHERE bundle_seq = ?1 ORDER BY idx", [seq])?;
                record.payloads = payloads
                    .into_iter()
                    .map(|p| PayloadHolding {
                        held_by: holders.get(&p.sha256).cloned().unwrap_or_default(),
                        name: p.name,
                        kind: p.kind,
                        size: p.size,
                        sha256: p.sha256,
                    })
                    .collect();
                out.push(record);
            }
            Ok(out)
        })
    }

    /// Every blob the state refers to, with its size: what each node's store must hold.
    pub fn wanted_blobs(&self) -> Result<BTreeMap<String, u64>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT DISTINCT sha256, size FROM payloads")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, u64_col(r, 1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Nodes that reported holding `sha256`.
    pub fn blob_holders(&self, sha256: &str) -> Result<Vec<u64>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT node_id FROM blob_holders WHERE sha256 = ?1 ORDER BY node_id",
            )?;
            let rows = stmt.query_map([sha256], |r| u64_col(r, 0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

impl FromRow for TrustRecord {
    const SELECT: &'static str = "SELECT version, trust_json, updated_at_ms FROM bundle_trust";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<TrustRecord> {
        Ok(TrustRecord {
            version: u64_col(r, 0)?,
            trust_json: r.get(1)?,
            updated_at_ms: r.get(2)?,
        })
    }
}

impl FromRow for ChannelRecord {
    const SELECT: &'static str =
        "SELECT name, version, manifest_sha256, updated_at_ms FROM channels";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<ChannelRecord> {
        Ok(ChannelRecord {
            name: r.get(0)?,
            version: u64_col(r, 1)?,
            manifest_sha256: r.get(2)?,
            updated_at_ms: r.get(3)?,
        })
    }
}

/// A bundle row: its record without payloads, and the seq its payloads refer to.
struct BundleRow {
    seq: i64,
    record: BundleRecord,
}

impl FromRow for BundleRow {
    const SELECT: &'static str = "SELECT seq, id, manifest_sha256, bundle_type, channel, version, \
                                  created, expires, signers_json, imported_at_ms, imported_by, \
                                  node_id FROM bundles";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<BundleRow> {
        let id: String = r.get(1)?;
        let kind: String = r.get(3)?;
        let Some(bundle_type) = BundleType::parse(&kind) else {
            return Err(corrupt(3, format!("bundle {id}: type {kind:?}")));
        };
        Ok(BundleRow {
            seq: r.get(0)?,
            record: BundleRecord {
                manifest_sha256: r.get(2)?,
                bundle_type,
                channel: r.get(4)?,
                version: u64_col(r, 5)?,
                created: r.get(6)?,
                expires: r.get(7)?,
                signers: json(r, 8, |e| format!("bundle {id}: signers: {e}"))?,
                imported_at_ms: r.get(9)?,
                imported_by: r.get(10)?,
                node_id: u64_col(r, 11)?,
                payloads: Vec::new(),
                id,
            },
        })
    }
}

impl FromRow for PayloadRecord {
    const SELECT: &'static str = "SELECT name, kind, size, sha256 FROM payloads";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<PayloadRecord> {
        Ok(PayloadRecord {
            name: r.get(0)?,
            kind: r.get(1)?,
            size: u64_col(r, 2)?,
            sha256: r.get(3)?,
        })
    }
}

/// Which nodes hold each blob, by sha256.
fn all_holders(c: &Connection) -> Result<BTreeMap<String, Vec<u64>>, rusqlite::Error> {
    let mut stmt =
        c.prepare("SELECT sha256, node_id FROM blob_holders ORDER BY sha256, node_id")?;
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, u64_col(r, 1)?)))?;
    for row in rows {
        let (sha, node) = row?;
        out.entry(sha).or_default().push(node);
    }
    Ok(out)
}
