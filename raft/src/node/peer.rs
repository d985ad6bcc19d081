//! What this node answers on the peer port (`Handler`: Raft RPCs, read index, ping,
//! forwarded writes, application requests), and the application calls it makes to other
//! nodes (`RaftNode::app_call`) over the same connections.

use std::sync::Arc;
use std::time::Duration;

use super::errors::AppCallError;
use super::forward::admit_forwarded;
use super::{Inner, RaftNode, now_ms};
use crate::codec::Bytes;
use crate::transport::{MemberView, PeerHandler, PeerRequest, PeerResponse};
use crate::types::NodeId;

/// What an application request returns: its answer bytes, or a reason.
pub type AppFuture = std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;

/// Answers application requests that other nodes send over the peer channel (the node uses
/// it for blob transfer and clock readings). The peer is authenticated: `from` is the node id
/// its certificate names.
pub trait AppHandler: Send + Sync + 'static {
    fn handle(&self, from: NodeId, request: Vec<u8>) -> AppFuture;
}

impl RaftNode {
    /// Installs the handler for application requests from other nodes (until then they are
    /// answered with an error, which callers treat like any unavailable peer).
    pub fn set_app_handler(&self, handler: Arc<dyn AppHandler>) {
        *self.inner.app.write().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// Sends an application request to node `target` (addressed through the membership) over
    /// the shared peer connection and waits for its answer.
    pub async fn app_call(
        &self,
        target: NodeId,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, AppCallError> {
        let addr = self
            .inner
            .peer_addr_of(target)
            .ok_or(AppCallError::UnknownNode(target))?;
        match self
            .inner
            .clients
            .call(target, &addr, PeerRequest::App(Bytes(request)), timeout)
            .await?
        {
            PeerResponse::App(Ok(b)) => Ok(b.0),
            PeerResponse::App(Err(reason)) | PeerResponse::Failed(reason) => {
                Err(AppCallError::Remote {
                    node: target,
                    reason,
                })
            }
            other => Err(AppCallError::Remote {
                node: target,
                reason: format!("unexpected response {other:?}"),
            }),
        }
    }
}

#[derive(Clone)]
pub(super) struct Handler {
    pub(super) inner: Arc<Inner>,
}

impl PeerHandler for Handler {
    fn member_view(&self, from: NodeId) -> MemberView {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        MemberView {
            has_membership: membership.nodes().next().is_some(),
            is_member: membership.get_node(&from).is_some(),
            removed: self
                .inner
                .removed
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&from),
        }
    }

    async fn handle(&self, from: NodeId, req: PeerRequest) -> PeerResponse {
        let raft = &self.inner.raft;
        match req {
            PeerRequest::AppendEntries(r) => {
                PeerResponse::AppendEntries(raft.append_entries(r).await)
            }
            PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
            PeerRequest::InstallSnapshot(r) => {
                PeerResponse::InstallSnapshot(raft.install_snapshot(r).await)
            }
            // The reason crosses the wire as text.
            PeerRequest::ReadIndex => {
                PeerResponse::ReadIndex(self.inner.read_index().await.map_err(|e| e.to_string()))
            }
            PeerRequest::Ping => PeerResponse::Pong(self.inner.id),
            PeerRequest::App(bytes) => {
                let handler = self
                    .inner
                    .app
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let Some(handler) = handler else {
                    return PeerResponse::App(Err(format!(
                        "node {} serves no application requests yet",
                        self.inner.id
                    )));
                };
                PeerResponse::App(handler.handle(from, bytes.0).await.map(Bytes))
            }
            PeerRequest::Forward(p) => {
                let envs = match admit_forwarded(from, &p.0, now_ms()) {
                    Ok(e) => e,
                    Err(why) => {
                        // Debug only: the forwarder retries until its deadline (every <= 200 ms).
                        tracing::debug!(from, %why, "refused a forwarded batch");
                        return PeerResponse::Forward(Err(why));
                    }
                };
                // Only the leader takes forwarded writes; a stale forwarder retries elsewhere.
                if raft.metrics().borrow().current_leader != Some(self.inner.id) {
                    return PeerResponse::Forward(Err(format!(
                        "node {} is not the leader",
                        self.inner.id
                    )));
                }
                // Each envelope goes through this node's batcher, so forwarded and local writes
                // share entries.
                let writes = envs.into_iter().map(|env| self.inner.write(env));
                let results = futures::future::join_all(writes).await;
                let mut outcomes = Vec::with_capacity(results.len());
                for r in results {
                    match r {
                        Ok(o) => outcomes.push(o),
                        // The forwarder gets the reason as text (it crosses the wire).
                        Err(e) => return PeerResponse::Forward(Err(e.to_string())),
                    }
                }
                let drop_reply = self
                    .inner
                    .drop_forward_replies
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
                if drop_reply {
                    tracing::warn!(
                        from,
                        "fault injection: the reply to a committed forward is dropped"
                    );
                    std::future::pending::<()>().await;
                }
                PeerResponse::Forward(Ok(outcomes))
            }
        }
    }
}
