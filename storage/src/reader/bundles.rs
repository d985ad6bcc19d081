//! Bundle queries: the pinned trust, channel floors, bundles with their payloads, and which
//! nodes hold which blob. Blobs themselves never enter the database: only their hashes and
//! which nodes reported holding them.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};

use super::{Reader, u64_col};
use crate::error::StorageError;
use crate::model::{BundleRecord, BundleType, ChannelRecord, PayloadHolding, TrustRecord};
use crate::schema::bundle_time_floor;

impl Reader {
    /// The pinned bundle trust, if any.
    pub fn bundle_trust(&self) -> Result<Option<TrustRecord>, StorageError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT version, trust_json, updated_at_ms FROM bundle_trust",
                [],
                |r| {
                    Ok(TrustRecord {
                        version: u64_col(r.get::<_, i64>(0)?),
                        trust_json: r.get(1)?,
                        updated_at_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
    }

    /// Every channel's floor, by name.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, version, manifest_sha256, updated_at_ms FROM channels ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ChannelRecord {
                    name: r.get(0)?,
                    version: u64_col(r.get::<_, i64>(1)?),
                    manifest_sha256: r.get(2)?,
                    updated_at_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The newest `created` of any accepted bundle (unix seconds): part of the time floor.
    pub fn bundle_time_floor(&self) -> Result<i64, StorageError> {
        self.with(|c| Ok(bundle_time_floor(c)?))
    }

    /// Every bundle, oldest first, with its payloads and their holders.
    pub fn bundles(&self) -> Result<Vec<BundleRecord>, StorageError> {
        self.with(|c| {
            let holders = all_holders(c)?;
            let mut stmt = c.prepare(
                "SELECT seq, id, manifest_sha256, bundle_type, channel, version, created, expires,
                        signers_json, imported_at_ms, imported_by, node_id
                 FROM bundles ORDER BY seq",
            )?;
            type Raw = (i64, BundleRecord, String, String);
            let rows: Vec<Raw> = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        BundleRecord {
                            id: r.get(1)?,
                            manifest_sha256: r.get(2)?,
                            bundle_type: BundleType::Content,
                            channel: r.get(4)?,
                            version: u64_col(r.get::<_, i64>(5)?),
                            created: r.get(6)?,
                            expires: r.get(7)?,
                            signers: Vec::new(),
                            imported_at_ms: r.get(9)?,
                            imported_by: r.get(10)?,
                            node_id: u64_col(r.get::<_, i64>(11)?),
                            payloads: Vec::new(),
                        },
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(8)?,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            let mut pstmt = c.prepare(
                "SELECT name, kind, size, sha256 FROM payloads WHERE bundle_seq = ?1 ORDER BY idx",
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for (seq, mut rec, kind, signers) in rows {
                rec.bundle_type = BundleType::parse(&kind).ok_or_else(|| {
                    StorageError::Corrupt(format!("bundle {}: type {kind:?}", rec.id))
                })?;
                rec.signers = serde_json::from_str(&signers).map_err(|e| {
                    StorageError::Corrupt(format!("bundle {}: signers: {e}", rec.id))
                })?;
                rec.payloads = pstmt
                    .query_map([seq], |r| {
                        let sha256: String = r.get(3)?;
                        Ok(PayloadHolding {
                            name: r.get(0)?,
                            kind: r.get(1)?,
                            size: u64_col(r.get::<_, i64>(2)?),
                            held_by: holders.get(&sha256).cloned().unwrap_or_default(),
                            sha256,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                out.push(rec);
            }
            Ok(out)
        })
    }

    /// Every blob the state refers to, with its size: what each node's store must hold.
    pub fn wanted_blobs(&self) -> Result<BTreeMap<String, u64>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT DISTINCT sha256, size FROM payloads")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, u64_col(r.get::<_, i64>(1)?)))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Nodes that reported holding `sha256`.
    pub fn blob_holders(&self, sha256: &str) -> Result<Vec<u64>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT node_id FROM blob_holders WHERE sha256 = ?1 ORDER BY node_id",
            )?;
            let rows = stmt.query_map([sha256], |r| Ok(u64_col(r.get::<_, i64>(0)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

fn all_holders(c: &Connection) -> Result<BTreeMap<String, Vec<u64>>, rusqlite::Error> {
    let mut stmt =
        c.prepare("SELECT sha256, node_id FROM blob_holders ORDER BY sha256, node_id")?;
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (sha, node) = row?;
        out.entry(sha).or_default().push(u64_col(node));
    }
    Ok(out)
}
