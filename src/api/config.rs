//! Configuration routes: keys and values scoped global < group < client, and a client's
//! effective configuration. `agent.handler.*` and `agent.check.*` keys and the site policies (`deploy.*`,
//! `retention.*`, `site.timezone`) are refused here: only a signed bundle sets them.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use outpost_storage::{CHECK_KEY_PREFIX, HANDLER_KEY_PREFIX as HANDLER_PREFIX};
use outpost_storage::{Command, Response as Done, RoleScope, Scope};
use serde::Deserialize;

use crate::api::convert::wire_list;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::wire;
use crate::wire::{ConfigSetRequest, ConfigSetResponse};

#[derive(Debug, Default, Deserialize)]
pub struct ScopeQuery {
    pub group: Option<String>,
    pub client: Option<String>,
    #[serde(default)]
    pub linearizable: bool,
}

impl ScopeQuery {
    fn scope(&self) -> Result<Scope, ApiError> {
        match (&self.group, &self.client) {
            (None, None) => Ok(Scope::Global),
            (Some(g), None) => Ok(Scope::Group(g.clone())),
            (None, Some(c)) => Ok(Scope::Client(c.clone())),
            (Some(_), Some(_)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "give --group or --client, not both",
            )),
        }
    }
}

pub(crate) async fn config_set(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<ConfigSetRequest>,
) -> ApiResult<ConfigSetResponse> {
    caller.require_admin()?;
    crate::api::fields::config_key(&req.key)?;
    crate::api::fields::config_value(&req.key, &req.value)?;
    if let wire::Scope::Group(g) | wire::Scope::Client(g) = &req.scope {
        crate::api::fields::id("scope", g)?;
    }
    if req.key.starts_with(HANDLER_PREFIX) || req.key.starts_with(CHECK_KEY_PREFIX) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} runs code on clients: it is set only by a config payload of a signed bundle \
                 (outpost bundle create with a [[payload]] of kind \"config\")",
                req.key
            ),
        ));
    }
    if outpost_storage::signed_only_key(&req.key) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} is a site policy: it is set only by a config payload of a signed bundle \
                 (outpost bundle create with a [[payload]] of kind \"config\")",
                req.key
            ),
        ));
    }
    let scope: Scope = req.scope.into();
    within_reach(&st, &caller, &scope).await?;
    match st
        .commit(
            &caller,
            Command::SetConfig {
                scope,
                key: req.key,
                value: req.value,
            },
        )
        .await?
    {
        Done::ConfigVersion(version) => Ok(Json(ConfigSetResponse { version })),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

pub(crate) async fn config_get(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<wire::ConfigEntry> {
    caller.require_admin()?;
    let scope = q.scope()?;
    if q.linearizable {
        st.node
            .linearizable_barrier(Duration::from_secs(5))
            .await
            .map_err(ApiError::unavailable)?;
    }
    let k = key.clone();
    let s = scope.clone();
    match st.read(move |r| r.config_get(&s, &k)).await? {
        Some(e) => Ok(Json(e.into())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("key not found: {key} ({})", scope_text(&scope)),
        )),
    }
}

/// Whether the caller may change config at `scope`: a person with a scope changes the config
/// of a group that is a term of it and of clients in reach; the global config needs the whole
/// site (it reaches every client).
async fn within_reach(st: &AppState, caller: &Caller, scope: &Scope) -> Result<(), ApiError> {
    if !caller.scoped() {
        return Ok(());
    }
    let (c, s) = (caller.clone(), scope.clone());
    st.read(move |r| config_reach(r, &c, &s)).await?
}

/// `within_reach` on a reader (the console checks its forms with it too): Ok(Err) is the
/// refusal.
pub(crate) fn config_reach(
    r: &outpost_storage::Reader,
    caller: &Caller,
    scope: &Scope,
) -> Result<Result<(), ApiError>, outpost_storage::StorageError> {
    let Some((_, grant)) = caller.person().filter(|_| caller.scoped()) else {
        return Ok(Ok(()));
    };
    use crate::api::clients::beyond_reach;
    Ok(match scope {
        Scope::Global => Err(beyond_reach(caller, "the global config")),
        Scope::Group(g) if grant.scopes.contains(&RoleScope::Group(g.clone())) => Ok(()),
        Scope::Group(g) => Err(beyond_reach(caller, &format!("group {g}"))),
        // A client unknown here is not shown to be in reach either.
        Scope::Client(c) => match r.client(c)? {
            Some(client) if caller.reaches(&client.groups, &client.labels) => Ok(()),
            _ => Err(beyond_reach(caller, &format!("client {c}"))),
        },
    })
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Global => "global scope".into(),
        Scope::Group(g) => format!("group {g}"),
        Scope::Client(c) => format!("client {c}"),
    }
}

pub(crate) async fn config_delete(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    let scope = q.scope()?;
    // Deleting a site policy (`deploy.approval_above`, `retention.*`, `site.timezone`) would
    // lift it without a signed bundle: a bundle's config payload changes it instead. A
    // handler or check key may go (that only takes a power away), as before.
    if outpost_storage::signed_only_key(&key)
        && !key.starts_with(HANDLER_PREFIX)
        && !key.starts_with(CHECK_KEY_PREFIX)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{key} is a site policy: only a config payload of a signed bundle changes it"),
        ));
    }
    within_reach(&st, &caller, &scope).await?;
    st.commit(
        &caller,
        Command::DeleteConfig {
            scope,
            key: key.clone(),
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "deleted": key })))
}

pub(crate) async fn config_list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Vec<wire::ConfigEntry>> {
    caller.require_admin()?;
    let scope = match (&q.group, &q.client) {
        (None, None) => None,
        _ => Some(q.scope()?),
    };
    if q.linearizable {
        st.node
            .linearizable_barrier(Duration::from_secs(5))
            .await
            .map_err(ApiError::unavailable)?;
    }
    Ok(Json(wire_list(
        st.read(move |r| r.config_list(scope.as_ref())).await?,
    )))
}

pub(crate) async fn config_effective(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(client): Path<String>,
) -> ApiResult<std::collections::BTreeMap<String, String>> {
    caller.require_admin()?;
    let record = crate::api::clients::reached_client(&st, &caller, &client).await?;
    Ok(Json(
        st.read(move |r| r.config_effective(&record.id, &record.groups))
            .await?,
    ))
}
