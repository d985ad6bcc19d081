//! Cluster nodes: join (open to a node token; the certificate is signed after the commit),
//! the node list, and removal.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_certs::Validity;
use outpost_storage::{Command, Response as Done, TokenKind};

use crate::api::convert::wire_list;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::wire;
use crate::wire::{JoinRequest, JoinResponse};

/// Node certificates live a year and renew themselves when a third is left
/// (`node::renew_node_cert`); `OUTPOST_NODE_CERT_SECS` sets their life in seconds instead.
pub const NODE_CERT_DAYS: u32 = 365;

/// Validity of a node certificate issued now.
pub fn node_validity(now: i64) -> Validity {
    crate::api::clients::validity_from_env(now, "OUTPOST_NODE_CERT_SECS", NODE_CERT_DAYS)
}

pub(crate) async fn join(
    _: crate::api::extractors::RateLimited,
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    remote: Option<Extension<crate::api::limits::Remote>>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, Response> {
    let source = remote.map(|Extension(crate::api::limits::Remote(addr))| addr.ip());
    let secret_sha256 = st
        .admit_with_token(
            "join",
            source,
            (&req.token_id, &req.secret, TokenKind::Node),
            &req.csr_pem,
            || {
                crate::api::fields::id("node name", &req.name)?;
                crate::api::fields::host_port("api address", &req.api_addr)?;
                crate::api::fields::host_port("peer address", &req.peer_addr)?;
                crate::api::fields::text("version", &req.version, 64)
            },
        )
        .await?;
    tracing::info!(name = %req.name, peer = %req.peer_addr, caller = %caller.actor(), "join request");
    let cmd = Command::JoinNode {
        token_id: req.token_id.clone(),
        secret_sha256,
        name: req.name.clone(),
        api_addr: req.api_addr.clone(),
        peer_addr: req.peer_addr.clone(),
        version: req.version.clone(),
    };
    let node_id = match st
        .commit(&Caller::Anonymous, cmd)
        .await
        .map_err(IntoResponse::into_response)?
    {
        Done::NodeId(id) => id,
        other => {
            return Err(ApiError::internal(format!(
                "join committed with unexpected response {other:?}"
            ))
            .into_response());
        }
    };
    let validity = node_validity(outpost_raft::now_ms() / 1000);
    let cert_pem = st
        .ca
        .issue_node(
            &req.csr_pem,
            node_id,
            &[req.api_addr.as_str()],
            &validity,
            &outpost_certs::Serial::random(),
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("certificate request refused: {e}"),
            )
            .into_response()
        })?;
    let cluster_name = st
        .read(|r| r.cluster())
        .await
        .map_err(IntoResponse::into_response)?
        .map(|c| c.name)
        .unwrap_or_default();
    Ok(Json(JoinResponse {
        node_id,
        cluster_id: st.cluster_id.clone(),
        cluster_name,
        cert_pem,
        ca_cert_pem: st.ca.cert_pem().to_string(),
        ca_key_pem: st.ca.key_pem().to_string(),
    }))
}

pub(crate) async fn nodes(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<wire::NodeRecord>> {
    caller.require_member()?;
    Ok(Json(wire_list(st.read(|r| r.nodes()).await?)))
}

pub(crate) async fn remove_node(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    let s = st.node.status();
    let voters: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    if voters == [id] {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {id} is the last voter; it cannot be removed"),
        ));
    }
    st.commit(&caller, Command::RemoveNode { id }).await?;
    // The leader's membership upkeep takes the node out of the Raft membership.
    st.node.remove_member(id).await.ok();
    Ok(Json(serde_json::json!({ "removed": id })))
}
