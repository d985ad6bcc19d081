//! The console's administration routes (local socket or admin certificate): one-time login
//! links (`outpost console login`), operator accounts and sessions. The console itself (its
//! pages, cookies and CSRF checks) is `crate::console`; what both need lives here: the
//! session rules (`session_active`, the lifetimes) and the link's URL.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use outpost_storage::{Command, ConsoleSession};

use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::wire::{
    ConsoleLinkRequest, ConsoleLinkResponse, ConsoleSessionView, ConsoleUserRequest,
    ConsoleUserView,
};

/// A login link works once, within five minutes of `outpost console login`.
pub const LINK_TTL_MS: i64 = 5 * 60 * 1000;
/// A session ends 24 hours after it started, whatever happens.
pub const SESSION_MAX_MS: i64 = 24 * 3600 * 1000;
/// A session unused for 8 hours ends (last use as every node reported it, or this node's own).
pub const SESSION_IDLE_MS: i64 = 8 * 3600 * 1000;

/// Whether `s` is open at `now_ms`, given the last use this node saw (not yet replicated).
pub fn session_active(s: &ConsoleSession, seen_here_ms: Option<i64>, now_ms: i64) -> bool {
    let last = s.last_seen_ms.max(seen_here_ms.unwrap_or(0));
    s.ended_at_ms.is_none() && now_ms < s.expires_at_ms && now_ms < last + SESSION_IDLE_MS
}

/// Random bytes as lowercase hex (ids and secrets of links and sessions).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// `POST /v1/console/links`: a one-time sign-in link to this node's console.
pub(crate) async fn create_link(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<ConsoleLinkRequest>,
) -> ApiResult<ConsoleLinkResponse> {
    caller.require_admin()?;
    crate::api::fields::id("console user", &req.user)?;
    // A link only for an account: the state this node has applied, caught up with the
    // leader if the account is not there yet (it may have been made a moment ago elsewhere).
    let name = req.user.clone();
    if st
        .read_caught_up(move |r| r.console_user(&name))
        .await?
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "there is no console account {}: add it first with `outpost console user add {} --role viewer|operator|admin`",
                req.user, req.user
            ),
        ));
    }
    let (id, secret) = (random_hex(8), random_hex(32));
    let expires_at_ms = outpost_raft::now_ms() + LINK_TTL_MS;
    st.commit(
        &caller,
        Command::CreateConsoleLogin {
            id: id.clone(),
            secret_sha256: crate::shared::token::secret_sha256(&secret),
            user: req.user,
            expires_at_ms,
        },
    )
    .await?;
    let me = st
        .node
        .status()
        .members
        .into_iter()
        .find(|m| m.id == st.node_id)
        .map(|m| m.api_addr)
        .ok_or_else(|| ApiError::unavailable("this node is not a member of its cluster"))?;
    Ok(Json(ConsoleLinkResponse {
        url: format!("https://{me}/login/link/{id}.{secret}"),
        expires_at_ms,
    }))
}

pub(crate) async fn users(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<ConsoleUserView>> {
    caller.require_admin()?;
    let users = st.read(|r| r.console_users()).await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| ConsoleUserView {
                name: u.name,
                created_at_ms: u.created_at_ms,
                updated_at_ms: u.updated_at_ms,
                updated_by: u.updated_by,
            })
            .collect(),
    ))
}

/// `PUT /v1/console/users`: adds an account or replaces its password.
pub(crate) async fn set_user(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<ConsoleUserRequest>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    crate::api::fields::id("console user", &req.name)?;
    check_password_hash(&req.password_hash)?;
    st.commit(
        &caller,
        Command::SetConsoleUser {
            name: req.name.clone(),
            password_hash: req.password_hash,
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "user": req.name })))
}

/// An Argon2id PHC string whose costs a sign-in can afford to verify: memory at most 256 MiB,
/// at most 10 passes, at most 8 lanes.
fn check_password_hash(phc: &str) -> Result<(), ApiError> {
    let bad = |why: String| ApiError::new(StatusCode::BAD_REQUEST, why);
    if phc.len() > outpost_storage::MAX_PASSWORD_HASH_BYTES {
        return Err(bad("the password hash is too long".into()));
    }
    let hash = argon2::PasswordHash::new(phc)
        .map_err(|e| bad(format!("the password hash is not a PHC string: {e}")))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(bad(format!(
            "the password hash is {}, not argon2id",
            hash.algorithm
        )));
    }
    let params = argon2::Params::try_from(&hash)
        .map_err(|e| bad(format!("the password hash's parameters: {e}")))?;
    if params.m_cost() > 256 * 1024 || params.t_cost() > 10 || params.p_cost() > 8 {
        return Err(bad(format!(
            "the password hash's costs (m={} KiB, t={}, p={}) are above what a sign-in may spend",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        )));
    }
    Ok(())
}

pub(crate) async fn remove_user(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    crate::api::fields::id("console user", &name)?;
    st.commit(&caller, Command::RemoveConsoleUser { name: name.clone() })
        .await?;
    Ok(Json(serde_json::json!({ "removed": name })))
}

/// The newest 500 sessions; `active` as this node sees them.
pub(crate) async fn sessions(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<ConsoleSessionView>> {
    caller.require_admin()?;
    let now = outpost_raft::now_ms();
    let list = st.read(|r| r.console_sessions(500)).await?;
    Ok(Json(
        list.iter().map(|s| session_view(s, None, now)).collect(),
    ))
}

/// A session as listed (no secret).
pub fn session_view(s: &ConsoleSession, seen_here_ms: Option<i64>, now: i64) -> ConsoleSessionView {
    ConsoleSessionView {
        id: s.id.clone(),
        user: s.user.clone(),
        via: s.via.clone(),
        started_at_ms: s.started_at_ms,
        expires_at_ms: s.expires_at_ms,
        last_seen_ms: s.last_seen_ms.max(seen_here_ms.unwrap_or(0)),
        ended_at_ms: s.ended_at_ms,
        active: session_active(s, seen_here_ms, now),
    }
}

pub(crate) async fn end_session(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    crate::api::fields::id("session id", &id)?;
    st.commit(&caller, Command::EndConsoleSession { id: id.clone() })
        .await?;
    Ok(Json(serde_json::json!({ "ended": id })))
}
