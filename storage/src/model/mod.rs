//! Boundary types: the replicated command set and the records the queries return.
//!
//! Everything here crosses a boundary (the Raft log, snapshots, the API), so everything derives
//! Serialize/Deserialize. Changing `Command` incompatibly means bumping `COMMAND_FORMAT`.
//! The audit log's types are in `audit.rs`, rollouts' in `rollout.rs`; what is asked of a
//! command besides applying it (name, format, quiet, refusals from peers) in `command.rs`.

use serde::{Deserialize, Serialize};

mod audit;
mod command;
mod roles;
mod rollout;

pub use audit::{
    AuditChain, AuditCheck, AuditCheckpoint, AuditMark, AuditRecord, AuditVerify,
    ChainedAuditRecord,
};
pub use roles::{Grant, MAX_ROLE_SCOPES, PersonRole, RoleRecord, RoleScope};
pub use rollout::{
    APPROVAL_ABOVE_KEY, CHECK_KEY_PREFIX, ClientProgress, DEPLOY_KEY_PREFIX, FailureLimit,
    PhaseCounts, Plan, PlanPhase, Progress, RolloutRecord, RolloutSpec, RolloutState,
    RolloutStatus, RolloutStep, SIGNED_ONLY_WHY, SITE_TIMEZONE_KEY, Selector, signed_only_key,
};

/// One replicated command with the time and actor the proposer stamped on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Proposer's clock in milliseconds since the Unix epoch; `apply` never reads a clock.
    pub at_ms: i64,
    /// Who asked for the change (certificate subject, "cli", "node:3", ...); goes to the audit log.
    pub actor: String,
    pub command: Command,
}

/// The replicated state changes. Times and ids come in here or in the envelope, never from apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    InitCluster {
        cluster_id: String,
        name: String,
        ca_cert_pem: String,
    },
    /// Adds a node with a known id (init's first node, id 1). Bumps next_node_id past it.
    AddNode {
        id: u64,
        name: String,
        api_addr: String,
        peer_addr: String,
        version: String,
    },
    /// Checks a node token (kind Node, sha256 of the secret matches, not revoked, at_ms < expiry,
    /// uses left), consumes one use, allocates a fresh node id (never reused: a counter that only
    /// grows), inserts the node with role Joining. Response::NodeId.
    JoinNode {
        token_id: String,
        secret_sha256: String,
        name: String,
        api_addr: String,
        peer_addr: String,
        version: String,
    },
    UpdateNode {
        id: u64,
        api_addr: Option<String>,
        peer_addr: Option<String>,
        role: Option<NodeRole>,
        version: Option<String>,
    },
    /// Marks role Removed (row kept so the id is never reused).
    RemoveNode {
        id: u64,
    },
    /// Response::ConfigVersion(new version of that key).
    SetConfig {
        scope: Scope,
        key: String,
        value: String,
    },
    /// NotFound rejection if absent.
    DeleteConfig {
        scope: Scope,
        key: String,
    },
    CreateToken {
        id: String,
        kind: TokenKind,
        secret_sha256: String,
        expires_at_ms: i64,
        uses: Option<u32>,
        groups: Vec<String>,
    },
    RevokeToken {
        id: String,
    },
    // ---- format 2 ----
    /// Checks a client token like JoinNode does (kind Client), consumes one use, and records
    /// the client with the token's groups. The proposer picks the id and signs the certificate
    /// whose serial is recorded here. AlreadyExists if the id is taken.
    EnrollClient {
        token_id: String,
        secret_sha256: String,
        client_id: String,
        hostname: String,
        cert_serial: String,
    },
    /// Marks the client revoked and its certificate serial revoked; every node refuses it as
    /// soon as this applies. NotFound if there is no such client.
    RevokeClient {
        client_id: String,
    },
    /// Last-seen times gathered by one node since its previous flush (one command per node
    /// every few seconds, not one per sync). Unknown or revoked clients are skipped.
    TouchClients {
        node_id: u64,
        seen: Vec<(String, i64)>,
    },
    /// The latest facts of a client (a JSON object). A report whose SHA-256 equals the stored
    /// one changes nothing; otherwise the facts are replaced and a history row names the
    /// top-level facts that changed. Refused for unknown or revoked clients.
    ReportInventory {
        client_id: String,
        facts_json: String,
    },
    // ---- format 3 ----
    /// Pins the bundle trust (the JSON of a trust document, opaque here) at `outpost init`.
    /// AlreadyExists once a trust is pinned: rotation comes only through a trust bundle.
    SetBundleTrust {
        version: u64,
        trust_json: String,
    },
    /// Commits a bundle that the importing node verified and stored, in one command: the
    /// bundle, its payloads, the channel's new version and (trust bundles) the new trust.
    /// Re-checked here against the replicated floors, so two nodes importing at once cannot
    /// both win: Response::Unchanged for the very same bundle, Invalid for an older one.
    ImportBundle(Box<BundleImport>),
    /// Blobs a node now holds (verified in its store), for `bundle list`'s availability.
    BlobsHeld {
        node_id: u64,
        sha256: Vec<String>,
    },
    /// Assigns the artifact `name` (at `version`, or the newest imported one) to every client
    /// of `group` (`all` = every client). The proposer picks the id.
    CreateDeployment {
        id: String,
        artifact: String,
        version: Option<u64>,
        group: String,
    },
    /// A client's result for one deployment assigned to it; the latest result wins.
    ReportDeployment {
        deployment_id: String,
        client_id: String,
        status: DeploymentStatus,
        detail: String,
    },
    /// A client renewed its certificate: the new serial becomes its current one.
    RenewClientCert {
        client_id: String,
        cert_serial: String,
    },
    // ---- format 4 ----
    /// Commits a bundle from its exact signed bytes: `apply` verifies the signatures against
    /// the trust held in the state, the target, the times and the floors, and parses the
    /// `config` payloads it carries, so no proposer can commit an unsigned bundle. Replaces
    /// `ImportBundle`, which proposers no longer make (it stays decodable for old logs).
    /// Those checks are `outpost-bundles`' code: changing them is a command-format change
    /// (see `BundleImport`).
    ImportSignedBundle(Box<SignedBundle>),
    /// Revokes every admin certificate named `name` issued up to the envelope's time.
    RevokeAdmin {
        name: String,
    },
    /// A client renewed its certificate inside the renewal window: `new_serial` becomes its
    /// current one and `old_serial` stays valid for at most `RETIRED_SERIAL_GRACE_MS` (or
    /// until the new one is confirmed). At most one renewal per client per
    /// `RENEWAL_INTERVAL_MS`. Replaces `RenewClientCert`.
    RotateClientCert {
        client_id: String,
        old_serial: String,
        new_serial: String,
        /// SHA-256 of the new certificate's public key: an agent whose renewal was cut off
        /// after this committed asks again with the same key and gets the same serial.
        new_key_sha256: String,
    },
    /// The client used its renewed certificate: the retired serial ends now.
    ConfirmClientCert {
        client_id: String,
        serial: String,
    },
    // ---- format 5 ----
    /// `command` with the id of the request that carried it into the cluster, made where it
    /// entered (the API) and kept across forwarding retries and leader changes. `apply`
    /// remembers the most recent `REQUEST_IDS_KEPT` ids with their first outcome: a
    /// duplicate gets that outcome back and changes nothing, not even the audit log.
    Once {
        request_id: String,
        command: Box<Command>,
    },
    // ---- format 6 ----
    /// Written into the log offline by `outpost restore` and `outpost recover`, never proposed
    /// through the API: node `keep` (which must exist and not be removed) stays, every other
    /// node is marked removed, and with `ca_cert_pem` the cluster's CA certificate is replaced
    /// (a restore without the CA key makes a new CA). `reason` is `restore` or `recover`.
    ReformCluster {
        keep: u64,
        ca_cert_pem: Option<String>,
        reason: String,
    },
    /// The executable a node runs (its version and SHA-256), reported by the node itself.
    ReportBinary {
        node_id: u64,
        version: String,
        sha256: String,
    },
    /// Starts a rolling upgrade of every node to the `outpost-release` payload `sha256` of
    /// bundle `bundle_id` (which must hold it). Unchanged for the roll already running to the
    /// same release; refused while another roll runs.
    StartRoll {
        bundle_id: String,
        sha256: String,
    },
    /// The leader asks node `node` to switch to the roll's release (None: no node switching).
    RollNode {
        node: Option<u64>,
    },
    /// The roll ends: `reason` None = every node runs the release, Some = it stopped there.
    EndRoll {
        reason: Option<String>,
    },
    /// Assigns the `outpost-release` payload `release` (at `version`, or the newest imported
    /// one) to every client of `group`, as `CreateDeployment` does an artifact: agents replace
    /// their own binary with it. A command of its own rather than a wider `CreateDeployment`,
    /// so that a node that does not know release deployments stops here and asks for an
    /// upgrade instead of refusing what newer nodes accept (which would diverge the states).
    CreateReleaseDeployment {
        id: String,
        release: String,
        version: Option<u64>,
        group: String,
    },
    // the web console (format 6)
    /// Adds an operator account of the console, or replaces its password. `password_hash` is
    /// an Argon2id PHC string made by the proposer; it never appears in the audit log.
    SetConsoleUser {
        name: String,
        password_hash: String,
    },
    /// Removes an operator account and ends its sessions. NotFound if there is no such account.
    RemoveConsoleUser {
        name: String,
    },
    /// A one-time sign-in link for `user` (made by `outpost console login` on a node): the
    /// SHA-256 of its secret, usable once before `expires_at_ms`.
    CreateConsoleLogin {
        id: String,
        secret_sha256: String,
        user: String,
        expires_at_ms: i64,
    },
    /// Starts a console session for `user` (the cookie carries `id` and a secret whose SHA-256
    /// is kept), once `proof` checks out here: a login link is consumed (single use across the
    /// cluster), or the password hash the proposer verified is still the account's.
    StartConsoleSession {
        id: String,
        user: String,
        secret_sha256: String,
        expires_at_ms: i64,
        proof: SessionProof,
    },
    /// Ends a console session (sign-out, or an operator ending it). Ending an ended one is done.
    EndConsoleSession {
        id: String,
    },
    /// When sessions were last used on one node (gathered in memory, one command per node
    /// every minute at most), for the idle timeout. Unknown or ended sessions are skipped.
    TouchConsoleSessions {
        node_id: u64,
        seen: Vec<(String, i64)>,
    },
    // ---- format 7 ----
    /// Password sign-ins for `key` are refused on every node until `until_ms`: an account
    /// (`account:NAME`) or a source (`addr:IPV4`, `net:IPV6/64`) whose failures on one node
    /// crossed that node's threshold. The row keeps the greater end and counts the locks
    /// (`strikes`), from which the proposer makes the next lock longer; rows whose lock ended
    /// a day before are forgotten. Login links are never locked.
    LockSignIn {
        key: String,
        until_ms: i64,
    },
    // ---- format 8 ----
    /// Adds and removes operator labels on clients (at most `MAX_LABEL_CLIENTS` clients and
    /// `MAX_LABELS_PER_COMMAND` labels, names checked like groups). NotFound if a client is
    /// unknown. A label both added and removed is refused.
    LabelClients {
        clients: Vec<String>,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// A deployment with a selector, phases, a soak, a brake, windows and a start time.
    /// Plain deployments keep `CreateDeployment` / `CreateReleaseDeployment`, so that a
    /// mixed cluster keeps working as long as nobody asks for more.
    CreateRollout(Box<RolloutSpec>),
    /// One transition of a rollout (`reason` goes to the audit row); a plain deployment gets
    /// its default row first.
    RolloutStep {
        id: String,
        step: RolloutStep,
        reason: String,
    },
    /// A client's result of removing an aborted `--uninstall` deployment it had installed.
    ReportRemoval {
        deployment_id: String,
        client_id: String,
        ok: bool,
        detail: String,
    },
    // ---- format 9 ----
    /// Routine liveness that leaves no audit record: wraps only `TouchClients` or
    /// `TouchConsoleSessions` (anything else is refused, Invalid, and that refusal is
    /// audited). Applied like its inner command; accepted, it appends NO audit row. Liveness
    /// stays replicated (every node answers `client list`, doctor's "unseen" and rollouts
    /// alike); the Raft log it costs is compacted by snapshots. Older nodes cannot decode
    /// format 9, so proposers wrap touches only when every member runs 0.4.0 or newer
    /// (`Reader::members_at_least`); during a rolling upgrade touches stay plain and audited.
    Quiet(Box<Command>),
    /// Retention (the leader's pass, `retention.*` keys): audit records with seq <=
    /// `audit_through_seq` move out of the live table behind one `audit_checkpoints` row
    /// (0 = no audit cut), inventory history older than `inventory_before_ms` goes, and
    /// deployment results older than `results_before_ms` go where nothing depends on them
    /// (see `apply/compact.rs`). Refused when the audit cut passes the newest record, or
    /// does not pass the current checkpoint while nothing else is cut.
    CompactHistory {
        audit_through_seq: u64,
        inventory_before_ms: Option<i64>,
        results_before_ms: Option<i64>,
    },
    // roles (format 10)
    /// Sets the role and scope of the person `name` (their admin certificates and console
    /// account alike; see `model/roles.rs`). Refused when the name is not an id or the grant
    /// fails `Grant::check`. Root on a node (the local socket) is always an admin, so no
    /// change of roles can lock a site out.
    SetRole {
        name: String,
        grant: Grant,
    },
}

/// What lets a console session start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionProof {
    /// A one-time login link: its id and the SHA-256 of its secret.
    Link { id: String, secret_sha256: String },
    /// A password the proposer verified against the account's hash, named by the hash's
    /// SHA-256 (so a password changed in between refuses the session).
    Password { hash_sha256: String },
}

/// A lock on password sign-ins (`Command::LockSignIn`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInLock {
    pub key: String,
    pub until_ms: i64,
    /// How many locks this key got since its row was last forgotten.
    pub strikes: u32,
    pub updated_at_ms: i64,
}

/// An operator account of the console. Its password hash is read only to verify a sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleUser {
    pub name: String,
    pub password_hash: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

/// A console session; the secret's hash is what a cookie is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    pub id: String,
    pub user: String,
    pub secret_sha256: String,
    /// `link` or `password`.
    pub via: String,
    pub started_at_ms: i64,
    pub expires_at_ms: i64,
    /// The last use any node reported (`TouchConsoleSessions`), or the start.
    pub last_seen_ms: i64,
    pub ended_at_ms: Option<i64>,
}

/// A bundle as its signed bytes, with what `apply` cannot read itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBundle {
    /// The manifest bytes exactly as signed.
    pub manifest: Vec<u8>,
    /// The bundle's signature document (signatures.json) bytes.
    pub signatures: Vec<u8>,
    /// The bytes of every `config` payload, in manifest order (checked against the manifest's
    /// sha256 and size in `apply`).
    pub config_payloads: Vec<Vec<u8>>,
    /// The voters' median clock (unix seconds) as the importing node measured it; the cluster
    /// time floor is the highest of it and the newest accepted `created`.
    pub cluster_time: i64,
    /// The importing node, which holds every blob on commit.
    pub node_id: u64,
}

/// A verified bundle as the importing node commits it through the legacy `ImportBundle`: plain
/// values, which `apply` re-checks only against the replicated floors.
///
/// Storage does know the bundle format, though: for `ImportSignedBundle` (what proposers make
/// now) `apply/bundles.rs` parses the signed manifest and checks its signatures, target, trust
/// version and times with `outpost-bundles` (`verify_signed_head`, `check_target`,
/// `check_trust_version`, `check_expiry`). Every node must reach the same verdict on the same
/// log, so a change to those checks (or to the `Limits` they use) changes what `apply`
/// accepts: it is a command-format change, made like any other (a new `COMMAND_FORMAT` and
/// a new command, the old one still applied as before), never an edit in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleImport {
    pub id: String,
    pub manifest_sha256: String,
    pub bundle_type: BundleType,
    /// Content bundles only.
    pub channel: Option<String>,
    /// Channel version (content) or new trust version (trust).
    pub version: u64,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub expires: i64,
    /// Key ids of the valid signatures.
    pub signers: Vec<String>,
    /// The trust version the signatures were checked against; a rotation in between refuses.
    pub trust_version: u64,
    pub payloads: Vec<PayloadRecord>,
    /// Trust bundles: the new trust document (JSON).
    pub new_trust_json: Option<String>,
    /// Trust bundles: root-signed channel floor resets.
    pub channel_resets: Vec<(String, u64)>,
    /// Configuration changes carried by the bundle's `config` payloads, applied with it.
    pub config: Vec<(Scope, String, String)>,
    /// The importing node, which holds every blob on commit.
    pub node_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleType {
    Content,
    Trust,
}

/// One payload of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRecord {
    pub name: String,
    /// `artifact`, `config` or `outpost-release`.
    pub kind: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    Installed,
    Failed,
}

/// A committed bundle with its payloads and which nodes hold each blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    pub id: String,
    pub manifest_sha256: String,
    pub bundle_type: BundleType,
    pub channel: Option<String>,
    pub version: u64,
    pub created: i64,
    pub expires: i64,
    pub signers: Vec<String>,
    pub imported_at_ms: i64,
    pub imported_by: String,
    pub node_id: u64,
    pub payloads: Vec<PayloadHolding>,
}

/// A payload and the nodes that reported holding its blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadHolding {
    pub name: String,
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    pub held_by: Vec<u64>,
}

/// A channel's floor: the last accepted version and that bundle's manifest hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub name: String,
    pub version: u64,
    pub manifest_sha256: String,
    pub updated_at_ms: i64,
}

/// The pinned bundle trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRecord {
    pub version: u64,
    pub trust_json: String,
    pub updated_at_ms: i64,
}

/// An artifact assigned to a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: String,
    pub artifact: String,
    pub version: u64,
    pub kind: String,
    pub sha256: String,
    pub size: u64,
    pub bundle_id: String,
    pub group: String,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// One client's latest result for a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentResult {
    pub deployment_id: String,
    pub client_id: String,
    pub status: DeploymentStatus,
    pub detail: String,
    pub at_ms: i64,
    pub attempts: u64,
}

/// A deployment and where it stands: clients in its group now, and their results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentProgress {
    pub deployment: DeploymentRecord,
    /// Clients of the group (every client for `all`) that are not revoked.
    pub targeted: u64,
    pub installed: u64,
    pub failed: u64,
}

/// What a client is asked to install: a deployment and its own last result, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub deployment: DeploymentRecord,
    pub result: Option<DeploymentResult>,
}

/// Configuration keys that name a program agents run: set only by signed bundles.
pub const HANDLER_KEY_PREFIX: &str = "agent.handler.";

/// Where a configuration key lives: global < group < client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Global,
    Group(String),
    Client(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Node,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Joining,
    Learner,
    Voter,
    Removed,
}

/// What an accepted command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Done,
    NodeId(u64),
    ConfigVersion(u64),
    /// Nothing to change (the very same bundle imported again).
    Unchanged,
    /// A failure report that halted its rollout (format 8): the brake's reason.
    Halted {
        reason: String,
    },
    /// A `CompactHistory` (format 9): what it removed, and the chain's base afterwards (the
    /// newest checkpoint, or seq 0 and the genesis hash).
    Compacted {
        audit_removed: u64,
        checkpoint_seq: u64,
        checkpoint_hash: String,
        inventory_removed: u64,
        results_removed: u64,
    },
}

/// Why a command was refused. Deterministic: every node refuses the same command the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectCode,
    /// Names what was wrong and which item ("node 7 does not exist").
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectCode {
    NotFound,
    AlreadyExists,
    TokenInvalid,
    TokenExpired,
    TokenUsedUp,
    Invalid,
    NotInitialized,
}

/// The result of applying one envelope.
pub type Outcome = Result<Response, Rejection>;

/// An enrolled client (a managed machine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub id: String,
    pub hostname: String,
    pub groups: Vec<String>,
    pub cert_serial: String,
    pub enrolled_at_ms: i64,
    pub revoked: bool,
    pub last_seen: Option<i64>,
    pub last_seen_node: Option<u64>,
    /// The operator's labels (`LabelClients`), sorted.
    pub labels: Vec<String>,
    /// The health checks failing in the client's latest facts (`health.NAME.ok` false),
    /// sorted, at most `MAX_FAILING_SHOWN`.
    pub failing: Vec<String>,
}

/// What the pre-check of a token found (`Reader::check_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// `apply` would accept it now.
    Usable,
    /// No token of that id in this node's state (it may have been made a moment ago on
    /// another node).
    Unknown(Rejection),
    /// It exists and is refused: wrong kind or secret, revoked, expired or used up.
    Refused(Rejection),
}

/// Which certificates of a client are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertState {
    pub cert_serial: String,
    /// The serial a renewal retired, accepted until `prev_serial_until_ms`.
    pub prev_serial: Option<String>,
    pub prev_serial_until_ms: Option<i64>,
    pub renewed_at_ms: Option<i64>,
    pub revoked: bool,
    /// SHA-256 of the current certificate's public key, when it came from a renewal.
    pub cert_key_sha256: Option<String>,
}

impl ClientCertState {
    /// Whether a certificate with `serial` is accepted at `now_ms`.
    pub fn accepts(&self, serial: &str, now_ms: i64) -> bool {
        !self.revoked
            && (self.cert_serial == serial
                || (self.prev_serial.as_deref() == Some(serial)
                    && self
                        .prev_serial_until_ms
                        .is_some_and(|until| now_ms < until)))
    }
}

/// A client's latest facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRecord {
    pub client_id: String,
    pub facts: serde_json::Value,
    pub facts_sha256: String,
    pub updated_at_ms: i64,
}

/// One change of a client's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryChange {
    pub client_id: String,
    pub at_ms: i64,
    pub facts_sha256: String,
    /// Top-level facts that were added, removed or changed.
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub id: String,
    pub name: String,
    pub ca_cert_pem: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub name: String,
    pub api_addr: String,
    pub peer_addr: String,
    pub role: NodeRole,
    pub version: String,
    pub joined_at_ms: i64,
    /// SHA-256 of the executable the node last reported running ("" before it reported).
    #[serde(default)]
    pub binary_sha256: String,
}

/// The rolling upgrade (at most one at a time; the last one is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollRecord {
    pub bundle_id: String,
    /// The payload's name in its bundle.
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// `running`, `done` or `stopped`.
    pub state: String,
    /// The node asked to switch now.
    pub node: Option<u64>,
    /// Why it stopped.
    pub reason: String,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub scope: Scope,
    pub key: String,
    pub value: String,
    pub version: u64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

/// A token as stored; the secret's hash is deliberately not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    pub expires_at_ms: i64,
    /// None = unlimited.
    pub uses_left: Option<u32>,
    pub groups: Vec<String>,
    pub revoked: bool,
    pub created_at_ms: i64,
}

impl RejectCode {
    /// Stable snake_case name, used in audit outcomes.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::NotFound => "not_found",
            RejectCode::AlreadyExists => "already_exists",
            RejectCode::TokenInvalid => "token_invalid",
            RejectCode::TokenExpired => "token_expired",
            RejectCode::TokenUsedUp => "token_used_up",
            RejectCode::Invalid => "invalid",
            RejectCode::NotInitialized => "not_initialized",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

impl BundleType {
    pub fn as_str(self) -> &'static str {
        match self {
            BundleType::Content => "content",
            BundleType::Trust => "trust",
        }
    }

    pub fn parse(s: &str) -> Option<BundleType> {
        [BundleType::Content, BundleType::Trust]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Installed => "installed",
            DeploymentStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeploymentStatus> {
        [DeploymentStatus::Installed, DeploymentStatus::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl NodeRole {
    /// Stable text form stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Joining => "joining",
            NodeRole::Learner => "learner",
            NodeRole::Voter => "voter",
            NodeRole::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<NodeRole> {
        [
            NodeRole::Joining,
            NodeRole::Learner,
            NodeRole::Voter,
            NodeRole::Removed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl TokenKind {
    /// Stable text form stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Node => "node",
            TokenKind::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        [TokenKind::Node, TokenKind::Client]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl Scope {
    /// (scope_kind, scope_id) as stored in the config table; Global has an empty id.
    pub fn to_columns(&self) -> (&'static str, &str) {
        match self {
            Scope::Global => ("global", ""),
            Scope::Group(g) => ("group", g.as_str()),
            Scope::Client(c) => ("client", c.as_str()),
        }
    }

    pub fn from_columns(kind: &str, id: &str) -> Option<Scope> {
        match kind {
            "global" if id.is_empty() => Some(Scope::Global),
            "group" if !id.is_empty() => Some(Scope::Group(id.to_owned())),
            "client" if !id.is_empty() => Some(Scope::Client(id.to_owned())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Group(g) => write!(f, "group:{g}"),
            Scope::Client(c) => write!(f, "client:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for r in [
            NodeRole::Joining,
            NodeRole::Learner,
            NodeRole::Voter,
            NodeRole::Removed,
        ] {
            assert_eq!(NodeRole::parse(r.as_str()), Some(r));
        }
        assert_eq!(NodeRole::parse("leader"), None);
        for k in [TokenKind::Node, TokenKind::Client] {
            assert_eq!(TokenKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TokenKind::parse("admin"), None);
    }

    #[test]
    fn scope_columns_round_trip() {
        let cases = [
            (Scope::Global, Some(Scope::Global)),
            (Scope::Group("lab".into()), Some(Scope::Group("lab".into()))),
            (Scope::Client("c1".into()), Some(Scope::Client("c1".into()))),
        ];
        for (scope, want) in cases {
            let (k, id) = scope.to_columns();
            assert_eq!(Scope::from_columns(k, id), want);
        }
        assert_eq!(Scope::from_columns("global", "x"), None);
        assert_eq!(Scope::from_columns("group", ""), None);
        assert_eq!(Scope::from_columns("site", "a"), None);
    }
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;

    #[test]
    fn what_a_peer_may_forward_as_whom() {
        let touch = |node_id| Command::TouchClients {
            node_id,
            seen: vec![],
        };
        let link = Command::CreateConsoleLogin {
            id: "l".into(),
            secret_sha256: "0".repeat(64),
            user: "alice".into(),
            expires_at_ms: 1,
        };
        let session = Command::StartConsoleSession {
            id: "s".into(),
            user: "alice".into(),
            secret_sha256: "0".repeat(64),
            expires_at_ms: 1,
            proof: SessionProof::Password {
                hash_sha256: "0".repeat(64),
            },
        };
        let config = Command::SetConfig {
            scope: Scope::Global,
            key: "k".into(),
            value: "v".into(),
        };
        let lock = Command::LockSignIn {
            key: "account:alice".into(),
            until_ms: 1,
        };
        let rollout = |step| Command::RolloutStep {
            id: "d-1".into(),
            step,
            reason: String::new(),
        };
        let once = |c: &Command| Command::Once {
            request_id: "r".into(),
            command: Box::new(c.clone()),
        };
        // (command, actor as forwarded by node 7, accepted)
        let cases: Vec<(Command, &str, bool)> = vec![
            (touch(7), "node:7", true),
            (once(&touch(7)), "node:7", true),
            (touch(8), "node:7", false),
            (touch(7), "admin:ops", false),
            (touch(7), "node:8", false),
            (lock.clone(), "node:7", true),
            (once(&lock), "node:7", true),
            (lock.clone(), "console:alice", false),
            (
                Command::UpdateNode {
                    id: 3,
                    api_addr: None,
                    peer_addr: None,
                    role: None,
                    version: None,
                },
                "node:7:discovery",
                true,
            ),
            (Command::RemoveNode { id: 3 }, "auto-remove", true),
            (Command::RemoveNode { id: 3 }, "admin:ops", true),
            (Command::RollNode { node: Some(2) }, "node:7", true),
            (rollout(RolloutStep::OpenPhase(1)), "node:7", true),
            (rollout(RolloutStep::Finish), "node:7", true),
            (
                rollout(RolloutStep::Abort { uninstall: true }),
                "node:7",
                false,
            ),
            (rollout(RolloutStep::Approve), "node:7", false),
            (rollout(RolloutStep::Approve), "admin:ops", true),
            (config.clone(), "admin:ops", true),
            (once(&config), "console:alice", true),
            (once(&config), "local-admin", true),
            (config.clone(), "node:7", false),
            (once(&config), "node:70", false),
            (link.clone(), "admin:ops", true),
            (once(&link), "local-admin", true),
            (once(&link), "node:7", false),
            (once(&link), "console:alice", false),
            (once(&link), "client:c1", false),
            (once(&session), "console:alice", true),
            (once(&session), "console:bob", false),
            (once(&session), "node:7", false),
            (once(&session), "admin:ops", false),
            (
                Command::ReformCluster {
                    keep: 1,
                    ca_cert_pem: None,
                    reason: "r".into(),
                },
                "admin:ops",
                false,
            ),
        ];
        for (i, (command, actor, ok)) in cases.iter().enumerate() {
            let why = command.refused_from_peer(7, actor);
            assert_eq!(
                why.is_none(),
                *ok,
                "case {i}: {} as {actor}: {why:?}",
                command.kind()
            );
        }
    }
}
