//! The threads that check console passwords: a few of their own (one per permit of the
//! sign-in semaphore), at nice 10, so that a flood of sign-ins never takes the CPU from the
//! node's Raft heartbeats (elections time out in 150-300 ms) nor holds tokio's blocking pool
//! that SQLite reads use. Each check holds 19 MiB while it runs; no more than `n` run at once
//! and no more than `n` wait (the caller holds a semaphore permit per job); the block is
//! unmapped when the check ends, so the memory goes back.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

pub struct Checkers {
    tx: SyncSender<Job>,
}

/// Why a check did not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("every password checker is busy")]
    Busy,
    #[error("the password checkers have stopped")]
    Stopped,
}

impl Checkers {
    /// Starts `n` checker threads (at least one).
    pub fn start(n: usize) -> Checkers {
        let n = n.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(n);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            let started = std::thread::Builder::new()
                .name(format!("signin-check-{i}"))
                .spawn(move || work(&rx));
            if let Err(e) = started {
                tracing::error!(error = %e, "could not start a password checker thread");
            }
        }
        Checkers { tx }
    }

    /// Runs `f` on a checker thread and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CheckError> {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = otx.send(f());
        });
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => CheckError::Busy,
            TrySendError::Disconnected(_) => CheckError::Stopped,
        })?;
        orx.await.map_err(|_| CheckError::Stopped)
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    // SAFETY: setpriority(2) on this thread's own id changes only its scheduling weight.
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if niced != 0 {
        tracing::debug!(
            "password checker thread runs at the node's priority (setpriority refused)"
        );
    }
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        match job {
            // A check's 19 MiB is a block of its own, unmapped when the check ends
            // (`shared::process::tune_allocator` fixes glibc's mmap threshold), so memory
            // returns to idle after a burst.
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Whether a job is refused as busy when first polled.
    fn busy_now(c: &Checkers) -> bool {
        matches!(c.run(|| true).now_or_never(), Some(Err(CheckError::Busy)))
    }

    #[tokio::test]
    async fn runs_jobs_and_refuses_past_its_queue() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let c = Checkers::start(1);
        assert_eq!(c.run(|| 2 + 2).await.ok(), Some(4));
        // One job running (held until released) and one queued: the next is refused at once.
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(AtomicBool::new(false));
        let s = started.clone();
        let held: Job = Box::new(move || {
            s.store(true, Ordering::SeqCst);
            let _ = hold_rx.recv();
        });
        assert!(c.tx.try_send(held).is_ok());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !started.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(
            started.load(Ordering::SeqCst),
            "the checker never took the job"
        );
        assert!(
            c.tx.try_send(Box::new(|| {})).is_ok(),
            "the queue holds one"
        );
        assert!(busy_now(&c), "a full queue took another job");
        let _ = hold_tx.send(());
        // Once the queue drains, jobs run again.
        let mut again = None;
        for _ in 0..2000 {
            match c.run(|| "again").await {
                Err(CheckError::Busy) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await
                }
                other => {
                    again = other.ok();
                    break;
                }
            }
        }
        assert_eq!(again, Some("again"));
    }
}
