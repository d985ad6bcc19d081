//! `outpost audit`: the tail of the hash-chained audit log; `audit verify`: the chain
//! recomputed on this node and compared with every other member's.

use crate::wire::AuditCheck;
use anyhow::{Result, bail};
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::NO_BODY;

pub(super) async fn run(remote: &Remote, dir: DataDirArg, limit: u32, json: bool) -> Result<()> {
    let path = format!("/v1/audit?limit={limit}");
    let recs: Vec<crate::wire::AuditRecord> =
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

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Recompute this node's hash chain and compare its head with the other members'; exits
    /// non-zero naming the first row that does not verify, or the member that differs.
    Verify {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

fn chain_text(check: &AuditCheck) -> String {
    match check {
        AuditCheck::Intact { records } => format!("intact ({records} records)"),
        AuditCheck::Broken { seq } => {
            format!("broken: record {seq} is the first that does not verify")
        }
    }
}

pub(super) async fn verify(remote: &Remote, dir: DataDirArg, json: bool) -> Result<()> {
    let v: crate::wire::AuditVerifyView = api(remote, &dir)?
        .call(Method::GET, "/v1/audit/verify", NO_BODY)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "node {}: audit chain {}",
            v.node_id,
            chain_text(&v.local.check)
        );
        for p in &v.peers {
            match (&p.chain, p.agrees) {
                (Some(c), Some(true)) => println!(
                    "node {}: chain {}, same hash at record {}",
                    p.node_id,
                    chain_text(&c.check),
                    c.at_seq
                ),
                (Some(c), _) => println!(
                    "node {}: chain {}, hash at record {} {}",
                    p.node_id,
                    chain_text(&c.check),
                    c.at_seq,
                    if matches!(c.check, AuditCheck::Intact { .. }) {
                        "DIFFERS from this node's"
                    } else {
                        "not compared"
                    }
                ),
                (None, _) => println!(
                    "node {}: not compared ({})",
                    p.node_id,
                    p.error.as_deref().unwrap_or("no answer")
                ),
            }
        }
    }
    if !v.ok {
        let mut why = Vec::new();
        if let AuditCheck::Broken { seq } = v.local.check {
            why.push(format!("node {}: record {seq} does not verify", v.node_id));
        }
        for p in &v.peers {
            if let (Some(c), Some(false)) = (&p.chain, p.agrees) {
                why.push(match c.check {
                    AuditCheck::Broken { seq } => {
                        format!("node {}: record {seq} does not verify", p.node_id)
                    }
                    AuditCheck::Intact { .. } => {
                        format!("node {}: hash at record {} differs", p.node_id, c.at_seq)
                    }
                });
            }
        }
        bail!("audit chain check failed: {}", why.join("; "));
    }
    Ok(())
}
