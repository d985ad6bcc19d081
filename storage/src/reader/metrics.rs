//! The site's counts for `/metrics`, in one read transaction of aggregate queries: clients by
//! standing and by when they were last seen, clients with a failing health check, deployments
//! by rollout state, install results, halted rollouts and whether the rolling upgrade stopped.

use std::collections::BTreeMap;

use rusqlite::OptionalExtension;

use super::Reader;
use crate::error::StorageError;

const HOUR_MS: i64 = 3600 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What `Reader::site_counts` finds (plain numbers; label values are fixed state names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteCounts {
    pub clients_enrolled: u64,
    pub clients_revoked: u64,
    /// Non-revoked clients seen within the last hour, day and 7 days (each includes the
    /// shorter), and never seen.
    pub seen_1h: u64,
    pub seen_1d: u64,
    pub seen_7d: u64,
    pub seen_never: u64,
    /// Non-revoked clients whose current inventory reports at least one failing check
    /// (`facts.health.<name>.ok == false`).
    pub clients_failing_checks: u64,
    /// Deployments by rollout state (`RolloutState::as_str`; a deployment without a rollout
    /// row reads as `running`, as `RolloutRecord::plain` does).
    pub deployments: BTreeMap<String, u64>,
    /// Each client's latest result per deployment: `installed`, `failed`, and where a removal
    /// was reported instead `removed` or `remove-failed` (as `rollout_status` reads them).
    pub installs: BTreeMap<String, u64>,
    pub rollouts_halted: u64,
    /// The rolling upgrade's last state is `stopped`.
    pub roll_stopped: bool,
}

impl Reader {
    /// The site's counts at `now_ms` (one read transaction, aggregate SQL only).
    pub fn site_counts(&self, now_ms: i64) -> Result<SiteCounts, StorageError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let mut s = SiteCounts::default();
            let n = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
            tx.prepare_cached(
                "SELECT SUM(revoked = 0), SUM(revoked = 1),
                        SUM(revoked = 0 AND last_seen_ms >= ?1),
                        SUM(revoked = 0 AND last_seen_ms >= ?2),
                        SUM(revoked = 0 AND last_seen_ms >= ?3),
                        SUM(revoked = 0 AND last_seen_ms IS NULL)
                 FROM clients",
            )?
            .query_row(
                [now_ms - HOUR_MS, now_ms - DAY_MS, now_ms - 7 * DAY_MS],
                |r| {
                    s.clients_enrolled = n(r.get(0)?);
                    s.clients_revoked = n(r.get(1)?);
                    s.seen_1h = n(r.get(2)?);
                    s.seen_1d = n(r.get(3)?);
                    s.seen_7d = n(r.get(4)?);
                    s.seen_never = n(r.get(5)?);
                    Ok(())
                },
            )?;
            // CASE keeps json_each and json_extract off text that is not JSON (facts are
            // checked when reported; a scalar `health` is not an object).
            s.clients_failing_checks = n(tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM clients c JOIN inventory i ON i.client_id = c.id
                     WHERE c.revoked = 0 AND EXISTS (
                        SELECT 1 FROM json_each(
                            CASE WHEN json_valid(i.facts_json) THEN i.facts_json ELSE '{}' END,
                            '$.health') h
                        WHERE CASE WHEN h.type = 'object'
                              THEN json_extract(h.value, '$.ok') END = 0)",
                )?
                .query_row([], |r| r.get(0))?);
            let grouped = |sql: &str| -> rusqlite::Result<BTreeMap<String, u64>> {
                tx.prepare_cached(sql)?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, n(r.get(1)?))))?
                    .collect()
            };
            s.deployments = grouped(
                "SELECT COALESCE(r.state, 'running'), COUNT(*) FROM deployments d
                 LEFT JOIN rollouts r ON r.deployment_id = d.id GROUP BY 1",
            )?;
            s.installs = grouped(
                "SELECT status, COUNT(*) FROM deployment_results x
                 WHERE NOT EXISTS (SELECT 1 FROM deployment_removals m
                    WHERE m.deployment_id = x.deployment_id AND m.client_id = x.client_id)
                 GROUP BY status
                 UNION ALL
                 SELECT CASE ok WHEN 1 THEN 'removed' ELSE 'remove-failed' END, COUNT(*)
                 FROM deployment_removals GROUP BY 1",
            )?;
            s.rollouts_halted = s.deployments.get("halted").copied().unwrap_or(0);
            s.roll_stopped = tx
                .prepare_cached("SELECT state FROM roll")?
                .query_row([], |r| r.get::<_, String>(0))
                .optional()?
                .is_some_and(|st| st == "stopped");
            Ok(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 100 * DAY_MS;

    #[test]
    fn counts_of_a_small_site() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.db");
        let store = crate::Store::open(&path)?;
        let empty = store.reader().site_counts(NOW)?;
        assert_eq!(empty, SiteCounts::default());
        let c = rusqlite::Connection::open(&path)?;
        let client = |id: &str, revoked: i64, seen: Option<i64>| {
            c.execute(
                "INSERT INTO clients (id, hostname, groups_json, cert_serial, enrolled_at_ms,
                    revoked, last_seen_ms) VALUES (?1, 'h', '[]', 's', 0, ?2, ?3)",
                rusqlite::params![id, revoked, seen],
            )
        };
        client("fresh", 0, Some(NOW - 60_000))?;
        client("today", 0, Some(NOW - 5 * HOUR_MS))?;
        client("week", 0, Some(NOW - 3 * DAY_MS))?;
        client("old", 0, Some(NOW - 30 * DAY_MS))?;
        client("never", 0, None)?;
        client("gone", 1, Some(NOW - 60_000))?;
        let facts = |id: &str, json: &str| {
            c.execute(
                "INSERT INTO inventory (client_id, facts_json, facts_sha256, updated_at_ms)
                 VALUES (?1, ?2, 'x', 0)",
                rusqlite::params![id, json],
            )
        };
        facts(
            "fresh",
            r#"{"health":{"disk":{"ok":false,"detail":"91% used"},"cmd.x":{"ok":true}}}"#,
        )?;
        facts("today", r#"{"health":{"disk":{"ok":true,"detail":""}}}"#)?;
        facts("week", r#"{"health":"nonsense","os":"linux"}"#)?;
        facts("old", "not json")?;
        facts("gone", r#"{"health":{"disk":{"ok":false}}}"#)?;
        let deployment = |id: &str| {
            c.execute(
                "INSERT INTO deployments (id, artifact, version, kind, sha256, size, bundle_id,
                    group_name, created_at_ms, created_by) VALUES (?1, 'a', 1, 'k', 's', 1, 'b',
                    'g', 0, 'admin')",
                [id],
            )
        };
        let rollout = |id: &str, state: &str| {
            c.execute(
                "INSERT INTO rollouts (deployment_id, selector_json, phases_json, soak_ms,
                    max_failures, windows_json, state, phase, phase_opened_at_ms,
                    allowed_failures, failure_base, reason, uninstall)
                 VALUES (?1, '{}', '[100]', 0, '0', '[]', ?2, 0, 0, 0, 0, '', 0)",
                [id, state],
            )
        };
        for id in ["plain", "r1", "r2", "r3"] {
            deployment(id)?;
        }
        rollout("r1", "halted")?;
        rollout("r2", "halted")?;
        rollout("r3", "waiting-approval")?;
        let result = |d: &str, client: &str, status: &str| {
            c.execute(
                "INSERT INTO deployment_results (deployment_id, client_id, status, detail,
                    at_ms, attempts) VALUES (?1, ?2, ?3, '', 0, 1)",
                [d, client, status],
            )
        };
        result("plain", "fresh", "installed")?;
        result("plain", "today", "installed")?;
        result("r1", "fresh", "failed")?;
        result("r1", "today", "installed")?;
        c.execute(
            "INSERT INTO deployment_removals (deployment_id, client_id, ok, detail, at_ms,
                attempts) VALUES ('r1', 'today', 1, '', 0, 1), ('r2', 'week', 0, '', 0, 1)",
            [],
        )?;
        c.execute(
            "INSERT INTO roll (singleton, bundle_id, name, sha256, size, state, started_at_ms,
                updated_at_ms) VALUES (1, 'b', 'n', 's', 1, 'stopped', 0, 0)",
            [],
        )?;
        let s = store.reader().site_counts(NOW)?;
        let map = |v: &[(&str, u64)]| -> BTreeMap<String, u64> {
            v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        assert_eq!(
            s,
            SiteCounts {
                clients_enrolled: 5,
                clients_revoked: 1,
                seen_1h: 1,
                seen_1d: 2,
                seen_7d: 3,
                seen_never: 1,
                clients_failing_checks: 1,
                deployments: map(&[("halted", 2), ("running", 1), ("waiting-approval", 1)]),
                installs: map(&[
                    ("failed", 1),
                    ("installed", 2),
                    ("remove-failed", 1),
                    ("removed", 1)
                ]),
                rollouts_halted: 2,
                roll_stopped: true,
            }
        );
        Ok(())
    }
}
