//! Health, readiness, metrics and `/v1/status`: what a load balancer, a monitor and
//! `outpost status` ask a node.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::wire::StatusView;

pub(crate) async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.node.status().fatal {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(f) => (StatusCode::SERVICE_UNAVAILABLE, format!("{f}\n")).into_response(),
    }
}

pub(crate) async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let r = st.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{}\n", r.reason)).into_response()
}

pub(crate) async fn metrics(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    caller.require_member()?;
    let s = st.node.status();
    let now = outpost_raft::now_ms() / 1000;
    let expiry = st.cert_expiry();
    let soonest = expiry.soonest().unwrap_or(i64::MAX);
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
    let mut kinds = String::from(
        "# HELP outpost_cert_expiry_seconds Seconds until the soonest expiry of each kind of certificate (admin and client: of those presented to this node in the last day).\n# TYPE outpost_cert_expiry_seconds gauge\n",
    );
    for (kind, at) in [
        ("ca", expiry.ca),
        ("node", expiry.node),
        ("admin", expiry.admin),
        ("client", expiry.client),
    ] {
        if let Some(at) = at {
            kinds.push_str(&format!(
                "outpost_cert_expiry_seconds{{kind=\"{kind}\"}} {}\n",
                at - now
            ));
        }
    }
    out.push_str(&kinds);
    let mut metric = |name: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    metric(
        "outpost_node_fatal",
        "1 if this node stopped applying.",
        u8::from(s.fatal.is_some()).to_string(),
    );
    if let Some(rss) = crate::shared::process::resident_bytes() {
        metric(
            "outpost_process_resident_bytes",
            "Resident memory of this node's process (VmRSS), in bytes.",
            rss.to_string(),
        );
    }
    if let Some(fds) = crate::shared::process::open_fds() {
        metric(
            "outpost_process_open_fds",
            "File descriptors this node's process holds open.",
            fds.to_string(),
        );
    }
    out.push_str(&format!(
        "# HELP outpost_raft_fast_elections_total Campaigns started at once because the leader's peer connection closed (fast failover).\n# TYPE outpost_raft_fast_elections_total counter\noutpost_raft_fast_elections_total {}\n",
        s.fast_elections
    ));
    let p = &s.peer_port;
    out.push_str("# HELP outpost_peer_refused_total What the peer port refused since start (outpost_raft::peer_limits).\n# TYPE outpost_peer_refused_total counter\n");
    for (reason, n) in [
        ("absurd_term", p.absurd_term),
        ("removed", p.removed),
        ("not_member", p.not_member),
        ("pre_handshake_full", p.pre_handshake_full),
        ("node_full", p.node_full),
        ("taken_over", p.taken_over),
        ("idle", p.idle_closed),
        ("frame", p.frame_refused),
        ("handshake", p.handshake_failed),
    ] {
        out.push_str(&format!(
            "outpost_peer_refused_total{{reason=\"{reason}\"}} {n}\n"
        ));
    }
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

pub(crate) fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

pub(crate) async fn status(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<StatusView> {
    caller.require_member()?;
    Ok(Json(st.status_view().await))
}
