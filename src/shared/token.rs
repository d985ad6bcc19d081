//! Join and enrollment tokens: what they carry and how they are written.
//!
//! A token is `OPT1.` + base64url(JSON). It carries the cluster id, the SHA-256 fingerprint of
//! the cluster CA (so the holder trusts nothing it was not told to), the token id, the secret
//! (only its SHA-256 is replicated), and the API addresses known when it was made (a hint).

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "OPT1.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// "node" or "client".
    pub kind: String,
    pub cluster_id: String,
    /// Lowercase hex SHA-256 of the CA certificate (DER).
    pub ca_sha256: String,
    pub id: String,
    /// Lowercase hex of 32 random bytes.
    pub secret: String,
    #[serde(default)]
    pub addrs: Vec<String>,
}

impl Token {
    pub fn new(kind: &str, cluster_id: &str, ca_sha256: &str, addrs: Vec<String>) -> Token {
        use rand::RngCore;
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Token {
            kind: kind.to_string(),
            cluster_id: cluster_id.to_string(),
            ca_sha256: ca_sha256.to_string(),
            id: hex::encode(id),
            secret: hex::encode(secret),
            addrs,
        }
    }

    pub fn encode(&self) -> String {
        // Serializing a struct of strings cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(text: &str) -> Result<Token> {
        let text = text.trim();
        let Some(body) = text.strip_prefix(PREFIX) else {
            bail!("not an Outpost token: it must start with {PREFIX}");
        };
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .context("token is not valid base64url (was it cut short?)")?;
        let token: Token = serde_json::from_slice(&json).context("token content is malformed")?;
        if token.kind != "node" && token.kind != "client" {
            bail!("token kind {:?} is neither node nor client", token.kind);
        }
        if token.ca_sha256.len() != 64 || token.secret.len() != 64 {
            bail!("token is malformed: fingerprint or secret has the wrong length");
        }
        Ok(token)
    }

    pub fn secret_sha256(&self) -> String {
        secret_sha256(&self.secret)
    }
}

pub fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let t = Token::new("node", "c1", &"ab".repeat(32), vec!["127.0.0.1:1".into()]);
        assert_eq!(Token::decode(&t.encode()).unwrap(), t);
        let cases = [
            ("", "must start with"),
            ("OPT1.%%%", "base64url"),
            ("OPT1.e30", "malformed"),
            (&t.encode()[..20], "base64url"),
        ];
        for (input, want) in cases {
            let err = Token::decode(input).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{input:?}: {err:#}");
        }
    }
}
