//! Client queries: clients, their certificates and revocations, inventory.

use rusqlite::{OptionalExtension, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::{ClientCertState, ClientRecord, InventoryChange, InventoryRecord};
use crate::rows::{FromRow, all, json, one};

impl Reader {
    pub fn clients(&self) -> Result<Vec<ClientRecord>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY id", [])?))
    }

    pub fn client(&self, id: &str) -> Result<Option<ClientRecord>, StorageError> {
        self.with(|c| Ok(one(c, "WHERE id = ?1", [id])?))
    }

    /// A client's certificate state: current serial, the retired one and until when it is
    /// still accepted, and when it last renewed.
    pub fn client_cert_state(&self, id: &str) -> Result<Option<ClientCertState>, StorageError> {
        self.with(|c| Ok(one(c, "WHERE id = ?1", [id])?))
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
        self.with(|c| Ok(one(c, "WHERE client_id = ?1", [client_id])?))
    }

    pub fn inventories(&self) -> Result<Vec<InventoryRecord>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY client_id", [])?))
    }

    /// The newest `limit` changes of a client's facts, newest first.
    pub fn inventory_history(
        &self,
        client_id: &str,
        limit: u32,
    ) -> Result<Vec<InventoryChange>, StorageError> {
        self.with(|c| {
            Ok(all(
                c,
                "WHERE client_id = ?1 ORDER BY seq DESC LIMIT ?2",
                rusqlite::params![client_id, limit],
            )?)
        })
    }
}

impl FromRow for ClientRecord {
    const SELECT: &'static str = "SELECT id, hostname, groups_json, cert_serial, enrolled_at_ms, \
                                  revoked, last_seen_ms, last_seen_node FROM clients";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<ClientRecord> {
        let id: String = r.get(0)?;
        Ok(ClientRecord {
            hostname: r.get(1)?,
            groups: json(r, 2, |e| format!("clients.groups_json of {id}: {e}"))?,
            cert_serial: r.get(3)?,
            enrolled_at_ms: r.get(4)?,
            revoked: r.get(5)?,
            last_seen: r.get(6)?,
            last_seen_node: r.get::<_, Option<i64>>(7)?.map(|n| n as u64),
            id,
        })
    }
}

impl FromRow for ClientCertState {
    const SELECT: &'static str = "SELECT cert_serial, prev_serial, prev_serial_until_ms, \
                                  renewed_at_ms, revoked, cert_key_sha256 FROM clients";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<ClientCertState> {
        Ok(ClientCertState {
            cert_serial: r.get(0)?,
            prev_serial: r.get(1)?,
            prev_serial_until_ms: r.get(2)?,
            renewed_at_ms: r.get(3)?,
            revoked: r.get(4)?,
            cert_key_sha256: r.get(5)?,
        })
    }
}

impl FromRow for InventoryRecord {
    const SELECT: &'static str =
        "SELECT client_id, facts_json, facts_sha256, updated_at_ms FROM inventory";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<InventoryRecord> {
        let client_id: String = r.get(0)?;
        Ok(InventoryRecord {
            facts: json(r, 1, |e| {
                format!("inventory.facts_json of {client_id}: {e}")
            })?,
            facts_sha256: r.get(2)?,
            updated_at_ms: r.get(3)?,
            client_id,
        })
    }
}

impl FromRow for InventoryChange {
    const SELECT: &'static str =
        "SELECT client_id, at_ms, facts_sha256, changed_json FROM inventory_history";

    fn from_row(r: &Row<'_>) -> rusqlite::Result<InventoryChange> {
        let client_id: String = r.get(0)?;
        Ok(InventoryChange {
            at_ms: r.get(1)?,
            facts_sha256: r.get(2)?,
            changed: json(r, 3, |e| {
                format!("inventory_history.changed_json of {client_id}: {e}")
            })?,
            client_id,
        })
    }
}
