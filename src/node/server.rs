//! Accept loops for the API: HTTPS with optional client certificates, and the local Unix
//! socket. Each connection gets its `Caller` once, from the certificate or socket credentials.
//!
//! The HTTPS port is open to the site LAN, so every connection is bounded (`crate::api::limits`): a slot
//! in the anonymous pool from accept (refused at once when a cap is full), a 5 s handshake,
//! then the authenticated pool if a certificate was shown; an idle watchdog on the bytes that
//! move (10 s anonymous, 60 s with a certificate), hyper's HTTP/1 header read timeout, and a
//! maximum age for anonymous connections.

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

use crate::api::Caller;
use crate::api::limits::{Activity, ApiLimits, Closed, Remote, Slot, Watched};

pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: Arc<ApiLimits>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut prune = tokio::time::interval(crate::api::limits::PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
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
        tokio::spawn(tls_conn(tcp, remote, slot, acceptor, app, limits));
    }
}

async fn tls_conn(
    tcp: TcpStream,
    remote: SocketAddr,
    anonymous: Slot,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
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
        }
    } else {
        // A certificate: into the authenticated pool, out of the anonymous one.
        let Some(slot) = limits.admit_authenticated(remote.ip()) else {
            return;
        };
        drop(anonymous);
        Conn {
            remote: Some(remote),
            limits: Some(limits.clone()),
            activity,
            idle: cfg.idle_authenticated,
            strict: false,
            max_age: None,
            slot: Some(slot),
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
    loop {
        let (stream, _) = match listener.accept().await {
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
        };
        tokio::spawn(async move {
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
}

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
    } = conn;
    let busy = activity.clone();
    let svc = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(caller.clone());
        if let Some(remote) = remote {
            req.extensions_mut().insert(Remote(remote));
        }
        if let Some(limits) = &limits {
            req.extensions_mut().insert(limits.clone());
        }
        let app = app.clone();
        let busy = busy.busy();
        async move {
            let response = app
                .oneshot(req.map(Body::new))
                .await
                .unwrap_or_else(|e| match e {});
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
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
