//! The site's counts on `/metrics` (`outpost_clients`, `outpost_deployments`, ...): one
//! `Reader::site_counts` on a blocking thread, reused for 10 s so that scrapes of every node
//! cost the state one aggregate read each per 10 s at most.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_raft::RaftNode;
use outpost_storage::SiteCounts;

use crate::metrics::ConstFamily;

/// How long one reading is reused.
pub const FRESH: Duration = Duration::from_secs(10);

/// The last reading of the site's counts.
#[derive(Default)]
pub struct SiteCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<SiteCounts>)>>,
}

impl SiteCache {
    /// The counts, read again when the last reading is older than 10 s (one reader at a
    /// time: concurrent scrapes share it).
    pub async fn get(&self, node: &RaftNode) -> Result<Arc<SiteCounts>, String> {
        let mut last = self.last.lock().await;
        if let Some((at, s)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(s.clone());
        }
        let reader = node.reader();
        let now = outpost_raft::now_ms();
        let s = tokio::task::spawn_blocking(move || reader.site_counts(now))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("site counts: {e}"))?;
        let s = Arc::new(s);
        *last = Some((Instant::now(), s.clone()));
        Ok(s)
    }
}

/// A state name as a label value (`waiting-approval` → `waiting_approval`).
fn label(state: &str) -> String {
    state.replace('-', "_")
}

/// The families of the site's counts.
pub fn families(s: &SiteCounts) -> Vec<ConstFamily> {
    let mut deployments = ConstFamily::gauge(
        "outpost_deployments",
        "Deployments by rollout state (a plain deployment reads as running).",
    );
    for (state, n) in &s.deployments {
        deployments = deployments.labelled("state", &label(state), *n);
    }
    let mut installs = ConstFamily::gauge(
        "outpost_installs",
        "Clients' latest result per deployment: installed, failed, removed, remove_failed.",
    );
    for (result, n) in &s.installs {
        installs = installs.labelled("result", &label(result), *n);
    }
    vec![
        ConstFamily::gauge("outpost_clients", "Clients by standing.")
            .labelled("state", "enrolled", s.clients_enrolled)
            .labelled("state", "revoked", s.clients_revoked),
        ConstFamily::gauge(
            "outpost_clients_seen",
            "Non-revoked clients seen within the last hour, day, 7 days (each includes the shorter), and never seen.",
        )
        .labelled("within", "1h", s.seen_1h)
        .labelled("within", "1d", s.seen_1d)
        .labelled("within", "7d", s.seen_7d)
        .labelled("within", "never", s.seen_never),
        ConstFamily::gauge(
            "outpost_clients_failing_checks",
            "Non-revoked clients whose last inventory reports at least one failing health check.",
        )
        .int(s.clients_failing_checks),
        deployments,
        installs,
        ConstFamily::gauge("outpost_rollouts_halted", "Rollouts halted by their failure brake.")
            .int(s.rollouts_halted),
        ConstFamily::gauge(
            "outpost_upgrade_roll_stopped",
            "1 when the rolling upgrade stopped.",
        )
        .int(u8::from(s.roll_stopped)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_with_fixed_labels() {
        let s = SiteCounts {
            clients_enrolled: 4,
            seen_never: 2,
            deployments: [("waiting-approval".to_string(), 3)].into_iter().collect(),
            installs: [("remove-failed".to_string(), 1)].into_iter().collect(),
            roll_stopped: true,
            ..SiteCounts::default()
        };
        let out = crate::metrics::scrape::render(families(&s));
        for want in [
            "outpost_clients{state=\"enrolled\"} 4\n",
            "outpost_clients_seen{within=\"never\"} 2\n",
            "outpost_deployments{state=\"waiting_approval\"} 3\n",
            "outpost_installs{result=\"remove_failed\"} 1\n",
            "outpost_upgrade_roll_stopped 1\n",
            "outpost_clients_failing_checks 0\n",
        ] {
            assert!(out.contains(want), "{want:?} not in\n{out}");
        }
    }
}
