//! Console commands: operator accounts (`SetConsoleUser`, `RemoveConsoleUser`), one-time
//! login links (`CreateConsoleLogin`), and sessions (`StartConsoleSession`,
//! `EndConsoleSession`, `TouchConsoleSessions`).
//!
//! Proofs are checked here, in log order, so every node reaches the same verdict: a login
//! link is consumed by the first session that names it and refused to every later one, on
//! whichever node it was proposed. Password hashes are verified by the proposer (Argon2 is
//! too costly for every node's apply); the session names the hash it verified against, so a
//! password changed in between refuses it.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{Fail, invalid, node_id_sql, reject};
use crate::model::{Envelope, RejectCode, Response, SessionProof};
use crate::rules::{check_id, constant_time_eq, normalize_sha256};

/// Longest password hash kept (an Argon2id PHC string is about 100 bytes).
pub const MAX_PASSWORD_HASH_BYTES: usize = 512;
/// Ended or expired sessions and used or expired login links are deleted this long after
/// they end, when a new session starts (deterministic: measured from the command's time).
const KEEP_ENDED_MS: i64 = 7 * 24 * 3600 * 1000;

pub(super) fn set_user(
    conn: &Connection,
    env: &Envelope,
    name: &str,
    password_hash: &str,
) -> Result<Response, Fail> {
    check_id("console user", name).map_err(invalid)?;
    if !password_hash.starts_with("$argon2id$") || password_hash.len() > MAX_PASSWORD_HASH_BYTES {
        return Err(invalid(format!(
            "the password hash of console user {name} is not an Argon2id PHC string of at most {MAX_PASSWORD_HASH_BYTES} bytes"
        )));
    }
    conn.prepare_cached(
        "INSERT INTO console_users (name, password_hash, created_at_ms, updated_at_ms, updated_by)
         VALUES (?1, ?2, ?3, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash,
             updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
    )?
    .execute(params![name, password_hash, env.at_ms, env.actor])?;
    Ok(Response::Done)
}

pub(super) fn remove_user(conn: &Connection, at_ms: i64, name: &str) -> Result<Response, Fail> {
    let n = conn
        .prepare_cached("DELETE FROM console_users WHERE name = ?1")?
        .execute([name])?;
    if n == 0 {
        return Err(reject(
            RejectCode::NotFound,
            format!("console user {name} does not exist"),
        ));
    }
    conn.prepare_cached(
        "UPDATE console_sessions SET ended_at_ms = ?2 WHERE user = ?1 AND ended_at_ms IS NULL",
    )?
    .execute(params![name, at_ms])?;
    Ok(Response::Done)
}

pub(super) fn create_login(
    conn: &Connection,
    at_ms: i64,
    id: &str,
    secret_sha256: &str,
    user: &str,
    expires_at_ms: i64,
) -> Result<Response, Fail> {
    check_id("login link id", id).map_err(invalid)?;
    check_id("console user", user).map_err(invalid)?;
    let secret = normalize_sha256("login link secret", secret_sha256).map_err(invalid)?;
    if expires_at_ms <= at_ms {
        return Err(invalid(format!(
            "login link {id} would expire at {expires_at_ms}, not after its creation at {at_ms}"
        )));
    }
    let n = conn
        .prepare_cached(
            "INSERT INTO console_logins (id, secret_sha256, user, expires_at_ms, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![id, secret, user, expires_at_ms, at_ms])?;
    if n == 0 {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("login link {id} already exists"),
        ));
    }
    Ok(Response::Done)
}

/// The fields of a `StartConsoleSession` command.
pub(super) struct NewSession<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub secret_sha256: &'a str,
    pub expires_at_ms: i64,
    pub proof: &'a SessionProof,
}

pub(super) fn start_session(
    conn: &Connection,
    at_ms: i64,
    s: NewSession<'_>,
) -> Result<Response, Fail> {
    check_id("session id", s.id).map_err(invalid)?;
    check_id("console user", s.user).map_err(invalid)?;
    let secret = normalize_sha256("session secret", s.secret_sha256).map_err(invalid)?;
    if s.expires_at_ms <= at_ms {
        return Err(invalid(format!(
            "session {} would expire at {}, not after its start at {at_ms}",
            s.id, s.expires_at_ms
        )));
    }
    let via = match s.proof {
        SessionProof::Link { id, secret_sha256 } => {
            use_login(conn, at_ms, id, secret_sha256, s.user)?;
            "link"
        }
        SessionProof::Password { hash_sha256 } => {
            let hash: Option<String> = conn
                .prepare_cached("SELECT password_hash FROM console_users WHERE name = ?1")?
                .query_row([s.user], |r| r.get(0))
                .optional()?;
            let current = hash.map(|h| hex::encode(Sha256::digest(h.as_bytes())));
            if !current.is_some_and(|c| constant_time_eq(c.as_bytes(), hash_sha256.as_bytes())) {
                return Err(reject(
                    RejectCode::TokenInvalid,
                    format!(
                        "console user {} does not exist or its password changed",
                        s.user
                    ),
                ));
            }
            "password"
        }
    };
    let n = conn
        .prepare_cached(
            "INSERT INTO console_sessions (id, user, secret_sha256, via, started_at_ms,
                 expires_at_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![s.id, s.user, secret, via, at_ms, s.expires_at_ms])?;
    if n == 0 {
        return Err(reject(
            RejectCode::AlreadyExists,
            format!("session {} already exists", s.id),
        ));
    }
    // Forget what ended a week ago: sessions and links are a human's, but they add up.
    let horizon = at_ms.saturating_sub(KEEP_ENDED_MS);
    conn.prepare_cached(
        "DELETE FROM console_sessions WHERE ended_at_ms < ?1 OR expires_at_ms < ?1",
    )?
    .execute([horizon])?;
    conn.prepare_cached("DELETE FROM console_logins WHERE expires_at_ms < ?1")?
        .execute([horizon])?;
    Ok(Response::Done)
}

/// Consumes login link `id` for `user`: it must exist, be unused and unexpired at `at_ms`,
/// and its secret must match.
fn use_login(
    conn: &Connection,
    at_ms: i64,
    id: &str,
    secret_sha256: &str,
    user: &str,
) -> Result<(), Fail> {
    let row: Option<(String, String, i64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT secret_sha256, user, expires_at_ms, used_at_ms FROM console_logins
             WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((secret, owner, expires_at_ms, used_at_ms)) = row else {
        return Err(reject(
            RejectCode::TokenInvalid,
            format!("login link {id} does not exist"),
        ));
    };
    let given = secret_sha256.to_ascii_lowercase();
    if !constant_time_eq(secret.as_bytes(), given.as_bytes()) || owner != user {
        return Err(reject(
            RejectCode::TokenInvalid,
            format!("login link {id} does not match"),
        ));
    }
    if used_at_ms.is_some() {
        return Err(reject(
            RejectCode::TokenUsedUp,
            format!("login link {id} was already used"),
        ));
    }
    if expires_at_ms <= at_ms {
        return Err(reject(
            RejectCode::TokenExpired,
            format!("login link {id} expired"),
        ));
    }
    conn.prepare_cached("UPDATE console_logins SET used_at_ms = ?2 WHERE id = ?1")?
        .execute(params![id, at_ms])?;
    Ok(())
}

pub(super) fn end_session(conn: &Connection, at_ms: i64, id: &str) -> Result<Response, Fail> {
    let ended: Option<Option<i64>> = conn
        .prepare_cached("SELECT ended_at_ms FROM console_sessions WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match ended {
        None => Err(reject(
            RejectCode::NotFound,
            format!("session {id} does not exist"),
        )),
        Some(Some(_)) => Ok(Response::Done),
        Some(None) => {
            conn.prepare_cached("UPDATE console_sessions SET ended_at_ms = ?2 WHERE id = ?1")?
                .execute(params![id, at_ms])?;
            Ok(Response::Done)
        }
    }
}

pub(super) fn touch_sessions(
    conn: &Connection,
    node_id: u64,
    seen: &[(String, i64)],
) -> Result<Response, Fail> {
    node_id_sql(node_id)?;
    let mut stmt = conn.prepare_cached(
        "UPDATE console_sessions SET last_seen_ms = MAX(last_seen_ms, ?2)
         WHERE id = ?1 AND ended_at_ms IS NULL",
    )?;
    for (id, at) in seen {
        stmt.execute(params![id, at])?;
    }
    Ok(Response::Done)
}

/// Longest sign-in lock a command may set (the proposer's locks grow to 15 minutes).
pub const MAX_SIGNIN_LOCK_MS: i64 = 24 * 3600 * 1000;
/// A sign-in lock's row is forgotten (its strikes with it) this long after the lock ended.
const KEEP_SIGNIN_LOCK_MS: i64 = 24 * 3600 * 1000;

/// The lock key of console account `name`.
pub fn signin_account_key(name: &str) -> String {
    format!("account:{name}")
}

/// The lock key of a sign-in's source: the address for IPv4 (an IPv4-mapped IPv6 address
/// counts as its IPv4 address), the /64 network for IPv6 (one host holds a whole /64).
pub fn signin_source_key(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => format!("addr:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("addr:{v4}"),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("net:{net}/64")
            }
        },
    }
}

/// Whether `key` is a key `signin_account_key` or `signin_source_key` makes.
fn signin_key_ok(key: &str) -> bool {
    if let Some(name) = key.strip_prefix("account:") {
        return check_id("console user", name).is_ok();
    }
    if let Some(a) = key.strip_prefix("addr:") {
        return a
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|v4| signin_source_key(v4.into()) == key);
    }
    if let Some(n) = key.strip_prefix("net:").and_then(|n| n.strip_suffix("/64")) {
        return n
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|v6| signin_source_key(v6.into()) == key);
    }
    false
}

pub(super) fn lock_signin(
    conn: &Connection,
    at_ms: i64,
    key: &str,
    until_ms: i64,
) -> Result<Response, Fail> {
    if !signin_key_ok(key) {
        return Err(invalid(format!(
            "{:?} is not a sign-in lock key",
            key.chars().take(80).collect::<String>()
        )));
    }
    if until_ms <= at_ms || until_ms - at_ms > MAX_SIGNIN_LOCK_MS {
        return Err(invalid(format!(
            "a sign-in lock must end after {at_ms} and within {MAX_SIGNIN_LOCK_MS} ms, not at {until_ms}"
        )));
    }
    conn.prepare_cached("DELETE FROM signin_locks WHERE until_ms < ?1")?
        .execute([at_ms.saturating_sub(KEEP_SIGNIN_LOCK_MS)])?;
    conn.prepare_cached(
        "INSERT INTO signin_locks (key, until_ms, strikes, updated_at_ms) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (key) DO UPDATE SET until_ms = MAX(until_ms, excluded.until_ms),
             strikes = strikes + 1, updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![key, until_ms, at_ms])?;
    Ok(Response::Done)
}
