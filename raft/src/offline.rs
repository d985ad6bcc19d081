//! Offline changes to a stopped node's log, for `outpost recover` and `outpost restore`: a
//! cluster reformed around this node alone.
//!
//! Two entries are appended after everything the log (or, after a restore, the state) holds,
//! in a term above any this node has seen:
//! 1. a membership entry naming this node as the only voter. openraft takes the newest
//!    membership entry of the log as the effective one at start, so this node elects itself
//!    and the peer port refuses every former member from the first request;
//! 2. a normal entry with the caller's commands (e.g. `ReformCluster`), so the replicated state
//!    follows through `apply` like every other change, audited.
//!
//! The vote is raised to that term in the same SQLite transaction, so the next election uses a
//! term above the entries' and the new leader's blank entry commits everything before it:
//! every entry the node held is kept. When the log holds nothing past what the state applied
//! (a restored state and an empty log), the log's purge mark is set to the state's last
//! applied id, so openraft sends a snapshot to a node that needs older entries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{CommittedLeaderId, EntryPayload, Membership};
use outpost_storage::{Envelope, MAX_ENTRY_BYTES, Store, encode_batch};
use rusqlite::params;

use crate::codec;
use crate::log_store::{
    LogStoreError, OpError, get_meta, insert_entries, log_state, open_conn, read,
};
use crate::peer_limits::MAX_TERM;
use crate::state_machine::AppliedMarker;
use crate::types::{Entry, LogId, NodeId, PeerNode, Proposal, Vote};

/// What to reform the cluster around.
pub struct Reform {
    /// This node: the only voter afterwards.
    pub me: NodeId,
    pub node: PeerNode,
    /// Applied right after the membership change, in one entry.
    pub envelopes: Vec<Envelope>,
}

/// What `reform` found and wrote.
#[derive(Debug, Clone)]
pub struct Reformed {
    /// The last entry the state database had applied.
    pub last_applied: Option<LogId>,
    /// The last entry of the log before the reform (or the state's, when the log was empty).
    pub last_log_index: u64,
    /// Voters and learners of the membership before the reform (this node included).
    pub former_members: BTreeSet<NodeId>,
    /// The term of the two new entries; the next election uses a higher one.
    pub term: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Log(#[from] LogStoreError),
    #[error("raft log {path}: {source}")]
    LogOp {
        path: PathBuf,
        #[source]
        source: OpError,
    },
    #[error("state database {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: outpost_storage::StorageError,
    },
    #[error("state database {path}: its applied marker does not decode: {source}")]
    Marker {
        path: PathBuf,
        #[source]
        source: bincode::error::DecodeError,
    },
    #[error(
        "the commands of the reform need {size} bytes, more than one entry's {MAX_ENTRY_BYTES}"
    )]
    TooLarge { size: usize },
    #[error(
        "state database {path}: it has applied entry {index} of term {term}, above any term an \
         election can reach ({MAX_TERM}): a forged Raft message reached this node's state, and \
         recover cannot reform a cluster after it; restore this node from a backup instead \
         (`outpost restore BACKUP --data-dir DIR ...`)"
    )]
    AbsurdState {
        path: PathBuf,
        index: u64,
        term: u64,
    },
    #[error("a blocking task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The state database and the raft log of a node's data directory (as `RaftNode::start`
/// opens them).
fn databases(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("state.db"), data_dir.join("raft.db"))
}

/// Makes the state of a new node's data directory from a snapshot file (storage's format,
/// verified: header, SHA-256, integrity check); the log stays empty. Returns the last
/// applied id the state holds.
pub async fn import_state(data_dir: &Path, snapshot: &Path) -> Result<Option<LogId>, OfflineError> {
    let (state_db, _) = databases(data_dir);
    let state_err = |source| OfflineError::State {
        path: state_db.clone(),
        source,
    };
    // Opening (and closing: the writer thread is joined) is blocking work.
    let open = state_db.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&open))
        .await?
        .map_err(state_err)?;
    let imported = store.import_snapshot(snapshot).await;
    tokio::task::spawn_blocking(move || drop(store)).await?;
    let marker = imported.map_err(state_err)?;
    applied_log_id(marker.as_deref()).map_err(|source| OfflineError::Marker {
        path: state_db.clone(),
        source,
    })
}

/// Runs `f` on a reader of a stopped node's state database (blocking).
pub fn read_state<T>(
    data_dir: &Path,
    f: impl FnOnce(&outpost_storage::Reader) -> Result<T, outpost_storage::StorageError>,
) -> Result<T, OfflineError> {
    let (state_db, _) = databases(data_dir);
    let state_err = |source| OfflineError::State {
        path: state_db.clone(),
        source,
    };
    let store = Store::open(&state_db).map_err(state_err)?;
    let out = f(&store.reader()).map_err(state_err);
    drop(store);
    out
}

/// The last applied log id and membership recorded in a node's state database.
pub fn applied_state(data_dir: &Path) -> Result<(Option<LogId>, BTreeSet<NodeId>), OfflineError> {
    let (state_db, _) = databases(data_dir);
    let marker = read_marker(&state_db)?;
    let members = marker
        .membership
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    Ok((marker.last_applied, members))
}

/// The last applied log id recorded in an applied marker (as `SnapshotInfo` carries it).
pub fn applied_log_id(marker: Option<&[u8]>) -> Result<Option<LogId>, bincode::error::DecodeError> {
    match marker {
        None => Ok(None),
        Some(b) => Ok(codec::decode::<AppliedMarker>(b)?.last_applied),
    }
}

fn read_marker(state_db: &Path) -> Result<AppliedMarker, OfflineError> {
    let state_err = |source| OfflineError::State {
        path: state_db.to_path_buf(),
        source,
    };
    let store = Store::open(state_db).map_err(state_err)?;
    let raw = store.reader().applied_marker().map_err(state_err)?;
    drop(store);
    match raw {
        None => Ok(AppliedMarker::default()),
        Some(b) => codec::decode(&b).map_err(|source| OfflineError::Marker {
            path: state_db.to_path_buf(),
            source,
        }),
    }
}

/// Reforms the cluster of a stopped node around itself (see the module comment). The caller
/// makes sure the node is not running.
pub fn reform(data_dir: &Path, r: Reform) -> Result<Reformed, OfflineError> {
    let (state_db, raft_db) = databases(data_dir);
    let raft_db = raft_db.as_path();
    let marker = read_marker(&state_db)?;
    // Nothing (neither apply nor the state machine) checks the term of what is applied: a
    // state that applied an entry of an absurd term cannot be reformed (the new entries
    // must come after it, in a higher term). Refused before anything is written.
    let absurd = |applied: Option<LogId>| {
        applied
            .filter(|l| l.leader_id.term > MAX_TERM)
            .map(|l| OfflineError::AbsurdState {
                path: state_db.clone(),
                index: l.index,
                term: l.leader_id.term,
            })
    };
    if let Some(e) = absurd(marker.last_applied) {
        return Err(e);
    }
    let op = |source: OpError| OfflineError::LogOp {
        path: raft_db.to_path_buf(),
        source,
    };
    let payload = encode_batch(&r.envelopes);
    if payload.len() > MAX_ENTRY_BYTES {
        return Err(OfflineError::TooLarge {
            size: payload.len(),
        });
    }
    let mut conn = open_conn(raft_db)?;
    let since = marker.last_applied.map(|l| l.index + 1).unwrap_or(0);
    // A vote or entries in a term above `MAX_TERM` can only come from a forged message (a
    // term near 2^64 stopped the Raft core that took it): the vote is ignored and the log cut
    // before the first such entry, so the reformed cluster elects itself in a sane term.
    let first_absurd = read(&conn, since, None, None)
        .map_err(op)?
        .iter()
        .find(|e| e.log_id.leader_id.term > MAX_TERM)
        .map(|e| e.log_id.index);
    if let Some(from) = first_absurd {
        conn.execute("DELETE FROM log WHERE idx >= ?1", params![from as i64])
            .map_err(|e| op(e.into()))?;
    }
    let st = log_state(&conn).map_err(op)?;
    let vote: Option<Vote> = get_meta::<Vote>(&conn, "vote")
        .map_err(op)?
        .filter(|v| v.leader_id().term <= MAX_TERM);

    // The membership before: the newest membership entry past what the state applied, else the
    // state's own.
    let mut former: BTreeSet<NodeId> = marker
        .membership
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    for entry in read(&conn, since, None, None).map_err(op)? {
        if let EntryPayload::Membership(m) = &entry.payload {
            former = m.nodes().map(|(id, _)| *id).collect();
        }
    }

    // Where the new entries go: after the log, or after the state when the log is behind it.
    let log_behind = st.last_log_id.map(|l| l.index) < marker.last_applied.map(|l| l.index);
    let base = if log_behind {
        marker.last_applied
    } else {
        st.last_log_id
    };
    // The log up to what the state applied is that of the state: its terms are no higher.
    if let Some(e) = absurd(base) {
        return Err(e);
    }
    let last_log_index = base.map(|l| l.index).unwrap_or(0);
    let seen_term = [
        vote.map(|v| v.leader_id().term),
        base.map(|l| l.leader_id.term),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    // At most MAX_TERM + 1: the vote and the log past the state were cut to MAX_TERM above,
    // and `base` (the state's applied id or the log's last) was refused above it.
    let term = seen_term.saturating_add(1);
    let leader = CommittedLeaderId::new(term, r.me);
    let membership = Membership::new(
        vec![BTreeSet::from([r.me])],
        BTreeMap::from([(r.me, r.node)]),
    );
    let entries: Vec<Entry> = vec![
        Entry {
            log_id: LogId::new(leader, last_log_index + 1),
            payload: EntryPayload::Membership(membership),
        },
        Entry {
            log_id: LogId::new(leader, last_log_index + 2),
            payload: EntryPayload::Normal(Proposal(payload)),
        },
    ];

    let tx = conn.transaction().map_err(|e| op(e.into()))?;
    if log_behind && let Some(applied) = marker.last_applied {
        // Nothing in the log is newer than the state: it starts after the state, as if it had
        // been purged there (the first snapshot covers what lies before).
        tx.execute(
            "DELETE FROM log WHERE idx <= ?1",
            params![applied.index as i64],
        )
        .map_err(|e| op(e.into()))?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_purged', ?1)",
            params![codec::encode(&applied).map_err(|e| op(e.into()))?],
        )
        .map_err(|e| op(e.into()))?;
    }
    insert_entries(&tx, entries.iter()).map_err(op)?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('vote', ?1)",
        params![codec::encode(&Vote::new(term, r.me)).map_err(|e| op(e.into()))?],
    )
    .map_err(|e| op(e.into()))?;
    tx.commit().map_err(|e| op(e.into()))?;
    Ok(Reformed {
        last_applied: marker.last_applied,
        last_log_index,
        former_members: former,
        term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::StoredMembership;

    /// A stopped node whose state applied an entry of an absurd term: recover refuses it and
    /// names restore, and writes nothing to the log.
    #[tokio::test]
    async fn a_state_that_applied_an_absurd_term_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (state_db, raft_db) = databases(dir.path());
        let marker = AppliedMarker {
            last_applied: Some(LogId::new(CommittedLeaderId::new(u64::MAX, 1), 7)),
            membership: StoredMembership::default(),
        };
        let store = tokio::task::spawn_blocking(move || Store::open(&state_db)).await??;
        store.apply(Vec::new(), codec::encode(&marker)?).await?;
        tokio::task::spawn_blocking(move || drop(store)).await?;
        let data_dir = dir.path().to_path_buf();
        let r = Reform {
            me: 1,
            node: PeerNode::default(),
            envelopes: Vec::new(),
        };
        let got = tokio::task::spawn_blocking(move || reform(&data_dir, r)).await?;
        match got {
            Err(
                e @ OfflineError::AbsurdState {
                    index: 7,
                    term: u64::MAX,
                    ..
                },
            ) => {
                let text = e.to_string();
                assert!(text.contains("restore this node from a backup"), "{text}");
                assert!(text.contains("outpost restore"), "{text}");
            }
            other => return Err(format!("{other:?}").into()),
        }
        // Nothing was written: no log at all, or an empty one.
        if raft_db.exists() {
            let conn = open_conn(&raft_db)?;
            assert_eq!(log_state(&conn)?.last_log_id, None);
        }
        Ok(())
    }
}
