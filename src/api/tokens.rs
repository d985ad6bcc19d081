//! Join and enrollment tokens: create (the secret is returned once, only its SHA-256 is
//! replicated), list, revoke.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use outpost_storage::{Command, TokenKind};

use crate::api::convert::wire_list;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::shared::token::Token;
use crate::wire::{TokenRequest, TokenResponse};

pub(crate) async fn create_token(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenRequest>,
) -> ApiResult<TokenResponse> {
    caller.require_admin()?;
    let kind = match req.kind.as_str() {
        "node" => TokenKind::Node,
        "client" => TokenKind::Client,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("token kind {other:?}: use node or client"),
            ));
        }
    };
    if req.ttl_secs == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "token ttl must be positive",
        ));
    }
    for g in &req.groups {
        crate::api::fields::id("group", g)?;
    }
    let addrs = st.member_api_addrs();
    let token = Token::new(
        &req.kind,
        &st.cluster_id,
        &st.ca_fingerprint.to_string(),
        addrs,
    );
    let expires_at_ms =
        outpost_raft::now_ms().saturating_add((req.ttl_secs as i64).saturating_mul(1000));
    st.commit(
        &caller,
        Command::CreateToken {
            id: token.id.clone(),
            kind,
            secret_sha256: token.secret_sha256(),
            expires_at_ms,
            uses: req.uses,
            groups: req.groups,
        },
    )
    .await?;
    Ok(Json(TokenResponse {
        token: token.encode(),
        id: token.id,
        expires_at_ms,
    }))
}

pub(crate) async fn token_list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<crate::wire::TokenRecord>> {
    caller.require_admin()?;
    Ok(Json(wire_list(st.read(|r| r.tokens()).await?)))
}

pub(crate) async fn token_revoke(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    crate::api::fields::id("token id", &id)?;
    st.commit(&caller, Command::RevokeToken { id: id.clone() })
        .await?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}
