//! The peer transport: persistent mTLS TCP connections carrying length-prefixed bincode frames.
//!
//! One connection per (local node, target node). Every frame carries a request id, so many RPCs
//! are in flight at once on one connection (AppendEntries are pipelined, a vote is never stuck
//! behind a snapshot chunk). Snapshots travel in chunks through openraft's `Chunked` sender,
//! each chunk one `InstallSnapshot` frame.
//!
//! Who is who comes from certificates, never from addresses: the dialler checks (through
//! rustls) that the server's certificate carries the name bound to the node id it meant to
//! reach; the listener maps the client certificate to a node id with `PeerTls::authorize`
//! and refuses anything that is not a node certificate of this cluster's CA.
//!
//! A certificate proves who a peer is, not that it still belongs: every request is also checked
//! against this node's current Raft membership (`admission`), so a node removed while connected
//! is refused from its next request on. A node with no membership yet (a fresh learner) takes
//! everyone but removed ids, so the leader's first AppendEntries reaches it. A node id the state
//! records as removed gets nothing after the handshake (ids are never reused).
//!
//! What a connection may cost before and after its sender is known (connections per source
//! and per node, idle time, frame sizes per request kind, bytes of frames being read) is in
//! `peer_limits`; any Raft message naming a term above `peer_limits::MAX_TERM` is refused
//! before openraft sees it, in a request or in an answer to ours.
//!
//! Frames are at most `MAX_FRAME` bytes, and every Raft entry at most
//! `outpost_storage::MAX_ENTRY_BYTES`, so one entry always fits a frame: an AppendEntries
//! request that would not fit is never sent; openraft is asked to split it (`PayloadTooLarge`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::codec;
use crate::failover::PeerWatch;
use crate::peer_limits::{
    self, FRAME_STALL, FrameHead, FrameShares, HANDSHAKE_TIMEOUT, HeadRule, IDLE,
    IN_FLIGHT_PER_CONN, MAX_TERM, NODE_TOTAL, PER_NODE, PRE_HANDSHAKE_PER_SOURCE,
    PRE_HANDSHAKE_TOTAL, PeerPortCounters, Pool, READ_CHUNK, Refused, Share, Slot, Throttle,
    VOTE_HEAD_BYTES,
};
use crate::types::{LogId, NodeId, PeerNode, Proposal, TypeConfig, Vote};

/// Largest frame accepted from a peer (a snapshot chunk plus headroom).
pub const MAX_FRAME: usize = codec::MAX_DECODE_BYTES;

/// Room in an AppendEntries frame for everything but the entries' payloads: frame and
/// request headers, and per entry its log id, payload tag and length prefix.
pub(crate) const FRAME_HEADROOM: usize = 1 << 20;

/// Most bytes of stored entries (their encoding in the log store, which is also their
/// encoding in a frame) that the log reader hands to one AppendEntries request.
pub(crate) const ENTRIES_PER_FRAME_BYTES: usize = MAX_FRAME - FRAME_HEADROOM;

// One entry always fits a frame, and two do, so splitting a request always makes progress.
const _: () = assert!(MAX_FRAME >= 2 * outpost_storage::MAX_ENTRY_BYTES + FRAME_HEADROOM);

/// ALPN protocol name of the peer transport.
pub const PEER_ALPN: &[u8] = b"outpost-peer/1";

/// TLS material and identity policy for the peer port, supplied by the node (which owns certs).
/// Maps a verified peer certificate to the node id it names; `Err` refuses the connection.
pub type Authorize = Arc<dyn Fn(&CertificateDer<'_>) -> Result<NodeId, String> + Send + Sync>;

#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// The TLS server name that the certificate of node `id` carries.
    pub server_name: fn(NodeId) -> String,
    /// The node id bound in a verified client certificate; `Err` refuses the connection.
    pub authorize: Authorize,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A batch of envelopes for the leader to commit (writes that reached a follower).
    Forward(Proposal),
    /// Ask the leader to confirm its leadership and name the index a linearizable read must see.
    ReadIndex,
    /// Liveness and identity check: answered with the responder's node id.
    Ping,
    /// An application request (opaque here), answered by the node's `AppHandler`.
    App(codec::Bytes),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Forward(Result<Vec<outpost_storage::Outcome>, String>),
    ReadIndex(Result<u64, String>),
    Pong(NodeId),
    App(Result<codec::Bytes, String>),
    /// The request could not be handled at all (e.g. it did not decode).
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    Request(u64, PeerRequest),
    Response(u64, PeerResponse),
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connecting to node {target} at {addr}: {source}")]
    Connect {
        target: NodeId,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {target} at {addr}: TLS: {source}")]
    Tls {
        target: NodeId,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {0}: invalid server name: {1}")]
    ServerName(NodeId, #[source] rustls::pki_types::InvalidDnsNameError),
    #[error("node {0}: connection closed")]
    Closed(NodeId),
    #[error("node {0}: no answer within {1:?}")]
    Timeout(NodeId, Duration),
    #[error("node {0}: encoding a frame: {1}")]
    Encode(NodeId, #[source] FrameError),
    /// The peer answered with another kind of response (its Debug text).
    #[error("node {0}: unexpected response {1}")]
    Unexpected(NodeId, String),
}

/// Why a frame could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("frame of {bytes} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge { bytes: usize },
    /// Only an entry written before the entry cap existed can be this large.
    #[error("log entry {index} alone does not fit the {MAX_FRAME}-byte frame limit")]
    EntryTooLarge { index: u64 },
}

/// Outgoing connections, one per target node, shared by Raft replication and the node.
pub struct PeerClients {
    tls: PeerTls,
    conns: Mutex<HashMap<NodeId, Arc<Conn>>>,
    /// Per target, when a call to it last got an answer (any answer: the peer is up and
    /// speaking to us). The leader heartbeats every member, so this is fresh for live ones;
    /// the dead-member upkeep reads it.
    last_answer: Mutex<HashMap<NodeId, Instant>>,
}

struct Conn {
    addr: String,
    sender: mpsc::Sender<Vec<u8>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<PeerResponse>>>>,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    /// Frames received so far: a call that times out with none received since it was sent
    /// marks the connection dead (a partition drops packets silently, and a TCP connection
    /// whose packets were dropped waits out its retransmission backoff, growing with the
    /// length of the partition).
    received: Arc<AtomicU64>,
    /// The reader task, stopped with the connection.
    reader: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl PeerClients {
    pub fn new(tls: PeerTls) -> Arc<PeerClients> {
        Arc::new(PeerClients {
            tls,
            conns: Mutex::new(HashMap::new()),
            last_answer: Mutex::new(HashMap::new()),
        })
    }

    /// When a call to `target` last got an answer from it, if one ever did.
    pub(crate) fn last_answer(&self, target: NodeId) -> Option<Instant> {
        self.last_answer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target)
            .copied()
    }

    fn cached(&self, target: NodeId, addr: &str) -> Option<Arc<Conn>> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .get(&target)
            .filter(|c| c.addr == addr && !c.closed.load(Ordering::Acquire))
            .cloned()
    }

    async fn conn(&self, target: NodeId, addr: &str) -> Result<Arc<Conn>, TransportError> {
        if let Some(c) = self.cached(target, addr) {
            return Ok(c);
        }
        let conn = Arc::new(dial(&self.tls, target, addr).await?);
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        // Two callers may have dialled at once; keep the first live one.
        if let Some(existing) = conns.get(&target)
            && existing.addr == addr
            && !existing.closed.load(Ordering::Acquire)
        {
            return Ok(existing.clone());
        }
        conns.insert(target, conn.clone());
        Ok(conn)
    }
}

/// Opens one peer connection to node `target` at `addr` and starts its reader/writer tasks.
async fn dial(tls: &PeerTls, target: NodeId, addr: &str) -> Result<Conn, TransportError> {
    dial_with(tls.client.clone(), (tls.server_name)(target), target, addr).await
}

async fn dial_with(
    client: Arc<rustls::ClientConfig>,
    server_name: String,
    target: NodeId,
    addr: &str,
) -> Result<Conn, TransportError> {
    let tcp = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| TransportError::Connect {
            target,
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        })?
        .map_err(|source| TransportError::Connect {
            target,
            addr: addr.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let name =
        ServerName::try_from(server_name).map_err(|e| TransportError::ServerName(target, e))?;
    let connector = tokio_rustls::TlsConnector::from(client);
    let tls = tokio::time::timeout(Duration::from_secs(3), connector.connect(name, tcp))
        .await
        .map_err(|_| TransportError::Tls {
            target,
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"),
        })?
        .map_err(|source| TransportError::Tls {
            target,
            addr: addr.to_string(),
            source,
        })?;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let (sender, mut outbox) = mpsc::channel::<Vec<u8>>(1024);
    let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<PeerResponse>>>> = Arc::default();
    let closed = Arc::new(AtomicBool::new(false));

    let closed_w = closed.clone();
    tokio::spawn(async move {
        while let Some(frame) = outbox.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
            // Flush only when nothing else is queued: frames sent together share a TLS record.
            if outbox.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        closed_w.store(true, Ordering::Release);
        let _ = wr.shutdown().await;
    });

    let pending_r = pending.clone();
    let closed_r = closed.clone();
    let received = Arc::new(AtomicU64::new(0));
    let received_r = received.clone();
    let reader = tokio::spawn(async move {
        let mut absurd_logged = false;
        loop {
            let frame = read_frame(&mut rd, &ReadLimits::CLIENT).await;
            received_r.fetch_add(1, Ordering::Release);
            match frame {
                Ok(Frame::Response(id, mut resp)) => {
                    // An answer naming an absurd term never reaches openraft: the call fails.
                    if let Some(term) = absurd_term_in_response(&resp) {
                        if !absurd_logged {
                            absurd_logged = true;
                            tracing::warn!(
                                target,
                                term,
                                "peer answered with a term above {MAX_TERM}; refused (logged once per connection)"
                            );
                        }
                        resp = PeerResponse::Failed(format!(
                            "answer with term {term} above the limit {MAX_TERM} refused"
                        ));
                    }
                    let tx = pending_r
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    if let Some(tx) = tx {
                        let _ = tx.send(resp);
                    }
                }
                Ok(Frame::Request(..)) => {
                    tracing::warn!(
                        target,
                        "peer sent a request on a client connection; closing"
                    );
                    break;
                }
                Err(e) => {
                    tracing::debug!(target, error = %e, "peer connection closed");
                    break;
                }
            }
        }
        closed_r.store(true, Ordering::Release);
        // Dropping the senders fails every request still waiting on this connection.
        pending_r.lock().unwrap_or_else(|p| p.into_inner()).clear();
    });

    tracing::debug!(target, addr, "peer connection established");
    Ok(Conn {
        addr: addr.to_string(),
        sender,
        pending,
        next_id: AtomicU64::new(1),
        closed,
        received,
        reader: reader.abort_handle(),
    })
}

impl PeerClients {
    /// Sends one request and waits for its response.
    pub(crate) async fn call(
        &self,
        target: NodeId,
        addr: &str,
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let conn = self.conn(target, addr).await?;
        let resp = conn.call(target, req, timeout).await?;
        self.last_answer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target, Instant::now());
        Ok(resp)
    }
}

impl Conn {
    async fn call(
        &self,
        target: NodeId,
        req: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let conn = self;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_frame(&Frame::Request(id, req))
            .map_err(|e| TransportError::Encode(target, e))?;
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let received = conn.received.load(Ordering::Acquire);
        if conn.sender.send(bytes).await.is_err() {
            conn.closed.store(true, Ordering::Release);
            return Err(TransportError::Closed(target));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(TransportError::Closed(target)),
            Err(_) => {
                conn.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                // Silence since the request went out: the next call dials afresh instead of
                // queueing behind a connection that may be in retransmission backoff. A slow
                // peer that still answers other requests keeps its connection.
                if conn.received.load(Ordering::Acquire) == received {
                    tracing::debug!(target, "no answer on the peer connection; dropping it");
                    conn.closed.store(true, Ordering::Release);
                }
                Err(TransportError::Timeout(target, timeout))
            }
        }
    }
}

/// Connects to `addr` as `client` expecting node `target`, and asks it for its id: the peer
/// port answers only node certificates of the cluster CA (a test and diagnostics helper).
pub async fn ping(
    client: Arc<rustls::ClientConfig>,
    server_name: String,
    target: NodeId,
    addr: &str,
    timeout: Duration,
) -> Result<NodeId, TransportError> {
    let conn = tokio::time::timeout(timeout, dial_with(client, server_name, target, addr))
        .await
        .map_err(|_| TransportError::Timeout(target, timeout))??;
    match conn.call(target, PeerRequest::Ping, timeout).await? {
        PeerResponse::Pong(id) => Ok(id),
        other => Err(TransportError::Unexpected(target, format!("{other:?}"))),
    }
}

/// Encoded length of an AppendEntries request frame without its entries, counting the largest
/// request id and an entries length prefix of the largest width (9 bytes, 1 counted already).
fn append_entries_header_len(rpc: &AppendEntriesRequest<TypeConfig>) -> usize {
    let empty = AppendEntriesRequest {
        vote: rpc.vote,
        prev_log_id: rpc.prev_log_id,
        leader_commit: rpc.leader_commit,
        entries: Vec::new(),
    };
    codec::encoded_len(&Frame::Request(u64::MAX, PeerRequest::AppendEntries(empty))) + 8
}

/// How many entries of an AppendEntries request fit one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFit {
    All,
    /// Only the first n (at least one): send those, the rest in later requests.
    First(usize),
    /// Not even the first entry.
    None,
}

/// The longest prefix of entries (their encoded sizes, in order) whose frame stays within
/// `max_frame`, given the frame's length without entries.
pub(crate) fn entries_that_fit(
    header: usize,
    sizes: impl IntoIterator<Item = usize>,
    max_frame: usize,
) -> FrameFit {
    let mut total = header;
    for (i, size) in sizes.into_iter().enumerate() {
        total = total.saturating_add(size);
        if total > max_frame {
            return if i == 0 {
                FrameFit::None
            } else {
                FrameFit::First(i)
            };
        }
    }
    if total > max_frame {
        FrameFit::None
    } else {
        FrameFit::All
    }
}

fn encode_frame(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let body = codec::encode(frame).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { bytes: body.len() });
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// How a frame is read: the caps and waits of one side of a connection.
struct ReadLimits<'a> {
    /// Server side: the declared size is checked against the cap of the request's kind
    /// (`peer_limits::frame_cap`) before the body is read.
    per_kind: bool,
    /// Bytes of frames being read on the whole port, per node id and for non-members; a
    /// chunk is read once its bytes are had.
    budget: Option<&'a FrameBudget>,
    /// Server side: the sending node and what this node knows of its membership, to decide
    /// from a request's head whether its body is read (`peer_limits::head_rule`).
    sender: Option<(NodeId, &'a (dyn Fn() -> MemberView + Sync))>,
    /// Waiting for a frame to start: after this long without one, with no request of this
    /// connection being answered (permits of the semaphore taken), the connection is idle.
    idle: Option<(Duration, &'a Semaphore)>,
}

impl ReadLimits<'static> {
    /// Answers on a connection we dialled to a node we verified: no kinds, no idle close.
    const CLIENT: ReadLimits<'static> = ReadLimits {
        per_kind: false,
        budget: None,
        sender: None,
        idle: None,
    };
}

/// Why a frame was not read.
#[derive(Debug, thiserror::Error)]
enum ReadFailure {
    #[error(transparent)]
    Io(std::io::Error),
    /// No frame for `IDLE` with nothing in flight.
    #[error("idle peer connection")]
    Idle,
    /// The frame's kind or declared size is refused, or its bytes stopped coming.
    #[error("{0}")]
    Refused(String),
    /// The sender may not send this kind of request (seen from its head, before its body).
    #[error("{1}")]
    Denied(Refused, String),
}

impl From<ReadFailure> for std::io::Error {
    fn from(f: ReadFailure) -> std::io::Error {
        match f {
            ReadFailure::Io(e) => e,
            ReadFailure::Idle => {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "idle peer connection")
            }
            ReadFailure::Refused(why) => std::io::Error::new(std::io::ErrorKind::InvalidData, why),
            ReadFailure::Denied(_, why) => {
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
            }
        }
    }
}

/// The port's frame budget (`peer_limits::FrameShares`), and the wake-up of frames waiting
/// for bytes of it.
pub(crate) struct FrameBudget {
    shares: Mutex<FrameShares>,
    freed: tokio::sync::Notify,
}

impl FrameBudget {
    fn new() -> FrameBudget {
        FrameBudget {
            shares: Mutex::new(FrameShares::default()),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// Waits until `n` bytes of `share` are had for node `from` (no deadline here).
    async fn take(&self, from: NodeId, n: usize, share: Share) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self
                .shares
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(from, n, share)
            {
                return;
            }
            freed.await;
        }
    }

    fn give(&self, from: NodeId, n: usize, share: Share) {
        self.shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .give(from, n, share);
        self.freed.notify_waiters();
    }
}

/// Bytes of the port's frame budget held by a frame being read, given back on drop.
struct Held<'a> {
    budget: Option<&'a FrameBudget>,
    from: NodeId,
    share: Share,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.budget
            && self.bytes > 0
        {
            b.give(self.from, self.bytes, self.share);
        }
    }
}

/// Reads one frame. Nothing is allocated for a frame before its declared size is known to
/// fit (its kind's cap on the server side) and its sender may send it (`head_rule`); then its
/// size is taken from the port's budget (frames of `SMALL_FRAME` or less take none) and its
/// buffer grows as its bytes arrive, in chunks of `READ_CHUNK`, so a peer that announces
/// 64 MiB and sends nothing holds its share of the budget for `FRAME_STALL` but one chunk of
/// memory.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    lim: &ReadLimits<'_>,
) -> Result<Frame, ReadFailure> {
    let mut len = [0u8; 4];
    {
        // Kept across the idle checks: `read_exact` is not cancel-safe.
        let read = rd.read_exact(&mut len);
        tokio::pin!(read);
        match lim.idle {
            None => {
                read.await.map_err(ReadFailure::Io)?;
            }
            Some((idle, handlers)) => loop {
                tokio::select! {
                    r = &mut read => {
                        r.map_err(ReadFailure::Io)?;
                        break;
                    }
                    _ = tokio::time::sleep(idle) => {
                        if handlers.available_permits() == IN_FLIGHT_PER_CONN {
                            return Err(ReadFailure::Idle);
                        }
                    }
                }
            },
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ReadFailure::Refused(format!(
            "peer frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
        )));
    }
    let mut held = Held {
        budget: lim.budget,
        from: lim.sender.map_or(0, |(from, _)| from),
        share: Share::Member,
        bytes: 0,
    };
    let mut buf: Vec<u8> = Vec::new();
    if lim.per_kind {
        // The head first, byte by byte as it comes, to learn the kind (and for a non-member's
        // log traffic, the vote) before anything more.
        buf.resize(len.min(VOTE_HEAD_BYTES), 0);
        let mut got = 0;
        loop {
            let n = match tokio::time::timeout(FRAME_STALL, rd.read(&mut buf[got..])).await {
                Ok(r) => r.map_err(ReadFailure::Io)?,
                Err(_) => {
                    return Err(ReadFailure::Refused(format!(
                        "peer frame stalled after {got} of {len} bytes"
                    )));
                }
            };
            if n == 0 {
                return Err(ReadFailure::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            got += n;
            match peer_limits::frame_head(&buf[..got]) {
                FrameHead::Request(kind) => {
                    let (from, view) = match lim.sender {
                        Some((from, view)) => (from, view()),
                        // No sender to judge: a member's rules.
                        None => (0, MemberView::MEMBER),
                    };
                    // Only log and snapshot traffic starts with a vote; the bytes after
                    // any other kind's head are its own (an App request's length, …).
                    let vote = match kind {
                        0 | 2 => match peer_limits::vote_head(&buf[..got]) {
                            Ok(v) => v,
                            Err(()) => {
                                return Err(ReadFailure::Refused(
                                    "not a peer request frame".into(),
                                ));
                            }
                        },
                        _ => None,
                    };
                    match peer_limits::head_rule(kind, len, view, from, vote) {
                        HeadRule::Read(share) => {
                            held.share = share;
                            break;
                        }
                        HeadRule::NeedVote if got < buf.len() => {}
                        // Too short to hold a vote: a tiny frame, whole, decoded (or refused)
                        // below.
                        HeadRule::NeedVote if got == len => break,
                        HeadRule::NeedVote => {
                            return Err(ReadFailure::Refused("not a peer request frame".into()));
                        }
                        HeadRule::Refuse(Refused::Frame, why) => {
                            return Err(ReadFailure::Refused(why));
                        }
                        HeadRule::Refuse(counter, why) => {
                            return Err(ReadFailure::Denied(counter, why));
                        }
                    }
                }
                FrameHead::NeedMore if got < buf.len() => {}
                // Shorter than a head: a tiny frame, decoded (or refused) below.
                FrameHead::NeedMore => break,
                FrameHead::Invalid => {
                    return Err(ReadFailure::Refused("not a peer request frame".into()));
                }
            }
        }
        buf.truncate(got);
    }
    // The rest of the frame's bytes are had from the budget all at once: taken chunk by chunk,
    // frames read side by side would each hold part of a share and all wait for the rest.
    if let Some(budget) = lim.budget
        && held.share != Share::Free
        && buf.len() < len
    {
        let rest = len - buf.len();
        match tokio::time::timeout(FRAME_STALL, budget.take(held.from, rest, held.share)).await {
            Ok(()) => held.bytes = rest,
            Err(_) => {
                return Err(ReadFailure::Refused(
                    "the port's frame budget stayed full".into(),
                ));
            }
        }
    }
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_CHUNK);
        let start = buf.len();
        buf.resize(start + want, 0);
        match tokio::time::timeout(FRAME_STALL, rd.read_exact(&mut buf[start..])).await {
            Ok(r) => {
                r.map_err(ReadFailure::Io)?;
            }
            Err(_) => {
                return Err(ReadFailure::Refused(format!(
                    "peer frame stalled after {start} of {len} bytes"
                )));
            }
        }
    }
    let frame = codec::decode(&buf).map_err(|e| {
        ReadFailure::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            BadFrame(e),
        ))
    });
    drop(buf);
    drop(held);
    frame
}

/// A peer frame that did not decode (inside an `io::Error`, as the connection tasks see it).
#[derive(Debug, thiserror::Error)]
#[error("peer frame: {0}")]
struct BadFrame(#[source] bincode::error::DecodeError);

/// The highest term a request names (its vote, and the log ids it carries), when it is
/// above `MAX_TERM`.
fn absurd_term_in_request(req: &PeerRequest) -> Option<u64> {
    let log = |l: &Option<LogId>| l.map_or(0, |l| l.leader_id.term);
    let highest = match req {
        PeerRequest::AppendEntries(r) => r
            .entries
            .iter()
            .map(|e| e.log_id.leader_id.term)
            .chain([
                r.vote.leader_id().term,
                log(&r.prev_log_id),
                log(&r.leader_commit),
            ])
            .max()
            .unwrap_or(0),
        PeerRequest::Vote(r) => r.vote.leader_id().term.max(log(&r.last_log_id)),
        PeerRequest::InstallSnapshot(r) => r
            .vote
            .leader_id()
            .term
            .max(log(&r.meta.last_log_id))
            .max(log(r.meta.last_membership.log_id())),
        PeerRequest::Forward(_) | PeerRequest::ReadIndex | PeerRequest::Ping => 0,
        PeerRequest::App(_) => 0,
    };
    (highest > MAX_TERM).then_some(highest)
}

/// The same for an answer to one of our Raft requests.
fn absurd_term_in_response(resp: &PeerResponse) -> Option<u64> {
    let log = |l: &Option<LogId>| l.map_or(0, |l| l.leader_id.term);
    let highest = match resp {
        PeerResponse::AppendEntries(Ok(AppendEntriesResponse::HigherVote(v))) => v.leader_id().term,
        PeerResponse::AppendEntries(Ok(AppendEntriesResponse::PartialSuccess(l))) => log(l),
        PeerResponse::Vote(Ok(r)) => r.vote.leader_id().term.max(log(&r.last_log_id)),
        PeerResponse::InstallSnapshot(Ok(r)) => r.vote.leader_id().term,
        _ => 0,
    };
    (highest > MAX_TERM).then_some(highest)
}

/// What the listener does with a request from an authenticated peer.
pub(crate) trait PeerHandler: Clone + Send + Sync + 'static {
    /// What this node knows of node `from`'s membership, for `admission`. Called for every
    /// request: must be cheap (in memory, no I/O).
    fn member_view(&self, from: NodeId) -> MemberView;
    fn handle(&self, from: NodeId, req: PeerRequest) -> impl Future<Output = PeerResponse> + Send;
}

/// This node's current Raft membership as far as one peer is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemberView {
    /// This node has a membership at all (false: uninitialised, e.g. a learner that has not
    /// yet heard from the leader).
    pub has_membership: bool,
    /// The peer is a voter or learner of it.
    pub is_member: bool,
    /// The state records the peer as removed: node ids are never reused, so it gets nothing.
    pub removed: bool,
}

impl MemberView {
    /// A member of an initialised cluster.
    pub(crate) const MEMBER: MemberView = MemberView {
        has_membership: true,
        is_member: true,
        removed: false,
    };
}

/// Whether a request from authenticated node `from` is served. Members are; so is anyone while
/// this node has no membership (joining needs the leader's first AppendEntries). A non-member
/// gets a `Ping` answer (only our id, which our certificate shows anyway) and its
/// AppendEntries/InstallSnapshot are passed to openraft when it sends them as the leader (its
/// vote names itself): this node may lag behind the membership change that added that leader,
/// and refusing it would stall this node for good; openraft itself refuses a stale leader.
/// Everything else from a non-member (votes, forwarded writes, reads, application requests)
/// is refused. A node the state records as removed gets nothing at all, whatever it claims.
pub(crate) fn admission(view: MemberView, from: NodeId, req: &PeerRequest) -> Result<(), String> {
    if view.removed {
        return Err(format!("node {from} was removed from this cluster"));
    }
    if view.is_member || !view.has_membership {
        return Ok(());
    }
    let leads = |vote: &Vote| vote.is_committed() && vote.leader_id().voted_for() == Some(from);
    match req {
        PeerRequest::Ping => Ok(()),
        PeerRequest::AppendEntries(r) if leads(&r.vote) => Ok(()),
        PeerRequest::InstallSnapshot(r) if leads(&r.vote) => Ok(()),
        _ => Err(format!("node {from} is not a member of this cluster")),
    }
}

/// The shared budget of the peer port (`peer_limits`).
struct Port {
    pre_handshake: Arc<Mutex<Pool<IpAddr>>>,
    nodes: Arc<Mutex<Pool<NodeId>>>,
    /// Bytes of frames being read at once.
    budget: FrameBudget,
    counters: Arc<PeerPortCounters>,
    /// Refusals of authenticated nodes, logged once a minute per node and reason.
    by_node: Throttle<(NodeId, Refused)>,
    /// Refusals before the handshake, logged once a minute per reason (a flood comes from
    /// many sources).
    anonymous: Throttle<Refused>,
    accept_failed: Throttle<()>,
}

/// The key a source is counted under before its handshake: an IPv4 address, or the /64 of
/// an IPv6 one (a host usually holds a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Accepts peer connections until the listener task is aborted. `watch` learns which peers
/// are connected, which connection carried their requests and which vote requests came in
/// (fast failover). What each connection may hold is in `peer_limits`; refusals are counted
/// in `counters`.
pub(crate) async fn serve<H: PeerHandler>(
    listener: TcpListener,
    tls: PeerTls,
    handler: H,
    watch: Arc<PeerWatch>,
    counters: Arc<PeerPortCounters>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let minute = Duration::from_secs(60);
    let port = Arc::new(Port {
        pre_handshake: Arc::new(Mutex::new(Pool::new(
            PRE_HANDSHAKE_TOTAL,
            PRE_HANDSHAKE_PER_SOURCE,
            false,
        ))),
        nodes: Arc::new(Mutex::new(Pool::new(NODE_TOTAL, PER_NODE, true))),
        budget: FrameBudget::new(),
        counters,
        by_node: Throttle::new(minute, 1024),
        anonymous: Throttle::new(minute, 16),
        accept_failed: Throttle::new(minute, 1),
    });
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // E.g. out of descriptors: logged once a minute, not thousands of times.
                if port.accept_failed.should_log((), Instant::now()) {
                    tracing::warn!(error = %e, "peer accept failed (logged once a minute)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match Slot::admit(&port.pre_handshake, source_key(remote.ip())) {
            Ok((slot, took_over)) => {
                if took_over {
                    port.counters.count(Refused::TakenOver);
                }
                slot
            }
            Err(full) => {
                port.counters.count(Refused::PreHandshakeFull);
                if port
                    .anonymous
                    .should_log(Refused::PreHandshakeFull, Instant::now())
                {
                    tracing::warn!(%remote, ?full, "refusing peer connections in handshake: too many (logged once a minute)");
                }
                drop(tcp);
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let authorize = tls.authorize.clone();
        let port = port.clone();
        let watch = watch.clone();
        tokio::spawn(async move {
            let conn = serve_conn(
                tcp, remote, slot, acceptor, authorize, handler, &port, watch,
            );
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "peer connection ended");
            }
        });
    }
}

impl Port {
    /// Counts a refusal of node `from` and logs it once a minute per node and reason.
    fn refuse(&self, from: NodeId, remote: SocketAddr, why: Refused, text: &str) {
        self.counters.count(why);
        if self.by_node.should_log((from, why), Instant::now()) {
            tracing::warn!(%remote, node = from, reason = %text, "refusing peer (logged once a minute per node and reason)");
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_conn<H: PeerHandler>(
    tcp: TcpStream,
    remote: SocketAddr,
    pre_handshake: Slot<IpAddr>,
    acceptor: tokio_rustls::TlsAcceptor,
    authorize: Authorize,
    handler: H,
    port: &Port,
    watch: Arc<PeerWatch>,
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
        _ = pre_handshake.kicked() => {
            port.counters.count(Refused::TakenOver);
            return Ok(());
        }
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            port.counters.count(Refused::Handshake);
            return Err(e);
        }
        Err(_) => {
            port.counters.count(Refused::Handshake);
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ));
        }
    };
    drop(pre_handshake);
    let from =
        {
            let (_, session) = tls.get_ref();
            let leaf = session
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "no client certificate",
                    )
                })?;
            authorize(leaf).map_err(|why| {
            port.counters.count(Refused::Handshake);
            if port.anonymous.should_log(Refused::Handshake, Instant::now()) {
                tracing::warn!(%remote, %why, "refusing peer connection (logged once a minute)");
            }
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
        })?
        };
    // A removed node gets nothing after the handshake: not a slot, not a byte read.
    if handler.member_view(from).removed {
        port.refuse(
            from,
            remote,
            Refused::Removed,
            "the node was removed from this cluster",
        );
        return Ok(());
    }
    let slot = match Slot::admit(&port.nodes, from) {
        Ok((slot, took_over)) => {
            if took_over {
                port.counters.count(Refused::TakenOver);
            }
            slot
        }
        Err(full) => {
            port.refuse(
                from,
                remote,
                Refused::NodeFull,
                &format!("too many peer connections ({full:?})"),
            );
            return Ok(());
        }
    };
    // Open from here until the reading below ends (not until the answers in flight are sent:
    // the close of a dead leader's connection must be seen at once).
    let inbound = watch.inbound_opened(from);
    let (mut rd, mut wr) = tokio::io::split(tls);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
            if out_rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
    });
    // Requests of this connection being answered; the reading waits when all are taken.
    let handlers = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONN));
    let view = || handler.member_view(from);
    let limits = ReadLimits {
        per_kind: true,
        budget: Some(&port.budget),
        sender: Some((from, &view)),
        idle: Some((IDLE, &handlers)),
    };
    let result = loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, &limits) => f,
            _ = slot.kicked() => {
                port.counters.count(Refused::TakenOver);
                break Ok(());
            }
        };
        let frame = match frame {
            Ok(f) => f,
            Err(ReadFailure::Idle) => {
                port.counters.count(Refused::Idle);
                break Ok(());
            }
            Err(ReadFailure::Refused(why)) => {
                port.refuse(from, remote, Refused::Frame, &why);
                break Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
            }
            // Its body unread: the connection closes (the sender learns nothing more).
            Err(ReadFailure::Denied(counter, why)) => {
                port.refuse(from, remote, counter, &why);
                break Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    why,
                ));
            }
            Err(ReadFailure::Io(e)) => break Err(e),
        };
        let Frame::Request(id, req) = frame else {
            break Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "peer sent a response as a request",
            ));
        };
        // Checked per request, not once per connection: a node removed while connected is
        // refused from its next request on (and gets no other answer).
        let view = handler.member_view(from);
        if view.removed {
            let why = format!("node {from} was removed from this cluster");
            port.refuse(from, remote, Refused::Removed, &why);
            if let Ok(bytes) = encode_frame(&Frame::Response(id, PeerResponse::Failed(why))) {
                let _ = out_tx.send(bytes).await;
            }
            break Ok(());
        }
        // Before openraft sees it: a term near 2^64 stops its core for good.
        if let Some(term) = absurd_term_in_request(&req) {
            let why = format!("a Raft message with term {term} (above {MAX_TERM}) is refused");
            port.refuse(from, remote, Refused::AbsurdTerm, &why);
            if let Ok(bytes) = encode_frame(&Frame::Response(id, PeerResponse::Failed(why))) {
                let _ = out_tx.send(bytes).await;
            }
            break Ok(());
        }
        if let Err(why) = admission(view, from, &req) {
            port.refuse(from, remote, Refused::NotMember, &why);
            if let Ok(bytes) = encode_frame(&Frame::Response(id, PeerResponse::Failed(why)))
                && out_tx.send(bytes).await.is_err()
            {
                break Ok(());
            }
            continue;
        }
        inbound.request();
        // A node asks votes only for itself.
        if let PeerRequest::Vote(r) = &req
            && r.vote.leader_id().voted_for() == Some(from)
        {
            watch.ballot(from, &r.vote, r.last_log_id);
        }
        let Ok(permit) = handlers.clone().acquire_owned().await else {
            break Ok(());
        };
        let handler = handler.clone();
        let out = out_tx.clone();
        tokio::spawn(async move {
            let resp = handler.handle(from, req).await;
            let bytes = match encode_frame(&Frame::Response(id, resp)) {
                Ok(b) => b,
                // The reason crosses the wire as text.
                Err(e) => {
                    match encode_frame(&Frame::Response(id, PeerResponse::Failed(e.to_string()))) {
                        Ok(b) => b,
                        Err(_) => return,
                    }
                }
            };
            let _ = out.send(bytes).await;
            drop(permit);
        });
    };
    drop(inbound);
    drop(out_tx);
    let _ = writer.await;
    result
}

/// Frames as a peer writes them, for tests that speak the peer protocol by hand against the
/// real binary (forged messages, floods). Not part of the crate's interface.
#[doc(hidden)]
pub mod forge {
    use super::*;

    /// A whole AppendEntries request frame (length prefix included) from `leader` at `term`,
    /// with no entries (a heartbeat).
    pub fn append_entries(request_id: u64, term: u64, leader: NodeId) -> Vec<u8> {
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term, leader),
            prev_log_id: None,
            leader_commit: None,
            entries: Vec::new(),
        };
        encode_frame(&Frame::Request(request_id, PeerRequest::AppendEntries(req)))
            .unwrap_or_default()
    }

    /// The stored form of a vote for `node` at `term`, not committed (raft.db's `meta` row
    /// `vote`), to prepare a stopped node's data as a forged message would have left it.
    pub fn stored_vote(term: u64, node: NodeId) -> Vec<u8> {
        codec::encode(&Vote::new(term, node)).unwrap_or_default()
    }

    /// The first bytes of an AppendEntries frame that declares `len` bytes: its length prefix
    /// and head, without the rest.
    pub fn announce_append_entries(len: u32) -> Vec<u8> {
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&[0, 1, 0]);
        out
    }

    /// The same, with the vote that opens the request: committed, for `leader` at `term` (a
    /// sender claiming to lead).
    pub fn announce_append_entries_as(len: u32, term: u64, leader: NodeId) -> Vec<u8> {
        let mut out = announce_append_entries(len);
        out.extend(codec::encode(&Vote::new_committed(term, leader)).unwrap_or_default());
        out
    }

    /// Reads one answer frame: `Ok(Err(reason))` for a refusal (`Failed`), `Ok(Ok(debug))`
    /// for any other answer.
    pub async fn read_answer<R: tokio::io::AsyncRead + Unpin>(
        rd: &mut R,
    ) -> std::io::Result<Result<String, String>> {
        match read_frame(rd, &ReadLimits::CLIENT).await? {
            Frame::Response(_, PeerResponse::Failed(why)) => Ok(Err(why)),
            Frame::Response(_, other) => Ok(Ok(format!("{other:?}"))),
            Frame::Request(..) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a request where an answer was expected",
            )),
        }
    }
}

/// openraft's network factory: hands out per-target clients over the shared connections.
#[derive(Clone)]
pub struct Network {
    pub(crate) clients: Arc<PeerClients>,
    /// Told of this node's own vote requests and their answers (fast failover).
    pub(crate) watch: Arc<PeerWatch>,
}

pub struct PeerNetwork {
    clients: Arc<PeerClients>,
    watch: Arc<PeerWatch>,
    target: NodeId,
    node: PeerNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerNetwork {
        PeerNetwork {
            clients: self.clients.clone(),
            watch: self.watch.clone(),
            target,
            node: node.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, PeerNode, E>;

impl PeerNetwork {
    async fn rpc(
        &self,
        req: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, TransportError> {
        self.clients
            .call(self.target, &self.node.peer_addr, req, option.hard_ttl())
            .await
    }

    fn transport_err<E: std::error::Error>(&self, e: TransportError) -> RpcErr<E> {
        match e {
            TransportError::Connect { .. }
            | TransportError::Tls { .. }
            | TransportError::Closed(_) => RPCError::Unreachable(Unreachable::new(&e)),
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        let sizes = rpc.entries.iter().map(codec::encoded_len);
        match entries_that_fit(append_entries_header_len(&rpc), sizes, MAX_FRAME) {
            FrameFit::All => {}
            FrameFit::First(n) => {
                tracing::debug!(
                    target = self.target,
                    entries = rpc.entries.len(),
                    fit = n,
                    "AppendEntries would pass the frame limit; asking openraft to split it"
                );
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(n as u64),
                ));
            }
            FrameFit::None => {
                // Only an entry written before the entry cap existed can be this large.
                let e = TransportError::Encode(
                    self.target,
                    FrameError::EntryTooLarge {
                        index: rpc.entries.first().map(|e| e.log_id.index).unwrap_or(0),
                    },
                );
                tracing::error!(target = self.target, error = %e, "cannot replicate");
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
        }
        match self.rpc(PeerRequest::AppendEntries(rpc), &option).await {
            Ok(PeerResponse::AppendEntries(Ok(r))) => Ok(r),
            Ok(PeerResponse::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.transport_err(TransportError::Unexpected(
                self.target,
                format!("{other:?}"),
            ))),
            Err(e) => Err(self.transport_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<RaftError<NodeId, InstallSnapshotError>>>
    {
        match self.rpc(PeerRequest::InstallSnapshot(rpc), &option).await {
            Ok(PeerResponse::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(PeerResponse::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.transport_err(TransportError::Unexpected(
                self.target,
                format!("{other:?}"),
            ))),
            Err(e) => Err(self.transport_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        let asked = rpc.vote;
        if let Some(me) = asked.leader_id().voted_for() {
            self.watch.ballot(me, &asked, rpc.last_log_id);
        }
        let ask = self.watch.ask(asked.leader_id().term, self.target);
        match self.rpc(PeerRequest::Vote(rpc), &option).await {
            Ok(PeerResponse::Vote(Ok(r))) => {
                ask.answer(r.vote_granted && r.vote == asked);
                Ok(r)
            }
            Ok(PeerResponse::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.transport_err(TransportError::Unexpected(
                self.target,
                format!("{other:?}"),
            ))),
            Err(e) => Err(self.transport_err(e)),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A dead peer is retried every 200 ms: quick to notice its return, cheap while it is gone.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, LogId, Vote};
    use openraft::{CommittedLeaderId, EntryPayload};
    use tokio::io::AsyncWriteExt;

    #[test]
    fn entries_that_fit_a_frame() {
        // (header, entry sizes, max frame) -> fit
        let cases: &[(usize, &[usize], usize, FrameFit)] = &[
            (10, &[], 100, FrameFit::All),
            (10, &[30, 30, 30], 100, FrameFit::All), // exactly 100
            (10, &[30, 30, 31], 100, FrameFit::First(2)),
            (10, &[90, 1], 100, FrameFit::First(1)),
            (10, &[91], 100, FrameFit::None),
            (10, &[usize::MAX, 1], 100, FrameFit::None),
            (10, &[1, usize::MAX], 100, FrameFit::First(1)),
            (101, &[], 100, FrameFit::None),
        ];
        for (i, (header, sizes, max, want)) in cases.iter().enumerate() {
            assert_eq!(
                entries_that_fit(*header, sizes.iter().copied(), *max),
                *want,
                "case {i}"
            );
        }
    }

    fn entry(index: u64, payload: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
            payload: EntryPayload::Normal(Proposal(vec![1u8; payload])),
        }
    }

    #[test]
    fn an_append_entries_over_the_frame_limit_is_split() -> Result<(), Box<dyn std::error::Error>> {
        let cap = outpost_storage::MAX_ENTRY_BYTES;
        let prev = Some(LogId::new(CommittedLeaderId::new(3, 1), 0));
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: prev,
            leader_commit: prev,
            entries: (1..=10).map(|i| entry(i, cap)).collect(),
        };
        let header = append_entries_header_len(&rpc);
        let sizes: Vec<usize> = rpc.entries.iter().map(codec::encoded_len).collect();
        let FrameFit::First(n) = entries_that_fit(header, sizes.iter().copied(), MAX_FRAME) else {
            return Err("ten full entries must not fit one frame".into());
        };
        assert!(n >= 2, "{n}");
        // The first n really encode within the limit, n + 1 really do not.
        let frame = |k: usize| {
            Frame::Request(
                u64::MAX,
                PeerRequest::AppendEntries(AppendEntriesRequest {
                    vote: rpc.vote,
                    prev_log_id: rpc.prev_log_id,
                    leader_commit: rpc.leader_commit,
                    entries: rpc.entries[..k].to_vec(),
                }),
            )
        };
        let fits = encode_frame(&frame(n))?;
        assert!(fits.len() <= MAX_FRAME + 4);
        match encode_frame(&frame(n + 1)) {
            Err(FrameError::TooLarge { bytes }) => assert!(bytes > MAX_FRAME, "{bytes}"),
            other => {
                let got = other.map(|b| b.len());
                return Err(format!("{} entries: {got:?}", n + 1).into());
            }
        }
        // One entry at the cap always fits (the compile-time assertion, checked for real).
        assert_eq!(
            entries_that_fit(header, [sizes[0]], MAX_FRAME),
            FrameFit::All
        );
        Ok(())
    }

    #[test]
    fn only_members_are_served() {
        let member = MemberView {
            has_membership: true,
            is_member: true,
            removed: false,
        };
        let stranger = MemberView {
            is_member: false,
            ..member
        };
        let fresh = MemberView {
            has_membership: false,
            ..stranger
        };
        // Removed: still in the membership (its removal not yet applied there), or not.
        let removed_member = MemberView {
            removed: true,
            ..member
        };
        let removed = MemberView {
            removed: true,
            ..stranger
        };
        let append = |vote: Vote| {
            PeerRequest::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id: None,
                leader_commit: None,
                entries: Vec::new(),
            })
        };
        let forward = || PeerRequest::Forward(Proposal(vec![1, 0, 0]));
        let vote_req = || {
            PeerRequest::Vote(VoteRequest {
                vote: Vote::new(9, 5),
                last_log_id: None,
            })
        };
        // (view, request from node 5) -> served?
        let cases: Vec<(&str, MemberView, PeerRequest, bool)> = vec![
            ("member forwards", member, forward(), true),
            ("member votes", member, vote_req(), true),
            ("fresh node takes anyone", fresh, forward(), true),
            (
                "fresh node takes the leader",
                fresh,
                append(Vote::new_committed(2, 5)),
                true,
            ),
            ("stranger forwards", stranger, forward(), false),
            ("stranger votes", stranger, vote_req(), false),
            ("stranger reads", stranger, PeerRequest::ReadIndex, false),
            (
                "stranger app",
                stranger,
                PeerRequest::App(codec::Bytes(vec![])),
                false,
            ),
            ("stranger pings", stranger, PeerRequest::Ping, true),
            // A leader we have not heard of yet (we lag behind the change that added it).
            (
                "stranger leads",
                stranger,
                append(Vote::new_committed(9, 5)),
                true,
            ),
            (
                "stranger campaigns",
                stranger,
                append(Vote::new(9, 5)),
                false,
            ),
            (
                "stranger speaks for another",
                stranger,
                append(Vote::new_committed(9, 6)),
                false,
            ),
            (
                "removed member pings",
                removed_member,
                PeerRequest::Ping,
                false,
            ),
            ("removed forwards", removed, forward(), false),
            (
                "removed leads",
                removed,
                append(Vote::new_committed(9, 5)),
                false,
            ),
            (
                "removed leads a fresh node",
                MemberView {
                    removed: true,
                    ..fresh
                },
                append(Vote::new_committed(9, 5)),
                false,
            ),
        ];
        for (name, view, req, want) in cases {
            let got = admission(view, 5, &req);
            assert_eq!(got.is_ok(), want, "{name}: {got:?}");
            if let Err(why) = got {
                let text = if view.removed {
                    "node 5 was removed from this cluster"
                } else {
                    "node 5 is not a member of this cluster"
                };
                assert_eq!(why, text);
            }
        }
    }

    #[test]
    fn absurd_terms_are_found_wherever_a_message_names_one() {
        let log = |term: u64| Some(LogId::new(CommittedLeaderId::new(term, 1), 7));
        let append = |vote: u64, prev: u64, commit: u64, entry: u64| {
            PeerRequest::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(vote, 1),
                prev_log_id: log(prev),
                leader_commit: log(commit),
                entries: vec![Entry {
                    log_id: LogId::new(CommittedLeaderId::new(entry, 1), 8),
                    payload: EntryPayload::Blank,
                }],
            })
        };
        let max = MAX_TERM;
        // (request, absurd term found)
        let cases: Vec<(&str, PeerRequest, Option<u64>)> = vec![
            ("ordinary", append(5, 4, 4, 5), None),
            ("at the limit", append(max, 4, 4, max), None),
            ("vote", append(u64::MAX, 4, 4, 5), Some(u64::MAX)),
            ("prev", append(5, max + 1, 4, 5), Some(max + 1)),
            ("commit", append(5, 4, max + 1, 5), Some(max + 1)),
            ("entry", append(5, 4, 4, u64::MAX), Some(u64::MAX)),
            (
                "vote request",
                PeerRequest::Vote(VoteRequest {
                    vote: Vote::new(u64::MAX, 1),
                    last_log_id: log(3),
                }),
                Some(u64::MAX),
            ),
            (
                "vote request's log",
                PeerRequest::Vote(VoteRequest {
                    vote: Vote::new(4, 1),
                    last_log_id: log(max + 1),
                }),
                Some(max + 1),
            ),
            ("ping", PeerRequest::Ping, None),
        ];
        for (name, req, want) in cases {
            assert_eq!(absurd_term_in_request(&req), want, "{name}");
        }
        let answers: Vec<(&str, PeerResponse, Option<u64>)> = vec![
            (
                "higher vote",
                PeerResponse::AppendEntries(Ok(AppendEntriesResponse::HigherVote(Vote::new(
                    u64::MAX,
                    2,
                )))),
                Some(u64::MAX),
            ),
            (
                "vote granted",
                PeerResponse::Vote(Ok(VoteResponse {
                    vote: Vote::new(3, 2),
                    vote_granted: true,
                    last_log_id: log(3),
                })),
                None,
            ),
            (
                "vote answered from the future",
                PeerResponse::Vote(Ok(VoteResponse {
                    vote: Vote::new(max + 1, 2),
                    vote_granted: false,
                    last_log_id: None,
                })),
                Some(max + 1),
            ),
            ("pong", PeerResponse::Pong(2), None),
        ];
        for (name, resp, want) in answers {
            assert_eq!(absurd_term_in_response(&resp), want, "{name}");
        }
    }

    #[test]
    fn frame_caps_follow_the_request_kinds() -> Result<(), Box<dyn std::error::Error>> {
        // The head read from real encodings names the variant whose cap applies.
        let vote = PeerRequest::Vote(VoteRequest {
            vote: Vote::new(3, 1),
            last_log_id: None,
        });
        let cases: Vec<(PeerRequest, usize)> = vec![
            (
                PeerRequest::AppendEntries(AppendEntriesRequest {
                    vote: Vote::new_committed(3, 1),
                    prev_log_id: None,
                    leader_commit: None,
                    entries: Vec::new(),
                }),
                MAX_FRAME,
            ),
            (vote, peer_limits::SMALL_FRAME),
            (PeerRequest::Forward(Proposal(vec![1])), MAX_FRAME),
            (PeerRequest::ReadIndex, peer_limits::SMALL_FRAME),
            (PeerRequest::Ping, peer_limits::SMALL_FRAME),
            (
                PeerRequest::App(codec::Bytes(vec![1, 2])),
                peer_limits::APP_FRAME,
            ),
        ];
        for id in [1u64, 300, 70_000, u64::MAX] {
            for (req, cap) in &cases {
                let frame = codec::encode(&Frame::Request(id, clone_req(req)))?;
                let FrameHead::Request(kind) = peer_limits::frame_head(&frame) else {
                    return Err(format!("{req:?}: no head").into());
                };
                assert_eq!(peer_limits::frame_cap(kind), Some(*cap), "{req:?}");
            }
        }
        Ok(())
    }

    fn clone_req(req: &PeerRequest) -> PeerRequest {
        codec::decode(&codec::encode(req).unwrap_or_default()).unwrap_or(PeerRequest::Ping)
    }

    /// Reads from `rd` with the server's limits, as node `from` seen as `view`.
    async fn read_as<R: tokio::io::AsyncRead + Unpin>(
        rd: &mut R,
        budget: &FrameBudget,
        from: NodeId,
        view: MemberView,
    ) -> Result<Frame, ReadFailure> {
        let handlers = Semaphore::new(IN_FLIGHT_PER_CONN);
        let v = move || view;
        let lim = ReadLimits {
            per_kind: true,
            budget: Some(budget),
            sender: Some((from, &v)),
            idle: Some((Duration::from_secs(3600), &handlers)),
        };
        read_frame(rd, &lim).await
    }

    #[tokio::test]
    async fn a_non_member_is_judged_from_the_head_and_small_frames_pass_a_full_budget()
    -> Result<(), Box<dyn std::error::Error>> {
        let budget = Arc::new(FrameBudget::new());
        let stranger = MemberView {
            has_membership: true,
            is_member: false,
            removed: false,
        };
        // A non-member's AppendEntries that does not claim to lead is refused from its head,
        // though its body (64 MiB announced) never comes.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&forge::announce_append_entries_as(MAX_FRAME as u32, 5, 1))
            .await?;
        match tokio::time::timeout(
            Duration::from_secs(10),
            read_as(&mut b, &budget, 900, stranger),
        )
        .await?
        {
            Err(ReadFailure::Denied(Refused::NotMember, _)) => {}
            other => return Err(format!("{other:?}").into()),
        }
        // Non-members claiming to lead (900, then 901) share one pool of one full frame: 900
        // sends all of its 64 MiB frame but the last byte and holds the pool; 901 waits.
        // Members 1 and 2 announce full frames and send nothing (one chunk each).
        let mut held = Vec::new();
        for (from, view, body) in [
            (900u64, stranger, MAX_FRAME - 64),
            (901, stranger, 0),
            (1, MemberView::MEMBER, 0),
            (2, MemberView::MEMBER, 0),
        ] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let (close, closed) = oneshot::channel::<()>();
            let writer = tokio::spawn(async move {
                let head = forge::announce_append_entries_as(MAX_FRAME as u32, 5, from);
                let _ = a.write_all(&head).await;
                let _ = a.write_all(&vec![0u8; body]).await;
                let _ = closed.await;
            });
            let shared = budget.clone();
            let reader = tokio::spawn(async move { read_as(&mut b, &shared, from, view).await });
            held.push((close, writer, reader));
            if from == 900 {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while budget.shares.lock().map_or(0, |s| s.held().1) < MAX_FRAME - READ_CHUNK {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the pool was never taken"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        {
            let mut s = budget.shares.lock().map_err(|_| "poisoned")?;
            // The non-members hold one frame; the other id waits.
            assert!(!s.take(902, READ_CHUNK, Share::NonMember));
            assert!(
                s.take(3, READ_CHUNK, Share::Member),
                "members keep the rest"
            );
            s.give(3, READ_CHUNK, Share::Member);
        }
        // Heartbeats and votes, from a member and from the non-member claiming to lead, are
        // read at once while the big budget is held.
        for (from, view) in [
            (3, MemberView::MEMBER),
            (1, MemberView::MEMBER),
            (900, stranger),
        ] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            a.write_all(&forge::append_entries(4, 5, from)).await?;
            let got = tokio::time::timeout(
                Duration::from_secs(10),
                read_as(&mut b, &budget, from, view),
            )
            .await??;
            assert!(
                matches!(got, Frame::Request(4, PeerRequest::AppendEntries(_))),
                "{got:?}"
            );
        }
        for (close, writer, reader) in held {
            drop(close);
            writer.await?;
            assert!(reader.await?.is_err(), "a cut frame is not a frame");
        }
        let s = budget
            .shares
            .lock()
            .map(|s| format!("{s:?}"))
            .unwrap_or_default();
        assert_eq!(s, format!("{:?}", FrameShares::default()));
        Ok(())
    }

    #[tokio::test]
    async fn frames_are_read_within_their_kind_and_the_port_budget()
    -> Result<(), Box<dyn std::error::Error>> {
        let budget = FrameBudget::new();
        let handlers = Semaphore::new(IN_FLIGHT_PER_CONN);
        let lim = ReadLimits {
            per_kind: true,
            budget: Some(&budget),
            sender: None,
            idle: Some((Duration::from_secs(3600), &handlers)),
        };
        let held = |b: &FrameBudget| format!("{:?}", b.shares.lock().map(|s| format!("{s:?}")));
        let none = held(&FrameBudget::new());
        // A whole request arrives, in pieces, and the budget is whole again after.
        let bytes = forge::append_entries(9, 3, 1);
        let (mut a, mut b) = tokio::io::duplex(7);
        let write = tokio::spawn(async move {
            let _ = a.write_all(&bytes).await;
            a
        });
        let got = read_frame(&mut b, &lim).await?;
        assert!(
            matches!(got, Frame::Request(9, PeerRequest::AppendEntries(_))),
            "{got:?}"
        );
        assert_eq!(held(&budget), none);
        drop(write.await?);

        // A vote that declares 1 MiB is refused from its head.
        let mut vote = codec::encode(&Frame::Request(
            1,
            PeerRequest::Vote(VoteRequest {
                vote: Vote::new(3, 1),
                last_log_id: None,
            }),
        ))?;
        let mut framed = ((1u32 << 20).to_be_bytes()).to_vec();
        framed.append(&mut vote);
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&framed).await?;
        match read_frame(&mut b, &lim).await {
            Err(ReadFailure::Refused(why)) => assert!(why.contains("kind 1"), "{why}"),
            other => return Err(format!("{other:?}").into()),
        }
        assert_eq!(held(&budget), none);

        // Every other kind is read whole whatever follows its head: an App request whose
        // bytes would not parse as a vote (its length, then 0xff) is not refused.
        for bytes in [vec![0xffu8; 40], vec![7u8; 3], Vec::new()] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            a.write_all(&encode_frame(&Frame::Request(
                4,
                PeerRequest::App(codec::Bytes(bytes.clone())),
            ))?)
            .await?;
            let got = read_frame(&mut b, &lim).await?;
            assert!(
                matches!(&got, Frame::Request(4, PeerRequest::App(b)) if b.0 == bytes),
                "{got:?}"
            );
        }

        // A response where a request is expected, and a frame over MAX_FRAME.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&encode_frame(&Frame::Response(1, PeerResponse::Pong(1)))?)
            .await?;
        assert!(matches!(
            read_frame(&mut b, &lim).await,
            Err(ReadFailure::Refused(_))
        ));
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&((MAX_FRAME as u32 + 1).to_be_bytes())).await?;
        assert!(matches!(
            read_frame(&mut b, &lim).await,
            Err(ReadFailure::Refused(_))
        ));

        // An AppendEntries announcing a full frame, then the sender goes away: the frame ends
        // with the connection, and the bytes it held go back.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&forge::announce_append_entries(MAX_FRAME as u32))
            .await?;
        a.write_all(&[0u8; 1000]).await?;
        drop(a);
        assert!(matches!(
            read_frame(&mut b, &lim).await,
            Err(ReadFailure::Io(_))
        ));
        assert_eq!(held(&budget), none);
        Ok(())
    }
}
