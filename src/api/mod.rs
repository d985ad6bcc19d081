//! The node's HTTP API, served on the HTTPS port (mTLS; roles from certificates) and on the
//! local Unix socket (root only, no certificate). One router for both; the connection decides
//! who the caller is, the handlers decide what the caller may do.

pub mod bundles;
pub mod clients;
pub mod deployments;
pub mod fields;
pub mod inventory;
pub mod limits;
pub mod refusals;
pub mod renewal;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use outpost_certs::{CertAuthority, Fingerprint, Role, Validity};
use outpost_raft::{NodeStatus, RaftNode};
use outpost_storage::{
    Command, ConfigEntry, Envelope, NodeRecord, Outcome, RejectCode, Response as Done, Scope,
    TokenCheck, TokenKind,
};
use serde::Deserialize;

use crate::shared::token::{Token, secret_sha256};
use crate::wire::{
    ConfigSetRequest, ConfigSetResponse, JoinRequest, JoinResponse, Readiness, StatusView,
    TokenRequest, TokenResponse,
};

/// Who is calling, decided per connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// The local Unix socket, by a process of our own user or root.
    Local,
    /// An admin certificate: its name and when it was issued (unix seconds), which decides
    /// whether `admin revoke NAME` covers it.
    Admin {
        name: String,
        issued_at: i64,
    },
    Node(u64),
    /// A client certificate: the client id, the certificate's serial (lowercase hex) and its
    /// validity (unix seconds), which decides whether it may renew.
    Client {
        id: String,
        serial: String,
        not_before: i64,
        not_after: i64,
    },
    /// TLS without a client certificate: only join (and health) are open to it.
    Anonymous,
}

impl Caller {
    /// The caller behind a leaf certificate that rustls verified against the cluster CA: the
    /// role comes from our own certificate profile.
    pub fn from_cert(leaf: &[u8]) -> Result<Caller, outpost_certs::CertError> {
        Ok(match outpost_certs::role_of(leaf)? {
            Role::Node(id) => Caller::Node(id),
            Role::Admin(name) => Caller::Admin {
                name,
                issued_at: outpost_certs::not_before_unix(leaf)?
                    .saturating_add(outpost_certs::CLOCK_SKEW_SECS),
            },
            Role::Client(id) => Caller::Client {
                id,
                serial: outpost_certs::serial_hex(leaf)?,
                not_before: outpost_certs::not_before_unix(leaf)?,
                not_after: outpost_certs::not_after_unix(leaf)?,
            },
        })
    }

    pub(crate) fn actor(&self) -> String {
        match self {
            Caller::Local => "local-admin".into(),
            Caller::Admin { name, .. } => format!("admin:{name}"),
            Caller::Node(id) => format!("node:{id}"),
            Caller::Client { id, .. } => format!("client:{id}"),
            Caller::Anonymous => "anonymous".into(),
        }
    }

    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Local | Caller::Admin { .. } => Ok(()),
            Caller::Anonymous => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a client certificate is required",
            )),
            other => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{} may not use the admin API", other.actor()),
            )),
        }
    }

    fn require_member(&self) -> Result<(), ApiError> {
        match self {
            Caller::Local | Caller::Admin { .. } | Caller::Node(_) => Ok(()),
            _ => self.require_admin(),
        }
    }
}

pub struct AppState {
    pub node: RaftNode,
    pub node_id: u64,
    pub name: String,
    pub cluster_id: String,
    pub ca: CertAuthority,
    pub ca_fingerprint: Fingerprint,
    /// Not-after (unix seconds) of this node's own certificate, for /metrics.
    pub node_cert_not_after: i64,
    /// Clients seen by this node since the last flush (client id -> ms); flushed to Raft as
    /// one `TouchClients` command every few seconds by `clients::flush_last_seen`.
    pub seen: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// The content-addressed blob store and its replication from peers.
    pub blobs: Arc<crate::blobs::Blobs>,
    /// The data directory (bundle import runs beside the node on the same host).
    pub data_dir: std::path::PathBuf,
    /// Refused unauthenticated requests, counted by reason and logged at most once per source
    /// address per minute.
    pub refusals: crate::api::refusals::Refusals,
    /// The last answer of the readiness probe (a read-index round trip), reused for a second
    /// so that a flood of anonymous `/readyz` requests costs the leader nothing.
    pub readiness: tokio::sync::Mutex<Option<(std::time::Instant, Readiness)>>,
    /// Connection caps, timeouts and the enroll/join rate limit of the API port.
    pub limits: Arc<crate::api::limits::ApiLimits>,
}

/// Request bodies are capped per route before they are read: enrollment and join are open to
/// anyone (64 KiB), inventory reports carry facts (1 MiB), a bundle commit carries the signed
/// manifest and signature bytes (base64), everything else is small.
pub const BODY_LIMIT: usize = 64 << 10;
pub const INVENTORY_BODY_LIMIT: usize = outpost_storage::MAX_FACTS_BYTES + (64 << 10);
pub const BUNDLE_BODY_LIMIT: usize = 12 << 20;

pub fn router(state: Arc<AppState>) -> Router {
    use axum::extract::DefaultBodyLimit;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/tokens", post(create_token).get(token_list))
        .route("/v1/tokens/{id}/revoke", post(token_revoke))
        .route("/v1/admins/{name}/revoke", post(admin_revoke))
        .route("/v1/join", post(join))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}", delete(remove_node))
        .route("/v1/config", get(config_list).put(config_set))
        .route("/v1/config/{key}", get(config_get).delete(config_delete))
        .route("/v1/audit", get(audit))
        .route("/v1/config-effective/{client}", get(config_effective))
        .route("/v1/enroll", post(crate::api::clients::enroll))
        .route("/v1/agent/config", get(crate::api::clients::agent_config))
        .route(
            "/v1/agent/inventory",
            axum::routing::put(crate::api::inventory::agent_inventory)
                .layer(DefaultBodyLimit::max(INVENTORY_BODY_LIMIT)),
        )
        .route("/v1/inventory", get(crate::api::inventory::inventory_query))
        .route(
            "/v1/inventory/{client}",
            get(crate::api::inventory::inventory_show),
        )
        .route("/v1/clients", get(crate::api::clients::list))
        .route("/v1/clients/{id}", get(crate::api::clients::show))
        .route("/v1/clients/{id}/revoke", post(crate::api::clients::revoke))
        .route(
            "/v1/bundles",
            get(crate::api::bundles::list)
                .post(crate::api::bundles::commit)
                .layer(DefaultBodyLimit::max(BUNDLE_BODY_LIMIT)),
        )
        .route("/v1/bundles/context", get(crate::api::bundles::context))
        .route(
            "/v1/deployments",
            get(crate::api::deployments::list).post(crate::api::deployments::create),
        )
        .route("/v1/deployments/{id}", get(crate::api::deployments::status))
        .route(
            "/v1/agent/assignments",
            get(crate::api::deployments::assignments),
        )
        .route(
            "/v1/agent/artifacts/{sha256}",
            get(crate::api::deployments::artifact),
        )
        .route("/v1/agent/results", post(crate::api::deployments::report))
        .route("/v1/agent/renew", post(crate::api::renewal::renew))
        .route(
            "/v1/agent/renew/confirm",
            post(crate::api::renewal::renew_confirm),
        )
        .route("/v1/bundles/gc", post(crate::api::bundles::gc))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            identity_still_valid,
        ))
        .with_state(state)
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
    let refusal = match &caller {
        Caller::Admin { name, issued_at } => {
            let n = name.clone();
            match st.read(move |r| r.admin_revoked_at(&n)).await {
                Ok(Some(at)) if issued_at.saturating_mul(1000) <= at => Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("the admin certificate of {name} was revoked"),
                )),
                Ok(_) => None,
                Err(e) => Some(e),
            }
        }
        Caller::Node(id) => {
            let id = *id;
            match st.read(move |r| r.node(id)).await {
                Ok(Some(n)) if n.role != outpost_storage::NodeRole::Removed => None,
                Ok(_) => Some(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("node {id} is not a member of this cluster"),
                )),
                Err(e) => Some(e),
            }
        }
        _ => None,
    };
    match refusal {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

use outpost_storage::HANDLER_KEY_PREFIX as HANDLER_PREFIX;

// ---- query strings ----

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

// ---- errors ----

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;

fn outcome(o: Outcome) -> Result<Done, ApiError> {
    o.map_err(|r| {
        let status = match r.code {
            RejectCode::NotFound => StatusCode::NOT_FOUND,
            RejectCode::AlreadyExists => StatusCode::CONFLICT,
            RejectCode::TokenInvalid | RejectCode::TokenExpired | RejectCode::TokenUsedUp => {
                StatusCode::FORBIDDEN
            }
            RejectCode::Invalid => StatusCode::BAD_REQUEST,
            RejectCode::NotInitialized => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, r.message)
    })
}

impl AppState {
    pub(crate) async fn commit(&self, caller: &Caller, command: Command) -> Result<Done, ApiError> {
        let env = Envelope {
            at_ms: outpost_raft::now_ms(),
            actor: caller.actor(),
            command,
        };
        let o = self.node.write(env).await.map_err(ApiError::unavailable)?;
        outcome(o)
    }

    /// Checks a token against the local state before anything is written. A token unknown
    /// here may have been made on another node a moment ago: then this node first catches up
    /// with the leader (read index, bounded) and looks again. Err carries the answer and the
    /// reason for the refusal counter.
    pub(crate) async fn check_token(
        &self,
        token_id: &str,
        secret_sha256: &str,
        kind: TokenKind,
    ) -> Result<(), (ApiError, &'static str)> {
        for attempt in 0..2 {
            let (id, secret) = (token_id.to_string(), secret_sha256.to_string());
            let now = outpost_raft::now_ms();
            let verdict = self
                .read(move |r| r.check_token(&id, &secret, kind, now))
                .await
                .map_err(|e| (e, "internal"))?;
            let (rej, unknown) = match verdict {
                TokenCheck::Usable => return Ok(()),
                TokenCheck::Unknown(rej) => (rej, true),
                TokenCheck::Refused(rej) => (rej, false),
            };
            // Only a bounded read-index round trip, never a write.
            if attempt == 0
                && unknown
                && self
                    .node
                    .linearizable_barrier(Duration::from_secs(2))
                    .await
                    .is_ok()
            {
                continue;
            }
            let reason = match rej.code {
                RejectCode::TokenExpired => "token_expired",
                RejectCode::TokenUsedUp => "token_used_up",
                _ if unknown => "token_unknown",
                _ => "token_invalid",
            };
            return Err((ApiError::new(StatusCode::FORBIDDEN, rej.message), reason));
        }
        Err((
            ApiError::new(StatusCode::FORBIDDEN, "the token was not accepted"),
            "token_invalid",
        ))
    }

    /// Runs a blocking storage query on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&outpost_storage::Reader) -> Result<T, outpost_storage::StorageError>
        + Send
        + 'static,
    ) -> Result<T, ApiError> {
        let reader = self.node.reader();
        tokio::task::spawn_blocking(move || f(&reader))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    async fn status_view(&self) -> StatusView {
        let s: NodeStatus = self.node.status();
        let cluster_name = self
            .read(|r| r.cluster())
            .await
            .ok()
            .flatten()
            .map(|c| c.name);
        StatusView {
            name: self.name.clone(),
            cluster_id: self.cluster_id.clone(),
            cluster_name,
            raft: s,
            ready: Some(self.readiness().await),
        }
    }

    /// Ready: not stopped, a member, a leader known, and that leader confirms (read index,
    /// a heartbeat round with a quorum) within two seconds. Answers are reused for a second.
    pub(crate) async fn readiness(&self) -> Readiness {
        let mut cached = self.readiness.lock().await;
        if let Some((at, r)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return r.clone();
        }
        let s = self.node.status();
        let member = s.members.iter().any(|m| m.id == self.node_id);
        let verdict = match (s.fatal, s.leader_id, member) {
            (Some(f), _, _) => Err(f),
            (None, _, false) => Err("not a member of the cluster".to_string()),
            (None, None, true) => Err("no leader".to_string()),
            (None, Some(_), true) => self
                .node
                .linearizable_barrier(Duration::from_secs(2))
                .await
                .map_err(|e| format!("the cluster cannot commit: {e}")),
        };
        let r = match verdict {
            Ok(()) => Readiness {
                ready: true,
                reason: "ready".into(),
            },
            Err(reason) => Readiness {
                ready: false,
                reason,
            },
        };
        *cached = Some((std::time::Instant::now(), r.clone()));
        r
    }
}

// ---- handlers ----

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.node.status().fatal {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(f) => (StatusCode::SERVICE_UNAVAILABLE, format!("{f}\n")).into_response(),
    }
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let r = st.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{}\n", r.reason)).into_response()
}

async fn metrics(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require_member()?;
    let s = st.node.status();
    let now = outpost_raft::now_ms() / 1000;
    let ca_not_after = pem_der(st.ca.cert_pem())
        .and_then(|d| outpost_certs::not_after_unix(&d).ok())
        .unwrap_or(i64::MAX);
    let soonest = st.node_cert_not_after.min(ca_not_after);
    let voters = s.members.iter().filter(|m| m.voter).count();
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    metric(
        "outpost_raft_term",
        "Current Raft term.",
        s.term.to_string(),
    );
    metric(
        "outpost_raft_is_leader",
        "1 if this node is the leader.",
        u8::from(s.leader_id == Some(st.node_id)).to_string(),
    );
    metric(
        "outpost_raft_has_leader",
        "1 if this node knows a leader.",
        u8::from(s.leader_id.is_some()).to_string(),
    );
    metric(
        "outpost_raft_applied_index",
        "Last log index applied to the state.",
        s.applied_index.to_string(),
    );
    metric(
        "outpost_raft_last_log_index",
        "Last log index in this node's log.",
        s.last_log_index.to_string(),
    );
    metric(
        "outpost_raft_members",
        "Members (voters and learners).",
        s.members.len().to_string(),
    );
    metric("outpost_raft_voters", "Voting members.", voters.to_string());
    metric(
        "outpost_cert_soonest_expiry_seconds",
        "Seconds until the soonest certificate expiry on this node.",
        (soonest - now).to_string(),
    );
    metric(
        "outpost_node_fatal",
        "1 if this node stopped applying.",
        u8::from(s.fatal.is_some()).to_string(),
    );
    st.refusals.render_metrics(&mut out);
    st.limits.render_metrics(&mut out);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

async fn status(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<StatusView> {
    caller.require_member()?;
    Ok(Json(st.status_view().await))
}

async fn create_token(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenRequest>,
) -> ApiResult<TokenResponse> {
    caller.require_admin()?;
    let kind = match req.kind.as_str() {
        "node" => TokenKind::Node,
        "client" => TokenKind::Client,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("token kind {other:?}: use node or client"),
            ));
        }
    };
    if req.ttl_secs == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "token ttl must be positive",
        ));
    }
    for g in &req.groups {
        crate::api::fields::id("group", g)?;
    }
    let addrs = st
        .node
        .status()
        .members
        .into_iter()
        .map(|m| m.api_addr)
        .collect();
    let token = Token::new(
        &req.kind,
        &st.cluster_id,
        &st.ca_fingerprint.to_string(),
        addrs,
    );
    let expires_at_ms =
        outpost_raft::now_ms().saturating_add((req.ttl_secs as i64).saturating_mul(1000));
    st.commit(
        &caller,
        Command::CreateToken {
            id: token.id.clone(),
            kind,
            secret_sha256: token.secret_sha256(),
            expires_at_ms,
            uses: req.uses,
            groups: req.groups,
        },
    )
    .await?;
    Ok(Json(TokenResponse {
        token: token.encode(),
        id: token.id,
        expires_at_ms,
    }))
}

async fn join(
    _: crate::api::limits::RateLimited,
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    remote: Option<Extension<crate::api::limits::Remote>>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, Response> {
    let source = remote.map(|Extension(crate::api::limits::Remote(addr))| addr.ip());
    let refuse = |e: ApiError, reason: &'static str| st.refusals.refuse("join", reason, source, e);
    // Everything below is checked against local state only: a request that fails here leaves
    // no Raft entry, no audit row and no certificate.
    let bad = |e: ApiError| refuse(e, "malformed");
    crate::api::fields::id("token id", &req.token_id).map_err(bad)?;
    crate::api::fields::sha256_hex("token secret", &req.secret).map_err(bad)?;
    crate::api::fields::id("node name", &req.name).map_err(bad)?;
    crate::api::fields::host_port("api address", &req.api_addr).map_err(bad)?;
    crate::api::fields::host_port("peer address", &req.peer_addr).map_err(bad)?;
    crate::api::fields::text("version", &req.version, 64).map_err(bad)?;
    crate::api::fields::csr(&req.csr_pem).map_err(bad)?;
    let secret_sha256 = secret_sha256(&req.secret);
    st.check_token(&req.token_id, &secret_sha256, TokenKind::Node)
        .await
        .map_err(|(e, reason)| refuse(e, reason))?;
    outpost_certs::check_csr(&req.csr_pem).map_err(|e| {
        refuse(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("certificate request refused: {e}"),
            ),
            "bad_csr",
        )
    })?;
    tracing::info!(name = %req.name, peer = %req.peer_addr, caller = %caller.actor(), "join request");
    let cmd = Command::JoinNode {
        token_id: req.token_id.clone(),
        secret_sha256,
        name: req.name.clone(),
        api_addr: req.api_addr.clone(),
        peer_addr: req.peer_addr.clone(),
        version: req.version.clone(),
    };
    let node_id = match st
        .commit(&Caller::Anonymous, cmd)
        .await
        .map_err(IntoResponse::into_response)?
    {
        Done::NodeId(id) => id,
        other => {
            return Err(ApiError::internal(format!(
                "join committed with unexpected response {other:?}"
            ))
            .into_response());
        }
    };
    let validity = Validity::days_from(outpost_raft::now_ms() / 1000, 365);
    let cert_pem = st
        .ca
        .issue(&req.csr_pem, &Role::Node(node_id), &validity)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("certificate request refused: {e}"),
            )
            .into_response()
        })?;
    let cluster_name = st
        .read(|r| r.cluster())
        .await
        .map_err(IntoResponse::into_response)?
        .map(|c| c.name)
        .unwrap_or_default();
    Ok(Json(JoinResponse {
        node_id,
        cluster_id: st.cluster_id.clone(),
        cluster_name,
        cert_pem,
        ca_cert_pem: st.ca.cert_pem().to_string(),
        ca_key_pem: st.ca.key_pem().to_string(),
    }))
}

async fn token_list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<outpost_storage::TokenRecord>> {
    caller.require_admin()?;
    Ok(Json(st.read(|r| r.tokens()).await?))
}

async fn token_revoke(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    crate::api::fields::id("token id", &id)?;
    st.commit(&caller, Command::RevokeToken { id: id.clone() })
        .await?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}

async fn admin_revoke(
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

async fn nodes(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<NodeRecord>> {
    caller.require_member()?;
    Ok(Json(st.read(|r| r.nodes()).await?))
}

async fn remove_node(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<u64>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    let s = st.node.status();
    let voters: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    if voters == [id] {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {id} is the last voter; it cannot be removed"),
        ));
    }
    st.commit(&caller, Command::RemoveNode { id }).await?;
    // The leader's membership upkeep takes the node out of the Raft membership.
    st.node.remove_member(id).await.ok();
    Ok(Json(serde_json::json!({ "removed": id })))
}

async fn config_set(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<ConfigSetRequest>,
) -> ApiResult<ConfigSetResponse> {
    caller.require_admin()?;
    crate::api::fields::config_key(&req.key)?;
    crate::api::fields::config_value(&req.key, &req.value)?;
    if let Scope::Group(g) | Scope::Client(g) = &req.scope {
        crate::api::fields::id("scope", g)?;
    }
    if req.key.starts_with(HANDLER_PREFIX) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} runs code on clients: it is set only by a config payload of a signed bundle \
                 (outpost bundle create with a [[payload]] of kind \"config\")",
                req.key
            ),
        ));
    }
    match st
        .commit(
            &caller,
            Command::SetConfig {
                scope: req.scope,
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

async fn config_get(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<ConfigEntry> {
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
        Some(e) => Ok(Json(e)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("key not found: {key} ({})", scope_text(&scope)),
        )),
    }
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Global => "global scope".into(),
        Scope::Group(g) => format!("group {g}"),
        Scope::Client(c) => format!("client {c}"),
    }
}

async fn config_delete(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    let scope = q.scope()?;
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

async fn config_list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Vec<ConfigEntry>> {
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
    Ok(Json(st.read(move |r| r.config_list(scope.as_ref())).await?))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

async fn audit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Vec<outpost_storage::AuditRecord>> {
    caller.require_admin()?;
    Ok(Json(
        st.read(move |r| r.audit(q.after, q.limit.min(10_000)))
            .await?,
    ))
}

async fn config_effective(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(client): Path<String>,
) -> ApiResult<std::collections::BTreeMap<String, String>> {
    caller.require_admin()?;
    let c = client.clone();
    let record = st.read(move |r| r.client(&c)).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("client {client} does not exist"),
        )
    })?;
    Ok(Json(
        st.read(move |r| r.config_effective(&record.id, &record.groups))
            .await?,
    ))
}
