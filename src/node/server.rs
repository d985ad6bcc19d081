//! Accept loops for the API: HTTPS with optional client certificates, and the local Unix
//! socket. Each connection gets its `Caller` once, from the certificate or socket credentials.
//!
//! The HTTPS port is open to the site LAN, so every connection is bounded (`crate::api::limits`): a slot
//! in the anonymous pool from accept (refused at once when a cap is full), a 5 s handshake,
//! then, if a certificate was shown, a check of its identity from memory (a revoked client or
//! admin, a removed node: closed at once) and the authenticated pool within the identity's
//! own cap; an idle watchdog on the bytes that move (10 s anonymous, 60 s with a
//! certificate), hyper's HTTP/1 header read timeout, HTTP/2 streams and windows, and a
//! maximum age (2 min anonymous, 1 h with a certificate).
//!
//! Every request's body follows its caller (`requests::body_rule`): refused unread, or read up
//! to the route's limit for that caller, after room for it was reserved among the bodies
//! in flight of the caller's class (`ApiLimits::reserve_body`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::api::limits::{Activity, ApiLimits, Closed, Remote, Slot, Watched};
use crate::api::requests::{BodyRule, Class, body_rule};
use crate::api::{AppState, Caller};

pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    state: Arc<AppState>,
    limits: Arc<ApiLimits>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut prune = tokio::time::interval(crate::api::limits::PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Every connection's task is held here: aborting this task (the node stops, e.g. to
    // start again in the same process) closes its connections, so that no agent goes on
    // talking to a stopped node.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = prune.tick() => {
                limits.prune();
                continue;
            }
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "api accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Every connection is anonymous until its handshake shows a certificate. A full cap
        // closes it now (counted; logged once a minute per source): nothing queues.
        let Some(slot) = limits.admit_anonymous(remote.ip()) else {
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        let state = state.clone();
        conns.spawn(tls_conn(tcp, remote, slot, acceptor, (app, state), limits));
    }
}

async fn tls_conn(
    tcp: TcpStream,
    remote: SocketAddr,
    anonymous: Slot,
    acceptor: tokio_rustls::TlsAcceptor,
    (app, state): (Router, Arc<AppState>),
    limits: Arc<ApiLimits>,
) {
    let cfg = limits.config().clone();
    let born = Instant::now();
    let _ = tcp.set_nodelay(true);
    let activity = Activity::new();
    let handshake = tokio::time::timeout(
        cfg.handshake_timeout,
        acceptor.accept(Watched::new(tcp, activity.clone())),
    );
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "api TLS handshake refused");
                return;
            }
            Err(_) => {
                limits.count_closed(Closed::HandshakeTimeout);
                return;
            }
        },
        _ = anonymous.kicked() => {
            limits.count_closed(Closed::Evicted);
            return;
        }
    };
    let caller = {
        let (_, session) = tls.get_ref();
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        limits.count_handshake(resumed);
        match session.peer_certificates().and_then(|c| c.first()) {
            None => Caller::Anonymous,
            Some(leaf) if resumed && !still_valid(leaf) => {
                if limits.count_closed_logged(Closed::ExpiredResumption, remote.ip()) {
                    tracing::warn!(%remote, "refusing a resumed TLS session: its client certificate has expired (counted in /metrics, logged once a minute per source)");
                }
                return;
            }
            // The chain was verified against the cluster CA by rustls; the role comes
            // from our own certificate profile.
            Some(leaf) => match Caller::from_cert(leaf) {
                Ok(caller) => caller,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "refusing certificate without an Outpost role");
                    return;
                }
            },
        }
    };
    let conn = if caller == Caller::Anonymous {
        Conn {
            remote: Some(remote),
            limits: Some(limits.clone()),
            activity,
            idle: cfg.idle_anonymous,
            strict: true,
            max_age: Some(born + cfg.anonymous_max_age),
            slot: Some(anonymous),
            refusal: None,
        }
    } else {
        // A revoked or removed identity gets nothing more: no slot of the authenticated
        // pool (from memory while the state has not changed). It keeps its anonymous slot
        // for at most `REFUSED_FOR`, in which each request is answered 403 unread (so an
        // agent or an admin learns why) and the connection then closed.
        if let Some(refusal) = crate::api::refused_identity(&state, &caller).await {
            if limits.count_closed_logged(Closed::Revoked, remote.ip()) {
                tracing::warn!(%remote, who = %caller.actor(), error = ?refusal, "refusing a TLS connection after its handshake: its certificate may no longer call (counted in /metrics, logged once a minute per source)");
            }
            let conn = Conn {
                remote: Some(remote),
                limits: None,
                activity,
                idle: cfg.idle_anonymous,
                strict: true,
                max_age: Some(Instant::now() + REFUSED_FOR),
                slot: Some(anonymous),
                refusal: Some(refusal),
            };
            serve_conn(TokioIo::new(tls), app, caller, conn).await;
            return;
        }
        // A certificate: into the authenticated pool (within its identity's cap), out of
        // the anonymous one.
        let Some(slot) = limits.admit_authenticated(remote.ip(), &caller) else {
            return;
        };
        drop(anonymous);
        Conn {
            remote: Some(remote),
            limits: Some(limits.clone()),
            activity,
            idle: cfg.idle_authenticated,
            strict: false,
            max_age: Some(born + cfg.authenticated_max_age),
            slot: Some(slot),
            refusal: None,
        }
    };
    if let Some(closed) = serve_conn(TokioIo::new(tls), app, caller, conn).await {
        limits.count_closed(closed);
    }
}

/// rustls verifies a client certificate on a full handshake only. A resumed session carries
/// the certificate of the handshake it resumes (the API issues session tickets for agents'
/// next syncs), which may have expired since: its end of validity is checked here.
fn still_valid(leaf: &[u8]) -> bool {
    outpost_certs::not_after_unix(leaf).is_ok_and(|end| end >= crate::shared::now_secs())
}

/// The local socket is root-only: no caps, but the idle timeout of authenticated connections.
pub async fn serve_unix(listener: UnixListener, app: Router) {
    let idle = crate::api::limits::LimitsConfig::default().idle_authenticated;
    // As in `serve_tls`: the connections end with this task.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, _) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The socket is 0600 in a 0700 directory; the peer's uid is checked as well.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me || cred.uid() == 0 => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "refusing admin socket connection from another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: cannot read peer credentials");
                continue;
            }
        }
        let app = app.clone();
        let activity = Activity::new();
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let conn = Conn {
            remote: None,
            limits: None,
            activity,
            idle,
            strict: false,
            max_age: None,
            slot: None,
            refusal: None,
        };
        conns.spawn(async move {
            serve_conn(io, app, Caller::Local, conn).await;
        });
    }
}

/// What bounds one connection once its caller is known.
struct Conn {
    /// Put into each request's extensions (with `limits`) for the enroll/join rate limit.
    remote: Option<SocketAddr>,
    limits: Option<Arc<ApiLimits>>,
    activity: Arc<Activity>,
    /// Closed when no byte moved for this long (also hyper's HTTP/1 header read timeout).
    idle: Duration,
    /// The idle clock runs even while a request is being handled (anonymous callers).
    strict: bool,
    max_age: Option<Instant>,
    /// Held until the connection ends; an anonymous slot may be taken over (`kicked`).
    slot: Option<Slot>,
    /// The answer to every request (unread, then the connection closes): an identity that
    /// may no longer call.
    refusal: Option<crate::api::ApiError>,
}

/// How long a connection of a revoked or removed identity is kept to answer its refusal.
const REFUSED_FOR: Duration = Duration::from_secs(5);

/// Serves HTTP/1 or HTTP/2 until the client goes, or the watchdog or a take-over ends the
/// connection (then returns why).
async fn serve_conn<I>(io: TokioIo<I>, app: Router, caller: Caller, conn: Conn) -> Option<Closed>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        remote,
        limits,
        activity,
        idle,
        strict,
        max_age,
        slot,
        refusal,
    } = conn;
    let busy = activity.clone();
    let class = Class::of(&caller);
    let streams = limits.as_ref().map_or(
        crate::api::limits::LimitsConfig::default().http2_streams,
        |l| l.config().http2_streams,
    );
    // This connection's own share of body bytes in flight (its HTTP/2 streams share it).
    let conn_bodies = Arc::new(tokio::sync::Semaphore::new(
        crate::api::requests::connection_body_bytes(class),
    ));
    let svc = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let rule = body_rule(class, req.method(), req.uri().path());
        let conn_bodies = conn_bodies.clone();
        req.extensions_mut().insert(caller.clone());
        if let Some(remote) = remote {
            req.extensions_mut().insert(Remote(remote));
        }
        if let Some(limits) = &limits {
            req.extensions_mut().insert(limits.clone());
        }
        let app = app.clone();
        let limits = limits.clone();
        let busy = busy.busy();
        let refusal = refusal.clone();
        async move {
            if let Some(refusal) = refusal {
                use axum::response::IntoResponse;
                let mut response = refusal.into_response();
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
                drop(busy);
                return Ok::<_, Infallible>(response);
            }
            let response =
                match admit_body(rule, class, &req, limits.as_deref(), &conn_bodies).await {
                    Err(refused) => refused,
                    Ok((limit, reserved)) => {
                        let req = req.map(|b| Body::new(http_body_util::Limited::new(b, limit)));
                        let response = app.oneshot(req).await.unwrap_or_else(|e| match e {});
                        // The handler has read (and dropped) the body: its room is free again.
                        drop(reserved);
                        response
                    }
                };
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_buf_size(HTTP1_MAX_BUF);
    // What one HTTP/2 connection may make the node hold: a few streams, small windows
    // (a body arrives as it is read, not ahead of it) and small header lists.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_send_buf_size(H2_MAX_SEND_BUF);
    let served = builder.serve_connection(io, TowerToHyperService::new(svc));
    let kicked = async {
        match &slot {
            Some(s) => s.kicked().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = served => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "api connection ended");
            }
            None
        }
        why = activity.watchdog(idle, strict, max_age) => Some(why),
        _ = kicked => Some(Closed::Evicted),
    }
}

/// hyper's HTTP/1 read buffer (its default is about 400 KiB): headers of this API are small.
const HTTP1_MAX_BUF: usize = 64 << 10;
const H2_STREAM_WINDOW: u32 = 256 << 10;
const H2_CONN_WINDOW: u32 = 1 << 20;
const H2_MAX_HEADER_LIST: u32 = 64 << 10;
const H2_MAX_SEND_BUF: usize = 256 << 10;

/// Applies a request's body rule before a byte of its body is read: `Err(answer)` when it is
/// refused (by route and caller, by its declared length, or because its class's body bytes
/// are all in flight); else the limit to read up to and the room reserved for it (held until
/// the handler returns). The local socket (`limits` None) reserves nothing.
async fn admit_body(
    rule: BodyRule,
    class: Class,
    req: &Request<hyper::body::Incoming>,
    limits: Option<&ApiLimits>,
    connection: &Arc<tokio::sync::Semaphore>,
) -> Result<(usize, Option<Reserved>), axum::response::Response> {
    use axum::response::IntoResponse;
    use hyper::body::Body as _;
    let limit = match rule {
        BodyRule::Read(limit) => limit,
        BodyRule::Refuse(status) => {
            let why = if status == hyper::StatusCode::UNAUTHORIZED {
                "a client certificate is required"
            } else {
                "this identity may not use this route"
            };
            return Err(crate::api::ApiError::new(status, why).into_response());
        }
    };
    let hint = req.body().size_hint();
    if hint.lower() > limit as u64 {
        return Err(crate::api::ApiError::new(
            hyper::StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the {limit} bytes this route accepts"),
        )
        .into_response());
    }
    // What the body may still bring: its declared length, else the route's limit.
    let may_read = hint.upper().unwrap_or(limit as u64).min(limit as u64);
    let reserved = match limits {
        Some(limits) if may_read > 0 => {
            // The connection's own share first, so that one connection waiting on itself
            // holds nothing of its class's budget.
            let Some(own) = limits
                .reserve_connection_body(class, connection, may_read)
                .await
            else {
                return Err(crate::api::limits::too_many_of(
                    "request bodies in flight on this connection",
                    Duration::from_secs(1),
                ));
            };
            let Some(shared) = limits.reserve_body(class, may_read).await else {
                return Err(crate::api::limits::too_many_of(
                    "request bodies in flight",
                    Duration::from_secs(1),
                ));
            };
            Some((own, shared))
        }
        _ => None,
    };
    Ok((limit, reserved))
}

/// Room reserved for a body: on its connection and in its class, both held until the
/// handler returns.
type Reserved = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
);
