//! What the node hands the transport: its TLS configs, how a peer's name and id are bound in
//! its certificate (`PeerTls`), and the peer port's ALPN name.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::types::NodeId;

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
