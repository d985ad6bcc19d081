//! The deterministic state machine: applies decoded envelopes inside the caller's transaction.
//!
//! No clock, no randomness, no I/O beyond SQLite: times and ids come in the envelope. Every
//! envelope leaves exactly one audit row, accepted or rejected, chained to the previous one.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::audit::{AuditFields, GENESIS_HASH, chain_hash};
use crate::codec::decode_batch;
use crate::error::StorageError;
use crate::model::{Command, Envelope, NodeRole, Outcome, RejectCode, Rejection, Response, Scope};
use crate::releases;
use crate::rules::{
    check_id, check_name, check_scope, check_text, check_value, constant_time_eq, normalize_sha256,
};
use crate::schema::meta_blob;

/// Applies a run of Raft entries in ONE transaction and stores `applied_marker` with them.
/// Decode errors (including NeedsUpgrade) and SQLite errors leave the database untouched.
pub(crate) fn apply_entries(
    conn: &mut Connection,
    entries: Vec<Option<Vec<u8>>>,
    applied_marker: &[u8],
) -> Result<Vec<Option<Vec<Outcome>>>, StorageError> {
    // Decode everything first: an undecodable entry must not leave half a run applied.
    let decoded = entries
        .iter()
        .map(|e| e.as_deref().map(decode_batch).transpose())
        .collect::<Result<Vec<_>, _>>()?;

    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(decoded.len());
    for batch in decoded {
        let Some(batch) = batch else {
            results.push(None);
            continue;
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for env in &batch {
            let sp = tx.savepoint()?;
            let outcome = match execute(&sp, env) {
                Ok(resp) => {
                    sp.commit()?;
                    Ok(resp)
                }
                Err(Fail::Reject(rej)) => {
                    // Default drop behaviour of a savepoint: ROLLBACK TO + RELEASE.
                    sp.finish()?;
                    Err(rej)
                }
                Err(Fail::Sql(e)) => return Err(e.into()),
            };
            append_audit(&tx, env, &outcome)?;
            outcomes.push(outcome);
        }
        results.push(Some(outcomes));
    }
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('applied_marker', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([applied_marker])?;
    // Durable on return (WAL + synchronous=FULL): every envelope of this call, its audit rows
    // and the applied marker, all or nothing.
    tx.commit()?;
    Ok(results)
}

/// The audit row's descriptive fields for one envelope and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditText {
    pub action: &'static str,
    pub target: String,
    pub detail: String,
}

/// Pure: what the audit log says about `env` given its `outcome`. Never contains secrets or
/// configuration values (only their size and hash). Part of the replicated state, so changing
/// it is a command-format change.
pub(crate) fn audit_text(env: &Envelope, outcome: &Outcome) -> AuditText {
    use serde_json::json;
    let (action, target, detail) = match &env.command {
        Command::InitCluster {
            cluster_id, name, ..
        } => (
            "cluster.init",
            format!("cluster:{cluster_id}"),
            json!({ "name": name }),
        ),
        Command::AddNode {
            id,
            name,
            api_addr,
            peer_addr,
            version,
        } => (
            "node.add",
            format!("node:{id}"),
            json!({ "name": name, "api_addr": api_addr, "peer_addr": peer_addr, "version": version }),
        ),
        Command::JoinNode {
            token_id,
            name,
            api_addr,
            peer_addr,
            version,
            ..
        } => {
            let target = match outcome {
                Ok(Response::NodeId(id)) => format!("node:{id}"),
                _ => format!("token:{token_id}"),
            };
            (
                "node.join",
                target,
                json!({ "token": token_id, "name": name, "api_addr": api_addr,
                        "peer_addr": peer_addr, "version": version }),
            )
        }
        Command::UpdateNode {
            id,
            api_addr,
            peer_addr,
            role,
            version,
        } => (
            "node.update",
            format!("node:{id}"),
            json!({ "api_addr": api_addr, "peer_addr": peer_addr,
                    "role": role.map(NodeRole::as_str), "version": version }),
        ),
        Command::RemoveNode { id } => ("node.remove", format!("node:{id}"), json!({})),
        Command::SetConfig { scope, key, value } => {
            let version = match outcome {
                Ok(Response::ConfigVersion(v)) => Some(*v),
                _ => None,
            };
            (
                "config.set",
                format!("config:{scope}/{key}"),
                json!({ "bytes": value.len(), "value_sha256": hex::encode(Sha256::digest(value)),
                        "version": version }),
            )
        }
        Command::DeleteConfig { scope, key } => {
            ("config.delete", format!("config:{scope}/{key}"), json!({}))
        }
        Command::CreateToken {
            id,
            kind,
            expires_at_ms,
            uses,
            groups,
            ..
        } => (
            "token.create",
            format!("token:{id}"),
            json!({ "kind": kind.as_str(), "expires_at_ms": expires_at_ms, "uses": uses,
                    "groups": groups }),
        ),
        Command::RevokeToken { id } => ("token.revoke", format!("token:{id}"), json!({})),
        Command::EnrollClient {
            token_id,
            client_id,
            hostname,
            cert_serial,
            ..
        } => (
            "client.enroll",
            format!("client:{client_id}"),
            json!({ "token": token_id, "hostname": hostname, "cert_serial": cert_serial }),
        ),
        Command::RevokeClient { client_id } => {
            ("client.revoke", format!("client:{client_id}"), json!({}))
        }
        Command::TouchClients { node_id, seen } => (
            "clients.seen",
            format!("node:{node_id}"),
            json!({ "clients": seen.len() }),
        ),
        Command::ReportInventory {
            client_id,
            facts_json,
        } => (
            "inventory.report",
            format!("client:{client_id}"),
            json!({ "bytes": facts_json.len(), "facts_sha256": hex::encode(Sha256::digest(facts_json)) }),
        ),
        Command::SetBundleTrust {
            version,
            trust_json,
        } => (
            "bundle.trust",
            format!("trust:{version}"),
            json!({ "trust_sha256": hex::encode(Sha256::digest(trust_json)) }),
        ),
        Command::ImportBundle(b) => (
            "bundle.import",
            format!("bundle:{}", b.id),
            json!({
                "type": b.bundle_type.as_str(),
                "channel": b.channel,
                "version": b.version,
                "manifest_sha256": b.manifest_sha256,
                "signers": b.signers,
                "payloads": b.payloads.len(),
                "config_keys": b.config.len(),
                "node": b.node_id,
            }),
        ),
        Command::BlobsHeld { node_id, sha256 } => (
            "blobs.held",
            format!("node:{node_id}"),
            json!({ "blobs": sha256 }),
        ),
        Command::CreateDeployment {
            id,
            artifact,
            version,
            group,
        } => (
            "deployment.create",
            format!("deployment:{id}"),
            json!({ "artifact": artifact, "version": version, "group": group }),
        ),
        Command::ReportDeployment {
            deployment_id,
            client_id,
            status,
            detail,
        } => (
            "deployment.report",
            format!("deployment:{deployment_id}"),
            json!({ "client": client_id, "status": status.as_str(), "detail_bytes": detail.len() }),
        ),
        Command::RenewClientCert {
            client_id,
            cert_serial,
        } => (
            "client.renew",
            format!("client:{client_id}"),
            json!({ "cert_serial": cert_serial }),
        ),
        Command::ImportSignedBundle(b) => (
            "bundle.import",
            format!("manifest:{}", hex::encode(Sha256::digest(&b.manifest))),
            json!({
                "manifest_bytes": b.manifest.len(),
                "config_payloads": b.config_payloads.len(),
                "node": b.node_id,
            }),
        ),
        Command::RevokeAdmin { name } => ("admin.revoke", format!("admin:{name}"), json!({})),
        Command::RotateClientCert {
            client_id,
            old_serial,
            new_serial,
            ..
        } => (
            "client.renew",
            format!("client:{client_id}"),
            json!({ "old_serial": old_serial, "cert_serial": new_serial }),
        ),
        Command::ConfirmClientCert { client_id, serial } => (
            "client.renew.confirm",
            format!("client:{client_id}"),
            json!({ "cert_serial": serial }),
        ),
    };
    // Keys sorted whatever serde_json's features are: the detail is hashed and replicated.
    let detail: std::collections::BTreeMap<String, serde_json::Value> = match detail {
        serde_json::Value::Object(map) => map.into_iter().collect(),
        _ => std::collections::BTreeMap::new(),
    };
    AuditText {
        action,
        target,
        detail: serde_json::to_string(&detail).unwrap_or_default(),
    }
}

/// Pure: the audit outcome column.
pub(crate) fn outcome_text(outcome: &Outcome) -> String {
    match outcome {
        Ok(_) => "ok".to_owned(),
        Err(rej) => format!("rejected: {rej}"),
    }
}

pub(crate) enum Fail {
    Reject(Rejection),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

pub(crate) fn reject(code: RejectCode, message: impl Into<String>) -> Fail {
    Fail::Reject(Rejection::new(code, message))
}

pub(crate) fn invalid(message: String) -> Fail {
    reject(RejectCode::Invalid, message)
}

fn execute(conn: &Connection, env: &Envelope) -> Result<Response, Fail> {
    if !matches!(env.command, Command::InitCluster { .. }) {
        let initialized: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM cluster)")?
            .query_row([], |r| r.get(0))?;
        if !initialized {
            return Err(reject(
                RejectCode::NotInitialized,
                "the cluster is not initialized",
            ));
        }
    }
    match &env.command {
        Command::InitCluster {
            cluster_id,
            name,
            ca_cert_pem,
        } => init_cluster(conn, env.at_ms, cluster_id, name, ca_cert_pem),
        Command::AddNode {
            id,
            name,
            api_addr,
            peer_addr,
            version,
        } => add_node(conn, env.at_ms, *id, name, api_addr, peer_addr, version),
        Command::JoinNode {
            token_id,
            secret_sha256,
            name,
            api_addr,
            peer_addr,
            version,
        } => {
            let node = NewNode {
                name,
                api_addr,
                peer_addr,
                version,
            };
            join_node(conn, env.at_ms, token_id, secret_sha256, node)
        }
        Command::UpdateNode {
            id,
            api_addr,
            peer_addr,
            role,
            version,
        } => update_node(
            conn,
            *id,
            api_addr.as_deref(),
            peer_addr.as_deref(),
            *role,
            version.as_deref(),
        ),
        Command::RemoveNode { id } => remove_node(conn, *id),
        Command::SetConfig { scope, key, value } => set_config(conn, env, scope, key, value),
        Command::DeleteConfig { scope, key } => delete_config(conn, scope, key),
        Command::CreateToken {
            id,
            kind,
            secret_sha256,
            expires_at_ms,
            uses,
            groups,
        } => {
            check_name("token id", id).map_err(invalid)?;
            let exists: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE id = ?1)")?
                .query_row([id], |r| r.get(0))?;
            if exists {
                return Err(reject(
                    RejectCode::AlreadyExists,
                    format!("token {id} already exists"),
                ));
            }
            let secret = normalize_sha256("secret_sha256", secret_sha256).map_err(invalid)?;
            if *expires_at_ms <= env.at_ms {
                return Err(invalid(format!(
                    "token {id} would expire at {expires_at_ms}, not after its creation at {}",
                    env.at_ms
                )));
            }
            if *uses == Some(0) {
                return Err(invalid(format!("token {id} would have zero uses")));
            }
            for g in groups {
                check_name("group id", g).map_err(invalid)?;
            }
            let groups_json = serde_json::Value::from(groups.clone()).to_string();
            conn.prepare_cached(
                "INSERT INTO tokens (id, kind, secret_sha256, expires_at_ms, uses_left,
                                     groups_json, revoked, created_at_ms, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
            )?
            .execute(params![
                id,
                kind.as_str(),
                secret,
                expires_at_ms,
                uses,
                groups_json,
                env.at_ms,
                env.actor
            ])?;
            Ok(Response::Done)
        }
        Command::RevokeToken { id } => {
            let n = conn
                .prepare_cached("UPDATE tokens SET revoked = 1 WHERE id = ?1")?
                .execute([id])?;
            if n == 0 {
                return Err(reject(
                    RejectCode::NotFound,
                    format!("token {id} does not exist"),
                ));
            }
            Ok(Response::Done)
        }
        Command::EnrollClient {
            token_id,
            secret_sha256,
            client_id,
            hostname,
            cert_serial,
        } => enroll_client(
            conn,
            env.at_ms,
            token_id,
            secret_sha256,
            client_id,
            hostname,
            cert_serial,
        ),
        Command::RevokeClient { client_id } => revoke_client(conn, env.at_ms, client_id),
        Command::TouchClients { node_id, seen } => touch_clients(conn, *node_id, seen),
        Command::ReportInventory {
            client_id,
            facts_json,
        } => report_inventory(conn, env.at_ms, client_id, facts_json),
        Command::SetBundleTrust {
            version,
            trust_json,
        } => releases::set_bundle_trust(conn, env.at_ms, *version, trust_json),
        Command::ImportBundle(b) => releases::import_bundle(conn, env, b),
        Command::BlobsHeld { node_id, sha256 } => {
            releases::blobs_held(conn, env.at_ms, *node_id, sha256)
        }
        Command::CreateDeployment {
            id,
            artifact,
            version,
            group,
        } => releases::create_deployment(conn, env, id, artifact, *version, group),
        Command::ReportDeployment {
            deployment_id,
            client_id,
            status,
            detail,
        } => {
            releases::report_deployment(conn, env.at_ms, deployment_id, client_id, *status, detail)
        }
        Command::RenewClientCert {
            client_id,
            cert_serial,
        } => releases::renew_client_cert(conn, client_id, cert_serial),
        Command::ImportSignedBundle(b) => releases::import_signed_bundle(conn, env, b),
        Command::RevokeAdmin { name } => revoke_admin(conn, env.at_ms, name),
        Command::RotateClientCert {
            client_id,
            old_serial,
            new_serial,
            new_key_sha256,
        } => releases::rotate_client_cert(
            conn,
            env.at_ms,
            client_id,
            (old_serial, new_serial),
            new_key_sha256,
        ),
        Command::ConfirmClientCert { client_id, serial } => {
            releases::confirm_client_cert(conn, env.at_ms, client_id, serial)
        }
    }
}

/// Revokes the admin certificates named `name` issued up to `at_ms` (a later revocation of
/// the same name moves the line forward, never back).
fn revoke_admin(conn: &Connection, at_ms: i64, name: &str) -> Result<Response, Fail> {
    check_name("admin name", name).map_err(invalid)?;
    conn.prepare_cached(
        "INSERT INTO revoked_admins (name, revoked_at_ms) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET revoked_at_ms = MAX(revoked_at_ms, excluded.revoked_at_ms)",
    )?
    .execute(params![name, at_ms])?;
    Ok(Response::Done)
}

fn init_cluster(
    conn: &Connection,
    at_ms: i64,
    cluster_id: &str,
    name: &str,
    ca_cert_pem: &str,
) -> Result<Response, Fail> {
    let existing: Option<String> = conn
        .query_row("SELECT id FROM cluster", [], |r| r.get(0))
        .optional()?;
    if let Some(existing) = existing {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("the cluster is already initialized as {existing}"),
        ));
    }
    check_name("cluster id", cluster_id).map_err(invalid)?;
    check_text("cluster name", name).map_err(invalid)?;
    if ca_cert_pem.trim().is_empty() {
        return Err(invalid("CA certificate is empty".to_owned()));
    }
    conn.prepare_cached(
        "INSERT INTO cluster (singleton, id, name, ca_cert_pem, created_at_ms)
         VALUES (1, ?1, ?2, ?3, ?4)",
    )?
    .execute(params![cluster_id, name, ca_cert_pem, at_ms])?;
    Ok(Response::Done)
}

struct NewNode<'a> {
    name: &'a str,
    api_addr: &'a str,
    peer_addr: &'a str,
    version: &'a str,
}

impl NewNode<'_> {
    fn check(&self) -> Result<(), Fail> {
        check_text("node name", self.name).map_err(invalid)?;
        check_text("api address", self.api_addr).map_err(invalid)?;
        check_text("peer address", self.peer_addr).map_err(invalid)?;
        check_text("node version", self.version).map_err(invalid)?;
        Ok(())
    }

    fn insert(&self, conn: &Connection, id: i64, role: NodeRole, at_ms: i64) -> Result<(), Fail> {
        conn.prepare_cached(
            "INSERT INTO nodes (id, name, api_addr, peer_addr, role, version, joined_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            id,
            self.name,
            self.api_addr,
            self.peer_addr,
            role.as_str(),
            self.version,
            at_ms
        ])?;
        Ok(())
    }
}

fn next_node_id(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'next_node_id'")?
        .query_row([], |r| r.get(0))
}

fn set_next_node_id(conn: &Connection, next: i64) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'next_node_id'")?
        .execute([next])?;
    Ok(())
}

/// Node ids are stored as SQLite integers: 1..=i64::MAX.
pub(crate) fn node_id_sql(id: u64) -> Result<i64, Fail> {
    match i64::try_from(id) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(invalid(format!(
            "node id {id} is out of range 1..={}",
            i64::MAX
        ))),
    }
}

fn node_role(conn: &Connection, id: i64) -> Result<Option<String>, rusqlite::Error> {
    conn.prepare_cached("SELECT role FROM nodes WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

fn add_node(
    conn: &Connection,
    at_ms: i64,
    id: u64,
    name: &str,
    api_addr: &str,
    peer_addr: &str,
    version: &str,
) -> Result<Response, Fail> {
    let sql_id = node_id_sql(id)?;
    let node = NewNode {
        name,
        api_addr,
        peer_addr,
        version,
    };
    node.check()?;
    if node_role(conn, sql_id)?.is_some() {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("node {id} already exists"),
        ));
    }
    let next = next_node_id(conn)?;
    if sql_id < next {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!(
                "node id {id} was already allocated (next free id is {next}); ids are never reused"
            ),
        ));
    }
    node.insert(conn, sql_id, NodeRole::Voter, at_ms)?;
    let bumped = sql_id
        .checked_add(1)
        .ok_or_else(|| invalid(format!("node id {id} leaves no id after it")))?;
    set_next_node_id(conn, bumped)?;
    Ok(Response::Done)
}

fn join_node(
    conn: &Connection,
    at_ms: i64,
    token_id: &str,
    secret_sha256: &str,
    node: NewNode<'_>,
) -> Result<Response, Fail> {
    node.check()?;
    consume_token(conn, at_ms, token_id, secret_sha256, "node")?;
    let id = next_node_id(conn)?;
    let bumped = id
        .checked_add(1)
        .ok_or_else(|| invalid("node ids are exhausted".to_owned()))?;
    node.insert(conn, id, NodeRole::Joining, at_ms)?;
    set_next_node_id(conn, bumped)?;
    Ok(Response::NodeId(id as u64))
}

/// A token row as stored, for the checks shared by `apply` and the pre-check on the read side.
pub(crate) struct TokenRow {
    kind: String,
    secret_sha256: String,
    expires_at_ms: i64,
    uses_left: Option<i64>,
    revoked: bool,
    groups_json: String,
}

pub(crate) fn load_token(
    conn: &Connection,
    token_id: &str,
) -> Result<Option<TokenRow>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT kind, secret_sha256, expires_at_ms, uses_left, revoked, groups_json FROM tokens WHERE id = ?1",
    )?
    .query_row([token_id], |r| {
        Ok(TokenRow {
            kind: r.get(0)?,
            secret_sha256: r.get(1)?,
            expires_at_ms: r.get(2)?,
            uses_left: r.get(3)?,
            revoked: r.get(4)?,
            groups_json: r.get(5)?,
        })
    })
    .optional()
}

/// Whether a token of `kind` may be used at `at_ms` with this secret hash: it exists, is of
/// that kind, the secret matches (compared in constant time), it is not revoked, not expired
/// and has uses left. Pure; the same verdict in the API's pre-check and in `apply`.
pub(crate) fn token_verdict(
    row: Option<&TokenRow>,
    token_id: &str,
    secret_sha256: &str,
    kind: &str,
    at_ms: i64,
) -> Result<(), Rejection> {
    let token_invalid = |why: String| Rejection {
        code: RejectCode::TokenInvalid,
        message: why,
    };
    let Some(row) = row else {
        return Err(token_invalid(format!("token {token_id} does not exist")));
    };
    if row.kind != kind {
        return Err(token_invalid(format!(
            "token {token_id} is not a {kind} token"
        )));
    }
    let secret_ok = normalize_sha256("secret_sha256", secret_sha256)
        .map(|s| constant_time_eq(s.as_bytes(), row.secret_sha256.as_bytes()))
        .unwrap_or(false);
    if !secret_ok {
        return Err(token_invalid(format!(
            "the secret does not match token {token_id}"
        )));
    }
    if row.revoked {
        return Err(token_invalid(format!("token {token_id} is revoked")));
    }
    if at_ms >= row.expires_at_ms {
        return Err(Rejection {
            code: RejectCode::TokenExpired,
            message: format!("token {token_id} expired at {}", row.expires_at_ms),
        });
    }
    if row.uses_left.is_some_and(|left| left <= 0) {
        return Err(Rejection {
            code: RejectCode::TokenUsedUp,
            message: format!("token {token_id} has no uses left"),
        });
    }
    Ok(())
}

/// Checks a token of `kind` against its stored secret hash, revocation, expiry (`at_ms`)
/// and uses, consumes one use, and returns the groups it grants.
fn consume_token(
    conn: &Connection,
    at_ms: i64,
    token_id: &str,
    secret_sha256: &str,
    kind: &str,
) -> Result<Vec<String>, Fail> {
    let row = load_token(conn, token_id)?;
    token_verdict(row.as_ref(), token_id, secret_sha256, kind, at_ms).map_err(Fail::Reject)?;
    let Some(row) = row else {
        return Err(reject(
            RejectCode::TokenInvalid,
            format!("token {token_id} does not exist"),
        ));
    };
    if let Some(left) = row.uses_left {
        conn.prepare_cached("UPDATE tokens SET uses_left = ?1 WHERE id = ?2")?
            .execute(params![left - 1, token_id])?;
    }
    serde_json::from_str(&row.groups_json).map_err(|e| {
        Fail::Sql(rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            Box::new(e),
        ))
    })
}

fn enroll_client(
    conn: &Connection,
    at_ms: i64,
    token_id: &str,
    secret_sha256: &str,
    client_id: &str,
    hostname: &str,
    cert_serial: &str,
) -> Result<Response, Fail> {
    check_id("client id", client_id).map_err(invalid)?;
    check_text("hostname", hostname).map_err(invalid)?;
    check_id("certificate serial", cert_serial).map_err(invalid)?;
    let groups = consume_token(conn, at_ms, token_id, secret_sha256, "client")?;
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM clients WHERE id = ?1)")?
        .query_row([client_id], |r| r.get(0))?;
    if exists {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("client {client_id} already exists"),
        ));
    }
    let groups_json = serde_json::to_string(&groups).unwrap_or_else(|_| "[]".to_owned());
    conn.prepare_cached(
        "INSERT INTO clients (id, hostname, groups_json, cert_serial, enrolled_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![client_id, hostname, groups_json, cert_serial, at_ms])?;
    Ok(Response::Done)
}

fn revoke_client(conn: &Connection, at_ms: i64, client_id: &str) -> Result<Response, Fail> {
    let serial: Option<String> = conn
        .prepare_cached("SELECT cert_serial FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    let Some(serial) = serial else {
        return Err(reject(
            RejectCode::NotFound,
            format!("client {client_id} does not exist"),
        ));
    };
    conn.prepare_cached("UPDATE clients SET revoked = 1 WHERE id = ?1")?
        .execute([client_id])?;
    conn.prepare_cached(
        "INSERT INTO revoked_serials (serial, client_id, revoked_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (serial) DO NOTHING",
    )?
    .execute(params![serial, client_id, at_ms])?;
    Ok(Response::Done)
}

fn report_inventory(
    conn: &Connection,
    at_ms: i64,
    client_id: &str,
    facts_json: &str,
) -> Result<Response, Fail> {
    if facts_json.len() > crate::rules::MAX_FACTS_BYTES {
        return Err(invalid(format!(
            "inventory of client {client_id} is {} bytes, at most {} allowed",
            facts_json.len(),
            crate::rules::MAX_FACTS_BYTES
        )));
    }
    let facts: serde_json::Value = serde_json::from_str(facts_json)
        .map_err(|e| invalid(format!("inventory of client {client_id} is not JSON: {e}")))?;
    if !facts.is_object() {
        return Err(invalid(format!(
            "inventory of client {client_id} is not a JSON object"
        )));
    }
    let revoked: Option<bool> = conn
        .prepare_cached("SELECT revoked FROM clients WHERE id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    match revoked {
        None => {
            return Err(reject(
                RejectCode::NotFound,
                format!("client {client_id} does not exist"),
            ));
        }
        Some(true) => return Err(invalid(format!("client {client_id} is revoked"))),
        Some(false) => {}
    }
    let sha = hex::encode(Sha256::digest(facts_json));
    let old: Option<(String, String)> = conn
        .prepare_cached("SELECT facts_json, facts_sha256 FROM inventory WHERE client_id = ?1")?
        .query_row([client_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if old.as_ref().is_some_and(|(_, s)| *s == sha) {
        return Ok(Response::Done);
    }
    let old_facts = old
        .and_then(|(j, _)| serde_json::from_str(&j).ok())
        .unwrap_or(serde_json::Value::Null);
    let changed = crate::rules::changed_facts(&old_facts, &facts);
    conn.prepare_cached(
        "INSERT INTO inventory (client_id, facts_json, facts_sha256, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (client_id) DO UPDATE SET facts_json = excluded.facts_json,
             facts_sha256 = excluded.facts_sha256, updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![client_id, facts_json, sha, at_ms])?;
    conn.prepare_cached(
        "INSERT INTO inventory_history (client_id, at_ms, facts_sha256, changed_json) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![client_id, at_ms, sha, serde_json::to_string(&changed).unwrap_or_else(|_| "[]".into())])?;
    Ok(Response::Done)
}

fn touch_clients(
    conn: &Connection,
    node_id: u64,
    seen: &[(String, i64)],
) -> Result<Response, Fail> {
    let node = node_id_sql(node_id)?;
    let mut stmt = conn.prepare_cached(
        "UPDATE clients SET last_seen_ms = ?2, last_seen_node = ?3
         WHERE id = ?1 AND revoked = 0 AND (last_seen_ms IS NULL OR last_seen_ms < ?2)",
    )?;
    for (id, at) in seen {
        stmt.execute(params![id, at, node])?;
    }
    Ok(Response::Done)
}

fn update_node(
    conn: &Connection,
    id: u64,
    api_addr: Option<&str>,
    peer_addr: Option<&str>,
    role: Option<NodeRole>,
    version: Option<&str>,
) -> Result<Response, Fail> {
    let sql_id = node_id_sql(id)
        .map_err(|_| reject(RejectCode::NotFound, format!("node {id} does not exist")))?;
    match node_role(conn, sql_id)?.as_deref() {
        None => {
            return Err(reject(
                RejectCode::NotFound,
                format!("node {id} does not exist"),
            ));
        }
        Some("removed") => {
            return Err(invalid(format!("node {id} is removed and cannot change")));
        }
        Some(_) => {}
    }
    if api_addr.is_none() && peer_addr.is_none() && role.is_none() && version.is_none() {
        return Err(invalid(format!("nothing to update on node {id}")));
    }
    for (what, v) in [
        ("api address", api_addr),
        ("peer address", peer_addr),
        ("node version", version),
    ] {
        if let Some(v) = v {
            check_text(what, v).map_err(invalid)?;
        }
    }
    conn.prepare_cached(
        "UPDATE nodes SET api_addr = COALESCE(?1, api_addr), peer_addr = COALESCE(?2, peer_addr),
                          role = COALESCE(?3, role), version = COALESCE(?4, version)
         WHERE id = ?5",
    )?
    .execute(params![
        api_addr,
        peer_addr,
        role.map(NodeRole::as_str),
        version,
        sql_id
    ])?;
    Ok(Response::Done)
}

fn remove_node(conn: &Connection, id: u64) -> Result<Response, Fail> {
    let not_found = || reject(RejectCode::NotFound, format!("node {id} does not exist"));
    let sql_id = node_id_sql(id).map_err(|_| not_found())?;
    if node_role(conn, sql_id)?.is_none() {
        return Err(not_found());
    }
    // Removing a removed node is a no-op: the row stays so its id is never reused.
    conn.prepare_cached("UPDATE nodes SET role = 'removed' WHERE id = ?1")?
        .execute([sql_id])?;
    Ok(Response::Done)
}

pub(crate) fn set_config(
    conn: &Connection,
    env: &Envelope,
    scope: &Scope,
    key: &str,
    value: &str,
) -> Result<Response, Fail> {
    check_scope(scope).map_err(invalid)?;
    check_name("config key", key).map_err(invalid)?;
    check_value(key, value).map_err(invalid)?;
    let (kind, sid) = scope.to_columns();
    let old: Option<i64> = conn
        .query_row(
            "SELECT version FROM config WHERE scope_kind = ?1 AND scope_id = ?2 AND key = ?3",
            params![kind, sid, key],
            |r| r.get(0),
        )
        .optional()?;
    let version = old.unwrap_or(0).saturating_add(1);
    conn.prepare_cached(
        "INSERT INTO config (scope_kind, scope_id, key, value, version, updated_at_ms, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (scope_kind, scope_id, key) DO UPDATE SET value = excluded.value,
             version = excluded.version, updated_at_ms = excluded.updated_at_ms,
             updated_by = excluded.updated_by",
    )?
    .execute(params![
        kind, sid, key, value, version, env.at_ms, env.actor
    ])?;
    Ok(Response::ConfigVersion(version as u64))
}

fn delete_config(conn: &Connection, scope: &Scope, key: &str) -> Result<Response, Fail> {
    check_scope(scope).map_err(invalid)?;
    check_name("config key", key).map_err(invalid)?;
    let (kind, sid) = scope.to_columns();
    let n = conn
        .prepare_cached("DELETE FROM config WHERE scope_kind = ?1 AND scope_id = ?2 AND key = ?3")?
        .execute(params![kind, sid, key])?;
    if n == 0 {
        return Err(reject(
            RejectCode::NotFound,
            format!("config key {key} is not set in scope {scope}"),
        ));
    }
    Ok(Response::Done)
}

/// Appends the envelope's audit row, chained to `meta.audit_head`, and moves the head.
fn append_audit(conn: &Connection, env: &Envelope, outcome: &Outcome) -> Result<(), StorageError> {
    let text = audit_text(env, outcome);
    let outcome = outcome_text(outcome);
    let last: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM audit")?
        .query_row([], |r| r.get(0))?;
    let prev = match meta_blob(conn, "audit_head")? {
        Some(b) => String::from_utf8(b)
            .map_err(|_| StorageError::Corrupt("meta.audit_head is not text".to_owned()))?,
        None => GENESIS_HASH.to_owned(),
    };
    let seq = last + 1;
    let fields = AuditFields {
        seq: seq as u64,
        at_ms: env.at_ms,
        actor: &env.actor,
        action: text.action,
        target: &text.target,
        detail: &text.detail,
        outcome: &outcome,
    };
    let hash = chain_hash(&prev, &fields)
        .ok_or_else(|| StorageError::Corrupt(format!("meta.audit_head {prev:?} is not a hash")))?;
    conn.prepare_cached(
        "INSERT INTO audit (seq, at_ms, actor, action, target, detail, outcome, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        seq,
        env.at_ms,
        env.actor,
        text.action,
        text.target,
        text.detail,
        outcome,
        prev,
        hash
    ])?;
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('audit_head', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([hash.as_bytes()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_batch;
    use crate::model::TokenKind;
    use crate::schema::migrate;

    const NOW: i64 = 1_000;

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s))
    }

    fn env(command: Command) -> Envelope {
        Envelope {
            at_ms: NOW,
            actor: "tester".into(),
            command,
        }
    }

    fn init() -> Command {
        Command::InitCluster {
            cluster_id: "c-1".into(),
            name: "plant".into(),
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n".into(),
        }
    }

    fn add(id: u64, name: &str) -> Command {
        Command::AddNode {
            id,
            name: name.into(),
            api_addr: "10.0.0.1:7443".into(),
            peer_addr: "10.0.0.1:7444".into(),
            version: "0.1.0".into(),
        }
    }

    fn join(token: &str, secret: &str) -> Command {
        Command::JoinNode {
            token_id: token.into(),
            secret_sha256: sha(secret),
            name: "n".into(),
            api_addr: "a:1".into(),
            peer_addr: "a:2".into(),
            version: "0.1.0".into(),
        }
    }

    fn token(id: &str, kind: TokenKind, uses: Option<u32>) -> Command {
        Command::CreateToken {
            id: id.into(),
            kind,
            secret_sha256: sha("secret"),
            expires_at_ms: 10_000,
            uses,
            groups: vec!["lab".into()],
        }
    }

    fn set(scope: Scope, key: &str, value: &str) -> Command {
        Command::SetConfig {
            scope,
            key: key.into(),
            value: value.into(),
        }
    }

    fn upd(id: u64) -> Command {
        Command::UpdateNode {
            id,
            api_addr: Some("10.0.0.9:7443".into()),
            peer_addr: None,
            role: Some(NodeRole::Learner),
            version: None,
        }
    }

    /// Initialized cluster with node 1, node token t1 (1 use) and client token c1.
    fn base() -> Vec<Command> {
        vec![
            init(),
            add(1, "first"),
            token("t1", TokenKind::Node, Some(1)),
            token("c1", TokenKind::Client, None),
        ]
    }

    fn fresh() -> Result<Connection, StorageError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        Ok(conn)
    }

    fn run(conn: &mut Connection, envs: Vec<Envelope>) -> Result<Vec<Outcome>, StorageError> {
        let mut out = apply_entries(conn, vec![Some(encode_batch(&envs))], b"m")?;
        Ok(out.pop().flatten().unwrap_or_default())
    }

    fn audit_count(conn: &Connection) -> Result<i64, rusqlite::Error> {
        conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
    }

    type Want = Result<Response, RejectCode>;

    #[test]
    fn command_table() -> Result<(), StorageError> {
        use Response::*;
        let g = |s: &str| Scope::Group(s.into());
        let cases: Vec<(&str, bool, Vec<Envelope>, Envelope, Want)> = vec![
            // (name, start from base()?, extra setup, command, expected)
            ("init", false, vec![], env(init()), Ok(Done)),
            (
                "init twice",
                true,
                vec![],
                env(init()),
                Err(RejectCode::AlreadyExists),
            ),
            (
                "init empty pem",
                false,
                vec![],
                env(Command::InitCluster {
                    cluster_id: "c".into(),
                    name: "n".into(),
                    ca_cert_pem: " ".into(),
                }),
                Err(RejectCode::Invalid),
            ),
            (
                "init bad id",
                false,
                vec![],
                env(Command::InitCluster {
                    cluster_id: "".into(),
                    name: "n".into(),
                    ca_cert_pem: "p".into(),
                }),
                Err(RejectCode::Invalid),
            ),
            (
                "add before init",
                false,
                vec![],
                env(add(1, "a")),
                Err(RejectCode::NotInitialized),
            ),
            (
                "set before init",
                false,
                vec![],
                env(set(Scope::Global, "k", "v")),
                Err(RejectCode::NotInitialized),
            ),
            ("add", true, vec![], env(add(2, "b")), Ok(Done)),
            (
                "add existing",
                true,
                vec![],
                env(add(1, "a")),
                Err(RejectCode::AlreadyExists),
            ),
            (
                "add id 0",
                true,
                vec![],
                env(add(0, "a")),
                Err(RejectCode::Invalid),
            ),
            (
                "add id too big",
                true,
                vec![],
                env(add(u64::MAX, "a")),
                Err(RejectCode::Invalid),
            ),
            (
                "add id i64::MAX rolls back",
                true,
                vec![],
                env(add(i64::MAX as u64, "a")),
                Err(RejectCode::Invalid),
            ),
            (
                "add below next id",
                true,
                vec![env(add(5, "e"))],
                env(add(3, "c")),
                Err(RejectCode::AlreadyExists),
            ),
            (
                "add empty name",
                true,
                vec![],
                env(add(2, " ")),
                Err(RejectCode::Invalid),
            ),
            (
                "join",
                true,
                vec![],
                env(join("t1", "secret")),
                Ok(NodeId(2)),
            ),
            (
                "join after add 7",
                true,
                vec![env(add(7, "x"))],
                env(join("t1", "secret")),
                Ok(NodeId(8)),
            ),
            (
                "join wrong secret",
                true,
                vec![],
                env(join("t1", "nope")),
                Err(RejectCode::TokenInvalid),
            ),
            (
                "join unknown token",
                true,
                vec![],
                env(join("zz", "secret")),
                Err(RejectCode::TokenInvalid),
            ),
            (
                "join with client token",
                true,
                vec![],
                env(join("c1", "secret")),
                Err(RejectCode::TokenInvalid),
            ),
            (
                "join revoked",
                true,
                vec![env(Command::RevokeToken { id: "t1".into() })],
                env(join("t1", "secret")),
                Err(RejectCode::TokenInvalid),
            ),
            (
                "join expired",
                true,
                vec![],
                Envelope {
                    at_ms: 10_000,
                    ..env(join("t1", "secret"))
                },
                Err(RejectCode::TokenExpired),
            ),
            (
                "join used up",
                true,
                vec![env(join("t1", "secret"))],
                env(join("t1", "secret")),
                Err(RejectCode::TokenUsedUp),
            ),
            (
                "join bad secret hex",
                true,
                vec![],
                env(Command::JoinNode {
                    token_id: "t1".into(),
                    secret_sha256: "xyz".into(),
                    name: "n".into(),
                    api_addr: "a".into(),
                    peer_addr: "b".into(),
                    version: "v".into(),
                }),
                Err(RejectCode::TokenInvalid),
            ),
            ("update", true, vec![], env(upd(1)), Ok(Done)),
            (
                "update missing",
                true,
                vec![],
                env(upd(9)),
                Err(RejectCode::NotFound),
            ),
            (
                "update nothing",
                true,
                vec![],
                env(Command::UpdateNode {
                    id: 1,
                    api_addr: None,
                    peer_addr: None,
                    role: None,
                    version: None,
                }),
                Err(RejectCode::Invalid),
            ),
            (
                "update removed",
                true,
                vec![env(Command::RemoveNode { id: 1 })],
                env(upd(1)),
                Err(RejectCode::Invalid),
            ),
            (
                "remove",
                true,
                vec![],
                env(Command::RemoveNode { id: 1 }),
                Ok(Done),
            ),
            (
                "remove missing",
                true,
                vec![],
                env(Command::RemoveNode { id: 4 }),
                Err(RejectCode::NotFound),
            ),
            (
                "set",
                true,
                vec![],
                env(set(Scope::Global, "ntp", "10.0.0.1")),
                Ok(ConfigVersion(1)),
            ),
            (
                "set again",
                true,
                vec![env(set(g("lab"), "ntp", "a"))],
                env(set(g("lab"), "ntp", "b")),
                Ok(ConfigVersion(2)),
            ),
            (
                "set other scope",
                true,
                vec![env(set(g("lab"), "ntp", "a"))],
                env(set(g("ship"), "ntp", "b")),
                Ok(ConfigVersion(1)),
            ),
            (
                "set bad key",
                true,
                vec![],
                env(set(Scope::Global, "a\nb", "v")),
                Err(RejectCode::Invalid),
            ),
            (
                "set empty key",
                true,
                vec![],
                env(set(Scope::Global, "", "v")),
                Err(RejectCode::Invalid),
            ),
            (
                "set huge value",
                true,
                vec![],
                env(set(
                    Scope::Global,
                    "k",
                    &"x".repeat(crate::rules::MAX_VALUE_BYTES + 1),
                )),
                Err(RejectCode::Invalid),
            ),
            (
                "set empty group",
                true,
                vec![],
                env(set(g(""), "k", "v")),
                Err(RejectCode::Invalid),
            ),
            (
                "delete",
                true,
                vec![env(set(Scope::Client("h".into()), "k", "v"))],
                env(Command::DeleteConfig {
                    scope: Scope::Client("h".into()),
                    key: "k".into(),
                }),
                Ok(Done),
            ),
            (
                "delete absent",
                true,
                vec![],
                env(Command::DeleteConfig {
                    scope: Scope::Global,
                    key: "k".into(),
                }),
                Err(RejectCode::NotFound),
            ),
            (
                "token",
                true,
                vec![],
                env(token("t2", TokenKind::Client, Some(3))),
                Ok(Done),
            ),
            (
                "token dup",
                true,
                vec![],
                env(token("t1", TokenKind::Node, None)),
                Err(RejectCode::AlreadyExists),
            ),
            (
                "token zero uses",
                true,
                vec![],
                env(token("t2", TokenKind::Node, Some(0))),
                Err(RejectCode::Invalid),
            ),
            (
                "token already expired",
                true,
                vec![],
                Envelope {
                    at_ms: 10_000,
                    ..env(token("t2", TokenKind::Node, None))
                },
                Err(RejectCode::Invalid),
            ),
            (
                "token bad hash",
                true,
                vec![],
                env(Command::CreateToken {
                    id: "t2".into(),
                    kind: TokenKind::Node,
                    secret_sha256: "abc".into(),
                    expires_at_ms: 10_000,
                    uses: None,
                    groups: vec![],
                }),
                Err(RejectCode::Invalid),
            ),
            (
                "token bad group",
                true,
                vec![],
                env(Command::CreateToken {
                    id: "t2".into(),
                    kind: TokenKind::Client,
                    secret_sha256: sha("s"),
                    expires_at_ms: 10_000,
                    uses: None,
                    groups: vec!["".into()],
                }),
                Err(RejectCode::Invalid),
            ),
            (
                "revoke",
                true,
                vec![],
                env(Command::RevokeToken { id: "c1".into() }),
                Ok(Done),
            ),
            (
                "revoke missing",
                true,
                vec![],
                env(Command::RevokeToken { id: "zz".into() }),
                Err(RejectCode::NotFound),
            ),
        ];
        for (name, with_base, extra, cmd, want) in cases {
            let mut conn = fresh()?;
            let mut setup: Vec<Envelope> = if with_base {
                base().into_iter().map(env).collect()
            } else {
                vec![]
            };
            setup.extend(extra);
            for (i, o) in run(&mut conn, setup)?.into_iter().enumerate() {
                assert!(o.is_ok(), "{name}: setup step {i} failed: {o:?}");
            }
            let before = audit_count(&conn)?;
            let dump_before = dump(&conn)?;
            let got = run(&mut conn, vec![cmd])?;
            assert_eq!(got.len(), 1, "{name}");
            let got = got.into_iter().next().unwrap_or_else(|| unreachable!());
            let outcome: String = conn.query_row(
                "SELECT outcome FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )?;
            assert_eq!(
                audit_count(&conn)?,
                before + 1,
                "{name}: one audit row per envelope"
            );
            match (&got, &want) {
                (Ok(r), Ok(w)) => {
                    assert_eq!(r, w, "{name}");
                    assert_eq!(outcome, "ok", "{name}");
                }
                (Err(rej), Err(code)) => {
                    assert_eq!(rej.code, *code, "{name}: {}", rej.message);
                    assert!(!rej.message.is_empty(), "{name}");
                    assert_eq!(outcome, format!("rejected: {rej}"), "{name}");
                    // A rejection changes nothing but the audit log.
                    assert_eq!(
                        dump(&conn)?,
                        dump_before,
                        "{name}: rejected command left changes"
                    );
                }
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        Ok(())
    }

    /// Every table except audit and meta's audit_head/marker, as text.
    fn dump(conn: &Connection) -> Result<Vec<String>, rusqlite::Error> {
        let mut out = Vec::new();
        for (table, order) in [
            ("cluster", "singleton"),
            ("nodes", "id"),
            ("config", "scope_kind, scope_id, key"),
            ("tokens", "id"),
            ("meta WHERE key = 'next_node_id'", "key"),
        ] {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
            let n = stmt.column_count();
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let mut line = table.to_owned();
                for i in 0..n {
                    line.push_str(&format!("|{:?}", r.get_ref(i)?));
                }
                out.push(line);
            }
        }
        Ok(out)
    }

    /// `ImportSignedBundle` is verified in apply whoever proposes it: no or a forged
    /// signature, a stranger's key, a `created` far past the time floor, or a config payload
    /// whose bytes differ from the manifest are refused and change nothing; the good one applies
    /// its config; the very same bytes again are a no-op.
    #[test]
    fn signed_bundles_are_verified_in_apply() -> Result<(), StorageError> {
        use outpost_bundles::{
            BundleType as BT, Manifest, PayloadEntry, PayloadKind, PublicKey, SignatureDocument,
            SignatureEntry, SigningKey, TrustDocument, manifest_bytes, sign_manifest,
        };
        let release = SigningKey::from_bytes(&[7; 32]);
        let stranger = SigningKey::from_bytes(&[8; 32]);
        let trust = TrustDocument::initial(vec![PublicKey::of(&release)], 1).expect("trust");
        let config = b"[global]\nsite = \"a\"\n".to_vec();
        let now_s = NOW / 1000;
        let manifest = |created: i64| Manifest {
            format: 1,
            id: "ab".repeat(16),
            bundle_type: BT::Content,
            channel: Some("site".into()),
            version: 1,
            created,
            expires: created + 86_400 * 30,
            targets: vec!["any".into()],
            payloads: vec![PayloadEntry {
                name: "cfg".into(),
                kind: PayloadKind::Config,
                size: config.len() as u64,
                sha256: sha(std::str::from_utf8(&config).expect("utf8")),
            }],
            trust: None,
            channel_resets: Default::default(),
        };
        let cmd = |m: &Manifest, sig: Option<&SigningKey>, payload: Vec<u8>| {
            let bytes = manifest_bytes(m).expect("manifest");
            let entry = match sig {
                Some(k) => sign_manifest(k, m.bundle_type, &bytes),
                None => SignatureEntry {
                    key_id: "nobody".into(),
                    signature: "00".repeat(64),
                },
            };
            let sigs = SignatureDocument {
                format: 1,
                signatures: vec![entry],
            };
            Command::ImportSignedBundle(Box::new(crate::model::SignedBundle {
                manifest: bytes,
                signatures: serde_json::to_vec(&sigs).expect("json"),
                config_payloads: vec![payload],
                cluster_time: now_s,
                node_id: 1,
            }))
        };
        let mut conn = fresh()?;
        let mut envs: Vec<Envelope> = vec![init(), add(1, "n1")].into_iter().map(env).collect();
        envs.push(env(Command::SetBundleTrust {
            version: 1,
            trust_json: serde_json::to_string(&trust).expect("json"),
        }));
        for o in run(&mut conn, envs)? {
            o.expect("setup");
        }
        let good = manifest(now_s);
        let refused = [
            (
                "unsigned",
                cmd(&good, None, config.clone()),
                "bundle refused",
            ),
            (
                "stranger",
                cmd(&good, Some(&stranger), config.clone()),
                "bundle refused",
            ),
            (
                "future",
                cmd(
                    &manifest(now_s + 2 * 86_400),
                    Some(&release),
                    config.clone(),
                ),
                "later than the cluster time floor",
            ),
            (
                "payload swapped",
                cmd(&good, Some(&release), b"[global]\nsite = \"b\"\n".to_vec()),
                "does not match its manifest entry",
            ),
        ];
        for (name, c, want) in refused {
            let before = dump(&conn)?;
            let out = run(&mut conn, vec![env(c)])?;
            match &out[0] {
                Err(r) => assert!(r.message.contains(want), "{name}: {}", r.message),
                Ok(v) => panic!("{name}: applied ({v:?})"),
            }
            assert_eq!(before, dump(&conn)?, "{name} changed the state");
            let bundles: i64 = conn.query_row("SELECT COUNT(*) FROM bundles", [], |r| r.get(0))?;
            assert_eq!(bundles, 0, "{name} left a bundle");
        }
        let out = run(
            &mut conn,
            vec![env(cmd(&good, Some(&release), config.clone()))],
        )?;
        assert_eq!(out[0], Ok(Response::Done));
        let site: String = conn.query_row(
            "SELECT value FROM config WHERE scope_kind = 'global' AND key = 'site'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(site, "a");
        let again = run(&mut conn, vec![env(cmd(&good, Some(&release), config))])?;
        assert_eq!(again[0], Ok(Response::Unchanged));
        Ok(())
    }

    #[test]
    fn join_consumes_a_use_and_allocates_growing_ids() -> Result<(), StorageError> {
        let mut conn = fresh()?;
        let mut envs: Vec<Envelope> = base().into_iter().map(env).collect();
        envs.push(env(token("t3", TokenKind::Node, Some(3))));
        envs.push(env(join("t3", "secret")));
        envs.push(env(Command::RemoveNode { id: 2 }));
        envs.push(env(join("t3", "secret")));
        let out = run(&mut conn, envs)?;
        assert_eq!(out[5], Ok(Response::NodeId(2)));
        assert_eq!(
            out[7],
            Ok(Response::NodeId(3)),
            "removed id 2 is not reused"
        );
        let left: i64 =
            conn.query_row("SELECT uses_left FROM tokens WHERE id = 't3'", [], |r| {
                r.get(0)
            })?;
        assert_eq!(left, 1);
        let role: String =
            conn.query_row("SELECT role FROM nodes WHERE id = 3", [], |r| r.get(0))?;
        assert_eq!(role, "joining");
        Ok(())
    }

    #[test]
    fn audit_text_table() {
        let ok_join: Outcome = Ok(Response::NodeId(4));
        let rejected: Outcome = Err(Rejection::new(RejectCode::TokenInvalid, "bad"));
        let cases = [
            (env(join("t1", "s")), ok_join.clone(), "node.join", "node:4"),
            (
                env(join("t1", "s")),
                rejected.clone(),
                "node.join",
                "token:t1",
            ),
            (
                env(set(Scope::Group("lab".into()), "k", "v")),
                Ok(Response::ConfigVersion(3)),
                "config.set",
                "config:group:lab/k",
            ),
            (
                env(Command::RevokeToken { id: "x".into() }),
                Ok(Response::Done),
                "token.revoke",
                "token:x",
            ),
        ];
        for (e, outcome, action, target) in cases {
            let t = audit_text(&e, &outcome);
            assert_eq!((t.action, t.target.as_str()), (action, target));
        }
        let t = audit_text(&env(join("t1", "s")), &ok_join);
        assert!(
            !t.detail.contains(&sha("s")),
            "secrets never reach the audit log"
        );
        let t = audit_text(
            &env(set(Scope::Global, "k", "v")),
            &Ok(Response::ConfigVersion(3)),
        );
        assert!(t.detail.contains("\"version\":3") && !t.detail.contains("\"v\""));
        assert_eq!(outcome_text(&rejected), "rejected: token_invalid: bad");
        assert_eq!(outcome_text(&Ok(Response::Done)), "ok");
    }
}
