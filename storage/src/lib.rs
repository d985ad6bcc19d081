//! outpost-storage: the replicated state of an Outpost cluster as a SQLite database.
//!
//! It owns the schema and its migrations, the versioned `Command` set, the deterministic
//! `apply`, the queries, and snapshot export/import. It knows nothing of Raft or the network:
//! the Raft layer hands it encoded commands in log order, plus an opaque "applied position"
//! blob that is stored in the same transaction. It does not read clocks or make ids: times
//! and ids arrive in the commands. It holds no secrets (tokens are stored as sha256 hashes).
//! It does know the bundle format, through `outpost-bundles`: `apply` checks a signed bundle's
//! signatures, target and times, so a change to those checks is a command-format change
//! (`model::BundleImport` says why).
//!
//! Threads: one writer `std::thread` owns the read-write connection (requests arrive on a
//! bounded tokio mpsc channel, replies go back on oneshots); `Reader` uses pooled read-only
//! connections and blocks, so async callers run it on blocking threads; snapshot file work
//! runs on short-lived threads of its own.
//!
//! Layout, by domain (nodes, config, tokens, clients, bundles, deployments and rollouts,
//! upgrade, console), each module using only those listed below it:
//! - `store`: the writer thread and the async face (`Store`); uses `apply`, `reader`, `snapshot`.
//! - `snapshot`: snapshot files (export, checked import).
//! - `apply/`: the write side. `mod.rs` has the transaction, the dispatch of each command to its
//!   domain file (`nodes`, `config`, `tokens`, `clients`, `bundles`, `deployments`, `rollouts`
//!   with `brake`, `upgrade`, `console`, `compact` for retention's `CompactHistory`), the failure helpers and the audit append;
//!   `requests` keeps the recent request ids and their first outcomes (exactly-once writes,
//!   `Command::Once`); `audit_text` says what each command's audit row reads; `tests` holds
//!   apply's tests.
//! - `reader/`: the read side. `mod.rs` has the connection pool; each domain file of the
//!   same name adds its queries to `Reader`, with the `FromRow` impl of each record it
//!   returns (`audit`: the log, its checkpoint, the full and incremental chain checks).
//! - shared below both sides, never using them: `token_check` (the token verdict),
//!   `rollout_rows` (a deployment's rollout row and the clients a selector targets, read alike
//!   by apply and the reader), `rows` (row mapping), `schema` (migrations, meta values),
//!   `codec`, `audit` (the hash chain), `rollout` (the pure rules of rollouts: phases,
//!   selectors, windows in the site's time zone, legal steps, the leader's next step; public),
//!   `rules` (pure checks and limits), `retention` (the retention policy's keys and
//!   durations, the results a compaction may remove, the format-9 version gate), `bundle_config`, `model` (the boundary types; rollouts'
//!   in `model/rollout.rs`), `error`.
//!
//! Where a change goes: a new command is a `model::Command` variant (and its format), an arm in
//! `apply::execute`, a step in `apply/<domain>.rs` and a line in `apply/audit_text.rs`; a new
//! query goes in `reader/<domain>.rs`; a new table or column is a migration in `schema.rs`
//! plus the domain's apply step and `FromRow` impl; a rule that apply and the reader must agree
//! on goes below both (`rules` when pure).

mod apply;
mod audit;
mod bundle_config;
mod codec;
mod error;
mod model;
mod reader;
mod retention;
pub mod rollout;
mod rollout_rows;
mod rows;
mod rules;
mod schema;
mod snapshot;
mod store;
mod token_check;

pub use apply::{
    MAX_CREATED_SKEW_SECS, MAX_DETAIL_BYTES, MAX_LABEL_CLIENTS, MAX_LABELS_PER_CLIENT,
    MAX_LABELS_PER_COMMAND, MAX_PASSWORD_HASH_BYTES, MAX_ROLL_REASON_BYTES, MAX_SIGNIN_LOCK_MS,
    MAX_STEP_REASON_BYTES, RENEWAL_INTERVAL_MS, REQUEST_IDS_KEPT, RETIRED_SERIAL_GRACE_MS,
    signin_account_key, signin_source_key,
};
pub use audit::{AuditFields, GENESIS_HASH as AUDIT_GENESIS_HASH, chain_hash as audit_hash};
pub use bundle_config::parse_config_payload;
pub use codec::{
    COMMAND_FORMAT, MAX_ENTRY_BYTES, batch_len, decode_batch, encode_batch, encoded_len,
};
pub use error::StorageError;
pub use model::{
    APPROVAL_ABOVE_KEY, Assignment, AuditChain, AuditCheck, AuditCheckpoint, AuditMark,
    AuditRecord, AuditVerify, BundleImport, BundleRecord, BundleType, CHECK_KEY_PREFIX,
    ChainedAuditRecord, ChannelRecord, ClientCertState, ClientProgress, ClientRecord, ClusterInfo,
    Command, ConfigEntry, ConsoleSession, ConsoleUser, DEPLOY_KEY_PREFIX, DeploymentProgress,
    DeploymentRecord, DeploymentResult, DeploymentStatus, Envelope, FailureLimit, Grant,
    HANDLER_KEY_PREFIX, InventoryChange, InventoryRecord, MAX_ROLE_SCOPES, NodeRecord, NodeRole,
    Outcome, PayloadHolding, PayloadRecord, PersonRole, PhaseCounts, Plan, PlanPhase, Progress,
    RejectCode, Rejection, Response, RoleRecord, RoleScope, RollRecord, RolloutRecord, RolloutSpec,
    RolloutState, RolloutStatus, RolloutStep, SITE_TIMEZONE_KEY, Scope, Selector, SessionProof,
    SignInLock, SignedBundle, TokenCheck, TokenKind, TokenRecord, TrustRecord, signed_only_key,
};
pub use reader::metrics::SiteCounts;
pub use reader::{ClientFilter, MAX_FAILING_SHOWN, Reader};
pub use retention::{
    FORMAT_9_VERSION, MAX_AUDIT_CUT, RETENTION_AUDIT_KEY, RETENTION_INVENTORY_KEY,
    RETENTION_KEY_PREFIX, RETENTION_KEYS, RETENTION_RESULTS_KEY, RetentionPolicy,
    check_retention_entry, parse_retention, version_at_least,
};
pub use rules::{
    ALL_CLIENTS, INVENTORY_CHANGES_PER_HOUR, INVENTORY_HISTORY_KEPT, MAX_FACTS_BYTES,
    MAX_NAME_BYTES, MAX_VALUE_BYTES, REPORT_MAX_FACTS, REPORT_MAX_FACTS_BYTES, changed_facts,
    check_report_size, effective_config,
};
pub use schema::SCHEMA_VERSION;
pub use snapshot::{SnapshotInfo, StateSummary};
pub use store::Store;
