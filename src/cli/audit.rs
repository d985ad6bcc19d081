//! `outpost audit`: the tail of the hash-chained audit log.

use anyhow::Result;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::NO_BODY;

pub(super) async fn run(remote: &Remote, dir: DataDirArg, limit: u32, json: bool) -> Result<()> {
    let path = format!("/v1/audit?limit={limit}");
    let recs: Vec<outpost_storage::AuditRecord> =
        api(remote, &dir)?.call(Method::GET, &path, NO_BODY).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&recs)?);
    } else {
        for r in recs {
            println!(
                "{:>6} {} {:<14} {:<16} {:<24} {}",
                r.seq,
                format_ms(r.at_ms),
                r.actor,
                r.action,
                r.target,
                r.outcome
            );
        }
    }
    Ok(())
}
