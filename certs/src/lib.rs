//! outpost-certs: the cluster certificate authority and the TLS policy built on it.
//!
//! It owns the certificate profiles (what a node, client or admin certificate contains), the
//! CA (ECDSA P-256, made with rcgen), CSR signing (only the public key is taken from a CSR),
//! reading the role back out of a verified certificate, and the rustls configurations: TLS 1.3
//! only, ring provider, trusting only the cluster CA, or one CA pinned by its SHA-256 for the
//! first contact of a joiner. It knows nothing of Raft, HTTP or where files live, beyond
//! writing a key file safely.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The TLS server name every node certificate carries, for callers that accept any node.
pub const ANY_NODE_SERVER_NAME: &str = "any.node.outpost";

/// The TLS server name bound to node `id`: a peer dialling node 3 accepts only "n3.node.outpost".
pub fn node_server_name(id: u64) -> String {
    format!("n{id}.node.outpost")
}

const URI_PREFIX: &str = "urn:outpost:";

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    pub fn of_pem(pem: &str) -> Result<Self, CertError> {
        Ok(Self::of_der(&first_cert_der(pem)?))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, CertError> {
        let clean: String = s
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        let bytes = hex::decode(&clean).map_err(|_| CertError::BadFingerprint(s.to_string()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CertError::BadFingerprint(s.to_string()))?;
        Ok(Fingerprint(arr))
    }
}

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Node(u64),
    Client(String),
    Admin(String),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Node(id) => write!(f, "node {id}"),
            Role::Client(c) => write!(f, "client {c}"),
            Role::Admin(a) => write!(f, "admin {a}"),
        }
    }
}

/// A certificate's validity window, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl Validity {
    /// From an hour ago (clock skew between machines) to `days` days from `now_unix`.
    pub fn days_from(now_unix: i64, days: u32) -> Self {
        Validity {
            not_before_unix: now_unix - 3600,
            not_after_unix: now_unix + i64::from(days) * 86_400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("parsing certificate: {0}")]
    Parse(String),
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("no PEM private key found")]
    NoKey,
    #[error("not a SHA-256 fingerprint (64 hex digits): {0:?}")]
    BadFingerprint(String),
    #[error("invalid {what} {value:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    BadName { what: &'static str, value: String },
    #[error("validity: {0}")]
    Validity(String),
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    #[error("certificate request refused: {0}")]
    Csr(#[source] rcgen::Error),
    #[error("certificate has no Outpost role: {0}")]
    NoRole(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn check_name(what: &'static str, value: &str) -> Result<(), CertError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

fn time_of(unix: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CertError::Validity(e.to_string()))
}

fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte for DER to strip
    SerialNumber::from_slice(&b)
}

/// The certificate profile of `role`: every field of an issued certificate comes from here.
pub fn profile(role: &Role, validity: &Validity) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::default();
    p.not_before = time_of(validity.not_before_unix)?;
    p.not_after = time_of(validity.not_after_unix)?;
    if validity.not_after_unix <= validity.not_before_unix {
        return Err(CertError::Validity(
            "not_after must be after not_before".into(),
        ));
    }
    p.serial_number = Some(random_serial());
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    let mut dn = DistinguishedName::new();
    let uri = match role {
        Role::Node(id) => {
            dn.push(DnType::CommonName, format!("outpost node {id}"));
            p.subject_alt_names = vec![
                SanType::DnsName(node_server_name(*id).try_into()?),
                SanType::DnsName(ANY_NODE_SERVER_NAME.try_into()?),
            ];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            format!("{URI_PREFIX}node:{id}")
        }
        Role::Client(c) => {
            check_name("client id", c)?;
            dn.push(DnType::CommonName, format!("outpost client {c}"));
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            format!("{URI_PREFIX}client:{c}")
        }
        Role::Admin(a) => {
            check_name("admin name", a)?;
            dn.push(DnType::CommonName, format!("outpost admin {a}"));
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            format!("{URI_PREFIX}admin:{a}")
        }
    };
    p.subject_alt_names.push(SanType::URI(uri.try_into()?));
    p.distinguished_name = dn;
    Ok(p)
}

/// The cluster CA: its certificate and signing key.
pub struct CertAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl CertAuthority {
    pub fn generate(cluster_id: &str, cluster_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut p = CertificateParams::default();
        p.not_before = time_of(now - 3600)?;
        p.not_after = time_of(now + 20 * 365 * 86_400)?;
        p.serial_number = Some(random_serial());
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Outpost CA {cluster_name}"));
        dn.push(DnType::OrganizationName, cluster_id);
        p.distinguished_name = dn;
        let cert = p.self_signed(&key)?;
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = first_cert_der(cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| CertError::Parse(e.to_string()))?;
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(CertError::KeyMismatch);
        }
        Ok(CertAuthority {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.cert_der)
    }

    /// Signs a leaf for `role`. From the CSR only its public key is used, after its own
    /// signature checks out; names, CA flag and usages all come from `profile`.
    pub fn issue(
        &self,
        csr_pem: &str,
        role: &Role,
        validity: &Validity,
    ) -> Result<String, CertError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CertError::Csr)?;
        let params = profile(role, validity)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        Ok(params.signed_by(&csr.public_key, &issuer)?.pem())
    }

    /// A new key and a leaf for it (admin certificates, tests).
    pub fn issue_with_new_key(
        &self,
        role: &Role,
        validity: &Validity,
    ) -> Result<(String, Zeroizing<String>), CertError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = profile(role, validity)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
    }
}

/// New ECDSA P-256 key and a CSR for it: (key PEM, CSR PEM).
pub fn new_key_and_csr(common_name: &str) -> Result<(Zeroizing<String>, String), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    let csr = p.serialize_request(&key)?;
    Ok((Zeroizing::new(key.serialize_pem()), csr.pem()?))
}

fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(CertError::NoCertificate)?
        .map_err(|e| CertError::Parse(e.to_string()))
}

fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::Parse(e.to_string()))?;
    Ok(cert)
}

/// The role bound in a (verified) leaf certificate. See the crate docs for the rules.
pub fn role_of(cert_der: &[u8]) -> Result<Role, CertError> {
    let cert = parse(cert_der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(e.to_string()))?
        .ok_or_else(|| CertError::NoRole("no subject alternative names".into()))?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with(URI_PREFIX) => Some(*u),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [one] => *one,
        [] => return Err(CertError::NoRole("no urn:outpost: URI".into())),
        _ => {
            return Err(CertError::NoRole(format!(
                "{} urn:outpost: URIs (exactly one allowed)",
                uris.len()
            )));
        }
    };
    let eku = cert
        .extended_key_usage()
        .map_err(|e| CertError::Parse(e.to_string()))?
        .map(|e| (e.value.server_auth, e.value.client_auth))
        .unwrap_or((false, false));
    let rest = &uri[URI_PREFIX.len()..];
    let (kind, id) = rest
        .split_once(':')
        .ok_or_else(|| CertError::NoRole(format!("malformed role URI {uri}")))?;
    let role = match kind {
        "node" => {
            let id: u64 = id
                .parse()
                .map_err(|_| CertError::NoRole(format!("node id in {uri} is not a number")))?;
            if eku != (true, true) {
                return Err(CertError::NoRole(format!(
                    "{uri}: a node certificate needs serverAuth and clientAuth"
                )));
            }
            Role::Node(id)
        }
        "client" | "admin" => {
            check_name("role id", id).map_err(|e| CertError::NoRole(e.to_string()))?;
            if eku.0 {
                return Err(CertError::NoRole(format!(
                    "{uri}: a {kind} certificate must not carry serverAuth"
                )));
            }
            if !eku.1 {
                return Err(CertError::NoRole(format!(
                    "{uri}: a {kind} certificate needs clientAuth"
                )));
            }
            if kind == "client" {
                Role::Client(id.to_string())
            } else {
                Role::Admin(id.to_string())
            }
        }
        other => {
            return Err(CertError::NoRole(format!(
                "unknown role {other:?} in {uri}"
            )));
        }
    };
    Ok(role)
}

pub fn not_after_unix(cert_der: &[u8]) -> Result<i64, CertError> {
    Ok(parse(cert_der)?.validity().not_after.timestamp())
}

pub fn serial_hex(cert_der: &[u8]) -> Result<String, CertError> {
    Ok(hex::encode(parse(cert_der)?.raw_serial()))
}

/// A certificate chain and its key, ready for rustls.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// chain = [leaf, CA] so peers that pin the CA by fingerprint find it in the chain.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, CertError> {
        let leaf = first_cert_der(cert_pem)?;
        let ca = first_cert_der(ca_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| CertError::NoKey)?;
        Ok(TlsIdentity {
            chain: vec![leaf, ca],
            key,
        })
    }
}

pub enum ClientAuth {
    Required,
    Optional,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, CertError> {
    let mut roots = RootCertStore::empty();
    roots.add(first_cert_der(ca_pem)?)?;
    Ok(Arc::new(roots))
}

fn alpn_list(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|a| a.to_vec()).collect()
}

pub fn server_config(
    ca_pem: &str,
    id: &TlsIdentity,
    auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let provider = provider();
    let builder = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone());
    let verifier = match auth {
        ClientAuth::Required => builder.build()?,
        ClientAuth::Optional => builder.allow_unauthenticated().build()?,
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())?;
    cfg.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(cfg))
}

pub fn client_config(
    ca_pem: &str,
    id: Option<&TlsIdentity>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, CertError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?);
    let mut cfg = match id {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(cfg))
}

/// Verifies a server against the one CA certificate, found in the server's own chain, whose
/// SHA-256 equals the pin. Everything else is webpki's usual verification.
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
            let presented: Vec<String> = std::iter::once(end_entity)
                .chain(intermediates.iter())
                .map(|c| Fingerprint::of_der(c).to_string())
                .collect();
            return Err(rustls::Error::General(format!(
                "CA fingerprint mismatch: the token pins {}, the server presented {}",
                self.pin,
                presented.join(", ")
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
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

fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

/// Writes a private key or secret: temp file (mode 0600 from creation) + fsync + rename + dir fsync.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_file(path, contents, 0o600)
}

/// Writes public material the same way, mode 0644.
pub fn write_public_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_file(path, contents, 0o644)
}
