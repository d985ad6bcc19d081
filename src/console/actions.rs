//! What the console's buttons do: each is a POST that passes `Operator::check` (same origin,
//! the session's CSRF token), then commits one Raft command as `console:NAME`, like the
//! CLI's command of the same name, and redirects to the page that shows the result: revoke,
//! config, sessions, client labels, and the deployments' create, approve, pause, resume
//! and abort (a refused step is shown on the deployment's own page).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use outpost_storage::{
    CHECK_KEY_PREFIX, Command, HANDLER_KEY_PREFIX, RolloutStep, signed_only_key,
};
use serde::Deserialize;

use crate::api::clients::{ids_outside, outside_refusal};
use crate::console::deployments;
use crate::console::pages::parse_scope;
use crate::console::rollout_form::{RolloutForm, terms};
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
    if signed_only_key(&form.key) {
        let why =
            if form.key.starts_with(HANDLER_KEY_PREFIX) || form.key.starts_with(CHECK_KEY_PREFIX) {
                "runs code on clients"
            } else {
                "is a site policy"
            };
        return message(
            con,
            StatusCode::FORBIDDEN,
            "Not changed",
            &format!(
                "{} {why}: it is set only by a config payload of a signed bundle.",
                form.key
            ),
        );
    }
    let (caller, s) = (op.caller(), scope.clone());
    match con
        .app
        .read(move |r| crate::api::config::config_reach(r, &caller, &s))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) | Err(e) => return failed(con, Some(op), e),
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

/// The new deployment form's three buttons, by the `step` they send: `preview` (the form's
/// own button, and Enter in it) shows the plan; `edit` shows the form again with what was
/// typed; `create` (the preview's confirm) commits. One route, so that no deployment id is
/// shadowed by a `/deployments/NAME` of the console's own.
pub async fn deployment_form(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    axum::Form(form): axum::Form<RolloutForm>,
) -> Response {
    if let Err(r) = op.check(&headers, &form.csrf) {
        return r.into_response();
    }
    match form.step.as_str() {
        "create" => create_deployment(&con, &op, form).await,
        "edit" => deployments::edit(&con, &op, &form).await,
        _ => deployments::preview(&con, &op, form).await,
    }
}

/// Creates the deployment the preview showed (its confirm button carries the form's fields
/// and the id chosen for the preview), through the API's own command builder, so the
/// console creates exactly what `outpost deployment create` with the same flags would.
async fn create_deployment(con: &Console, op: &Operator, form: RolloutForm) -> Response {
    let (req, plan_req) = match (form.request(), form.plan_request()) {
        (Ok(r), Ok(p)) => (r, p),
        (Err(e), _) | (_, Err(e)) => return deployments::refused(con, op, &form, e).await,
    };
    let caller = op.caller();
    let now = outpost_raft::now_ms();
    let scoped = op.caller();
    let read = con
        .app
        .read(move |r| {
            let built = match crate::api::deployments::rollout_command(r, &req, now) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            // The clients the selector reaches now must all be in the person's reach.
            let outside = match crate::api::deployments::plan(r, &plan_req, now) {
                Ok(plan) => deployments::plan_outside(r, &plan, &scoped)?,
                Err(e) => return Ok(Err(e)),
            };
            Ok(Ok((built, outside)))
        })
        .await;
    let (id, cmd) = match read {
        Ok(Ok((_, outside))) if !outside.is_empty() => {
            let e = outside_refusal(&op.caller(), "the selector reaches", &outside);
            return deployments::refused_as(con, op, &form, e).await;
        }
        Ok(Ok((v, _))) => v,
        Ok(Err(e)) => {
            return deployments::refused(con, op, &form, e.message().to_owned()).await;
        }
        Err(e) => return failed(con, Some(op), e),
    };
    match con.commit(&caller, cmd).await {
        Ok(_) => {
            Redirect::to(&format!("/deployments/{}?done=created", urlencode(&id))).into_response()
        }
        Err(e) => deployments::refused(con, op, &form, e.message().to_owned()).await,
    }
}

/// A step's form: the session's token and an optional reason (audited with the step).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StepForm {
    csrf: String,
    reason: String,
    /// The abort's "also uninstall where installed" checkbox (`on` when ticked).
    uninstall: Option<String>,
}

/// Approves a deployment waiting for approval; refused (shown on its page) when the
/// operator is the person who created it.
pub async fn approve(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<StepForm>,
) -> Response {
    step(
        &con,
        &op,
        &headers,
        id,
        form,
        RolloutStep::Approve,
        "approved",
    )
    .await
}

/// Pauses a running or scheduled deployment: no client starts installing it.
pub async fn pause(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<StepForm>,
) -> Response {
    step(&con, &op, &headers, id, form, RolloutStep::Pause, "paused").await
}

/// Resumes a paused or halted deployment.
pub async fn resume(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<StepForm>,
) -> Response {
    step(
        &con,
        &op,
        &headers,
        id,
        form,
        RolloutStep::Resume,
        "resumed",
    )
    .await
}

/// Aborts a deployment (after the confirmation page), uninstalling it where installed when
/// the box was ticked.
pub async fn abort(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<StepForm>,
) -> Response {
    let uninstall = form.uninstall.as_deref().is_some_and(|v| !v.is_empty());
    let done = if uninstall { "uninstalling" } else { "aborted" };
    let s = RolloutStep::Abort { uninstall };
    step(&con, &op, &headers, id, form, s, done).await
}

/// Commits one `RolloutStep` as the operator, then shows the deployment: with `done`'s
/// notice, or with the refusal (the creator's own approval, a step the state does not allow).
async fn step(
    con: &Console,
    op: &Operator,
    headers: &HeaderMap,
    id: String,
    form: StepForm,
    step: RolloutStep,
    done: &str,
) -> Response {
    if let Err(r) = op.check(headers, &form.csrf) {
        return r.into_response();
    }
    if let Err(e) = crate::api::fields::id("deployment id", &id) {
        return failed(con, Some(op), e);
    }
    let reason = match crate::api::rollout_input::reason(form.reason.trim()) {
        Ok(r) => r,
        Err(e) => return failed(con, Some(op), e),
    };
    // The API's rule: every client the deployment targets or that reported must be in reach.
    let (i, caller) = (id.clone(), op.caller());
    match con
        .app
        .read(move |r| {
            Ok(crate::api::deployments::check_deployment_reach(
                r, &caller, &i,
            ))
        })
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) | Err(e) => return failed(con, Some(op), e),
    }
    let cmd = Command::RolloutStep {
        id: id.clone(),
        step,
        reason,
    };
    match con.commit(&op.caller(), cmd).await {
        Ok(_) => {
            Redirect::to(&format!("/deployments/{}?done={done}", urlencode(&id))).into_response()
        }
        Err(e) => {
            let status = e.clone().into_response().status();
            let text = format!("Not done: {}", e.message());
            let page = deployments::deployment_page(con, op, &id, 1, "", text).await;
            if page.status().is_success() {
                (status, page).into_response()
            } else {
                page
            }
        }
    }
}

/// The client page's labels form: labels to add and to remove, comma separated.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LabelForm {
    csrf: String,
    add: String,
    remove: String,
}

/// Adds and removes labels of one client (`outpost client label ID --add L --remove M`).
pub async fn labels(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<LabelForm>,
) -> Response {
    if let Err(r) = op.check(&headers, &form.csrf) {
        return r.into_response();
    }
    if let Err(e) = crate::api::fields::id("client id", &id) {
        return failed(&con, Some(&op), e);
    }
    let (add, remove) = match (terms("add", &form.add), terms("remove", &form.remove)) {
        (Ok(a), Ok(r)) => (a, r),
        (Err(e), _) | (_, Err(e)) => {
            return message(&con, StatusCode::BAD_REQUEST, "Labels not changed", &e);
        }
    };
    use crate::api::rollout_input::{MAX_LABELS, names};
    let checked = names("label to add", &add, MAX_LABELS)
        .and_then(|()| names("label to remove", &remove, MAX_LABELS));
    if let Err(e) = checked {
        return message(
            &con,
            StatusCode::BAD_REQUEST,
            "Labels not changed",
            e.message(),
        );
    }
    if add.is_empty() && remove.is_empty() {
        return message(
            &con,
            StatusCode::BAD_REQUEST,
            "Labels not changed",
            "Name a label to add or to remove.",
        );
    }
    let (ids, caller) = (vec![id.clone()], op.caller());
    match con.app.read(move |r| ids_outside(r, &caller, &ids)).await {
        Ok(outside) if outside.is_empty() => {}
        Ok(outside) => {
            let e = outside_refusal(&op.caller(), "the request names", &outside);
            return failed(&con, Some(&op), e);
        }
        Err(e) => return failed(&con, Some(&op), e),
    }
    let cmd = Command::LabelClients {
        clients: vec![id.clone()],
        add,
        remove,
    };
    match con.commit(&op.caller(), cmd).await {
        Ok(_) => Redirect::to(&format!("/clients/{}?done=labels", urlencode(&id))).into_response(),
        Err(e) => failed(&con, Some(&op), e),
    }
}
