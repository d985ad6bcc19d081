//! Key files: `KEY` holds the secret seed (mode 0600), `KEY.pub` the public key.
//!
//! Both are one line of text: `outpost-bundle-secret-key-v1 <64 hex>` and
//! `outpost-bundle-public-key-v1 <64 hex>`. A key's role (root or release) is not in the
//! file: it comes from the trust document that lists the public key.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::error::BundleError;
use crate::fsutil::write_atomic;
use crate::trust_document::PublicKey;

/// First word of a secret key file.
pub const SECRET_KEY_TAG: &str = "outpost-bundle-secret-key-v1";
/// First word of a public key file.
pub const PUBLIC_KEY_TAG: &str = "outpost-bundle-public-key-v1";

/// `KEY` -> `KEY.pub`.
pub fn public_key_path(key_path: &Path) -> PathBuf {
    let mut s = key_path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// `outpost bundle keygen -o KEY`: a new Ed25519 key in `KEY` (0600) and `KEY.pub`.
/// Never overwrites an existing key.
pub fn keygen(key_path: &Path) -> Result<PublicKey, BundleError> {
    let pub_path = public_key_path(key_path);
    for p in [key_path, pub_path.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(BundleError::KeyExists {
                path: p.to_path_buf(),
            });
        }
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let secret = Zeroizing::new(format!(
        "{SECRET_KEY_TAG} {}\n",
        hex::encode(key.to_bytes())
    ));
    write_atomic(key_path, secret.as_bytes(), 0o600)?;
    let public = PublicKey::of(&key);
    write_atomic(&pub_path, public_file_text(&public).as_bytes(), 0o644)?;
    Ok(public)
}

/// The text of a `.pub` file.
pub fn public_file_text(key: &PublicKey) -> String {
    format!("{PUBLIC_KEY_TAG} {}\n", key.to_hex())
}

/// Read a secret key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| BundleError::io(format!("reading key {}", path.display()), e))?,
    );
    parse_secret(&text).map_err(|reason| BundleError::KeyFile {
        path: path.to_path_buf(),
        reason,
    })
}

/// Read a public key file (`KEY.pub`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, BundleError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BundleError::io(format!("reading key {}", path.display()), e))?;
    parse_public(&text).map_err(|reason| BundleError::KeyFile {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parse the text of a secret key file.
pub fn parse_secret(text: &str) -> Result<SigningKey, &'static str> {
    let hex_part = text
        .trim_end_matches('\n')
        .strip_prefix(SECRET_KEY_TAG)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or("not an outpost bundle secret key")?;
    let bytes = Zeroizing::new(hex::decode(hex_part).map_err(|_| "key is not hex")?);
    let seed: &[u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| "key is not 32 bytes")?;
    Ok(SigningKey::from_bytes(seed))
}

/// Parse the text of a public key file.
pub fn parse_public(text: &str) -> Result<PublicKey, &'static str> {
    let hex_part = text
        .trim_end_matches('\n')
        .strip_prefix(PUBLIC_KEY_TAG)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or("not an outpost bundle public key")?;
    PublicKey::from_hex(hex_part).map_err(|_| "not a valid Ed25519 public key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_private_0600_and_public() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.key");
        let public = keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = load_signing_key(&path).unwrap();
        assert_eq!(PublicKey::of(&key), public);
        assert_eq!(load_public_key(&public_key_path(&path)).unwrap(), public);
        assert!(matches!(keygen(&path), Err(BundleError::KeyExists { .. })));
        // Only the two key files: no temp files left.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn key_texts() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let secret = format!("{SECRET_KEY_TAG} {}\n", hex::encode([3u8; 32]));
        assert_eq!(parse_secret(&secret).unwrap().to_bytes(), key.to_bytes());
        let public = public_file_text(&PublicKey::of(&key));
        assert_eq!(parse_public(&public).unwrap(), PublicKey::of(&key));
        let bad = [
            "",
            "outpost-bundle-secret-key-v1",
            "outpost-bundle-secret-key-v1 zz",
            "outpost-bundle-secret-key-v1 abcd",
            "other 0303",
        ];
        for text in bad {
            assert!(parse_secret(text).is_err(), "{text:?}");
            assert!(parse_public(text).is_err(), "{text:?}");
        }
        // A secret key file is not a public key file and the other way round.
        assert!(parse_public(&secret).is_err());
        assert!(parse_secret(&public).is_err());
    }
}
