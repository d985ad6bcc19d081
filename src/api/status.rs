//! Health, readiness, metrics and `/v1/status`: what a load balancer, a monitor and
//! `outpost status` ask a node.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::metrics::{ConstFamily, Value};
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
    // The Raft layer's per-follower lag gauges, as of now.
    st.node.refresh_telemetry();
    let mut families = raft_families(&st);
    families.extend(cert_families(&st));
    families.extend(st.refusals.families());
    families.extend(st.limits.families());
    families.extend(node_families(&st).await);
    families.extend(st.own.backup_families());
    match st.site.get(&st.node).await {
        Ok(site) => families.extend(crate::metrics::site::families(&site)),
        Err(e) => tracing::warn!(error = %e, "site counts left out of /metrics"),
    }
    let text = st.metrics.encode(families);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// The Raft status as gauges, and the peer port's counters.
fn raft_families(st: &AppState) -> Vec<ConstFamily> {
    let s = st.node.status();
    let voters = s.members.iter().filter(|m| m.voter).count();
    let p = &s.peer_port;
    let mut refused = ConstFamily::counter(
        "outpost_peer_refused",
        "What the peer port refused since start (outpost_raft::peer_limits).",
    );
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
        refused = refused.labelled("reason", reason, n);
    }
    vec![
        ConstFamily::gauge("outpost_raft_term", "Current Raft term.").int(s.term),
        ConstFamily::gauge("outpost_raft_is_leader", "1 if this node is the leader.")
            .int(u8::from(s.leader_id == Some(st.node_id))),
        ConstFamily::gauge("outpost_raft_has_leader", "1 if this node knows a leader.")
            .int(u8::from(s.leader_id.is_some())),
        ConstFamily::gauge(
            "outpost_raft_applied_index",
            "Last log index applied to the state.",
        )
        .int(s.applied_index),
        ConstFamily::gauge(
            "outpost_raft_last_log_index",
            "Last log index in this node's log.",
        )
        .int(s.last_log_index),
        ConstFamily::gauge("outpost_raft_members", "Members (voters and learners).")
            .int(s.members.len()),
        ConstFamily::gauge("outpost_raft_voters", "Voting members.").int(voters),
        ConstFamily::gauge("outpost_node_fatal", "1 if this node stopped applying.")
            .int(u8::from(s.fatal.is_some())),
        ConstFamily::counter(
            "outpost_raft_fast_elections",
            "Campaigns started at once because the leader's peer connection closed (fast failover).",
        )
        .int(s.fast_elections),
        refused,
    ]
}

/// Seconds until the certificates expire.
fn cert_families(st: &AppState) -> Vec<ConstFamily> {
    let now = outpost_raft::now_ms() / 1000;
    let expiry = st.cert_expiry();
    let soonest = expiry.soonest().unwrap_or(i64::MAX);
    let mut kinds = ConstFamily::gauge(
        "outpost_cert_expiry_seconds",
        "Seconds until the soonest expiry of each kind of certificate (admin and client: of those presented to this node in the last day).",
    );
    for (kind, at) in [
        ("ca", expiry.ca),
        ("node", expiry.node),
        ("admin", expiry.admin),
        ("client", expiry.client),
    ] {
        if let Some(at) = at {
            kinds = kinds.labelled("kind", kind, at - now);
        }
    }
    vec![
        ConstFamily::gauge(
            "outpost_cert_soonest_expiry_seconds",
            "Seconds until the soonest certificate expiry on this node.",
        )
        .int(soonest.saturating_sub(now)),
        kinds,
    ]
}

/// The process, its disk, its build, readiness, clock, blobs and handshakes.
async fn node_families(st: &AppState) -> Vec<ConstFamily> {
    let mut out = Vec::new();
    if let Some(rss) = crate::shared::process::resident_bytes() {
        out.push(
            ConstFamily::gauge(
                "outpost_process_resident_bytes",
                "Resident memory of this node's process (VmRSS), in bytes.",
            )
            .int(rss),
        );
    }
    if let Some(fds) = crate::shared::process::open_fds() {
        out.push(
            ConstFamily::gauge(
                "outpost_process_open_fds",
                "File descriptors this process holds open.",
            )
            .int(fds),
        );
    }
    let own = st.own.clone();
    if let Ok(d) = tokio::task::spawn_blocking(move || own.disk()).await {
        out.push(
            ConstFamily::gauge(
                "outpost_disk_used_bytes",
                "Bytes of this node's data directory, by part.",
            )
            .labelled("part", "raft_db", d.raft_db_bytes)
            .labelled("part", "state_db", d.state_db_bytes)
            .labelled("part", "blobs", d.blobs_bytes)
            .labelled("part", "snapshots", d.snapshots_bytes),
        );
        if d.total_bytes > 0 {
            out.push(
                ConstFamily::gauge(
                    "outpost_disk_free_bytes",
                    "Free bytes (unprivileged) on the data directory's file system.",
                )
                .int(d.free_bytes),
            );
            out.push(
                ConstFamily::gauge(
                    "outpost_disk_size_bytes",
                    "Size of the data directory's file system.",
                )
                .int(d.total_bytes),
            );
        }
    }
    out.push(
        ConstFamily::gauge(
            "outpost_disk_below_floor",
            "1 while the data directory's free space is below its floor (operator writes are refused with 507), else 0.",
        )
        .int(i64::from(st.disk.below_floor())),
    );
    out.push(
        ConstFamily::gauge(
            "outpost_disk_floor_bytes",
            "The free-space floor of the data directory's file system: min(2 %, 1 GiB).",
        )
        .int(st.disk.floor_bytes()),
    );
    if let Some(ms) = st.metrics.clock_offset() {
        out.push(
            ConstFamily::gauge(
                "outpost_clock_offset_seconds",
                "This node's clock minus the leader's (RTT midpoint; 0 on the leader).",
            )
            .with(Vec::new(), Value::Float(ms as f64 / 1000.0)),
        );
    }
    let sha = st.own.binary_sha256().unwrap_or("").to_string();
    out.push(
        ConstFamily::gauge(
            "outpost_build_info",
            "1, labelled with the version and the SHA-256 of the running binary.",
        )
        .with(
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("sha256", sha),
            ],
            Value::Int(1),
        ),
    );
    let ready = st.readiness().await.ready;
    out.push(
        ConstFamily::gauge("outpost_node_ready", "1 when /readyz says ready.").int(u8::from(ready)),
    );
    let h = st.limits.handshakes();
    out.push(
        ConstFamily::counter(
            "outpost_tls_handshakes",
            "TLS handshakes completed on the API port: full, or resumed with a session ticket.",
        )
        .labelled("kind", "full", h.full)
        .labelled("kind", "resumed", h.resumed),
    );
    out.push(
        ConstFamily::gauge(
            "outpost_blobs_missing",
            "Payload blobs the state names that this node does not hold (after its last replication pass).",
        )
        .int(st.blobs.missing()),
    );
    out.push(
        ConstFamily::counter(
            "outpost_blob_replication_bytes",
            "Bytes of blobs this node fetched from peers.",
        )
        .int(st.blobs.fetched_bytes()),
    );
    out
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
