//! The deterministic state machine: applies decoded envelopes inside the caller's transaction.
//!
//! No clock, no randomness, no I/O beyond SQLite: times and ids come in the envelope. Every
//! envelope leaves exactly one audit row, accepted or rejected, chained to the previous one,
//! except an accepted `Quiet` touch (routine liveness, format 9), which leaves none. The
//! chain starts at its base: the newest `audit_checkpoints` row a compaction left (`compact`),
//! or genesis.
//!
//! This file holds what every command shares: the transaction (`apply_entries`), the dispatch
//! of one envelope to its domain (`execute`), the failure helpers (`Fail`, `reject`,
//! `invalid`), the checked conversions into SQLite integers and the audit append. Each
//! command's checks and writes live in the file of its domain: `nodes` (cluster and nodes),
//! `config`, `tokens`, `clients` (clients, inventory, client certificates, admin revocation),
//! `bundles` (trust, bundles, blobs), `deployments`, `rollouts` (labels, rollouts and their
//! steps, removals) with `brake` (a rollout's reports), `upgrade` (the rolling upgrade) and
//! `console` (operator accounts, login links, sessions); `requests` keeps the recent request
//! ids and their first outcomes (exactly-once writes); `audit_text` says what each command's
//! audit row reads. A domain file uses this file and the crate's lower modules; calls between
//! domains are few and one way: `nodes` and `clients` consume tokens through `tokens`,
//! `bundles` applies a bundle's config through `config`, `rollouts` makes its deployments row
//! through `deployments`, and `deployments` and `rollouts` use `brake`.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::audit::{AuditFields, GENESIS_HASH, chain_hash};
use crate::codec::decode_batch;
use crate::error::StorageError;
use crate::model::{Command, Envelope, Outcome, RejectCode, Rejection, Response};
use crate::schema::meta_blob;

mod audit_text;
mod brake;
mod bundles;
mod clients;
mod compact;
mod config;
mod console;
mod deployments;
mod nodes;
mod requests;
mod roles;
mod rollouts;
#[cfg(test)]
mod tests;
mod tokens;
mod upgrade;

pub use bundles::MAX_CREATED_SKEW_SECS;
pub use clients::{RENEWAL_INTERVAL_MS, RETIRED_SERIAL_GRACE_MS};
pub use console::{
    MAX_PASSWORD_HASH_BYTES, MAX_SIGNIN_LOCK_MS, signin_account_key, signin_source_key,
};
pub use deployments::MAX_DETAIL_BYTES;
pub use requests::REQUEST_IDS_KEPT;
pub use rollouts::{
    MAX_LABEL_CLIENTS, MAX_LABELS_PER_CLIENT, MAX_LABELS_PER_COMMAND, MAX_STEP_REASON_BYTES,
};
pub use upgrade::MAX_ROLL_REASON_BYTES;

/// What one `apply_entries` call did: per entry, None for a None input or one outcome per
/// envelope; whether it applied a command that changes who may call a node; and whether a
/// compaction freed pages (the writer then runs `PRAGMA incremental_vacuum`).
pub(crate) struct Applied {
    pub(crate) outcomes: Vec<Option<Vec<Outcome>>>,
    pub(crate) identities_changed: bool,
    pub(crate) compacted: bool,
}

/// Commands after which a cached answer to "may this admin, node or client still call?" is
/// stale.
fn changes_identities(command: &Command) -> bool {
    match command {
        Command::Once { command, .. } => changes_identities(command),
        Command::EnrollClient { .. }
        | Command::RevokeClient { .. }
        | Command::RenewClientCert { .. }
        | Command::RotateClientCert { .. }
        | Command::InitCluster { .. }
        | Command::AddNode { .. }
        | Command::JoinNode { .. }
        | Command::UpdateNode { .. }
        | Command::RemoveNode { .. }
        | Command::ReformCluster { .. }
        | Command::RevokeAdmin { .. }
        | Command::SetRole { .. } => true,
        _ => false,
    }
}

/// Applies a run of Raft entries in ONE transaction and stores `applied_marker` with them.
/// Decode errors (including NeedsUpgrade) and SQLite errors leave the database untouched.
pub(crate) fn apply_entries(
    conn: &mut Connection,
    entries: Vec<Option<Vec<u8>>>,
    applied_marker: &[u8],
) -> Result<Applied, StorageError> {
    // Decode everything first: an undecodable entry must not leave half a run applied.
    let decoded = entries
        .iter()
        .map(|e| e.as_deref().map(decode_batch).transpose())
        .collect::<Result<Vec<_>, _>>()?;

    let identities_changed = decoded
        .iter()
        .flatten()
        .flatten()
        .any(|env| changes_identities(&env.command));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut audit = AuditTail::read(&tx)?;
    let mut requests = requests::Tail::default();
    // Read once per call, not once per envelope: only `InitCluster` changes it, and nothing
    // removes the cluster row.
    let mut initialized: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM cluster)")?
        .query_row([], |r| r.get(0))?;
    let mut results = Vec::with_capacity(decoded.len());
    let mut compacted = false;
    for batch in decoded {
        let Some(batch) = batch else {
            results.push(None);
            continue;
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for env in batch {
            // A request id is taken off its command here (moved, not cloned): the command is
            // applied and audited as itself, and the id remembered with its outcome.
            let (request_id, env) = requests::unwrap(env);
            // A request seen before (a forwarding retry, a leader change): its first outcome,
            // nothing applied, nothing audited.
            if let Some(id) = &request_id
                && let Some(first) = requests::seen(&tx, id)?
            {
                outcomes.push(first);
                continue;
            }
            // Each envelope in a savepoint of its own, through statements prepared once
            // (rusqlite's `Savepoint` parses its SQL again for every envelope).
            tx.prepare_cached("SAVEPOINT envelope")?.execute([])?;
            let outcome = match execute_checked(&tx, request_id.as_deref(), &env, initialized) {
                Ok(resp) => {
                    tx.prepare_cached("RELEASE envelope")?.execute([])?;
                    Ok(resp)
                }
                Err(Fail::Reject(rej)) => {
                    tx.prepare_cached("ROLLBACK TO envelope")?.execute([])?;
                    tx.prepare_cached("RELEASE envelope")?.execute([])?;
                    Err(rej)
                }
                // The whole transaction rolls back when `tx` drops.
                Err(Fail::Sql(e)) => return Err(e.into()),
            };
            if outcome.is_ok() && matches!(env.command, Command::InitCluster { .. }) {
                initialized = true;
            }
            compacted |= matches!(outcome, Ok(Response::Compacted { .. }));
            // An accepted quiet touch leaves no audit row; a refused one is audited.
            if !(outcome.is_ok() && env.command.is_quiet()) {
                audit.append(&tx, &env, &outcome)?;
            }
            if let Some(id) = &request_id {
                requests.remember(&tx, id, &outcome)?;
            }
            outcomes.push(outcome);
        }
        results.push(Some(outcomes));
    }
    audit.store(&tx)?;
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('applied_marker', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([applied_marker])?;
    // Every envelope of this call, its audit rows and the applied marker, all or nothing.
    // Not fsynced here (synchronous=NORMAL): the Raft log holds these entries until a
    // snapshot, and building one syncs this first (`Store::sync`).
    tx.commit()?;
    Ok(Applied {
        outcomes: results,
        identities_changed,
        compacted,
    })
}

/// Why one envelope did not apply: a rejection rolls back that envelope alone and is audited;
/// an SQLite error aborts the whole call. Private to `apply` (its domain files see it).
enum Fail {
    Reject(Rejection),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

fn reject(code: RejectCode, message: impl Into<String>) -> Fail {
    Fail::Reject(Rejection::new(code, message))
}

fn invalid(message: String) -> Fail {
    reject(RejectCode::Invalid, message)
}

/// `execute` after the checks every envelope passes: a request id must be well formed and
/// wrap a command that is not itself a request id, and only `InitCluster` may run on a state
/// whose cluster is not initialized.
fn execute_checked(
    conn: &Connection,
    request_id: Option<&str>,
    env: &Envelope,
    initialized: bool,
) -> Result<Response, Fail> {
    let init = matches!(env.command, Command::InitCluster { .. });
    // A request id around `InitCluster` is checked as any other wrapped command.
    if !initialized && (!init || request_id.is_some()) {
        return Err(reject(
            RejectCode::NotInitialized,
            "the cluster is not initialized",
        ));
    }
    if let Some(id) = request_id {
        crate::rules::check_id("request id", id).map_err(invalid)?;
    }
    execute(conn, env)
}

fn execute(conn: &Connection, env: &Envelope) -> Result<Response, Fail> {
    match &env.command {
        Command::Once { .. } => Err(invalid("a request id wraps another request id".to_owned())),
        Command::Quiet(inner) => match inner.as_ref() {
            Command::TouchClients { node_id, seen } => clients::touch_clients(conn, *node_id, seen),
            Command::TouchConsoleSessions { node_id, seen } => {
                console::touch_sessions(conn, *node_id, seen)
            }
            other => Err(invalid(format!(
                "Quiet wraps only TouchClients or TouchConsoleSessions, not {}",
                other.kind()
            ))),
        },
        Command::CompactHistory {
            audit_through_seq,
            inventory_before_ms,
            results_before_ms,
        } => compact::compact_history(
            conn,
            env.at_ms,
            &compact::Cuts {
                audit_through_seq: *audit_through_seq,
                inventory_before_ms: *inventory_before_ms,
                results_before_ms: *results_before_ms,
            },
        ),
        Command::InitCluster {
            cluster_id,
            name,
            ca_cert_pem,
        } => nodes::init_cluster(conn, env.at_ms, cluster_id, name, ca_cert_pem),
        Command::AddNode {
            id,
            name,
            api_addr,
            peer_addr,
            version,
        } => nodes::add_node(conn, env.at_ms, *id, name, api_addr, peer_addr, version),
        Command::JoinNode {
            token_id,
            secret_sha256,
            name,
            api_addr,
            peer_addr,
            version,
        } => {
            let node = nodes::NewNode {
                name,
                api_addr,
                peer_addr,
                version,
            };
            nodes::join_node(conn, env.at_ms, token_id, secret_sha256, node)
        }
        Command::UpdateNode {
            id,
            api_addr,
            peer_addr,
            role,
            version,
        } => nodes::update_node(
            conn,
            *id,
            api_addr.as_deref(),
            peer_addr.as_deref(),
            *role,
            version.as_deref(),
        ),
        Command::RemoveNode { id } => nodes::remove_node(conn, *id),
        Command::ReformCluster {
            keep,
            ca_cert_pem,
            reason,
        } => nodes::reform_cluster(conn, *keep, ca_cert_pem.as_deref(), reason),
        Command::ReportBinary {
            node_id,
            version,
            sha256,
        } => upgrade::report_binary(conn, *node_id, version, sha256),
        Command::StartRoll { bundle_id, sha256 } => {
            upgrade::start_roll(conn, env.at_ms, bundle_id, sha256)
        }
        Command::RollNode { node } => upgrade::roll_node(conn, env.at_ms, *node),
        Command::EndRoll { reason } => upgrade::end_roll(conn, env.at_ms, reason.as_deref()),
        Command::SetConfig { scope, key, value } => {
            config::set_config(conn, env, scope, key, value)
        }
        Command::DeleteConfig { scope, key } => config::delete_config(conn, scope, key),
        Command::CreateToken {
            id,
            kind,
            secret_sha256,
            expires_at_ms,
            uses,
            groups,
        } => {
            let token = tokens::NewToken {
                id,
                kind: *kind,
                secret_sha256,
                expires_at_ms: *expires_at_ms,
                uses: *uses,
                groups,
            };
            tokens::create_token(conn, env, token)
        }
        Command::RevokeToken { id } => tokens::revoke_token(conn, id),
        Command::EnrollClient {
            token_id,
            secret_sha256,
            client_id,
            hostname,
            cert_serial,
        } => clients::enroll_client(
            conn,
            env.at_ms,
            token_id,
            secret_sha256,
            client_id,
            hostname,
            cert_serial,
        ),
        Command::RevokeClient { client_id } => clients::revoke_client(conn, env.at_ms, client_id),
        Command::TouchClients { node_id, seen } => clients::touch_clients(conn, *node_id, seen),
        Command::ReportInventory {
            client_id,
            facts_json,
        } => clients::report_inventory(conn, env.at_ms, client_id, facts_json),
        Command::SetBundleTrust {
            version,
            trust_json,
        } => bundles::set_bundle_trust(conn, env.at_ms, *version, trust_json),
        Command::ImportBundle(b) => bundles::import_bundle(conn, env, b),
        Command::BlobsHeld { node_id, sha256 } => {
            bundles::blobs_held(conn, env.at_ms, *node_id, sha256)
        }
        Command::CreateDeployment {
            id,
            artifact,
            version,
            group,
        } => deployments::create_deployment(
            conn,
            env,
            (id, group),
            (deployments::ARTIFACT_KIND, artifact, *version),
        ),
        Command::CreateReleaseDeployment {
            id,
            release,
            version,
            group,
        } => deployments::create_deployment(
            conn,
            env,
            (id, group),
            (deployments::RELEASE_KIND, release, *version),
        ),
        Command::ReportDeployment {
            deployment_id,
            client_id,
            status,
            detail,
        } => deployments::report_deployment(
            conn,
            env.at_ms,
            deployment_id,
            client_id,
            *status,
            detail,
        ),
        Command::RenewClientCert {
            client_id,
            cert_serial,
        } => clients::renew_client_cert(conn, client_id, cert_serial),
        Command::ImportSignedBundle(b) => bundles::import_signed_bundle(conn, env, b),
        Command::RevokeAdmin { name } => clients::revoke_admin(conn, env.at_ms, name),
        Command::SetRole { name, grant } => roles::set_role(conn, env, name, grant),
        Command::RotateClientCert {
            client_id,
            old_serial,
            new_serial,
            new_key_sha256,
        } => clients::rotate_client_cert(
            conn,
            env.at_ms,
            client_id,
            (old_serial, new_serial),
            new_key_sha256,
        ),
        Command::ConfirmClientCert { client_id, serial } => {
            clients::confirm_client_cert(conn, env.at_ms, client_id, serial)
        }
        Command::SetConsoleUser {
            name,
            password_hash,
        } => console::set_user(conn, env, name, password_hash),
        Command::RemoveConsoleUser { name } => console::remove_user(conn, env.at_ms, name),
        Command::CreateConsoleLogin {
            id,
            secret_sha256,
            user,
            expires_at_ms,
        } => console::create_login(conn, env.at_ms, id, secret_sha256, user, *expires_at_ms),
        Command::StartConsoleSession {
            id,
            user,
            secret_sha256,
            expires_at_ms,
            proof,
        } => console::start_session(
            conn,
            env.at_ms,
            console::NewSession {
                id,
                user,
                secret_sha256,
                expires_at_ms: *expires_at_ms,
                proof,
            },
        ),
        Command::EndConsoleSession { id } => console::end_session(conn, env.at_ms, id),
        Command::TouchConsoleSessions { node_id, seen } => {
            console::touch_sessions(conn, *node_id, seen)
        }
        Command::LockSignIn { key, until_ms } => {
            console::lock_signin(conn, env.at_ms, key, *until_ms)
        }
        Command::LabelClients {
            clients,
            add,
            remove,
        } => rollouts::label_clients(conn, clients, add, remove),
        Command::CreateRollout(spec) => rollouts::create_rollout(conn, env, spec),
        Command::RolloutStep { id, step, reason } => {
            rollouts::rollout_step(conn, env, id, *step, reason)
        }
        Command::ReportRemoval {
            deployment_id,
            client_id,
            ok,
            detail,
        } => rollouts::report_removal(conn, env.at_ms, (deployment_id, client_id), *ok, detail),
    }
}

/// Node ids are stored as SQLite integers: 1..=i64::MAX.
fn node_id_sql(id: u64) -> Result<i64, Fail> {
    match i64::try_from(id) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(invalid(format!(
            "node id {id} is out of range 1..={}",
            i64::MAX
        ))),
    }
}

/// A version, size or count that must fit SQLite's signed 64-bit integers.
fn version_sql(what: &str, v: u64) -> Result<i64, Fail> {
    i64::try_from(v).map_err(|_| invalid(format!("{what} {v} is larger than {}", i64::MAX)))
}

/// The end of the audit chain during one `apply_entries` call: read once, moved by each
/// append, and stored in `meta.audit_head` once before the commit.
struct AuditTail {
    seq: i64,
    head: String,
    moved: bool,
}

impl AuditTail {
    fn read(conn: &Connection) -> Result<AuditTail, StorageError> {
        // A compaction may have moved every record out: the chain then goes on after its
        // checkpoint (whose hash `meta.audit_head` already holds).
        let seq: i64 = conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM audit")?
            .query_row([], |r| r.get::<_, i64>(0))?
            .max(compact::audit_base(conn)?.0);
        let head = match meta_blob(conn, "audit_head")? {
            Some(b) => String::from_utf8(b)
                .map_err(|_| StorageError::Corrupt("meta.audit_head is not text".to_owned()))?,
            None => GENESIS_HASH.to_owned(),
        };
        Ok(AuditTail {
            seq,
            head,
            moved: false,
        })
    }

    /// Appends the envelope's audit row, chained to the current head, and moves the head.
    fn append(
        &mut self,
        conn: &Connection,
        env: &Envelope,
        outcome: &Outcome,
    ) -> Result<(), StorageError> {
        let text = audit_text::audit_text(env, outcome);
        let outcome = audit_text::outcome_text(outcome);
        let seq = self.seq + 1;
        let fields = AuditFields {
            seq: seq as u64,
            at_ms: env.at_ms,
            actor: &env.actor,
            action: text.action,
            target: &text.target,
            detail: &text.detail,
            outcome: &outcome,
        };
        let hash = chain_hash(&self.head, &fields).ok_or_else(|| {
            StorageError::Corrupt(format!("meta.audit_head {:?} is not a hash", self.head))
        })?;
        conn.prepare_cached(
            "INSERT INTO audit (seq, at_ms, actor, action, target, detail, outcome, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            seq,
            env.at_ms,
            env.actor,
            text.action,
            text.target,
            text.detail,
            outcome,
            self.head,
            hash
        ])?;
        self.seq = seq;
        self.head = hash;
        self.moved = true;
        Ok(())
    }

    fn store(&self, conn: &Connection) -> Result<(), StorageError> {
        if self.moved {
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('audit_head', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([self.head.as_bytes()])?;
        }
        Ok(())
    }
}
