//! Accept loops for the API: HTTPS with optional client certificates, and the local Unix
//! socket. Each connection gets its `Caller` once, from the certificate or socket credentials.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tower::ServiceExt;

use crate::api::Caller;
use crate::refusals::Source;

pub async fn serve_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "api accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "api TLS handshake refused");
                        return;
                    }
                    Err(_) => return,
                };
            let caller = {
                let (_, session) = tls.get_ref();
                match session.peer_certificates().and_then(|c| c.first()) {
                    None => Caller::Anonymous,
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
            serve_conn(TokioIo::new(tls), app, caller, Some(Source(remote.ip()))).await;
        });
    }
}

pub async fn serve_unix(listener: UnixListener, app: Router) {
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
        tokio::spawn(serve_conn(TokioIo::new(stream), app, Caller::Local, None));
    }
}

async fn serve_conn<I>(io: TokioIo<I>, app: Router, caller: Caller, source: Option<Source>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(caller.clone());
        if let Some(s) = source {
            req.extensions_mut().insert(s);
        }
        let app = app.clone();
        async move {
            Ok::<_, Infallible>(
                app.oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    });
    if let Err(e) = auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, TowerToHyperService::new(svc))
        .await
    {
        tracing::debug!(error = %e, "api connection ended");
    }
}
