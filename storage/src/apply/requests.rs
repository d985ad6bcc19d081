//! Exactly-once writes: the recent request ids and the first outcome of each. An id is made
//! where a write enters the cluster and kept across forwarding retries and leader changes,
//! so a retried request finds its id here and gets its first outcome back instead of being
//! applied twice. At most `REQUEST_IDS_KEPT` ids are kept; the oldest go first, by the order
//! they were applied in, so every node keeps the same ones.

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{Command, Envelope, Outcome};

/// How many recent request ids `apply` remembers (a retry comes within seconds; this covers
/// minutes of the busiest write load).
pub const REQUEST_IDS_KEPT: i64 = 100_000;

/// The envelope of the command a `Once` wraps (same time and actor).
pub(crate) fn inner(env: &Envelope, command: &Command) -> Envelope {
    Envelope {
        at_ms: env.at_ms,
        actor: env.actor.clone(),
        command: command.clone(),
    }
}

/// The first outcome of `request_id`, if it was applied before.
pub(super) fn seen(
    conn: &Connection,
    request_id: &str,
) -> Result<Option<Outcome>, rusqlite::Error> {
    let stored: Option<String> = conn
        .prepare_cached("SELECT outcome FROM request_ids WHERE request_id = ?1")?
        .query_row([request_id], |r| r.get(0))
        .optional()?;
    stored
        .map(|json| {
            serde_json::from_str(&json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()
}

/// The request id of `env`, if its command carries one, and the envelope of the command it
/// wraps (moved out, not cloned). Any other envelope comes back as it is.
pub(super) fn unwrap(env: Envelope) -> (Option<String>, Envelope) {
    match env.command {
        Command::Once {
            request_id,
            command,
        } => (
            Some(request_id),
            Envelope {
                at_ms: env.at_ms,
                actor: env.actor,
                command: *command,
            },
        ),
        command => (None, Envelope { command, ..env }),
    }
}

/// The newest remembered request's `seq` during one `apply` call: read at the first request
/// id, then counted in memory.
#[derive(Default)]
pub(super) struct Tail {
    seq: Option<i64>,
}

impl Tail {
    /// Remembers `request_id` with its outcome and forgets the oldest beyond
    /// `REQUEST_IDS_KEPT`.
    pub(super) fn remember(
        &mut self,
        conn: &Connection,
        request_id: &str,
        outcome: &Outcome,
    ) -> Result<(), rusqlite::Error> {
        let last = match self.seq {
            Some(s) => s,
            None => conn
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM request_ids")?
                .query_row([], |r| r.get(0))?,
        };
        let seq = last.saturating_add(1);
        let json = serde_json::to_string(outcome)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        conn.prepare_cached(
            "INSERT INTO request_ids (seq, request_id, outcome) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![seq, request_id, json])?;
        conn.prepare_cached("DELETE FROM request_ids WHERE seq <= ?1")?
            .execute([seq - REQUEST_IDS_KEPT])?;
        self.seq = Some(seq);
        Ok(())
    }
}
