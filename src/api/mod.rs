//! The node's HTTP API, served on the HTTPS port (mTLS; roles from certificates) and on the
//! local Unix socket (root only, no certificate). One router for both; the connection decides
//! who the caller is, the handlers decide what the caller may do.
//!
//! Here: the router, the body caps and the identity check every request passes. Beside it:
//! `caller` (who is calling), `state` (what handlers share and how they commit and read),
//! `error` (the error answer), `identities` (the cached standing of an admin, node or client),
//! the input checks where fields enter (`fields`; a rollout's lists, soak, start time and
//! reason in `rollout_input`), the port's budgets (`requests`: the body
//! rule per caller and route; `limits`: pools, caps, rates; `pool`; `activity`: the idle
//! watchdog; `extractors`: rates applied before a handler), the counters (`refusals`,
//! `certs_seen`), and one file per resource (`status`, `tokens`, `admins`, `nodes`, `config`,
//! `audit`, `clients`, `inventory`, `bundles`, `deployments`, `renewal`, `backup`, `upgrade`,
//! `doctor`: the site's check,
//! `console`: the console's links, accounts and sessions). Bodies are `crate::wire` types;
//! `convert` turns storage and Raft records into them. The API knows nothing of the CLI or
//! the agent; it is started by `crate::node`.

pub mod access;
pub mod activity;
pub mod admins;
pub mod audit;
pub mod backup;
pub mod bundles;
mod caller;
pub mod certs_seen;
pub mod clients;
pub mod config;
pub mod console;
mod convert;
pub mod deployments;
pub mod doctor;
mod error;
pub mod extractors;
pub mod fields;
pub mod identities;
pub mod inventory;
pub mod limits;
pub mod nodes;
pub mod pool;
pub mod refusals;
pub mod renewal;
pub mod requests;
pub mod roles;
pub mod rollout_input;
mod state;
pub mod status;
pub mod tokens;
pub mod upgrade;

pub use caller::Caller;
pub use error::{ApiError, ApiResult};
pub use state::AppState;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Request bodies are capped per route and per caller before they are read
/// (`requests::body_rule`, applied by `crate::node::server` once the connection's caller is
/// known): enrollment and join are open to anyone (64 KiB), inventory reports carry a
/// client's facts (1 MiB, and room for the whitespace of a pretty-printed upload), a bundle
/// commit carries an operator's signed manifest and signature bytes (base64), everything
/// else is small.
pub const BODY_LIMIT: usize = 64 << 10;
pub const INVENTORY_BODY_LIMIT: usize = outpost_storage::REPORT_MAX_FACTS_BYTES + (64 << 10);
pub const BUNDLE_BODY_LIMIT: usize = 12 << 20;

/// Every route of the API with its rule (`access::Need`): who may call it. The router is
/// built from this list, so a route without a rule cannot exist.
pub(crate) fn routes() -> access::Routes<Arc<AppState>> {
    use access::Need;
    use axum::http::Method;
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    access::Routes::default()
        .add(get.clone(), "/healthz", Need::Open, status::healthz)
        .add(get.clone(), "/readyz", Need::Open, status::readyz)
        .add(get.clone(), "/metrics", Need::READ, status::metrics)
        .add(get.clone(), "/v1/status", Need::READ, status::status)
        .add(get.clone(), "/v1/doctor", Need::READ, doctor::doctor)
        .add(
            post.clone(),
            "/v1/tokens",
            Need::ADMIN,
            tokens::create_token,
        )
        .add(get.clone(), "/v1/tokens", Need::READ, tokens::token_list)
        .add(
            post.clone(),
            "/v1/tokens/{id}/revoke",
            Need::ADMIN,
            tokens::token_revoke,
        )
        .add(
            post.clone(),
            "/v1/admins/{name}/revoke",
            Need::ADMIN,
            admins::admin_revoke,
        )
        .add(get.clone(), "/v1/roles", Need::READ, roles::list)
        .add(get.clone(), "/v1/roles/{name}", Need::READ, roles::show)
        .add(put.clone(), "/v1/roles/{name}", Need::ADMIN, roles::set)
        .add(post.clone(), "/v1/join", Need::Open, nodes::join)
        .add(get.clone(), "/v1/nodes", Need::READ, nodes::nodes)
        .add(
            delete.clone(),
            "/v1/nodes/{id}",
            Need::ADMIN,
            nodes::remove_node,
        )
        .add(get.clone(), "/v1/config", Need::READ, config::config_list)
        .add(put.clone(), "/v1/config", Need::OPERATE, config::config_set)
        .add(
            get.clone(),
            "/v1/config/{key}",
            Need::READ,
            config::config_get,
        )
        .add(
            delete.clone(),
            "/v1/config/{key}",
            Need::OPERATE,
            config::config_delete,
        )
        .add(get.clone(), "/v1/audit", Need::READ, audit::audit)
        .add(get.clone(), "/v1/audit/verify", Need::READ, audit::verify)
        .add(
            get.clone(),
            "/v1/audit/checkpoint",
            Need::READ,
            audit::checkpoint,
        )
        .add(get.clone(), "/v1/audit/export", Need::READ, audit::export)
        .add(
            get.clone(),
            "/v1/config-effective/{client}",
            Need::READ,
            config::config_effective,
        )
        .add(post.clone(), "/v1/enroll", Need::Open, clients::enroll)
        .add(
            get.clone(),
            "/v1/agent/sync",
            Need::Agent,
            clients::agent_sync,
        )
        .add(
            get.clone(),
            "/v1/agent/config",
            Need::Agent,
            clients::agent_config,
        )
        .add(
            get.clone(),
            "/v1/agent/trust",
            Need::Agent,
            clients::agent_trust,
        )
        .add_capped(
            put.clone(),
            "/v1/agent/inventory",
            Need::Agent,
            INVENTORY_BODY_LIMIT,
            inventory::agent_inventory,
        )
        .add(
            get.clone(),
            "/v1/inventory",
            Need::READ,
            inventory::inventory_query,
        )
        .add(
            get.clone(),
            "/v1/inventory/{client}",
            Need::READ,
            inventory::inventory_show,
        )
        .add(get.clone(), "/v1/clients", Need::READ, clients::list)
        .add(get.clone(), "/v1/clients/{id}", Need::READ, clients::show)
        .add(
            post.clone(),
            "/v1/clients/{id}/revoke",
            Need::ADMIN,
            clients::revoke,
        )
        .add_capped(
            post.clone(),
            "/v1/clients/labels",
            Need::OPERATE,
            rollout_input::LABELS_BODY_LIMIT,
            clients::label,
        )
        .add(get.clone(), "/v1/bundles", Need::READ, bundles::list)
        .add_capped(
            post.clone(),
            "/v1/bundles",
            Need::ADMIN,
            BUNDLE_BODY_LIMIT,
            bundles::commit,
        )
        .add(
            get.clone(),
            "/v1/bundles/context",
            Need::ADMIN,
            bundles::context,
        )
        .add(post.clone(), "/v1/bundles/gc", Need::ADMIN, bundles::gc)
        .add(
            get.clone(),
            "/v1/deployments",
            Need::READ,
            deployments::list,
        )
        .add(
            post.clone(),
            "/v1/deployments",
            Need::OPERATE,
            deployments::create,
        )
        .add(
            post.clone(),
            "/v1/deployments/plan",
            Need::OPERATE,
            deployments::plan_route,
        )
        .add(
            get.clone(),
            "/v1/deployments/{id}",
            Need::READ,
            deployments::status,
        )
        .add(
            post.clone(),
            "/v1/deployments/{id}/{step}",
            Need::OPERATE,
            deployments::step,
        )
        .add(
            get.clone(),
            "/v1/agent/assignments",
            Need::Agent,
            deployments::assignments,
        )
        .add(
            get.clone(),
            "/v1/agent/artifacts/{sha256}",
            Need::Agent,
            deployments::artifact,
        )
        .add(
            post.clone(),
            "/v1/agent/results",
            Need::Agent,
            deployments::report,
        )
        .add(post.clone(), "/v1/agent/renew", Need::Agent, renewal::renew)
        .add(
            post.clone(),
            "/v1/agent/renew/confirm",
            Need::Agent,
            renewal::renew_confirm,
        )
        .add(post.clone(), "/v1/backup", Need::ADMIN, backup::backup)
        .add(get.clone(), "/v1/upgrade", Need::READ, upgrade::status)
        .add(post.clone(), "/v1/upgrade", Need::ADMIN, upgrade::start)
        .add(
            post.clone(),
            "/v1/console/links",
            Need::ADMIN,
            console::create_link,
        )
        .add(get.clone(), "/v1/console/users", Need::READ, console::users)
        .add(
            put.clone(),
            "/v1/console/users",
            Need::ADMIN,
            console::set_user,
        )
        .add(
            delete,
            "/v1/console/users/{name}",
            Need::ADMIN,
            console::remove_user,
        )
        .add(get, "/v1/console/sessions", Need::READ, console::sessions)
        .add(
            post,
            "/v1/console/sessions/{id}/end",
            Need::ADMIN,
            console::end_session,
        )
}

/// The rule of every route of the API, as the router holds them.
pub fn route_rules() -> Vec<access::RouteRule> {
    routes().into_parts().1
}

pub fn router(state: Arc<AppState>) -> Router {
    use axum::extract::DefaultBodyLimit;
    let (router, rules) = routes().into_parts();
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), Arc::new(rules)),
            identity_still_valid,
        ))
        .with_state(state)
}

/// An identity's standing in the state: from the cache while nothing that changes who may
/// call has been applied since it was read, else read again (on a blocking thread).
async fn standing(
    st: &AppState,
    who: identities::Identity,
) -> Result<identities::Standing, ApiError> {
    let epoch = st.node.reader().identity_epoch();
    if let Some(known) = st.identities.get(epoch, &who) {
        return Ok(known);
    }
    let asked = who.clone();
    let found = st
        .read(move |r| {
            Ok(match asked {
                identities::Identity::Admin(name) => identities::Standing::Admin {
                    revoked_at: r.admin_revoked_at(&name)?,
                    grant: r.grant(&name)?,
                },
                identities::Identity::Node(id) => {
                    identities::Standing::Node(r.node(id)?.map(|n| n.role))
                }
                identities::Identity::Client(id) => {
                    identities::Standing::Client(r.client_cert_state(&id)?.map(Arc::new))
                }
            })
        })
        .await?;
    st.identities.put(epoch, who, found.clone());
    Ok(found)
}

/// The refusal for a connection whose handshake showed `caller`'s certificate when that
/// identity may no longer call: a revoked client, a revoked admin certificate, a removed
/// node. From the identity cache (a read on a blocking thread when the state changed
/// since). `None`: go on (also when the read fails: each request's own checks refuse it).
/// Only what the state says for certain: a client or node not known here yet may have been
/// added through a node this one has not caught up with, and a renewed client's old serial
/// is refused by the request's own check (403), within the identity's connection cap.
pub async fn refused_identity(st: &AppState, caller: &Caller) -> Option<ApiError> {
    let forbidden = |m: String| Some(ApiError::new(StatusCode::FORBIDDEN, m));
    match caller {
        Caller::Admin {
            name, issued_at, ..
        } => match standing(st, identities::Identity::Admin(name.clone())).await {
            Ok(identities::Standing::Admin {
                revoked_at: Some(at),
                ..
            }) if issued_at.saturating_mul(1000) <= at => {
                forbidden(format!("the admin certificate of {name} was revoked"))
            }
            _ => None,
        },
        Caller::Node(id) => match standing(st, identities::Identity::Node(*id)).await {
            Ok(identities::Standing::Node(Some(outpost_storage::NodeRole::Removed))) => {
                forbidden(format!("node {id} is not a member of this cluster"))
            }
            _ => None,
        },
        Caller::Client { id, .. } => {
            match standing(st, identities::Identity::Client(id.clone())).await {
                Ok(identities::Standing::Client(Some(cert))) if cert.revoked => {
                    forbidden(format!("client {id} is revoked"))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Refuses, on every request, an admin certificate whose name was revoked after it was
/// issued and a node certificate of a node that was removed (or never joined): an identity
/// ends from the moment its revocation applies on this node, even on a connection opened
/// before. Client certificates are checked by the agent routes (`authorized_client`). Then a
/// person (an admin certificate) gets its grant as of now (after catching up with the
/// leader, `access::Freshness`) and the route's rule is checked, before the handler reads
/// the body; a client certificate is refused people's routes at the same point.
async fn identity_still_valid(
    State((st, rules)): State<(Arc<AppState>, Arc<Vec<access::RouteRule>>)>,
    Extension(caller): Extension<Caller>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    st.certs_seen.note(&caller, outpost_raft::now_ms() / 1000);
    let rule = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|p| access::rule_of(&rules, req.method(), p.as_str()))
        .map(|r| r.need);
    let refusal = match &caller {
        Caller::Admin {
            name,
            issued_at,
            not_after,
            ..
        } => match admin_standing(&st, name, *issued_at).await {
            Ok(grant) => {
                let person = Caller::Admin {
                    name: name.clone(),
                    issued_at: *issued_at,
                    not_after: *not_after,
                    grant,
                };
                let refused = need_refusal(&person, rule, req.method(), req.uri().path());
                req.extensions_mut().insert(person);
                refused
            }
            Err(e) => Some(e),
        },
        Caller::Client { .. } => need_refusal(&caller, rule, req.method(), req.uri().path()),
        Caller::Node(id) => match standing(&st, identities::Identity::Node(*id)).await {
            Ok(identities::Standing::Node(Some(role)))
                if role != outpost_storage::NodeRole::Removed =>
            {
                None
            }
            Ok(_) => Some(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("node {id} is not a member of this cluster"),
            )),
            Err(e) => Some(e),
        },
        _ => None,
    };
    if let Some(e) = refusal {
        return e.into_response();
    }
    match req
        .headers()
        .get(state::REQUEST_ID_HEADER)
        .and_then(state::ClientRequest::from_header)
    {
        Some(r) => state::CLIENT_REQUEST.scope(r, next.run(req)).await,
        None => next.run(req).await,
    }
}

/// An admin certificate's grant as of this request: refused (403) when the name was revoked
/// after the certificate was issued, else the name's role and scope, read after this node
/// caught up with the leader.
async fn admin_standing(
    st: &AppState,
    name: &str,
    issued_at: i64,
) -> Result<outpost_storage::Grant, ApiError> {
    let revoked = |s: &identities::Standing| match s {
        identities::Standing::Admin {
            revoked_at: Some(at),
            ..
        } => issued_at.saturating_mul(1000) <= *at,
        _ => false,
    };
    // A revoked certificate is refused from this node's state, before any wait.
    let first = standing(st, identities::Identity::Admin(name.to_owned())).await?;
    if revoked(&first) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("the admin certificate of {name} was revoked"),
        ));
    }
    st.catch_up_for_person().await;
    match standing(st, identities::Identity::Admin(name.to_owned())).await? {
        s if revoked(&s) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("the admin certificate of {name} was revoked"),
        )),
        identities::Standing::Admin { grant, .. } => Ok(grant),
        _ => Ok(Caller::unresolved()),
    }
}

/// The refusal of a route's rule for a caller, if any. Persons are checked here, and clients
/// on people's routes: the local socket is an admin, and nodes and anonymous callers get what
/// each handler allows them. A route without a rule (none: the router adds every route with
/// one) is refused to persons.
pub(crate) fn need_refusal(
    caller: &Caller,
    need: Option<access::Need>,
    method: &axum::http::Method,
    path: &str,
) -> Option<ApiError> {
    let forbidden = |m: String| Some(ApiError::new(StatusCode::FORBIDDEN, m));
    // An enrolled client has the agent's routes and the open ones only: refused here, before
    // a handler parses its body (a malformed body would otherwise be answered 422, not 403).
    if let Caller::Client { .. } = caller {
        return match need {
            Some(access::Need::Person(_)) => forbidden(format!(
                "{} may not use the admin API ({method} {path} is for people)",
                caller.actor()
            )),
            _ => None,
        };
    }
    let (name, grant) = caller.person()?;
    match need {
        Some(access::Need::Open) => None,
        Some(access::Need::Agent) => forbidden(format!(
            "{} may not use the agent API ({method} {path} is an enrolled client's)",
            caller.actor()
        )),
        Some(access::Need::Person(role)) if grant.role >= role => None,
        Some(access::Need::Person(role)) => forbidden(format!(
            "{name} is a{} {}: {method} {path} needs the {role} role",
            if grant.role == outpost_storage::PersonRole::Admin {
                "n"
            } else {
                ""
            },
            grant.role
        )),
        None => forbidden(format!("{method} {path} has no rule for people")),
    }
}
