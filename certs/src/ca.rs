//! The cluster CA: generating it, loading it, and signing leaves from CSRs.

use std::fmt;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    PublicKeyData, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::fingerprint::first_cert_der;
use crate::profile::{CA_DAYS, ca_params, leaf_params, node_leaf_params, parse_cert};
use crate::{CertError, Fingerprint, Role, Validity, x509_error};

/// The cluster CA: its certificate and signing key.
pub struct CertAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl CertAuthority {
    /// A new CA (ECDSA P-256, 20 years, CA:TRUE pathlen 0) for the cluster `cluster_id`.
    pub fn generate(cluster_id: &str, cluster_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let params = ca_params(
            cluster_id,
            cluster_name,
            &Validity::days_from(now, CA_DAYS),
            random_serial(),
        )?;
        let cert = params.self_signed(&key)?;
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Loads a CA saved with `cert_pem()` / `key_pem()`; the key must belong to the
    /// certificate and the certificate must be a CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(CertError::Key)?;
        let cert_der = first_cert_der(cert_pem)?;
        let cert = parse_cert(&cert_der)?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertError::KeyMismatch);
        }
        if !cert.is_ca() {
            return Err(CertError::NotACa);
        }
        Ok(CertAuthority {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.cert_der)
    }

    /// Signs `msg` with the CA key (ECDSA P-256 with SHA-256, the signature in ASN.1 DER):
    /// what `verify_ca_signature` checks against the CA certificate alone.
    pub fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, CertError> {
        use rcgen::SigningKey;
        Ok(self.key.sign(msg)?)
    }

    /// Signs a leaf for `role`. From the CSR only its public key is used (ECDSA P-256), after
    /// the CSR's own signature checks out; names, CA flag, usages and every extension come from
    /// the role's profile, so whatever else the CSR asks for is ignored. Returns the leaf PEM.
    pub fn issue(
        &self,
        csr_pem: &str,
        role: &Role,
        validity: &Validity,
    ) -> Result<String, CertError> {
        let public_key = csr_public_key(csr_pem)?;
        self.sign(&public_key, role, validity)
    }

    /// Like [`issue`](Self::issue) with a serial chosen beforehand ([`Serial::random`]), so
    /// that the serial can be committed first and the certificate signed only afterwards.
    pub fn issue_with_serial(
        &self,
        csr_pem: &str,
        role: &Role,
        validity: &Validity,
        serial: &Serial,
    ) -> Result<String, CertError> {
        let public_key = csr_public_key(csr_pem)?;
        let params = leaf_params(role, validity, serial.0)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        Ok(params.signed_by(&public_key, &issuer)?.pem())
    }

    /// A node's certificate from its CSR, with the hosts of its advertised `addrs` among its
    /// names as well (IP addresses or DNS names), and a serial chosen beforehand.
    pub fn issue_node(
        &self,
        csr_pem: &str,
        id: u64,
        addrs: &[&str],
        validity: &Validity,
        serial: &Serial,
    ) -> Result<String, CertError> {
        let public_key = csr_public_key(csr_pem)?;
        let params = node_leaf_params(&Role::Node(id), validity, serial.0, addrs)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        Ok(params.signed_by(&public_key, &issuer)?.pem())
    }

    /// A new key and a node certificate for it, with the hosts of `addrs` among its names:
    /// (cert PEM, key PEM). For a node made or renewed where the CA is.
    pub fn issue_node_with_new_key(
        &self,
        id: u64,
        addrs: &[&str],
        validity: &Validity,
    ) -> Result<(String, Zeroizing<String>), CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = node_leaf_params(&Role::Node(id), validity, random_serial(), addrs)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        let cert = params.signed_by(&key, &issuer)?.pem();
        Ok((cert, Zeroizing::new(key.serialize_pem())))
    }

    /// A new ECDSA P-256 key and a leaf for it: (cert PEM, key PEM). For admin certificates
    /// and the first node, whose keys are made where the CA is.
    pub fn issue_with_new_key(
        &self,
        role: &Role,
        validity: &Validity,
    ) -> Result<(String, Zeroizing<String>), CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = self.sign(&key, role, validity)?;
        Ok((cert, Zeroizing::new(key.serialize_pem())))
    }

    fn sign(
        &self,
        public_key: &impl PublicKeyData,
        role: &Role,
        validity: &Validity,
    ) -> Result<String, CertError> {
        let params = leaf_params(role, validity, random_serial())?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        Ok(params.signed_by(public_key, &issuer)?.pem())
    }
}

/// Shows the CA's identity, never its key.
impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// New ECDSA P-256 key and a CSR for it: (key PEM, CSR PEM). The CSR carries only
/// `common_name`; the CA decides everything else.
pub fn new_key_and_csr(common_name: &str) -> Result<(Zeroizing<String>, String), CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((Zeroizing::new(key.serialize_pem()), csr.pem()?))
}

/// The public key of a CSR whose signature verifies, if it is ECDSA P-256. Nothing else of
/// the request is read, so extensions this crate does not know cannot make it fail or leak in.
fn csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, CertError> {
    parse_csr(csr_pem).map(|(spki, _)| spki)
}

/// The CSR's checked public key and the SHA-256 of its DER SubjectPublicKeyInfo.
fn parse_csr(csr_pem: &str) -> Result<(SubjectPublicKeyInfo, [u8; 32]), CertError> {
    use sha2::Digest;
    let der =
        CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|source| {
            CertError::Pem {
                what: "certificate request",
                source,
            }
        })?;
    let (rest, csr) =
        X509CertificationRequest::from_der(der.as_ref()).map_err(|e| CertError::X509 {
            what: "certificate request",
            source: x509_error(e),
        })?;
    if !rest.is_empty() {
        return Err(CertError::CsrTrailing(rest.len()));
    }
    csr.verify_signature().map_err(CertError::CsrSignature)?;
    let raw = csr.certification_request_info.subject_pki.raw;
    let spki =
        SubjectPublicKeyInfo::from_der(raw).map_err(|e| CertError::CsrKeyAlgorithm(Some(e)))?;
    if spki.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CertError::CsrKeyAlgorithm(None));
    }
    Ok((spki, sha2::Sha256::digest(raw).into()))
}

/// 16 random bytes from the OS for a serial number (made positive by the profile).
fn random_serial() -> [u8; 16] {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    positive(bytes)
}

/// The serial as it appears in the certificate: positive, without a leading zero byte (the
/// same rule as the profile's, so that a chosen serial's hex is the certificate's).
fn positive(mut bytes: [u8; 16]) -> [u8; 16] {
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 0x01;
    }
    bytes
}

/// A certificate serial number chosen before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serial([u8; 16]);

impl Serial {
    /// 16 random bytes from the OS, made positive.
    pub fn random() -> Serial {
        Serial(random_serial())
    }

    /// Lowercase hex, exactly as [`serial_hex`](crate::serial_hex) reads it from the
    /// certificate.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A serial from [`to_hex`](Self::to_hex) form: 16 bytes, positive, no leading zero byte.
    pub fn from_hex(s: &str) -> Option<Serial> {
        let bytes: [u8; 16] = hex::decode(s).ok()?.try_into().ok()?;
        (positive(bytes) == bytes).then_some(Serial(bytes))
    }
}

/// Checks a CSR (PEM) as [`CertAuthority::issue`] would, without signing anything: it
/// parses, its own signature checks out, and its key is ECDSA P-256. Returns the lowercase
/// hex SHA-256 of the key (its DER SubjectPublicKeyInfo), which identifies the key whatever
/// CSR carries it.
pub fn check_csr(csr_pem: &str) -> Result<String, CertError> {
    parse_csr(csr_pem).map(|(_, sha)| hex::encode(sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn issued_leaves_take_only_the_key_from_the_request() {
        let ca = CertAuthority::generate("c1", "site").unwrap();
        let (key_pem, csr) = new_key_and_csr("whatever the joiner says").unwrap();
        let key = KeyPair::from_pem(&key_pem).unwrap();
        let pem = ca
            .issue(&csr, &Role::Node(4), &Validity::days_from(now(), 30))
            .unwrap();
        let der = first_cert_der(&pem).unwrap();
        let cert = parse_cert(&der).unwrap();
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        assert_eq!(crate::role_of(&der).unwrap(), Role::Node(4));
        assert_eq!(
            cert.subject().to_string(),
            "CN=outpost node 4",
            "subject comes from the profile"
        );
        let ca_cert = parse_cert(&ca.cert_der).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
    }

    #[test]
    fn chosen_serial_is_the_certificate_serial() {
        let ca = CertAuthority::generate("c1", "plant").unwrap();
        let (_, csr) = new_key_and_csr("x").unwrap();
        let key_sha = check_csr(&csr).unwrap();
        assert_eq!(key_sha.len(), 64);
        assert!(check_csr("not a csr").is_err());
        for _ in 0..8 {
            let serial = Serial::random();
            let pem = ca
                .issue_with_serial(
                    &csr,
                    &Role::Client("c-1".into()),
                    &Validity::days_from(now(), 1),
                    &serial,
                )
                .unwrap();
            let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(crate::serial_hex(&der).unwrap(), serial.to_hex());
            assert_eq!(Serial::from_hex(&serial.to_hex()), Some(serial.clone()));
        }
    }

    #[test]
    fn serials_differ_between_certificates() {
        let ca = CertAuthority::generate("c1", "site").unwrap();
        let v = Validity::days_from(now(), 1);
        let serials: std::collections::HashSet<String> = (0..8)
            .map(|_| {
                let (pem, _) = ca.issue_with_new_key(&Role::Node(1), &v).unwrap();
                crate::serial_hex(&first_cert_der(&pem).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(serials.len(), 8);
    }

    #[test]
    fn requests_with_other_key_types_are_refused() {
        let ca = CertAuthority::generate("c1", "site").unwrap();
        let v = Validity::days_from(now(), 1);
        for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let key = KeyPair::generate_for(alg).unwrap();
            let csr = CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap();
            assert!(
                matches!(
                    ca.issue(&csr, &Role::Node(1), &v),
                    Err(CertError::CsrKeyAlgorithm(_))
                ),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn loading_checks_key_and_ca_flag() {
        let ca = CertAuthority::generate("c1", "site").unwrap();
        let again = CertAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert!(format!("{again:?}").contains(&ca.fingerprint().to_string()));
        assert!(!format!("{again:?}").contains("PRIVATE"));

        let other = CertAuthority::generate("c2", "x").unwrap();
        assert!(matches!(
            CertAuthority::from_pem(ca.cert_pem(), &other.key_pem()),
            Err(CertError::KeyMismatch)
        ));
        let (leaf, leaf_key) = ca
            .issue_with_new_key(&Role::Admin("a".into()), &Validity::days_from(now(), 1))
            .unwrap();
        assert!(matches!(
            CertAuthority::from_pem(&leaf, &leaf_key),
            Err(CertError::NotACa)
        ));
        assert!(matches!(
            CertAuthority::from_pem(ca.cert_pem(), "nope"),
            Err(CertError::Key(_))
        ));
        assert!(matches!(
            CertAuthority::from_pem("nope", &ca.key_pem()),
            Err(CertError::Missing("certificate"))
        ));
    }
}

/// Checks that `signature` over `msg` was made by the key of the CA certificate `ca_pem`
/// (`CertAuthority::sign`).
pub fn verify_ca_signature(ca_pem: &str, msg: &[u8], signature: &[u8]) -> Result<(), CertError> {
    let der = first_cert_der(ca_pem)?;
    let cert = parse_cert(&der)?;
    let key = &cert.public_key().subject_public_key.data;
    webpki::ring::ECDSA_P256_SHA256
        .verify_signature(key, msg, signature)
        .map_err(|_| CertError::BadSignature)
}

#[cfg(test)]
mod signature_tests {
    use super::*;

    #[test]
    fn a_ca_signature_verifies_only_with_its_certificate_and_message() {
        let ca = CertAuthority::generate("c1", "plant").expect("ca");
        let other = CertAuthority::generate("c2", "elsewhere").expect("ca");
        let sig = ca.sign_bytes(b"the header").expect("sign");
        assert!(verify_ca_signature(ca.cert_pem(), b"the header", &sig).is_ok());
        for (pem, msg) in [
            (ca.cert_pem(), &b"the header!"[..]),
            (other.cert_pem(), &b"the header"[..]),
        ] {
            assert!(matches!(
                verify_ca_signature(pem, msg, &sig),
                Err(CertError::BadSignature)
            ));
        }
        assert!(verify_ca_signature("not a pem", b"the header", &sig).is_err());
    }
}
