//! The write path of a node: every write (local or forwarded) enters the batcher through
//! `Inner::write`, which refuses a command whose own batch would pass `MAX_ENTRY_BYTES`; the
//! batcher packs concurrent writes into one Raft entry (group commit), closing a batch at
//! `max_batch` envelopes or before it would pass that cap, and `Inner::submit` commits each
//! batch: proposed here when this node leads, forwarded to the leader otherwise (`forward`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use outpost_storage::{Envelope, MAX_ENTRY_BYTES, Outcome};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Inner;
use super::errors::{StopCause, WriteError};
use crate::types::{Proposal, RaftWriteError};

pub(super) struct WriteReq {
    env: Envelope,
    /// `outpost_storage::encoded_len(&env)`, measured once when the write is queued.
    len: usize,
    reply: oneshot::Sender<Result<Outcome, WriteError>>,
}

impl Inner {
    /// Every write (local or forwarded) enters the batcher here; a command too large for an
    /// entry of its own is refused before it is queued.
    pub(super) async fn write(&self, env: Envelope) -> Result<Outcome, WriteError> {
        let len = admit_size(&env)?;
        let (reply, rx) = oneshot::channel();
        self.batcher
            .send(WriteReq { env, len, reply })
            .await
            .map_err(|_| WriteError::Stopped(StopCause::Batcher))?;
        rx.await
            .map_err(|_| WriteError::Stopped(StopCause::Dropped))?
    }

    /// Submits one batch, from this node, until it commits or the deadline passes.
    async fn submit(&self, batch: &[Envelope]) -> Result<Vec<Outcome>, WriteError> {
        let timeout = Duration::from_millis(self.tuning.write_timeout_ms);
        let deadline = Instant::now() + timeout;
        let bytes = outpost_storage::encode_batch(batch);
        loop {
            if let Some(f) = self.health.fatal() {
                return Err(WriteError::Stopped(StopCause::Applying(f)));
            }
            let leader = self.raft.metrics().borrow().current_leader;
            match leader {
                Some(l) if l == self.id => match self.propose(&bytes, deadline).await {
                    Proposed::Applied(outcomes, started) => {
                        // Leader only: a follower's batch is timed by the leader it goes to.
                        self.telemetry.committed(started, batch.len());
                        return Ok(outcomes);
                    }
                    Proposed::NotLeader => {}
                    Proposed::Failed(e) => return Err(WriteError::Stopped(StopCause::Raft(e))),
                },
                Some(l) => {
                    if let Some(outcomes) = self.forward_once(l, &bytes, deadline).await {
                        return Ok(outcomes);
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(WriteError::NoLeader(timeout));
            }
            self.wait_leader_change(deadline).await;
        }
    }

    /// Proposes `bytes` as this node's leader and waits for its outcomes, but no longer than
    /// this node stays leader of the term it proposed in, nor past `deadline`. openraft 0.9
    /// answers a proposal only when its entry is applied here or deleted as a conflict; when
    /// a deposed leader's uncommitted entries are instead covered by an installed snapshot,
    /// their callers are never answered. Waiting on that would hold a batcher slot forever
    /// (two such waits stop every write through this node). The caller then sends the same
    /// bytes to the new leader: every API write carries a request id, so a batch that did
    /// commit gets its first outcomes back instead of applying twice.
    async fn propose(&self, bytes: &[u8], deadline: Instant) -> Proposed {
        let mut metrics = self.raft.metrics();
        let (id, term) = (self.id, metrics.borrow().current_term);
        let deposed = async {
            let changed =
                metrics.wait_for(|m| m.current_leader != Some(id) || m.current_term != term);
            if changed.await.is_err() {
                // Raft has stopped: `client_write` answers that itself.
                std::future::pending::<()>().await;
            }
        };
        let started = self.telemetry.start();
        tokio::select! {
            written = self.raft.client_write(Proposal(bytes.to_vec())) => match written {
                Ok(resp) => Proposed::Applied(resp.data.0, started),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Proposed::NotLeader,
                Err(e) => Proposed::Failed(e),
            },
            () = deposed => {
                tracing::debug!(term, "deposed while a proposal waited; sending it to the next leader");
                Proposed::NotLeader
            }
            () = tokio::time::sleep_until(deadline.into()) => Proposed::NotLeader,
        }
    }
}

/// How one proposal of this node's, as leader, ended.
enum Proposed {
    /// Applied here, with when it was proposed (`None`: telemetry disabled).
    Applied(Vec<Outcome>, Option<Instant>),
    /// No longer leader (or the deadline passed): the batch may or may not commit.
    NotLeader,
    Failed(RaftWriteError),
}

/// The encoded size of `env` in a batch, or `TooLarge` when a batch of it alone would pass
/// `MAX_ENTRY_BYTES` (so it could never be committed).
fn admit_size(env: &Envelope) -> Result<usize, WriteError> {
    let len = outpost_storage::encoded_len(env);
    let alone = outpost_storage::batch_len(1, len);
    if alone > MAX_ENTRY_BYTES {
        return Err(WriteError::TooLarge {
            bytes: alone,
            cap: MAX_ENTRY_BYTES,
        });
    }
    Ok(len)
}

/// One batch being packed: how many envelopes and their encoded bytes so far.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Packer {
    count: usize,
    envelopes: usize,
    max_batch: usize,
    cap: usize,
}

impl Packer {
    fn new(max_batch: usize, cap: usize) -> Packer {
        Packer {
            count: 0,
            envelopes: 0,
            max_batch: max_batch.max(1),
            cap,
        }
    }

    fn is_full(&self) -> bool {
        self.count >= self.max_batch
    }

    /// Adds an envelope of `len` encoded bytes if the batch stays within `max_batch`
    /// envelopes and `encode_batch` of it stays within the cap. The first envelope is always
    /// taken (`admit_size` has checked it fits alone).
    fn try_add(&mut self, len: usize) -> bool {
        let next = outpost_storage::batch_len(self.count + 1, self.envelopes.saturating_add(len));
        if self.count > 0 && (self.is_full() || next > self.cap) {
            return false;
        }
        self.count += 1;
        self.envelopes = self.envelopes.saturating_add(len);
        true
    }
}

/// Gathers concurrent writes into one Raft entry each round (group commit): while one batch
/// is being committed, the next fills up. A few batches may be in flight at once. A batch
/// closes at `max_batch` envelopes or before its encoding would pass `MAX_ENTRY_BYTES`; the
/// write that did not fit opens the next batch.
pub(super) async fn batcher(inner: Arc<Inner>, mut rx: mpsc::Receiver<WriteReq>) {
    let in_flight = Arc::new(Semaphore::new(2));
    let mut held: Option<WriteReq> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut packer = Packer::new(inner.tuning.max_batch, MAX_ENTRY_BYTES);
        packer.try_add(first.len);
        let mut reqs = vec![first];
        while !packer.is_full() {
            match rx.try_recv() {
                Ok(r) if packer.try_add(r.len) => reqs.push(r),
                Ok(r) => {
                    held = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let (envs, replies): (Vec<Envelope>, Vec<_>) =
                reqs.into_iter().map(|r| (r.env, r.reply)).unzip();
            match inner.submit(&envs).await {
                Ok(outcomes) if outcomes.len() == replies.len() => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(outcomes) => {
                    let e = WriteError::Stopped(StopCause::Outcomes {
                        sent: replies.len(),
                        got: outcomes.len(),
                    });
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use outpost_storage::{encode_batch, encoded_len};

    use super::*;
    use crate::node::tests::{env, env_with_batch_len};

    #[test]
    fn a_command_over_the_cap_is_refused() {
        let at_cap = env_with_batch_len(MAX_ENTRY_BYTES);
        assert_eq!(admit_size(&at_cap).ok(), Some(encoded_len(&at_cap)));
        let over = env_with_batch_len(MAX_ENTRY_BYTES + 1);
        match admit_size(&over) {
            Err(e @ WriteError::TooLarge { bytes, cap }) => {
                assert_eq!((bytes, cap), (MAX_ENTRY_BYTES + 1, MAX_ENTRY_BYTES));
                assert_eq!(
                    e.to_string(),
                    format!(
                        "a command of {} bytes exceeds the {MAX_ENTRY_BYTES}-byte Raft entry cap",
                        MAX_ENTRY_BYTES + 1
                    )
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_close_at_the_cap_and_at_max_batch() {
        // (max_batch, cap, sizes offered in order) -> how many the first batch takes.
        let cases: &[(usize, usize, &[usize], usize)] = &[
            (10, 100, &[10, 10, 10], 3),
            // 2 + 1 + 48 + 49 = 100: exactly at the cap, both fit.
            (10, 100, &[48, 49], 2),
            // One byte over: the second opens the next batch.
            (10, 100, &[48, 50], 1),
            (10, 100, &[97, 1], 1),
            // The first is always taken (it was admitted alone).
            (10, 100, &[97], 1),
            (2, 100, &[1, 1, 1], 2),
            (0, 100, &[1, 1], 1),
            // 250 envelopes take a 1-byte length prefix, 251 a 3-byte one.
            (1000, 2 + 1 + 250, &[1; 260], 250),
            (1000, 2 + 3 + 251, &[1; 260], 251),
            (1000, 2 + 3 + 251 - 1, &[1; 260], 250),
        ];
        for (i, &(max_batch, cap, sizes, want)) in cases.iter().enumerate() {
            let mut p = Packer::new(max_batch, cap);
            let taken = sizes.iter().take_while(|&&s| p.try_add(s)).count();
            assert_eq!(taken, want, "case {i}");
        }
    }

    #[test]
    fn two_envelopes_that_fit_alone_but_not_together_make_two_entries() {
        let a = env_with_batch_len(MAX_ENTRY_BYTES / 2 + 10);
        let b = env_with_batch_len(MAX_ENTRY_BYTES / 2 + 10);
        let small = env("cli", 10);
        let mut p = Packer::new(1024, MAX_ENTRY_BYTES);
        assert!(p.try_add(admit_size(&a).unwrap_or(usize::MAX)));
        assert!(!p.try_add(admit_size(&b).unwrap_or(usize::MAX)));
        assert!(p.try_add(admit_size(&small).unwrap_or(usize::MAX)));
        // What the packer accepted is what encode_batch writes, and it is within the cap.
        let both = encode_batch(&[a.clone(), small.clone()]);
        assert_eq!(outpost_storage::batch_len(p.count, p.envelopes), both.len());
        assert!(both.len() <= MAX_ENTRY_BYTES);
        assert!(encode_batch(&[a, b]).len() > MAX_ENTRY_BYTES);
    }
}
