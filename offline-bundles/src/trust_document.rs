//! The keys that may sign bundles and the cluster's trust document (which keys each role has,
//! how many must sign, its version). Pure values and their checks; the signatures themselves
//! are checked in `trust`, key files are read and written in `keys`.

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::BundleError;

/// An Ed25519 public key, serialized as 64 lowercase hex digits. Weak keys are refused.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parse 64 hex digits; refuses invalid points and weak (small-order) keys.
    pub fn from_hex(s: &str) -> Result<Self, BundleError> {
        let invalid = |reason: &str| BundleError::InvalidTrust {
            reason: format!("public key {s:?}: {reason}"),
        };
        let bytes: [u8; 32] = hex::decode(s)
            .map_err(|_| invalid("not hex"))?
            .try_into()
            .map_err(|_| invalid("not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("not a valid point"))?;
        if key.is_weak() {
            return Err(invalid("weak key"));
        }
        Ok(PublicKey(key))
    }

    /// The public key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Key id: hex sha256 of the 32 public key bytes.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// The public half of a signing key.
    pub fn of(key: &SigningKey) -> Self {
        PublicKey(key.verifying_key())
    }

    /// Whether `sig` is a valid signature of this key over `prefix` || `manifest`.
    pub(crate) fn verify(&self, prefix: &[u8], manifest: &[u8], sig: &Signature) -> bool {
        let mut msg = Vec::with_capacity(prefix.len() + manifest.len());
        msg.extend_from_slice(prefix);
        msg.extend_from_slice(manifest);
        self.0.verify_strict(&msg, sig).is_ok()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Which keys a role has and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    /// Distinct public keys.
    pub keys: Vec<PublicKey>,
    /// Signatures needed, 1..=keys.len().
    pub threshold: usize,
}

/// The cluster's bundle trust: root and release keys with thresholds, versioned.
/// Lives in the replicated state; replaced only by a trust bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDocument {
    /// Starts at 1 (`outpost init`), each rotation adds exactly 1.
    pub version: u64,
    /// Keys that sign trust documents.
    pub root: RoleKeys,
    /// Keys that sign content bundles.
    pub release: RoleKeys,
}

impl TrustDocument {
    /// The trust pinned at `outpost init --bundle-trust KEY.pub... --bundle-threshold M`:
    /// version 1, the same keys and threshold for both roles.
    pub fn initial(keys: Vec<PublicKey>, threshold: usize) -> Result<Self, BundleError> {
        let role = RoleKeys { keys, threshold };
        let doc = TrustDocument {
            version: 1,
            root: role.clone(),
            release: role,
        };
        doc.check()?;
        Ok(doc)
    }

    /// Version >= 1, thresholds in 1..=keys, no key twice in a role.
    pub fn check(&self) -> Result<(), BundleError> {
        if self.version == 0 {
            return Err(BundleError::InvalidTrust {
                reason: "version starts at 1".into(),
            });
        }
        for (name, role) in [("root", &self.root), ("release", &self.release)] {
            if role.threshold == 0 || role.threshold > role.keys.len() {
                return Err(BundleError::InvalidTrust {
                    reason: format!(
                        "{name} threshold {} with {} key(s)",
                        role.threshold,
                        role.keys.len()
                    ),
                });
            }
            let ids: BTreeSet<String> = role.keys.iter().map(PublicKey::key_id).collect();
            if ids.len() != role.keys.len() {
                return Err(BundleError::InvalidTrust {
                    reason: format!("{name} lists a key twice"),
                });
            }
        }
        Ok(())
    }
}

/// A trust bundle must carry exactly the next trust version. Pure.
pub fn check_trust_version(
    current: &TrustDocument,
    new: &TrustDocument,
) -> Result<(), BundleError> {
    if new.version != current.version.saturating_add(1) {
        return Err(BundleError::TrustVersion {
            current: current.version,
            found: new.version,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::tests::{pk, trust};

    #[test]
    fn trust_documents_are_checked() {
        assert!(trust(&[1, 2], 2).check().is_ok());
        assert!(trust(&[1, 2], 3).check().is_err());
        assert!(trust(&[1, 2], 0).check().is_err());
        assert!(trust(&[1, 1], 1).check().is_err());
        let mut v0 = trust(&[1], 1);
        v0.version = 0;
        assert!(v0.check().is_err());
        let init = TrustDocument::initial(vec![pk(1), pk(2)], 2).unwrap();
        assert_eq!(init.version, 1);
        assert_eq!(init.root, init.release);
        assert!(TrustDocument::initial(vec![], 1).is_err());
    }

    #[test]
    fn public_keys_parse_strictly() {
        let k = pk(7);
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(k.key_id(), hex::encode(Sha256::digest(k.0.as_bytes())));
        // The identity point is a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_hex(&hex::encode(identity)).is_err());
        assert!(PublicKey::from_hex("abcd").is_err());
        assert!(PublicKey::from_hex(&"g".repeat(64)).is_err());
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), k);
    }
}
