//! The hash-chained audit log, read in pages.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use serde::Deserialize;

use std::time::Duration;

use crate::api::convert::wire_list;
use crate::api::{ApiError, ApiResult, AppState, Caller};

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    /// Records after this sequence number, oldest first; absent: the newest `limit` records.
    #[serde(default)]
    after: Option<u64>,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// `audit verify`: this node's chain recomputed, then every other member asked (over the peer
/// channel) for its own recomputed chain and its hash at our last verified row, compared with
/// ours there. A member that does not answer is listed, not compared.
pub(crate) async fn verify(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<crate::wire::AuditVerifyView> {
    use outpost_storage::AuditCheck;
    caller.require_admin()?;
    let me = st.node_id;
    let local = st.read(|r| r.audit_chain(u64::MAX)).await?;
    let compare_at = match local.check {
        AuditCheck::Intact { records } => records,
        AuditCheck::Broken { seq } => seq.saturating_sub(1),
    };
    let members: Vec<u64> = st
        .node
        .status()
        .members
        .iter()
        .map(|m| m.id)
        .filter(|id| *id != me)
        .collect();
    let mut peers = Vec::with_capacity(members.len());
    for id in members {
        let ask = serde_json::to_vec(&crate::peer_app::PeerAsk::AuditChain { at_seq: compare_at })
            .map_err(ApiError::internal)?;
        let answer = st
            .node
            .app_call(id, ask, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<outpost_storage::AuditChain>(&b)
                    .map_err(|e| format!("answer does not parse: {e}"))
            });
        let view = match answer {
            Ok(v) => v,
            Err(error) => {
                peers.push(crate::wire::AuditPeerView {
                    chain: None,
                    node_id: id,
                    agrees: None,
                    error: Some(error),
                });
                continue;
            }
        };
        let at = view.at_seq;
        let ours = st.read(move |r| r.audit_hash_at(at)).await?;
        let agrees = matches!(view.check, AuditCheck::Intact { .. }) && ours == view.hash;
        peers.push(crate::wire::AuditPeerView {
            chain: Some(view.into()),
            node_id: id,
            agrees: Some(agrees),
            error: None,
        });
    }
    let ok = matches!(local.check, AuditCheck::Intact { .. })
        && peers.iter().all(|p| p.agrees != Some(false));
    Ok(Json(crate::wire::AuditVerifyView {
        node_id: me,
        local: local.into(),
        peers,
        ok,
    }))
}

pub(crate) async fn audit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Vec<crate::wire::AuditRecord>> {
    caller.require_admin()?;
    let limit = q.limit.min(10_000);
    let records = st
        .read(move |r| match q.after {
            Some(after) => r.audit(after, limit),
            None => {
                let head = r.audit_head()?.map(|(seq, _)| seq).unwrap_or(0);
                r.audit(head.saturating_sub(u64::from(limit)), limit)
            }
        })
        .await?;
    Ok(Json(wire_list(records)))
}
