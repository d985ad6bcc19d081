//! Client routes: enrollment (the one route open without a certificate besides node join),
//! the agent's configuration and pinned bundle trust, the admin's view of clients and their
//! labels (`label`), and the check every agent route
//! makes (`authorized_client`). Inventory is `api::inventory`, deployments
//! `api::deployments`, renewal `api::renewal`.
//!
//! A client certificate reaches only its own records: the agent routes take the client id
//! from the certificate, never from the request. Revocation is checked on every request
//! against the local state, so it holds on a node as soon as the revocation applies there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use outpost_certs::{Role, Validity};
use outpost_storage::{ClientRecord, Command, TokenKind};

use crate::api::convert::wire_list;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::wire;
use crate::wire::{
    AgentSync, AgentTrust, EnrollRequest, EnrollResponse, LabelRequest, LabelResponse,
};

/// Client certificates live 90 days; agents renew them (later) when a third is left.
pub const CLIENT_CERT_DAYS: u32 = 90;
/// How often a node flushes the last-seen times it gathered, as one Raft command.
pub const LAST_SEEN_FLUSH: Duration = Duration::from_secs(5);

/// Validity of a client certificate issued now: `CLIENT_CERT_DAYS`, or
/// `OUTPOST_CLIENT_CERT_SECS` seconds when the node runs with that set (an operations and
/// test knob for exercising renewal).
pub fn client_validity(now: i64) -> Validity {
    validity_from_env(now, "OUTPOST_CLIENT_CERT_SECS", CLIENT_CERT_DAYS)
}

/// `days` from `now`, or the seconds in the environment variable `knob` when the node runs
/// with it set (operations and test knobs for exercising renewal).
pub fn validity_from_env(now: i64, knob: &str, days: u32) -> Validity {
    let secs = std::env::var(knob)
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|s| *s > 0);
    match secs {
        Some(s) => Validity {
            not_before_unix: now,
            not_after_unix: now.saturating_add(s),
        },
        None => Validity::days_from(now, days),
    }
}

fn new_client_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("c-{}", hex::encode(b))
}

pub async fn enroll(
    _: crate::api::extractors::RateLimited,
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    remote: Option<Extension<crate::api::limits::Remote>>,
    Json(req): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, axum::response::Response> {
    use axum::response::IntoResponse;
    let source = remote.map(|Extension(crate::api::limits::Remote(addr))| addr.ip());
    let secret_sha256 = st
        .admit_with_token(
            "enroll",
            source,
            (&req.token_id, &req.secret, TokenKind::Client),
            &req.csr_pem,
            || crate::api::fields::hostname(&req.hostname),
        )
        .await?;
    tracing::info!(hostname = %req.hostname, caller = %caller.actor(), "enrollment request");
    let client_id = new_client_id();
    // The serial is chosen now and committed with the enrollment; the certificate is signed
    // only after the commit, so a refused enrollment never has one.
    let serial = outpost_certs::Serial::random();
    st.commit(
        &Caller::Anonymous,
        Command::EnrollClient {
            token_id: req.token_id,
            secret_sha256,
            client_id: client_id.clone(),
            hostname: req.hostname,
            cert_serial: serial.to_hex(),
        },
    )
    .await
    .map_err(IntoResponse::into_response)?;
    let validity = client_validity(outpost_raft::now_ms() / 1000);
    let cert_pem = st
        .ca
        .issue_with_serial(
            &req.csr_pem,
            &Role::Client(client_id.clone()),
            &validity,
            &serial,
        )
        .map_err(|e| {
            ApiError::internal(format!("signing the enrolled client's certificate: {e}"))
                .into_response()
        })?;
    // The enrollment may have committed through another node: see it here before reading.
    if let Err(e) = st.node.linearizable_barrier(Duration::from_secs(5)).await {
        tracing::warn!(error = %e, "enrollment: local state may lag the commit");
    }
    let id = client_id.clone();
    let groups = st
        .read(move |r| r.client(&id))
        .await
        .map_err(IntoResponse::into_response)?
        .map(|c| c.groups)
        .unwrap_or_default();
    let bundle_trust = pinned_trust(&st)
        .await
        .map_err(IntoResponse::into_response)?;
    let servers = st.member_api_addrs();
    Ok(Json(EnrollResponse {
        client_id,
        cluster_id: st.cluster_id.clone(),
        cert_pem,
        ca_cert_pem: st.ca.cert_pem().to_string(),
        groups,
        servers,
        bundle_trust,
    }))
}

/// The bundle trust in this node's state, as agents pin it.
async fn pinned_trust(st: &AppState) -> Result<Option<AgentTrust>, ApiError> {
    st.read(|r| r.bundle_trust())
        .await?
        .map(trust_for_agents)
        .transpose()
}

/// A stored bundle trust as agents pin it.
fn trust_for_agents(t: outpost_storage::TrustRecord) -> Result<AgentTrust, ApiError> {
    let trust = serde_json::from_str(&t.trust_json)
        .map_err(|e| ApiError::internal(format!("stored bundle trust does not parse: {e}")))?;
    Ok(AgentTrust {
        version: t.version,
        trust,
    })
}

/// `/v1/agent/trust`: the cluster's bundle trust, which the agent re-pins when its version
/// grew (a trust bundle rotated the keys), so that `agent install` verifies offline bundles
/// with the keys the cluster trusts now. Over the agent's mTLS connection, like its config.
pub async fn agent_trust(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Option<AgentTrust>> {
    let (_, trust) = authorized_read(&st, &caller, |r, _| r.bundle_trust()).await?;
    Ok(Json(trust.map(trust_for_agents).transpose()?))
}

/// The client behind a client certificate, if it is enrolled and neither it nor this
/// certificate is revoked.
pub(crate) async fn authorized_client(
    st: &AppState,
    caller: &Caller,
) -> Result<ClientRecord, ApiError> {
    Ok(authorized_read(st, caller, |_, _| Ok(())).await?.0)
}

/// `authorized_client`, then `f` with the client, both in one read on one blocking thread:
/// an agent's request leaves the async executor once, and its revocation check still reads
/// the state as of this request.
pub(crate) async fn authorized_read<T: Send + 'static>(
    st: &AppState,
    caller: &Caller,
    f: impl FnOnce(&outpost_storage::Reader, &ClientRecord) -> Result<T, outpost_storage::StorageError>
    + Send
    + 'static,
) -> Result<(ClientRecord, T), ApiError> {
    let Caller::Client { id, serial, .. } = caller else {
        return Err(match caller {
            Caller::Anonymous => {
                ApiError::new(StatusCode::UNAUTHORIZED, "a client certificate is required")
            }
            other => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{} is not a client", other.actor()),
            ),
        });
    };
    let (id, serial) = (id.clone(), serial.clone());
    st.read(move |r| {
        let (record, cert) = (r.client(&id)?, r.client_cert_state(&id)?);
        match judge(&id, &serial, record, cert, outpost_raft::now_ms()) {
            Ok(client) => {
                let t = f(r, &client)?;
                Ok(Ok((client, t)))
            }
            Err(refused) => Ok(Err(refused)),
        }
    })
    .await?
}

/// Whether the client `id` may call with the certificate `serial`, from its row and its
/// certificate state.
fn judge(
    id: &str,
    serial: &str,
    record: Option<ClientRecord>,
    cert: Option<outpost_storage::ClientCertState>,
    now: i64,
) -> Result<ClientRecord, ApiError> {
    match (record, cert) {
        (Some(c), Some(cert)) if !c.revoked && cert.accepts(serial, now) => Ok(c),
        (Some(c), _) if c.revoked => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("client {id} is revoked"),
        )),
        (Some(_), _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "certificate {serial} of client {id} is no longer valid: it was renewed (use the new certificate) or revoked"
            ),
        )),
        (None, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("client {id} is not enrolled in this cluster"),
        )),
    }
}

/// `/v1/agent/sync`: the agent's configuration, the bundle trust and its assignments, read
/// in one read with its revocation check (what `agent_config`, `agent_trust` and
/// `deployments::assignments` answer apart, for agents from before this route).
pub async fn agent_sync(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<AgentSync> {
    let now = outpost_raft::now_ms();
    let (client, (config, trust, assignments, removals)) =
        authorized_read(&st, &caller, move |r, client| {
            Ok((
                r.config_effective(&client.id, &client.groups)?,
                r.bundle_trust()?,
                r.assignments(&client.id, now)?,
                r.removals(&client.id)?,
            ))
        })
        .await?;
    let assignments = current_assignments(&st, &client.id, assignments, now).await?;
    mark_seen(&st, client.id);
    Ok(Json(AgentSync {
        config,
        trust: trust.map(trust_for_agents).transpose()?,
        assignments: wire_list(assignments),
        removals: wire_list(removals),
    }))
}

/// The agent's effective configuration (global < its groups < itself).
pub async fn agent_config(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<BTreeMap<String, String>> {
    let (client, config) = authorized_read(&st, &caller, |r, client| {
        r.config_effective(&client.id, &client.groups)
    })
    .await?;
    mark_seen(&st, client.id);
    Ok(Json(config))
}

/// Longest a sync waits to confirm that this node's state is current before it hands out
/// an install.
const CURRENT_WITHIN: Duration = Duration::from_secs(2);

/// What `client` may install now, as of every write committed before this request: an
/// assignment read here on a follower a moment behind the leader could be one that a halt,
/// a pause or an abort has already stopped. So when the local read found anything to
/// install (an assignment without an `installed` result), the node confirms with the leader
/// that it has applied every committed write (a read index) and reads again; if it cannot (no
/// leader, a partition), it hands out nothing this time rather than something that may have
/// been stopped. A sync with nothing to install (no assignment, or all installed: the common
/// sync of a settled fleet) costs no round trip; a deployment seen one sync late starts one
/// sync late.
pub(crate) async fn current_assignments(
    st: &AppState,
    client: &str,
    local: Vec<outpost_storage::Assignment>,
    now_ms: i64,
) -> Result<Vec<outpost_storage::Assignment>, ApiError> {
    let to_install = local.iter().any(|a| {
        a.result
            .as_ref()
            .is_none_or(|r| r.status != outpost_storage::DeploymentStatus::Installed)
    });
    if !to_install {
        return Ok(local);
    }
    if let Err(e) = st.node.linearizable_barrier(CURRENT_WITHIN).await {
        tracing::debug!(client, error = %e, "assignments held back: this node may lag the leader");
        return Ok(Vec::new());
    }
    let id = client.to_string();
    st.read(move |r| r.assignments(&id, now_ms)).await
}

/// Notes that client `id` synced now; `flush_last_seen` commits what was noted.
fn mark_seen(st: &AppState, id: String) {
    if let Ok(mut seen) = st.seen.lock() {
        seen.insert(id, outpost_raft::now_ms());
    }
}

// ---- scope: the clients a person reaches ---------------------------------------------------

/// Most client ids one refusal names (the rest are counted).
const NAMED_OUTSIDE: usize = 10;

/// The person's scope as refusals say it: `alice's scope (label:line2)`.
fn whose_scope(caller: &Caller) -> String {
    match caller.person() {
        Some((name, grant)) => format!("{name}'s scope ({})", grant.scope_text()),
        None => "the caller's scope".to_owned(),
    }
}

/// The ids of `clients` (id, groups, labels) outside the caller's reach, in their order:
/// none for the local socket, nodes and people of the whole site.
pub(crate) fn outside_reach<'a>(
    caller: &Caller,
    clients: impl IntoIterator<Item = (&'a str, &'a [String], &'a [String])>,
) -> Vec<String> {
    if !caller.scoped() {
        return Vec::new();
    }
    clients
        .into_iter()
        .filter(|(_, groups, labels)| !caller.reaches(groups, labels))
        .map(|(id, _, _)| id.to_owned())
        .collect()
}

/// The ids of `clients` outside the caller's reach.
pub(crate) fn records_outside_reach(caller: &Caller, clients: &[ClientRecord]) -> Vec<String> {
    outside_reach(
        caller,
        clients
            .iter()
            .map(|c| (c.id.as_str(), c.groups.as_slice(), c.labels.as_slice())),
    )
}

/// Ok when `outside` is empty, else 403 naming up to `NAMED_OUTSIDE` of them and the count:
/// `{what} 7 clients outside alice's scope (label:line2): c-1, c-2, ... (and 2 more)`.
pub(crate) fn refuse_outside(
    caller: &Caller,
    what: &str,
    outside: &[String],
) -> Result<(), ApiError> {
    if outside.is_empty() {
        return Ok(());
    }
    Err(outside_refusal(caller, what, outside))
}

/// The ids among `ids` outside the caller's reach, read from the state; a client the state
/// does not know counts as outside (a scoped person cannot be shown to reach it). None for
/// the local socket, nodes and people of the whole site. The API's handlers and the
/// console's pages share it.
pub(crate) fn ids_outside<'a>(
    r: &outpost_storage::Reader,
    caller: &Caller,
    ids: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<String>, outpost_storage::StorageError> {
    if !caller.scoped() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for id in ids {
        let reached = r
            .client(id)?
            .is_some_and(|c| caller.reaches(&c.groups, &c.labels));
        if !reached {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// 403 naming up to `NAMED_OUTSIDE` of `outside` (not empty) and the count:
/// `{what} 7 clients outside alice's scope (label:line2): c-1, c-2, ... (and 2 more)`.
pub(crate) fn outside_refusal(caller: &Caller, what: &str, outside: &[String]) -> ApiError {
    let n = outside.len();
    let mut named = outside
        .iter()
        .take(NAMED_OUTSIDE)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if n > NAMED_OUTSIDE {
        named.push_str(&format!(" (and {} more)", n - NAMED_OUTSIDE));
    }
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "{what} {n} client{} outside {}: {named}",
            if n == 1 { "" } else { "s" },
            whose_scope(caller)
        ),
    )
}

/// 403: `alice's scope (label:line2) does not reach {what}` (`client c-1`, `the global
/// config`).
pub(crate) fn beyond_reach(caller: &Caller, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("{} does not reach {what}", whose_scope(caller)),
    )
}

/// Ok when the caller reaches `client`, else the 403 naming it.
pub(crate) fn check_reach(caller: &Caller, client: &ClientRecord) -> Result<(), ApiError> {
    if caller.reaches(&client.groups, &client.labels) {
        Ok(())
    } else {
        Err(beyond_reach(caller, &format!("client {}", client.id)))
    }
}

/// Client `id` for one client's page: 404 when it does not exist, 403 when it is outside
/// the caller's reach.
pub(crate) async fn reached_client(
    st: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<ClientRecord, ApiError> {
    let i = id.to_owned();
    let client = st.read(move |r| r.client(&i)).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("client {id} does not exist"))
    })?;
    check_reach(caller, &client)?;
    Ok(client)
}

/// `client list`: the clients in the caller's reach (a scope filters, never refuses).
pub async fn list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<wire::ClientRecord>> {
    caller.require_admin()?;
    let mut clients = st.read(|r| r.clients()).await?;
    clients.retain(|c| caller.reaches(&c.groups, &c.labels));
    Ok(Json(wire_list(clients)))
}

pub async fn show(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<wire::ClientRecord> {
    caller.require_admin()?;
    Ok(Json(reached_client(&st, &caller, &id).await?.into()))
}

pub async fn revoke(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    caller.require_admin()?;
    st.commit(
        &caller,
        Command::RevokeClient {
            client_id: id.clone(),
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "revoked": id })))
}

/// `POST /v1/clients/labels`: adds and removes the operator's labels on clients named by id,
/// or on every enrolled client whose latest facts match `where_fact` (at most
/// `MAX_LABEL_CLIENTS` either way), as one command.
pub async fn label(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<LabelRequest>,
) -> ApiResult<LabelResponse> {
    caller.require_admin()?;
    use crate::api::rollout_input::{self as input, MAX_LABEL_CLIENTS, MAX_LABELS};
    input::names("label to add", &req.add, MAX_LABELS)?;
    input::names("label to remove", &req.remove, MAX_LABELS)?;
    if req.add.is_empty() && req.remove.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "nothing to do: give labels to add or to remove",
        ));
    }
    let clients = match (&req.where_fact, req.clients.is_empty()) {
        (None, false) => {
            input::names("client", &req.clients, MAX_LABEL_CLIENTS)?;
            let mut ids = req.clients.clone();
            ids.sort();
            ids.dedup();
            ids
        }
        (Some(fact), true) => {
            let (path, value) = input::fact_term(fact)?;
            let ids = st
                .read(move |r| clients_with_fact(r, &path, &value))
                .await?;
            if ids.len() > MAX_LABEL_CLIENTS {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "fact {} matches {} clients, at most {MAX_LABEL_CLIENTS} are labelled at once",
                        crate::shared::text::shown(fact),
                        ids.len()
                    ),
                ));
            }
            ids
        }
        (None, true) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "name the clients: ids, or a fact PATH=VALUE",
            ));
        }
        (Some(_), false) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "give client ids or a fact, not both",
            ));
        }
    };
    // Named clients must all be in reach; the clients a fact matches are narrowed to those
    // in reach, as a list is. A label removed may take a client out of reach: it was in.
    let clients = if caller.scoped() {
        let named = req.where_fact.is_none();
        let wanted = clients.clone();
        let records = st
            .read(move |r| {
                let mut out = Vec::with_capacity(wanted.len());
                for id in &wanted {
                    out.extend(r.client(id)?);
                }
                Ok(out)
            })
            .await?;
        let outside = records_outside_reach(&caller, &records);
        if named {
            refuse_outside(&caller, "the request names", &outside)?;
            clients
        } else {
            let outside: std::collections::HashSet<String> = outside.into_iter().collect();
            clients
                .into_iter()
                .filter(|c| !outside.contains(c))
                .collect()
        }
    } else {
        clients
    };
    if clients.is_empty() {
        return Ok(Json(LabelResponse { clients }));
    }
    st.commit(
        &caller,
        Command::LabelClients {
            clients: clients.clone(),
            add: req.add,
            remove: req.remove,
        },
    )
    .await?;
    Ok(Json(LabelResponse { clients }))
}

/// Ids of the enrolled, unrevoked clients whose latest facts have `value` at `path`
/// (the inventory matcher), sorted. Reads the inventories a page at a time.
fn clients_with_fact(
    r: &outpost_storage::Reader,
    path: &str,
    value: &str,
) -> Result<Vec<String>, outpost_storage::StorageError> {
    let revoked: std::collections::HashSet<String> = r
        .clients()?
        .into_iter()
        .filter(|c| c.revoked)
        .map(|c| c.id)
        .collect();
    let mut out = Vec::new();
    let mut after = String::new();
    // Bounded: each page moves `after` forward, and there are finitely many clients.
    loop {
        let page = r.inventory_scan(&after, 500)?;
        let Some(last) = page.last() else { break };
        after = last.client_id.clone();
        out.extend(
            page.into_iter()
                .filter(|inv| !revoked.contains(&inv.client_id))
                .filter(|inv| outpost_storage::rollout::fact_matches(&inv.facts, path, value))
                .map(|inv| inv.client_id),
        );
    }
    Ok(out)
}

/// A touch (`TouchClients`, `TouchConsoleSessions`) as this node proposes it: wrapped in
/// `Quiet` (no audit record: routine liveness is not an audit event) when every member runs
/// a version that decodes format 9, plain otherwise. Liveness stays replicated, not kept per
/// node, because every node answers `client list`, doctor's "unseen" and rollouts alike; its
/// Raft entries go with the next snapshot. During a rolling upgrade touches stay plain, and
/// audited, so the older nodes keep applying the log.
pub(crate) async fn liveness(st: &AppState, touch: Command) -> Command {
    match st
        .read(|r| r.members_at_least(outpost_storage::FORMAT_9_VERSION))
        .await
    {
        Ok(true) => Command::Quiet(Box::new(touch)),
        Ok(false) => touch,
        Err(e) => {
            tracing::debug!(error = ?e, "members' versions unread; the touch stays plain");
            touch
        }
    }
}

/// Every few seconds, commits the last-seen times this node gathered as one command, so
/// thousands of agent syncs cost one Raft write per node per interval.
pub async fn flush_last_seen(st: Arc<AppState>) {
    let mut tick = tokio::time::interval(LAST_SEEN_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let batch: Vec<(String, i64)> = match st.seen.lock() {
            Ok(mut seen) => seen.drain().collect(),
            Err(_) => continue,
        };
        if batch.is_empty() {
            continue;
        }
        let cmd = liveness(
            &st,
            Command::TouchClients {
                node_id: st.node_id,
                seen: batch,
            },
        )
        .await;
        if let Err(e) = st.commit(&Caller::Node(st.node_id), cmd).await {
            tracing::debug!(error = ?e, "last-seen flush failed; the next sync records it again");
        }
    }
}

#[cfg(test)]
mod tests {
    use outpost_storage::{Grant, PersonRole, RoleScope};

    use super::*;

    fn person(scopes: Vec<RoleScope>) -> Caller {
        Caller::Console {
            user: "alice".into(),
            grant: Grant {
                role: PersonRole::Operator,
                scopes,
            },
        }
    }

    #[test]
    fn refusals_name_ten_clients_and_count_the_rest() {
        let alice = person(vec![RoleScope::Label("line2".into())]);
        let ids: Vec<String> = (1..=12).map(|i| format!("c-{i}")).collect();
        let e = refuse_outside(&alice, "the selector reaches", &ids).expect_err("refused");
        assert_eq!(
            e.message(),
            "the selector reaches 12 clients outside alice's scope (label:line2): \
             c-1, c-2, c-3, c-4, c-5, c-6, c-7, c-8, c-9, c-10 (and 2 more)"
        );
        let e = refuse_outside(&alice, "the request names", &ids[..1]).expect_err("refused");
        assert_eq!(
            e.message(),
            "the request names 1 client outside alice's scope (label:line2): c-1"
        );
        assert!(refuse_outside(&alice, "the selector reaches", &[]).is_ok());
        assert_eq!(
            beyond_reach(&alice, "the global config").message(),
            "alice's scope (label:line2) does not reach the global config"
        );
    }

    #[test]
    fn reach_follows_the_scope_and_never_limits_the_local_socket() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (hmi, line2, none) = (g(&["hmi"]), g(&["line2"]), g(&[]));
        let clients: Vec<(&str, &[String], &[String])> = vec![
            ("c-1", &none, &line2),
            ("c-2", &hmi, &none),
            ("c-3", &none, &none),
        ];
        let alice = person(vec![RoleScope::Label("line2".into())]);
        assert_eq!(outside_reach(&alice, clients.clone()), ["c-2", "c-3"]);
        let both = person(vec![
            RoleScope::Label("line2".into()),
            RoleScope::Group("hmi".into()),
        ]);
        assert_eq!(outside_reach(&both, clients.clone()), ["c-3"]);
        assert!(outside_reach(&Caller::Local, clients.clone()).is_empty());
        assert!(outside_reach(&person(vec![]), clients).is_empty());
    }
}
