//! Retention's one command, `CompactHistory` (format 9): old audit records move out behind a
//! checkpoint, old inventory history and old deployment results that nothing depends on go.
//!
//! Deterministic like every apply: the cuts come in the command (the leader's retention pass
//! computes them from `retention.*` and its clock), never from a clock here. The compaction's
//! own audit row is appended after it by `apply_entries`, chained to the newest remaining
//! record as always; the newest record is never cut by the pass (`Reader::audit_cut_seq`), and
//! if a command cuts it anyway the row links to the checkpoint, whose hash is the head.
//!
//! Which deployment results may go (`results_before_ms`): a result older than the cut whose
//! deployment is superseded (a newer deployment of the same artifact and kind exists) and is
//! no longer moving: a plain deployment, or a rollout that is `done`, or `aborted` without
//! `--uninstall` (an uninstalling abort asks the clients that installed it, read from these
//! rows, to remove it). Agents decide what to install from their own `deployments.json`, not
//! from these rows, so no agent installs again; a running, paused, halted or scheduled
//! rollout keeps every result, so its counts and its brake see what they saw. The rows of
//! the newest deployment of an artifact always stay: they are what `deploy status` shows.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Fail, invalid, version_sql};
use crate::model::Response;
use crate::retention::RESULTS_REMOVABLE;

/// The chain's base: the newest checkpoint (seq, hash), or genesis (0, zeros).
pub(crate) fn audit_base(conn: &Connection) -> Result<(i64, String), rusqlite::Error> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_else(|| (0, crate::audit::GENESIS_HASH.to_owned())))
}

/// The cuts of one `CompactHistory`.
pub(super) struct Cuts {
    pub(super) audit_through_seq: u64,
    pub(super) inventory_before_ms: Option<i64>,
    pub(super) results_before_ms: Option<i64>,
}

/// Applies one compaction at `at_ms`. Response::Compacted names what went and the chain's
/// base afterwards.
pub(super) fn compact_history(
    conn: &Connection,
    at_ms: i64,
    cuts: &Cuts,
) -> Result<Response, Fail> {
    let through = version_sql("audit cut seq", cuts.audit_through_seq)?;
    let (base_seq, base_hash) = audit_base(conn)?;
    let newest_seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM audit")?
        .query_row([], |r| r.get::<_, i64>(0))?
        .max(base_seq);
    if through > newest_seq {
        return Err(invalid(format!(
            "audit cut at seq {through} is past the newest audit record ({newest_seq})"
        )));
    }
    let cut_audit = through > base_seq;
    if !cut_audit && cuts.inventory_before_ms.is_none() && cuts.results_before_ms.is_none() {
        return Err(invalid(format!(
            "nothing to compact: the audit cut at seq {through} is not past the checkpoint at seq {base_seq}"
        )));
    }
    let (mut checkpoint_seq, mut checkpoint_hash, mut audit_removed) = (base_seq, base_hash, 0);
    if cut_audit {
        let (hash, record_at_ms): (String, i64) = conn
            .prepare_cached("SELECT hash, at_ms FROM audit WHERE seq = ?1")?
            .query_row([through], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or_else(|| invalid(format!("audit record {through} does not exist")))?;
        let removed = conn
            .prepare_cached("DELETE FROM audit WHERE seq <= ?1")?
            .execute([through])?;
        conn.prepare_cached(
            "INSERT INTO audit_checkpoints (seq, hash, record_at_ms, compacted_at_ms, removed)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![through, hash, record_at_ms, at_ms, removed as i64])?;
        (checkpoint_seq, checkpoint_hash, audit_removed) = (through, hash, removed as u64);
    }
    let inventory_removed = match cuts.inventory_before_ms {
        Some(cut) => conn
            .prepare_cached("DELETE FROM inventory_history WHERE at_ms < ?1")?
            .execute([cut])? as u64,
        None => 0,
    };
    let results_removed = match cuts.results_before_ms {
        Some(cut) => conn
            .prepare_cached(&format!(
                "DELETE FROM deployment_results AS r WHERE r.at_ms < ?1 AND {RESULTS_REMOVABLE}"
            ))?
            .execute([cut])? as u64,
        None => 0,
    };
    Ok(Response::Compacted {
        audit_removed,
        checkpoint_seq: checkpoint_seq as u64,
        checkpoint_hash,
        inventory_removed,
        results_removed,
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use crate::apply::apply_entries;
    use crate::audit::{AuditFields, chain_hash};
    use crate::codec::encode_batch;
    use crate::error::StorageError;
    use crate::model::{Command, Envelope, RejectCode, Response, Scope};
    use crate::schema::migrate;

    fn env(at_ms: i64, command: Command) -> Envelope {
        Envelope {
            at_ms,
            actor: "node:1".into(),
            command,
        }
    }

    fn compact(through: u64, inventory: Option<i64>, results: Option<i64>) -> Command {
        Command::CompactHistory {
            audit_through_seq: through,
            inventory_before_ms: inventory,
            results_before_ms: results,
        }
    }

    fn run(conn: &mut Connection, e: Envelope) -> Result<crate::model::Outcome, StorageError> {
        let mut out = apply_entries(conn, vec![Some(encode_batch(&[e]))], b"m")?.outcomes;
        Ok(out
            .pop()
            .flatten()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| panic!("one outcome")))
    }

    /// A cluster whose audit holds records 1..=12, record n written at n * 100 ms.
    fn twelve() -> Result<Connection, StorageError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        let init = Command::InitCluster {
            cluster_id: "c-1".into(),
            name: "plant".into(),
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n".into(),
        };
        assert!(run(&mut conn, env(100, init))?.is_ok());
        for n in 2..=12 {
            let set = Command::SetConfig {
                scope: Scope::Global,
                key: format!("k{n}"),
                value: "v".into(),
            };
            assert!(run(&mut conn, env(n * 100, set))?.is_ok());
        }
        Ok(conn)
    }

    fn seqs(conn: &Connection) -> Result<(i64, i64), rusqlite::Error> {
        conn.query_row("SELECT MIN(seq), MAX(seq) FROM audit", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    fn hash_at(conn: &Connection, seq: i64) -> Result<String, rusqlite::Error> {
        conn.query_row("SELECT hash FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
    }

    /// Recomputes every remaining record from the newest checkpoint: each links to the one
    /// before (the first to the checkpoint's hash), each hash is its fields' hash, and the
    /// last is the head in meta. Returns how many records it walked.
    fn walk_from_base(conn: &Connection) -> Result<u64, StorageError> {
        let (base_seq, mut prev) = super::audit_base(conn)?;
        let mut stmt = conn.prepare(
            "SELECT seq, at_ms, actor, action, target, detail, outcome, prev_hash, hash
             FROM audit ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut expect = base_seq + 1;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let (actor, action, target, detail, outcome): (String, String, String, String, String) =
                (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
            let fields = AuditFields {
                seq: seq as u64,
                at_ms: r.get(1)?,
                actor: &actor,
                action: &action,
                target: &target,
                detail: &detail,
                outcome: &outcome,
            };
            assert_eq!(seq, expect, "seqs follow the base");
            assert_eq!(
                r.get::<_, String>(7)?,
                prev,
                "record {seq} links to the one before"
            );
            let hash: String = r.get(8)?;
            assert_eq!(
                chain_hash(&prev, &fields),
                Some(hash.clone()),
                "record {seq}"
            );
            prev = hash;
            expect += 1;
            n += 1;
        }
        let head = crate::schema::meta_blob(conn, "audit_head")?.map(String::from_utf8);
        assert_eq!(head, Some(Ok(prev)), "the last record is the head");
        Ok(n)
    }

    /// Cuts in the middle, at the newest-but-one, at the newest, twice in a row; cuts past the
    /// newest record or not past the checkpoint are refused (and audited); every accepted cut
    /// leaves a checkpoint, an `audit.compact` record linked to the newest remaining one, and a
    /// chain that verifies from the checkpoint.
    #[test]
    fn audit_cuts() -> Result<(), StorageError> {
        // (name, cuts applied first, then this cut, Ok(records left after it, base seq) or Err)
        type Want = Result<(i64, i64), RejectCode>;
        let cases: Vec<(&str, Vec<u64>, u64, Want)> = vec![
            // 12 records, cut through 5: 6..=12 stay, plus the compaction's record 13.
            ("middle", vec![], 5, Ok((6, 5))),
            ("newest but one", vec![], 11, Ok((12, 11))),
            ("the newest too", vec![], 12, Ok((13, 12))),
            ("twice", vec![3], 8, Ok((9, 8))),
            ("past the newest", vec![], 13, Err(RejectCode::Invalid)),
            ("at the checkpoint", vec![5], 5, Err(RejectCode::Invalid)),
            (
                "before the checkpoint",
                vec![5],
                2,
                Err(RejectCode::Invalid),
            ),
            ("nothing", vec![], 0, Err(RejectCode::Invalid)),
        ];
        for (name, first, through, want) in cases {
            let mut conn = twelve()?;
            for (i, cut) in first.iter().enumerate() {
                let at = 2_000 + i as i64;
                let done = run(&mut conn, env(at, compact(*cut, None, None)))?;
                assert!(done.is_ok(), "{name}: first cuts: {done:?}");
            }
            let (_, newest_before) = seqs(&conn)?;
            let cut_hash = hash_at(&conn, through as i64).ok();
            let outcome = run(&mut conn, env(5_000, compact(through, None, None)))?;
            let (_, newest) = seqs(&conn)?;
            assert_eq!(
                newest,
                newest_before + 1,
                "{name}: one audit record either way"
            );
            match want {
                Ok((first_left, base)) => {
                    let Ok(Response::Compacted {
                        checkpoint_seq,
                        checkpoint_hash,
                        audit_removed,
                        ..
                    }) = outcome
                    else {
                        panic!("{name}: {outcome:?}");
                    };
                    assert_eq!(checkpoint_seq, base as u64, "{name}");
                    assert_eq!(Some(checkpoint_hash.clone()), cut_hash, "{name}");
                    assert_eq!(seqs(&conn)?.0, first_left, "{name}: first record left");
                    let prior = first.last().copied().unwrap_or(0);
                    assert_eq!(audit_removed, through - prior, "{name}: removed");
                    let (cp_seq, at, compacted_at, removed): (i64, i64, i64, i64) = conn
                        .query_row(
                            "SELECT seq, record_at_ms, compacted_at_ms, removed
                             FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                            [],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )?;
                    // Record n was written at n * 100 (record 1 at 100).
                    assert_eq!(
                        (cp_seq, at, compacted_at, removed as u64),
                        (base, base * 100, 5_000, audit_removed),
                        "{name}: checkpoint row"
                    );
                    let (action, detail): (String, String) = conn.query_row(
                        "SELECT action, detail FROM audit ORDER BY seq DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    assert_eq!(action, "audit.compact", "{name}");
                    assert!(
                        detail.contains(&checkpoint_hash)
                            && detail.contains(&format!("\"audit_removed\":{audit_removed}")),
                        "{name}: {detail}"
                    );
                }
                Err(code) => {
                    assert_eq!(outcome.map_err(|r| r.code), Err(code), "{name}");
                    let cps: i64 =
                        conn.query_row("SELECT COUNT(*) FROM audit_checkpoints", [], |r| r.get(0))?;
                    assert_eq!(cps as usize, first.len(), "{name}: no new checkpoint");
                }
            }
            let walked = walk_from_base(&conn)?;
            assert!(walked >= 1, "{name}");
            // The chain goes on after the cut: a later write links to the head.
            let set = Command::SetConfig {
                scope: Scope::Global,
                key: "after".into(),
                value: "v".into(),
            };
            assert!(run(&mut conn, env(9_000, set))?.is_ok(), "{name}");
            assert_eq!(walk_from_base(&conn)?, walked + 1, "{name}");
        }
        Ok(())
    }

    /// Inventory history goes by time alone; deployment results go only when older than the
    /// cut AND their deployment is superseded and no longer moving (the rule in this file's
    /// docs). The audit part of the same command may be empty (seq 0, or not past the base).
    #[test]
    fn inventory_and_result_cuts() -> Result<(), StorageError> {
        let mut conn = twelve()?;
        for (seq, at) in [(1, 100), (2, 200), (3, 300)] {
            conn.execute(
                "INSERT INTO inventory_history (seq, client_id, at_ms, facts_sha256, changed_json)
                 VALUES (?1, 'c1', ?2, 'x', '[]')",
                [seq, at],
            )?;
        }
        // (deployment, artifact, rollout state and uninstall flag if it has a rollout row)
        type Deployment<'a> = (&'a str, &'a str, Option<(&'a str, i64)>);
        let deployments: [Deployment; 10] = [
            ("a1", "a", None),
            ("a2", "a", None),
            ("b1", "b", None),
            ("c1", "c", Some(("running", 0))),
            ("c2", "c", None),
            ("e1", "e", Some(("aborted", 1))),
            ("e2", "e", None),
            ("f1", "f", Some(("done", 0))),
            ("g1", "g", Some(("aborted", 0))),
            ("g2", "g", Some(("paused", 0))),
        ];
        for (i, (id, artifact, rollout)) in deployments.iter().enumerate() {
            conn.execute(
                "INSERT INTO deployments (seq, id, artifact, version, kind, sha256, size,
                     bundle_id, group_name, created_at_ms, created_by)
                 VALUES (?1, ?2, ?3, 1, 'artifact', 's', 1, 'b', 'all', 1, 'x')",
                rusqlite::params![i as i64 + 1, id, artifact],
            )?;
            if let Some((state, uninstall)) = rollout {
                conn.execute(
                    "INSERT INTO rollouts (deployment_id, selector_json, phases_json, soak_ms,
                         max_failures, windows_json, start_at_ms, state, phase,
                         phase_opened_at_ms, allowed_failures, failure_base, reason,
                         approved_by, uninstall)
                     VALUES (?1, '{}', '[100]', 0, '0', '[]', NULL, ?2, 0, 0, 0, 0, '', NULL, ?3)",
                    rusqlite::params![id, state, uninstall],
                )?;
            }
            conn.execute(
                "INSERT INTO deployment_results (deployment_id, client_id, status, detail, at_ms,
                     attempts) VALUES (?1, 'c1', 'installed', '', 100, 1)",
                [id],
            )?;
        }
        // f1 is superseded by f2, which has no result; a1 has a second, recent result.
        conn.execute(
            "INSERT INTO deployments (seq, id, artifact, version, kind, sha256, size, bundle_id,
                 group_name, created_at_ms, created_by)
             VALUES (11, 'f2', 'f', 2, 'artifact', 's', 1, 'b', 'all', 1, 'x')",
            [],
        )?;
        conn.execute(
            "INSERT INTO deployment_results (deployment_id, client_id, status, detail, at_ms,
                 attempts) VALUES ('a1', 'c2', 'failed', '', 900, 1)",
            [],
        )?;
        let out = run(&mut conn, env(5_000, compact(0, Some(250), Some(500))))?;
        let Ok(Response::Compacted {
            audit_removed,
            checkpoint_seq,
            inventory_removed,
            results_removed,
            ..
        }) = out
        else {
            panic!("{out:?}");
        };
        assert_eq!((audit_removed, checkpoint_seq), (0, 0));
        assert_eq!(inventory_removed, 2);
        let left: Vec<String> = conn
            .prepare("SELECT deployment_id || '/' || client_id FROM deployment_results ORDER BY 1")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        // Gone: a1/c1 (superseded plain), f1 (done, superseded), g1 (aborted without
        // uninstall, superseded). Kept: newest of each artifact, a running rollout, an
        // uninstalling abort, and a result newer than the cut.
        assert_eq!(
            left,
            [
                "a1/c2", "a2/c1", "b1/c1", "c1/c1", "c2/c1", "e1/c1", "e2/c1", "g2/c1"
            ]
        );
        assert_eq!(results_removed, 3);
        walk_from_base(&conn)?;
        Ok(())
    }
}
