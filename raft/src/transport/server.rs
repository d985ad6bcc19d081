//! The accepting side: the peer port's listener (`serve`) and one task pair per connection
//! (`serve_conn`), under the budgets of `peer_limits`, handing each admitted request to the
//! node's `PeerHandler`.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::admission::{MemberView, admission};
use super::frame::{Frame, PeerRequest, PeerResponse, encode_frame};
use super::read::{FrameBudget, ReadFailure, ReadLimits, absurd_term_in_request, read_frame};
use super::tls::{Authorize, PeerTls};
use crate::failover::PeerWatch;
use crate::peer_limits::{
    HANDSHAKE_TIMEOUT, IDLE, IN_FLIGHT_PER_CONN, MAX_TERM, NODE_TOTAL, PER_NODE,
    PRE_HANDSHAKE_PER_SOURCE, PRE_HANDSHAKE_TOTAL, PeerPortCounters, Pool, Refused, Slot, Throttle,
};
use crate::types::NodeId;

/// What the listener does with a request from an authenticated peer.
pub(crate) trait PeerHandler: Clone + Send + Sync + 'static {
    /// What this node knows of node `from`'s membership, for `admission`. Called for every
    /// request: must be cheap (in memory, no I/O).
    fn member_view(&self, from: NodeId) -> MemberView;
    fn handle(&self, from: NodeId, req: PeerRequest) -> impl Future<Output = PeerResponse> + Send;
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
    // Every connection's task is held here, so that aborting this task (the node shuts down,
    // e.g. to start again in the same process) closes its connections too: a peer must not
    // go on talking to a stopped Raft core.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, remote) = match accepted {
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
        conns.spawn(async move {
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
