//! SHA-256 fingerprints of certificates, as printed in tokens and typed by operators.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::CertError;

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The fingerprint of the first certificate in `pem`.
    pub fn of_pem(pem: &str) -> Result<Self, CertError> {
        Ok(Self::of_der(&first_cert_der(pem)?))
    }
}

/// Lowercase hex, 64 characters.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Accepts 64 hex digits in any case, optionally separated by ':' (as `openssl x509
/// -fingerprint` prints them); surrounding whitespace is ignored.
impl FromStr for Fingerprint {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, CertError> {
        let bad = |source| CertError::BadFingerprint {
            input: s.to_string(),
            source,
        };
        let digits: String = s.trim().chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&digits).map_err(|e| bad(Some(e)))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad(None))?;
        Ok(Fingerprint(arr))
    }
}

/// The first certificate of a PEM text.
pub(crate) fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(CertError::Missing("certificate"))?
        .map_err(|source| CertError::Pem {
            what: "certificate",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_operators_type() {
        let fp = Fingerprint::of_der(b"some certificate");
        let lower = fp.to_string();
        let upper = lower.to_ascii_uppercase();
        let colons: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        let colons = colons.join(":");
        let padded = format!("  {lower}\n");
        let cases: [(&str, bool); 9] = [
            (&lower, true),
            (&upper, true),
            (&colons, true),
            (&padded, true),
            ("", false),
            ("zz", false),
            (&lower[..62], false),
            (&lower[..63], false),
            ("00", false),
        ];
        for (input, ok) in cases {
            let got = input.parse::<Fingerprint>();
            match (ok, got) {
                (true, Ok(parsed)) => assert_eq!(parsed, fp, "{input:?}"),
                (false, Err(CertError::BadFingerprint { .. })) => {}
                (ok, got) => panic!("{input:?}: expected ok={ok}, got {got:?}"),
            }
        }
        let doubled = format!("{lower}{lower}");
        assert!(doubled.parse::<Fingerprint>().is_err());
    }

    #[test]
    fn display_is_64_lowercase_hex_digits() {
        let fp = Fingerprint([0xAB; 32]);
        assert_eq!(fp.to_string(), "ab".repeat(32));
        assert_eq!(
            format!("{fp:?}"),
            format!("Fingerprint({})", "ab".repeat(32))
        );
    }

    #[test]
    fn of_pem_needs_a_certificate() {
        assert!(matches!(
            Fingerprint::of_pem("no pem here"),
            Err(CertError::Missing("certificate"))
        ));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Fingerprint::of_pem(broken),
            Err(CertError::Pem { .. })
        ));
    }
}
