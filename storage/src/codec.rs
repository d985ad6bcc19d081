//! Encoding of one Raft entry's payload: a batch of envelopes behind a format number.

use crate::error::StorageError;
use crate::model::Envelope;

/// The newest command format this build reads and writes. Format 2 appended the client
/// commands to format 1, format 3 the bundle, deployment and renewal commands, format 4 the
/// signed bundle commit, admin revocation and client certificate rotation, format 5 the
/// request id wrapper `Once` (same encoding of the older variants), format 6 `ReformCluster`,
/// the rolling upgrade's commands and `CreateReleaseDeployment`, format 7 `LockSignIn`, format 8 the rollout commands (`LabelClients`, `CreateRollout`,
/// `RolloutStep`, `ReportRemoval`), format 9 the liveness wrapper `Quiet` and retention's
/// `CompactHistory`, format 10 people's roles (`SetRole`), so older bytes decode as is.
pub const COMMAND_FORMAT: u16 = 10;

/// Largest encoded payload of one Raft entry (format header + batch), in bytes. The batcher
/// closes a batch before it would pass this, a single command larger than this never enters
/// the log, and the peer transport sizes AppendEntries requests so that any entry fits a frame.
/// One constant for all three, so none of them can disagree with the others.
pub const MAX_ENTRY_BYTES: usize = 8 << 20;

/// Encoding of one Raft entry's payload: 2 bytes little-endian COMMAND_FORMAT, then bincode 2
/// (serde, standard config) of Vec<Envelope>. A batch carries many envelopes (group commit).
pub fn encode_batch(batch: &[Envelope]) -> Vec<u8> {
    let format = batch.iter().map(|e| e.command.format()).max().unwrap_or(1);
    let mut out = format.to_le_bytes().to_vec();
    // Cannot fail: every sequence in these types has a known length and the writer is a Vec.
    let body = bincode::serde::encode_to_vec(batch, bincode::config::standard())
        .expect("bincode encoding of envelopes into a Vec is infallible");
    out.extend_from_slice(&body);
    out
}

/// Encoded size of one envelope inside a batch, exactly as `encode_batch` writes it (bincode 2,
/// standard config), measured without building the bytes.
pub fn encoded_len(env: &Envelope) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    // Cannot fail, as in `encode_batch`: the writer only counts.
    match bincode::serde::encode_into_writer(env, &mut size, bincode::config::standard()) {
        Ok(()) => size.bytes_written,
        Err(_) => usize::MAX,
    }
}

/// Exact length of `encode_batch` for `count` envelopes whose `encoded_len`s sum to
/// `envelopes`: the 2-byte format, the batch length (a bincode varint: 1, 3, 5 or 9 bytes),
/// then the envelopes.
pub fn batch_len(count: usize, envelopes: usize) -> usize {
    let prefix = match count as u64 {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    };
    envelopes.saturating_add(2 + prefix)
}

/// format > COMMAND_FORMAT => Err(NeedsUpgrade{found, supported}); undecodable => Err(Decode{..}).
/// Trailing bytes after the batch count as undecodable.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Envelope>, StorageError> {
    decode_batch_up_to(bytes, COMMAND_FORMAT)
}

/// `decode_batch` as a build whose newest format is `supported` runs it (tests play an older
/// node with it).
fn decode_batch_up_to(bytes: &[u8], supported: u16) -> Result<Vec<Envelope>, StorageError> {
    let Some((head, body)) = bytes.split_first_chunk::<2>() else {
        return Err(StorageError::Decode(
            bincode::error::DecodeError::UnexpectedEnd {
                additional: 2 - bytes.len(),
            },
        ));
    };
    let found = u16::from_le_bytes(*head);
    if found > supported {
        return Err(StorageError::NeedsUpgrade { found, supported });
    }
    if found == 0 {
        // Format 0 never existed; older formats would be migrated here explicitly.
        return Err(StorageError::Decode(
            bincode::error::DecodeError::OtherString(format!("unknown command format {found}")),
        ));
    }
    let (batch, used): (Vec<Envelope>, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(StorageError::Decode)?;
    if used != body.len() {
        return Err(StorageError::Decode(
            bincode::error::DecodeError::OtherString(format!(
                "{} trailing bytes after the batch",
                body.len() - used
            )),
        ));
    }
    if let Some(e) = batch.iter().find(|e| e.command.format() > found) {
        return Err(StorageError::Decode(
            bincode::error::DecodeError::OtherString(format!(
                "a format {found} batch carries a format {} command",
                e.command.format()
            )),
        ));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Command, Scope, TokenKind};

    fn sample() -> Vec<Envelope> {
        vec![
            Envelope {
                at_ms: 1_700_000_000_000,
                actor: "cli".into(),
                command: Command::InitCluster {
                    cluster_id: "c-1".into(),
                    name: "plant".into(),
                    ca_cert_pem: "PEM".into(),
                },
            },
            Envelope {
                at_ms: -5,
                actor: "node:1".into(),
                command: Command::SetConfig {
                    scope: Scope::Group("lab".into()),
                    key: "k".into(),
                    value: "v\u{e9}".into(),
                },
            },
            Envelope {
                at_ms: 7,
                actor: String::new(),
                command: Command::CreateToken {
                    id: "t".into(),
                    kind: TokenKind::Node,
                    secret_sha256: "00".into(),
                    expires_at_ms: 9,
                    uses: None,
                    groups: vec!["a".into(), "b".into()],
                },
            },
        ]
    }

    #[test]
    fn round_trips() {
        // A batch is written in the highest format its commands need.
        let revoke = Envelope {
            at_ms: 1,
            actor: "t".into(),
            command: Command::RevokeClient {
                client_id: "c1".into(),
            },
        };
        let mut with_v2 = sample();
        with_v2.push(revoke.clone());
        let release = Envelope {
            at_ms: 2,
            actor: "t".into(),
            command: Command::CreateReleaseDeployment {
                id: "d1".into(),
                release: "outpost".into(),
                version: Some(3),
                group: "all".into(),
            },
        };
        let mut with_v6 = vec![revoke.clone()];
        with_v6.push(release);
        for (batch, format) in [
            (vec![], 1u16),
            (sample(), 1),
            (with_v2, 2),
            (vec![revoke], 2),
            (with_v6, 6),
        ] {
            let bytes = encode_batch(&batch);
            assert_eq!(&bytes[..2], &format.to_le_bytes());
            assert_eq!(decode_batch(&bytes).ok(), Some(batch));
        }
    }

    /// The rollout commands are format 8: a node of format 7 stops at the first batch that
    /// carries one (and asks for an upgrade) instead of applying around it; a batch of older
    /// commands only stays readable by it.
    #[test]
    fn rollout_commands_need_format_8() {
        use crate::model::{FailureLimit, RolloutSpec, RolloutStep, Selector};
        let at = |command| Envelope {
            at_ms: 1,
            actor: "admin:ops".into(),
            command,
        };
        let spec = RolloutSpec {
            id: "d-1".into(),
            kind: "artifact".into(),
            name: "tool".into(),
            version: None,
            selector: Selector {
                labels: vec!["line2".into()],
                ..Selector::default()
            },
            phases: vec![10, 50, 100],
            soak_ms: 1_800_000,
            max_failures: FailureLimit::Percent(10),
            windows: vec!["Mon-Fri 22:00-05:00".into()],
            start_at_ms: Some(5),
        };
        let commands = vec![
            Command::LabelClients {
                clients: vec!["c1".into()],
                add: vec!["line2".into()],
                remove: vec![],
            },
            Command::CreateRollout(Box::new(spec)),
            Command::RolloutStep {
                id: "d-1".into(),
                step: RolloutStep::Abort { uninstall: true },
                reason: "bad".into(),
            },
            Command::ReportRemoval {
                deployment_id: "d-1".into(),
                client_id: "c1".into(),
                ok: true,
                detail: String::new(),
            },
        ];
        for command in commands {
            let once = Command::Once {
                request_id: "r".into(),
                command: Box::new(command.clone()),
            };
            for c in [command, once] {
                let batch = vec![at(c)];
                let bytes = encode_batch(&batch);
                assert_eq!(&bytes[..2], &8u16.to_le_bytes());
                assert_eq!(decode_batch(&bytes).ok(), Some(batch));
                assert!(matches!(
                    decode_batch_up_to(&bytes, 7),
                    Err(StorageError::NeedsUpgrade {
                        found: 8,
                        supported: 7
                    })
                ));
            }
        }
        assert!(decode_batch_up_to(&encode_batch(&sample()), 7).is_ok());
    }

    /// `Quiet` and `CompactHistory` are format 9: a node of format 8 stops at them (so a
    /// proposer sends them only when every member decodes them), and a plain touch stays
    /// readable by older nodes.
    #[test]
    fn quiet_and_compaction_need_format_9() {
        let at = |command| Envelope {
            at_ms: 1,
            actor: "node:1".into(),
            command,
        };
        let touch = Command::TouchClients {
            node_id: 1,
            seen: vec![("c1".into(), 5)],
        };
        let quiet = Command::Quiet(Box::new(touch.clone()));
        let compact = Command::CompactHistory {
            audit_through_seq: 7,
            inventory_before_ms: Some(5),
            results_before_ms: None,
        };
        for c in [quiet, compact] {
            let batch = vec![at(c)];
            let bytes = encode_batch(&batch);
            assert_eq!(&bytes[..2], &9u16.to_le_bytes());
            assert_eq!(decode_batch(&bytes).ok(), Some(batch));
            assert!(matches!(
                decode_batch_up_to(&bytes, 8),
                Err(StorageError::NeedsUpgrade {
                    found: 9,
                    supported: 8
                })
            ));
        }
        let plain = encode_batch(&[at(touch)]);
        assert_eq!(&plain[..2], &2u16.to_le_bytes());
    }

    #[test]
    fn batch_len_is_exact() {
        let big = Envelope {
            at_ms: i64::MIN,
            actor: "x".repeat(70_000),
            command: Command::SetConfig {
                scope: Scope::Global,
                key: "k".into(),
                value: "\u{e9}".repeat(1000),
            },
        };
        for n in [0usize, 1, 2, 250, 251, 252, 300] {
            let batch: Vec<Envelope> = sample().into_iter().cycle().take(n).collect();
            let sum: usize = batch.iter().map(encoded_len).sum();
            assert_eq!(
                batch_len(n, sum),
                encode_batch(&batch).len(),
                "{n} envelopes"
            );
        }
        let mut with_big = sample();
        with_big.push(big.clone());
        let sum: usize = with_big.iter().map(encoded_len).sum();
        assert_eq!(
            batch_len(with_big.len(), sum),
            encode_batch(&with_big).len()
        );
        assert_eq!(batch_len(1, encoded_len(&big)), encode_batch(&[big]).len());
        // Length prefixes at each varint width.
        for (count, prefix) in [(250usize, 1usize), (251, 3), (65_535, 3), (65_536, 5)] {
            assert_eq!(batch_len(count, 0), 2 + prefix, "{count}");
        }
    }

    #[test]
    fn a_format_1_batch_cannot_carry_a_format_2_command() {
        let batch = vec![Envelope {
            at_ms: 1,
            actor: "t".into(),
            command: Command::RevokeClient {
                client_id: "c1".into(),
            },
        }];
        let mut bytes = encode_batch(&batch);
        bytes[..2].copy_from_slice(&1u16.to_le_bytes());
        assert!(matches!(decode_batch(&bytes), Err(StorageError::Decode(_))));
    }

    #[test]
    fn refuses_bad_input() {
        let good = encode_batch(&sample());
        let mut newer = good.clone();
        newer[..2].copy_from_slice(&(COMMAND_FORMAT + 1).to_le_bytes());
        let mut zero = good.clone();
        zero[..2].copy_from_slice(&0u16.to_le_bytes());
        let mut trailing = good.clone();
        trailing.push(0);
        type Case = (&'static str, Vec<u8>, fn(&StorageError) -> bool);
        let cases: Vec<Case> = vec![
            ("empty", vec![], |e| matches!(e, StorageError::Decode(_))),
            ("one byte", vec![1], |e| {
                matches!(e, StorageError::Decode(_))
            }),
            ("newer", newer, |e| {
                matches!(
                    e,
                    StorageError::NeedsUpgrade {
                        found,
                        supported: COMMAND_FORMAT
                    } if *found == COMMAND_FORMAT + 1
                )
            }),
            ("format 0", zero, |e| matches!(e, StorageError::Decode(_))),
            ("truncated", good[..good.len() - 3].to_vec(), |e| {
                matches!(e, StorageError::Decode(_))
            }),
            ("trailing", trailing, |e| {
                matches!(e, StorageError::Decode(_))
            }),
            ("garbage", vec![1, 0, 0xff, 0xff, 0xff, 0xff, 0xff], |e| {
                matches!(e, StorageError::Decode(_))
            }),
        ];
        for (name, bytes, check) in cases {
            match decode_batch(&bytes) {
                Err(e) => assert!(check(&e), "{name}: wrong error {e:?}"),
                Ok(v) => panic!("{name}: decoded {v:?}"),
            }
        }
    }
}
