//! The dialling side: one persistent connection per target node (`PeerClients`), shared by
//! Raft replication and the node's own calls, each request matched to its answer by id; and
//! `ping`, the identity check for tests and diagnostics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::frame::{Frame, FrameError, PeerRequest, PeerResponse, encode_frame};
use super::read::{ReadLimits, absurd_term_in_response, read_frame};
use super::tls::PeerTls;
use crate::peer_limits::MAX_TERM;
use crate::types::NodeId;

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
