//! What a compaction moves out is first kept: before the leader proposes `CompactHistory`
//! through record S, it writes records base+1..=S of its live log as an export file (the
//! format of `outpost audit export`, `shared::audit_file`) into `D/audit-archive/`, fsynced
//! and renamed, and walks it as `outpost audit verify --file` would. Only then is the
//! compaction proposed; when the file cannot be written (a full disk) nothing is cut, and the
//! next pass tries again. The checkpoint the compaction leaves is the file's last record, so
//! `outpost audit verify --file ARCHIVE --checkpoint SEQ:HASH` proves it offline. Every node
//! holds the same records, so whichever node leads when a cut is due keeps that part; the
//! operator copies `D/audit-archive/` of every node to offline media with the backups.
//!
//! Blocking (file and SQLite I/O): callers run it on a blocking thread.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use outpost_storage::{AuditFields, Reader, audit_hash};

use crate::api::audit::{EXPORT_PAGE, write_records};
use crate::shared::audit_file::{self, ExportHeader, ExportRecord};

/// The archive's directory in the data directory.
pub const ARCHIVE_DIR: &str = "audit-archive";

/// The chain rule over an export file's records (storage's hash of the canonical fields), for
/// `shared::audit_file::check_export`: the archive's check and the CLI's offline one.
pub fn chain_rule(prev: &str, r: &ExportRecord) -> Option<String> {
    audit_hash(
        prev,
        &AuditFields {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: &r.actor,
            action: &r.action,
            target: &r.target,
            detail: &r.detail,
            outcome: &r.outcome,
        },
    )
}

/// The archive file of records `first..=last` of `cluster`.
pub fn archive_path(data_dir: &Path, cluster: &str, first: u64, last: u64) -> PathBuf {
    data_dir.join(ARCHIVE_DIR).join(format!(
        "outpost-audit-{cluster}-{first:012}-{last:012}.jsonl"
    ))
}

/// Writes (or finds, already written and sound) the archive of records base+1..=`through`,
/// and returns its path. Err says what failed; nothing may be cut then.
pub fn keep(
    reader: &Reader,
    data_dir: &Path,
    node_id: u64,
    through: u64,
) -> Result<PathBuf, String> {
    let base = reader
        .audit_checkpoint()
        .map_err(|e| format!("reading the chain's base: {e}"))?
        .map(|c| c.seq)
        .unwrap_or(0);
    let first = base + 1;
    if through < first {
        return Err(format!(
            "nothing to keep: record {through} is at or below the base {base}"
        ));
    }
    let cluster = reader
        .cluster()
        .map_err(|e| format!("reading the cluster: {e}"))?
        .ok_or("the cluster is not initialized")?;
    let path = archive_path(data_dir, &cluster.id, first, through);
    // A pass that wrote the file but whose compaction did not commit (a leader change): the
    // same records, the same file.
    if path.exists() && check(&path, through).is_ok() {
        return Ok(path);
    }
    let dir = data_dir.join(ARCHIVE_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = path.with_extension("jsonl.partial");
    let written = write(reader, &tmp, node_id, &cluster, first, through);
    let checked = written.and_then(|()| check(&tmp, through));
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crate::shared::files::rename_durably(&tmp, &path)
        .map_err(|e| format!("renaming {} into place: {e}", tmp.display()))?;
    Ok(path)
}

fn write(
    reader: &Reader,
    tmp: &Path,
    node_id: u64,
    cluster: &outpost_storage::ClusterInfo,
    first: u64,
    last: u64,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing {}: {e}", tmp.display());
    let page = reader
        .audit_chained(first - 1, last, EXPORT_PAGE)
        .map_err(|e| format!("reading audit records after {}: {e}", first - 1))?;
    let base_hash = match page.first() {
        Some(c) if c.record.seq == first => c.prev_hash.clone(),
        _ => return Err(format!("record {first} is not in the live log")),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io)?;
    let mut out = BufWriter::new(file);
    let header = ExportHeader {
        format: audit_file::FORMAT.into(),
        version: audit_file::VERSION,
        cluster_id: cluster.id.clone(),
        cluster_name: cluster.name.clone(),
        node_id,
        first_seq: first,
        last_seq: last,
        base_hash,
        exported_at_ms: outpost_raft::now_ms(),
    };
    out.write_all(&line(&header)?).map_err(io)?;
    write_records(reader, page, first, last, &mut out)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

/// Walks the file as `audit verify --file` does; it must end at record `last`.
fn check(path: &Path, last: u64) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let got = audit_file::check_export(BufReader::new(f), None, &chain_rule)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if got.header.last_seq != last {
        return Err(format!(
            "{} ends at record {}, not {last}",
            path.display(),
            got.header.last_seq
        ));
    }
    Ok(())
}

/// One JSON line of a header or a record.
fn line(v: &impl serde::Serialize) -> Result<Vec<u8>, String> {
    audit_file::json_line(v).map_err(|e| format!("encoding: {e}"))
}
