//! `RaftNode`: one Outpost node's Raft, with its stores, transport, write batching, forwarding,
//! linearizable reads and membership upkeep. The only entry point the binary uses.
//!
//! This file starts a node (`RaftNode::start`: stores, Raft, the peer listener and the tasks
//! below) and holds what they share (`Inner`). The rooms:
//! - `errors`: the public error types (`NodeError`, `WriteError` and its `StopCause`, ...).
//! - `batcher`: the write path: admission by size, group commit into one entry, proposing.
//! - `forward`: writes that cross nodes: to the leader, and the leader's `admit_forwarded`.
//! - `peer`: what this node answers on the peer port, and its application calls.
//! - `read_index`: linearizable reads and waiting for a leader.
//! - `upkeep`: the leader's membership upkeep, a pure `plan` and the code that carries it out.
//! - `status`: `NodeStatus` from the metrics, and noticing a stopped Raft core.
//! - `compaction`: a snapshot once the log grew by `SNAPSHOT_AFTER_BYTES`.
//! - `removed`: the removed node ids the peer port refuses, kept in memory.
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

use openraft::{Config, SnapshotPolicy};
use outpost_storage::{Envelope, Outcome, Reader, Store};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::failover::{self, PeerWatch};
use crate::log_store::LogStore;
use crate::peer_limits::PeerPortCounters;
use crate::state_machine::{Health, StateMachine};
use crate::telemetry::RaftTelemetry;
use crate::transport::{self, Network, PeerClients, PeerTls};
use crate::types::{NodeId, PeerNode, Raft, RaftMetrics};

mod batcher;
mod compaction;
mod errors;
mod forward;
mod peer;
mod read_index;
mod removed;
mod status;
mod upkeep;

pub use errors::{
    AppCallError, CopyStateError, MembershipError, NodeError, ReadError, StopCause, WriteError,
};
pub use forward::forward_batch;
pub use peer::{AppFuture, AppHandler};
pub use status::{MemberStatus, NodeStatus};

use batcher::{WriteReq, batcher};
use compaction::{compact_by_size, snapshot_after_bytes};
use peer::Handler;
use removed::{removed_ids, track_removed};
use status::watch_core;
use upkeep::upkeep;

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
    /// Collect the Raft series of `/metrics` (`RaftTelemetry`); when false every observation
    /// is a no-op and only the lag gauges are refreshed. Set from the node's environment
    /// (`OUTPOST_METRICS=off`), not from node.toml.
    #[serde(skip, default = "metrics_on")]
    pub metrics: bool,
}

fn metrics_on() -> bool {
    true
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
            metrics: true,
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

/// What `RaftNode::copy_state` wrote.
#[derive(Debug, Clone)]
pub struct StateCopy {
    pub info: outpost_storage::SnapshotInfo,
    /// The last entry applied in the copy.
    pub applied: Option<crate::types::LogId>,
}

/// What a node's handles and tasks share. Each room adds the methods of its part in an
/// `impl Inner` of its own (`write` in `batcher`, `read_index` in `read_index`, ...).
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
    /// The Raft series of `/metrics`.
    telemetry: Arc<RaftTelemetry>,
    /// Fault injection for tests (`OUTPOST_FAULT_DROP_FORWARD_REPLIES=N`): this many
    /// forwarded batches are committed and then never answered, as if the reply were lost.
    drop_forward_replies: std::sync::atomic::AtomicU32,
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
        let telemetry = RaftTelemetry::new(cfg.tuning.metrics);
        // Opening the databases (migrations, quick_check) and cleaning the snapshot directory
        // block: they run on a blocking thread, never on the executor.
        let (log, store, sm, removed) = {
            let data_dir = cfg.data_dir.clone();
            let (health, telemetry) = (health.clone(), telemetry.clone());
            tokio::task::spawn_blocking(move || open_stores(&data_dir, health, telemetry))
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
            telemetry: telemetry.clone(),
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
        node.spawn(telemetry.watch_elections(cfg.id, inner.raft.metrics()));
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

    /// Subscribe to Raft metrics changes (leader, applied index, membership).
    pub fn metrics(&self) -> tokio::sync::watch::Receiver<RaftMetrics> {
        self.inner.raft.metrics()
    }

    /// The Raft series of this node, to register in the node's `/metrics` registry.
    pub fn telemetry(&self) -> Arc<RaftTelemetry> {
        self.inner.telemetry.clone()
    }

    /// Sets the per-follower lag gauges from the current openraft metrics (leader only; no
    /// series elsewhere). Call right before encoding `/metrics`.
    pub fn refresh_telemetry(&self) {
        let m = self.inner.raft.metrics().borrow().clone();
        self.inner
            .telemetry
            .refresh(self.inner.id, &m, Instant::now());
    }

    /// Stops Raft and every task of this node. Durable state is already on disk.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in &tasks {
            h.abort();
        }
        // Dropped, not only told to stop, before this returns: the peer listener is closed
        // and the port free for a node started again in the same process.
        for h in tasks {
            let _ = h.await;
        }
    }
}

/// Opens raft.db and state.db under `data_dir` and the snapshot directory (removing leftovers
/// of interrupted transfers). Blocking: call it on a blocking thread.
#[allow(clippy::type_complexity)]
fn open_stores(
    data_dir: &Path,
    health: Arc<Health>,
    telemetry: Arc<RaftTelemetry>,
) -> Result<(LogStore, Store, StateMachine, BTreeSet<NodeId>), NodeError> {
    let log = LogStore::open_observed(&data_dir.join("raft.db"), telemetry.clone())?;
    let store = Store::open(&data_dir.join("state.db"))?;
    let removed = removed_ids(&store.reader().nodes()?);
    let snap_dir = data_dir.join("snapshots");
    let sm = StateMachine::new(store.clone(), &snap_dir, health)
        .map_err(|source| NodeError::SnapshotDir {
            path: snap_dir.clone(),
            source,
        })?
        .observed(telemetry);
    Ok((log, store, sm, removed))
}

/// The time left until `deadline`, at least 1 ms.
fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

impl Inner {
    async fn wait_leader_change(&self, deadline: Instant) {
        let mut rx = self.raft.metrics();
        let before = rx.borrow().current_leader;
        let wait = remaining(deadline).min(Duration::from_millis(200));
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.current_leader != before)).await;
    }

    fn peer_addr_of(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.peer_addr.clone())
    }
}

/// Milliseconds since the Unix epoch: the proposer stamps this into commands.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_store::LogStoreError;
    use crate::types::RaftWriteError;
    use openraft::error::RaftError;
    use outpost_storage::{Command, Scope, encode_batch, encoded_len};

    pub(super) fn env(actor: &str, value_len: usize) -> Envelope {
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
    pub(super) fn env_with_batch_len(batch_bytes: usize) -> Envelope {
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

    /// The error `e.source()` names, as a `T`.
    pub(super) fn source_as<T: std::error::Error + 'static>(
        e: &dyn std::error::Error,
    ) -> Option<&T> {
        e.source().and_then(|s| s.downcast_ref::<T>())
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
}
