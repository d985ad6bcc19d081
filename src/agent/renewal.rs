//! The agent's certificate renewal: a new key and CSR when less than a third of the
//! certificate's life is left, the new certificate from the cluster, both written beside the
//! old pair and renamed in; the next sync confirms it. An interrupted renewal is rolled
//! forward at the start of a sync.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use hyper::{Method, StatusCode};

use crate::shared::client::ApiClient;
use crate::shared::files::rename_durably;
use crate::shared::policy::renewal_due;
use crate::wire::{RenewRequest, RenewResponse};

/// Renews the client certificate when less than a third of its lifetime is left: a new key
/// and CSR, the new certificate from the cluster, both written beside the old ones and then
/// renamed in (an interrupted renewal is rolled forward by [`finish_renewal`]).
pub async fn renew_if_due(
    client: &ApiClient,
    state_dir: &Path,
    now: i64,
) -> Result<Option<String>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let cert_path = state_dir.join("client.crt");
    let pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", cert_path.display()))?;
    let (nb, na) = (
        outpost_certs::not_before_unix(&der)?,
        outpost_certs::not_after_unix(&der)?,
    );
    if !renewal_due(nb, na, now) {
        return Ok(None);
    }
    // The key and CSR are kept until the renewal finishes: an agent cut off after the cluster
    // committed its renewal asks again with the same key and gets the same certificate.
    let key_new = state_dir.join("client.key.new");
    let csr_new = state_dir.join("client.csr.new");
    let crt_new = state_dir.join("client.crt.new");
    let csr_pem = match (key_new.exists(), std::fs::read_to_string(&csr_new)) {
        (true, Ok(csr)) => csr,
        _ => {
            let (key, csr) = outpost_certs::new_key_and_csr("outpost-agent")?;
            outpost_certs::write_secret_file(&key_new, key.as_bytes())?;
            outpost_certs::write_public_file(&csr_new, csr.as_bytes())?;
            csr
        }
    };
    let resp: RenewResponse = client
        .call(
            Method::POST,
            "/v1/agent/renew",
            Some(&RenewRequest { csr_pem }),
        )
        .await
        .context("renewing the client certificate")?;
    outpost_certs::write_public_file(&crt_new, resp.cert_pem.as_bytes())?;
    finish_renewal(state_dir)?;
    // The next sync, made with the new certificate, confirms it (the old one ends then).
    outpost_certs::write_public_file(&state_dir.join(UNCONFIRMED), b"")?;
    let der = CertificateDer::from_pem_slice(resp.cert_pem.as_bytes())
        .map_err(|e| anyhow!("renewed certificate: {e}"))?;
    Ok(Some(outpost_certs::serial_hex(&der)?))
}

/// Marker file in the agent's state dir: a renewed certificate not yet confirmed.
const UNCONFIRMED: &str = "renewal.unconfirmed";

/// After a renewal, the first sync with the new certificate tells the cluster so, which ends
/// the old certificate at once instead of after its grace hour.
pub async fn confirm_renewal_if_pending(client: &ApiClient, state_dir: &Path) -> Result<()> {
    let marker = state_dir.join(UNCONFIRMED);
    if !marker.exists() {
        return Ok(());
    }
    match client
        .call::<serde_json::Value>(Method::POST, "/v1/agent/renew/confirm", None::<&()>)
        .await
    {
        Ok(_) => {}
        // Already superseded or confirmed elsewhere: nothing left to confirm.
        Err(e)
            if e.downcast_ref::<crate::shared::client::ApiFailure>()
                .is_some_and(|f| f.status == StatusCode::CONFLICT) => {}
        Err(e) => return Err(e.context("confirming the renewed certificate")),
    }
    std::fs::remove_file(&marker)?;
    Ok(())
}

/// Rolls an interrupted renewal forward: `client.key.new` then `client.crt.new` renamed over
/// the old pair (both were fsynced before the first rename). A key without its certificate
/// stays with its CSR: the renewal is asked again with them.
pub fn finish_renewal(state_dir: &Path) -> Result<()> {
    let key_new = state_dir.join("client.key.new");
    let crt_new = state_dir.join("client.crt.new");
    if !crt_new.exists() {
        return Ok(());
    }
    if key_new.exists() {
        rename_durably(&key_new, &state_dir.join("client.key"))?;
    }
    rename_durably(&crt_new, &state_dir.join("client.crt"))?;
    // A CSR left behind by a crash here is harmless: without `client.key.new` beside it, the
    // next renewal makes a new key and CSR.
    let _ = std::fs::remove_file(state_dir.join("client.csr.new"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_renewal_rolls_forward() -> Result<()> {
        let d = tempfile::tempdir()?;
        let p = d.path();
        std::fs::write(p.join("client.key"), "old key")?;
        std::fs::write(p.join("client.crt"), "old crt")?;
        // Crash after the key was renamed in, before the certificate.
        std::fs::write(p.join("client.key"), "new key")?;
        std::fs::write(p.join("client.crt.new"), "new crt")?;
        finish_renewal(p)?;
        assert_eq!(std::fs::read_to_string(p.join("client.crt"))?, "new crt");
        assert_eq!(std::fs::read_to_string(p.join("client.key"))?, "new key");
        // A key written without its certificate stays with its CSR (the renewal is asked
        // again with them, and the cluster answers with the serial it committed); the pair in
        // use is untouched.
        std::fs::write(p.join("client.key.new"), "pending key")?;
        std::fs::write(p.join("client.csr.new"), "pending csr")?;
        finish_renewal(p)?;
        assert_eq!(
            std::fs::read_to_string(p.join("client.key.new"))?,
            "pending key"
        );
        assert_eq!(std::fs::read_to_string(p.join("client.key"))?, "new key");
        assert_eq!(std::fs::read_to_string(p.join("client.crt"))?, "new crt");
        // Once its certificate arrives, the pending pair rolls in and the CSR goes.
        std::fs::write(p.join("client.crt.new"), "newer crt")?;
        finish_renewal(p)?;
        assert_eq!(
            std::fs::read_to_string(p.join("client.key"))?,
            "pending key"
        );
        assert_eq!(std::fs::read_to_string(p.join("client.crt"))?, "newer crt");
        assert!(!p.join("client.csr.new").exists());
        Ok(())
    }
}
