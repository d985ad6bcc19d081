//! Two small audit files: the export file (`outpost audit export`, format
//! "outpost-audit-export" version 1) with its offline check, and a node's verified mark
//! (`D/audit-verified.json`).
//!
//! Export: JSON lines. Line 1 is the header (`ExportHeader`): the cluster, the node that
//! wrote it, the records it holds (`first_seq..=last_seq`) and `base_hash`, the prev_hash of
//! `first_seq`. Each further line is one record (`ExportRecord`) with its prev_hash and hash.
//! `check_export` walks the chain from `base_hash` without a cluster or a data dir: every
//! record in order, linked, its hash recomputed, the count the header promises; with a
//! checkpoint (SEQ:HASH, e.g. what `outpost audit checkpoint` prints after a compaction, or
//! any later record's hash from a live node) the record at SEQ must have HASH. The hash rule
//! itself belongs to storage (`outpost_storage::audit_hash`); this room may not name storage,
//! so the caller passes it in, and this file stays pure format code.
//!
//! Verified mark: the last audit record this node proved (seq, hash), so `audit verify` and
//! the console check only what came after it. Node-local, never replicated; written temp +
//! fsync + rename, only when it moved. A missing or unreadable file means "no mark": the next
//! check is a full one.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The export file's format name and version (line 1).
pub const FORMAT: &str = "outpost-audit-export";
pub const VERSION: u32 = 1;

/// The most records one export holds.
pub const MAX_EXPORT_RECORDS: u64 = 10_000_000;

/// Line 1 of an export file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    pub version: u32,
    pub cluster_id: String,
    pub cluster_name: String,
    pub node_id: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// prev_hash of record `first_seq` (the checkpoint's hash, or 64 zeros at genesis).
    pub base_hash: String,
    pub exported_at_ms: i64,
}

/// One record line of an export file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub outcome: String,
    pub prev_hash: String,
    pub hash: String,
}

/// A line of JSON and its newline.
pub fn json_line(value: &impl Serialize) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec(value)?;
    out.push(b'\n');
    Ok(out)
}

/// A point the file must agree with: record `seq` has `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
}

/// Parses `SEQ:HASH` (HASH: 64 hex digits).
pub fn parse_checkpoint(text: &str) -> Result<Checkpoint, String> {
    let (seq, hash) = text
        .split_once(':')
        .ok_or_else(|| format!("checkpoint {text:?} is not SEQ:HASH"))?;
    let seq: u64 = seq
        .trim()
        .parse()
        .map_err(|_| format!("checkpoint {text:?}: {seq:?} is not a record number"))?;
    let hash = hash.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "checkpoint {text:?}: the hash must be 64 hex digits"
        ));
    }
    Ok(Checkpoint { seq, hash })
}

/// What a good export file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCheck {
    pub header: ExportHeader,
    pub records: u64,
    /// The hash of the last record (the head of what the file proves).
    pub last_hash: String,
    /// The checkpoint given was found and matched.
    pub checkpoint: Option<Checkpoint>,
}

/// The hash rule of the chain: (prev_hash, record) -> the record's hash, None when prev_hash
/// is not a hash.
pub type HashRule<'a> = &'a dyn Fn(&str, &ExportRecord) -> Option<String>;

/// Walks an export file (see the module doc). Err names the first line or record that fails,
/// or the checkpoint that does not match.
pub fn check_export(
    input: impl BufRead,
    checkpoint: Option<&Checkpoint>,
    hash: HashRule<'_>,
) -> Result<ExportCheck, String> {
    let mut lines = input.lines();
    let first = match lines.next() {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Err(format!("line 1: {e}")),
        None => return Err("the file is empty (no header line)".into()),
    };
    let header = parse_header(&first)?;
    if header.first_seq == 0 || header.last_seq < header.first_seq {
        return Err(format!(
            "header: records {}..{} is not a range of records",
            header.first_seq, header.last_seq
        ));
    }
    let mut prev = header.base_hash.clone();
    let mut expected = header.first_seq;
    let mut matched = None;
    let mut check_point = |seq: u64, h: &str| -> Result<(), String> {
        match checkpoint {
            Some(cp) if cp.seq == seq => {
                if cp.hash == h {
                    matched = Some(cp.clone());
                    Ok(())
                } else {
                    Err(format!(
                        "checkpoint mismatch: record {seq} has hash {h} in the file, the checkpoint says {}",
                        cp.hash
                    ))
                }
            }
            _ => Ok(()),
        }
    };
    check_point(header.first_seq - 1, &header.base_hash)?;
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let line = line.map_err(|e| format!("record {expected} (line {n}): {e}"))?;
        if expected > header.last_seq {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "line {n}: more records than the header's last_seq {}",
                header.last_seq
            ));
        }
        let r: ExportRecord = serde_json::from_str(&line)
            .map_err(|e| format!("record {expected} (line {n}) does not parse: {e}"))?;
        if r.seq != expected {
            return Err(format!(
                "record {expected} (line {n}) is missing: the line holds record {} (records missing or reordered)",
                r.seq
            ));
        }
        if r.prev_hash != prev {
            return Err(format!(
                "record {expected} (line {n}) does not link to the record before it"
            ));
        }
        if hash(&prev, &r).as_deref() != Some(r.hash.as_str()) {
            return Err(format!(
                "record {expected} (line {n}) does not verify: its fields or hash were changed"
            ));
        }
        check_point(r.seq, &r.hash)?;
        prev = r.hash;
        expected += 1;
    }
    if expected <= header.last_seq {
        return Err(format!(
            "record {expected} is missing: the file ends after record {} but its header says {} (truncated)",
            expected - 1,
            header.last_seq
        ));
    }
    if let Some(cp) = checkpoint
        && matched.is_none()
    {
        return Err(format!(
            "checkpoint {} is not in this file (it proves records {}..{} from the hash of {})",
            cp.seq,
            header.first_seq,
            header.last_seq,
            header.first_seq - 1
        ));
    }
    Ok(ExportCheck {
        records: header.last_seq - header.first_seq + 1,
        header,
        last_hash: prev,
        checkpoint: matched,
    })
}

fn parse_header(line: &str) -> Result<ExportHeader, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("line 1 is not an export header: {e}"))?;
    let format = v.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != FORMAT {
        return Err(format!(
            "not an audit export: line 1 names format {format:?}, not {FORMAT:?}"
        ));
    }
    let version = v.get("version").and_then(|f| f.as_u64()).unwrap_or(0);
    if version != u64::from(VERSION) {
        return Err(format!(
            "{FORMAT} version {version} is unknown (this outpost reads version {VERSION})"
        ));
    }
    serde_json::from_value(v).map_err(|e| format!("line 1: the header is incomplete: {e}"))
}

/// A node's verified mark (the module doc), in memory and in its file.
#[derive(Debug)]
pub struct VerifiedMark {
    path: PathBuf,
    mark: Mutex<Option<(u64, String)>>,
}

#[derive(Serialize, Deserialize)]
struct MarkFile {
    seq: u64,
    hash: String,
}

/// The mark's file in a data directory.
pub fn mark_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit-verified.json")
}

impl VerifiedMark {
    /// The mark kept in `data_dir` (none when the file is missing or unreadable; a damaged
    /// file is logged, and the next check is a full one).
    pub fn open(data_dir: &Path) -> VerifiedMark {
        let path = mark_path(data_dir);
        let mark = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice::<MarkFile>(&b) {
                Ok(m) => Some((m.seq, m.hash)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "audit mark unreadable; the next audit check is a full one");
                    None
                }
            },
            Err(_) => None,
        };
        VerifiedMark {
            path,
            mark: Mutex::new(mark),
        }
    }

    pub fn get(&self) -> Option<(u64, String)> {
        self.mark.lock().ok().and_then(|m| m.clone())
    }

    /// Moves the mark to (seq, hash) and writes the file, if it moved. Blocking.
    pub fn advance(&self, seq: u64, hash: &str) -> std::io::Result<()> {
        let mut m = self
            .mark
            .lock()
            .map_err(|_| std::io::Error::other("audit mark lock poisoned"))?;
        if m.as_ref().is_some_and(|(s, h)| *s == seq && h == hash) {
            return Ok(());
        }
        let body = serde_json::to_vec(&MarkFile {
            seq,
            hash: hash.to_owned(),
        })
        .map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            // On disk before the rename makes it the mark.
            f.sync_all()?;
        }
        crate::shared::files::rename_durably(&tmp, &self.path)?;
        *m = Some((seq, hash.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Any chain rule will do for the format's walk; storage's is tested in storage.
    fn rule(prev: &str, r: &ExportRecord) -> Option<String> {
        if prev.len() != 64 {
            return None;
        }
        let mut h = Sha256::new();
        for part in [
            prev,
            &r.seq.to_string(),
            &r.at_ms.to_string(),
            &r.actor,
            &r.action,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for part in [&r.target, &r.detail, &r.outcome] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        Some(hex::encode(h.finalize()))
    }

    /// A good file of records 4..=8, chained to a base hash.
    fn file() -> (Vec<String>, Vec<ExportRecord>) {
        let base = "ab".repeat(32);
        let header = ExportHeader {
            format: FORMAT.into(),
            version: VERSION,
            cluster_id: "c".into(),
            cluster_name: "lab".into(),
            node_id: 1,
            first_seq: 4,
            last_seq: 8,
            base_hash: base.clone(),
            exported_at_ms: 1,
        };
        let mut prev = base;
        let mut recs = Vec::new();
        for seq in 4..=8 {
            let mut r = ExportRecord {
                seq,
                at_ms: seq as i64 * 10,
                actor: "cli".into(),
                action: "config.set".into(),
                target: format!("config:global/k{seq}"),
                detail: "{}".into(),
                outcome: "ok".into(),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            r.hash = rule(&prev, &r).unwrap_or_default();
            prev = r.hash.clone();
            recs.push(r);
        }
        let mut lines = vec![serde_json::to_string(&header).unwrap_or_default()];
        lines.extend(
            recs.iter()
                .map(|r| serde_json::to_string(r).unwrap_or_default()),
        );
        (lines, recs)
    }

    fn check(lines: &[String], cp: Option<&str>) -> Result<u64, String> {
        let cp = cp.map(parse_checkpoint).transpose()?;
        let text = lines.join("\n") + "\n";
        check_export(text.as_bytes(), cp.as_ref(), &rule).map(|c| c.records)
    }

    #[test]
    fn export_file_table() {
        let (good, recs) = file();
        let h6 = format!("6:{}", recs[2].hash);
        let base = format!("3:{}", "ab".repeat(32));
        let wrong = format!("6:{}", recs[3].hash);
        let outside = format!("9:{}", recs[3].hash);
        type Case = (
            &'static str,
            fn(&mut Vec<String>),
            Option<String>,
            Result<u64, &'static str>,
        );
        let cases: Vec<Case> = vec![
            ("good", |_| {}, None, Ok(5)),
            ("good with a record's hash", |_| {}, Some(h6), Ok(5)),
            (
                "good with the base as checkpoint",
                |_| {},
                Some(base),
                Ok(5),
            ),
            (
                "checkpoint mismatch",
                |_| {},
                Some(wrong),
                Err("checkpoint mismatch: record 6"),
            ),
            (
                "checkpoint outside",
                |_| {},
                Some(outside),
                Err("checkpoint 9 is not in this file"),
            ),
            (
                "byte flip in a detail",
                |l| l[3] = l[3].replace("k6", "k7"),
                None,
                Err("record 6 (line 4) does not verify"),
            ),
            (
                "byte flip breaking the JSON",
                |l| l[2] = l[2].replacen('{', "[", 1),
                None,
                Err("record 5 (line 3) does not parse"),
            ),
            (
                "truncated line",
                |l| {
                    let n = l[5].len() / 2;
                    l[5].truncate(n);
                },
                None,
                Err("record 8 (line 6) does not parse"),
            ),
            (
                "truncated file",
                |l| {
                    l.truncate(4);
                },
                None,
                Err("record 7 is missing: the file ends after record 6"),
            ),
            (
                "reordered records",
                |l| l.swap(2, 3),
                None,
                Err("record 5 (line 3) is missing: the line holds record 6"),
            ),
            (
                "hash copied from its neighbour",
                |l| l[2] = l[2].replace("config:global/k5", "config:global/k5 "),
                None,
                Err("record 5 (line 3) does not verify"),
            ),
            (
                "wrong format",
                |l| l[0] = l[0].replace(FORMAT, "outpost-backup"),
                None,
                Err("not an audit export"),
            ),
            (
                "wrong version",
                |l| l[0] = l[0].replace("\"version\":1", "\"version\":2"),
                None,
                Err("version 2 is unknown"),
            ),
            (
                "extra record",
                |l| {
                    let last = l[5].clone();
                    l.push(last);
                },
                None,
                Err("line 7: more records"),
            ),
        ];
        for (name, tamper, cp, want) in cases {
            let mut lines = good.clone();
            tamper(&mut lines);
            let got = check(&lines, cp.as_deref());
            match (got, want) {
                (Ok(n), Ok(w)) => assert_eq!(n, w, "{name}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        assert!(check(&[], None).is_err());
    }

    #[test]
    fn checkpoint_parse_table() {
        let h = "AB".repeat(32);
        assert_eq!(
            parse_checkpoint(&format!("12:{h}")),
            Ok(Checkpoint {
                seq: 12,
                hash: h.to_ascii_lowercase()
            })
        );
        for bad in ["12", "x:ab", &format!("12:{}", "ab".repeat(31)), "12:zz"] {
            assert!(parse_checkpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mark_moves_and_survives_a_reopen() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let m = VerifiedMark::open(dir.path());
        assert_eq!(m.get(), None);
        m.advance(7, "h7")?;
        assert_eq!(VerifiedMark::open(dir.path()).get(), Some((7, "h7".into())));
        std::fs::write(mark_path(dir.path()), b"{not json")?;
        assert_eq!(VerifiedMark::open(dir.path()).get(), None);
        Ok(())
    }
}
