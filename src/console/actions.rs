//! What the console's buttons do: each is a POST that passes `Operator::check` (same origin,
//! the session's CSRF token), then commits one Raft command as `console:NAME`, like the
//! CLI's command of the same name, and redirects to the page that shows the result.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use outpost_storage::{Command, HANDLER_KEY_PREFIX};
use serde::Deserialize;

use crate::console::pages::parse_scope;
use crate::console::session::{CsrfForm, failed, message};
use crate::console::{Console, Operator};
use crate::shared::client::urlencode;

/// Revokes a client (after the confirmation page): every node refuses it once this applies.
pub async fn revoke(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = op.check(&headers, &form.csrf) {
        return r.into_response();
    }
    if let Err(e) = crate::api::fields::id("client id", &id) {
        return failed(&con, Some(&op), e);
    }
    let cmd = Command::RevokeClient {
        client_id: id.clone(),
    };
    match con.commit(&op.caller(), cmd).await {
        Ok(_) => Redirect::to(&format!("/clients/{}?done=revoked", urlencode(&id))).into_response(),
        Err(e) => failed(&con, Some(&op), e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ConfigForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    scope: String,
    key: String,
    #[serde(default)]
    value: String,
}

/// Sets a key in a scope. `agent.handler.*` keys are refused: they run code on clients and
/// come only from signed bundles.
pub async fn config_set(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ConfigForm>,
) -> Response {
    config_change(&con, &op, &headers, form, true).await
}

/// Deletes a key from a scope (not an `agent.handler.*` key).
pub async fn config_delete(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ConfigForm>,
) -> Response {
    config_change(&con, &op, &headers, form, false).await
}

async fn config_change(
    con: &Console,
    op: &Operator,
    headers: &HeaderMap,
    form: ConfigForm,
    set: bool,
) -> Response {
    if let Err(r) = op.check(headers, &form.csrf) {
        return r.into_response();
    }
    let scope = match parse_scope(&form.scope) {
        Ok(s) => s,
        Err(e) => return message(con, StatusCode::BAD_REQUEST, "Not changed", &e),
    };
    let checked = crate::api::fields::config_key(&form.key)
        .and_then(|()| crate::api::fields::config_value(&form.key, &form.value));
    if let Err(e) = checked {
        return message(con, StatusCode::BAD_REQUEST, "Not changed", e.message());
    }
    if form.key.starts_with(HANDLER_KEY_PREFIX) {
        return message(
            con,
            StatusCode::FORBIDDEN,
            "Not changed",
            &format!(
                "{} runs code on clients: it is set only by a config payload of a signed bundle.",
                form.key
            ),
        );
    }
    let back = format!("/config?scope={}", urlencode(&scope.to_string()));
    let cmd = if set {
        Command::SetConfig {
            scope,
            key: form.key,
            value: form.value,
        }
    } else {
        Command::DeleteConfig {
            scope,
            key: form.key,
        }
    };
    match con.commit(&op.caller(), cmd).await {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => failed(con, Some(op), e),
    }
}

/// Ends a session (any operator's): on every node once it applies. Ending one's own is
/// signing out.
pub async fn end_session(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = op.check(&headers, &form.csrf) {
        return r.into_response();
    }
    if let Err(e) = crate::api::fields::id("session id", &id) {
        return failed(&con, Some(&op), e);
    }
    let cmd = Command::EndConsoleSession { id: id.clone() };
    match con.commit(&op.caller(), cmd).await {
        Ok(_) if id == op.session => Redirect::to("/login").into_response(),
        Ok(_) => Redirect::to("/sessions").into_response(),
        Err(e) => failed(&con, Some(&op), e),
    }
}
