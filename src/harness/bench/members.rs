//! What a bench samples of every member while it runs: resident memory and TLS handshakes,
//! from each member's `/v1/status`.

use std::time::Duration;

use anyhow::Result;
use hyper::Method;
use serde::Serialize;

use crate::harness::bench::admin::admin_tls;
use crate::shared::client::{ApiClient, Endpoint, local_client};
use crate::shared::datadir::DataDir;
use crate::wire::StatusView;

#[derive(Debug, Clone, Serialize)]
pub struct NodeRss {
    pub name: String,
    pub api_addr: String,
    /// None: the node never answered with it.
    pub max_bytes: Option<u64>,
    /// Its TLS handshake counts at the first and the last sample.
    #[serde(skip)]
    pub handshakes: Option<(crate::wire::TlsHandshakes, crate::wire::TlsHandshakes)>,
}

/// The members' TLS handshakes between the first and the last sample, summed.
pub(super) fn handshakes_during(nodes: &[NodeRss]) -> Option<crate::wire::TlsHandshakes> {
    nodes
        .iter()
        .try_fold(crate::wire::TlsHandshakes::default(), |sum, n| {
            let (first, last) = n.handshakes?;
            Some(crate::wire::TlsHandshakes {
                full: sum.full + last.full.saturating_sub(first.full),
                resumed: sum.resumed + last.resumed.saturating_sub(first.resumed),
            })
        })
}

/// Asks every member for its `/v1/status` every few seconds and keeps the largest resident
/// memory each reported. Over TLS with an admin certificate the bench issues from the CA key
/// in the data dir (as `bench write` does); without the key, only the local node is asked,
/// over the local socket.
pub(super) struct RssSampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<NodeRss>>,
}

impl RssSampler {
    const EVERY: Duration = Duration::from_secs(5);

    pub(super) fn start(dd: &DataDir, ca_pem: &str, status: &StatusView) -> Result<RssSampler> {
        let mut nodes: Vec<(NodeRss, ApiClient)> = Vec::new();
        match admin_tls(dd, ca_pem) {
            Ok(tls) => {
                for m in &status.members {
                    let client = ApiClient::new(Endpoint::Tls {
                        addr: m.api_addr.clone(),
                        config: tls.clone(),
                        server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
                    });
                    let rss = NodeRss {
                        name: m.name.clone(),
                        api_addr: m.api_addr.clone(),
                        max_bytes: None,
                        handshakes: None,
                    };
                    nodes.push((rss, client));
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "no admin certificate for the members' status: reporting the local node's memory only"
                );
                let me = status.members.iter().find(|m| m.id == status.node_id);
                let rss = NodeRss {
                    name: status.name.clone(),
                    api_addr: me.map(|m| m.api_addr.clone()).unwrap_or_default(),
                    max_bytes: None,
                    handshakes: None,
                };
                nodes.push((rss, local_client(&dd.root)));
            }
        }
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                for (rss, client) in &mut nodes {
                    match client
                        .call::<StatusView>(Method::GET, "/v1/status", None::<&()>)
                        .await
                    {
                        Ok(s) => {
                            rss.max_bytes = rss.max_bytes.max(s.resident_bytes);
                            rss.handshakes = match (rss.handshakes, s.tls_handshakes) {
                                (_, None) => None,
                                (None, Some(now)) => Some((now, now)),
                                (Some((first, _)), Some(now)) => Some((first, now)),
                            };
                        }
                        Err(e) => tracing::debug!(
                            node = %rss.name,
                            error = format!("{e:#}"),
                            "no status for the memory figure"
                        ),
                    }
                }
                if *stopped.borrow() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Self::EVERY) => {}
                    _ = stopped.changed() => {}
                }
            }
            nodes.into_iter().map(|(rss, _)| rss).collect()
        });
        Ok(RssSampler { stop, task })
    }

    /// Takes one last sample of every member and returns the maxima.
    pub(super) async fn finish(self) -> Vec<NodeRss> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}
