//! Inventory routes: the agent's upload of its own facts (the client id comes from the
//! certificate), and the admin's queries over the latest facts of every client.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use outpost_storage::{ClientRecord, Command};
use serde::Deserialize;

use crate::api::clients::authorized_read;
use crate::api::convert::wire_list;
use crate::api::extractors::InventoryRate;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::wire::{InventoryMatch, InventoryView};

/// The agent's inventory upload (its own facts; the client id comes from the certificate).
/// Rate-limited per client (`InventoryRate`, before the body is read) and bounded in size
/// and number of facts here, at the proposer: `apply` still accepts the 4 MiB that older
/// nodes accept.
pub async fn agent_inventory(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    _rate: InventoryRate,
    Json(facts): Json<serde_json::Value>,
) -> ApiResult<serde_json::Value> {
    // The cluster-wide hourly budget, from the replicated history: the per-node rate alone
    // would let a client that reports through every node write N times its budget.
    let since = outpost_raft::now_ms() - 3_600_000;
    let (client, changes) = authorized_read(&st, &caller, move |r, c| {
        r.inventory_changes_since(&c.id, since)
    })
    .await?;
    let budget = st.limits.config().inventory_per_hour;
    if changes >= budget {
        return Err(ApiError::too_many(
            format!(
                "client {} changed its inventory {changes} times in the last hour; at most {} are accepted",
                client.id, budget
            ),
            std::time::Duration::from_secs(60),
        ));
    }
    if !facts.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "inventory must be a JSON object",
        ));
    }
    // serde_json::Value keeps object keys sorted: the same facts always give the same bytes.
    let facts_json = serde_json::to_string(&facts).map_err(ApiError::internal)?;
    outpost_storage::check_report_size(&facts, facts_json.len())
        .map_err(|why| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, why))?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        facts_json.as_bytes(),
    ));
    st.commit(
        &caller,
        Command::ReportInventory {
            client_id: client.id,
            facts_json,
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "facts_sha256": sha })))
}

#[derive(Debug, Deserialize)]
pub struct InventoryQuery {
    /// `PATH=VALUE`, e.g. `os.id=debian` or `packages.name=openssl`.
    pub fact: Option<String>,
    pub group: Option<String>,
}

/// Clients whose latest facts match `fact` (and that are in `group`, when given), of those
/// in the caller's reach.
pub async fn inventory_query(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<InventoryQuery>,
) -> ApiResult<Vec<InventoryMatch>> {
    caller.require_admin()?;
    let fact = match &q.fact {
        None => None,
        Some(f) => Some(
            f.split_once('=')
                .map(|(p, v)| (p.to_string(), v.to_string()))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("fact {f:?} must look like PATH=VALUE"),
                    )
                })?,
        ),
    };
    let (clients, inventories) = st.read(|r| Ok((r.clients()?, r.inventories()?))).await?;
    let by_id: std::collections::HashMap<&str, &ClientRecord> =
        clients.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut out = Vec::new();
    for inv in &inventories {
        let Some(c) = by_id.get(inv.client_id.as_str()) else {
            continue;
        };
        if q.group.as_ref().is_some_and(|g| !c.groups.contains(g))
            || !caller.reaches(&c.groups, &c.labels)
        {
            continue;
        }
        if let Some((path, want)) = &fact
            && !outpost_storage::rollout::fact_matches(&inv.facts, path, want)
        {
            continue;
        }
        out.push(InventoryMatch {
            client_id: c.id.clone(),
            hostname: c.hostname.clone(),
            groups: c.groups.clone(),
            updated_at_ms: inv.updated_at_ms,
        });
    }
    Ok(Json(out))
}

pub async fn inventory_show(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<InventoryView> {
    caller.require_admin()?;
    crate::api::clients::reached_client(&st, &caller, &id).await?;
    let i = id.clone();
    let (inv, history) = st
        .read(move |r| Ok((r.inventory(&i)?, r.inventory_history(&i, 50)?)))
        .await?;
    let inventory = inv.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no inventory for client {id}"),
        )
    })?;
    Ok(Json(InventoryView {
        inventory: inventory.into(),
        history: wire_list(history),
    }))
}
