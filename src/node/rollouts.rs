//! The leader's rollout steps. A task on every node; while the node is the Raft leader, once
//! a second it reads the rollouts that may move on their own (`rollouts_active`: scheduled or
//! running) and, for each, what the pure `outpost_storage::rollout::next_step` decides from
//! its counts at this moment (`Reader::rollout_next_step`): `Start` a scheduled rollout whose start
//! time came, `OpenPhase` the next phase once the current one has soaked (time inside its
//! windows, in the site's time zone, config `site.timezone`, read as the agents' assignments
//! read it) within the brake, `Finish` when every targeted client of the last phase
//! installed. Each step is one `RolloutStep` command, proposed as actor `node:N` with the
//! reason the decision gives (audited with both).
//!
//! What the task does not do: halt (the `ReportDeployment` that brings one failure too many
//! halts in its own apply), or anything an operator decides (approve, pause, resume, abort).
//! Apply checks every step against the state it finds, so a step another leader already took
//! is refused there; this task logs that at debug and asks again only at its next tick, from
//! the state as it is then. SQLite is read on a blocking thread (`AppState::read`).

use std::sync::Arc;
use std::time::Duration;

use outpost_storage::{Command, RolloutStep};

use crate::api::{AppState, Caller};

/// How often the leader looks at the active rollouts.
const TICK: Duration = Duration::from_secs(1);

/// Runs for as long as the node does.
pub async fn drive(st: Arc<AppState>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if st.node.status().leader_id != Some(st.node_id) {
            continue;
        }
        if let Err(e) = once(&st).await {
            tracing::warn!(error = %e, "rollout steps skipped this tick");
        }
    }
}

/// One tick of the leader: read, decide, propose each step once. The decision is
/// `Reader::rollout_next_step` (the counts `next_step` needs, without the per-client list a
/// status view builds), on a blocking thread.
async fn once(st: &AppState) -> Result<(), String> {
    let now_ms = outpost_raft::now_ms();
    let steps = st
        .read(move |r| {
            let mut steps = Vec::new();
            for id in r.rollouts_active()? {
                if let Some((step, reason)) = r.rollout_next_step(&id, now_ms)? {
                    steps.push((id, step, reason));
                }
            }
            Ok(steps)
        })
        .await
        .map_err(|e| e.message().to_string())?;
    for (id, step, reason) in steps {
        propose(st, &id, step, reason).await;
    }
    Ok(())
}

/// Proposes one step as this node; a refusal (the state moved: another leader took the
/// step, an operator paused) is logged at debug and not tried again in this tick.
async fn propose(st: &AppState, id: &str, step: RolloutStep, reason: String) {
    let what = format!("{step:?}");
    let cmd = Command::RolloutStep {
        id: id.to_string(),
        step,
        reason: reason.clone(),
    };
    match st.commit(&Caller::Node(st.node_id), cmd).await {
        Ok(_) => tracing::info!(deployment = %id, step = %what, %reason, "rollout step"),
        Err(e) => tracing::debug!(
            deployment = %id,
            step = %what,
            error = %e.message(),
            "rollout step not taken; the next tick looks again"
        ),
    }
}
