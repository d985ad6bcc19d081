//! Cluster and node commands: `InitCluster`, `AddNode`, `JoinNode`, `UpdateNode`,
//! `RemoveNode`, `ReformCluster`. Node ids come from a counter in meta that only grows, so an id is never reused.

use rusqlite::{Connection, OptionalExtension, params};

use super::tokens::consume_token;
use super::{Fail, invalid, node_id_sql, reject};
use crate::model::{NodeRole, RejectCode, Response};
use crate::rules::{check_name, check_text};

pub(super) fn init_cluster(
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

pub(super) struct NewNode<'a> {
    pub name: &'a str,
    pub api_addr: &'a str,
    pub peer_addr: &'a str,
    pub version: &'a str,
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

fn node_role(conn: &Connection, id: i64) -> Result<Option<String>, rusqlite::Error> {
    conn.prepare_cached("SELECT role FROM nodes WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

pub(super) fn add_node(
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

pub(super) fn join_node(
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

pub(super) fn update_node(
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

pub(super) fn remove_node(conn: &Connection, id: u64) -> Result<Response, Fail> {
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

/// `ReformCluster`: node `keep` stays, every other node is marked removed, and the CA
/// certificate is replaced when a new one is given.
pub(super) fn reform_cluster(
    conn: &Connection,
    keep: u64,
    ca_cert_pem: Option<&str>,
    reason: &str,
) -> Result<Response, Fail> {
    let not_found = || reject(RejectCode::NotFound, format!("node {keep} does not exist"));
    let sql_id = node_id_sql(keep).map_err(|_| not_found())?;
    match node_role(conn, sql_id)?.as_deref() {
        None => return Err(not_found()),
        Some("removed") => {
            return Err(invalid(format!(
                "node {keep} is removed and cannot be the node a cluster is reformed around"
            )));
        }
        Some(_) => {}
    }
    if !matches!(reason, "restore" | "recover") {
        return Err(invalid(format!(
            "reform reason {reason:?} is neither restore nor recover"
        )));
    }
    if let Some(pem) = ca_cert_pem {
        if pem.trim().is_empty() {
            return Err(invalid("CA certificate is empty".to_owned()));
        }
        conn.prepare_cached("UPDATE cluster SET ca_cert_pem = ?1")?
            .execute([pem])?;
    }
    conn.prepare_cached("UPDATE nodes SET role = 'removed' WHERE id != ?1")?
        .execute([sql_id])?;
    Ok(Response::Done)
}
