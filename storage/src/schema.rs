//! Schema migrations and the checks run when a database is opened.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`; the version lives in
//! `PRAGMA user_version`. To extend the schema, append a migration and bump `SCHEMA_VERSION`
//! (a unit test keeps the two in step). Never edit a migration that has shipped.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use crate::error::StorageError;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 11;

/// Ordered migrations; each runs in its own transaction together with its user_version bump.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: cluster, nodes, config, tokens, audit, meta.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value BLOB
    );
    INSERT INTO meta (key, value) VALUES ('next_node_id', 1);
    CREATE TABLE cluster (
        singleton     INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
        id            TEXT NOT NULL,
        name          TEXT NOT NULL,
        ca_cert_pem   TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE nodes (
        id           INTEGER PRIMARY KEY NOT NULL CHECK (id > 0),
        name         TEXT NOT NULL,
        api_addr     TEXT NOT NULL,
        peer_addr    TEXT NOT NULL,
        role         TEXT NOT NULL CHECK (role IN ('joining', 'learner', 'voter', 'removed')),
        version      TEXT NOT NULL,
        joined_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE config (
        scope_kind    TEXT NOT NULL CHECK (scope_kind IN ('global', 'group', 'client')),
        scope_id      TEXT NOT NULL,
        key           TEXT NOT NULL,
        value         TEXT NOT NULL,
        version       INTEGER NOT NULL CHECK (version > 0),
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT NOT NULL,
        PRIMARY KEY (scope_kind, scope_id, key)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE tokens (
        id            TEXT PRIMARY KEY NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('node', 'client')),
        secret_sha256 TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        uses_left     INTEGER CHECK (uses_left IS NULL OR uses_left >= 0),
        groups_json   TEXT NOT NULL,
        revoked       INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
        created_at_ms INTEGER NOT NULL,
        created_by    TEXT NOT NULL
    ) STRICT;
    CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
        at_ms     INTEGER NOT NULL,
        actor     TEXT NOT NULL,
        action    TEXT NOT NULL,
        target    TEXT NOT NULL,
        detail    TEXT NOT NULL,
        outcome   TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    ) STRICT;
    "#,
    // v2: clients, revoked certificate serials, inventory and its history.
    r#"
    CREATE TABLE clients (
        id             TEXT PRIMARY KEY NOT NULL,
        hostname       TEXT NOT NULL,
        groups_json    TEXT NOT NULL,
        cert_serial    TEXT NOT NULL,
        enrolled_at_ms INTEGER NOT NULL,
        revoked        INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
        last_seen_ms   INTEGER,
        last_seen_node INTEGER
    ) STRICT;
    CREATE TABLE revoked_serials (
        serial        TEXT PRIMARY KEY NOT NULL,
        client_id     TEXT NOT NULL,
        revoked_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE inventory (
        client_id     TEXT PRIMARY KEY NOT NULL,
        facts_json    TEXT NOT NULL,
        facts_sha256  TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE inventory_history (
        seq          INTEGER PRIMARY KEY NOT NULL,
        client_id    TEXT NOT NULL,
        at_ms        INTEGER NOT NULL,
        facts_sha256 TEXT NOT NULL,
        changed_json TEXT NOT NULL
    ) STRICT;
    CREATE INDEX inventory_history_client ON inventory_history (client_id, seq);
    "#,
    // v3: bundle trust, channel floors, bundles and their payloads, blob holders,
    // deployments and their per-client results.
    r#"
    INSERT INTO meta (key, value) VALUES ('bundle_time_floor', 0);
    CREATE TABLE bundle_trust (
        singleton     INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
        version       INTEGER NOT NULL CHECK (version > 0),
        trust_json    TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE channels (
        name            TEXT PRIMARY KEY NOT NULL,
        version         INTEGER NOT NULL CHECK (version >= 0),
        manifest_sha256 TEXT NOT NULL,
        updated_at_ms   INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE bundles (
        seq             INTEGER PRIMARY KEY NOT NULL,
        id              TEXT NOT NULL UNIQUE,
        manifest_sha256 TEXT NOT NULL UNIQUE,
        bundle_type     TEXT NOT NULL CHECK (bundle_type IN ('content', 'trust')),
        channel         TEXT,
        version         INTEGER NOT NULL CHECK (version >= 0),
        created         INTEGER NOT NULL,
        expires         INTEGER NOT NULL,
        signers_json    TEXT NOT NULL,
        imported_at_ms  INTEGER NOT NULL,
        imported_by     TEXT NOT NULL,
        node_id         INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE payloads (
        bundle_seq INTEGER NOT NULL REFERENCES bundles (seq),
        idx        INTEGER NOT NULL,
        name       TEXT NOT NULL,
        kind       TEXT NOT NULL,
        size       INTEGER NOT NULL CHECK (size >= 0),
        sha256     TEXT NOT NULL,
        PRIMARY KEY (bundle_seq, idx)
    ) STRICT;
    CREATE INDEX payloads_name ON payloads (name, kind);
    CREATE INDEX payloads_sha256 ON payloads (sha256);
    CREATE TABLE blob_holders (
        sha256   TEXT NOT NULL,
        node_id  INTEGER NOT NULL,
        since_ms INTEGER NOT NULL,
        PRIMARY KEY (sha256, node_id)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE deployments (
        seq           INTEGER PRIMARY KEY NOT NULL,
        id            TEXT NOT NULL UNIQUE,
        artifact      TEXT NOT NULL,
        version       INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        bundle_id     TEXT NOT NULL,
        group_name    TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        created_by    TEXT NOT NULL
    ) STRICT;
    CREATE INDEX deployments_group ON deployments (group_name);
    CREATE TABLE deployment_results (
        deployment_id TEXT NOT NULL,
        client_id     TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('installed', 'failed')),
        detail        TEXT NOT NULL,
        at_ms         INTEGER NOT NULL,
        attempts      INTEGER NOT NULL,
        PRIMARY KEY (deployment_id, client_id)
    ) STRICT, WITHOUT ROWID;
    "#,
    // v4: retired client serials (renewal), renewal times, revoked admin names, recent request
    // ids (exactly-once writes).
    r#"
    ALTER TABLE clients ADD COLUMN prev_serial TEXT;
    ALTER TABLE clients ADD COLUMN prev_serial_until_ms INTEGER;
    ALTER TABLE clients ADD COLUMN renewed_at_ms INTEGER;
    ALTER TABLE clients ADD COLUMN cert_key_sha256 TEXT;
    CREATE TABLE revoked_admins (
        name          TEXT PRIMARY KEY NOT NULL,
        revoked_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE request_ids (
        seq        INTEGER PRIMARY KEY NOT NULL,
        request_id TEXT NOT NULL UNIQUE,
        outcome    TEXT NOT NULL
    ) STRICT;
    "#,
    // v5: the executable each node runs, and the rolling upgrade to a release.
    r#"
    ALTER TABLE nodes ADD COLUMN binary_sha256 TEXT NOT NULL DEFAULT '';
    CREATE TABLE roll (
        singleton     INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
        bundle_id     TEXT NOT NULL,
        name          TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        size          INTEGER NOT NULL CHECK (size >= 0),
        state         TEXT NOT NULL CHECK (state IN ('running', 'done', 'stopped')),
        node          INTEGER,
        reason        TEXT NOT NULL DEFAULT '',
        started_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;
    "#,
    // v6: the web console: operator accounts, one-time login links, sessions.
    r#"
    CREATE TABLE console_users (
        name          TEXT PRIMARY KEY NOT NULL,
        password_hash TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT NOT NULL
    ) STRICT;
    CREATE TABLE console_logins (
        id            TEXT PRIMARY KEY NOT NULL,
        secret_sha256 TEXT NOT NULL,
        user          TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used_at_ms    INTEGER,
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE console_sessions (
        id            TEXT PRIMARY KEY NOT NULL,
        user          TEXT NOT NULL,
        secret_sha256 TEXT NOT NULL,
        via           TEXT NOT NULL CHECK (via IN ('link', 'password')),
        started_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        ended_at_ms   INTEGER
    ) STRICT;
    CREATE INDEX console_sessions_user ON console_sessions (user);
    "#,
    // v7: config as a rowid table with its key as a unique index. In the WITHOUT ROWID table
    // a value over ~1000 bytes spilled into an overflow page, so each set of a 1 KiB value
    // rewrote two pages; a rowid table keeps values up to ~4 KiB in the leaf.
    r#"
    CREATE TABLE config_v7 (
        scope_kind    TEXT NOT NULL CHECK (scope_kind IN ('global', 'group', 'client')),
        scope_id      TEXT NOT NULL,
        key           TEXT NOT NULL,
        value         TEXT NOT NULL,
        version       INTEGER NOT NULL CHECK (version > 0),
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT NOT NULL,
        UNIQUE (scope_kind, scope_id, key)
    ) STRICT;
    INSERT INTO config_v7 (scope_kind, scope_id, key, value, version, updated_at_ms, updated_by)
        SELECT scope_kind, scope_id, key, value, version, updated_at_ms, updated_by FROM config
        ORDER BY scope_kind, scope_id, key;
    DROP TABLE config;
    ALTER TABLE config_v7 RENAME TO config;
    "#,
    // v8: locks on console password sign-ins, per account and per source.
    r#"
    CREATE TABLE signin_locks (
        key           TEXT PRIMARY KEY NOT NULL,
        until_ms      INTEGER NOT NULL,
        strikes       INTEGER NOT NULL CHECK (strikes > 0),
        updated_at_ms INTEGER NOT NULL
    ) STRICT;
    "#,
    // v9: rollouts (issue 22): the operator's client labels, a rollout row beside each
    // deployment made by `CreateRollout` (plain deployments have none and read as one phase to
    // their group), and the results of removing an aborted deployment.
    r#"
    CREATE TABLE client_labels (
        client_id TEXT NOT NULL,
        label     TEXT NOT NULL,
        PRIMARY KEY (client_id, label)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE rollouts (
        deployment_id      TEXT PRIMARY KEY NOT NULL,
        selector_json      TEXT NOT NULL,
        phases_json        TEXT NOT NULL,
        soak_ms            INTEGER NOT NULL CHECK (soak_ms >= 0),
        max_failures       TEXT NOT NULL,
        windows_json       TEXT NOT NULL,
        start_at_ms        INTEGER,
        state              TEXT NOT NULL CHECK (state IN ('waiting-approval', 'scheduled',
                               'running', 'paused', 'halted', 'aborted', 'done')),
        phase              INTEGER NOT NULL CHECK (phase >= 0),
        phase_opened_at_ms INTEGER NOT NULL,
        allowed_failures   INTEGER NOT NULL CHECK (allowed_failures >= 0),
        failure_base       INTEGER NOT NULL CHECK (failure_base >= 0),
        reason             TEXT NOT NULL,
        approved_by        TEXT,
        uninstall          INTEGER NOT NULL CHECK (uninstall IN (0, 1))
    ) STRICT;
    CREATE INDEX rollouts_state ON rollouts (state);
    CREATE TABLE deployment_removals (
        deployment_id TEXT NOT NULL,
        client_id     TEXT NOT NULL,
        ok            INTEGER NOT NULL CHECK (ok IN (0, 1)),
        detail        TEXT NOT NULL,
        at_ms         INTEGER NOT NULL,
        attempts      INTEGER NOT NULL,
        PRIMARY KEY (deployment_id, client_id)
    ) STRICT, WITHOUT ROWID;
    "#,
    // v10: retention (issue 24). A compaction moves the oldest audit records out of the live
    // table; its checkpoint keeps the hash of the last record moved out, which the remaining
    // chain links to, so `audit verify` proves the rest from it and an exported file verifies
    // against it offline. Inventory history is cut by time, hence its index.
    r#"
    CREATE TABLE audit_checkpoints (
        seq             INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
        hash            TEXT NOT NULL,
        record_at_ms    INTEGER NOT NULL,
        compacted_at_ms INTEGER NOT NULL,
        removed         INTEGER NOT NULL CHECK (removed >= 0)
    ) STRICT;
    CREATE INDEX inventory_history_at ON inventory_history (at_ms);
    "#,
    // v11: people's roles (issue 25). One row per person name (admin certificates and the
    // console account of that name); a name without a row is an admin, as everyone was before.
    // `scopes` is a JSON array of `{"Group": NAME}` / `{"Label": NAME}` terms. The audit is
    // read by person (`audit --actor`), hence its index on actor.
    r#"
    CREATE TABLE roles (
        name          TEXT PRIMARY KEY NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        scopes        TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        updated_by    TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_actor ON audit (actor);
    "#,
];

/// The database's schema version.
pub(crate) fn user_version(conn: &Connection) -> Result<u32, rusqlite::Error> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// What to do with a database at `found` given the migrations this build has.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MigrationPlan {
    UpToDate,
    /// Run MIGRATIONS[from..].
    Apply {
        from: usize,
    },
    TooNew,
}

pub(crate) fn plan(found: u32, supported: u32) -> MigrationPlan {
    match found.cmp(&supported) {
        std::cmp::Ordering::Equal => MigrationPlan::UpToDate,
        std::cmp::Ordering::Greater => MigrationPlan::TooNew,
        std::cmp::Ordering::Less => MigrationPlan::Apply {
            from: found as usize,
        },
    }
}

/// Brings the schema to SCHEMA_VERSION, one transaction per migration. Refuses newer schemas.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    let found = user_version(conn)?;
    match plan(found, SCHEMA_VERSION) {
        MigrationPlan::UpToDate => Ok(()),
        MigrationPlan::TooNew => Err(StorageError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        }),
        MigrationPlan::Apply { from } => {
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", (i + 1) as u32)?;
                // The migration and its version bump together, or neither (one lost to a power
                // cut runs again at the next open).
                tx.commit()?;
                tracing::info!(version = i + 1, "applied storage schema migration");
            }
            Ok(())
        }
    }
}

/// Runs `PRAGMA quick_check` and refuses anything but "ok". Also turns SQLite's "not a
/// database" / "corrupt" errors into `Corrupt` naming `path`.
pub(crate) fn quick_check(conn: &Connection, path: &Path) -> Result<(), StorageError> {
    let result: Result<Vec<String>, rusqlite::Error> = (|| {
        let mut stmt = conn.prepare("PRAGMA quick_check")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        rows.collect()
    })();
    let lines = result.map_err(|e| corrupt_or(e, path))?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(StorageError::Corrupt(format!(
            "{}: quick_check: {}",
            path.display(),
            lines.join("; ")
        )))
    }
}

/// Maps SQLite's NOTADB/CORRUPT codes to `Corrupt` (naming the path); other errors pass through.
pub(crate) fn corrupt_or(e: rusqlite::Error, path: &Path) -> StorageError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            StorageError::Corrupt(format!("{}: {e}", path.display()))
        }
        _ => StorageError::Sqlite(e),
    }
}

/// Reads a meta value as raw bytes (the marker) if present.
pub(crate) fn meta_blob(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, rusqlite::Error> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |row| row.get::<_, Option<Vec<u8>>>(0))
        .optional()
        .map(Option::flatten)
}

/// The newest `created` of any accepted bundle (unix seconds, from meta): part of the cluster
/// time floor, read by bundle imports in `apply` and by the reader.
pub(crate) fn bundle_time_floor(conn: &Connection) -> Result<i64, rusqlite::Error> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'bundle_time_floor'")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_version_matches_migrations() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
    }

    #[test]
    fn plans() {
        let cases = [
            (0, 1, MigrationPlan::Apply { from: 0 }),
            (1, 1, MigrationPlan::UpToDate),
            (2, 1, MigrationPlan::TooNew),
            (1, 3, MigrationPlan::Apply { from: 1 }),
        ];
        for (found, supported, want) in cases {
            assert_eq!(plan(found, supported), want, "{found} vs {supported}");
        }
    }

    #[test]
    fn migrates_fresh_memory_db_and_is_idempotent() -> Result<(), StorageError> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        assert_eq!(user_version(&conn)?, SCHEMA_VERSION);
        migrate(&mut conn)?;
        let next: i64 = conn.query_row(
            "SELECT value FROM meta WHERE key = 'next_node_id'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(next, 1);
        quick_check(&conn, Path::new(":memory:"))?;
        Ok(())
    }

    /// v7 moves config into a rowid table: the keys, values and versions of a v6 database
    /// come through, the upsert on (scope, key) still finds them, and a value of 4000 bytes
    /// stays in its leaf page (no overflow page is allocated for it).
    #[test]
    fn v7_keeps_config_and_stores_values_in_the_leaf() -> Result<(), StorageError> {
        let mut conn = Connection::open_in_memory()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().take(6) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", (i + 1) as u32)?;
        }
        conn.execute_batch(
            "INSERT INTO config VALUES ('global', '', 'b', 'two', 2, 5, 'admin:a'),
                                       ('group', 'lab', 'a', 'one', 1, 4, 'admin:a');",
        )?;
        migrate(&mut conn)?;
        let rows: Vec<(String, String, String, String, i64)> = conn
            .prepare("SELECT scope_kind, scope_id, key, value, version FROM config ORDER BY key")?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        assert_eq!(
            rows,
            vec![
                ("group".into(), "lab".into(), "a".into(), "one".into(), 1),
                ("global".into(), "".into(), "b".into(), "two".into(), 2),
            ]
        );
        let upsert = "INSERT INTO config VALUES ('global', '', 'b', ?1, 3, 6, 'admin:a')
                      ON CONFLICT (scope_kind, scope_id, key) DO UPDATE SET value = excluded.value,
                          version = excluded.version";
        conn.execute(upsert, ["x".repeat(4000)])?;
        let (n, len): (i64, i64) =
            conn.query_row("SELECT COUNT(*), MAX(length(value)) FROM config", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        assert_eq!((n, len), (2, 4000));
        let overflow: i64 = conn.query_row(
            "SELECT COUNT(*) FROM dbstat WHERE name = 'config' AND pagetype = 'overflow'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(overflow, 0, "a 4000-byte value went to an overflow page");
        Ok(())
    }

    #[test]
    fn refuses_newer_schema() -> Result<(), StorageError> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
        match migrate(&mut conn) {
            Err(StorageError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        Ok(())
    }
}
