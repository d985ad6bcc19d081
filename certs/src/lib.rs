//! outpost-certs: the cluster certificate authority and the TLS policy built on it.
//!
//! It owns the certificate profiles (what a node, client or admin certificate contains, as pure
//! functions of the role), the CA (ECDSA P-256, made with rcgen), CSR signing (only the public
//! key is taken from a CSR, after its signature checks out), reading the role back out of a
//! verified certificate, and the rustls configurations: TLS 1.3 only, ring provider, trusting
//! only the cluster CA, or one CA pinned by its SHA-256 for the first contact of a joiner.
//!
//! It deliberately knows nothing of Raft, HTTP, tokens, the replicated state (which serials are
//! revoked, which node ids exist) or where files live; beyond writing one file safely it does no
//! I/O. Callers decide what a role may do; this crate only says which role a certificate binds.
//!
//! Layout: `profile` (what each role's certificate holds, and reading the role back; pure),
//! `fingerprint` (SHA-256 fingerprints of certificates), `ca` (generating and loading the CA,
//! signing leaves from CSRs), `tls` (the rustls configurations) and `files` (writing key and
//! certificate files atomically, keys never readable by others). This file holds the error
//! type every module returns (`CertError`).

mod ca;
mod files;
mod fingerprint;
mod profile;
mod tls;

pub use ca::{CertAuthority, Serial, check_csr, new_key_and_csr, verify_ca_signature};
pub use files::{write_public_file, write_secret_file};
pub use fingerprint::Fingerprint;
pub use profile::{
    ANY_NODE_SERVER_NAME, CLOCK_SKEW_SECS, Role, Validity, node_server_name, not_after_unix,
    not_before_unix, role_of, serial_hex,
};
pub use tls::{
    ClientAuth, LiveIdentity, PinMismatch, TlsIdentity, client_config, live_api_server_config,
    live_client_config, live_server_config, pinned_client_config, server_config,
};

/// Everything that can go wrong in this crate; each variant keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("building or signing a certificate")]
    Rcgen(#[from] rcgen::Error),
    #[error("reading the private key")]
    Key(#[source] rcgen::Error),
    #[error("reading PEM {what}")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no PEM {0} found")]
    Missing(&'static str),
    #[error("parsing {what}")]
    X509 {
        what: &'static str,
        #[source]
        source: x509_parser::error::X509Error,
    },
    #[error("not a SHA-256 fingerprint (64 hex digits, ':' separators allowed): {input:?}")]
    BadFingerprint {
        input: String,
        #[source]
        source: Option<hex::FromHexError>,
    },
    #[error("invalid {what} {value:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    BadName { what: &'static str, value: String },
    #[error("time {unix} is outside what a certificate can hold")]
    Time {
        unix: i64,
        #[source]
        source: time::error::ComponentRange,
    },
    #[error("validity ends ({not_after_unix}) before it starts ({not_before_unix})")]
    EmptyValidity {
        not_before_unix: i64,
        not_after_unix: i64,
    },
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    #[error("the CA certificate is not a CA (no basicConstraints CA:TRUE)")]
    NotACa,
    #[error("certificate request refused: its signature does not verify")]
    CsrSignature(#[source] x509_parser::error::X509Error),
    #[error("certificate request refused: {0} bytes after the request")]
    CsrTrailing(usize),
    #[error("certificate request refused: the key must be ECDSA P-256")]
    CsrKeyAlgorithm(#[source] Option<rcgen::Error>),
    #[error("certificate has no valid Outpost role: {0}")]
    NoRole(String),
    #[error("TLS identity or configuration")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the signature was not made by this CA's key")]
    BadSignature,
}

/// x509-parser wraps its error in nom's; unwrap it so the cause is the X.509 one.
fn x509_error(
    e: x509_parser::nom::Err<x509_parser::error::X509Error>,
) -> x509_parser::error::X509Error {
    match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
        x509_parser::nom::Err::Incomplete(_) => x509_parser::error::X509Error::InvalidCertificate,
    }
}
