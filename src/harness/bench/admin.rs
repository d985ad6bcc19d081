//! The admin identity a benchmark calls the cluster with: a certificate issued on the spot by
//! the CA key of the local node's data directory.

use std::sync::Arc;

use anyhow::Result;
use outpost_certs::{CertAuthority, Role, TlsIdentity, Validity};

use crate::shared::datadir::DataDir;

/// Days a bench's admin certificate is valid. Nodes report (status, console alarms) the
/// soonest-ending admin certificate presented to them within a day, and warn under 30 days
/// left; a bench must not leave that alarm behind. The key lives only in this process's
/// memory and is gone when the bench ends, so the length costs nothing.
const BENCH_ADMIN_DAYS: u32 = 45;

/// A TLS client configuration with an admin certificate issued by the CA key in `dd`.
pub(crate) fn admin_tls(dd: &DataDir, ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let ca = CertAuthority::from_pem(ca_pem, &dd.read(&dd.ca_key())?)?;
    let validity = Validity::days_from(crate::shared::now_ms() / 1000, BENCH_ADMIN_DAYS);
    let (cert, key) = ca.issue_with_new_key(&Role::Admin("bench".into()), &validity)?;
    let identity = TlsIdentity::from_pem(&cert, &key, ca_pem)?;
    Ok(outpost_certs::client_config(
        ca_pem,
        Some(&identity),
        &[b"http/1.1"],
    )?)
}
