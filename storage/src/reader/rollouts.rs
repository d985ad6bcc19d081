//! Rollout queries: the preview of a selector (`plan`), a rollout's record and status, the
//! rollouts the leader drives, and what a client must remove.

use super::Reader;
use crate::error::StorageError;
use crate::model::{DeploymentRecord, Plan, RolloutRecord, RolloutStatus, Selector};

impl Reader {
    /// The clients `selector` targets now, by phase of deployment `deployment_id`.
    pub fn plan(
        &self,
        selector: &Selector,
        phases: &[u8],
        deployment_id: &str,
        now_ms: i64,
    ) -> Result<Plan, StorageError> {
        let _ = (selector, phases, deployment_id, now_ms);
        Err(StorageError::Corrupt("plan: not yet built".into()))
    }

    /// Deployment `id`'s rollout row (the default row for a plain deployment).
    pub fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StorageError> {
        Ok(self.deployment(id)?.map(|d| RolloutRecord::plain(&d)))
    }

    /// Deployment `id` and where each targeted client stands at `now_ms`.
    pub fn rollout_status(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<RolloutStatus>, StorageError> {
        let _ = (id, now_ms);
        Err(StorageError::Corrupt(
            "rollout_status: not yet built".into(),
        ))
    }

    /// Ids of the rollouts in `scheduled` or `running`, which the leader drives.
    pub fn rollouts_active(&self) -> Result<Vec<String>, StorageError> {
        Ok(vec![])
    }

    /// Deployments `client_id` must remove: aborted with `--uninstall`, installed there,
    /// no removal result yet.
    pub fn removals(&self, client_id: &str) -> Result<Vec<DeploymentRecord>, StorageError> {
        let _ = client_id;
        Ok(vec![])
    }
}
