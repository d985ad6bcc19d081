//! The hash-chained audit log, read in pages.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use serde::Deserialize;

use crate::api::{ApiResult, AppState, Caller};

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

pub(crate) async fn audit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Vec<outpost_storage::AuditRecord>> {
    caller.require_admin()?;
    Ok(Json(
        st.read(move |r| r.audit(q.after, q.limit.min(10_000)))
            .await?,
    ))
}
