//! `RaftNode`: one Outpost node's Raft, with its stores, transport, write batching, forwarding,
//! linearizable reads and membership upkeep. The only entry point the binary uses.
//!
//! Every write, local or forwarded, enters the batcher through `Inner::write`, which refuses a
//! command whose own batch would pass `MAX_ENTRY_BYTES`; the batcher closes a batch at
//! `max_batch` envelopes or before it would pass that cap. A batch forwarded by a follower is
//! admitted by the leader only through `admit_forwarded` (decoded, size- and format-checked,
//! actor and time re-stamped) and then fed to the leader's own batcher.
//!
//! A write that cannot go on fails with `WriteError::Stopped` and a `StopCause` (openraft's
//! error, the storage error that stopped applying, or the batcher gone), cloned to every write
//! of the batch. The membership upkeep logs an `UpkeepError` naming the step, the node and
//! the cause.

// openraft's errors are large (a storage error carries log ids and an `AnyError`) and ours keep
// them whole, so that `source()` hands out openraft's own error; like openraft, we accept the
// size: errors are the cold path, and a write that gets one has waited for Raft anyway.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use outpost_storage::{Command, Envelope, MAX_ENTRY_BYTES, NodeRole, Outcome, Reader, Store};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::codec::Bytes;
use crate::dead_members::{self, Watch};
use crate::failover::{self, FailoverStats, PeerWatch};
use crate::log_store::{LogStore, LogStoreError};
use crate::peer_limits::{PeerPortCounters, PeerPortStats};
use crate::state_machine::{Health, StateMachine, StoppedApplying};
use crate::transport::{
    self, MemberView, Network, PeerClients, PeerHandler, PeerRequest, PeerResponse, PeerTls,
};
use crate::types::{
    NodeId, PeerNode, Proposal, Raft, RaftFatal, RaftInitError, RaftMetrics, RaftReadIndexError,
    RaftWriteError,
};

/// Timing and sizing of one node's Raft. Defaults fit a LAN.
///
/// Elections. A follower that hears nothing from its leader campaigns after openraft's leader
/// lease (= `election_timeout_max_ms` after the last AppendEntries; until then it also refuses
/// its vote to any candidate) plus a random election timeout between the two bounds, checked on
/// a tick of 1.5 heartbeats: 450-675 ms with the defaults. That covers a leader lost with its
/// machine, cut off by a partition, or paused. A leader whose process dies (crash, kill -9,
/// stop) has its connections closed by its kernel, and its followers do not wait that long
/// (`failover.rs`): one heartbeat interval after the leader's connection to a follower closed,
/// if the leader stayed silent, the follower campaigns, which also ends its lease; of the
/// followers campaigning together openraft elects the highest id whose log is not behind, and
/// otherwise, once their ballots and answers are in, the candidate with the most up-to-date log
/// campaigns again and wins. With the defaults a survivor takes writes again 60-90 ms after a
/// kill -9 of the leader (`outpost bench failover`). The heartbeat sets the wait; the election
/// timeouts stay as they were, so a leader slowed by load is not deposed any sooner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) after this many applied entries.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower needs no snapshot.
    pub keep_entries_behind_snapshot: u64,
    /// Most voters; further nodes stay learners.
    pub max_voters: usize,
    /// How long a write waits for a leader before it fails.
    pub write_timeout_ms: u64,
    /// Most envelopes gathered into one Raft entry.
    pub max_batch: usize,
    /// The leader removes a member that has not answered for this long (`None`: never), under
    /// the guard of `dead_members::pick_removal`. Set from node.toml's
    /// `[cluster] auto_remove_after`, not from `[raft]`.
    #[serde(skip)]
    pub auto_remove_after: Option<Duration>,
}

impl RaftTuning {
    /// The waits of the fast failover (`failover.rs`): the leader's silence after its
    /// connection closed (a heartbeat interval), and how long a candidate waits for the
    /// others' ballots before openraft's election timeout takes over.
    fn failover_timing(&self) -> failover::Timing {
        failover::Timing {
            grace: Duration::from_millis(self.heartbeat_ms),
            give_up: Duration::from_millis(self.election_timeout_max_ms),
        }
    }
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_after_entries: 20_000,
            keep_entries_behind_snapshot: 1_000,
            max_voters: 5,
            write_timeout_ms: 10_000,
            max_batch: 1024,
            auto_remove_after: None,
        }
    }
}

pub struct NodeConfig {
    pub id: NodeId,
    /// Holds raft.db, state.db and snapshots/.
    pub data_dir: PathBuf,
    /// Already bound by the caller (so tests can bind port 0 and learn the port).
    pub peer_listener: TcpListener,
    pub tls: PeerTls,
    pub tuning: RaftTuning,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    #[error("state database: {0}")]
    State(#[from] outpost_storage::StorageError),
    #[error("snapshot directory {path}: {source}")]
    SnapshotDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blocking task that opens the stores did not finish (it panicked, or the runtime
    /// is shutting down).
    #[error("opening the stores: {0}")]
    Open(#[source] tokio::task::JoinError),
    #[error("invalid raft settings: {0}")]
    Config(#[from] openraft::ConfigError),
    /// openraft could not start (e.g. reading its stores back failed).
    #[error("raft: {0}")]
    Raft(#[source] RaftFatal),
    /// `initialize` was refused (e.g. this node already has a membership) or Raft stopped.
    #[error("raft: {0}")]
    Initialize(#[source] RaftInitError),
}

/// What `RaftNode::copy_state` wrote.
#[derive(Debug, Clone)]
pub struct StateCopy {
    pub info: outpost_storage::SnapshotInfo,
    /// The last entry applied in the copy.
    pub applied: Option<crate::types::LogId>,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyStateError {
    #[error("copying the state: {0}")]
    Storage(#[from] outpost_storage::StorageError),
    #[error("the copy's applied marker does not decode: {0}")]
    Marker(#[from] bincode::error::DecodeError),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("no leader within {0:?}: is a majority of the voters running and reachable?")]
    NoLeader(Duration),
    #[error("this node has stopped: {0}")]
    Stopped(#[source] StopCause),
    /// The command alone would make a Raft entry of `bytes` bytes (format header and batch
    /// length included), more than `outpost_storage::MAX_ENTRY_BYTES`. It never reaches Raft.
    #[error("a command of {bytes} bytes exceeds the {cap}-byte Raft entry cap")]
    TooLarge { bytes: usize, cap: usize },
}

/// Why a node takes no more writes, with the error behind it where there is one. Clone: one
/// failed batch answers every write it carried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StopCause {
    /// The write batcher has ended (the node is shutting down).
    #[error("write batcher stopped")]
    Batcher,
    /// The batcher ended while the write waited for its answer.
    #[error("write batcher dropped the request")]
    Dropped,
    /// This node stopped applying committed entries (e.g. it needs an upgrade).
    #[error("{0}")]
    Applying(#[source] StoppedApplying),
    /// openraft refused the write or has stopped.
    #[error("{0}")]
    Raft(#[source] RaftWriteError),
    /// The state machine answered a batch with another number of outcomes (a bug).
    #[error("batch of {sent} commands got {got} outcomes")]
    Outcomes { sent: usize, got: usize },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("no leader confirmed a read index within {0:?}")]
    NoLeader(Duration),
    #[error("this node did not catch up to the read index {index} within {timeout:?}")]
    Lagging { index: u64, timeout: Duration },
    #[error("this node has stopped: {0}")]
    Stopped(#[source] StoppedApplying),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    #[error("removing node {0} would leave no voter")]
    LastVoter(NodeId),
    #[error("membership change failed: {0}")]
    Raft(#[source] RaftWriteError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Why one round of the membership upkeep stopped early (logged; the next round retries).
#[derive(Debug, thiserror::Error)]
enum UpkeepError {
    #[error("reading the node records: {0}")]
    Nodes(#[source] outpost_storage::StorageError),
    #[error("reading the node records: {0}")]
    NodesTask(#[source] tokio::task::JoinError),
    #[error("removing node {node}: {source}")]
    Remove {
        node: NodeId,
        #[source]
        source: MembershipError,
    },
    #[error("{change} node {node}: {source}")]
    Change {
        change: Change,
        node: NodeId,
        #[source]
        source: RaftWriteError,
    },
    #[error("recording node {node}'s role: {source}")]
    RecordRole {
        node: NodeId,
        #[source]
        source: WriteError,
    },
    #[error("auto-removing node {node}: {source}")]
    AutoRemove {
        node: NodeId,
        #[source]
        source: WriteError,
    },
    #[error("auto-removing node {node}: {source}")]
    AutoRemoveRejected {
        node: NodeId,
        #[source]
        source: outpost_storage::Rejection,
    },
    #[error("recording node {node}'s role: {source}")]
    RoleRejected {
        node: NodeId,
        #[source]
        source: outpost_storage::Rejection,
    },
}

/// Why one read-index attempt failed (logged; the barrier retries until its deadline).
#[derive(Debug, thiserror::Error)]
enum ReadIndexError {
    #[error("no leader")]
    NoLeader,
    #[error("the address of leader {0} is unknown")]
    LeaderAddress(NodeId),
    #[error("{0}")]
    Local(#[source] RaftReadIndexError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// The leader's refusal: it crossed the wire as text, so a string is all there is.
    #[error("leader {leader}: {reason}")]
    Remote { leader: NodeId, reason: String },
}

/// The membership changes the upkeep makes through openraft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    AddLearner,
    SetAddress,
    Promote,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::AddLearner => "adding learner",
            Change::SetAddress => "updating the address of",
            Change::Promote => "promoting to voter",
        })
    }
}

/// A member as status shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub name: String,
    pub voter: bool,
    pub api_addr: String,
    pub peer_addr: String,
    /// Highest log index known replicated to this member (leader's view only).
    pub matched_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub state: String,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// Why this node stopped applying, if it did (e.g. it needs an upgrade).
    pub fatal: Option<String>,
    /// Campaigns this node started at once because its leader's peer connection closed
    /// (fast failover), since it started.
    #[serde(default)]
    pub fast_elections: u64,
    /// The term of the last of them: a leader whose `term` equals it won by that path.
    #[serde(default)]
    pub fast_election_term: Option<u64>,
    /// What the peer port refused since this node started (`peer_limits`).
    #[serde(default)]
    pub peer_port: PeerPortStats,
}

struct WriteReq {
    env: Envelope,
    /// `outpost_storage::encoded_len(&env)`, measured once when the write is queued.
    len: usize,
    reply: oneshot::Sender<Result<Outcome, WriteError>>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    store: Store,
    clients: Arc<PeerClients>,
    batcher: mpsc::Sender<WriteReq>,
    health: Arc<Health>,
    tuning: RaftTuning,
    /// What the transport saw of peers' connections and ballots (fast failover).
    watch: Arc<PeerWatch>,
    app: std::sync::RwLock<Option<Arc<dyn AppHandler>>>,
    /// Node ids the state records as removed (ids are never reused), read by the peer port
    /// for every connection and request; kept current by `track_removed`.
    removed: Arc<std::sync::RwLock<BTreeSet<NodeId>>>,
    /// The peer port's refusals.
    port: Arc<PeerPortCounters>,
    /// Fault injection for tests (`OUTPOST_FAULT_DROP_FORWARD_REPLIES=N`): this many
    /// forwarded batches are committed and then never answered, as if the reply were lost.
    drop_forward_replies: std::sync::atomic::AtomicU32,
}

/// How long one forwarding attempt waits for the leader's answer before it sends the same
/// bytes again (a lost reply; every API write carries a request id, so a retry of a batch
/// that did commit gets the first outcome back instead of applying twice).
const FORWARD_ATTEMPT: Duration = Duration::from_secs(3);

/// What an application request returns: its answer bytes, or a reason.
pub type AppFuture = std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// Answers application requests that other nodes send over the peer channel (the node uses
/// it for blob transfer and clock readings). The peer is authenticated: `from` is the node id
/// its certificate names.
pub trait AppHandler: Send + Sync + 'static {
    fn handle(&self, from: NodeId, request: Vec<u8>) -> AppFuture;
}

#[derive(Debug, thiserror::Error)]
pub enum AppCallError {
    #[error("node {0} is not in the membership")]
    UnknownNode(NodeId),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("node {node}: {reason}")]
    Remote { node: NodeId, reason: String },
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl RaftNode {
    /// Opens the stores under `cfg.data_dir`, starts Raft, the peer listener, the write batcher
    /// and the membership upkeep. A fresh node starts uninitialised and waits to be contacted
    /// by a leader (or `initialize`d as a one-node cluster).
    pub async fn start(cfg: NodeConfig) -> Result<RaftNode, NodeError> {
        let health = Arc::new(Health::default());
        // Opening the databases (migrations, quick_check) and cleaning the snapshot directory
        // block: they run on a blocking thread, never on the executor.
        let (log, store, sm, removed) = {
            let data_dir = cfg.data_dir.clone();
            let health = health.clone();
            tokio::task::spawn_blocking(move || open_stores(&data_dir, health))
                .await
                .map_err(NodeError::Open)??
        };
        let t = &cfg.tuning;
        let config = Config {
            cluster_name: "outpost".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_after_entries),
            max_in_snapshot_log_to_keep: t.keep_entries_behind_snapshot,
            snapshot_max_chunk_size: 1 << 20,
            install_snapshot_timeout: 2_000,
            max_payload_entries: 512,
            ..Default::default()
        }
        .validate()?;
        let clients = PeerClients::new(cfg.tls.clone());
        let (watch, closed) = PeerWatch::new();
        let network = Network {
            clients: clients.clone(),
            watch: watch.clone(),
        };
        let appended = log.appended_bytes();
        let raft = Raft::new(cfg.id, Arc::new(config), network, log, sm)
            .await
            .map_err(NodeError::Raft)?;
        let (batch_tx, batch_rx) = mpsc::channel(8192);
        let inner = Arc::new(Inner {
            id: cfg.id,
            raft,
            store,
            clients,
            batcher: batch_tx,
            health,
            tuning: cfg.tuning.clone(),
            watch: watch.clone(),
            app: std::sync::RwLock::new(None),
            removed: Arc::new(std::sync::RwLock::new(removed)),
            port: Arc::default(),
            drop_forward_replies: std::env::var("OUTPOST_FAULT_DROP_FORWARD_REPLIES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
                .into(),
        });
        let node = RaftNode {
            inner: inner.clone(),
            tasks: Arc::default(),
        };
        let handler = Handler {
            inner: inner.clone(),
        };
        node.spawn(transport::serve(
            cfg.peer_listener,
            cfg.tls,
            handler,
            watch.clone(),
            inner.port.clone(),
        ));
        node.spawn(track_removed(inner.clone()));
        node.spawn(watch_core(inner.raft.metrics()));
        node.spawn(compact_by_size(
            inner.raft.clone(),
            appended,
            snapshot_after_bytes(),
        ));
        node.spawn(failover::run(
            inner.raft.clone(),
            cfg.id,
            watch,
            closed,
            cfg.tuning.failover_timing(),
        ));
        node.spawn(batcher(inner.clone(), batch_rx));
        node.spawn(upkeep(inner));
        Ok(node)
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(fut);
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(h);
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Installs the handler for application requests from other nodes (until then they are
    /// answered with an error, which callers treat like any unavailable peer).
    pub fn set_app_handler(&self, handler: Arc<dyn AppHandler>) {
        *self.inner.app.write().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// Sends an application request to node `target` (addressed through the membership) over
    /// the shared peer connection and waits for its answer.
    pub async fn app_call(
        &self,
        target: NodeId,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, AppCallError> {
        let addr = self
            .inner
            .peer_addr_of(target)
            .ok_or(AppCallError::UnknownNode(target))?;
        match self
            .inner
            .clients
            .call(target, &addr, PeerRequest::App(Bytes(request)), timeout)
            .await?
        {
            PeerResponse::App(Ok(b)) => Ok(b.0),
            PeerResponse::App(Err(reason)) | PeerResponse::Failed(reason) => {
                Err(AppCallError::Remote {
                    node: target,
                    reason,
                })
            }
            other => Err(AppCallError::Remote {
                node: target,
                reason: format!("unexpected response {other:?}"),
            }),
        }
    }

    /// Makes this node a one-node cluster (used once, by `outpost init`).
    pub async fn initialize(&self, me: PeerNode) -> Result<(), NodeError> {
        let members = BTreeMap::from([(self.inner.id, me)]);
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(NodeError::Initialize)
    }

    pub async fn is_initialized(&self) -> bool {
        self.inner.raft.is_initialized().await.unwrap_or(false)
    }

    /// Blocking queries over the local state (run them on a blocking thread).
    pub fn reader(&self) -> Reader {
        self.inner.store.reader()
    }

    /// A consistent copy of the local replicated state at one applied entry, written to `dest`
    /// in storage's snapshot format (a backup's body), with the entry it holds.
    pub async fn copy_state(&self, dest: &Path) -> Result<StateCopy, CopyStateError> {
        let info = self.inner.store.export_snapshot(dest).await?;
        let applied = crate::offline::applied_log_id(info.applied_marker.as_deref())?;
        Ok(StateCopy { info, applied })
    }

    /// Commits one command through Raft from any node: batched with concurrent writes into one
    /// entry, forwarded to the leader when this node is not it. Returns once applied.
    pub async fn write(&self, env: Envelope) -> Result<Outcome, WriteError> {
        self.inner.write(env).await
    }

    /// Returns once this node's state reflects every write committed before the call
    /// (a read index confirmed by the leader with a quorum, then applied locally).
    pub async fn linearizable_barrier(&self, timeout: Duration) -> Result<(), ReadError> {
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        let index = loop {
            if let Some(f) = inner.health.fatal() {
                return Err(ReadError::Stopped(f));
            }
            let leader = inner.raft.metrics().borrow().current_leader;
            let attempt = match leader {
                Some(l) if l == inner.id => inner.read_index().await.map_err(ReadIndexError::Local),
                Some(l) => inner.remote_read_index(l, remaining(deadline)).await,
                None => Err(ReadIndexError::NoLeader),
            };
            match attempt {
                Ok(i) => break i,
                Err(why) if Instant::now() >= deadline => {
                    tracing::debug!(%why, "read index not confirmed");
                    return Err(ReadError::NoLeader(timeout));
                }
                Err(_) => inner.wait_leader_change(deadline).await,
            }
        };
        inner
            .raft
            .wait(Some(remaining(deadline)))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|_| ReadError::Lagging { index, timeout })?;
        Ok(())
    }

    /// Waits until some node is leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.inner.raft.metrics().borrow().current_leader {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.inner.wait_leader_change(deadline).await;
        }
    }

    pub fn status(&self) -> NodeStatus {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow().clone();
        let fatal = self
            .inner
            .health
            .fatal()
            .map(|f| f.to_string())
            .or_else(|| core_ended(&rx).then(|| CORE_ENDED.to_string()));
        let mut status = status_of(&m, fatal, self.inner.watch.stats());
        status.peer_port = self.inner.port.stats();
        status
    }

    /// Subscribe to Raft metrics changes (leader, applied index, membership).
    pub fn metrics(&self) -> tokio::sync::watch::Receiver<RaftMetrics> {
        self.inner.raft.metrics()
    }

    /// Removes a node from the Raft membership (the leader does it; followers forward the
    /// intent by committing `RemoveNode`, which the leader's upkeep then applies).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MembershipError> {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.len() == 1 && voters.contains(&id) {
            return Err(MembershipError::LastVoter(id));
        }
        if m.current_leader == Some(self.inner.id) {
            self.inner.remove_from_membership(id).await?;
        }
        Ok(())
    }

    /// Stops Raft and every task of this node. Durable state is already on disk.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        for h in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }
}

/// Opens raft.db and state.db under `data_dir` and the snapshot directory (removing leftovers
/// of interrupted transfers). Blocking: call it on a blocking thread.
#[allow(clippy::type_complexity)]
fn open_stores(
    data_dir: &Path,
    health: Arc<Health>,
) -> Result<(LogStore, Store, StateMachine, BTreeSet<NodeId>), NodeError> {
    let log = LogStore::open(&data_dir.join("raft.db"))?;
    let store = Store::open(&data_dir.join("state.db"))?;
    let removed = removed_ids(&store.reader().nodes()?);
    let snap_dir = data_dir.join("snapshots");
    let sm = StateMachine::new(store.clone(), &snap_dir, health).map_err(|source| {
        NodeError::SnapshotDir {
            path: snap_dir.clone(),
            source,
        }
    })?;
    Ok((log, store, sm, removed))
}

/// What `status` says (and `/healthz` answers) when the Raft core's task ended without
/// reporting why: it panicked.
const CORE_ENDED: &str = "the Raft core stopped (its task ended: it panicked); this node takes \
     no writes and casts no votes until it is restarted, or recovered with `outpost recover \
     --force-new-cluster`";

/// The Raft core's task ended: openraft drops the metrics sender with it, and a panic leaves
/// the last metrics saying it runs.
fn core_ended(rx: &tokio::sync::watch::Receiver<RaftMetrics>) -> bool {
    rx.has_changed().is_err()
}

/// Logs once why the Raft core stopped, when it does (a panic, or openraft's fatal error).
async fn watch_core(mut rx: tokio::sync::watch::Receiver<RaftMetrics>) {
    loop {
        if let Err(fatal) = &rx.borrow_and_update().running_state {
            if !matches!(fatal, openraft::error::Fatal::Stopped) {
                tracing::error!(error = %fatal, "the Raft core stopped; /healthz fails until this node is restarted or recovered");
            }
            return;
        }
        if rx.changed().await.is_err() {
            tracing::error!("{CORE_ENDED}");
            return;
        }
    }
}

/// A snapshot is built (and the log purged behind it) once the entries appended since the
/// last one pass this many bytes, whatever their count: openraft's policy counts entries only,
/// and 20,000 entries of up to `MAX_ENTRY_BYTES` each would be gigabytes of raft.db.
pub const SNAPSHOT_AFTER_BYTES: u64 = 64 << 20;

/// `SNAPSHOT_AFTER_BYTES`, or `OUTPOST_SNAPSHOT_AFTER_BYTES` when set (tests), at least 1 MiB.
fn snapshot_after_bytes() -> u64 {
    std::env::var("OUTPOST_SNAPSHOT_AFTER_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|v| v.max(1 << 20))
        .unwrap_or(SNAPSHOT_AFTER_BYTES)
}

/// Whether the log has grown enough since the last snapshot to build one (pure).
fn due_by_size(appended: u64, at_last_snapshot: u64, limit: u64, asked: bool) -> bool {
    !asked && appended.saturating_sub(at_last_snapshot) >= limit
}

/// Compaction by size: once the bytes appended since the last snapshot pass `limit`, asks
/// openraft for a snapshot, and when it is built purges the log up to it (not keeping
/// `keep_entries_behind_snapshot` entries: those are what made the log big; a follower that
/// needs them gets the snapshot).
async fn compact_by_size(raft: Raft, appended: Arc<std::sync::atomic::AtomicU64>, limit: u64) {
    use std::sync::atomic::Ordering;
    let mut metrics = raft.metrics();
    let mut snapshot = metrics.borrow().snapshot;
    let mut base = appended.load(Ordering::Relaxed);
    // When a snapshot was asked for and not built yet (asked again after a minute: openraft
    // skips a trigger while it builds one).
    let mut asked: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if core_ended(&metrics) {
            return;
        }
        let now = metrics.borrow_and_update().snapshot;
        if now != snapshot {
            snapshot = now;
            base = appended.load(Ordering::Relaxed);
            if asked.is_some()
                && let Some(s) = now
            {
                asked = None;
                if let Err(e) = raft.trigger().purge_log(s.index).await {
                    tracing::debug!(error = %e, "purging the log after a snapshot by size");
                }
            }
        }
        let total = appended.load(Ordering::Relaxed);
        let waiting = asked.is_some_and(|t| t.elapsed() < Duration::from_secs(60));
        if due_by_size(total, base, limit, waiting) {
            tracing::info!(
                bytes = total - base,
                limit,
                "the log passed its size since the last snapshot; building one"
            );
            asked = Some(Instant::now());
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::debug!(error = %e, "asking for a snapshot by size");
                return;
            }
        }
    }
}

/// The ids the state records as removed.
fn removed_ids(nodes: &[outpost_storage::NodeRecord]) -> BTreeSet<NodeId> {
    nodes
        .iter()
        .filter(|n| n.role == NodeRole::Removed)
        .map(|n| n.id)
        .collect()
}

/// Keeps `Inner::removed` current: reads the nodes table again whenever the applied index
/// moved, at most every 50 ms (a removal is refused within that of being applied). The
/// peer port reads the set from memory, never from SQLite.
async fn track_removed(inner: Arc<Inner>) {
    let mut metrics = inner.raft.metrics();
    let mut seen = None;
    loop {
        let applied = metrics.borrow_and_update().last_applied;
        if applied != seen {
            seen = applied;
            let reader = inner.store.reader();
            match tokio::task::spawn_blocking(move || reader.nodes()).await {
                Ok(Ok(nodes)) => {
                    let ids = removed_ids(&nodes);
                    let mut set = inner.removed.write().unwrap_or_else(|p| p.into_inner());
                    if *set != ids {
                        tracing::info!(removed = ?ids, "node ids refused on the peer port");
                        *set = ids;
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "reading the removed nodes"),
                Err(e) => tracing::warn!(error = %e, "reading the removed nodes: task"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn status_of(m: &RaftMetrics, fatal: Option<String>, failover: FailoverStats) -> NodeStatus {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| MemberStatus {
            id: *id,
            name: node.name.clone(),
            voter: voters.contains(id),
            api_addr: node.api_addr.clone(),
            peer_addr: node.peer_addr.clone(),
            matched_index: m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).copied().flatten())
                .map(|l| l.index),
        })
        .collect();
    let fatal = fatal.or_else(|| m.running_state.as_ref().err().map(|e| e.to_string()));
    NodeStatus {
        node_id: m.id,
        leader_id: m.current_leader,
        term: m.current_term,
        state: format!("{:?}", m.state),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index),
        members,
        fatal,
        fast_elections: failover.campaigns,
        fast_election_term: failover.last_term,
        peer_port: PeerPortStats::default(),
    }
}

impl Inner {
    /// Every write (local or forwarded) enters the batcher here; a command too large for an
    /// entry of its own is refused before it is queued.
    async fn write(&self, env: Envelope) -> Result<Outcome, WriteError> {
        let len = admit_size(&env)?;
        let (reply, rx) = oneshot::channel();
        self.batcher
            .send(WriteReq { env, len, reply })
            .await
            .map_err(|_| WriteError::Stopped(StopCause::Batcher))?;
        rx.await
            .map_err(|_| WriteError::Stopped(StopCause::Dropped))?
    }

    async fn wait_leader_change(&self, deadline: Instant) {
        let mut rx = self.raft.metrics();
        let before = rx.borrow().current_leader;
        let wait = remaining(deadline).min(Duration::from_millis(200));
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.current_leader != before)).await;
    }

    /// Submits one batch, from this node, until it commits or the deadline passes.
    async fn submit(&self, batch: &[Envelope]) -> Result<Vec<Outcome>, WriteError> {
        let timeout = Duration::from_millis(self.tuning.write_timeout_ms);
        let deadline = Instant::now() + timeout;
        let bytes = outpost_storage::encode_batch(batch);
        loop {
            if let Some(f) = self.health.fatal() {
                return Err(WriteError::Stopped(StopCause::Applying(f)));
            }
            let leader = self.raft.metrics().borrow().current_leader;
            match leader {
                Some(l) if l == self.id => match self.propose(&bytes, deadline).await {
                    Proposed::Applied(outcomes) => return Ok(outcomes),
                    Proposed::NotLeader => {}
                    Proposed::Failed(e) => return Err(WriteError::Stopped(StopCause::Raft(e))),
                },
                Some(l) => {
                    let addr = self.peer_addr_of(l);
                    if let Some(addr) = addr {
                        let req = PeerRequest::Forward(Proposal(bytes.clone()));
                        let attempt = remaining(deadline).min(FORWARD_ATTEMPT);
                        match self.clients.call(l, &addr, req, attempt).await {
                            Ok(PeerResponse::Forward(Ok(outcomes))) => return Ok(outcomes),
                            Ok(PeerResponse::Forward(Err(why))) => {
                                tracing::debug!(leader = l, %why, "forward refused")
                            }
                            Ok(other) => {
                                tracing::warn!(leader = l, ?other, "unexpected forward response")
                            }
                            Err(e) => tracing::debug!(leader = l, error = %e, "forward failed"),
                        }
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(WriteError::NoLeader(timeout));
            }
            self.wait_leader_change(deadline).await;
        }
    }

    /// Proposes `bytes` as this node's leader and waits for its outcomes, but no longer than
    /// this node stays leader of the term it proposed in, nor past `deadline`. openraft 0.9
    /// answers a proposal only when its entry is applied here or deleted as a conflict; when
    /// a deposed leader's uncommitted entries are instead covered by an installed snapshot,
    /// their callers are never answered. Waiting on that would hold a batcher slot forever
    /// (two such waits stop every write through this node). The caller then sends the same
    /// bytes to the new leader: every API write carries a request id, so a batch that did
    /// commit gets its first outcomes back instead of applying twice.
    async fn propose(&self, bytes: &[u8], deadline: Instant) -> Proposed {
        let mut metrics = self.raft.metrics();
        let (id, term) = (self.id, metrics.borrow().current_term);
        let deposed = async {
            let changed =
                metrics.wait_for(|m| m.current_leader != Some(id) || m.current_term != term);
            if changed.await.is_err() {
                // Raft has stopped: `client_write` answers that itself.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            written = self.raft.client_write(Proposal(bytes.to_vec())) => match written {
                Ok(resp) => Proposed::Applied(resp.data.0),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Proposed::NotLeader,
                Err(e) => Proposed::Failed(e),
            },
            () = deposed => {
                tracing::debug!(term, "deposed while a proposal waited; sending it to the next leader");
                Proposed::NotLeader
            }
            () = tokio::time::sleep_until(deadline.into()) => Proposed::NotLeader,
        }
    }

    fn peer_addr_of(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.peer_addr.clone())
    }

    async fn read_index(&self) -> Result<u64, RaftReadIndexError> {
        let (read, _applied) = self.raft.get_read_log_id().await?;
        Ok(read.map(|l| l.index).unwrap_or(0))
    }

    async fn remote_read_index(
        &self,
        leader: NodeId,
        timeout: Duration,
    ) -> Result<u64, ReadIndexError> {
        let addr = self
            .peer_addr_of(leader)
            .ok_or(ReadIndexError::LeaderAddress(leader))?;
        match self
            .clients
            .call(leader, &addr, PeerRequest::ReadIndex, timeout)
            .await?
        {
            PeerResponse::ReadIndex(r) => {
                r.map_err(|reason| ReadIndexError::Remote { leader, reason })
            }
            other => Err(ReadIndexError::Remote {
                leader,
                reason: format!("unexpected response {other:?}"),
            }),
        }
    }

    async fn remove_from_membership(&self, id: NodeId) -> Result<(), MembershipError> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(MembershipError::NotMember(id));
        }
        if membership.voter_ids().any(|v| v == id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
                .await
                .map_err(MembershipError::Raft)?;
        }
        self.raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(MembershipError::Raft)?;
        Ok(())
    }
}

/// How one proposal of this node's, as leader, ended.
enum Proposed {
    Applied(Vec<Outcome>),
    /// No longer leader (or the deadline passed): the batch may or may not commit.
    NotLeader,
    Failed(RaftWriteError),
}

/// The encoded size of `env` in a batch, or `TooLarge` when a batch of it alone would pass
/// `MAX_ENTRY_BYTES` (so it could never be committed).
fn admit_size(env: &Envelope) -> Result<usize, WriteError> {
    let len = outpost_storage::encoded_len(env);
    let alone = outpost_storage::batch_len(1, len);
    if alone > MAX_ENTRY_BYTES {
        return Err(WriteError::TooLarge {
            bytes: alone,
            cap: MAX_ENTRY_BYTES,
        });
    }
    Ok(len)
}

/// One batch being packed: how many envelopes and their encoded bytes so far.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Packer {
    count: usize,
    envelopes: usize,
    max_batch: usize,
    cap: usize,
}

impl Packer {
    fn new(max_batch: usize, cap: usize) -> Packer {
        Packer {
            count: 0,
            envelopes: 0,
            max_batch: max_batch.max(1),
            cap,
        }
    }

    fn is_full(&self) -> bool {
        self.count >= self.max_batch
    }

    /// Adds an envelope of `len` encoded bytes if the batch stays within `max_batch`
    /// envelopes and `encode_batch` of it stays within the cap. The first envelope is always
    /// taken (`admit_size` has checked it fits alone).
    fn try_add(&mut self, len: usize) -> bool {
        let next = outpost_storage::batch_len(self.count + 1, self.envelopes.saturating_add(len));
        if self.count > 0 && (self.is_full() || next > self.cap) {
            return false;
        }
        self.count += 1;
        self.envelopes = self.envelopes.saturating_add(len);
        true
    }
}

/// Gathers concurrent writes into one Raft entry each round (group commit): while one batch
/// is being committed, the next fills up. A few batches may be in flight at once. A batch
/// closes at `max_batch` envelopes or before its encoding would pass `MAX_ENTRY_BYTES`; the
/// write that did not fit opens the next batch.
async fn batcher(inner: Arc<Inner>, mut rx: mpsc::Receiver<WriteReq>) {
    let in_flight = Arc::new(Semaphore::new(2));
    let mut held: Option<WriteReq> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut packer = Packer::new(inner.tuning.max_batch, MAX_ENTRY_BYTES);
        packer.try_add(first.len);
        let mut reqs = vec![first];
        while !packer.is_full() {
            match rx.try_recv() {
                Ok(r) if packer.try_add(r.len) => reqs.push(r),
                Ok(r) => {
                    held = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let (envs, replies): (Vec<Envelope>, Vec<_>) =
                reqs.into_iter().map(|r| (r.env, r.reply)).unzip();
            match inner.submit(&envs).await {
                Ok(outcomes) if outcomes.len() == replies.len() => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(outcomes) => {
                    let e = WriteError::Stopped(StopCause::Outcomes {
                        sent: replies.len(),
                        got: outcomes.len(),
                    });
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Leader-side membership upkeep, every 300 ms: with `auto_remove_after` set, a dead member
/// is removed first (`auto_remove`, at most one a round); nodes recorded in the state (by
/// join) become learners; caught-up learners become voters up to `max_voters`; nodes marked
/// removed leave; changed addresses are updated; the state's node roles follow the membership.
async fn upkeep(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = Watch::default();
    loop {
        tick.tick().await;
        // Bounded for the reason `Inner::propose` is: a membership change proposed by a
        // leader deposed before it commits may never be answered. The next round looks again.
        match tokio::time::timeout(UPKEEP_ROUND, upkeep_once(&inner, &mut watch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "membership upkeep"),
            Err(_) => tracing::warn!(
                "a membership upkeep round got no answer within {UPKEEP_ROUND:?}; trying again"
            ),
        }
    }
}

/// How long one round of membership upkeep may wait for its changes to commit.
const UPKEEP_ROUND: Duration = Duration::from_secs(30);

async fn upkeep_once(inner: &Arc<Inner>, watch: &mut Watch) -> Result<(), UpkeepError> {
    let m = inner.raft.metrics().borrow().clone();
    if m.current_leader != Some(inner.id) || m.state != ServerState::Leader {
        watch.clear();
        return Ok(());
    }
    // A new leader acts on the state only once it has applied its own first entry (and so
    // every entry before it): it never re-adds members from a state about to change, e.g.
    // right after `outpost recover` or `restore` reformed the cluster.
    if m.last_applied.map(|l| l.leader_id.term) != Some(m.current_term) {
        return Ok(());
    }
    let reader = inner.store.reader();
    let nodes = tokio::task::spawn_blocking(move || reader.nodes())
        .await
        .map_err(UpkeepError::NodesTask)?
        .map_err(UpkeepError::Nodes)?;
    if let Some(after) = inner.tuning.auto_remove_after {
        // While a member marked removed is still in the membership, the step below finishes
        // that removal first: one change at a time, and no second `RemoveNode` for it.
        let membership = m.membership_config.membership();
        let removing = nodes
            .iter()
            .any(|r| r.role == NodeRole::Removed && membership.get_node(&r.id).is_some());
        if !removing && auto_remove(inner, watch, &m, after).await? {
            return Ok(());
        }
    }
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    for rec in &nodes {
        let wanted = PeerNode {
            name: rec.name.clone(),
            api_addr: rec.api_addr.clone(),
            peer_addr: rec.peer_addr.clone(),
        };
        let current = membership.get_node(&rec.id);
        match (rec.role, current) {
            (NodeRole::Removed, Some(_)) => {
                if rec.id == inner.id && voters.len() > 1 {
                    // The leader removing itself: hand over first by removing it as voter.
                    tracing::info!(node = rec.id, "leader leaves the membership");
                }
                inner
                    .remove_from_membership(rec.id)
                    .await
                    .map_err(|source| UpkeepError::Remove {
                        node: rec.id,
                        source,
                    })?;
            }
            (NodeRole::Removed, None) => {}
            (_, None) => {
                tracing::info!(node = rec.id, addr = %rec.peer_addr, "adding joined node as learner");
                inner
                    .raft
                    .add_learner(rec.id, wanted, false)
                    .await
                    .map_err(|source| UpkeepError::Change {
                        change: Change::AddLearner,
                        node: rec.id,
                        source,
                    })?;
            }
            (_, Some(cur)) if *cur != wanted => {
                tracing::info!(node = rec.id, addr = %rec.peer_addr, "updating node address in membership");
                inner
                    .raft
                    .change_membership(
                        ChangeMembers::SetNodes(BTreeMap::from([(rec.id, wanted)])),
                        true,
                    )
                    .await
                    .map_err(|source| UpkeepError::Change {
                        change: Change::SetAddress,
                        node: rec.id,
                        source,
                    })?;
            }
            (_, Some(_)) => {
                let is_voter = voters.contains(&rec.id);
                if !is_voter && voters.len() < inner.tuning.max_voters {
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&rec.id).copied().flatten());
                    let caught_up = matched.is_some_and(|l| l.index + 100 >= last);
                    if caught_up {
                        tracing::info!(node = rec.id, "promoting caught-up learner to voter");
                        inner
                            .raft
                            .change_membership(
                                ChangeMembers::AddVoterIds(BTreeSet::from([rec.id])),
                                true,
                            )
                            .await
                            .map_err(|source| UpkeepError::Change {
                                change: Change::Promote,
                                node: rec.id,
                                source,
                            })?;
                        continue;
                    }
                }
                let role = if is_voter {
                    NodeRole::Voter
                } else {
                    NodeRole::Learner
                };
                if rec.role != role {
                    let env = Envelope {
                        at_ms: now_ms(),
                        actor: format!("node:{}", inner.id),
                        command: Command::UpdateNode {
                            id: rec.id,
                            api_addr: None,
                            peer_addr: None,
                            role: Some(role),
                            version: None,
                        },
                    };
                    inner
                        .write(env)
                        .await
                        .map_err(|source| UpkeepError::RecordRole {
                            node: rec.id,
                            source,
                        })?
                        .map_err(|source| UpkeepError::RoleRejected {
                            node: rec.id,
                            source,
                        })?;
                }
            }
        }
    }
    Ok(())
}

/// The actor of the commands the dead-member upkeep proposes (audited as such).
const AUTO_REMOVE_ACTOR: &str = "auto-remove";

/// The dead-member step of the upkeep (leader only): picks at most one member to remove
/// (`dead_members::pick_removal`), commits `RemoveNode` for it as `auto-remove` (so the state
/// marks it removed and the audit says who did it), then takes it out of the membership, the
/// same path as `outpost node remove`. Returns whether it removed one.
async fn auto_remove(
    inner: &Arc<Inner>,
    watch: &mut Watch,
    m: &RaftMetrics,
    after: Duration,
) -> Result<bool, UpkeepError> {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: Vec<(NodeId, bool)> = membership
        .nodes()
        .map(|(id, _)| (*id, voters.contains(id)))
        .collect();
    let silences = watch.silences(m.current_term, Instant::now(), &members, |id| {
        inner.clients.last_answer(id)
    });
    let Some(gone) = dead_members::pick_removal(
        inner.id,
        &silences,
        after,
        dead_members::REACHABLE_WITHIN.min(after),
    ) else {
        return Ok(false);
    };
    let env = Envelope {
        at_ms: now_ms(),
        actor: AUTO_REMOVE_ACTOR.to_string(),
        command: Command::RemoveNode { id: gone.id },
    };
    inner
        .write(env)
        .await
        .map_err(|source| UpkeepError::AutoRemove {
            node: gone.id,
            source,
        })?
        .map_err(|source| UpkeepError::AutoRemoveRejected {
            node: gone.id,
            source,
        })?;
    // Logged once the removal is committed: a failed round is retried without a new warning.
    tracing::warn!(
        node = gone.id,
        voter = gone.voter,
        unreachable_for = %humantime::format_duration(whole_seconds(gone.silent_for)),
        auto_remove_after = %humantime::format_duration(after),
        "removed a member that has not answered for auto_remove_after"
    );
    inner
        .remove_from_membership(gone.id)
        .await
        .map_err(|source| UpkeepError::Remove {
            node: gone.id,
            source,
        })?;
    Ok(true)
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Milliseconds since the Unix epoch: the proposer stamps this into commands.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Longest part of a forwarded envelope's actor text that the leader keeps.
const MAX_FORWARDED_ACTOR_BYTES: usize = 200;

/// The leader's admission of a batch that node `from` forwarded: the forwarder's certificate
/// proves which node it is, not who acted or when, and its bytes are not trusted to decode.
/// Bytes over `MAX_ENTRY_BYTES`, undecodable, or in a newer command format than this build's are
/// refused with the reason (nothing is proposed), as is a batch carrying a command that peers
/// may not forward, or not as the actor it names (`Command::refused_from_peer`). Every envelope is re-stamped: actor
/// `"{actor} via node:{from}"` (the original text cut to 200 bytes at a char boundary), time
/// `now_ms` (the leader's clock).
fn admit_forwarded(from: NodeId, bytes: &[u8], now_ms: i64) -> Result<Vec<Envelope>, String> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(format!(
            "forwarded batch from node {from}: {} bytes exceed the {MAX_ENTRY_BYTES}-byte Raft entry cap",
            bytes.len()
        ));
    }
    let envs = outpost_storage::decode_batch(bytes)
        .map_err(|e| format!("forwarded batch from node {from}: {e}"))?;
    envs.into_iter()
        .map(|mut env| {
            if let Some(why) = env.command.refused_from_peer(from, &env.actor) {
                return Err(format!("forwarded batch from node {from}: {why}"));
            }
            env.actor = format!(
                "{} via node:{from}",
                truncate_at_char(&env.actor, MAX_FORWARDED_ACTOR_BYTES)
            );
            env.at_ms = now_ms;
            Ok(env)
        })
        .collect()
}

/// Sends `bytes` (an encoded batch) to node `target` at `addr` as a forwarded write, over a
/// peer connection made with `tls` (the sender's node identity), and returns what it answered:
/// the outcomes, or its refusal as text. A test and diagnostics helper like
/// `transport::ping`: a node's own writes go through `RaftNode::write`.
pub async fn forward_batch(
    tls: PeerTls,
    target: NodeId,
    addr: &str,
    bytes: Vec<u8>,
    timeout: Duration,
) -> Result<Result<Vec<Outcome>, String>, transport::TransportError> {
    let clients = PeerClients::new(tls);
    match clients
        .call(target, addr, PeerRequest::Forward(Proposal(bytes)), timeout)
        .await?
    {
        PeerResponse::Forward(r) => Ok(r),
        other => Err(transport::TransportError::Unexpected(
            target,
            format!("{other:?}"),
        )),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Clone)]
struct Handler {
    inner: Arc<Inner>,
}

impl PeerHandler for Handler {
    fn member_view(&self, from: NodeId) -> MemberView {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        MemberView {
            has_membership: membership.nodes().next().is_some(),
            is_member: membership.get_node(&from).is_some(),
            removed: self
                .inner
                .removed
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&from),
        }
    }

    async fn handle(&self, from: NodeId, req: PeerRequest) -> PeerResponse {
        let raft = &self.inner.raft;
        match req {
            PeerRequest::AppendEntries(r) => {
                PeerResponse::AppendEntries(raft.append_entries(r).await)
            }
            PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
            PeerRequest::InstallSnapshot(r) => {
                PeerResponse::InstallSnapshot(raft.install_snapshot(r).await)
            }
            // The reason crosses the wire as text.
            PeerRequest::ReadIndex => {
                PeerResponse::ReadIndex(self.inner.read_index().await.map_err(|e| e.to_string()))
            }
            PeerRequest::Ping => PeerResponse::Pong(self.inner.id),
            PeerRequest::App(bytes) => {
                let handler = self
                    .inner
                    .app
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let Some(handler) = handler else {
                    return PeerResponse::App(Err(format!(
                        "node {} serves no application requests yet",
                        self.inner.id
                    )));
                };
                PeerResponse::App(handler.handle(from, bytes.0).await.map(Bytes))
            }
            PeerRequest::Forward(p) => {
                let envs = match admit_forwarded(from, &p.0, now_ms()) {
                    Ok(e) => e,
                    Err(why) => {
                        // Debug only: the forwarder retries until its deadline (every <= 200 ms).
                        tracing::debug!(from, %why, "refused a forwarded batch");
                        return PeerResponse::Forward(Err(why));
                    }
                };
                // Only the leader takes forwarded writes; a stale forwarder retries elsewhere.
                if raft.metrics().borrow().current_leader != Some(self.inner.id) {
                    return PeerResponse::Forward(Err(format!(
                        "node {} is not the leader",
                        self.inner.id
                    )));
                }
                // Each envelope goes through this node's batcher, so forwarded and local writes
                // share entries.
                let writes = envs.into_iter().map(|env| self.inner.write(env));
                let results = futures::future::join_all(writes).await;
                let mut outcomes = Vec::with_capacity(results.len());
                for r in results {
                    match r {
                        Ok(o) => outcomes.push(o),
                        // The forwarder gets the reason as text (it crosses the wire).
                        Err(e) => return PeerResponse::Forward(Err(e.to_string())),
                    }
                }
                let drop_reply = self
                    .inner
                    .drop_forward_replies
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
                if drop_reply {
                    tracing::warn!(
                        from,
                        "fault injection: the reply to a committed forward is dropped"
                    );
                    std::future::pending::<()>().await;
                }
                PeerResponse::Forward(Ok(outcomes))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_storage::{Scope, encode_batch, encoded_len};
    use std::error::Error;

    fn env(actor: &str, value_len: usize) -> Envelope {
        Envelope {
            at_ms: 5,
            actor: actor.into(),
            command: Command::SetConfig {
                scope: Scope::Global,
                key: "k".into(),
                value: "v".repeat(value_len),
            },
        }
    }

    /// An envelope whose batch alone is exactly `batch_bytes` long.
    fn env_with_batch_len(batch_bytes: usize) -> Envelope {
        let base = outpost_storage::batch_len(1, encoded_len(&env("a", 0)));
        let mut e = env("a", batch_bytes - base);
        // The value's length prefix may have grown by a few bytes: shave them off again.
        while outpost_storage::batch_len(1, encoded_len(&e)) > batch_bytes {
            if let Command::SetConfig { value, .. } = &mut e.command {
                value.pop();
            }
        }
        assert_eq!(encode_batch(std::slice::from_ref(&e)).len(), batch_bytes);
        e
    }

    #[test]
    fn a_command_over_the_cap_is_refused() {
        let at_cap = env_with_batch_len(MAX_ENTRY_BYTES);
        assert_eq!(admit_size(&at_cap).ok(), Some(encoded_len(&at_cap)));
        let over = env_with_batch_len(MAX_ENTRY_BYTES + 1);
        match admit_size(&over) {
            Err(e @ WriteError::TooLarge { bytes, cap }) => {
                assert_eq!((bytes, cap), (MAX_ENTRY_BYTES + 1, MAX_ENTRY_BYTES));
                assert_eq!(
                    e.to_string(),
                    format!(
                        "a command of {} bytes exceeds the {MAX_ENTRY_BYTES}-byte Raft entry cap",
                        MAX_ENTRY_BYTES + 1
                    )
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_close_at_the_cap_and_at_max_batch() {
        // (max_batch, cap, sizes offered in order) -> how many the first batch takes.
        let cases: &[(usize, usize, &[usize], usize)] = &[
            (10, 100, &[10, 10, 10], 3),
            // 2 + 1 + 48 + 49 = 100: exactly at the cap, both fit.
            (10, 100, &[48, 49], 2),
            // One byte over: the second opens the next batch.
            (10, 100, &[48, 50], 1),
            (10, 100, &[97, 1], 1),
            // The first is always taken (it was admitted alone).
            (10, 100, &[97], 1),
            (2, 100, &[1, 1, 1], 2),
            (0, 100, &[1, 1], 1),
            // 250 envelopes take a 1-byte length prefix, 251 a 3-byte one.
            (1000, 2 + 1 + 250, &[1; 260], 250),
            (1000, 2 + 3 + 251, &[1; 260], 251),
            (1000, 2 + 3 + 251 - 1, &[1; 260], 250),
        ];
        for (i, &(max_batch, cap, sizes, want)) in cases.iter().enumerate() {
            let mut p = Packer::new(max_batch, cap);
            let taken = sizes.iter().take_while(|&&s| p.try_add(s)).count();
            assert_eq!(taken, want, "case {i}");
        }
    }

    #[test]
    fn two_envelopes_that_fit_alone_but_not_together_make_two_entries() {
        let a = env_with_batch_len(MAX_ENTRY_BYTES / 2 + 10);
        let b = env_with_batch_len(MAX_ENTRY_BYTES / 2 + 10);
        let small = env("cli", 10);
        let mut p = Packer::new(1024, MAX_ENTRY_BYTES);
        assert!(p.try_add(admit_size(&a).unwrap_or(usize::MAX)));
        assert!(!p.try_add(admit_size(&b).unwrap_or(usize::MAX)));
        assert!(p.try_add(admit_size(&small).unwrap_or(usize::MAX)));
        // What the packer accepted is what encode_batch writes, and it is within the cap.
        let both = encode_batch(&[a.clone(), small.clone()]);
        assert_eq!(outpost_storage::batch_len(p.count, p.envelopes), both.len());
        assert!(both.len() <= MAX_ENTRY_BYTES);
        assert!(encode_batch(&[a, b]).len() > MAX_ENTRY_BYTES);
    }

    #[test]
    fn forwarded_commands_must_fit_their_actor() {
        let link = |actor: &str| Envelope {
            at_ms: 5,
            actor: actor.into(),
            command: Command::Once {
                request_id: "r".into(),
                command: Box::new(Command::CreateConsoleLogin {
                    id: "l1".into(),
                    secret_sha256: "0".repeat(64),
                    user: "ghost".into(),
                    expires_at_ms: 10,
                }),
            },
        };
        let touch = |node_id: u64| Envelope {
            at_ms: 5,
            actor: "node:7".into(),
            command: Command::TouchClients {
                node_id,
                seen: vec![],
            },
        };
        for (name, batch, ok) in [
            ("an admin's link", vec![link("admin:ops")], true),
            ("a link as the node itself", vec![link("node:7")], false),
            ("a link as another node", vec![link("node:3")], false),
            ("its own report", vec![touch(7)], true),
            ("another node's report", vec![touch(3)], false),
            (
                "one bad command refuses the batch",
                vec![env("admin:ops", 1), link("node:7")],
                false,
            ),
        ] {
            let r = admit_forwarded(7, &encode_batch(&batch), 42);
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
        }
    }

    #[test]
    fn forwarded_batches_are_checked_and_restamped() {
        let long = "\u{e9}".repeat(150); // 300 bytes, 2 bytes a char
        let good = encode_batch(&[env("admin:ops", 3), env(&long, 1), env("", 0)]);
        let mut newer = good.clone();
        newer[..2].copy_from_slice(&(outpost_storage::COMMAND_FORMAT + 1).to_le_bytes());
        let mut over = encode_batch(&[env_with_batch_len(MAX_ENTRY_BYTES)]);
        over.push(0);
        type Check = fn(&Result<Vec<Envelope>, String>) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("good", good, |r| {
                let Ok(envs) = r else { return false };
                let cut = "\u{e9}".repeat(100); // 200 bytes exactly
                envs.len() == 3
                    && envs.iter().all(|e| e.at_ms == 42)
                    && envs[0].actor == "admin:ops via node:7"
                    && envs[1].actor == format!("{cut} via node:7")
                    && envs[2].actor == " via node:7"
                    && envs[0].command == env("x", 3).command
            }),
            ("empty bytes", vec![], |r| {
                r.as_ref().is_err_and(|e| e.contains("node 7"))
            }),
            ("garbage", vec![1, 0, 0xff, 0xff, 0xff], |r| r.is_err()),
            ("newer format", newer, |r| {
                r.as_ref()
                    .is_err_and(|e| e.contains("upgrade") || e.contains("format"))
            }),
            ("over the cap", over, |r| {
                r.as_ref().is_err_and(|e| e.contains("Raft entry cap"))
            }),
        ];
        for (name, bytes, check) in cases {
            let r = admit_forwarded(7, &bytes, 42);
            assert!(check(&r), "{name}: {r:?}");
        }
    }

    /// The error `e.source()` names, as a `T`.
    fn source_as<T: std::error::Error + 'static>(e: &dyn std::error::Error) -> Option<&T> {
        e.source().and_then(|s| s.downcast_ref::<T>())
    }

    #[test]
    fn a_stopped_write_keeps_its_cause() {
        use openraft::error::Fatal;
        type Check = fn(&StopCause) -> bool;
        // (cause, its text, what its own source is)
        let cases: Vec<(StopCause, &str, Check)> = vec![
            (StopCause::Batcher, "write batcher stopped", |c| {
                c.source().is_none()
            }),
            (
                StopCause::Dropped,
                "write batcher dropped the request",
                |c| c.source().is_none(),
            ),
            (
                StopCause::Outcomes { sent: 3, got: 2 },
                "batch of 3 commands got 2 outcomes",
                |c| c.source().is_none(),
            ),
            (
                StopCause::Raft(RaftError::Fatal(Fatal::Stopped)),
                "raft stopped",
                |c| {
                    matches!(
                        source_as::<RaftWriteError>(c),
                        Some(RaftError::Fatal(Fatal::Stopped))
                    )
                },
            ),
            (
                StopCause::Applying(StoppedApplying::new(
                    outpost_storage::StorageError::NeedsUpgrade {
                        found: 9,
                        supported: 3,
                    },
                )),
                "stopped applying: command format 9 is newer than the supported format 3: \
                 upgrade this node; install a newer outpost release on this node",
                |c| {
                    source_as::<StoppedApplying>(c)
                        .and_then(|s| source_as::<Arc<outpost_storage::StorageError>>(s))
                        .is_some_and(|e| {
                            matches!(
                                **e,
                                outpost_storage::StorageError::NeedsUpgrade {
                                    found: 9,
                                    supported: 3
                                }
                            )
                        })
                },
            ),
        ];
        for (cause, text, check) in cases {
            // One failed batch answers each of its writes with a clone.
            let e = WriteError::Stopped(cause.clone());
            assert_eq!(
                e.clone().to_string(),
                format!("this node has stopped: {text}")
            );
            let got = source_as::<StopCause>(&e);
            assert!(got.is_some_and(check), "{text}: {got:?}");
        }
    }

    #[test]
    fn upkeep_errors_name_the_step_and_keep_the_cause() {
        use openraft::error::Fatal;
        type Check = fn(&UpkeepError) -> bool;
        let rejection = outpost_storage::Rejection {
            code: outpost_storage::RejectCode::NotFound,
            message: "node 4 does not exist".into(),
        };
        let cases: Vec<(UpkeepError, &str, Check)> = vec![
            (
                UpkeepError::Change {
                    change: Change::Promote,
                    node: 4,
                    source: RaftError::Fatal(Fatal::Stopped),
                },
                "promoting to voter node 4: raft stopped",
                |e| source_as::<RaftWriteError>(e).is_some(),
            ),
            (
                UpkeepError::Remove {
                    node: 4,
                    source: MembershipError::Raft(RaftError::Fatal(Fatal::Panicked)),
                },
                "removing node 4: membership change failed: panicked",
                |e| {
                    source_as::<MembershipError>(e)
                        .and_then(|m| source_as::<RaftWriteError>(m))
                        .is_some_and(|r| matches!(r, RaftError::Fatal(Fatal::Panicked)))
                },
            ),
            (
                UpkeepError::RecordRole {
                    node: 4,
                    source: WriteError::Stopped(StopCause::Batcher),
                },
                "recording node 4's role: this node has stopped: write batcher stopped",
                |e| source_as::<WriteError>(e).is_some(),
            ),
            (
                UpkeepError::RoleRejected {
                    node: 4,
                    source: rejection,
                },
                "recording node 4's role: not_found: node 4 does not exist",
                |e| {
                    source_as::<outpost_storage::Rejection>(e)
                        .is_some_and(|r| r.code == outpost_storage::RejectCode::NotFound)
                },
            ),
        ];
        for (e, text, check) in cases {
            assert_eq!(e.to_string(), text);
            assert!(check(&e), "{text}: {:?}", e.source());
        }
    }

    fn peer_tls() -> anyhow::Result<PeerTls> {
        use outpost_certs::{CertAuthority, ClientAuth, Role, TlsIdentity, Validity};
        let ca = CertAuthority::generate("c-node", "node")?;
        let validity = Validity::days_from(now_ms() / 1000, 1);
        let (cert, key) = ca.issue_with_new_key(&Role::Node(1), &validity)?;
        let identity = TlsIdentity::from_pem(&cert, &key, ca.cert_pem())?;
        let alpn = [crate::PEER_ALPN];
        Ok(PeerTls {
            server: outpost_certs::server_config(
                ca.cert_pem(),
                &identity,
                ClientAuth::Required,
                &alpn,
            )?,
            client: outpost_certs::client_config(ca.cert_pem(), Some(&identity), &alpn)?,
            server_name: outpost_certs::node_server_name,
            authorize: Arc::new(|der| match outpost_certs::role_of(der) {
                Ok(outpost_certs::Role::Node(id)) => Ok(id),
                Ok(other) => Err(format!("{other:?} is not a node")),
                Err(e) => Err(e.to_string()),
            }),
        })
    }

    async fn start_in(
        dir: &std::path::Path,
        tls: PeerTls,
        tuning: RaftTuning,
    ) -> anyhow::Result<Result<RaftNode, NodeError>> {
        let peer_listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(RaftNode::start(NodeConfig {
            id: 1,
            data_dir: dir.to_path_buf(),
            peer_listener,
            tls,
            tuning,
        })
        .await)
    }

    #[tokio::test]
    async fn a_write_to_a_stopped_node_keeps_its_cause() -> anyhow::Result<()> {
        use openraft::error::Fatal;
        let dir = tempfile::tempdir()?;
        let tuning = RaftTuning {
            write_timeout_ms: 5_000,
            ..RaftTuning::default()
        };
        let node = start_in(dir.path(), peer_tls()?, tuning).await??;
        node.initialize(PeerNode {
            name: "n1".into(),
            api_addr: "127.0.0.1:1".into(),
            peer_addr: "127.0.0.1:1".into(),
        })
        .await?;
        let env = || env("test", 1);
        node.linearizable_barrier(Duration::from_secs(20)).await?;
        // Committed (applied or rejected by storage, either way through Raft).
        let _outcome = node.write(env()).await?;

        // openraft stops; the batcher still runs and answers with openraft's own error.
        node.inner.raft.shutdown().await?;
        let e = match node.write(env()).await {
            Err(e @ WriteError::Stopped(_)) => e,
            other => anyhow::bail!("expected Stopped, got {other:?}"),
        };
        let raft = source_as::<StopCause>(&e).and_then(|c| source_as::<RaftWriteError>(c));
        assert!(
            matches!(raft, Some(RaftError::Fatal(Fatal::Stopped))),
            "{e}: {raft:?}"
        );

        // The batcher is gone too.
        node.shutdown().await;
        let e = match node.write(env()).await {
            Err(e @ WriteError::Stopped(_)) => e,
            other => anyhow::bail!("expected Stopped, got {other:?}"),
        };
        assert!(
            matches!(
                source_as::<StopCause>(&e),
                Some(StopCause::Batcher | StopCause::Dropped)
            ),
            "{e}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn start_reports_which_store_failed_with_its_cause() -> anyhow::Result<()> {
        type Check = fn(&NodeError) -> bool;
        // (what is broken in the data directory, what start says)
        let cases: Vec<(&str, &str, Check)> = vec![
            ("raft.db", "garbage", |e| {
                matches!(e, NodeError::LogStore(LogStoreError::Sqlite { .. }))
                    && source_as::<rusqlite::Error>(e).is_some()
            }),
            ("state.db", "garbage", |e| {
                matches!(e, NodeError::State(_))
                    && source_as::<outpost_storage::StorageError>(e).is_some()
            }),
            ("snapshots", "a file", |e| {
                matches!(e, NodeError::SnapshotDir { .. })
                    && source_as::<std::io::Error>(e).is_some()
            }),
        ];
        let tls = peer_tls()?;
        for (file, what, check) in cases {
            let dir = tempfile::tempdir()?;
            std::fs::write(dir.path().join(file), vec![0x5a; 8192])?;
            match start_in(dir.path(), tls.clone(), RaftTuning::default()).await? {
                Err(e) => assert!(check(&e), "{file} is {what}: {e:?}"),
                Ok(node) => {
                    node.shutdown().await;
                    anyhow::bail!("{file} is {what}: started");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_snapshot_is_due_by_size_once_per_snapshot() {
        // (appended, at last snapshot, limit, asked) -> due
        let cases = [
            (0, 0, 64, false, false),
            (63, 0, 64, false, false),
            (64, 0, 64, false, true),
            (164, 100, 64, false, true),
            (163, 100, 64, false, false),
            (1000, 0, 64, true, false), // already asked: wait for it
            (5, 10, 64, false, false),  // never underflows
        ];
        for (appended, base, limit, asked, want) in cases {
            assert_eq!(
                due_by_size(appended, base, limit, asked),
                want,
                "{appended} {base} {limit} {asked}"
            );
        }
    }

    #[test]
    fn truncates_at_char_boundaries() {
        let cases = [
            ("", 3, ""),
            ("abc", 3, "abc"),
            ("abcd", 3, "abc"),
            ("a\u{e9}", 2, "a"),
            ("a\u{e9}", 3, "a\u{e9}"),
            ("\u{1f600}x", 3, ""),
        ];
        for (s, max, want) in cases {
            assert_eq!(truncate_at_char(s, max), want, "{s:?} {max}");
        }
    }
}
