//! Client queries: clients, their certificates and revocations, inventory.

use rusqlite::{OptionalExtension, Row};

use super::Reader;
use crate::error::StorageError;
use crate::model::{ClientCertState, ClientRecord, InventoryChange, InventoryRecord};
use crate::rollout_rows::split_labels;
use crate::rows::{FromRow, all, json, one};

/// The most failing check names a client record carries (an agent reports at most 32 checks;
/// a hostile one may report more, which are not read).
pub const MAX_FAILING_SHOWN: u32 = 32;

/// Which clients a page of the console's list shows; each filter is skipped when empty. The
/// health filters (`failing`, `unseen_since_ms`) leave revoked clients out: nobody expects
/// them to sync again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFilter {
    /// A substring of the id or the host name.
    pub text: String,
    pub group: String,
    /// Only clients with at least one failing health check.
    pub failing: bool,
    /// Only clients not seen since this time (unix ms); never-seen clients included.
    pub unseen_since_ms: Option<i64>,
}

/// `FROM …` of the failing health checks of the client of the outer row (`clients.id`): the
/// entries of `$.health` of its latest facts whose `ok` is JSON `false`. The CASE keeps
/// `json_type` off values that are not objects (an agent's facts are its own to shape). The
/// key is the check name; one with a line break is not read (names are joined by `char(10)`).
macro_rules! failing_from {
    () => {
        "FROM inventory i, json_each(i.facts_json, '$.health') h \
         WHERE i.client_id = clients.id \
           AND CASE WHEN h.type = 'object' THEN json_type(h.value, '$.ok') END = 'false' \
           AND instr(h.key, char(10)) = 0"
    };
}

impl Reader {
    pub fn clients(&self) -> Result<Vec<ClientRecord>, StorageError> {
        self.with(|c| Ok(all(c, "ORDER BY id", [])?))
    }

    /// One page of clients by id (`offset`, `limit`) that pass `filter`, with how many pass
    /// in all.
    pub fn clients_page(
        &self,
        filter: &ClientFilter,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<ClientRecord>, u64), StorageError> {
        let text = filter.text.as_str();
        let group = filter.group.as_str();
        let like = format!("%{}%", like_escape(text));
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let unseen = filter.unseen_since_ms;
        let failing = filter.failing;
        let filter = format!(
            "WHERE (?1 = '' OR id LIKE ?2 ESCAPE '\\' OR hostname LIKE ?2 ESCAPE '\\')
               AND (?3 = '' OR EXISTS
                    (SELECT 1 FROM json_each(clients.groups_json) WHERE value = ?3))
               AND (?4 IS NULL OR last_seen_ms IS NULL OR last_seen_ms < ?4)
               AND (?5 = 0 OR EXISTS (SELECT 1 {}))
               AND ((?4 IS NULL AND ?5 = 0) OR revoked = 0)",
            failing_from!()
        );
        self.with(|c| {
            let total: i64 = c
                .prepare_cached(&format!("SELECT COUNT(*) FROM clients {filter}"))?
                .query_row(rusqlite::params![text, like, group, unseen, failing], |r| {
                    r.get(0)
                })?;
            let page = all(
                c,
                &format!("{filter} ORDER BY id LIMIT ?6 OFFSET ?7"),
                rusqlite::params![text, like, group, unseen, failing, limit, offset],
            )?;
            Ok((page, u64::try_from(total).unwrap_or(0)))
        })
    }

    /// How many clients are enrolled, and how many of them are revoked.
    pub fn client_counts(&self) -> Result<(u64, u64), StorageError> {
        self.with(|c| {
            let (all, revoked): (i64, i64) = c
                .prepare_cached("SELECT COUNT(*), COALESCE(SUM(revoked), 0) FROM clients")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((
                u64::try_from(all).unwrap_or(0),
                u64::try_from(revoked).unwrap_or(0),
            ))
        })
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

    /// Up to `limit` clients' latest facts with a client id after `after`, by client id: the
    /// caller filters them and asks again from the last id (keyset paging).
    pub fn inventory_scan(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<InventoryRecord>, StorageError> {
        self.with(|c| {
            Ok(all(
                c,
                "WHERE client_id > ?1 ORDER BY client_id LIMIT ?2",
                rusqlite::params![after, limit],
            )?)
        })
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

    /// How many changes of a client's facts were applied at or after `since_ms` (at most
    /// `INVENTORY_HISTORY_KEPT` rows are kept, so this counts at most that many).
    pub fn inventory_changes_since(
        &self,
        client_id: &str,
        since_ms: i64,
    ) -> Result<u32, StorageError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT COUNT(*) FROM inventory_history WHERE client_id = ?1 AND at_ms >= ?2",
            )?
            .query_row(rusqlite::params![client_id, since_ms], |r| r.get(0))?)
        })
    }
}

/// `s` with LIKE's wildcards escaped (the escape character is `\`).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

impl FromRow for ClientRecord {
    // The LIMIT is MAX_FAILING_SHOWN (a test holds them equal).
    const SELECT: &'static str = concat!(
        "SELECT id, hostname, groups_json, cert_serial, enrolled_at_ms, \
        revoked, last_seen_ms, last_seen_node, (SELECT group_concat(l.label, char(10)) \
        FROM client_labels l WHERE l.client_id = clients.id), \
        (SELECT group_concat(k, char(10)) FROM (SELECT h.key AS k ",
        failing_from!(),
        " ORDER BY h.key LIMIT 32)) FROM clients"
    );

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
            labels: split_labels(r.get(8)?),
            failing: split_labels(r.get(9)?),
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
