//! Blocking queries over a small pool of read-only connections.
//!
//! Callers in async code run these on blocking threads (e.g. `spawn_blocking`). Each method
//! takes one connection from the pool for its duration; WAL lets reads run beside the writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use crate::audit::{AuditFields, ChainWalker, StoredRow};
use crate::error::StorageError;
use crate::model::{
    AuditCheck, AuditRecord, ClientCertState, ClientRecord, ClusterInfo, ConfigEntry,
    InventoryChange, InventoryRecord, NodeRecord, NodeRole, Scope, TokenCheck, TokenKind,
    TokenRecord,
};
use crate::rules::effective_config;
use crate::schema::meta_blob;

/// Pooled read-only access to the state. Cheap to clone.
#[derive(Clone)]
pub struct Reader {
    pool: Arc<Pool>,
}

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

    pub fn config_get(
        &self,
        scope: &Scope,
        key: &str,
    ) -> Result<Option<ConfigEntry>, StorageError> {
        let (kind, sid) = scope.to_columns();
        self.with(|c| {
            c.query_row(
                &format!("{CONFIG_SELECT} WHERE scope_kind = ?1 AND scope_id = ?2 AND key = ?3"),
                [kind, sid, key],
                raw_config,
            )
            .optional()?
            .map(config_from_raw)
            .transpose()
        })
    }

    /// Every entry of one scope, or of all scopes when None; ordered by scope then key.
    pub fn config_list(&self, scope: Option<&Scope>) -> Result<Vec<ConfigEntry>, StorageError> {
        self.with(|c| match scope {
            None => query_config(c, "", &[]),
            Some(s) => {
                let (kind, sid) = s.to_columns();
                query_config(c, "WHERE scope_kind = ?1 AND scope_id = ?2", &[kind, sid])
            }
        })
    }

    /// global < each group (in the order given; later wins) < client.
    pub fn config_effective(
        &self,
        client_id: &str,
        groups: &[String],
    ) -> Result<BTreeMap<String, String>, StorageError> {
        let entries = self.with(|c| {
            let mut all = query_config(c, "WHERE scope_kind = 'global'", &[])?;
            all.extend(query_config(
                c,
                "WHERE scope_kind = 'client' AND scope_id = ?1",
                &[client_id],
            )?);
            for g in groups {
                all.extend(query_config(
                    c,
                    "WHERE scope_kind = 'group' AND scope_id = ?1",
                    &[g.as_str()],
                )?);
            }
            Ok(all)
        })?;
        Ok(effective_config(&entries, client_id, groups))
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StorageError> {
        self.with(|c| {
            c.query_row(&format!("{TOKEN_SELECT} WHERE id = ?1"), [id], raw_token)
                .optional()?
                .map(token_from_raw)
                .transpose()
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StorageError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("{TOKEN_SELECT} ORDER BY id"))?;
            let rows = stmt.query_map([], raw_token)?;
            rows.map(|r| token_from_raw(r?)).collect()
        })
    }

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

    /// Whether a `kind` token with this secret hash may be used at `at_ms`, without using it:
    /// the same verdict `apply` reaches (exists, kind, secret in constant time, not revoked,
    /// not expired, uses left), so a request that would be refused never reaches Raft.
    pub fn check_token(
        &self,
        token_id: &str,
        secret_sha256: &str,
        kind: TokenKind,
        at_ms: i64,
    ) -> Result<TokenCheck, StorageError> {
        self.with(|c| {
            let row = crate::apply::load_token(c, token_id)?;
            let verdict = crate::apply::token_verdict(
                row.as_ref(),
                token_id,
                secret_sha256,
                kind.as_str(),
                at_ms,
            );
            Ok(match (row, verdict) {
                (_, Ok(())) => TokenCheck::Usable,
                (None, Err(r)) => TokenCheck::Unknown(r),
                (Some(_), Err(r)) => TokenCheck::Refused(r),
            })
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

    /// Up to `limit` audit records with seq > `after_seq`, oldest first.
    pub fn audit(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditRecord>, StorageError> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, at_ms, actor, action, target, detail, outcome, hash
                 FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![after, limit], |r| {
                Ok(AuditRecord {
                    seq: r.get::<_, i64>(0)? as u64,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                    outcome: r.get(6)?,
                    hash: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Walks the whole audit chain in one read transaction and checks every hash and link,
    /// and that the last hash is the head recorded in meta.
    pub fn verify_audit_chain(&self) -> Result<AuditCheck, StorageError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let head =
                meta_blob(&tx, "audit_head")?.map(|b| String::from_utf8_lossy(&b).into_owned());
            let mut walker = ChainWalker::new();
            {
                let mut stmt = tx.prepare(
                    "SELECT seq, at_ms, actor, action, target, detail, outcome, prev_hash, hash
                     FROM audit ORDER BY seq",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let seq: i64 = r.get(0)?;
                    let (actor, action, target, detail, outcome, prev, hash): (
                        String,
                        String,
                        String,
                        String,
                        String,
                        String,
                        String,
                    ) = (
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    );
                    let row = StoredRow {
                        fields: AuditFields {
                            seq: seq as u64,
                            at_ms: r.get(1)?,
                            actor: &actor,
                            action: &action,
                            target: &target,
                            detail: &detail,
                            outcome: &outcome,
                        },
                        prev_hash: &prev,
                        hash: &hash,
                    };
                    if let Err(seq) = walker.step(&row) {
                        return Ok(AuditCheck::Broken { seq });
                    }
                }
            }
            Ok(match walker.finish(head.as_deref()) {
                Ok(records) => AuditCheck::Intact { records },
                Err(seq) => AuditCheck::Broken { seq },
            })
        })
    }

    /// The applied marker as seen by a read connection (the writer's view may be newer by one
    /// in-flight apply).
    pub fn applied_marker(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.with(|c| Ok(meta_blob(c, "applied_marker")?))
    }
}

impl Reader {
    pub(crate) fn new(path: &Path) -> Reader {
        Reader {
            pool: Arc::new(Pool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let conn = self.pool.take()?;
        let out = f(&conn);
        self.pool.give_back(conn);
        out
    }
}

/// Idle connections kept for reuse (agent syncs read concurrently); more are opened on demand
/// and closed when over the cap.
const MAX_IDLE: usize = 32;

struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn take(&self) -> Result<Connection, StorageError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        Ok(open_read_only(&self.path)?)
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}

/// A read-only connection (also `query_only`, belt and braces).
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

const NODE_SELECT: &str =
    "SELECT id, name, api_addr, peer_addr, role, version, joined_at_ms FROM nodes";
const CONFIG_SELECT: &str =
    "SELECT scope_kind, scope_id, key, value, version, updated_at_ms, updated_by FROM config";
const TOKEN_SELECT: &str = "SELECT id, kind, expires_at_ms, uses_left, groups_json, revoked, \
                            created_at_ms FROM tokens";

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

type RawConfig = (String, String, String, String, i64, i64, String);

fn raw_config(r: &Row<'_>) -> rusqlite::Result<RawConfig> {
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

fn config_from_raw(r: RawConfig) -> Result<ConfigEntry, StorageError> {
    let (kind, sid, key, value, version, updated_at_ms, updated_by) = r;
    let scope = Scope::from_columns(&kind, &sid).ok_or_else(|| {
        StorageError::Corrupt(format!("config key {key} has bad scope {kind:?}/{sid:?}"))
    })?;
    Ok(ConfigEntry {
        scope,
        key,
        value,
        version: version as u64,
        updated_at_ms,
        updated_by,
    })
}

fn query_config(
    c: &Connection,
    filter: &str,
    args: &[&str],
) -> Result<Vec<ConfigEntry>, StorageError> {
    let mut stmt = c.prepare(&format!(
        "{CONFIG_SELECT} {filter} ORDER BY scope_kind, scope_id, key"
    ))?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), raw_config)?;
    rows.map(|r| config_from_raw(r?)).collect()
}

type RawToken = (String, String, i64, Option<i64>, String, bool, i64);

fn raw_token(r: &Row<'_>) -> rusqlite::Result<RawToken> {
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

fn token_from_raw(r: RawToken) -> Result<TokenRecord, StorageError> {
    let (id, kind, expires_at_ms, uses_left, groups_json, revoked, created_at_ms) = r;
    let bad = |what: &str| StorageError::Corrupt(format!("token {id} has bad {what}"));
    let kind = TokenKind::parse(&kind).ok_or_else(|| bad("kind"))?;
    let uses_left = uses_left
        .map(u32::try_from)
        .transpose()
        .map_err(|_| bad("uses_left"))?;
    let groups: Vec<String> = serde_json::from_str(&groups_json).map_err(|_| bad("groups"))?;
    Ok(TokenRecord {
        id,
        kind,
        expires_at_ms,
        uses_left,
        groups,
        revoked,
        created_at_ms,
    })
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
