//! Writes that cross nodes: a follower sends its batch to the leader (`Inner::forward_once`,
//! one attempt of `Inner::submit`), and the leader admits a forwarded batch only through
//! `admit_forwarded` (decoded, size- and format-checked, actor and time re-stamped) before it
//! feeds it to its own batcher. `forward_batch` is the same call for tests and diagnostics.

use std::time::{Duration, Instant};

use outpost_storage::{Envelope, MAX_ENTRY_BYTES, Outcome};

use super::{Inner, remaining};
use crate::transport::{self, PeerClients, PeerRequest, PeerResponse, PeerTls};
use crate::types::{NodeId, Proposal};

/// How long one forwarding attempt waits for the leader's answer before it sends the same
/// bytes again (a lost reply; every API write carries a request id, so a retry of a batch
/// that did commit gets the first outcome back instead of applying twice).
const FORWARD_ATTEMPT: Duration = Duration::from_secs(3);

impl Inner {
    /// Sends `bytes` (an encoded batch) once to leader `leader`, waiting at most
    /// `FORWARD_ATTEMPT` (and not past `deadline`): its outcomes, or `None` when the leader's
    /// address is unknown, it refused, or the call failed (logged; the caller retries).
    pub(super) async fn forward_once(
        &self,
        leader: NodeId,
        bytes: &[u8],
        deadline: Instant,
    ) -> Option<Vec<Outcome>> {
        let addr = self.peer_addr_of(leader)?;
        let req = PeerRequest::Forward(Proposal(bytes.to_vec()));
        let attempt = remaining(deadline).min(FORWARD_ATTEMPT);
        match self.clients.call(leader, &addr, req, attempt).await {
            Ok(PeerResponse::Forward(Ok(outcomes))) => return Some(outcomes),
            Ok(PeerResponse::Forward(Err(why))) => tracing::debug!(leader, %why, "forward refused"),
            Ok(other) => tracing::warn!(leader, ?other, "unexpected forward response"),
            Err(e) => tracing::debug!(leader, error = %e, "forward failed"),
        }
        None
    }
}

/// Longest part of a forwarded envelope's actor text that the leader keeps.
const MAX_FORWARDED_ACTOR_BYTES: usize = 200;

/// The leader's admission of a batch that node `from` forwarded: the forwarder's certificate
/// proves which node it is, not who acted or when, and its bytes are not trusted to decode.
/// Bytes over `MAX_ENTRY_BYTES`, undecodable, or in a newer command format than this build's are
/// refused with the reason (nothing is proposed), as is a batch carrying a command that peers
/// may not forward, or not as the actor it names (`Command::refused_from_peer`). Every envelope is re-stamped: actor
/// `"{actor} via node:{from}"` (the original text cut to 200 bytes at a char boundary), time
/// `now_ms` (the leader's clock).
pub(super) fn admit_forwarded(
    from: NodeId,
    bytes: &[u8],
    now_ms: i64,
) -> Result<Vec<Envelope>, String> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(format!(
            "forwarded batch from node {from}: {} bytes exceed the {MAX_ENTRY_BYTES}-byte Raft entry cap",
            bytes.len()
        ));
    }
    let envs = outpost_storage::decode_batch(bytes)
        .map_err(|e| format!("forwarded batch from node {from}: {e}"))?;
    envs.into_iter()
        .map(|mut env| {
            if let Some(why) = env.command.refused_from_peer(from, &env.actor) {
                return Err(format!("forwarded batch from node {from}: {why}"));
            }
            env.actor = format!(
                "{} via node:{from}",
                truncate_at_char(&env.actor, MAX_FORWARDED_ACTOR_BYTES)
            );
            env.at_ms = now_ms;
            Ok(env)
        })
        .collect()
}

/// Sends `bytes` (an encoded batch) to node `target` at `addr` as a forwarded write, over a
/// peer connection made with `tls` (the sender's node identity), and returns what it answered:
/// the outcomes, or its refusal as text. A test and diagnostics helper like
/// `transport::ping`: a node's own writes go through `RaftNode::write`.
pub async fn forward_batch(
    tls: PeerTls,
    target: NodeId,
    addr: &str,
    bytes: Vec<u8>,
    timeout: Duration,
) -> Result<Result<Vec<Outcome>, String>, transport::TransportError> {
    let clients = PeerClients::new(tls);
    match clients
        .call(target, addr, PeerRequest::Forward(Proposal(bytes)), timeout)
        .await?
    {
        PeerResponse::Forward(r) => Ok(r),
        other => Err(transport::TransportError::Unexpected(
            target,
            format!("{other:?}"),
        )),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use outpost_storage::{Command, encode_batch};

    use super::*;
    use crate::node::tests::{env, env_with_batch_len};

    #[test]
    fn forwarded_commands_must_fit_their_actor() {
        let link = |actor: &str| Envelope {
            at_ms: 5,
            actor: actor.into(),
            command: Command::Once {
                request_id: "r".into(),
                command: Box::new(Command::CreateConsoleLogin {
                    id: "l1".into(),
                    secret_sha256: "0".repeat(64),
                    user: "ghost".into(),
                    expires_at_ms: 10,
                }),
            },
        };
        let touch = |node_id: u64| Envelope {
            at_ms: 5,
            actor: "node:7".into(),
            command: Command::TouchClients {
                node_id,
                seen: vec![],
            },
        };
        let quiet = |e: Envelope| Envelope {
            command: Command::Quiet(Box::new(e.command)),
            ..e
        };
        let compact = |actor: &str| Envelope {
            at_ms: 5,
            actor: actor.into(),
            command: Command::CompactHistory {
                audit_through_seq: 3,
                inventory_before_ms: None,
                results_before_ms: None,
            },
        };
        for (name, batch, ok) in [
            ("an admin's link", vec![link("admin:ops")], true),
            ("a link as the node itself", vec![link("node:7")], false),
            ("a link as another node", vec![link("node:3")], false),
            ("its own report", vec![touch(7)], true),
            ("another node's report", vec![touch(3)], false),
            ("its own quiet report", vec![quiet(touch(7))], true),
            ("another node's quiet report", vec![quiet(touch(3))], false),
            ("its own compaction", vec![compact("node:7")], true),
            ("an admin's compaction", vec![compact("admin:ops")], false),
            (
                "one bad command refuses the batch",
                vec![env("admin:ops", 1), link("node:7")],
                false,
            ),
        ] {
            let r = admit_forwarded(7, &encode_batch(&batch), 42);
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
        }
    }

    #[test]
    fn forwarded_batches_are_checked_and_restamped() {
        let long = "\u{e9}".repeat(150); // 300 bytes, 2 bytes a char
        let good = encode_batch(&[env("admin:ops", 3), env(&long, 1), env("", 0)]);
        let mut newer = good.clone();
        newer[..2].copy_from_slice(&(outpost_storage::COMMAND_FORMAT + 1).to_le_bytes());
        let mut over = encode_batch(&[env_with_batch_len(MAX_ENTRY_BYTES)]);
        over.push(0);
        type Check = fn(&Result<Vec<Envelope>, String>) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("good", good, |r| {
                let Ok(envs) = r else { return false };
                let cut = "\u{e9}".repeat(100); // 200 bytes exactly
                envs.len() == 3
                    && envs.iter().all(|e| e.at_ms == 42)
                    && envs[0].actor == "admin:ops via node:7"
                    && envs[1].actor == format!("{cut} via node:7")
                    && envs[2].actor == " via node:7"
                    && envs[0].command == env("x", 3).command
            }),
            ("empty bytes", vec![], |r| {
                r.as_ref().is_err_and(|e| e.contains("node 7"))
            }),
            ("garbage", vec![1, 0, 0xff, 0xff, 0xff], |r| r.is_err()),
            ("newer format", newer, |r| {
                r.as_ref()
                    .is_err_and(|e| e.contains("upgrade") || e.contains("format"))
            }),
            ("over the cap", over, |r| {
                r.as_ref().is_err_and(|e| e.contains("Raft entry cap"))
            }),
        ];
        for (name, bytes, check) in cases {
            let r = admit_forwarded(7, &bytes, 42);
            assert!(check(&r), "{name}: {r:?}");
        }
    }

    #[test]
    fn truncates_at_char_boundaries() {
        let cases = [
            ("", 3, ""),
            ("abc", 3, "abc"),
            ("abcd", 3, "abc"),
            ("a\u{e9}", 2, "a"),
            ("a\u{e9}", 3, "a\u{e9}"),
            ("\u{1f600}x", 3, ""),
        ];
        for (s, max, want) in cases {
            assert_eq!(truncate_at_char(s, max), want, "{s:?} {max}");
        }
    }
}
