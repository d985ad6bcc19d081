//! Asking another member over the peer channel: its clock (the offset between two nodes'
//! clocks, from the RTT midpoint) and its report of itself (`wire::NodeHealth`), each with a
//! deadline; and the per-node task that measures this node's offset to the leader every 30 s
//! for `outpost_clock_offset_seconds`.

use std::sync::Arc;
use std::time::Duration;

use outpost_raft::RaftNode;

use crate::metrics::Metrics;
use crate::peer_app::PeerAsk;
use crate::wire::NodeHealth;

/// How long one ask of another member may take.
pub const ASK_DEADLINE: Duration = Duration::from_secs(2);
/// How often a node measures its offset to the leader.
pub const CLOCK_EVERY: Duration = Duration::from_secs(30);
/// How often a node tries until it has its first reading.
const FIRST_READING_EVERY: Duration = Duration::from_secs(2);
/// Most bytes of a member's health answer this node parses.
const HEALTH_MAX_BYTES: usize = 64 << 10;

/// The other clock minus ours, in ms: `theirs` was read between our `t0` and `t1`, so it is
/// compared with their midpoint.
pub fn offset_ms(t0: i64, theirs: i64, t1: i64) -> i64 {
    let mid = t0.saturating_add(t1.saturating_sub(t0) / 2);
    theirs.saturating_sub(mid)
}

/// `member`'s clock minus this node's, in ms (one `ClockMs` ask, 2 s deadline); 0 for this
/// node itself; None when the member does not answer, answers an error (a node older than
/// 0.3) or answers something else than 8 bytes.
pub async fn clock_offset_ms(node: &RaftNode, member: u64) -> Option<i64> {
    if member == node.id() {
        return Some(0);
    }
    let req = serde_json::to_vec(&PeerAsk::ClockMs).ok()?;
    let t0 = outpost_raft::now_ms();
    let answer = node.app_call(member, req, ASK_DEADLINE).await;
    let t1 = outpost_raft::now_ms();
    match answer {
        Ok(b) => {
            let bytes: [u8; 8] = b.as_slice().try_into().ok()?;
            Some(offset_ms(t0, i64::from_le_bytes(bytes), t1))
        }
        Err(e) => {
            tracing::debug!(node = member, error = %e, "no clock reading");
            None
        }
    }
}

/// `member`'s report of itself (one `Health` ask, 2 s deadline), or why there is none, in a
/// sentence (a node older than 0.3 answers an error naming an unknown variant). For this
/// node itself ask `AppState::own_health` instead: a node does not call itself.
pub async fn member_health(node: &RaftNode, member: u64) -> Result<NodeHealth, String> {
    if member == node.id() {
        return Err(format!("node {member} is this node: read its own health"));
    }
    let req = serde_json::to_vec(&PeerAsk::Health).map_err(|e| e.to_string())?;
    let b = tokio::time::timeout(ASK_DEADLINE, node.app_call(member, req, ASK_DEADLINE))
        .await
        .map_err(|_| format!("node {member} did not answer within {ASK_DEADLINE:?}"))?
        .map_err(|e| format!("node {member}: {e}"))?;
    if b.len() > HEALTH_MAX_BYTES {
        return Err(format!(
            "node {member} answered {} bytes of health; at most {HEALTH_MAX_BYTES}",
            b.len()
        ));
    }
    serde_json::from_slice(&b).map_err(|e| format!("node {member}'s health does not parse: {e}"))
}

/// Every 30 s: this node's offset to the leader (0 on the leader), into the metrics; every
/// 2 s until the first reading (a node that just started knows no leader yet). A failed
/// reading keeps the last one.
pub async fn clock_loop(node: RaftNode, metrics: Arc<Metrics>) {
    loop {
        let measured = match node.status().leader_id {
            Some(leader) => clock_offset_ms(&node, leader).await,
            None => None,
        };
        if let Some(theirs_minus_ours) = measured {
            // The gauge is this node's clock minus the leader's.
            metrics.set_clock_offset_ms(-theirs_minus_ours);
        }
        let wait = if metrics.clock_offset().is_some() {
            CLOCK_EVERY
        } else {
            FIRST_READING_EVERY
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_theirs_minus_our_midpoint() {
        for (t0, theirs, t1, want) in [
            (1000, 1000, 1000, 0),
            (1000, 1050, 1100, 0),
            (1000, 1550, 1100, 500),
            (1000, 550, 1100, -500),
            (1000, 1001, 1003, 0),
            (i64::MAX - 10, i64::MAX, i64::MAX, 5),
        ] {
            assert_eq!(offset_ms(t0, theirs, t1), want, "{t0} {theirs} {t1}");
        }
    }
}
