//! Reading a bundle in one pass: head (marker, manifest, signatures), policy, then payloads.
//!
//! `import_bundle` stores payloads in a [`BlobStore`]; `verify_bundle` only hashes them;
//! `inspect_bundle` reads the head. All share the same strict reader.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::container::{
    FORMAT_VERSION, MANIFEST_NAME, MARKER_NAME, MARKER_PREFIX, MAX_MARKER, Next, PAYLOAD_PREFIX,
    SIGNATURES_NAME, TarReader,
};
use crate::error::BundleError;
use crate::manifest::{
    BundleType, ChannelFloor, FloorCheck, Limits, Manifest, PayloadEntry, PayloadKind,
    check_expiry, check_floor, check_manifest, check_target,
};
use crate::store::{BlobStore, IO_BUFFER, PipelinedWriter, StoreTxn};
use crate::trust::{SignatureDocument, verify_signatures};
use crate::trust_document::{TrustDocument, check_trust_version};

/// Everything import needs from the replicated state, as plain values.
#[derive(Debug, Clone)]
pub struct ImportContext {
    /// The cluster's current bundle trust.
    pub trust: TrustDocument,
    /// This cluster's id, matched against the manifest's targets.
    pub cluster_id: String,
    /// Per channel: the last accepted version and its manifest hash.
    pub channel_floors: BTreeMap<String, ChannelFloor>,
    /// The cluster time floor, unix seconds (max of voters' median clock and newest `created`).
    pub time_floor: i64,
    /// Size and count limits.
    pub limits: Limits,
}

/// What `outpost bundle verify` checks on an authoring machine: signatures against the given
/// trust, and optionally targets and expiry. No floors, no trust version sequence, no store.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Keys to verify against.
    pub trust: TrustDocument,
    /// Check the targets include this cluster.
    pub cluster_id: Option<String>,
    /// Check expiry against this time (unix seconds).
    pub time_floor: Option<i64>,
    /// Size and count limits.
    pub limits: Limits,
}

/// Bytes read so far, for the caller's progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the bundle consumed.
    pub done: u64,
    /// Bundle size if known (a file's length).
    pub total: Option<u64>,
}

/// A fully verified bundle: what the caller commits in one Raft command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedBundle {
    /// The manifest as signed.
    pub manifest: Manifest,
    /// sha256 of the exact manifest bytes (the bundle's identity for re-import).
    pub manifest_sha256: String,
    /// Key ids of the valid signatures.
    pub signers: Vec<String>,
    /// Payloads in manifest order.
    pub payloads: Vec<StoredPayload>,
    /// The exact manifest bytes that were signed (a commit carries them, so that every node
    /// verifies the signatures again).
    #[serde(skip)]
    pub manifest_bytes: Vec<u8>,
    /// The exact signature-document bytes.
    #[serde(skip)]
    pub signature_bytes: Vec<u8>,
}

/// One verified payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredPayload {
    /// Manifest name.
    pub name: String,
    /// Manifest kind.
    pub kind: PayloadKind,
    /// Size in bytes.
    pub size: u64,
    /// Verified sha256.
    pub sha256: String,
    /// Where the blob is in the store (None when only verified).
    pub path: Option<PathBuf>,
}

/// Result of an import.
// One value per import, moved straight to the caller: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Verified and stored: commit it.
    Imported(VerifiedBundle),
    /// The very same bundle is already the channel's current one (or the current trust):
    /// nothing was read past the signatures and nothing is to be committed.
    AlreadyImported {
        /// Bundle id.
        id: String,
        /// sha256 of the manifest bytes.
        manifest_sha256: String,
    },
}

/// The head of a bundle as `outpost bundle inspect` shows it (signatures not checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// Container format.
    pub format: u32,
    /// The manifest.
    pub manifest: Manifest,
    /// sha256 of the exact manifest bytes.
    pub manifest_sha256: String,
    /// Key ids that signed (not verified).
    pub signed_by: Vec<String>,
}

impl Inspection {
    /// Human-readable text for `outpost bundle inspect` without `--json`.
    pub fn to_text(&self) -> String {
        let m = &self.manifest;
        let mut out = String::new();
        let kind = match m.bundle_type {
            BundleType::Content => "content",
            BundleType::Trust => "trust",
        };
        let line = |out: &mut String, k: &str, v: &str| out.push_str(&format!("{k:<10} {v}\n"));
        line(&mut out, "bundle", &m.id);
        line(&mut out, "type", kind);
        if let Some(c) = &m.channel {
            line(&mut out, "channel", c);
        }
        line(&mut out, "version", &m.version.to_string());
        line(&mut out, "created", &crate::times::format_time(m.created));
        line(&mut out, "expires", &crate::times::format_time(m.expires));
        line(&mut out, "targets", &m.targets.join(", "));
        line(
            &mut out,
            "manifest",
            &format!("sha256 {}", self.manifest_sha256),
        );
        for id in &self.signed_by {
            line(&mut out, "signed by", id);
        }
        if let Some(t) = &m.trust {
            line(
                &mut out,
                "trust",
                &format!(
                    "v{}: root {} of {}, release {} of {}",
                    t.version,
                    t.root.threshold,
                    t.root.keys.len(),
                    t.release.threshold,
                    t.release.keys.len()
                ),
            );
        }
        for p in &m.payloads {
            out.push_str(&format!(
                "payload    {} {} {} bytes sha256 {}\n",
                p.name,
                p.kind.as_str(),
                p.size,
                p.sha256
            ));
        }
        out
    }
}

/// `outpost bundle import`: stream `reader` into `store`, verified, all or nothing.
///
/// Manifest and signatures are verified before any payload byte is written; each payload
/// streams to `tmp/` while hashed, with its size enforced, then is fsynced and renamed under
/// its hash. On any error, every blob this call created and every temp file is removed.
pub fn import_bundle(
    reader: impl Read,
    total: Option<u64>,
    store: &BlobStore,
    ctx: &ImportContext,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportOutcome, BundleError> {
    let mut tr = TarReader::new(reader);
    let head = read_head(&mut tr, &ctx.limits)?;
    let signers = verify_signatures(&head.manifest, &head.bytes, &head.signatures, &ctx.trust)?;
    let m = &head.manifest;
    let already = || ImportOutcome::AlreadyImported {
        id: m.id.clone(),
        manifest_sha256: head.sha256.clone(),
    };
    match (m.bundle_type, &m.trust) {
        (BundleType::Trust, Some(new)) => {
            if *new == ctx.trust {
                return Ok(already());
            }
            check_trust_version(&ctx.trust, new)?;
        }
        _ => {
            if check_floor(m, &head.sha256, &ctx.channel_floors)? == FloorCheck::SameBundle {
                return Ok(already());
            }
        }
    }
    check_expiry(m, ctx.time_floor)?;
    check_target(m, &ctx.cluster_id)?;

    let mut sink = StoreSink {
        store,
        txn: StoreTxn::new(store)?,
        writer: None,
    };
    let payloads = read_payloads(&mut tr, m, &mut sink, total, progress)?;
    sink.txn.commit();
    tracing::info!(id = %m.id, payloads = payloads.len(), "bundle verified and stored");
    Ok(ImportOutcome::Imported(VerifiedBundle {
        manifest: head.manifest.clone(),
        manifest_sha256: head.sha256.clone(),
        signers,
        payloads,
        manifest_bytes: head.bytes,
        signature_bytes: head.sig_bytes,
    }))
}

/// [`import_bundle`] on a file, with its length as the progress total.
pub fn import_file(
    path: &Path,
    store: &BlobStore,
    ctx: &ImportContext,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportOutcome, BundleError> {
    let (file, len) = open_with_len(path)?;
    import_bundle(file, Some(len), store, ctx, progress)
}

/// `outpost bundle verify`: every check that needs no cluster state; payloads hashed, not kept.
pub fn verify_bundle(
    reader: impl Read,
    total: Option<u64>,
    opts: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<VerifiedBundle, BundleError> {
    let mut tr = TarReader::new(reader);
    let head = read_head(&mut tr, &opts.limits)?;
    let signers = verify_signatures(&head.manifest, &head.bytes, &head.signatures, &opts.trust)?;
    if let Some(t) = opts.time_floor {
        check_expiry(&head.manifest, t)?;
    }
    if let Some(c) = &opts.cluster_id {
        check_target(&head.manifest, c)?;
    }
    let payloads = read_payloads(&mut tr, &head.manifest, &mut HashOnly, total, progress)?;
    Ok(VerifiedBundle {
        manifest: head.manifest,
        manifest_sha256: head.sha256,
        signers,
        payloads,
        manifest_bytes: head.bytes,
        signature_bytes: head.sig_bytes,
    })
}

/// [`verify_bundle`] on a file.
pub fn verify_file(path: &Path, opts: &VerifyOptions) -> Result<VerifiedBundle, BundleError> {
    let (file, len) = open_with_len(path)?;
    verify_bundle(file, Some(len), opts, &mut |_| {})
}

/// `outpost bundle inspect`: the head only (marker, manifest, signature key ids).
pub fn inspect_bundle(reader: impl Read, limits: &Limits) -> Result<Inspection, BundleError> {
    let mut tr = TarReader::new(reader);
    let head = read_head(&mut tr, limits)?;
    Ok(Inspection {
        format: FORMAT_VERSION,
        signed_by: head
            .signatures
            .signatures
            .iter()
            .map(|s| s.key_id.clone())
            .collect(),
        manifest: head.manifest,
        manifest_sha256: head.sha256,
    })
}

/// [`inspect_bundle`] on a file.
pub fn inspect_file(path: &Path) -> Result<Inspection, BundleError> {
    let (file, _) = open_with_len(path)?;
    inspect_bundle(file, &Limits::default())
}

// ---------------------------------------------------------------------------------------------

pub(crate) fn open_with_len(path: &Path) -> Result<(File, u64), BundleError> {
    let file =
        File::open(path).map_err(|e| BundleError::io(format!("opening {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| BundleError::io(format!("stat of {}", path.display()), e))?
        .len();
    Ok((file, len))
}

/// Marker, manifest and signatures, parsed and checked against the format and limits.
pub(crate) struct Head {
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub signatures: SignatureDocument,
    pub sig_bytes: Vec<u8>,
}

pub(crate) fn read_head<R: Read>(
    tr: &mut TarReader<R>,
    limits: &Limits,
) -> Result<Head, BundleError> {
    // 1. format marker
    let marker = match tr.next("start of file")? {
        Next::End => {
            return Err(BundleError::WrongFormat {
                entry: "(empty archive)".into(),
            });
        }
        Next::Entry(h) => h,
    };
    if marker.name != MARKER_NAME {
        if marker.name == MANIFEST_NAME || marker.name == SIGNATURES_NAME {
            return Err(BundleError::OutOfOrder {
                expected: MARKER_NAME.into(),
                found: marker.name,
            });
        }
        return Err(BundleError::WrongFormat { entry: marker.name });
    }
    if marker.size > MAX_MARKER {
        return Err(BundleError::WrongFormat { entry: marker.name });
    }
    let text = tr.read_small(&marker)?;
    check_marker(&text, &marker.name)?;

    // 2. manifest: size capped before reading
    let mh = expect_entry(tr, MARKER_NAME, MANIFEST_NAME)?;
    if mh.size > limits.max_manifest_bytes {
        return Err(BundleError::ManifestTooLarge {
            entry: mh.name,
            size: mh.size,
            limit: limits.max_manifest_bytes,
        });
    }
    let bytes = tr.read_small(&mh)?;
    let sh = expect_entry(tr, MANIFEST_NAME, SIGNATURES_NAME)?;
    if sh.size > limits.max_signature_bytes {
        return Err(BundleError::SignaturesTooLarge {
            entry: sh.name,
            size: sh.size,
            limit: limits.max_signature_bytes,
        });
    }
    let sig_bytes = tr.read_small(&sh)?;
    parse_head(bytes, sig_bytes, limits)
}

/// Parses and checks a manifest and a signature document given as bytes (as read from a
/// bundle, or as carried in a Raft command), without verifying the signatures. Pure.
pub(crate) fn parse_head(
    bytes: Vec<u8>,
    sig_bytes: Vec<u8>,
    limits: &Limits,
) -> Result<Head, BundleError> {
    if bytes.len() as u64 > limits.max_manifest_bytes {
        return Err(BundleError::ManifestTooLarge {
            entry: MANIFEST_NAME.into(),
            size: bytes.len() as u64,
            limit: limits.max_manifest_bytes,
        });
    }
    if sig_bytes.len() as u64 > limits.max_signature_bytes {
        return Err(BundleError::SignaturesTooLarge {
            entry: SIGNATURES_NAME.into(),
            size: sig_bytes.len() as u64,
            limit: limits.max_signature_bytes,
        });
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| BundleError::ManifestParse {
            entry: MANIFEST_NAME.into(),
            source,
        })?;
    check_manifest(&manifest, limits)?;
    let signatures: SignatureDocument =
        serde_json::from_slice(&sig_bytes).map_err(|source| BundleError::SignaturesParse {
            entry: SIGNATURES_NAME.into(),
            source,
        })?;
    if signatures.format != FORMAT_VERSION {
        return Err(BundleError::UnsupportedFormat {
            entry: SIGNATURES_NAME.into(),
            found: signatures.format.to_string(),
        });
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Head {
        manifest,
        bytes,
        sha256,
        signatures,
        sig_bytes,
    })
}

/// A manifest and its signatures, parsed, checked against `limits` and verified against
/// `trust`: what a node re-checks when it commits a bundle (the exact signed bytes travel in
/// the Raft command, so every node verifies them again in `apply`). Pure and deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The manifest as signed.
    pub manifest: Manifest,
    /// sha256 of the exact manifest bytes.
    pub manifest_sha256: String,
    /// Key ids of the valid signatures.
    pub signers: Vec<String>,
}

/// Verifies manifest bytes and signature-document bytes against a trust document: format,
/// limits, well-formedness and the signature thresholds. Times, targets and floors are the
/// caller's to check (`check_expiry`, `check_target`, `check_floor`). Pure.
pub fn verify_signed_head(
    manifest_bytes: &[u8],
    signature_bytes: &[u8],
    trust: &TrustDocument,
    limits: &Limits,
) -> Result<SignedHead, BundleError> {
    let head = parse_head(manifest_bytes.to_vec(), signature_bytes.to_vec(), limits)?;
    let signers = verify_signatures(&head.manifest, &head.bytes, &head.signatures, trust)?;
    Ok(SignedHead {
        manifest: head.manifest,
        manifest_sha256: head.sha256,
        signers,
    })
}

/// The marker text is exactly `outpost-bundle format <n>\n` with n = 1.
pub(crate) fn check_marker(text: &[u8], entry: &str) -> Result<(), BundleError> {
    let wrong = || BundleError::WrongFormat {
        entry: entry.to_string(),
    };
    let text = std::str::from_utf8(text).map_err(|_| wrong())?;
    let number = text
        .strip_prefix(MARKER_PREFIX)
        .and_then(|r| r.strip_suffix('\n'))
        .ok_or_else(wrong)?;
    if number != FORMAT_VERSION.to_string() {
        return Err(BundleError::UnsupportedFormat {
            entry: entry.to_string(),
            found: number.chars().take(16).collect(),
        });
    }
    Ok(())
}

fn expect_entry<R: Read>(
    tr: &mut TarReader<R>,
    after: &str,
    expected: &str,
) -> Result<crate::container::EntryHeader, BundleError> {
    match tr.next(after)? {
        Next::End => Err(BundleError::Truncated {
            entry: format!("{expected} (archive ends after {after})"),
        }),
        Next::Entry(h) if h.name == expected => Ok(h),
        Next::Entry(h) => {
            // Entries already read (the marker, or the one just before) appear again.
            if h.name == MARKER_NAME || h.name == after {
                return Err(BundleError::DuplicatePayload { entry: h.name });
            }
            Err(BundleError::OutOfOrder {
                expected: expected.to_string(),
                found: h.name,
            })
        }
    }
}

/// Where verified payload bytes go.
pub(crate) trait PayloadSink {
    /// A payload starts; `false` means the sink does not need its bytes (only the hash).
    fn begin(&mut self, p: &PayloadEntry) -> Result<bool, BundleError>;
    /// The next `len` bytes of the payload are `buf[..len]` (only if `begin` returned true).
    /// The sink may keep the buffer and leave another of the same length in its place,
    /// so bytes are handed over without a copy.
    fn data(&mut self, p: &PayloadEntry, buf: &mut Vec<u8>, len: usize) -> Result<(), BundleError>;
    /// The payload's size and hash matched; make it permanent. Returns its stored path.
    fn end(&mut self, p: &PayloadEntry) -> Result<Option<PathBuf>, BundleError>;
}

struct HashOnly;

impl PayloadSink for HashOnly {
    fn begin(&mut self, _: &PayloadEntry) -> Result<bool, BundleError> {
        Ok(false)
    }
    fn data(&mut self, _: &PayloadEntry, _: &mut Vec<u8>, _: usize) -> Result<(), BundleError> {
        Ok(())
    }
    fn end(&mut self, _: &PayloadEntry) -> Result<Option<PathBuf>, BundleError> {
        Ok(None)
    }
}

struct StoreSink<'a> {
    // Declared (and so dropped) before `txn`: the writer thread stops before clean-up runs.
    writer: Option<PipelinedWriter>,
    store: &'a BlobStore,
    txn: StoreTxn<'a>,
}

impl PayloadSink for StoreSink<'_> {
    fn begin(&mut self, p: &PayloadEntry) -> Result<bool, BundleError> {
        if self.store.contains(&p.sha256) {
            // Content-addressed: the same bytes are already stored; only verify the stream.
            return Ok(false);
        }
        self.writer = Some(PipelinedWriter::start(self.txn.begin()?, &p.name));
        Ok(true)
    }
    fn data(&mut self, p: &PayloadEntry, buf: &mut Vec<u8>, len: usize) -> Result<(), BundleError> {
        match &mut self.writer {
            Some(w) => w.send(buf, len, &p.name),
            None => Ok(()),
        }
    }
    fn end(&mut self, p: &PayloadEntry) -> Result<Option<PathBuf>, BundleError> {
        if let Some(w) = self.writer.take() {
            let w = w.finish(&p.name)?;
            self.txn.finish(w, &p.sha256)?;
        }
        Ok(Some(self.store.blob_path(&p.sha256)?))
    }
}

/// Read the payload entries in manifest order, then the end of the archive.
pub(crate) fn read_payloads<R: Read>(
    tr: &mut TarReader<R>,
    m: &Manifest,
    sink: &mut dyn PayloadSink,
    total: Option<u64>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<StoredPayload>, BundleError> {
    let listed: BTreeSet<String> = m
        .payloads
        .iter()
        .map(|p| format!("{PAYLOAD_PREFIX}{}", p.name))
        .collect();
    let mut seen: BTreeSet<String> = [MARKER_NAME, MANIFEST_NAME, SIGNATURES_NAME]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let misplaced = |name: String, expected: &str, seen: &BTreeSet<String>| {
        if seen.contains(&name) {
            BundleError::DuplicatePayload { entry: name }
        } else if listed.contains(&name) {
            BundleError::OutOfOrder {
                expected: expected.to_string(),
                found: name,
            }
        } else {
            BundleError::UnlistedPayload { entry: name }
        }
    };
    let mut buf = vec![0u8; IO_BUFFER];
    let mut out = Vec::with_capacity(m.payloads.len());
    let mut prev = SIGNATURES_NAME.to_string();
    progress(Progress {
        done: tr.offset(),
        total,
    });
    for p in &m.payloads {
        let entry = format!("{PAYLOAD_PREFIX}{}", p.name);
        let h = match tr.next(&prev)? {
            Next::End => {
                return Err(BundleError::MissingPayload {
                    name: p.name.clone(),
                });
            }
            Next::Entry(h) => h,
        };
        if h.name != entry {
            return Err(misplaced(h.name, &entry, &seen));
        }
        if h.size != p.size {
            // Refused before reading a byte: the tar header and the signed manifest disagree.
            return Err(BundleError::SizeMismatch {
                entry,
                declared: p.size,
                actual: h.size,
            });
        }
        let wants_bytes = sink.begin(p)?;
        let mut hasher = Sha256::new();
        let mut remaining = p.size;
        while remaining > 0 {
            let want = usize::try_from(remaining.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = tr.read_some(&mut buf[..want], &entry)?;
            if n == 0 {
                return Err(BundleError::Truncated { entry });
            }
            hasher.update(&buf[..n]);
            if wants_bytes {
                // The sink may swap `buf` for an empty one: the bytes go on without a copy.
                sink.data(p, &mut buf, n)?;
            }
            remaining -= n as u64;
            progress(Progress {
                done: tr.offset(),
                total,
            });
        }
        tr.skip_padding(&h)?;
        let actual = hex::encode(hasher.finalize());
        if actual != p.sha256 {
            return Err(BundleError::HashMismatch {
                entry,
                declared: p.sha256.clone(),
                actual,
            });
        }
        let path = sink.end(p)?;
        out.push(StoredPayload {
            name: p.name.clone(),
            kind: p.kind,
            size: p.size,
            sha256: p.sha256.clone(),
            path,
        });
        seen.insert(entry.clone());
        prev = entry;
    }
    match tr.next(&prev)? {
        Next::End => {}
        Next::Entry(h) => return Err(misplaced(h.name, "end of archive", &seen)),
    }
    progress(Progress {
        done: tr.offset(),
        total,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_texts() {
        let cases: &[(&[u8], &str)] = &[
            (b"outpost-bundle format 1\n", "ok"),
            (b"outpost-bundle format 2\n", "UnsupportedFormat"),
            (b"outpost-bundle format 1", "WrongFormat"),
            (b"outpost-bundle format 1\n\n", "UnsupportedFormat"),
            (b"something else\n", "WrongFormat"),
            (b"\xff\xfe", "WrongFormat"),
        ];
        for (text, want) in cases {
            match check_marker(text, MARKER_NAME) {
                Ok(()) => assert_eq!(*want, "ok"),
                Err(e) => assert!(format!("{e:?}").starts_with(want), "{text:?}: {e:?}"),
            }
        }
    }
}
