//! `GET /v1/doctor`: one check of the whole site from the answering node. It gathers the
//! facts (`health::SiteFacts`: its own status, each member's report of itself and clock
//! offset over the peer channel in parallel with 2 s deadlines, the leader's view of lag,
//! certificate expiries, client counts, halted rollouts, the rolling upgrade) and lets the
//! pure `health::findings` decide. The console's overview shows the same findings.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use outpost_storage::RolloutState;

use crate::api::{ApiResult, AppState, Caller};
use crate::health::{ClientCounts, MemberFacts, SiteFacts, UNSEEN_DAYS};
use crate::wire::{DoctorReport, NodeHealth, NodeStatus};

/// How long a member has to answer each ask.
pub const ASK_DEADLINE: Duration = Duration::from_secs(2);

pub(crate) async fn doctor(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<DoctorReport> {
    caller.require_member()?;
    Ok(Json(report(&st).await))
}

/// The findings of a check of the site now, as this node sees it.
pub async fn report(st: &Arc<AppState>) -> DoctorReport {
    let facts = site_facts(st).await;
    let now = outpost_raft::now_ms();
    DoctorReport {
        node_id: st.node_id,
        checked_at_ms: now,
        findings: crate::health::findings(&facts, now),
    }
}

/// Everything `health::findings` decides from, gathered on this node.
pub async fn site_facts(st: &Arc<AppState>) -> SiteFacts {
    let status = st.status_view().await;
    let now = outpost_raft::now_ms();
    let leader_view = leader_view(st, &status.raft).await;
    let asks = status.members.iter().map(|m| {
        let st = st.clone();
        async move {
            if m.id == st.node_id {
                return (Ok(own_health(&st).await), Some(0));
            }
            tokio::join!(member_health(&st, m.id), member_offset(&st, m.id))
        }
    });
    let answers = futures::future::join_all(asks).await;
    let members = status
        .members
        .iter()
        .zip(answers)
        .map(|(m, (health, offset_ms))| MemberFacts {
            id: m.id,
            name: m.name.clone(),
            voter: m.voter,
            health,
            lag_entries: leader_view.as_ref().and_then(|l| {
                let matched = l.members.iter().find(|x| x.id == m.id)?.matched_index?;
                Some(l.last_log_index.saturating_sub(matched))
            }),
            offset_ms,
        })
        .collect();
    let read = st
        .read(move |r| {
            let created = r.cluster()?.map(|c| c.created_at_ms);
            let mut halted = Vec::new();
            for d in r.deployments()? {
                if let Some(ro) = r.rollout(&d.id)?
                    && ro.state == RolloutState::Halted
                {
                    halted.push((d.id, ro.reason));
                }
            }
            let roll = r
                .roll()?
                .filter(|r| r.state == "stopped")
                .map(|r| (r.name, r.reason));
            Ok((created, halted, roll, client_counts(r, now)?))
        })
        .await;
    let (created_at_ms, halted, stopped_roll, clients) = match read {
        Ok((c, h, r, n)) => (c, h, r, Some(n)),
        Err(e) => {
            tracing::warn!(error = ?e, "doctor: reading the state");
            (None, Vec::new(), None, None)
        }
    };
    // Failing checks from the site's counts (aggregate SQL over the clients' latest facts,
    // shared with /metrics and reused 10 s).
    let clients = match (clients, st.site.get(&st.node).await) {
        (Some(c), Ok(counts)) => Some(ClientCounts {
            failing: Some(counts.clients_failing_checks),
            ..c
        }),
        (c, Err(e)) => {
            tracing::warn!(error = %e, "doctor: reading the site's counts");
            c
        }
        (None, Ok(_)) => None,
    };
    let expiry = status.cert_expiry.clone().unwrap_or_default();
    SiteFacts {
        leader_id: status.leader_id,
        term: status.term,
        members,
        ca_not_after: expiry.ca,
        admin_not_after: expiry.admin,
        client_not_after: expiry.client,
        clients,
        halted,
        stopped_roll,
        created_at_ms,
    }
}

/// The leader's status (its `matched_index` per member): this node's own when it leads,
/// else the leader's answer to a `status` ask (None when there is no leader or no answer).
async fn leader_view(st: &AppState, me: &NodeStatus) -> Option<NodeStatus> {
    let leader = me.leader_id?;
    if leader == st.node_id {
        return Some(me.clone());
    }
    let ask = serde_json::to_vec(&crate::peer_app::PeerAsk::Status).ok()?;
    let answer = st.node.app_call(leader, ask, ASK_DEADLINE).await.ok()?;
    serde_json::from_slice(&answer).ok()
}

/// The site's non-revoked clients: how many, how many not seen within `UNSEEN_DAYS` (and
/// never), and how many report a failing check.
fn client_counts(
    r: &outpost_storage::Reader,
    now_ms: i64,
) -> Result<ClientCounts, outpost_storage::StorageError> {
    let since = now_ms - UNSEEN_DAYS * 86_400_000;
    let mut c = ClientCounts::default();
    for client in r.clients()?.into_iter().filter(|c| !c.revoked) {
        c.active += 1;
        c.never += u64::from(client.last_seen.is_none());
        if client.last_seen.unwrap_or(client.enrolled_at_ms) < since {
            c.unseen += 1;
        }
    }
    Ok(c)
}

async fn own_health(st: &Arc<AppState>) -> NodeHealth {
    st.own_health().await
}

async fn member_health(st: &AppState, id: u64) -> Result<NodeHealth, String> {
    crate::metrics::member_health(&st.node, id).await
}

async fn member_offset(st: &AppState, id: u64) -> Option<i64> {
    crate::metrics::clock_offset_ms(&st.node, id).await
}
