//! `outpost admin issue-cert | revoke`: administrator certificates for `--server`.

use anyhow::{Context, Result};
use clap::Subcommand;
use hyper::Method;
use std::path::PathBuf;

use super::{DataDirArg, Remote, api};
use crate::shared::client::{NO_BODY, urlencode};
use crate::shared::datadir::DataDir;

#[derive(Subcommand, Debug)]
pub(super) enum AdminCmd {
    /// Issue an admin certificate from this node's CA into DIR (admin.crt, admin.key, ca.crt).
    IssueCert {
        #[arg(long)]
        name: String,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Revoke every admin certificate named NAME issued until now (on every node as soon as
    /// the revocation commits); a certificate issued afterwards under the name works.
    Revoke {
        name: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

pub(super) async fn run(remote: &Remote, cmd: AdminCmd) -> Result<()> {
    match cmd {
        AdminCmd::Revoke { name, dir } => {
            let _: serde_json::Value = api(remote, &dir)?
                .call(
                    Method::POST,
                    &format!("/v1/admins/{}/revoke", urlencode(&name)),
                    NO_BODY,
                )
                .await?;
            println!(
                "admin certificates of {name} issued until now are revoked on every node; issue a new one with: outpost admin issue-cert --name {name} -o DIR"
            );
        }
        AdminCmd::IssueCert {
            name,
            out,
            days,
            dir,
        } => {
            let dd = DataDir::new(&dir.data_dir);
            dd.check()?;
            let ca_pem = dd.read(&dd.ca_cert())?;
            let ca = outpost_certs::CertAuthority::from_pem(&ca_pem, &dd.read(&dd.ca_key())?)?;
            let validity = outpost_certs::Validity::days_from(crate::shared::now_ms() / 1000, days);
            let (cert, key) =
                ca.issue_with_new_key(&outpost_certs::Role::Admin(name.clone()), &validity)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            outpost_certs::write_public_file(&out.join("admin.crt"), cert.as_bytes())?;
            outpost_certs::write_secret_file(&out.join("admin.key"), key.as_bytes())?;
            outpost_certs::write_public_file(&out.join("ca.crt"), ca_pem.as_bytes())?;
            println!(
                "admin certificate for {name} in {}: use --server HOST:PORT --cert {0}/admin.crt --key {0}/admin.key --ca {0}/ca.crt",
                out.display()
            );
        }
    }
    Ok(())
}
