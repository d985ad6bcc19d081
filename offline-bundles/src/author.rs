//! Authoring on a connected machine: `create` from a TOML spec and `sign` (add a signature).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::container::{
    BLOCK, FORMAT_VERSION, MANIFEST_NAME, MARKER_NAME, PAYLOAD_PREFIX, SIGNATURES_NAME, TarReader,
    append_bytes, header_for, marker_content, padding,
};
use crate::error::BundleError;
use crate::fsutil::{commit_temp, create_temp_beside, parent_of, random_hex};
use crate::import::{PayloadSink, read_head, read_payloads};
use crate::keys::load_public_key;
use crate::manifest::{
    BundleType, Limits, Manifest, PayloadEntry, PayloadKind, TARGET_ANY, check_manifest,
};
use crate::store::{IO_BUFFER, hash_reader};
use crate::times::parse_time;
use crate::trust::{SignatureDocument, SignatureEntry, sign_manifest};
use crate::trust_document::{PublicKey, RoleKeys, TrustDocument};

/// Lifetime of a bundle whose spec gives no `expires`.
pub const DEFAULT_LIFETIME_SECS: i64 = 90 * 24 * 3600;

/// A bundle spec (TOML). Paths are relative to the spec file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// `content` (default) or `trust`.
    #[serde(rename = "type", default = "content")]
    pub bundle_type: BundleType,
    /// Channel (content bundles).
    pub channel: Option<String>,
    /// Channel version, or the new trust version.
    pub version: u64,
    /// RFC 3339 expiry, quoted or as a TOML date-time; default: created + 90 days.
    pub expires: Option<SpecTime>,
    /// Target cluster ids; default `["any"]`.
    pub targets: Option<Vec<String>>,
    /// Payloads in bundle order.
    #[serde(default)]
    pub payload: Vec<SpecPayload>,
    /// New trust (trust bundles): `.pub` files and thresholds.
    pub trust: Option<SpecTrust>,
    /// Channel floor resets (trust bundles).
    #[serde(default)]
    pub channel_resets: BTreeMap<String, u64>,
}

/// A time in a spec: `"2027-06-01T00:00:00Z"` or the unquoted TOML date-time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SpecTime {
    /// Quoted RFC 3339.
    Text(String),
    /// TOML date-time literal.
    Toml(toml::value::Datetime),
}

impl SpecTime {
    /// Unix seconds.
    pub fn unix(&self) -> Result<i64, time::error::Parse> {
        match self {
            SpecTime::Text(s) => parse_time(s),
            SpecTime::Toml(d) => parse_time(&d.to_string()),
        }
    }
}

/// One `[[payload]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecPayload {
    /// File to include, relative to the spec.
    pub path: PathBuf,
    /// `artifact`, `config` or `outpost-release`.
    pub kind: PayloadKind,
    /// Name in the bundle; default: the file name.
    pub name: Option<String>,
}

/// `[trust]` of a trust bundle spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecTrust {
    /// `.pub` files of the new root keys.
    pub root_keys: Vec<PathBuf>,
    /// Root signatures needed.
    pub root_threshold: usize,
    /// `.pub` files of the new release keys.
    pub release_keys: Vec<PathBuf>,
    /// Release signatures needed.
    pub release_threshold: usize,
}

/// Parse a spec's text. Pure.
pub fn parse_spec(text: &str, path: &Path) -> Result<BundleSpec, BundleError> {
    toml::from_str(text).map_err(|source| BundleError::SpecParse {
        path: path.to_path_buf(),
        source,
    })
}

/// `outpost bundle create --spec SPEC --key KEY... -o FILE`: hash the payload files, write the
/// manifest, sign it with every key, write the bundle durably (temp + fsync + rename).
/// `now` is unix seconds (the `created` time). Returns the manifest written.
pub fn create_bundle(
    spec_path: &Path,
    keys: &[SigningKey],
    out: &Path,
    now: i64,
) -> Result<Manifest, BundleError> {
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| BundleError::io(format!("reading spec {}", spec_path.display()), e))?;
    let spec = parse_spec(&text, spec_path)?;
    let base = parent_of(spec_path);
    let invalid = |reason: String| BundleError::SpecInvalid {
        path: spec_path.to_path_buf(),
        reason,
    };
    let expires = match &spec.expires {
        None => now + DEFAULT_LIFETIME_SECS,
        Some(t) => t
            .unix()
            .map_err(|_| invalid(format!("expires {t:?} is not an RFC 3339 date-time")))?,
    };
    let mut sources = Vec::new();
    let mut payloads = Vec::new();
    for p in &spec.payload {
        let path = base.join(&p.path);
        let name = match &p.name {
            Some(n) => n.clone(),
            None => p
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| invalid(format!("payload {} has no file name", p.path.display())))?,
        };
        let file = File::open(&path)
            .map_err(|e| BundleError::io(format!("opening {}", path.display()), e))?;
        let (sha256, size) = hash_reader(file, &path.display().to_string())?;
        payloads.push(PayloadEntry {
            name,
            kind: p.kind,
            size,
            sha256,
        });
        sources.push(path);
    }
    let trust = match &spec.trust {
        None => None,
        Some(t) => {
            let load = |files: &[PathBuf]| -> Result<Vec<PublicKey>, BundleError> {
                files
                    .iter()
                    .map(|f| load_public_key(&base.join(f)))
                    .collect()
            };
            Some(TrustDocument {
                version: spec.version,
                root: RoleKeys {
                    keys: load(&t.root_keys)?,
                    threshold: t.root_threshold,
                },
                release: RoleKeys {
                    keys: load(&t.release_keys)?,
                    threshold: t.release_threshold,
                },
            })
        }
    };
    let manifest = Manifest {
        format: FORMAT_VERSION,
        id: random_hex(16),
        bundle_type: spec.bundle_type,
        channel: spec.channel.clone(),
        version: spec.version,
        created: now,
        expires,
        targets: spec
            .targets
            .clone()
            .unwrap_or_else(|| vec![TARGET_ANY.to_string()]),
        payloads,
        trust,
        channel_resets: spec.channel_resets.clone(),
    };
    write_bundle(&manifest, keys, &sources, out)?;
    Ok(manifest)
}

/// Write a bundle for `manifest` whose payloads are read from `sources` (same order).
/// Each source is hashed again while copied: a file changed since hashing is refused.
pub fn write_bundle(
    manifest: &Manifest,
    keys: &[SigningKey],
    sources: &[PathBuf],
    out: &Path,
) -> Result<(), BundleError> {
    check_manifest(manifest, &Limits::default())?;
    let bytes = manifest_bytes(manifest)?;
    let sigs = SignatureDocument {
        format: FORMAT_VERSION,
        signatures: keys
            .iter()
            .map(|k| sign_manifest(k, manifest.bundle_type, &bytes))
            .collect(),
    };
    let (file, tmp) = create_temp_beside(out, 0o644)?;
    let result = (|| {
        let mut b = tar::Builder::new(BufWriter::with_capacity(IO_BUFFER, file));
        write_head(&mut b, manifest, &bytes, &sigs)?;
        for (p, src) in manifest.payloads.iter().zip(sources) {
            let f = File::open(src)
                .map_err(|e| BundleError::io(format!("opening {}", src.display()), e))?;
            let mut reader = HashingReader {
                inner: f.take(p.size),
                hasher: Sha256::new(),
                count: 0,
            };
            let name = format!("{PAYLOAD_PREFIX}{}", p.name);
            let h = header_for(&name, p.size, manifest.created.max(0) as u64)?;
            b.append(&h, &mut reader)
                .map_err(|e| BundleError::io(format!("writing entry {name:?}"), e))?;
            if reader.count != p.size || hex::encode(reader.hasher.finalize()) != p.sha256 {
                return Err(BundleError::SourceChanged { path: src.clone() });
            }
        }
        finish(b, out)
    })();
    match result {
        Ok(()) => commit_temp(&tmp, out),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// `outpost bundle sign FILE --key KEY`: add this key's signature (no-op if it already
/// signed), rewriting the file durably. Payloads are re-verified while copied.
pub fn sign_bundle(path: &Path, key: &SigningKey) -> Result<SignatureEntry, BundleError> {
    let (file, _) = crate::import::open_with_len(path)?;
    let mut tr = TarReader::new(file);
    let head = read_head(&mut tr, &Limits::default())?;
    let entry = sign_manifest(key, head.manifest.bundle_type, &head.bytes);
    if head
        .signatures
        .signatures
        .iter()
        .any(|s| s.key_id == entry.key_id)
    {
        return Ok(entry);
    }
    let mut sigs = head.signatures.clone();
    sigs.signatures.push(entry.clone());
    let (out, tmp) = create_temp_beside(path, 0o644)?;
    let result = (|| {
        let mut b = tar::Builder::new(BufWriter::with_capacity(IO_BUFFER, out));
        write_head(&mut b, &head.manifest, &head.bytes, &sigs)?;
        let mtime = head.manifest.created.max(0) as u64;
        let mut sink = TarCopy {
            out: b.get_mut(),
            mtime,
        };
        read_payloads(&mut tr, &head.manifest, &mut sink, None, &mut |_| {})?;
        finish(b, path)
    })();
    match result {
        Ok(()) => commit_temp(&tmp, path)?,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    Ok(entry)
}

/// The exact manifest bytes written (pretty JSON, trailing newline) — these are signed.
pub fn manifest_bytes(m: &Manifest) -> Result<Vec<u8>, BundleError> {
    let mut bytes = serde_json::to_vec_pretty(m).map_err(|source| BundleError::ManifestParse {
        entry: MANIFEST_NAME.into(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn write_head<W: Write>(
    b: &mut tar::Builder<W>,
    m: &Manifest,
    bytes: &[u8],
    sigs: &SignatureDocument,
) -> Result<(), BundleError> {
    let mtime = m.created.max(0) as u64;
    let sig_bytes =
        serde_json::to_vec_pretty(sigs).map_err(|source| BundleError::SignaturesParse {
            entry: SIGNATURES_NAME.into(),
            source,
        })?;
    append_bytes(b, MARKER_NAME, marker_content().as_bytes(), mtime)?;
    append_bytes(b, MANIFEST_NAME, bytes, mtime)?;
    append_bytes(b, SIGNATURES_NAME, &sig_bytes, mtime)
}

/// Write the end blocks, flush and fsync: after this the temp file is complete on disk.
fn finish(b: tar::Builder<BufWriter<File>>, out: &Path) -> Result<(), BundleError> {
    let io = |e| BundleError::io(format!("writing {}", out.display()), e);
    let w = b.into_inner().map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

fn content() -> BundleType {
    BundleType::Content
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Copies verified payload entries verbatim into another tar stream.
struct TarCopy<'a, W: Write> {
    out: &'a mut W,
    mtime: u64,
}

impl<W: Write> PayloadSink for TarCopy<'_, W> {
    fn begin(&mut self, p: &PayloadEntry) -> Result<bool, BundleError> {
        let name = format!("{PAYLOAD_PREFIX}{}", p.name);
        let h = header_for(&name, p.size, self.mtime)?;
        self.out
            .write_all(h.as_bytes())
            .map_err(|e| BundleError::io(format!("writing entry {name:?}"), e))?;
        Ok(true)
    }
    fn data(&mut self, p: &PayloadEntry, buf: &mut Vec<u8>, len: usize) -> Result<(), BundleError> {
        self.out
            .write_all(&buf[..len])
            .map_err(|e| BundleError::io(format!("writing payload {:?}", p.name), e))
    }
    fn end(&mut self, p: &PayloadEntry) -> Result<Option<PathBuf>, BundleError> {
        let pad = [0u8; BLOCK];
        self.out
            .write_all(&pad[..padding(p.size) as usize])
            .map_err(|e| BundleError::io(format!("writing payload {:?}", p.name), e))?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let p = Path::new("spec.toml");
        let good = r#"
channel = "site"
version = 3
expires = "2027-06-01T00:00:00Z"
targets = ["c1"]
[[payload]]
path = "files/tool_1.2_amd64.deb"
kind = "artifact"
name = "tool"
[[payload]]
path = "files/site.conf"
kind = "config"
"#;
        let spec = parse_spec(good, p).unwrap();
        assert_eq!(spec.bundle_type, BundleType::Content);
        assert_eq!(spec.payload.len(), 2);
        assert_eq!(spec.payload[0].kind, PayloadKind::Artifact);
        assert_eq!(spec.payload[1].name, None);
        let bad = [
            "version = 1\nbogus = 2",
            "channel = \"x\"",
            "version = 1\n[[payload]]\npath = \"a\"\nkind = \"script\"",
            "version = -1",
        ];
        for text in bad {
            assert!(
                matches!(parse_spec(text, p), Err(BundleError::SpecParse { .. })),
                "{text}"
            );
        }
        for (text, want) in [
            (
                "version = 1\nexpires = 2027-06-01T00:00:00Z\n",
                Some(1_811_808_000),
            ),
            (
                "version = 1\nexpires = \"2027-06-01T02:00:00+02:00\"\n",
                Some(1_811_808_000),
            ),
            ("version = 1\nexpires = 2027-06-01\n", None),
        ] {
            let t = parse_spec(text, p).unwrap().expires.unwrap();
            assert_eq!(t.unix().ok(), want, "{text}");
        }
        let trust = "type = \"trust\"\nversion = 2\n[trust]\nroot_keys = [\"r.pub\"]\nroot_threshold = 1\nrelease_keys = [\"a.pub\"]\nrelease_threshold = 1\n[channel_resets]\nsite = 1\n";
        let spec = parse_spec(trust, p).unwrap();
        assert_eq!(spec.bundle_type, BundleType::Trust);
        assert_eq!(spec.channel_resets.get("site"), Some(&1));
    }
}
