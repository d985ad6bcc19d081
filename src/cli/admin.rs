//! `outpost admin issue-cert | revoke`: people's certificates for `--server`.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use hyper::Method;
use std::path::PathBuf;

use super::role::{self, GrantArgs};
use super::{DataDirArg, Remote, api};
use crate::shared::client::{ApiFailure, NO_BODY, urlencode};
use crate::shared::datadir::DataDir;

#[derive(Subcommand, Debug)]
pub(super) enum AdminCmd {
    /// Issue a certificate for a person from this node's CA into DIR (admin.crt, admin.key,
    /// ca.crt). The name's role is set first, through this node (which must run): the
    /// certificate holds no role, the replicated state does, for every certificate and the
    /// console account of the name.
    IssueCert {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        grant: GrantArgs,
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
                "admin certificates of {name} issued until now are revoked on every node; issue a new one with: outpost admin issue-cert --name {name} --role ROLE -o DIR"
            );
        }
        AdminCmd::IssueCert {
            name,
            grant,
            out,
            days,
            dir,
        } => {
            let dd = DataDir::new(&dir.data_dir);
            dd.check()?;
            let ca_pem = dd.read(&dd.ca_cert())?;
            let ca = outpost_certs::CertAuthority::from_pem(&ca_pem, &dd.read(&dd.ca_key())?)?;
            // The role first: a certificate of a name without a row would be an admin's.
            let view = match role::set(&api(remote, &dir)?, &name, &grant).await {
                Ok(v) => v,
                Err(e) if e.downcast_ref::<ApiFailure>().is_some() => {
                    bail!("the node refused the role of {name}: {e}; nothing was issued")
                }
                Err(e) => bail!(
                    "this node did not answer ({e:#}): it must run to record the role of {name} \
                     before a certificate is made; nothing was issued"
                ),
            };
            let validity = outpost_certs::Validity::days_from(crate::shared::now_ms() / 1000, days);
            let (cert, key) =
                ca.issue_with_new_key(&outpost_certs::Role::Admin(name.clone()), &validity)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            outpost_certs::write_public_file(&out.join("admin.crt"), cert.as_bytes())?;
            outpost_certs::write_secret_file(&out.join("admin.key"), key.as_bytes())?;
            outpost_certs::write_public_file(&out.join("ca.crt"), ca_pem.as_bytes())?;
            println!("{} on every node", role::describe(&view, "is now"));
            println!(
                "certificate for {name} in {}: use --server HOST:PORT --cert {0}/admin.crt --key {0}/admin.key --ca {0}/ca.crt",
                out.display()
            );
        }
    }
    Ok(())
}
