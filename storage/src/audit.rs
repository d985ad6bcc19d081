//! The audit hash chain: pure functions over row values.
//!
//! hash = sha256(prev_hash (32 raw bytes; zeros for the first row) || canonical(row)), where
//! canonical(row) = seq u64 LE, at_ms i64 LE, then actor, action, target, detail, outcome,
//! each as u64 LE byte length followed by the UTF-8 bytes. Hashes are stored as lowercase hex.
//!
//! The chain has a base: genesis (seq 0, 64 zeros) or, once retention has moved old records
//! out, the newest `audit_checkpoints` row (that seq and its hash). A walk starts from a base
//! and expects base.seq + 1 with prev_hash = base.hash. The same walk starts from a node's
//! verified mark (an incremental check): a mark is a base this node proved earlier.

use sha2::{Digest, Sha256};

/// prev_hash of the first audit row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed fields of one audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFields<'a> {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: &'a str,
    pub outcome: &'a str,
}

/// Canonical, unambiguous byte encoding of the hashed fields.
pub(crate) fn canonical(f: &AuditFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        16 + 40
            + f.actor.len()
            + f.action.len()
            + f.target.len()
            + f.detail.len()
            + f.outcome.len(),
    );
    out.extend_from_slice(&f.seq.to_le_bytes());
    out.extend_from_slice(&f.at_ms.to_le_bytes());
    for s in [f.actor, f.action, f.target, f.detail, f.outcome] {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// Hex hash of a row chained to `prev_hash_hex`; None if `prev_hash_hex` is not 32 bytes of hex.
/// Public as `audit_hash`: the offline check of an export file uses the same rule.
pub fn chain_hash(prev_hash_hex: &str, f: &AuditFields<'_>) -> Option<String> {
    let prev = hex::decode(prev_hash_hex).ok()?;
    if prev.len() != 32 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(&prev);
    h.update(canonical(f));
    Some(hex::encode(h.finalize()))
}

/// Walks the chain state forward one row at a time, from a base.
pub(crate) struct ChainWalker {
    expected_prev: String,
    expected_seq: u64,
}

/// A stored row as read back for verification.
pub(crate) struct StoredRow<'a> {
    pub fields: AuditFields<'a>,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

impl ChainWalker {
    /// A walk whose first row must be `seq + 1`, chained to `hash`.
    pub(crate) fn from_base(seq: u64, hash: &str) -> ChainWalker {
        ChainWalker {
            expected_prev: hash.to_owned(),
            expected_seq: seq.saturating_add(1),
        }
    }

    /// Checks the next row; Err(seq) names the row that breaks the chain.
    pub(crate) fn step(&mut self, row: &StoredRow<'_>) -> Result<(), u64> {
        let seq = row.fields.seq;
        if seq != self.expected_seq || row.prev_hash != self.expected_prev {
            return Err(seq.min(self.expected_seq));
        }
        match chain_hash(row.prev_hash, &row.fields) {
            Some(h) if h == row.hash => {
                self.expected_prev = h;
                self.expected_seq += 1;
                Ok(())
            }
            _ => Err(seq),
        }
    }

    /// Rows checked since the base.
    pub(crate) fn walked(&self, base_seq: u64) -> u64 {
        (self.expected_seq - 1).saturating_sub(base_seq)
    }

    /// Checks the end of the chain against the head recorded in meta.
    /// Returns Ok((seq, hash) of the last record: the base when no row followed it) or
    /// Err(seq of the first unverifiable record).
    pub(crate) fn finish(self, head: Option<&str>) -> Result<(u64, String), u64> {
        let head = head.unwrap_or(GENESIS_HASH);
        if head == self.expected_prev {
            Ok((self.expected_seq - 1, self.expected_prev))
        } else {
            Err(self.expected_seq)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(seq: u64, detail: &str) -> AuditFields<'_> {
        AuditFields {
            seq,
            at_ms: 10 * seq as i64,
            actor: "cli",
            action: "config.set",
            target: "config:global/k",
            detail,
            outcome: "ok",
        }
    }

    #[test]
    fn canonical_is_unambiguous() {
        // Moving a byte between adjacent fields must change the encoding.
        let a = AuditFields {
            actor: "ab",
            action: "c",
            ..fields(1, "")
        };
        let b = AuditFields {
            actor: "a",
            action: "bc",
            ..fields(1, "")
        };
        assert_ne!(canonical(&a), canonical(&b));
    }

    #[test]
    fn chain_hash_rejects_bad_prev() {
        let f = fields(1, "");
        assert!(chain_hash(GENESIS_HASH, &f).is_some());
        assert!(chain_hash("zz", &f).is_none());
        assert!(chain_hash("00", &f).is_none());
    }

    /// Builds a valid chain of n rows: (fields detail, prev, hash).
    fn chain(n: u64) -> Vec<(u64, String, String, String)> {
        let mut prev = GENESIS_HASH.to_owned();
        let mut rows = Vec::new();
        for seq in 1..=n {
            let detail = format!("d{seq}");
            let hash = chain_hash(&prev, &fields(seq, &detail)).unwrap_or_default();
            rows.push((seq, detail, prev.clone(), hash.clone()));
            prev = hash;
        }
        rows
    }

    fn walk(rows: &[(u64, String, String, String)], head: Option<&str>) -> Result<u64, u64> {
        walk_from(0, GENESIS_HASH, rows, head)
    }

    fn walk_from(
        base_seq: u64,
        base_hash: &str,
        rows: &[(u64, String, String, String)],
        head: Option<&str>,
    ) -> Result<u64, u64> {
        let mut w = ChainWalker::from_base(base_seq, base_hash);
        for (seq, detail, prev, hash) in rows {
            w.step(&StoredRow {
                fields: fields(*seq, detail),
                prev_hash: prev,
                hash,
            })?;
        }
        w.finish(head).map(|(seq, _)| seq)
    }

    #[test]
    fn walker_from_a_base_table() {
        let good = chain(6);
        let head = good[5].3.clone();
        // Rows 1..=3 moved out; the base is row 3's (seq, hash).
        let base = (3u64, good[2].3.clone());
        let tail = good[3..].to_vec();
        type Case = (
            &'static str,
            u64,
            String,
            Vec<(u64, String, String, String)>,
            Result<u64, u64>,
        );
        let cases: Vec<Case> = vec![
            (
                "intact from the base",
                base.0,
                base.1.clone(),
                tail.clone(),
                Ok(6),
            ),
            (
                "wrong base hash",
                base.0,
                GENESIS_HASH.into(),
                tail.clone(),
                Err(4),
            ),
            ("base seq too low", 2, base.1.clone(), tail.clone(), Err(3)),
            (
                "first row after the base missing",
                base.0,
                base.1.clone(),
                tail[1..].to_vec(),
                Err(4),
            ),
            (
                "row before the base left behind",
                base.0,
                base.1.clone(),
                good[2..].to_vec(),
                Err(3),
            ),
            (
                "tail truncated",
                base.0,
                base.1.clone(),
                tail[..2].to_vec(),
                Err(6),
            ),
            ("nothing after the base", 6, head.clone(), vec![], Ok(6)),
            (
                "from a mark in the middle",
                4,
                good[3].3.clone(),
                good[4..].to_vec(),
                Ok(6),
            ),
        ];
        for (name, seq, hash, rows, want) in cases {
            assert_eq!(walk_from(seq, &hash, &rows, Some(&head)), want, "{name}");
        }
        let mut w = ChainWalker::from_base(base.0, &base.1);
        for (seq, detail, prev, hash) in &tail {
            let row = StoredRow {
                fields: fields(*seq, detail),
                prev_hash: prev,
                hash,
            };
            assert_eq!(w.step(&row), Ok(()));
        }
        assert_eq!(w.walked(base.0), 3);
        assert_eq!(w.finish(Some(&head)), Ok((6, head.clone())));
    }

    #[test]
    fn walker_table() {
        let good = chain(4);
        let head = good[3].3.clone();
        type Case = (
            &'static str,
            fn(&mut Vec<(u64, String, String, String)>),
            bool,
            Result<u64, u64>,
        );
        let cases: Vec<Case> = vec![
            ("intact", |_| {}, true, Ok(4)),
            ("detail edited", |r| r[1].1 = "evil".into(), true, Err(2)),
            (
                "hash edited",
                |r| r[2].3 = GENESIS_HASH.into(),
                true,
                Err(3),
            ),
            (
                "middle row deleted",
                |r| {
                    r.remove(1);
                },
                true,
                Err(2),
            ),
            (
                "last row deleted",
                |r| {
                    r.pop();
                },
                true,
                Err(4),
            ),
            ("bad prev hex", |r| r[0].2 = "xyz".into(), true, Err(1)),
        ];
        for (name, tamper, with_head, want) in cases {
            let mut rows = good.clone();
            tamper(&mut rows);
            let h = with_head.then_some(head.as_str());
            assert_eq!(walk(&rows, h), want, "{name}");
        }
        assert_eq!(walk(&[], None), Ok(0));
        assert_eq!(walk(&good, None), Err(5), "head missing while rows exist");
    }
}
