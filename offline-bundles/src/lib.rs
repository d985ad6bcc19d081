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

mod author;
mod container;
mod error;
mod fsutil;
mod import;
mod keys;
mod manifest;
mod store;
mod trust;

pub use author::{
    BundleSpec, DEFAULT_LIFETIME_SECS, SpecPayload, SpecTime, SpecTrust, create_bundle,
    format_time, manifest_bytes, parse_spec, parse_time, sign_bundle, write_bundle,
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
pub use trust::{
    CONTENT_SIGNATURE_PREFIX, PublicKey, RoleKeys, SignatureDocument, SignatureEntry,
    TRUST_SIGNATURE_PREFIX, TrustDocument, check_trust_version, sign_manifest, signature_prefix,
    verify_signatures,
};

/// Re-exported so callers name the same key type.
pub use ed25519_dalek::SigningKey;
