//! The running node: start-up in one place (`init`, `join` and `serve`, and so the demo and
//! the tests, which run the real binary, all start a node through `start`), the accept loops
//! that serve the API (`server`) and the discovery wiring (`discovery`). `start` opens the
//! Raft node and the blob store (`crate::blobs`), builds the API (`crate::api`) and serves it,
//! and starts the background tasks, among them the leader's rollout steps (`rollouts`) and
//! retention pass (`retention`, which keeps what it moves out: `archive`), the node's scheduled backups (`backups`) and the disk floor's
//! reading (`metrics::DiskGuard`). `serve` starts the node again in the same
//! process when its Raft core stopped on a storage error (a full disk) and room came back.

pub mod archive;
pub mod backups;
pub mod discovery;
pub mod recovery;
pub mod retention;
pub mod rollouts;
pub mod server;
pub mod upgrade;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hyper::Method;
use outpost_certs::{
    ANY_NODE_SERVER_NAME, CertAuthority, ClientAuth, Fingerprint, Role, TlsIdentity,
    node_server_name,
};
use outpost_raft::{NodeConfig, PEER_ALPN, PeerNode, PeerTls, RaftNode, RaftTuning};
use outpost_storage::{Command, Envelope, TokenKind};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::shared::client::{ApiClient, ApiFailure, Endpoint};
use crate::shared::datadir::{ClusterConfig, DataDir, NODE_CONFIG_FORMAT, NodeFile};
use crate::shared::token::Token;
use crate::wire::{JoinRequest, JoinResponse};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const API_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A started node: Raft, the peer listener, the HTTPS API and the admin socket.
pub struct Running {
    pub node: RaftNode,
    pub state: Arc<AppState>,
    tasks: Vec<JoinHandle<()>>,
    socket: std::path::PathBuf,
    discovery: Option<crate::node::discovery::NodeDiscovery>,
    /// The data directory's lock, held as long as the node runs.
    _lock: std::fs::File,
}

impl Running {
    pub async fn stop(self) {
        if let Some(d) = self.discovery {
            d.stop().await;
        }
        for t in &self.tasks {
            t.abort();
        }
        // Until each aborted task is dropped, the listeners it holds stay bound: a node
        // started again in this process binds the same ports.
        for t in self.tasks {
            let _ = t.await;
        }
        self.node.shutdown().await;
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Where a node certificate renewal writes the new pair before renaming it over the old one.
fn renewal_paths(dd: &DataDir) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        dd.node_key().with_extension("key.new"),
        dd.node_cert().with_extension("crt.new"),
    )
}

/// Rolls an interrupted node certificate renewal forward: a complete new pair (the
/// certificate is written after the key) is renamed in; a key without its certificate was
/// never used and is removed.
fn finish_node_cert_renewal(dd: &DataDir) -> Result<()> {
    let (key_new, crt_new) = renewal_paths(dd);
    if !crt_new.exists() {
        if key_new.exists() {
            std::fs::remove_file(&key_new)?;
        }
        return Ok(());
    }
    if key_new.exists() {
        std::fs::rename(&key_new, dd.node_key())?;
    }
    std::fs::rename(&crt_new, dd.node_cert())?;
    std::fs::File::open(&dd.root)?.sync_all()?;
    tracing::info!("finished a node certificate renewal that was interrupted");
    Ok(())
}

/// Starts the node whose data directory is `dd`.
pub async fn start(dd: &DataDir) -> Result<Running> {
    dd.check()?;
    let lock = dd.lock()?;
    finish_node_cert_renewal(dd).context("finishing an interrupted certificate renewal")?;
    let file = dd.load_node_file()?;
    let ca_pem = dd.read(&dd.ca_cert())?;
    let ca_key = dd.read(&dd.ca_key())?;
    let ca = CertAuthority::from_pem(&ca_pem, &ca_key)
        .context("loading the cluster CA (ca.crt, ca.key)")?;
    let identity = TlsIdentity::from_pem(
        &dd.read(&dd.node_cert())?,
        &dd.read(&dd.node_key())?,
        &ca_pem,
    )
    .context("loading this node's certificate (node.crt, node.key)")?;
    let node_cert_not_after = identity
        .chain
        .first()
        .map(|c| outpost_certs::not_after_unix(c))
        .transpose()?
        .unwrap_or(0);
    match identity.chain.first().map(|c| outpost_certs::role_of(c)) {
        Some(Ok(Role::Node(id))) if id == file.node_id => {}
        other => bail!(
            "node.crt does not name node {} (found {other:?})",
            file.node_id
        ),
    }

    // Every TLS config presents the live identity, which renewal replaces in place.
    let live = outpost_certs::LiveIdentity::new(&identity)?;
    let peer_tls = PeerTls {
        server: outpost_certs::live_server_config(
            &ca_pem,
            live.clone(),
            ClientAuth::Required,
            &[PEER_ALPN],
        )?,
        client: outpost_certs::live_client_config(&ca_pem, live.clone(), &[PEER_ALPN])?,
        server_name: node_server_name,
        authorize: Arc::new(|der| match outpost_certs::role_of(der) {
            Ok(Role::Node(id)) => Ok(id),
            Ok(other) => Err(format!("a {other:?} certificate cannot act as a Raft peer")),
            Err(e) => Err(e.to_string()),
        }),
    };
    let api_tls = outpost_certs::live_api_server_config(&ca_pem, live.clone(), API_ALPN)?;

    let peer_listener = TcpListener::bind(file.peer_listen())
        .await
        .with_context(|| format!("binding the peer address {}", file.peer_listen()))?;
    let api_listener = TcpListener::bind(file.api_listen())
        .await
        .with_context(|| format!("binding the API address {}", file.api_listen()))?;
    let socket = dd.socket();
    if socket.exists() {
        // A socket left by a killed node: nobody can be listening on it, since we hold the
        // peer and API ports now.
        std::fs::remove_file(&socket)
            .with_context(|| format!("removing stale {}", socket.display()))?;
    }
    let unix =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    }

    let peer_client = peer_tls.client.clone();
    // OUTPOST_METRICS=off: no histograms observed (the overhead bench's "off" mode).
    let metrics_on = crate::metrics::enabled_by_env();
    let node = RaftNode::start(NodeConfig {
        id: file.node_id,
        data_dir: dd.root.clone(),
        peer_listener,
        tls: peer_tls,
        tuning: RaftTuning {
            auto_remove_after: file.cluster.auto_remove_after,
            metrics: metrics_on,
            ..file.raft.clone()
        },
    })
    .await
    .with_context(|| format!("starting node {} from {}", file.node_id, dd.root.display()))?;

    // Cleaning the store reads the state (SQLite) and walks the disk: a blocking thread.
    let blobs = {
        let (dir, node, id) = (dd.blobs(), node.clone(), file.node_id);
        tokio::task::spawn_blocking(move || crate::blobs::Blobs::open(&dir, node, id))
            .await
            .context("blob store thread")?
            .with_context(|| format!("opening the blob store {}", dd.blobs().display()))?
    };
    // Caps, timeouts and rate limits of the API port (and their /metrics counters).
    let limits = crate::api::limits::ApiLimits::new(crate::api::limits::LimitsConfig::from_env());
    // One registry: this room's families and the Raft layer's telemetry.
    let metrics = Arc::new(crate::metrics::Metrics::new(metrics_on, |reg| {
        node.telemetry().register(reg)
    }));
    let own = Arc::new(crate::metrics::NodeSelf::open(&dd.root));
    let audit_mark = Arc::new(crate::shared::audit_file::VerifiedMark::open(&dd.root));
    // The free-space floor: read once before the API serves, then every 2 s.
    let disk = Arc::new(crate::metrics::DiskGuard::new(
        file.node_id,
        &file.name,
        &dd.root,
    ));
    {
        let disk = disk.clone();
        tokio::task::spawn_blocking(move || disk.refresh())
            .await
            .context("disk floor thread")?;
    }
    let state = Arc::new(AppState {
        node: node.clone(),
        node_id: file.node_id,
        name: file.name.clone(),
        cluster_id: file.cluster_id.clone(),
        ca_fingerprint: ca.fingerprint(),
        ca,
        node_cert_not_after: node_cert_not_after.into(),
        seen: Default::default(),
        blobs: blobs.clone(),
        data_dir: dd.root.clone(),
        refusals: Default::default(),
        readiness: Default::default(),
        limits: limits.clone(),
        certs_seen: Default::default(),
        identities: Default::default(),
        fresh: Default::default(),
        metrics: metrics.clone(),
        own: own.clone(),
        site: Default::default(),
        audit_mark: audit_mark.clone(),
        disk: disk.clone(),
    });
    // Other nodes' asks (blob chunks, clock, health, ...), once the state that answers
    // `health` exists.
    let health: crate::peer_app::HealthProvider = {
        let state = Arc::downgrade(&state);
        Arc::new(move || {
            let state = state.clone();
            Box::pin(async move {
                let st = state.upgrade().ok_or("this node is stopping")?;
                serde_json::to_vec(&st.own_health().await).map_err(|e| e.to_string())
            })
        })
    };
    node.set_app_handler(crate::peer_app::handler(
        node.clone(),
        blobs.store().clone(),
        health,
        audit_mark,
    ));
    {
        let own = own.clone();
        tokio::task::spawn_blocking(move || own.hash_binary());
    }
    // The API and, beside it on the same port, the web console.
    let console = crate::console::Console::new(state.clone());
    let app = api::router(state.clone())
        .merge(crate::console::router(console.clone()))
        .layer(axum::middleware::from_fn_with_state(
            metrics.clone(),
            crate::metrics::http::track,
        ));
    let tasks = vec![
        tokio::spawn(crate::node::server::serve_tls(
            api_listener,
            api_tls,
            app.clone(),
            state.clone(),
            limits,
        )),
        tokio::spawn(crate::node::server::serve_unix(unix, app)),
        tokio::spawn(crate::api::clients::flush_last_seen(state.clone())),
        tokio::spawn(crate::node::rollouts::drive(state.clone())),
        tokio::spawn(crate::node::retention::run(state.clone())),
        tokio::spawn(crate::shared::process::trim_loop()),
        tokio::spawn(crate::console::report_sessions(console)),
        tokio::spawn(blobs.replicate()),
        tokio::spawn(own.sampler()),
        tokio::spawn(crate::node::backups::run(state.clone(), dd.clone())),
        tokio::spawn(disk.run()),
        tokio::spawn(crate::metrics::clock::clock_loop(node.clone(), metrics)),
        tokio::spawn(renew_node_cert(
            dd.clone(),
            state.clone(),
            live,
            ca_pem.clone(),
        )),
    ];
    tracing::info!(node = file.node_id, name = %file.name, api = %file.api_addr, peer = %file.peer_addr, "node started");
    // Discovery is a hint: if mDNS cannot start, the node still serves (static peers and the
    // addresses in node rows keep working), and says so loudly.
    let discovery =
        match crate::node::discovery::NodeDiscovery::start(&file, node.clone(), peer_client) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "discovery did not start: this node is not advertised and re-addresses no peer"
                );
                None
            }
        };
    Ok(Running {
        node,
        state,
        tasks,
        socket,
        discovery,
        _lock: lock,
    })
}

/// Keeps this node's certificate alive for years without anyone touching it: when less than a
/// third of its life is left, a new key and certificate (signed with the cluster CA, which
/// every node holds) are written beside the old pair as `node.key.new` and `node.crt.new`
/// (each fsynced), renamed over it key first, and presented from the next handshake on. A
/// crash between the renames is rolled forward by `finish_node_cert_renewal` at start.
/// Checked every minute, or every twentieth of the certificate's life if that is shorter.
async fn renew_node_cert(
    dd: DataDir,
    state: Arc<AppState>,
    live: Arc<outpost_certs::LiveIdentity>,
    ca_pem: String,
) {
    loop {
        let leaf = live.leaf();
        let (nb, na) = match leaf.as_ref().map(|c| {
            Ok::<_, outpost_certs::CertError>((
                outpost_certs::not_before_unix(c)?,
                outpost_certs::not_after_unix(c)?,
            ))
        }) {
            Some(Ok(v)) => v,
            _ => {
                tracing::error!("this node's certificate cannot be read; renewal stopped");
                return;
            }
        };
        let now = outpost_raft::now_ms() / 1000;
        if crate::shared::policy::renewal_due(nb, na, now) {
            let (dd, st, live, ca_pem) = (dd.clone(), state.clone(), live.clone(), ca_pem.clone());
            // Signing, writing and fsyncing files: a blocking thread.
            let renewed =
                tokio::task::spawn_blocking(move || renew_once(&dd, &st, &live, &ca_pem, now))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r);
            match renewed {
                Ok(not_after) => {
                    state
                        .node_cert_not_after
                        .store(not_after, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(node = state.node_id, not_after, "node certificate renewed");
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "node certificate renewal failed")
                }
            }
        }
        let life = (na - nb).max(1);
        let wait = Duration::from_secs((life / 20).clamp(1, 60) as u64);
        tokio::time::sleep(wait).await;
    }
}

/// One renewal: the new pair on disk (durably), then in the live identity. Returns the new
/// certificate's not-after.
fn renew_once(
    dd: &DataDir,
    state: &AppState,
    live: &outpost_certs::LiveIdentity,
    ca_pem: &str,
    now: i64,
) -> Result<i64> {
    let validity = crate::api::nodes::node_validity(now);
    let file = dd.load_node_file()?;
    let (cert, key) =
        state
            .ca
            .issue_node_with_new_key(state.node_id, &[file.api_addr.as_str()], &validity)?;
    let identity = TlsIdentity::from_pem(&cert, &key, ca_pem)?;
    let (key_new, crt_new) = renewal_paths(dd);
    outpost_certs::write_secret_file(&key_new, key.as_bytes())?;
    outpost_certs::write_public_file(&crt_new, cert.as_bytes())?;
    std::fs::rename(&key_new, dd.node_key())?;
    std::fs::rename(&crt_new, dd.node_cert())?;
    std::fs::File::open(&dd.root)?.sync_all()?;
    live.replace(&identity)?;
    Ok(validity.not_after_unix)
}

/// `outpost serve`: runs until SIGTERM or SIGINT.
///
/// A Raft core that stopped on a storage error (the disk filled up under an append or an
/// apply: SQLite rolled the transaction back, nothing half-written stays) is started again in
/// this process: once the data directory's free space is back above the floor
/// (`metrics::diskguard`), the node stops and starts again from its data directory (lock,
/// ports and databases released and taken again, same pid) and catches up from the leader.
/// At most one such restart per `RESTART_EVERY`. A node that stopped because it needs an
/// upgrade, or whose core panicked, is not restarted this way.
pub async fn serve(dd: &DataDir) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        // The node's own release first: this may execute it instead of going on.
        let boot = {
            let dd = dd.clone();
            tokio::task::spawn_blocking(move || upgrade::launch(&dd)).await??
        };
        let started = tokio::time::Instant::now();
        let running = start(dd).await?;
        let (switch_tx, mut switch_rx) = tokio::sync::mpsc::channel(1);
        let watch = upgrade::spawn(running.state.clone(), dd.clone(), boot, switch_tx);
        let end = tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                End::Stop
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT: stopping");
                End::Stop
            }
            Some(release) = switch_rx.recv() => End::Switch(release),
            why = storage_stopped(&running.node) => End::StorageStop(why),
        };
        watch.abort();
        match end {
            End::Stop => {
                running.stop().await;
                return Ok(());
            }
            // Same process id, same arguments: the release takes over the data directory.
            End::Switch(release) => {
                running.stop().await;
                return Err(upgrade::exec(&release));
            }
            End::StorageStop(why) => {
                tracing::error!(
                    error = %why,
                    "the Raft core stopped on a storage error; this node starts again in this process once its data directory has room above the floor"
                );
                // Meanwhile the stopped node still answers: status and /readyz say why.
                let room = tokio::select! {
                    _ = term.recv() => None,
                    _ = tokio::signal::ctrl_c() => None,
                    free = room_above_floor(dd, started + RESTART_EVERY) => Some(free),
                };
                running.stop().await;
                let Some(free) = room else {
                    tracing::info!("stopping");
                    return Ok(());
                };
                tracing::warn!(
                    free,
                    "free space is above the floor again: starting the node again in this process; it catches up from the leader"
                );
            }
        }
    }
}

/// How `serve`'s node ended.
enum End {
    Stop,
    Switch(std::path::PathBuf),
    StorageStop(String),
}

/// At most one in-process restart after a storage stop per this long.
const RESTART_EVERY: Duration = Duration::from_secs(10);

/// Returns (the reason) once the node's Raft core stopped on a storage error; checked every
/// second (a read of the core's metrics).
async fn storage_stopped(node: &RaftNode) -> String {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Some(why) = node.storage_stop() {
            return why;
        }
    }
}

/// Waits until `not_before` and until the data directory's file system has free space at or
/// above its floor (read every second on a blocking thread); returns the free bytes.
async fn room_above_floor(dd: &DataDir, not_before: tokio::time::Instant) -> u64 {
    tokio::time::sleep_until(not_before).await;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let root = dd.root.clone();
        let room = tokio::task::spawn_blocking(move || crate::shared::process::fs_room(&root))
            .await
            .ok()
            .and_then(Result::ok);
        if let Some((free, total)) = room
            && !crate::metrics::diskguard::below_floor(free, total)
        {
            return free;
        }
    }
}

/// The node `init`, `join` and `restore` make: what goes into its node.toml.
pub struct NodeSpec {
    pub name: String,
    pub api_addr: String,
    pub peer_addr: String,
    pub tuning: RaftTuning,
    /// `[cluster]` of node.toml.
    pub cluster: ClusterConfig,
    pub net: NetOptions,
}

impl NodeSpec {
    /// Its node.toml, once the cluster and the node's id are known.
    pub fn file(self, cluster_id: String, node_id: u64) -> NodeFile {
        NodeFile {
            format: NODE_CONFIG_FORMAT,
            cluster_id,
            node_id,
            name: self.name,
            api_addr: self.api_addr,
            peer_addr: self.peer_addr,
            api_listen: self.net.api_listen,
            peer_listen: self.net.peer_listen,
            raft: self.tuning,
            discovery: self.net.discovery,
            cluster: self.cluster,
            backup: None,
        }
    }

    /// How the other members reach it.
    pub fn peer(&self) -> PeerNode {
        PeerNode {
            name: self.name.clone(),
            api_addr: self.api_addr.clone(),
            peer_addr: self.peer_addr.clone(),
        }
    }
}

pub struct InitOptions {
    pub node: NodeSpec,
    /// The bundle trust to pin: (version, trust document JSON).
    pub bundle_trust: Option<(u64, String)>,
}

/// Listening addresses and the `[discovery]` section, as given to `init`/`join`.
#[derive(Debug, Clone, Default)]
pub struct NetOptions {
    pub api_listen: Option<String>,
    pub peer_listen: Option<String>,
    pub discovery: outpost_discovery::DiscoveryConfig,
}

/// Uses of the node token `init` prints: the four other voters of a five-node cluster.
pub const INIT_NODE_TOKEN_USES: u32 = 4;
/// Lifetime of the node token `init` prints.
pub const INIT_NODE_TOKEN_TTL_MS: i64 = 3600 * 1000;

pub struct InitOutput {
    pub cluster_id: String,
    pub node_token: String,
    pub client_token: String,
}

/// `outpost init`: a new cluster CA, node 1's identity, a one-node cluster, and two tokens.
pub async fn init(dd: &DataDir, opts: InitOptions) -> Result<InitOutput> {
    dd.create()?;
    let cluster_id = {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    };
    let ca =
        CertAuthority::generate(&cluster_id, &opts.node.name).context("creating the cluster CA")?;
    let validity = crate::api::nodes::node_validity(outpost_raft::now_ms() / 1000);
    let (cert, key) = ca.issue_node_with_new_key(1, &[opts.node.api_addr.as_str()], &validity)?;
    outpost_certs::write_public_file(&dd.ca_cert(), ca.cert_pem().as_bytes())?;
    outpost_certs::write_secret_file(&dd.ca_key(), ca.key_pem().as_bytes())?;
    outpost_certs::write_public_file(&dd.node_cert(), cert.as_bytes())?;
    outpost_certs::write_secret_file(&dd.node_key(), key.as_bytes())?;
    let file = opts.node.file(cluster_id.clone(), 1);
    dd.save_node_file(&file)?;

    let running = start(dd).await?;
    let result = bootstrap(&running, &file, &ca, opts.bundle_trust).await;
    running.stop().await;
    result.map(|(node_token, client_token)| InitOutput {
        cluster_id,
        node_token,
        client_token,
    })
}

async fn bootstrap(
    running: &Running,
    file: &NodeFile,
    ca: &CertAuthority,
    bundle_trust: Option<(u64, String)>,
) -> Result<(String, String)> {
    let me = PeerNode {
        name: file.name.clone(),
        api_addr: file.api_addr.clone(),
        peer_addr: file.peer_addr.clone(),
    };
    running.node.initialize(me).await?;
    running
        .node
        .wait_for_leader(Duration::from_secs(10))
        .await
        .ok_or_else(|| anyhow!("the new one-node cluster elected no leader within 10 s"))?;
    let now = outpost_raft::now_ms();
    let actor = "init".to_string();
    let commit = |command| {
        let env = Envelope {
            at_ms: now,
            actor: actor.clone(),
            command,
        };
        let node = running.node.clone();
        async move { node.write(env).await?.map_err(|r| anyhow!("{}", r.message)) }
    };
    commit(Command::InitCluster {
        cluster_id: file.cluster_id.clone(),
        name: file.name.clone(),
        ca_cert_pem: ca.cert_pem().to_string(),
    })
    .await?;
    commit(Command::AddNode {
        id: 1,
        name: file.name.clone(),
        api_addr: file.api_addr.clone(),
        peer_addr: file.peer_addr.clone(),
        version: VERSION.to_string(),
    })
    .await?;
    if let Some((version, trust_json)) = bundle_trust {
        commit(Command::SetBundleTrust {
            version,
            trust_json,
        })
        .await?;
    }
    let fp = ca.fingerprint().to_string();
    let mut tokens = Vec::new();
    // The node token forms the cluster: enough uses for the other voters of a five-node
    // cluster, for one hour. The client token enrolls the fleet: unlimited uses for a day.
    for (kind, k, ttl_ms, uses) in [
        (
            "node",
            TokenKind::Node,
            INIT_NODE_TOKEN_TTL_MS,
            Some(INIT_NODE_TOKEN_USES),
        ),
        ("client", TokenKind::Client, 24 * 3600 * 1000, None),
    ] {
        let token = Token::new(kind, &file.cluster_id, &fp, vec![file.api_addr.clone()]);
        commit(Command::CreateToken {
            id: token.id.clone(),
            kind: k,
            secret_sha256: token.secret_sha256(),
            expires_at_ms: now + ttl_ms,
            uses,
            groups: Vec::new(),
        })
        .await?;
        tokens.push(token.encode());
    }
    let client = tokens.pop().unwrap_or_default();
    let node = tokens.pop().unwrap_or_default();
    Ok((node, client))
}

pub struct JoinOptions {
    pub node: NodeSpec,
    pub token: String,
    pub peers: Vec<String>,
    /// How long to browse mDNS for a node of the token's cluster when no given address answers.
    pub discover_timeout: Duration,
}

/// `outpost join`: prove the token to a node whose CA matches the token's fingerprint, send a
/// CSR, store the identity it returns. The node becomes a member once it serves.
pub async fn join(dd: &DataDir, opts: JoinOptions) -> Result<JoinResponse> {
    let token = Token::decode(&opts.token)?;
    if token.kind != "node" {
        bail!(
            "this is a {} token; joining a node needs a node token (outpost token create --kind node)",
            token.kind
        );
    }
    if dd.is_initialised() {
        dd.create()?; // reports "already initialised"
    }
    let pin = Fingerprint::from_str(&token.ca_sha256)
        .map_err(|e| anyhow!("token CA fingerprint: {e}"))?;
    let tls = outpost_certs::pinned_client_config(pin, None, &[b"http/1.1"])?;
    let (key_pem, csr_pem) = outpost_certs::new_key_and_csr(&opts.node.name)?;
    let req = JoinRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        name: opts.node.name.clone(),
        api_addr: opts.node.api_addr.clone(),
        peer_addr: opts.node.peer_addr.clone(),
        version: VERSION.to_string(),
        csr_pem,
    };
    let resp = contact_for_join(&opts, &token, &tls, &req).await?;
    if Fingerprint::of_pem(&resp.ca_cert_pem)? != pin {
        bail!(
            "CA mismatch: the cluster's CA certificate does not match the token's fingerprint {pin}"
        );
    }
    if resp.cluster_id != token.cluster_id {
        bail!(
            "the node answered for cluster {}, but the token is for cluster {}",
            resp.cluster_id,
            token.cluster_id
        );
    }
    dd.create()?;
    outpost_certs::write_public_file(&dd.ca_cert(), resp.ca_cert_pem.as_bytes())?;
    outpost_certs::write_secret_file(&dd.ca_key(), resp.ca_key_pem.as_bytes())?;
    outpost_certs::write_public_file(&dd.node_cert(), resp.cert_pem.as_bytes())?;
    outpost_certs::write_secret_file(&dd.node_key(), key_pem.as_bytes())?;
    // node.toml last: its presence marks a complete data directory.
    dd.save_node_file(&opts.node.file(resp.cluster_id.clone(), resp.node_id))?;
    Ok(resp)
}

/// Finds a node that takes the join request: `--peer` addresses alone when given; otherwise the
/// token's addresses and the static peers, then nodes of the token's cluster browsed through
/// mDNS for up to `discover_timeout`. Every address is only a hint: the pinned CA decides.
async fn contact_for_join(
    opts: &JoinOptions,
    token: &Token,
    tls: &Arc<rustls::ClientConfig>,
    req: &JoinRequest,
) -> Result<JoinResponse> {
    let mut tried: Vec<String> = Vec::new();
    let mut last_err: Option<anyhow::Error> = None;
    let first: Vec<String> = if opts.peers.is_empty() {
        token
            .addrs
            .iter()
            .chain(&opts.node.net.discovery.peers)
            .cloned()
            .collect()
    } else {
        opts.peers.clone()
    };
    let browse = opts.peers.is_empty() && opts.node.net.discovery.mdns;
    // Browsing starts at once so that answers are in by the time the given addresses failed.
    let browser = if browse {
        let cfg = outpost_discovery::DiscoveryConfig {
            peers: Vec::new(),
            ..opts.node.net.discovery.clone()
        };
        Some(
            outpost_discovery::Discovery::start(&cfg, Some(&token.cluster_id))
                .context("starting the mDNS browser")?,
        )
    } else {
        None
    };
    let mut result = None;
    for addr in first {
        if tried.contains(&addr) {
            continue;
        }
        tried.push(addr.clone());
        if let Some(r) = try_join(&addr, tls, req, &mut last_err).await? {
            result = Some(r);
            break;
        }
    }
    if result.is_none()
        && let Some(b) = &browser
    {
        let deadline = tokio::time::Instant::now() + opts.discover_timeout;
        let mut rx = b.subscribe();
        'browse: loop {
            let view = rx.borrow_and_update().clone();
            for peer in &view.peers {
                for addr in peer.api_addrs() {
                    let addr = addr.to_string();
                    if tried.contains(&addr) {
                        continue;
                    }
                    tracing::info!(node = ?peer.node_id, name = ?peer.name, %addr, "trying a node found by mDNS");
                    tried.push(addr.clone());
                    if let Some(r) = try_join(&addr, tls, req, &mut last_err).await? {
                        result = Some(r);
                        break 'browse;
                    }
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    if let Some(b) = browser {
        let _ = tokio::task::spawn_blocking(move || b.shutdown()).await;
    }
    match result {
        Some(r) => Ok(r),
        None => {
            let mut what = if tried.is_empty() {
                "no address to try (the token carries none, no --peer, no --static-peer)"
                    .to_string()
            } else {
                format!("tried {}", tried.join(", "))
            };
            if browse {
                what.push_str(&format!(
                    "; browsed mDNS for nodes of cluster {} for {:?}",
                    token.cluster_id, opts.discover_timeout
                ));
            } else if opts.peers.is_empty() {
                what.push_str("; mDNS is off (--no-mdns)");
            }
            let err = match last_err {
                Some(e) => e.context(format!("no node answered: {what}")),
                None => anyhow!("no node answered: {what}"),
            };
            Err(err.context("join failed: give --peer HOST:PORT of a running node"))
        }
    }
}

/// One join attempt: `Ok(Some)` joined, `Ok(None)` unreachable (try another), `Err` the
/// cluster refused (asking another node would not change that).
async fn try_join(
    addr: &str,
    tls: &Arc<rustls::ClientConfig>,
    req: &JoinRequest,
    last_err: &mut Option<anyhow::Error>,
) -> Result<Option<JoinResponse>> {
    let client = ApiClient::new(Endpoint::Tls {
        addr: addr.to_string(),
        config: tls.clone(),
        server_name: ANY_NODE_SERVER_NAME.to_string(),
    });
    match client
        .call::<JoinResponse>(Method::POST, "/v1/join", Some(req))
        .await
    {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.downcast_ref::<ApiFailure>().is_some() => Err(e.context("join refused")),
        Err(e) => {
            tracing::warn!(peer = %addr, error = format!("{e:#}"), "join attempt failed");
            *last_err = Some(e);
            Ok(None)
        }
    }
}

/// Raises the soft open-files limit to the hard limit: a node holds a TLS connection per
/// agent, and 1024 (a common default soft limit) is far too few.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("could not raise the open-files limit");
            }
        }
    }
}
