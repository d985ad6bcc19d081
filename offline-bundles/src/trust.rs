//! Signatures: signing a manifest and checking its signatures against the trust. Pure: no
//! files here (see `keys` for those); the keys and the trust document are in `trust_document`.
//!
//! Two roles: root keys sign trust documents, release keys sign content bundles. A signature
//! is Ed25519 (`verify_strict`) over a per-document-type prefix followed by the exact manifest
//! bytes. A key id is the hex sha256 of the 32-byte public key. Each key counts once.

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::manifest::{BundleType, Manifest};
use crate::trust_document::{PublicKey, RoleKeys, TrustDocument};

/// Domain-separation prefix of signatures over a content manifest.
pub const CONTENT_SIGNATURE_PREFIX: &[u8] = b"outpost-bundle/v1/content-manifest\0";
/// Domain-separation prefix of signatures over a trust manifest.
pub const TRUST_SIGNATURE_PREFIX: &[u8] = b"outpost-bundle/v1/trust-manifest\0";

/// The `signatures.json` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureDocument {
    /// Format of this document (1).
    pub format: u32,
    /// One entry per signing key.
    pub signatures: Vec<SignatureEntry>,
}

/// One signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// Hex sha256 of the signer's public key.
    pub key_id: String,
    /// 128 hex digits: Ed25519 over prefix || manifest bytes.
    pub signature: String,
}

/// The prefix for a bundle type.
pub fn signature_prefix(t: BundleType) -> &'static [u8] {
    match t {
        BundleType::Content => CONTENT_SIGNATURE_PREFIX,
        BundleType::Trust => TRUST_SIGNATURE_PREFIX,
    }
}

/// Sign exact manifest bytes for a bundle type.
pub fn sign_manifest(key: &SigningKey, t: BundleType, manifest: &[u8]) -> SignatureEntry {
    let prefix = signature_prefix(t);
    let mut msg = Vec::with_capacity(prefix.len() + manifest.len());
    msg.extend_from_slice(prefix);
    msg.extend_from_slice(manifest);
    SignatureEntry {
        key_id: PublicKey::of(key).key_id(),
        signature: hex::encode(key.sign(&msg).to_bytes()),
    }
}

/// Check the signatures of a manifest against the trust. Returns the ids of the valid signers.
///
/// Content bundles need `release.threshold` release signatures. Trust bundles need
/// `root.threshold` of the current root keys *and* the new document's root threshold of its
/// own root keys. A bad signature by any key we know is refused even when the threshold is
/// met; signatures by unknown keys are ignored unless the threshold fails, then they are named.
pub fn verify_signatures(
    manifest: &Manifest,
    manifest_bytes: &[u8],
    sigs: &SignatureDocument,
    trust: &TrustDocument,
) -> Result<Vec<String>, BundleError> {
    // A threshold of 0 would accept anything: refuse a broken trust before counting.
    trust.check()?;
    if sigs.signatures.is_empty() {
        return Err(BundleError::MissingSignature {
            entry: crate::container::SIGNATURES_NAME.into(),
        });
    }
    let prefix = signature_prefix(manifest.bundle_type);
    let roles: Vec<(&'static str, &RoleKeys)> = match (manifest.bundle_type, &manifest.trust) {
        (BundleType::Content, _) => vec![("release", &trust.release)],
        (BundleType::Trust, Some(new)) => {
            vec![("current root", &trust.root), ("new root", &new.root)]
        }
        (BundleType::Trust, None) => {
            return Err(BundleError::ManifestInvalid {
                field: "trust".into(),
                reason: "a trust bundle carries a trust document".into(),
            });
        }
    };
    let mut valid = BTreeSet::new();
    let mut unknown = Vec::new();
    for entry in &sigs.signatures {
        let key = roles
            .iter()
            .flat_map(|(_, r)| r.keys.iter())
            .find(|k| k.key_id() == entry.key_id);
        let Some(key) = key else {
            unknown.push(entry.key_id.clone());
            continue;
        };
        let bad = || BundleError::BadSignature {
            key_id: entry.key_id.clone(),
        };
        let bytes: [u8; 64] = hex::decode(&entry.signature)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        if !key.verify(prefix, manifest_bytes, &Signature::from_bytes(&bytes)) {
            return Err(bad());
        }
        valid.insert(entry.key_id.clone());
    }
    for (role, keys) in &roles {
        let have = keys
            .keys
            .iter()
            .filter(|k| valid.contains(&k.key_id()))
            .count();
        if have < keys.threshold {
            if let Some(key_id) = unknown.first() {
                return Err(BundleError::UnknownKey {
                    key_id: key_id.clone(),
                });
            }
            return Err(BundleError::ThresholdNotMet {
                role,
                have,
                need: keys.threshold,
            });
        }
    }
    Ok(valid.into_iter().collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::{Manifest, PayloadEntry, PayloadKind};
    use crate::trust_document::check_trust_version;
    use std::collections::BTreeMap;

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn pk(seed: u8) -> PublicKey {
        PublicKey::of(&key(seed))
    }

    fn content() -> Manifest {
        Manifest {
            format: 1,
            id: "0".repeat(32),
            bundle_type: BundleType::Content,
            channel: Some("site".into()),
            version: 1,
            created: 0,
            expires: 10,
            targets: vec!["any".into()],
            payloads: vec![PayloadEntry {
                name: "a".into(),
                kind: PayloadKind::Config,
                size: 0,
                sha256: "0".repeat(64),
            }],
            trust: None,
            channel_resets: BTreeMap::new(),
        }
    }

    pub(crate) fn trust(release: &[u8], threshold: usize) -> TrustDocument {
        TrustDocument {
            version: 1,
            root: RoleKeys {
                keys: vec![pk(100), pk(101), pk(102)],
                threshold: 2,
            },
            release: RoleKeys {
                keys: release.iter().map(|&s| pk(s)).collect(),
                threshold,
            },
        }
    }

    fn signed_by(m: &Manifest, bytes: &[u8], seeds: &[u8]) -> SignatureDocument {
        SignatureDocument {
            format: 1,
            signatures: seeds
                .iter()
                .map(|&s| sign_manifest(&key(s), m.bundle_type, bytes))
                .collect(),
        }
    }

    #[test]
    fn content_thresholds() {
        let m = content();
        let bytes = serde_json::to_vec(&m).unwrap();
        let t = trust(&[1, 2, 3], 2);
        let cases: &[(&[u8], &str)] = &[
            (&[1, 2], "ok"),
            (&[1, 2, 3], "ok"),
            (&[3, 1], "ok"),
            (&[1], "ThresholdNotMet"),
            (&[1, 1], "ThresholdNotMet"),
            (&[], "MissingSignature"),
            (&[9], "UnknownKey"),
            (&[1, 9], "UnknownKey"),
            (&[1, 2, 9], "ok"),
            (&[100, 101], "UnknownKey"),
        ];
        for (seeds, want) in cases {
            let sigs = signed_by(&m, &bytes, seeds);
            match verify_signatures(&m, &bytes, &sigs, &t) {
                Ok(ids) => {
                    assert_eq!(*want, "ok", "{seeds:?}");
                    assert!(ids.len() >= 2);
                }
                Err(e) => assert!(format!("{e:?}").starts_with(want), "{seeds:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn bad_signatures_are_refused() {
        let m = content();
        let bytes = serde_json::to_vec(&m).unwrap();
        let t = trust(&[1, 2], 1);
        // Signed over other bytes.
        let other = signed_by(&m, b"other", &[1]);
        assert!(matches!(
            verify_signatures(&m, &bytes, &other, &t),
            Err(BundleError::BadSignature { .. })
        ));
        // Signed with the trust prefix: domain separation makes it invalid for content.
        let mut wrong_domain = m.clone();
        wrong_domain.bundle_type = BundleType::Trust;
        let sigs = signed_by(&wrong_domain, &bytes, &[1]);
        assert!(matches!(
            verify_signatures(&m, &bytes, &sigs, &t),
            Err(BundleError::BadSignature { .. })
        ));
        // Not hex, wrong length; a bad one next to a good one is still refused.
        for sig in ["zz", "00", &"0".repeat(128)] {
            let mut sigs = signed_by(&m, &bytes, &[2]);
            sigs.signatures.push(SignatureEntry {
                key_id: pk(1).key_id(),
                signature: sig.to_string(),
            });
            assert!(matches!(
                verify_signatures(&m, &bytes, &sigs, &t),
                Err(BundleError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn trust_rotation_needs_old_and_new_roots() {
        let current = trust(&[1], 1);
        let mut new = current.clone();
        new.version = 2;
        new.root = RoleKeys {
            keys: vec![pk(110), pk(111)],
            threshold: 2,
        };
        let mut m = content();
        m.bundle_type = BundleType::Trust;
        m.channel = None;
        m.payloads.clear();
        m.version = 2;
        m.trust = Some(new.clone());
        let bytes = serde_json::to_vec(&m).unwrap();
        let cases: &[(&[u8], &str)] = &[
            (&[100, 101, 110, 111], "ok"),
            (&[100, 110, 111], "ThresholdNotMet"),
            (&[100, 101, 110], "ThresholdNotMet"),
            (&[110, 111], "ThresholdNotMet"),
            (&[1, 100, 101, 110, 111], "ok"),
            (&[1, 2, 3], "UnknownKey"),
        ];
        for (seeds, want) in cases {
            let sigs = signed_by(&m, &bytes, seeds);
            let got = verify_signatures(&m, &bytes, &sigs, &current);
            match got {
                Ok(_) => assert_eq!(*want, "ok", "{seeds:?}"),
                Err(e) => assert!(format!("{e:?}").starts_with(want), "{seeds:?}: {e:?}"),
            }
        }
        // A broken trust (threshold 0) never accepts a bundle.
        let mut broken = trust(&[1], 1);
        broken.release.threshold = 0;
        let m = content();
        let bytes = serde_json::to_vec(&m).unwrap();
        assert!(matches!(
            verify_signatures(&m, &bytes, &signed_by(&m, &bytes, &[9]), &broken),
            Err(BundleError::InvalidTrust { .. })
        ));
        let m = {
            let mut t = content();
            t.bundle_type = BundleType::Trust;
            t.channel = None;
            t.payloads.clear();
            t.version = 2;
            t.trust = Some(new.clone());
            t
        };
        let bytes = serde_json::to_vec(&m).unwrap();
        // Release keys (seed 1) do not count as root: [1, 110, 111] fails the current root.
        let sigs = signed_by(&m, &bytes, &[1, 110, 111]);
        assert!(verify_signatures(&m, &bytes, &sigs, &current).is_err());
        assert!(check_trust_version(&current, &new).is_ok());
        let mut skip = new.clone();
        skip.version = 3;
        assert!(matches!(
            check_trust_version(&current, &skip),
            Err(BundleError::TrustVersion {
                current: 1,
                found: 3
            })
        ));
    }
}
