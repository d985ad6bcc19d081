//! Admin identities: revoking every admin certificate issued under a name until now.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use outpost_storage::Command;

use crate::api::{ApiResult, AppState, Caller};

pub(crate) async fn admin_revoke(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    crate::api::fields::text("admin name", &name, 64)?;
    let at_ms = outpost_raft::now_ms();
    st.commit(&caller, Command::RevokeAdmin { name: name.clone() })
        .await?;
    Ok(Json(
        serde_json::json!({ "revoked": name, "issued_until_ms": at_ms }),
    ))
}
