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
use axum::routing::{delete, get, post, put};

/// Request bodies are capped per route and per caller before they are read
/// (`requests::body_rule`, applied by `crate::node::server` once the connection's caller is
/// known): enrollment and join are open to anyone (64 KiB), inventory reports carry a
/// client's facts (1 MiB, and room for the whitespace of a pretty-printed upload), a bundle
/// commit carries an operator's signed manifest and signature bytes (base64), everything
/// else is small.
pub const BODY_LIMIT: usize = 64 << 10;
pub const INVENTORY_BODY_LIMIT: usize = outpost_storage::REPORT_MAX_FACTS_BYTES + (64 << 10);
pub const BUNDLE_BODY_LIMIT: usize = 12 << 20;

pub fn router(state: Arc<AppState>) -> Router {
    use axum::extract::DefaultBodyLimit;
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .route("/v1/status", get(status::status))
        .route("/v1/doctor", get(doctor::doctor))
        .route(
            "/v1/tokens",
            post(tokens::create_token).get(tokens::token_list),
        )
        .route("/v1/tokens/{id}/revoke", post(tokens::token_revoke))
        .route("/v1/admins/{name}/revoke", post(admins::admin_revoke))
        .route("/v1/join", post(nodes::join))
        .route("/v1/nodes", get(nodes::nodes))
        .route("/v1/nodes/{id}", delete(nodes::remove_node))
        .route(
            "/v1/config",
            get(config::config_list).put(config::config_set),
        )
        .route(
            "/v1/config/{key}",
            get(config::config_get).delete(config::config_delete),
        )
        .route("/v1/audit", get(audit::audit))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/export", get(audit::export))
        .route(
            "/v1/config-effective/{client}",
            get(config::config_effective),
        )
        .route("/v1/enroll", post(clients::enroll))
        .route("/v1/agent/sync", get(clients::agent_sync))
        .route("/v1/agent/config", get(clients::agent_config))
        .route("/v1/agent/trust", get(clients::agent_trust))
        .route(
            "/v1/agent/inventory",
            put(inventory::agent_inventory).layer(DefaultBodyLimit::max(INVENTORY_BODY_LIMIT)),
        )
        .route("/v1/inventory", get(inventory::inventory_query))
        .route("/v1/inventory/{client}", get(inventory::inventory_show))
        .route("/v1/clients", get(clients::list))
        .route("/v1/clients/{id}", get(clients::show))
        .route("/v1/clients/{id}/revoke", post(clients::revoke))
        .route(
            "/v1/clients/labels",
            post(clients::label).layer(DefaultBodyLimit::max(rollout_input::LABELS_BODY_LIMIT)),
        )
        .route(
            "/v1/bundles",
            get(bundles::list)
                .post(bundles::commit)
                .layer(DefaultBodyLimit::max(BUNDLE_BODY_LIMIT)),
        )
        .route("/v1/bundles/context", get(bundles::context))
        .route(
            "/v1/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route("/v1/deployments/plan", post(deployments::plan_route))
        .route("/v1/deployments/{id}", get(deployments::status))
        .route("/v1/deployments/{id}/{step}", post(deployments::step))
        .route("/v1/agent/assignments", get(deployments::assignments))
        .route("/v1/agent/artifacts/{sha256}", get(deployments::artifact))
        .route("/v1/agent/results", post(deployments::report))
        .route("/v1/agent/renew", post(renewal::renew))
        .route("/v1/agent/renew/confirm", post(renewal::renew_confirm))
        .route("/v1/bundles/gc", post(bundles::gc))
        .route("/v1/backup", post(backup::backup))
        .route("/v1/upgrade", get(upgrade::status).post(upgrade::start))
        .route("/v1/console/links", post(console::create_link))
        .route(
            "/v1/console/users",
            get(console::users).put(console::set_user),
        )
        .route("/v1/console/users/{name}", delete(console::remove_user))
        .route("/v1/console/sessions", get(console::sessions))
        .route("/v1/console/sessions/{id}/end", post(console::end_session))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
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
                identities::Identity::Admin(name) => {
                    identities::Standing::AdminRevokedAt(r.admin_revoked_at(&name)?)
                }
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
            Ok(identities::Standing::AdminRevokedAt(Some(at)))
                if issued_at.saturating_mul(1000) <= at =>
            {
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
/// before. Client certificates are checked by the agent routes (`authorized_client`).
async fn identity_still_valid(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    st.certs_seen.note(&caller, outpost_raft::now_ms() / 1000);
    let refusal = match &caller {
        Caller::Admin {
            name, issued_at, ..
        } => match standing(&st, identities::Identity::Admin(name.clone())).await {
            Ok(identities::Standing::AdminRevokedAt(Some(at)))
                if issued_at.saturating_mul(1000) <= at =>
            {
                Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("the admin certificate of {name} was revoked"),
                ))
            }
            Ok(_) => None,
            Err(e) => Some(e),
        },
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
