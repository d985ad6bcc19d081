//! `GET /v1/upgrade`: the current or last rolling upgrade and what every node runs;
//! `POST /v1/upgrade` (admins): start the roll to an imported bundle's release.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};

use crate::api::ApiError;
use crate::api::{ApiResult, AppState, Caller};
use crate::wire::{UpgradeStart, UpgradeView};

pub(crate) async fn status(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<UpgradeView> {
    caller.require_member()?;
    let roll = st.read(|r| r.roll()).await?;
    Ok(Json(UpgradeView {
        roll: roll.map(Into::into),
        nodes: st.builds().await?,
    }))
}

pub(crate) async fn start(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<UpgradeStart>,
) -> ApiResult<UpgradeView> {
    caller.require_admin()?;
    crate::api::fields::id("bundle id", &req.bundle_id)?;
    let bundles = st.read(|r| r.bundles()).await?;
    let release = bundles
        .iter()
        .find(|b| b.id == req.bundle_id)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("no imported bundle {}", req.bundle_id),
            )
        })?
        .payloads
        .iter()
        .find(|p| p.kind == "outpost-release")
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                format!(
                    "bundle {} carries no outpost-release payload",
                    req.bundle_id
                ),
            )
        })?
        .sha256
        .clone();
    st.commit(
        &caller,
        outpost_storage::Command::StartRoll {
            bundle_id: req.bundle_id,
            sha256: release,
        },
    )
    .await?;
    status(State(st), Extension(caller)).await
}
