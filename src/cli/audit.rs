//! `outpost audit`: the tail of the hash-chained audit log; `audit verify`: the chain
//! checked on this node (from its verified mark, or `--full` from the base) and compared with
//! every other member's; `audit verify --file`: an export file checked offline (no cluster,
//! no data dir); `audit export`: the records with their hashes into a file; `audit
//! checkpoint`: the chain's base after a compaction.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::node::archive::chain_rule;
use crate::shared::audit_file;
use crate::wire::AuditCheck;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use hyper::Method;

use super::{DataDirArg, Remote, api, format_ms};
use crate::shared::client::NO_BODY;

pub(super) async fn run(
    remote: &Remote,
    dir: DataDirArg,
    limit: u32,
    actor: Option<String>,
    json: bool,
) -> Result<()> {
    let path = match &actor {
        None => format!("/v1/audit?limit={limit}"),
        Some(a) => format!(
            "/v1/audit?limit={limit}&actor={}",
            crate::shared::client::urlencode(a)
        ),
    };
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
    /// Check this node's hash chain (the records after its last verified one, or all with
    /// --full) and compare it with the other members'; exits non-zero naming the first record
    /// that does not verify, or the member that differs. With --file: check an export file
    /// offline instead (no cluster, no data dir needed).
    Verify {
        /// Walk the whole chain from its base, not only what is new since the last check.
        #[arg(long, conflicts_with = "file")]
        full: bool,
        /// An export file (`audit export`) to check offline.
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: SEQ:HASH the file must hold (record SEQ has HASH), e.g. what `audit
        /// checkpoint` printed, or a live record's hash.
        #[arg(long, requires = "file")]
        checkpoint: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Write audit records with their hashes into FILE (JSON lines; refuses an existing
    /// file), to keep them before retention moves them out.
    Export {
        /// Only the records up to this time: an RFC 3339 time, a date (up to its end, UTC)
        /// or unix milliseconds.
        #[arg(long)]
        until: Option<String>,
        /// The first record (default: the oldest still in the live log).
        #[arg(long)]
        from: Option<u64>,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// The chain's base: the checkpoint left by the newest compaction (none before any).
    Checkpoint {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

pub(super) async fn command(remote: &Remote, cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Verify {
            file: Some(file),
            checkpoint,
            json,
            ..
        } => verify_file(&file, checkpoint.as_deref(), json),
        AuditCmd::Verify {
            full, json, dir, ..
        } => verify(remote, dir, full, json).await,
        AuditCmd::Export {
            until,
            from,
            output,
            dir,
        } => export(remote, dir, until.as_deref(), from, &output).await,
        AuditCmd::Checkpoint { json, dir } => checkpoint(remote, dir, json).await,
    }
}

/// `--until`: unix milliseconds, an RFC 3339 time, or a date (its last millisecond, UTC).
fn parse_until(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map_err(|_| format!("--until {t}: too large for milliseconds"));
    }
    let (spec, end_of_day) = if t.len() == 10 && t.as_bytes().get(4) == Some(&b'-') {
        (format!("{t}T23:59:59Z"), 999)
    } else {
        (t.to_owned(), 0)
    };
    let at = humantime::parse_rfc3339_weak(&spec).map_err(|e| {
        format!("--until {t}: not a time like 2026-01-31, 2026-01-31T12:00:00Z or unix ms ({e})")
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("--until {t}: before 1970"))?
        .as_millis();
    i64::try_from(ms)
        .map(|m| m + end_of_day)
        .map_err(|_| format!("--until {t}: out of range"))
}

fn verify_file(file: &Path, checkpoint: Option<&str>, json: bool) -> Result<()> {
    let cp = checkpoint
        .map(audit_file::parse_checkpoint)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let check = audit_file::check_export(std::io::BufReader::new(f), cp.as_ref(), &chain_rule)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let h = &check.header;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": true,
                "file": file,
                "cluster_id": h.cluster_id,
                "cluster_name": h.cluster_name,
                "node_id": h.node_id,
                "first_seq": h.first_seq,
                "last_seq": h.last_seq,
                "records": check.records,
                "base_hash": h.base_hash,
                "last_hash": check.last_hash,
                "checkpoint": check.checkpoint.as_ref().map(|c| format!("{}:{}", c.seq, c.hash)),
            }))?
        );
    } else {
        println!(
            "{}: records {}..{} of cluster {} ({}) intact: {} records chained from {}, the last hash {}",
            file.display(),
            h.first_seq,
            h.last_seq,
            h.cluster_name,
            h.cluster_id,
            check.records,
            h.base_hash,
            check.last_hash
        );
        match &check.checkpoint {
            Some(c) => println!("checkpoint {}:{} matches", c.seq, c.hash),
            None => println!(
                "no --checkpoint given: the file is consistent; give a checkpoint from the cluster to prove it is the cluster's record"
            ),
        }
    }
    Ok(())
}

async fn export(
    remote: &Remote,
    dir: DataDirArg,
    until: Option<&str>,
    from: Option<u64>,
    output: &Path,
) -> Result<()> {
    if output.exists() {
        bail!("{} exists; give a new file", output.display());
    }
    let mut query = Vec::new();
    if let Some(u) = until {
        query.push(format!(
            "until_ms={}",
            parse_until(u).map_err(anyhow::Error::msg)?
        ));
    }
    if let Some(f) = from {
        query.push(format!("from={f}"));
    }
    let path = format!("/v1/audit/export?{}", query.join("&"));
    let mut tmp = output.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let client = api(remote, &dir)?;
    // A generous cap: 10,000,000 records of at most a few KiB each.
    let got = client.download(&path, &tmp, 64 << 30).await;
    let checked = got.and_then(|_| {
        let f = std::fs::File::open(&tmp)?;
        audit_file::check_export(std::io::BufReader::new(f), None, &chain_rule)
            .map_err(|e| anyhow::anyhow!("the export received does not verify: {e}"))
    });
    let check = match checked {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // `download` has fsynced the file; the rename makes it whole under its name.
    if output.exists() {
        let _ = std::fs::remove_file(&tmp);
        bail!("{} appeared meanwhile; not replaced", output.display());
    }
    crate::shared::files::rename_durably(&tmp, output)
        .with_context(|| format!("renaming into {}", output.display()))?;
    let h = &check.header;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wrote {}: records {}..{} ({} records) of cluster {}, from node {}",
        output.display(),
        h.first_seq,
        h.last_seq,
        check.records,
        h.cluster_name,
        h.node_id
    )?;
    writeln!(
        out,
        "checkpoint {}:{} (verify later: outpost audit verify --file {} --checkpoint {}:{})",
        h.last_seq,
        check.last_hash,
        output.display(),
        h.last_seq,
        check.last_hash
    )?;
    Ok(())
}

async fn checkpoint(remote: &Remote, dir: DataDirArg, json: bool) -> Result<()> {
    let cp: Option<crate::wire::AuditCheckpoint> = api(remote, &dir)?
        .call(Method::GET, "/v1/audit/checkpoint", NO_BODY)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&cp)?);
        return Ok(());
    }
    match cp {
        None => println!("none: no record has been moved out; the chain starts at genesis"),
        Some(c) => {
            println!("{}:{}", c.seq, c.hash);
            println!(
                "records 1..{} moved out (the last compaction removed {}, on {}); record {} was written {}; the chain is proven from this checkpoint",
                c.seq,
                c.removed,
                format_ms(c.compacted_at_ms),
                c.seq,
                format_ms(c.record_at_ms)
            );
        }
    }
    Ok(())
}

fn chain_text(check: &AuditCheck) -> String {
    match check {
        AuditCheck::Intact { records } => format!("intact through record {records}"),
        AuditCheck::Broken { seq } => {
            format!("broken: record {seq} is the first that does not verify")
        }
    }
}

/// How far a check read: "12 new records since the last check" or "from the base".
fn scope_text(c: &crate::wire::AuditChain) -> String {
    let from = match &c.base {
        Some(b) => format!("checkpoint {}:{}", b.seq, b.hash),
        None => "genesis".to_string(),
    };
    if c.incremental {
        format!(
            "{} records read since this node's last check; chain base {from}",
            c.walked
        )
    } else {
        format!("{} records read from {from}", c.walked)
    }
}

async fn verify(remote: &Remote, dir: DataDirArg, full: bool, json: bool) -> Result<()> {
    let path = if full {
        "/v1/audit/verify?full=true"
    } else {
        "/v1/audit/verify"
    };
    let v: crate::wire::AuditVerifyView =
        api(remote, &dir)?.call(Method::GET, path, NO_BODY).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "node {}: audit chain {} ({})",
            v.node_id,
            chain_text(&v.local.check),
            scope_text(&v.local)
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

#[cfg(test)]
mod tests {
    use super::parse_until;

    #[test]
    fn until_table() {
        let cases: &[(&str, Result<i64, &str>)] = &[
            ("1700000000000", Ok(1_700_000_000_000)),
            ("1970-01-01T00:00:01Z", Ok(1_000)),
            ("1970-01-02", Ok(2 * 86_400_000 - 1)),
            ("yesterday", Err("not a time")),
            ("", Err("not a time")),
            ("1960-01-01", Err("")),
        ];
        for (text, want) in cases {
            match (parse_until(text), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, *w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
