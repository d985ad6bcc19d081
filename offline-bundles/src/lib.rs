//! outpost-bundles: the offline update bundle of Outpost — its format, signing keys, trust
//! documents, one-pass streaming verification and the content-addressed blob store.
//!
//! A bundle (`.obundle`) is a plain POSIX tar read in one pass and in strict order: format
//! marker, manifest (exact signed JSON bytes), signature document, payloads in manifest order.
//! Import verifies manifest and signatures before storing any payload byte, streams each
//! payload into the [`BlobStore`] while hashing it, and returns a [`VerifiedBundle`] for the
//! caller to commit; on any error nothing it created is left behind. See `FORMAT.md`.
//!
//! What this crate deliberately does not know: Raft, the cluster, the network and the CLI.
//! Everything that lives in the replicated state (trust keys and thresholds, the cluster id,
//! channel version floors, the cluster time floor, limits) comes in as plain values in an
//! [`ImportContext`]; committing the result, replicating blobs between nodes and drawing a
//! progress bar are the caller's. It reads no clock: times come in as arguments.
//!
//! Threads and locks: every call is blocking I/O (from async code, use `spawn_blocking`).
//! Storing a payload uses one extra thread that writes while the caller's thread reads and
//! hashes. Writers of one store (import, `put_verified`, `gc`, `clean_tmp`) take turns on an
//! exclusive lock file in the store; readers (`verify`, `contains`, `blob_path`) do not lock.
//!
//! The files, lower first (a file names only files above it in this list): `error`, `fsutil`
//! (atomic writes, temp files), `times` (RFC 3339 text), `container` (the tar layout and its
//! entry names), `trust_document` (public keys, roles and the trust document), `manifest` (the
//! signed manifest and its checks), `trust` (signing and checking signatures), `keys` (key
//! files), `store` (the content-addressed blob store), `import` (one-pass verification and
//! storing) and `author` (building and signing bundles).

mod author;
mod container;
mod error;
mod fsutil;
mod import;
mod keys;
mod manifest;
mod store;
mod times;
mod trust;
mod trust_document;

pub use author::{
    BundleSpec, DEFAULT_LIFETIME_SECS, SpecPayload, SpecTime, SpecTrust, create_bundle,
    manifest_bytes, parse_spec, sign_bundle, write_bundle,
};
pub use container::{
    FORMAT_VERSION, MANIFEST_NAME, MARKER_NAME, MARKER_PREFIX, PAYLOAD_PREFIX, SIGNATURES_NAME,
};
pub use error::BundleError;
pub use import::{
    ImportContext, ImportOutcome, Inspection, Progress, SignedHead, StoredPayload, VerifiedBundle,
    VerifyOptions, import_bundle, import_file, inspect_bundle, inspect_file, verify_bundle,
    verify_file, verify_signed_head,
};
pub use keys::{
    PUBLIC_KEY_TAG, SECRET_KEY_TAG, keygen, load_public_key, load_signing_key, parse_public,
    parse_secret, public_file_text, public_key_path,
};
pub use manifest::{
    BundleType, ChannelFloor, FloorCheck, Limits, MAX_NAME_LEN, Manifest, PayloadEntry,
    PayloadKind, TARGET_ANY, check_expiry, check_floor, check_manifest, check_name, check_target,
    is_sha256_hex,
};
pub use store::{BlobStatus, BlobStore, GcReport, IO_BUFFER};
pub use times::{format_time, parse_time};
pub use trust::{
    CONTENT_SIGNATURE_PREFIX, SignatureDocument, SignatureEntry, TRUST_SIGNATURE_PREFIX,
    sign_manifest, signature_prefix, verify_signatures,
};
pub use trust_document::{PublicKey, RoleKeys, TrustDocument, check_trust_version};

/// Re-exported so callers name the same key type.
pub use ed25519_dalek::SigningKey;
