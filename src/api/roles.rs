//! People's roles (`outpost role list | show | set`, the console's People page): one row per
//! person name in the replicated state, read on every request (`crate::api::access`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use outpost_storage::{Command, Grant, PersonRole, RoleRecord, RoleScope};

use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::wire::{RoleRequest, RoleView};

/// The first version that applies `SetRole` (command format 10).
pub const ROLES_VERSION: &str = "0.5.0";

pub(crate) fn view(name: &str, row: Option<&RoleRecord>, console_account: bool) -> RoleView {
    let grant = row.map(|r| r.grant.clone()).unwrap_or_else(Grant::admin);
    RoleView {
        name: name.to_owned(),
        role: grant.role.as_str().to_owned(),
        scopes: grant.scopes.iter().map(|s| s.to_string()).collect(),
        implicit: row.is_none(),
        console_account,
        updated_at_ms: row.map(|r| r.updated_at_ms),
        updated_by: row.map(|r| r.updated_by.clone()),
    }
}

/// The grant a request asks for, checked as apply will check it: Err (400) names the field.
pub fn parse_request(req: &RoleRequest) -> Result<Grant, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let role = PersonRole::parse(&req.role).map_err(bad)?;
    let scopes = req
        .scopes
        .iter()
        .map(|s| RoleScope::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let grant = Grant { role, scopes };
    grant.check().map_err(bad)?;
    Ok(grant)
}

/// `GET /v1/roles`: every name with a role, and every console account without one (an
/// implicit admin), by name.
pub(crate) async fn list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<RoleView>> {
    caller.require_admin()?;
    let views = st.read(all_views).await?;
    Ok(Json(views))
}

/// Every name with a role, and every console account without one (an implicit admin), by
/// name: `GET /v1/roles` and the console's People page.
pub(crate) fn all_views(
    r: &outpost_storage::Reader,
) -> Result<Vec<RoleView>, outpost_storage::StorageError> {
    let rows = r.roles()?;
    let accounts: std::collections::BTreeSet<String> =
        r.console_users()?.into_iter().map(|u| u.name).collect();
    let mut names: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r.name.clone()).collect();
    names.extend(accounts.iter().cloned());
    Ok(names
        .iter()
        .map(|n| view(n, rows.iter().find(|r| &r.name == n), accounts.contains(n)))
        .collect())
}

/// The refusal (409) of a role change while a member runs a version before roles.
pub(crate) fn before_roles() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "roles need every member at {ROLES_VERSION} or newer: finish the rolling upgrade first (outpost upgrade status)"
        ),
    )
}

/// `GET /v1/roles/{name}`: the name's role (an implicit admin when none was set).
pub(crate) async fn show(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<RoleView> {
    caller.require_admin()?;
    crate::api::fields::id("person", &name)?;
    let n = name.clone();
    let (row, account) = st
        .read(move |r| Ok((r.role(&n)?, r.console_user(&n)?.is_some())))
        .await?;
    Ok(Json(view(&name, row.as_ref(), account)))
}

/// `PUT /v1/roles/{name}`: sets the name's role and scope, in force on every node once
/// applied there. Refused (409) while a member runs a version before roles.
pub(crate) async fn set(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<RoleRequest>,
) -> ApiResult<RoleView> {
    caller.require_admin()?;
    crate::api::fields::id("person", &name)?;
    let grant = parse_request(&req)?;
    if !st.read(|r| r.members_at_least(ROLES_VERSION)).await? {
        return Err(before_roles());
    }
    st.commit(
        &caller,
        Command::SetRole {
            name: name.clone(),
            grant,
        },
    )
    .await?;
    let n = name.clone();
    let (row, account) = st
        .read(move |r| Ok((r.role(&n)?, r.console_user(&n)?.is_some())))
        .await?;
    Ok(Json(view(&name, row.as_ref(), account)))
}
