//! rustls configurations: TLS 1.3 only, the ring provider passed explicitly, and trust in
//! exactly one CA: the cluster's, given as PEM, or one pinned by fingerprint on first contact.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::fingerprint::first_cert_der;
use crate::{CertError, Fingerprint};

/// A certificate chain and its private key, ready for rustls.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// chain = [leaf, CA] so peers that pin the CA by fingerprint can find it in the chain.
    /// Refuses a key that does not belong to the leaf.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, CertError> {
        let leaf = first_cert_der(cert_pem)?;
        let ca = first_cert_der(ca_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| match source {
                rustls::pki_types::pem::Error::NoItemsFound => CertError::Missing("private key"),
                source => CertError::Pem {
                    what: "private key",
                    source,
                },
            })?;
        let chain = vec![leaf, ca];
        // Loads the key and compares its public half with the leaf's.
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())?;
        Ok(TlsIdentity { chain, key })
    }
}

/// Shows the chain's fingerprints, never the key.
impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain: Vec<Fingerprint> = self.chain.iter().map(|c| Fingerprint::of_der(c)).collect();
        f.debug_struct("TlsIdentity")
            .field("chain", &chain)
            .finish_non_exhaustive()
    }
}

/// A node's own certificate and key, replaceable while servers and clients run: configs built
/// with [`live_server_config`] / [`live_client_config`] present whatever it holds at each new
/// handshake, so a renewed certificate is used without a restart (established connections
/// keep the one they started with).
pub struct LiveIdentity {
    current: std::sync::RwLock<Arc<CertifiedKey>>,
}

impl LiveIdentity {
    pub fn new(id: &TlsIdentity) -> Result<Arc<LiveIdentity>, CertError> {
        Ok(Arc::new(LiveIdentity {
            current: std::sync::RwLock::new(Arc::new(certified(id)?)),
        }))
    }

    /// Presents `id` from the next handshake on.
    pub fn replace(&self, id: &TlsIdentity) -> Result<(), CertError> {
        let key = Arc::new(certified(id)?);
        if let Ok(mut current) = self.current.write() {
            *current = key;
        }
        Ok(())
    }

    /// The leaf currently presented (DER).
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.get().and_then(|k| k.cert.first().cloned())
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|k| k.clone())
    }
}

fn certified(id: &TlsIdentity) -> Result<CertifiedKey, CertError> {
    Ok(CertifiedKey::from_der(
        id.chain.clone(),
        id.key.clone_key(),
        &provider(),
    )?)
}

impl fmt::Debug for LiveIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leaf = self.leaf().map(|c| Fingerprint::of_der(&c));
        f.debug_struct("LiveIdentity")
            .field("leaf", &leaf)
            .finish_non_exhaustive()
    }
}

impl rustls::server::ResolvesServerCert for LiveIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl rustls::client::ResolvesClientCert for LiveIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Like [`server_config`], presenting whatever `id` holds at each handshake.
pub fn live_server_config(
    ca_pem: &str,
    id: Arc<LiveIdentity>,
    auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let cfg = server_builder(ca_pem, auth)?.with_cert_resolver(id);
    Ok(Arc::new(finish_server(cfg, alpn)))
}

/// The API's server config: like [`live_server_config`] with client certificates optional
/// (enrollment and joining come without one), and it issues one TLS 1.3 session
/// ticket per handshake, so that an agent coming back for its next sync resumes instead of
/// making a full handshake (no certificate signature or chain verification on either side).
/// Tickets are sealed with keys this process makes and rotates (rustls' `Ticketer`: 6 h
/// keys, tickets valid 12 h); they die with the process, and another node cannot open them
/// (its handshake is then a full one). A resumed session carries the certificate of the
/// handshake it resumes, which rustls does not check again: the server checks its expiry
/// itself on every connection, and revocation is checked per request as always.
pub fn live_api_server_config(
    ca_pem: &str,
    id: Arc<LiveIdentity>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let cfg = server_builder(ca_pem, ClientAuth::Optional)?.with_cert_resolver(id);
    let mut cfg = finish_server(cfg, alpn);
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    cfg.send_tls13_tickets = 1;
    Ok(Arc::new(cfg))
}

/// Like [`client_config`] with a client certificate, presenting whatever `id` holds at each
/// handshake.
pub fn live_client_config(
    ca_pem: &str,
    id: Arc<LiveIdentity>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, CertError> {
    let mut cfg = client_builder(ca_pem)?.with_client_cert_resolver(id);
    cfg.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(cfg))
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate of the cluster CA (peers).
    Required,
    /// Anonymous clients allowed (enrollment/join); a presented certificate must still chain
    /// to the CA.
    Optional,
}

/// The pinned fingerprint was not in the server's chain. Reported inside the handshake error
/// (`rustls::Error::InvalidCertificate(CertificateError::Other(..))`), so callers can downcast.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "CA fingerprint mismatch: expected {expected}, the server presented {}",
    list(presented)
)]
pub struct PinMismatch {
    pub expected: Fingerprint,
    /// Every certificate of the presented chain, leaf first.
    pub presented: Vec<Fingerprint>,
}

/// rustls prints a certificate error with `{:?}`, so Debug reads like Display: the operator
/// of a failed join sees both fingerprints in plain hex.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// TLS 1.3 only, ring provider, presents `id.chain`, trusts only `ca_pem` for client certs.
/// The ALPN protocols given are offered (e.g. [b"h2", b"http/1.1"] for the API).
pub fn server_config(
    ca_pem: &str,
    id: &TlsIdentity,
    auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let cfg =
        server_builder(ca_pem, auth)?.with_single_cert(id.chain.clone(), id.key.clone_key())?;
    Ok(Arc::new(finish_server(cfg, alpn)))
}

/// TLS 1.3 only; trusts only `ca_pem`; presents `id` as client cert when given.
pub fn client_config(
    ca_pem: &str,
    id: Option<&TlsIdentity>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, CertError> {
    let builder = client_builder(ca_pem)?;
    let mut cfg = match id {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(cfg))
}

/// A server config up to its certificate: TLS 1.3, ring, client certificates of `ca_pem`
/// required or optional.
fn server_builder(
    ca_pem: &str,
    auth: ClientAuth,
) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>, CertError>
{
    let provider = provider();
    let builder = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone());
    let verifier = match auth {
        ClientAuth::Required => builder.build()?,
        ClientAuth::Optional => builder.allow_unauthenticated().build()?,
    };
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier))
}

/// The last touches of every server config: the ALPN protocols, and no TLS 1.3 session
/// tickets. Peers hold their connections and each CLI command is a new process, so for them
/// a server making and sending two tickets per handshake (rustls' default) works for
/// nothing; only the API's agents resume ([`live_api_server_config`]).
fn finish_server(mut cfg: rustls::ServerConfig, alpn: &[&[u8]]) -> rustls::ServerConfig {
    cfg.alpn_protocols = alpn_list(alpn);
    cfg.send_tls13_tickets = 0;
    cfg
}

/// A client config up to its certificate: TLS 1.3, ring, trusting only `ca_pem`.
fn client_builder(
    ca_pem: &str,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, CertError>
{
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?))
}

/// For join/enroll: the server's presented chain must contain a certificate whose SHA-256
/// equals `pin`; that certificate becomes the ONLY trust anchor, and the leaf is verified
/// against it with webpki (signature, validity, server name, TLS 1.3 handshake signature).
/// A mismatch fails the handshake with a [`PinMismatch`] naming both fingerprints.
pub fn pinned_client_config(
    pin: Fingerprint,
    id: Option<&TlsIdentity>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, CertError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin, provider }));
    let mut cfg = match id {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(cfg))
}

/// ring, with AES-128-GCM-SHA256 first: the TLS 1.3 suite every implementation must offer,
/// and the cheapest of the three where it matters to a node, the handshakes of its agents'
/// syncs (its key schedule hashes with SHA-256, which x86 CPUs do in hardware, where
/// AES-256-GCM-SHA384, ring's first choice, hashes with SHA-384 in software). Both sides of
/// every Outpost connection use this order; the other two suites stay for other clients.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, CertError> {
    let mut roots = RootCertStore::empty();
    roots.add(first_cert_der(ca_pem)?)?;
    Ok(Arc::new(roots))
}

fn alpn_list(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|a| a.to_vec()).collect()
}

fn list(fps: &[Fingerprint]) -> String {
    if fps.is_empty() {
        return "no certificates".into();
    }
    fps.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Verifies a server against the one certificate of its own chain whose SHA-256 equals the
/// pin, used as the only trust anchor. Everything else is webpki's usual verification: this
/// replaces where the anchor comes from, not the checks.
#[derive(Debug)]
struct PinnedCa {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(anchor) = intermediates
            .iter()
            .find(|c| Fingerprint::of_der(c) == self.pin)
        else {
            let presented = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| Fingerprint::of_der(c))
                .collect();
            let mismatch = PinMismatch {
                expected: self.pin,
                presented,
            };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::Other(OtherError(Arc::new(e))))?;
        // The anchor is the only other certificate we accept, so no intermediates.
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with a TLS 1.3-only config; refuse rather than trust.
        Err(rustls::Error::General(
            "TLS 1.2 is not accepted: Outpost speaks TLS 1.3 only".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
