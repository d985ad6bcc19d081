//! Backup files: one consistent copy of the replicated state, and optionally the cluster CA's
//! private key sealed with a passphrase.
//!
//! ```text
//! OUTPOST-BACKUP\n                 magic line
//! {header JSON}\n                  one line, at most MAX_HEADER_BYTES: BackupHeader
//! state                            storage's snapshot format (its own header and SHA-256)
//! ```
//!
//! The header names the cluster, the applied entry (index, term), the time, the schema
//! version and the state's SHA-256 and length; `read_header` checks the length and the digest
//! before anything is restored. No private key is ever in the file in plain text: the CA key
//! is present only sealed, with Argon2id (64 MiB, 3 passes) deriving a key from the passphrase
//! and XChaCha20-Poly1305 encrypting it, the cluster id and the state's digest bound as
//! associated data (a sealed key cannot be moved to another backup unnoticed). Node keys are
//! never in a backup: a restored node makes its own.
//!
//! From format 2 the header is signed by the cluster: `signature` is the CA key's ECDSA
//! P-256 signature over the header without it (`signed_message`), and the header holds the
//! state's length and SHA-256, so it covers the whole file. `restore --expect-ca ca.crt`
//! checks it against the CA certificate the operator keeps (`verify`): an edited backup, its
//! digest recomputed or not, is refused. Format 1 backups (unsigned) stay restorable without
//! `--expect-ca`, as does any backup: the restore then says it trusts the file. Files are
//! written 0600: the state holds the console's password hashes.
//!
//! [`check_file`] (`outpost backup verify`) checks a file end to end without restoring it:
//! header and digest, the signature (with the expected CA), the state imported into a
//! throw-away directory (storage's own import: snapshot digest, schema, quick_check, the
//! applied entry the header names) and the sealed CA key opened with the passphrase.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const MAGIC: &[u8] = b"OUTPOST-BACKUP\n";
/// Version of this layout and of `BackupHeader`: 2 added `signature`.
pub const FORMAT: u32 = 2;
/// The oldest format this build restores (format 1: no signature).
pub const OLDEST_FORMAT: u32 = 1;
/// The header line's cap (the CA certificate and channel floors fit many times over).
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Shortest passphrase taken.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Argon2id cost of sealing: 64 MiB, 3 passes, 1 lane (about a second here).
const KDF_M_KIB: u32 = 64 * 1024;
const KDF_T: u32 = 3;
const KDF_P: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    pub format: u32,
    pub cluster_id: String,
    pub cluster_name: String,
    /// The last entry applied in the state.
    pub applied_index: u64,
    pub applied_term: u64,
    pub created_ms: i64,
    pub created: String,
    pub schema_version: u32,
    pub outpost_version: String,
    /// The node that made it.
    pub node_id: u64,
    /// The node had confirmed with the leader and a quorum that it held every acknowledged
    /// write when it copied the state (false: it could not, e.g. quorum was lost).
    pub current: bool,
    /// Length and hex SHA-256 of the state section (everything after the header line).
    pub state_bytes: u64,
    pub state_sha256: String,
    pub ca_cert_pem: String,
    /// The CA private key, sealed; absent when no passphrase was given.
    pub ca_key: Option<SealedKey>,
    /// Bundle channels and their floors.
    pub channels: Vec<(String, u64)>,
    pub bundle_time_floor: i64,
    pub clients: u64,
    /// Base64 of the CA key's signature over `signed_message` (format 2 on; absent in 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What the cluster signs: the header without its signature, under a fixed prefix.
pub fn signed_message(header: &BackupHeader) -> Result<Vec<u8>> {
    let unsigned = BackupHeader {
        signature: None,
        ..header.clone()
    };
    let mut msg = b"outpost-backup-header\n".to_vec();
    msg.extend(serde_json::to_vec(&unsigned).context("encoding the backup header")?);
    Ok(msg)
}

/// Signs `header` with the cluster CA's key.
pub fn sign(header: &mut BackupHeader, ca: &outpost_certs::CertAuthority) -> Result<()> {
    let sig = ca
        .sign_bytes(&signed_message(header)?)
        .context("signing the backup header with the CA key")?;
    header.signature = Some(base64::engine::general_purpose::STANDARD.encode(sig));
    Ok(())
}

/// Checks that `header` (read by `read_header`, so its state digest matches the file) was
/// signed by the CA whose certificate is `ca_pem`, the one the operator expects.
pub fn verify(header: &BackupHeader, ca_pem: &str) -> Result<()> {
    let expected = outpost_certs::Fingerprint::of_pem(ca_pem)
        .context("reading the expected CA certificate")?;
    let named = outpost_certs::Fingerprint::of_pem(&header.ca_cert_pem)
        .context("reading the CA certificate in the backup")?;
    if expected != named {
        bail!(
            "this backup names CA {named}, not the expected CA {expected}: it was not made by that cluster"
        );
    }
    let Some(sig) = &header.signature else {
        bail!(
            "this backup (format {}) carries no signature, so --expect-ca cannot check it: restore \
             it without --expect-ca only if you trust the file",
            header.format
        );
    };
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .context("the backup's signature is not base64")?;
    outpost_certs::verify_ca_signature(ca_pem, &signed_message(header)?, &sig).map_err(|e| {
        anyhow!(
            "the backup's signature does not verify against CA {expected} ({e}): the file was \
             changed after the cluster made it; refusing it"
        )
    })
}

/// A secret sealed with a passphrase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SealedKey {
    /// `argon2id`
    pub kdf: String,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    pub salt: String,
    /// `xchacha20poly1305`
    pub aead: String,
    pub nonce: String,
    /// base64 of ciphertext and tag.
    pub ciphertext: String,
}

/// Reads a passphrase file: the first line, trimmed of its line end; at least
/// `MIN_PASSPHRASE_CHARS` characters.
pub fn read_passphrase(path: &Path) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the passphrase file {}", path.display()))?,
    );
    let line = Zeroizing::new(text.lines().next().unwrap_or("").to_owned());
    if line.chars().count() < MIN_PASSPHRASE_CHARS {
        bail!(
            "the passphrase in {} is shorter than {MIN_PASSPHRASE_CHARS} characters",
            path.display()
        );
    }
    Ok(line)
}

fn derive(passphrase: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    let params = Params::new(m, t, p, Some(32)).map_err(|e| anyhow!("argon2 parameters: {e}"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| anyhow!("deriving the key from the passphrase: {e}"))?;
    Ok(key)
}

/// Associated data of a sealed key: what it belongs to.
fn bound_to(cluster_id: &str, state_sha256: &str) -> Vec<u8> {
    format!("outpost-backup-ca-key\n{cluster_id}\n{state_sha256}\n").into_bytes()
}

/// Seals `secret` with `passphrase`, bound to this cluster and state digest.
pub fn seal(
    secret: &[u8],
    passphrase: &str,
    cluster_id: &str,
    state_sha256: &str,
) -> Result<SealedKey> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let key = derive(passphrase, &salt, KDF_M_KIB, KDF_T, KDF_P)?;
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let aad = bound_to(cluster_id, state_sha256);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: &aad,
            },
        )
        .map_err(|_| anyhow!("sealing the CA key failed"))?;
    Ok(SealedKey {
        kdf: "argon2id".into(),
        m_kib: KDF_M_KIB,
        t: KDF_T,
        p: KDF_P,
        salt: hex::encode(salt),
        aead: "xchacha20poly1305".into(),
        nonce: hex::encode(nonce),
        ciphertext: base64::engine::general_purpose::STANDARD.encode(ciphertext),
    })
}

/// Opens a sealed key; a wrong passphrase (or a key moved from another backup) is refused.
pub fn unseal(
    sealed: &SealedKey,
    passphrase: &str,
    cluster_id: &str,
    state_sha256: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.kdf != "argon2id" || sealed.aead != "xchacha20poly1305" {
        bail!(
            "the CA key is sealed with {} and {}; this outpost reads argon2id and xchacha20poly1305",
            sealed.kdf,
            sealed.aead
        );
    }
    // A hostile header could ask for gigabytes of memory: stay within what `seal` writes x4.
    if sealed.m_kib > 4 * KDF_M_KIB || sealed.t > 4 * KDF_T || sealed.p > 8 {
        bail!(
            "the sealed CA key asks for Argon2 costs (m={} KiB, t={}, p={}) beyond what outpost writes",
            sealed.m_kib,
            sealed.t,
            sealed.p
        );
    }
    let salt = hex::decode(&sealed.salt).context("the sealed key's salt is not hex")?;
    let nonce = hex::decode(&sealed.nonce).context("the sealed key's nonce is not hex")?;
    if nonce.len() != 24 {
        bail!("the sealed key's nonce is {} bytes, not 24", nonce.len());
    }
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(&sealed.ciphertext)
        .context("the sealed key is not base64")?;
    let key = derive(passphrase, &salt, sealed.m_kib, sealed.t, sealed.p)?;
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let aad = bound_to(cluster_id, state_sha256);
    cipher
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| {
            anyhow!("the passphrase does not open the CA key in this backup (wrong passphrase?)")
        })
}

/// The header line as written: JSON and a newline.
pub fn header_line(header: &BackupHeader) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(header).context("encoding the backup header")?;
    line.push(b'\n');
    if line.len() > MAX_HEADER_BYTES {
        bail!(
            "the backup header is {} bytes, over the {MAX_HEADER_BYTES}-byte cap",
            line.len()
        );
    }
    Ok(line)
}

/// A checked backup: its header and where the state section starts in the file.
pub struct Opened {
    pub header: BackupHeader,
    pub state_offset: u64,
}

/// Reads and checks a backup file: magic, header, the state section's length and SHA-256.
pub fn read_header(path: &Path) -> Result<Opened> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic)
        .map_err(|_| anyhow!("{} is not an Outpost backup (too short)", path.display()))?;
    if magic != MAGIC {
        bail!("{} is not an Outpost backup (bad magic)", path.display());
    }
    let mut line = Vec::new();
    (&mut r)
        .take(MAX_HEADER_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        bail!(
            "{}: the header line is missing or longer than {MAX_HEADER_BYTES} bytes",
            path.display()
        );
    }
    let header: BackupHeader = serde_json::from_slice(&line)
        .with_context(|| format!("{}: the backup header does not parse", path.display()))?;
    if !(OLDEST_FORMAT..=FORMAT).contains(&header.format) {
        bail!(
            "{}: backup format {} is not a format this outpost reads ({OLDEST_FORMAT} to {FORMAT})",
            path.display(),
            header.format
        );
    }
    let state_offset = (MAGIC.len() + line.len()) as u64;
    let have = len.saturating_sub(state_offset);
    if have != header.state_bytes {
        bail!(
            "{}: the header says the state is {} bytes, the file holds {have} (truncated or appended to)",
            path.display(),
            header.state_bytes
        );
    }
    let mut file = r.into_inner();
    file.seek(SeekFrom::Start(state_offset))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    let digest = hex::encode(hasher.finalize());
    if digest != header.state_sha256 {
        bail!(
            "{}: the state's SHA-256 is {digest}, the header says {} (the file is damaged)",
            path.display(),
            header.state_sha256
        );
    }
    Ok(Opened {
        header,
        state_offset,
    })
}

/// What [`check_file`] checked.
#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    pub header: BackupHeader,
    /// Bytes of the whole file.
    pub bytes: u64,
    /// The signature verified against the expected CA (false: no CA was given).
    pub signature_checked: bool,
    /// The sealed CA key opened with the passphrase and belongs to the header's CA
    /// certificate (false: no passphrase was given).
    pub ca_key_unsealed: bool,
    /// The state opened (digest, schema, quick_check) and holds this applied entry.
    pub state_applied_index: u64,
}

/// Checks the backup at `path` without restoring anything: header, length and digest; with
/// `expect_ca_pem` its signature; the state section imported into a temp directory (it opens,
/// passes quick_check, has a schema this build reads and holds the entry the header names);
/// with `passphrase` the sealed CA key opens and matches the CA certificate. The first failure
/// is the error, naming what failed.
pub async fn check_file(
    path: &Path,
    passphrase: Option<&str>,
    expect_ca_pem: Option<&str>,
) -> Result<FileCheck> {
    let p = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || read_header(&p)).await??;
    let header = opened.header;
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if let Some(pem) = expect_ca_pem {
        verify(&header, pem).with_context(|| format!("checking {}", path.display()))?;
    }
    if let Some(pass) = passphrase {
        let Some(sealed) = &header.ca_key else {
            bail!(
                "{}: the backup holds no CA key (it was made without a passphrase), so there is                  nothing for the passphrase to open",
                path.display()
            );
        };
        let (sealed, pass) = (sealed.clone(), Zeroizing::new(pass.to_owned()));
        let (cid, sha, cert) = (
            header.cluster_id.clone(),
            header.state_sha256.clone(),
            header.ca_cert_pem.clone(),
        );
        tokio::task::spawn_blocking(move || -> Result<()> {
            let key = unseal(&sealed, &pass, &cid, &sha)?;
            let key = Zeroizing::new(
                String::from_utf8(key.to_vec()).context("the CA key in the backup is not text")?,
            );
            outpost_certs::CertAuthority::from_pem(&cert, &key)
                .context("the CA key in the backup does not belong to its CA certificate")?;
            Ok(())
        })
        .await?
        .with_context(|| format!("{}: opening the sealed CA key", path.display()))?;
    }
    // The state into a throw-away data directory, imported by storage as a restore would.
    let scratch = tempfile::tempdir().context("creating a temp directory for the state")?;
    let snapshot = scratch.path().join("state.snapshot");
    {
        let (from, offset, to) = (path.to_path_buf(), opened.state_offset, snapshot.clone());
        tokio::task::spawn_blocking(move || copy_section(&from, offset, &to)).await??;
    }
    let applied = outpost_raft::offline::import_state(scratch.path(), &snapshot)
        .await
        .with_context(|| format!("{}: the state in the backup does not open", path.display()))?;
    let index = applied.map(|l| l.index).unwrap_or(0);
    if index != header.applied_index {
        bail!(
            "{}: the state holds entry {index}, the header says {}",
            path.display(),
            header.applied_index
        );
    }
    Ok(FileCheck {
        header,
        bytes,
        signature_checked: expect_ca_pem.is_some(),
        ca_key_unsealed: passphrase.is_some(),
        state_applied_index: index,
    })
}

/// Copies `src` from `offset` to its end into a new private file `dest` (fsynced): a backup's
/// state section on its own, as storage imports it.
pub fn copy_section(src: &Path, offset: u64, dest: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    from.seek(SeekFrom::Start(offset))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .with_context(|| format!("creating {}", dest.display()))?;
    std::io::copy(&mut from, &mut to).with_context(|| format!("writing {}", dest.display()))?;
    to.flush()?;
    to.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(state: &[u8]) -> BackupHeader {
        BackupHeader {
            format: FORMAT,
            cluster_id: "c1".into(),
            cluster_name: "plant".into(),
            applied_index: 9,
            applied_term: 2,
            created_ms: 0,
            created: "1970-01-01T00:00:00Z".into(),
            schema_version: 4,
            outpost_version: "0.1.0".into(),
            node_id: 2,
            current: true,
            state_bytes: state.len() as u64,
            state_sha256: hex::encode(Sha256::digest(state)),
            ca_cert_pem: "CERT".into(),
            ca_key: None,
            channels: vec![("site".into(), 4)],
            bundle_time_floor: 0,
            clients: 0,
            signature: None,
        }
    }

    #[test]
    fn read_header_checks_magic_length_and_digest() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let state = b"the state section".to_vec();
        let mut good = MAGIC.to_vec();
        good.extend(header_line(&header(&state))?);
        good.extend(&state);
        let path = dir.path().join("b");
        std::fs::write(&path, &good)?;
        let opened = read_header(&path)?;
        assert_eq!(opened.header, header(&state));
        assert_eq!(opened.state_offset as usize, good.len() - state.len());

        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([good.clone(), b"x".to_vec()].concat(), "appended"),
            (
                {
                    let mut b = good.clone();
                    let last = b.len() - 1;
                    b[last] ^= 1;
                    b
                },
                "damaged",
            ),
            (b"OUTPOST-SNAPSHOT".to_vec(), "bad magic"),
            (MAGIC.to_vec(), "header line is missing"),
        ];
        for (bytes, want) in cases {
            std::fs::write(&path, &bytes)?;
            let err = read_header(&path).err().map(|e| format!("{e:#}"));
            assert!(
                err.as_deref().is_some_and(|e| e.contains(want)),
                "{want}: {err:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn sealed_key_opens_only_with_its_passphrase_and_its_backup() -> Result<()> {
        let sealed = seal(b"SECRET KEY", "correct horse battery", "c1", "ab")?;
        assert!(!sealed.ciphertext.contains("SECRET"));
        let opened = unseal(&sealed, "correct horse battery", "c1", "ab")?;
        assert_eq!(opened.as_slice(), b"SECRET KEY");
        let wrong = unseal(&sealed, "correct horse staple", "c1", "ab");
        assert!(wrong.is_err_and(|e| e.to_string().contains("wrong passphrase")));
        assert!(unseal(&sealed, "correct horse battery", "c2", "ab").is_err());
        assert!(unseal(&sealed, "correct horse battery", "c1", "cd").is_err());
        let mut greedy = sealed.clone();
        greedy.m_kib = u32::MAX;
        assert!(unseal(&greedy, "correct horse battery", "c1", "ab").is_err());
        Ok(())
    }

    #[test]
    fn a_signed_header_verifies_only_unchanged_and_with_its_ca() -> Result<()> {
        let ca = outpost_certs::CertAuthority::generate("c1", "plant")?;
        let other = outpost_certs::CertAuthority::generate("c1", "plant")?;
        let mut h = header(b"state");
        h.ca_cert_pem = ca.cert_pem().to_string();
        sign(&mut h, &ca)?;
        // As written and read back: the JSON round trip keeps the signed bytes.
        let line = header_line(&h)?;
        let back: BackupHeader = serde_json::from_slice(&line)?;
        verify(&back, ca.cert_pem())?;
        let edited = |f: fn(&mut BackupHeader)| {
            let mut e = back.clone();
            f(&mut e);
            e
        };
        let cases: Vec<(BackupHeader, &str, &str)> = vec![
            (
                edited(|e| e.state_sha256 = "00".repeat(32)),
                "does not verify",
                "digest",
            ),
            (edited(|e| e.clients += 1), "does not verify", "clients"),
            (
                edited(|e| e.signature = None),
                "carries no signature",
                "unsigned",
            ),
            (
                edited(|e| e.signature = Some("%%%".into())),
                "not base64",
                "garbage",
            ),
        ];
        for (h, want, name) in cases {
            let err = verify(&h, ca.cert_pem()).err().map(|e| format!("{e:#}"));
            assert!(
                err.as_deref().is_some_and(|e| e.contains(want)),
                "{name}: {err:?}"
            );
        }
        // Another CA: refused by name before any signature is checked.
        let err = verify(&back, other.cert_pem())
            .err()
            .map(|e| format!("{e:#}"));
        assert!(err.is_some_and(|e| e.contains("not the expected CA")));
        // A format 1 header (no signature field) still parses.
        let mut v1 = serde_json::to_value(header(b"state"))?;
        v1["format"] = 1.into();
        let v1: BackupHeader = serde_json::from_value(v1)?;
        assert_eq!(v1.signature, None);
        Ok(())
    }
}
