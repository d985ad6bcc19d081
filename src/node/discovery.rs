//! The node side of discovery: advertising this node, and re-addressing peers whose address
//! changed (DHCP), from the view of `outpost_discovery`.
//!
//! Discovery is a hint only. A sighting of node N at a new address is acted on only after the
//! leader dialled that address over the peer channel and the mTLS handshake proved the far end
//! holds node N's certificate (`transport::ping` checks the name `n<N>.node.outpost`); only then
//! is `Command::UpdateNode` proposed, and the Raft upkeep re-points the membership.
//!
//! Tasks: one tokio task (the re-addresser) per serving node with mDNS on; the mdns-sd daemon
//! threads belong to the `Advertiser` and the `Discovery` handle (see `outpost_discovery`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use outpost_discovery::{Advert, Advertiser, Discovery, Peer, PeerView};
use outpost_raft::RaftNode;
use outpost_storage::{Command, Envelope, NodeRecord, NodeRole};
use tokio::task::JoinHandle;

use crate::node::VERSION;
use crate::shared::datadir::NodeFile;

/// How long a failed check of (node, address) is remembered before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// How often the view is looked at even when it did not change (leadership may have moved).
const RESCAN: Duration = Duration::from_secs(5);
/// Dial + ping budget for one candidate address.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Discovery of a serving node: its advert, its browser and the re-addresser task.
pub struct NodeDiscovery {
    advertiser: Option<Advertiser>,
    browser: Option<Discovery>,
    task: Option<JoinHandle<()>>,
}

/// What this node advertises, from its node.toml.
pub fn advert(file: &NodeFile) -> Result<Advert> {
    let port = |addr: &str, what: &str| -> Result<u16> {
        let (_, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("{what} {addr:?} has no port"))?;
        port.parse::<u16>()
            .with_context(|| format!("{what} {addr:?}: bad port"))
    };
    Ok(Advert {
        name: file.name.clone(),
        cluster: file.cluster_id.clone(),
        node_id: file.node_id,
        api_port: port(&file.api_addr, "api_addr")?,
        peer_port: port(&file.peer_addr, "peer_addr")?,
        version: VERSION.to_string(),
    })
}

impl NodeDiscovery {
    /// Registers the advert and starts the re-addresser. With `[discovery] mdns = false` nothing
    /// is multicast and there is nothing to do (static peers do not advertise node ids).
    pub fn start(
        file: &NodeFile,
        node: RaftNode,
        peer_client: Arc<rustls::ClientConfig>,
    ) -> Result<NodeDiscovery> {
        if !file.discovery.mdns {
            return Ok(NodeDiscovery {
                advertiser: None,
                browser: None,
                task: None,
            });
        }
        let advert = advert(file)?;
        let advertiser =
            Advertiser::start(&file.discovery, &advert).context("registering the mDNS advert")?;
        let browser = Discovery::start(&file.discovery, Some(&file.cluster_id))
            .context("starting the mDNS browser")?;
        let readdresser = Readdresser {
            node,
            peer_client,
            failed: HashMap::new(),
        };
        let task = tokio::spawn(readdresser.run(browser.subscribe()));
        Ok(NodeDiscovery {
            advertiser,
            browser: Some(browser),
            task: Some(task),
        })
    }

    /// Stops the re-addresser and withdraws the advert (mDNS goodbye packets).
    pub async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let advertiser = self.advertiser.take();
        let browser = self.browser.take();
        // Both wait on their daemon threads (bounded, a few seconds at most): off the runtime.
        let done = tokio::task::spawn_blocking(move || {
            if let Some(a) = advertiser {
                match a.shutdown() {
                    Ok(()) => tracing::info!("mDNS advert withdrawn"),
                    Err(e) => tracing::warn!(error = %e, "withdrawing the mDNS advert"),
                }
            }
            if let Some(b) = browser {
                b.shutdown();
            }
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "stopping discovery");
        }
    }
}

struct Readdresser {
    node: RaftNode,
    peer_client: Arc<rustls::ClientConfig>,
    /// (node id, peer address) -> when the check failed.
    failed: HashMap<(u64, SocketAddr), Instant>,
}

impl Readdresser {
    async fn run(mut self, mut rx: tokio::sync::watch::Receiver<PeerView>) {
        loop {
            let view = rx.borrow_and_update().clone();
            if let Err(e) = self.scan(&view).await {
                tracing::warn!(error = format!("{e:#}"), "re-addressing from discovery");
            }
            match tokio::time::timeout(RESCAN, rx.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                // The browser is gone: the node is stopping.
                Ok(Err(_)) => return,
            }
        }
    }

    /// On the leader: checks each advertised member whose address differs from its row.
    async fn scan(&mut self, view: &PeerView) -> Result<()> {
        let status = self.node.status();
        if status.leader_id != Some(status.node_id) || view.is_empty() {
            return Ok(());
        }
        let reader = self.node.reader();
        let rows = tokio::task::spawn_blocking(move || reader.nodes())
            .await
            .context("reading the node rows")??;
        for row in rows {
            if row.role == NodeRole::Removed {
                continue;
            }
            let Some(peer) = view.node(row.id) else {
                continue;
            };
            for (api, peer_addr) in candidates(&row, peer) {
                if let Some(at) = self.failed.get(&(row.id, peer_addr))
                    && at.elapsed() < RETRY_AFTER
                {
                    continue;
                }
                if self.check_and_update(&row, api, peer_addr).await? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Dials `peer_addr` as node `row.id` over mTLS; on success proposes the new addresses.
    async fn check_and_update(
        &mut self,
        row: &NodeRecord,
        api: SocketAddr,
        peer_addr: SocketAddr,
    ) -> Result<bool> {
        let checked = outpost_raft::transport::ping(
            self.peer_client.clone(),
            outpost_certs::node_server_name(row.id),
            row.id,
            &peer_addr.to_string(),
            PING_TIMEOUT,
        )
        .await;
        match checked {
            Ok(id) if id == row.id => {}
            Ok(other) => {
                tracing::warn!(node = row.id, %peer_addr, answered = other, "advertised address answered as another node");
                self.failed.insert((row.id, peer_addr), Instant::now());
                return Ok(false);
            }
            Err(e) => {
                tracing::debug!(node = row.id, %peer_addr, error = %e, "advertised address did not check out");
                self.failed.insert((row.id, peer_addr), Instant::now());
                return Ok(false);
            }
        }
        self.failed.remove(&(row.id, peer_addr));
        tracing::info!(
            node = row.id,
            old_api = %row.api_addr,
            old_peer = %row.peer_addr,
            new_api = %api,
            new_peer = %peer_addr,
            "re-addressing node: its certificate checked out at the address it advertises"
        );
        let env = Envelope {
            at_ms: outpost_raft::now_ms(),
            actor: format!("node:{}:discovery", self.node.id()),
            command: Command::UpdateNode {
                id: row.id,
                api_addr: Some(api.to_string()),
                peer_addr: Some(peer_addr.to_string()),
                role: None,
                version: None,
            },
        };
        self.node
            .write(env)
            .await
            .context("proposing the new node address")?
            .map_err(|r| anyhow::anyhow!("{}", r.message))
            .context("the cluster refused the new node address")?;
        Ok(true)
    }
}

/// The (api, peer) address pairs worth checking for `row`, given how it is advertised: none when
/// the row already points at one of the advertised addresses with the advertised ports, or when
/// the row names a host rather than an IP (an operator's choice that discovery must not undo).
pub fn candidates(row: &NodeRecord, peer: &Peer) -> Vec<(SocketAddr, SocketAddr)> {
    let Some(peer_port) = peer.peer_port else {
        return Vec::new();
    };
    let (Ok(cur_api), Ok(cur_peer)) = (
        row.api_addr.parse::<SocketAddr>(),
        row.peer_addr.parse::<SocketAddr>(),
    ) else {
        return Vec::new();
    };
    let current = peer.addrs.iter().any(|ip| {
        cur_api == SocketAddr::new(*ip, peer.api_port)
            && cur_peer == SocketAddr::new(*ip, peer_port)
    });
    if current {
        return Vec::new();
    }
    peer.addrs
        .iter()
        .map(|ip| {
            (
                SocketAddr::new(*ip, peer.api_port),
                SocketAddr::new(*ip, peer_port),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(api: &str, peer: &str) -> NodeRecord {
        NodeRecord {
            id: 2,
            name: "n2".into(),
            api_addr: api.into(),
            peer_addr: peer.into(),
            role: NodeRole::Voter,
            version: "0".into(),
            joined_at_ms: 0,
            binary_sha256: String::new(),
        }
    }

    fn seen(addrs: &[&str], api: u16, peer: Option<u16>) -> Peer {
        Peer {
            node_id: Some(2),
            name: Some("n2".into()),
            cluster: Some("c".into()),
            version: Some("0".into()),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            api_port: api,
            peer_port: peer,
            mdns: true,
            static_entries: vec![],
        }
    }

    #[test]
    fn candidates_table() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        // (row api, row peer, advertised addrs, api port, peer port, want)
        /// (row api, row peer, advertised addrs, api port, peer port, wanted pairs)
        type Case<'a> = (
            &'a str,
            &'a str,
            Vec<&'a str>,
            u16,
            Option<u16>,
            Vec<(&'a str, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            // Unchanged: nothing to check.
            (
                "10.0.0.2:7443",
                "10.0.0.2:7444",
                vec!["10.0.0.2"],
                7443,
                Some(7444),
                vec![],
            ),
            // One of several advertised addresses matches: nothing to check.
            (
                "10.0.0.2:7443",
                "10.0.0.2:7444",
                vec!["10.0.0.2", "10.1.0.2"],
                7443,
                Some(7444),
                vec![],
            ),
            // Moved: the new address is a candidate.
            (
                "10.0.0.2:7443",
                "10.0.0.2:7444",
                vec!["10.0.0.9"],
                7443,
                Some(7444),
                vec![("10.0.0.9:7443", "10.0.0.9:7444")],
            ),
            // Same IP, ports changed: a candidate too.
            (
                "10.0.0.2:7443",
                "10.0.0.2:7444",
                vec!["10.0.0.2"],
                8443,
                Some(8444),
                vec![("10.0.0.2:8443", "10.0.0.2:8444")],
            ),
            // A row with a host name is left alone.
            (
                "n2.site:7443",
                "n2.site:7444",
                vec!["10.0.0.9"],
                7443,
                Some(7444),
                vec![],
            ),
            // No peer port known (static-only entry): nothing.
            (
                "10.0.0.2:7443",
                "10.0.0.2:7444",
                vec!["10.0.0.9"],
                7443,
                None,
                vec![],
            ),
        ];
        for (api, peer, addrs, ap, pp, want) in cases {
            let got = candidates(&row(api, peer), &seen(&addrs, ap, pp));
            let want: Vec<_> = want.iter().map(|(a, p)| (sa(a), sa(p))).collect();
            assert_eq!(got, want, "{api} {peer} {addrs:?}");
        }
    }
}
