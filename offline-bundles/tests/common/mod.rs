//! Test helpers: keys, a fixture cluster context, and a bundle builder that can also build
//! every kind of malformed bundle (raw tar headers written by hand).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use outpost_bundles::{
    BlobStore, BundleType, ChannelFloor, FORMAT_VERSION, ImportContext, Limits, MANIFEST_NAME,
    MARKER_NAME, Manifest, PAYLOAD_PREFIX, PayloadEntry, PayloadKind, PublicKey, RoleKeys,
    SIGNATURES_NAME, SignatureDocument, SigningKey, TrustDocument, manifest_bytes, sign_manifest,
};
use sha2::{Digest, Sha256};

pub const CLUSTER: &str = "cluster-a";
pub const NOW: i64 = 1_800_000_000;

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn pk(seed: u8) -> PublicKey {
    PublicKey::of(&key(seed))
}

pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Release keys 1, 2, 3 (2 of 3); root keys 100, 101, 102 (2 of 3).
pub fn trust() -> TrustDocument {
    TrustDocument {
        version: 1,
        root: RoleKeys {
            keys: vec![pk(100), pk(101), pk(102)],
            threshold: 2,
        },
        release: RoleKeys {
            keys: vec![pk(1), pk(2), pk(3)],
            threshold: 2,
        },
    }
}

/// Channel `site` is at version 5.
pub fn context() -> ImportContext {
    ImportContext {
        trust: trust(),
        cluster_id: CLUSTER.into(),
        channel_floors: BTreeMap::from([(
            "site".to_string(),
            ChannelFloor {
                version: 5,
                manifest_sha256: "0".repeat(64),
            },
        )]),
        time_floor: NOW,
        limits: Limits {
            max_manifest_bytes: 64 << 10,
            max_signature_bytes: 16 << 10,
            max_payloads: 16,
            max_payload_bytes: 1 << 20,
            max_total_bytes: 4 << 20,
        },
    }
}

/// One tar entry, written with a hand-made header so names and types can be anything.
#[derive(Clone, Debug)]
pub struct Part {
    pub name: String,
    pub data: Vec<u8>,
    pub typ: u8,
    /// Header size different from the data length (the data is still written as is).
    pub header_size: Option<u64>,
}

impl Part {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Part {
            name: name.into(),
            data: data.to_vec(),
            typ: b'0',
            header_size: None,
        }
    }
}

pub fn header(name: &str, size: u64, typ: u8) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    let n = name.as_bytes();
    assert!(n.len() < 100);
    h.as_mut_bytes()[..n.len()].copy_from_slice(n);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(NOW as u64);
    h.set_entry_type(tar::EntryType::new(typ));
    if typ == b'1' || typ == b'2' {
        h.set_link_name("target").unwrap();
    }
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    out
}

/// A tar of these parts followed by the two end blocks.
pub fn tar_bytes(parts: &[Part]) -> Vec<u8> {
    let mut out = tar_entries(parts);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The entries only, no end blocks.
pub fn tar_entries(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let size = p.header_size.unwrap_or(p.data.len() as u64);
        out.extend_from_slice(&header(&p.name, size, p.typ));
        out.extend_from_slice(&p.data);
        let pad = (512 - p.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out
}

/// A content bundle as parts, easy to break one piece at a time.
#[derive(Clone, Debug)]
pub struct Draft {
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    pub sigs: SignatureDocument,
    pub payloads: Vec<(String, Vec<u8>)>,
}

impl Draft {
    /// Channel `site`, version 6, signed by release keys 1 and 2.
    pub fn new(payloads: &[(&str, &[u8])]) -> Self {
        let manifest = Manifest {
            format: FORMAT_VERSION,
            id: hex::encode(&Sha256::digest(format!("{payloads:?}"))[..16]),
            bundle_type: BundleType::Content,
            channel: Some("site".into()),
            version: 6,
            created: NOW - 100,
            expires: NOW + 86_400,
            targets: vec!["any".into()],
            payloads: payloads
                .iter()
                .map(|(name, data)| PayloadEntry {
                    name: name.to_string(),
                    kind: PayloadKind::Artifact,
                    size: data.len() as u64,
                    sha256: sha(data),
                })
                .collect(),
            trust: None,
            channel_resets: BTreeMap::new(),
        };
        let mut d = Draft {
            manifest,
            bytes: Vec::new(),
            sigs: SignatureDocument::default(),
            payloads: payloads
                .iter()
                .map(|(n, d)| (n.to_string(), d.to_vec()))
                .collect(),
        };
        d.sign(&[1, 2]);
        d
    }

    /// Serialize the manifest and sign it with these seeds (replacing all signatures).
    pub fn sign(&mut self, seeds: &[u8]) -> &mut Self {
        self.bytes = manifest_bytes(&self.manifest).unwrap();
        self.sigs = SignatureDocument {
            format: 1,
            signatures: seeds
                .iter()
                .map(|&s| sign_manifest(&key(s), self.manifest.bundle_type, &self.bytes))
                .collect(),
        };
        self
    }

    pub fn head_parts(&self) -> Vec<Part> {
        vec![
            Part::file(MARKER_NAME, b"outpost-bundle format 1\n"),
            Part::file(MANIFEST_NAME, &self.bytes),
            Part::file(SIGNATURES_NAME, &serde_json::to_vec(&self.sigs).unwrap()),
        ]
    }

    pub fn payload_parts(&self) -> Vec<Part> {
        self.payloads
            .iter()
            .map(|(n, d)| Part::file(&format!("{PAYLOAD_PREFIX}{n}"), d))
            .collect()
    }

    pub fn parts(&self) -> Vec<Part> {
        let mut p = self.head_parts();
        p.extend(self.payload_parts());
        p
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        tar_bytes(&self.parts())
    }
}

/// Every path under `root` with file sizes and contents' hashes: "exactly as before".
pub fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.push(format!("{rel}/"));
                stack.push(p);
            } else {
                out.push(format!("{rel} {}", sha(&std::fs::read(&p).unwrap())));
            }
        }
    }
    out.sort();
    out
}

pub fn store_in(dir: &Path) -> BlobStore {
    BlobStore::open(dir.join("blobs")).unwrap()
}
