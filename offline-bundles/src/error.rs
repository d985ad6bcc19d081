//! The one error type of this crate: every refusal reason has its own variant, and every
//! Display names the offending entry (tar entry name, payload name, key id or field).

use std::io;
use std::path::PathBuf;

/// Why a bundle, a key, a spec or a store operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    // ---- container (tar) ----
    /// The first entry is not the `outpost-bundle` marker, or its text is not ours.
    #[error("not an outpost bundle: first entry {entry:?} is not the format marker")]
    WrongFormat { entry: String },
    /// The marker names a format version this build does not read.
    #[error("unsupported bundle format {found:?} in entry {entry:?} (this build reads format 1)")]
    UnsupportedFormat { entry: String, found: String },
    /// A tar header block that is not a valid POSIX ustar header (checksum, magic, numbers).
    #[error("malformed tar header at byte {offset}: {reason}")]
    MalformedHeader { offset: u64, reason: &'static str },
    /// Links, devices, directories, FIFOs, PAX/GNU extension headers: only regular files are allowed.
    #[error("entry {entry:?} is a {kind}, only regular files are allowed")]
    NotRegularFile { entry: String, kind: &'static str },
    /// An absolute name, a `..` component, or a name with characters we never write.
    #[error("unsafe name {entry:?}: {reason}")]
    UnsafeName { entry: String, reason: &'static str },
    /// Entries not in the order marker, manifest, signatures, payloads in manifest order.
    #[error("entry {found:?} out of order: expected {expected:?}")]
    OutOfOrder { expected: String, found: String },
    /// The file ended inside an entry or before the end-of-archive blocks.
    #[error("truncated bundle: file ends inside {entry:?}")]
    Truncated { entry: String },
    /// Bytes after the end-of-archive blocks other than tar's zero record padding.
    #[error("trailing garbage after the end of the archive at byte {offset}")]
    TrailingGarbage { offset: u64 },
    /// Padding after an entry's data is not zero: the framing was tampered with.
    #[error("non-zero padding after entry {entry:?}")]
    BadPadding { entry: String },

    // ---- manifest and signature documents ----
    /// The manifest entry is larger than the configured limit (checked before reading it).
    #[error("manifest {entry:?} is {size} bytes, over the limit of {limit}")]
    ManifestTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    /// The signature entry is larger than the configured limit (checked before reading it).
    #[error("signature document {entry:?} is {size} bytes, over the limit of {limit}")]
    SignaturesTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    /// The manifest is not valid JSON for our schema.
    #[error("manifest {entry:?} does not parse")]
    ManifestParse {
        entry: String,
        #[source]
        source: serde_json::Error,
    },
    /// The manifest parses but breaks a rule of the format.
    #[error("manifest field {field:?} is invalid: {reason}")]
    ManifestInvalid { field: String, reason: String },
    /// More payloads than the configured limit.
    #[error("manifest lists {count} payloads, over the limit of {limit}")]
    TooManyPayloads { count: usize, limit: usize },
    /// One payload declares more bytes than the configured limit.
    #[error("payload {entry:?} declares {size} bytes, over the limit of {limit}")]
    PayloadTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    /// The payloads together declare more bytes than the configured limit.
    #[error("payloads total {size} bytes, over the limit of {limit}")]
    BundleTooLarge { size: u64, limit: u64 },
    /// The signature document is not valid JSON for our schema.
    #[error("signature document {entry:?} does not parse")]
    SignaturesParse {
        entry: String,
        #[source]
        source: serde_json::Error,
    },

    // ---- signatures and trust ----
    /// No signature at all.
    #[error("bundle {entry:?} carries no signature")]
    MissingSignature { entry: String },
    /// A signature by a trusted key that does not verify (strictly) over prefix + manifest bytes.
    #[error("bad signature by key {key_id}")]
    BadSignature { key_id: String },
    /// Not enough trusted signatures, and at least one came from a key nobody trusts.
    #[error("signature by unknown key {key_id}")]
    UnknownKey { key_id: String },
    /// Fewer distinct trusted signatures than the role's threshold.
    #[error("{role} threshold not met: {have} valid signature(s) of {need} needed")]
    ThresholdNotMet {
        role: &'static str,
        have: usize,
        need: usize,
    },
    /// A trust document that breaks the rules (threshold, duplicate or weak keys).
    #[error("invalid trust document: {reason}")]
    InvalidTrust { reason: String },
    /// A trust bundle whose version is not exactly the current trust version + 1.
    #[error("trust version {found} does not follow the current trust version {current}")]
    TrustVersion { current: u64, found: u64 },

    // ---- policy ----
    /// `expires` is not after the cluster's time floor.
    #[error("bundle {id} expired at {expires} (cluster time floor {time_floor})")]
    Expired {
        id: String,
        expires: i64,
        time_floor: i64,
    },
    /// The bundle targets other clusters.
    #[error("bundle {id} targets {targets:?}, not cluster {cluster_id}")]
    WrongCluster {
        id: String,
        cluster_id: String,
        targets: Vec<String>,
    },
    /// The channel version does not grow (and this is not a re-import of the same bundle).
    #[error("bundle {id}: channel {channel:?} version {version} is not greater than {floor}")]
    VersionNotGreater {
        id: String,
        channel: String,
        version: u64,
        floor: u64,
    },

    // ---- payloads ----
    /// A payload entry the manifest does not name.
    #[error("entry {entry:?} is not listed in the manifest")]
    UnlistedPayload { entry: String },
    /// A payload entry (or manifest name) seen twice.
    #[error("payload {entry:?} appears twice")]
    DuplicatePayload { entry: String },
    /// The archive ended before a payload the manifest names.
    #[error("payload {name:?} listed in the manifest is missing")]
    MissingPayload { name: String },
    /// The tar header's size differs from the manifest's declared size.
    #[error("payload {entry:?} is {actual} bytes in the archive, the manifest says {declared}")]
    SizeMismatch {
        entry: String,
        declared: u64,
        actual: u64,
    },
    /// The payload's sha256 differs from the manifest.
    #[error("payload {entry:?} has sha256 {actual}, the manifest says {declared}")]
    HashMismatch {
        entry: String,
        declared: String,
        actual: String,
    },

    // ---- local I/O ----
    /// The disk (or quota) is full while writing.
    #[error("disk full while writing {what}")]
    DiskFull {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Any other I/O error, with what we were doing.
    #[error("I/O error on {what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A key file that does not hold a key in our format.
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: &'static str },
    /// `keygen` never overwrites a key.
    #[error("key file {path} already exists")]
    KeyExists { path: PathBuf },
    /// The bundle spec (TOML) does not parse.
    #[error("bundle spec {path} does not parse")]
    SpecParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// The bundle spec parses but is not usable.
    #[error("bundle spec {path}: {reason}")]
    SpecInvalid { path: PathBuf, reason: String },
    /// A payload source file changed between hashing and writing it into the bundle.
    #[error("source file {path} changed while the bundle was written")]
    SourceChanged { path: PathBuf },
    /// A hash that is not 64 lowercase hex digits.
    #[error("invalid sha256 {hash:?}")]
    InvalidHash { hash: String },
}

impl BundleError {
    /// Wrap an I/O error, turning ENOSPC/EDQUOT into [`BundleError::DiskFull`].
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        if is_disk_full(&source) {
            BundleError::DiskFull { what, source }
        } else {
            BundleError::Io { what, source }
        }
    }
}

/// ENOSPC or EDQUOT, however the platform reports it.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_disk_full() {
        let cases: &[(io::Error, bool)] = &[
            (io::Error::from_raw_os_error(28), true),
            (io::Error::from_raw_os_error(122), true),
            (io::Error::from_raw_os_error(5), false),
            (io::Error::new(io::ErrorKind::StorageFull, "x"), true),
            (io::Error::new(io::ErrorKind::NotFound, "x"), false),
        ];
        for (e, full) in cases {
            let copy = match e.raw_os_error() {
                Some(n) => io::Error::from_raw_os_error(n),
                None => io::Error::new(e.kind(), "x"),
            };
            let got = BundleError::io("blob", copy);
            assert_eq!(matches!(got, BundleError::DiskFull { .. }), *full, "{e:?}");
        }
    }

    #[test]
    fn writing_to_dev_full_is_disk_full() {
        use std::io::Write;
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return; // not on Linux
        };
        let e = f
            .write_all(&[0u8; 4096])
            .and_then(|_| f.flush())
            .expect_err("/dev/full accepts no bytes");
        let err = BundleError::io("payload \"x\"", e);
        assert!(matches!(err, BundleError::DiskFull { .. }), "{err:?}");
        assert_eq!(err.to_string(), "disk full while writing payload \"x\"");
    }
}
