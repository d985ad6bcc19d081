//! The People page: every person's role and scope (what `outpost role list` shows), and for
//! admins the form that sets one, committed as `SetRole` like `PUT /v1/roles/NAME`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use outpost_storage::Command;
use serde::Deserialize;

use crate::api::roles::{ROLES_VERSION, all_views, before_roles, parse_request};
use crate::api::{ApiError, fields};
use crate::console::session::failed;
use crate::console::views::{Chrome, People, PersonRow, render};
use crate::console::{Console, Operator, ago};
use crate::shared::client::urlencode;
use crate::wire::RoleRequest;

#[derive(Debug, Default, Deserialize)]
pub struct PeopleQuery {
    /// The name whose role was just set.
    #[serde(default)]
    done: String,
}

/// `GET /people`: every name with its role and scope.
pub async fn people(
    State(con): State<Arc<Console>>,
    op: Operator,
    Query(q): Query<PeopleQuery>,
) -> Response {
    let notice = if q.done.is_empty() {
        String::new()
    } else {
        format!(
            "Role of {} set: in force on every node from its next request.",
            crate::shared::text::shown(&q.done)
        )
    };
    page(&con, &op, StatusCode::OK, notice, String::new()).await
}

async fn page(
    con: &Console,
    op: &Operator,
    status: StatusCode,
    notice: String,
    error: String,
) -> Response {
    let views = match con.app.read(all_views).await {
        Ok(v) => v,
        Err(e) => return failed(con, Some(op), e),
    };
    let now = outpost_raft::now_ms();
    let rows = views
        .into_iter()
        .map(|v| PersonRow {
            scope: if v.scopes.is_empty() {
                "whole site".into()
            } else {
                v.scopes.join(", ")
            },
            changed: match (v.updated_at_ms, &v.updated_by) {
                (Some(at), Some(by)) => format!("changed {} by {by}", ago(at, now)),
                _ => String::new(),
            },
            name: v.name,
            role: v.role,
            implicit: v.implicit,
            console_account: v.console_account,
        })
        .collect();
    let page = render(&People {
        c: Chrome::new(con, op, "People", "people"),
        rows,
        notice,
        error,
    });
    (status, page).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoleForm {
    csrf: String,
    name: String,
    role: String,
    /// `group:G` and `label:L` terms, comma or space separated; empty for the whole site.
    scopes: String,
}

/// `POST /people/set`: sets a person's role and scope (admins only, by the route's rule).
/// Checked as the API checks it (400 naming the field; 409 before every member runs roles).
pub async fn set(
    State(con): State<Arc<Console>>,
    op: Operator,
    headers: HeaderMap,
    axum::Form(form): axum::Form<RoleForm>,
) -> Response {
    if let Err(r) = op.check(&headers, &form.csrf) {
        return r.into_response();
    }
    let name = form.name.trim().to_owned();
    let req = RoleRequest {
        role: form.role.trim().to_owned(),
        scopes: form
            .scopes
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    let grant = match fields::id("person", &name).and_then(|()| parse_request(&req)) {
        Ok(g) => g,
        Err(e) => return refused(&con, &op, e).await,
    };
    match con.app.read(|r| r.members_at_least(ROLES_VERSION)).await {
        Ok(true) => {}
        Ok(false) => return refused(&con, &op, before_roles()).await,
        Err(e) => return failed(&con, Some(&op), e),
    }
    let cmd = Command::SetRole {
        name: name.clone(),
        grant,
    };
    match con.commit(&op.caller(), cmd).await {
        Ok(_) => Redirect::to(&format!("/people?done={}", urlencode(&name))).into_response(),
        Err(e) => refused(&con, &op, e).await,
    }
}

/// The page again with why the change was refused, under the refusal's status.
async fn refused(con: &Console, op: &Operator, e: ApiError) -> Response {
    let status = e.clone().into_response().status();
    page(con, op, status, String::new(), e.message().to_owned()).await
}
