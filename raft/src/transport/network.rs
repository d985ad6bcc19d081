//! openraft's `RaftNetwork` over the shared connections: `Network` hands out one
//! `PeerNetwork` per target, which sends AppendEntries (split to fit a frame), votes and
//! snapshot chunks through `PeerClients`.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::client::{PeerClients, TransportError};
use super::frame::{
    FrameError, FrameFit, MAX_FRAME, PeerRequest, PeerResponse, append_entries_header_len,
    entries_that_fit,
};
use crate::codec;
use crate::failover::PeerWatch;
use crate::types::{NodeId, PeerNode, TypeConfig};

/// openraft's network factory: hands out per-target clients over the shared connections.
#[derive(Clone)]
pub struct Network {
    pub(crate) clients: Arc<PeerClients>,
    /// Told of this node's own vote requests and their answers (fast failover).
    pub(crate) watch: Arc<PeerWatch>,
}

pub struct PeerNetwork {
    clients: Arc<PeerClients>,
    watch: Arc<PeerWatch>,
    target: NodeId,
    node: PeerNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerNetwork {
        PeerNetwork {
            clients: self.clients.clone(),
            watch: self.watch.clone(),
            target,
            node: node.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, PeerNode, E>;

impl PeerNetwork {
    async fn rpc(
        &self,
        req: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, TransportError> {
        self.clients
            .call(self.target, &self.node.peer_addr, req, option.hard_ttl())
            .await
    }

    fn transport_err<E: std::error::Error>(&self, e: TransportError) -> RpcErr<E> {
        match e {
            TransportError::Connect { .. }
            | TransportError::Tls { .. }
            | TransportError::Closed(_) => RPCError::Unreachable(Unreachable::new(&e)),
            other => RPCError::Network(NetworkError::new(&other)),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        let sizes = rpc.entries.iter().map(codec::encoded_len);
        match entries_that_fit(append_entries_header_len(&rpc), sizes, MAX_FRAME) {
            FrameFit::All => {}
            FrameFit::First(n) => {
                tracing::debug!(
                    target = self.target,
                    entries = rpc.entries.len(),
                    fit = n,
                    "AppendEntries would pass the frame limit; asking openraft to split it"
                );
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(n as u64),
                ));
            }
            FrameFit::None => {
                // Only an entry written before the entry cap existed can be this large.
                let e = TransportError::Encode(
                    self.target,
                    FrameError::EntryTooLarge {
                        index: rpc.entries.first().map(|e| e.log_id.index).unwrap_or(0),
                    },
                );
                tracing::error!(target = self.target, error = %e, "cannot replicate");
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
        }
        match self.rpc(PeerRequest::AppendEntries(rpc), &option).await {
            Ok(PeerResponse::AppendEntries(Ok(r))) => Ok(r),
            Ok(PeerResponse::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.transport_err(TransportError::Unexpected(
                self.target,
                format!("{other:?}"),
            ))),
            Err(e) => Err(self.transport_err(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<RaftError<NodeId, InstallSnapshotError>>>
    {
        match self.rpc(PeerRequest::InstallSnapshot(rpc), &option).await {
            Ok(PeerResponse::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(PeerResponse::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.transport_err(TransportError::Unexpected(
                self.target,
                format!("{other:?}"),
            ))),
            Err(e) => Err(self.transport_err(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        let asked = rpc.vote;
        if let Some(me) = asked.leader_id().voted_for() {
            self.watch.ballot(me, &asked, rpc.last_log_id);
        }
        let ask = self.watch.ask(asked.leader_id().term, self.target);
        match self.rpc(PeerRequest::Vote(rpc), &option).await {
            Ok(PeerResponse::Vote(Ok(r))) => {
                ask.answer(r.vote_granted && r.vote == asked);
                Ok(r)
            }
            Ok(PeerResponse::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.transport_err(TransportError::Unexpected(
                self.target,
                format!("{other:?}"),
            ))),
            Err(e) => Err(self.transport_err(e)),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A dead peer is retried every 200 ms: quick to notice its return, cheap while it is gone.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
