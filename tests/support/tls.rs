//! Connections to a node from a chosen source address of the loopback range (each source
//! is a "machine" to the node's per-source caps), with or without TLS, and waiting for the
//! node to close one.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// A TCP connection from `src` (an address of the loopback range) to `to`.
pub async fn connect_from(src: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((src, 0)))?;
    socket.connect(to).await
}

/// A TLS connection from `src` to the node at `to` (any node's server name).
pub async fn tls_from(
    src: [u8; 4],
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>> {
    let tcp = connect_from(src, to).await?;
    let name = rustls::pki_types::ServerName::try_from(outpost_certs::ANY_NODE_SERVER_NAME)?;
    Ok(tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?)
}

/// True when the server closed `t` before `deadline` (end of stream or an error); false if
/// it was still open then. Any bytes the server sends first (a refusal) are read and skipped.
pub async fn closed_by(t: &mut TlsStream<TcpStream>, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, t.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}
