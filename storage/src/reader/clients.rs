//! Client queries: clients, their certificates and revocations, inventory.

use rusqlite::OptionalExtension;

use super::Reader;
use crate::error::StorageError;
use crate::model::{ClientCertState, ClientRecord, InventoryChange, InventoryRecord};

impl Reader {
    pub fn clients(&self) -> Result<Vec<ClientRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!("{CLIENT_SELECT} ORDER BY id"))?;
            let rows = stmt.query_map([], raw_client)?;
            rows.map(|r| client_from_raw(r?)).collect()
        })
    }

    pub fn client(&self, id: &str) -> Result<Option<ClientRecord>, StorageError> {
        self.with(|c| {
            c.prepare_cached(&format!("{CLIENT_SELECT} WHERE id = ?1"))?
                .query_row([id], raw_client)
                .optional()?
                .map(client_from_raw)
                .transpose()
        })
    }

    /// A client's certificate state: current serial, the retired one and until when it is
    /// still accepted, and when it last renewed.
    pub fn client_cert_state(&self, id: &str) -> Result<Option<ClientCertState>, StorageError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT cert_serial, prev_serial, prev_serial_until_ms, renewed_at_ms, revoked,
                        cert_key_sha256
                 FROM clients WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok(ClientCertState {
                    cert_serial: r.get(0)?,
                    prev_serial: r.get(1)?,
                    prev_serial_until_ms: r.get(2)?,
                    renewed_at_ms: r.get(3)?,
                    revoked: r.get(4)?,
                    cert_key_sha256: r.get(5)?,
                })
            })
            .optional()?)
        })
    }

    /// Whether a certificate serial (lowercase hex) has been revoked.
    pub fn serial_revoked(&self, serial: &str) -> Result<bool, StorageError> {
        self.with(|c| {
            Ok(
                c.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM revoked_serials WHERE serial = ?1)",
                )?
                .query_row([serial], |r| r.get(0))?,
            )
        })
    }

    /// When admin certificates named `name` were last revoked (ms), if ever: certificates of
    /// that name issued up to then are refused.
    pub fn admin_revoked_at(&self, name: &str) -> Result<Option<i64>, StorageError> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT revoked_at_ms FROM revoked_admins WHERE name = ?1")?
                    .query_row([name], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    pub fn inventory(&self, client_id: &str) -> Result<Option<InventoryRecord>, StorageError> {
        self.with(|c| {
            c.prepare_cached(&format!("{INVENTORY_SELECT} WHERE client_id = ?1"))?
                .query_row([client_id], raw_inventory)
                .optional()?
                .map(inventory_from_raw)
                .transpose()
        })
    }

    pub fn inventories(&self) -> Result<Vec<InventoryRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!("{INVENTORY_SELECT} ORDER BY client_id"))?;
            let rows = stmt.query_map([], raw_inventory)?;
            rows.map(|r| inventory_from_raw(r?)).collect()
        })
    }

    /// The newest `limit` changes of a client's facts, newest first.
    pub fn inventory_history(
        &self,
        client_id: &str,
        limit: u32,
    ) -> Result<Vec<InventoryChange>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT client_id, at_ms, facts_sha256, changed_json FROM inventory_history
                 WHERE client_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![client_id, limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            rows.map(|r| {
                let (client_id, at_ms, facts_sha256, changed) = r?;
                let changed = serde_json::from_str(&changed).map_err(|e| {
                    StorageError::Corrupt(format!(
                        "inventory_history.changed_json of {client_id}: {e}"
                    ))
                })?;
                Ok(InventoryChange {
                    client_id,
                    at_ms,
                    facts_sha256,
                    changed,
                })
            })
            .collect()
        })
    }
}

const CLIENT_SELECT: &str = "SELECT id, hostname, groups_json, cert_serial, enrolled_at_ms, revoked, last_seen_ms, last_seen_node FROM clients";

type RawClient = (
    String,
    String,
    String,
    String,
    i64,
    bool,
    Option<i64>,
    Option<i64>,
);

fn raw_client(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawClient> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn client_from_raw(raw: RawClient) -> Result<ClientRecord, StorageError> {
    let (
        id,
        hostname,
        groups_json,
        cert_serial,
        enrolled_at_ms,
        revoked,
        last_seen,
        last_seen_node,
    ) = raw;
    let groups = serde_json::from_str(&groups_json)
        .map_err(|e| StorageError::Corrupt(format!("clients.groups_json of {id}: {e}")))?;
    Ok(ClientRecord {
        id,
        hostname,
        groups,
        cert_serial,
        enrolled_at_ms,
        revoked,
        last_seen,
        last_seen_node: last_seen_node.map(|n| n as u64),
    })
}

const INVENTORY_SELECT: &str =
    "SELECT client_id, facts_json, facts_sha256, updated_at_ms FROM inventory";

fn raw_inventory(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn inventory_from_raw(raw: (String, String, String, i64)) -> Result<InventoryRecord, StorageError> {
    let (client_id, facts_json, facts_sha256, updated_at_ms) = raw;
    let facts = serde_json::from_str(&facts_json)
        .map_err(|e| StorageError::Corrupt(format!("inventory.facts_json of {client_id}: {e}")))?;
    Ok(InventoryRecord {
        client_id,
        facts,
        facts_sha256,
        updated_at_ms,
    })
}
