//! `GET /v1/upgrade`: the current or last rolling upgrade and what every node runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};

use crate::api::{ApiResult, AppState, Caller};
use crate::wire::UpgradeView;

pub(crate) async fn status(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<UpgradeView> {
    caller.require_member()?;
    let roll = st.read(|r| r.roll()).await?;
    Ok(Json(UpgradeView {
        roll,
        nodes: st.builds().await?,
    }))
}
