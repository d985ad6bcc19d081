//! The merged peer view: mDNS sightings and static entries, de-duplicated. Pure functions only.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::config::PeerSpec;
use crate::txt::{Sighting, sort_addrs};

/// A static entry after name resolution (an IP literal resolves to itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStatic {
    pub spec: PeerSpec,
    /// Empty when the name did not resolve (such an entry is left out of the view).
    pub addrs: Vec<SocketAddr>,
}

/// One node (or static endpoint) in the view. Everything here is a hint: the caller must still
/// authenticate whatever it dials with the cluster's mTLS checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// Node id from the advert; `None` for a static entry no advert matched.
    pub node_id: Option<u64>,
    /// mDNS instance name; `None` for a static-only entry.
    pub name: Option<String>,
    /// Cluster id from the advert; `None` for a static-only entry.
    pub cluster: Option<String>,
    /// Outpost version from the advert.
    pub version: Option<String>,
    /// Addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// API port (for a static-only entry: the port of the entry).
    pub api_port: u16,
    /// Raft peer port, known only from an advert.
    pub peer_port: Option<u16>,
    /// Seen through mDNS.
    pub mdns: bool,
    /// The static entries (as written in the config) that point at this peer.
    pub static_entries: Vec<String>,
}

/// The current set of peers, in a stable order (advertised nodes by cluster and node id, then
/// static-only entries by address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerView {
    pub peers: Vec<Peer>,
}

impl Peer {
    /// Socket addresses of the API endpoint, one per address.
    pub fn api_addrs(&self) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.api_port))
            .collect()
    }

    /// Socket addresses of the Raft peer endpoint, when the advert told the port.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        match self.peer_port {
            Some(p) => self
                .addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, p))
                .collect(),
            None => Vec::new(),
        }
    }
}

impl PeerView {
    /// The advertised node with this id, if any.
    pub fn node(&self, node_id: u64) -> Option<&Peer> {
        self.peers.iter().find(|p| p.node_id == Some(node_id))
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// Merges sightings and static entries into one view.
///
/// - Sightings of another cluster are dropped when `cluster` is given (`None` keeps all, for
///   listings such as `outpost discover`).
/// - Sightings of the same (cluster, node id) — e.g. one node seen under two instance names —
///   become one peer with the union of their addresses; ports and version come from the
///   instance name that sorts first, so the result does not depend on input order.
/// - A static entry that points at an advertised node's API port on one of its addresses is
///   folded into that node; other static entries with the same socket addresses are one peer.
/// - Static entries that did not resolve are left out.
pub fn merge_view(
    cluster: Option<&str>,
    sightings: &[Sighting],
    statics: &[ResolvedStatic],
) -> PeerView {
    let mut nodes: BTreeMap<(String, u64), Peer> = BTreeMap::new();
    let mut sorted: Vec<&Sighting> = sightings
        .iter()
        .filter(|s| cluster.is_none_or(|c| c == s.cluster))
        .collect();
    sorted.sort_by(|a, b| a.instance.cmp(&b.instance));
    for s in sorted {
        let peer = nodes
            .entry((s.cluster.clone(), s.node_id))
            .or_insert_with(|| Peer {
                node_id: Some(s.node_id),
                name: Some(s.instance.clone()),
                cluster: Some(s.cluster.clone()),
                version: Some(s.version.clone()),
                addrs: Vec::new(),
                api_port: s.api_port,
                peer_port: Some(s.peer_port),
                mdns: true,
                static_entries: Vec::new(),
            });
        peer.addrs.extend(s.addrs.iter().copied());
        sort_addrs(&mut peer.addrs);
    }
    let mut peers: Vec<Peer> = nodes.into_values().collect();

    let mut static_only: BTreeMap<Vec<SocketAddr>, Peer> = BTreeMap::new();
    for st in statics {
        if st.addrs.is_empty() {
            continue;
        }
        let label = st.spec.to_string();
        let hit = peers.iter_mut().find(|p| {
            st.addrs
                .iter()
                .any(|a| a.port() == p.api_port && p.addrs.contains(&a.ip()))
        });
        if let Some(p) = hit {
            if !p.static_entries.contains(&label) {
                p.static_entries.push(label);
            }
            continue;
        }
        let mut key = st.addrs.clone();
        key.sort();
        key.dedup();
        let entry = static_only.entry(key.clone()).or_insert_with(|| {
            let mut addrs: Vec<IpAddr> = key.iter().map(|a| a.ip()).collect();
            sort_addrs(&mut addrs);
            Peer {
                node_id: None,
                name: None,
                cluster: None,
                version: None,
                addrs,
                api_port: st.spec.port(),
                peer_port: None,
                mdns: false,
                static_entries: Vec::new(),
            }
        });
        if !entry.static_entries.contains(&label) {
            entry.static_entries.push(label);
        }
    }
    peers.extend(static_only.into_values());
    for p in &mut peers {
        p.static_entries.sort();
    }
    PeerView { peers }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(instance: &str, cluster: &str, id: u64, addrs: &[&str]) -> Sighting {
        Sighting {
            instance: instance.into(),
            cluster: cluster.into(),
            node_id: id,
            api_port: 7443,
            peer_port: 7444,
            version: "0.1.0".into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn st(spec: &str, addrs: &[&str]) -> ResolvedStatic {
        ResolvedStatic {
            spec: PeerSpec::parse(spec).unwrap(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    /// A compact rendering of a view for table comparisons:
    /// `id@addr,addr:port[m][s=entries]`, `-` for no id.
    fn render(v: &PeerView) -> Vec<String> {
        v.peers
            .iter()
            .map(|p| {
                let id = p.node_id.map_or("-".to_string(), |i| i.to_string());
                let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
                let mut out = format!("{id}@{}:{}", addrs.join(","), p.api_port);
                if p.mdns {
                    out.push_str("[m]");
                }
                if !p.static_entries.is_empty() {
                    out.push_str(&format!("[s={}]", p.static_entries.join(",")));
                }
                out
            })
            .collect()
    }

    #[test]
    fn merge_table() {
        struct Case {
            name: &'static str,
            cluster: Option<&'static str>,
            sightings: Vec<Sighting>,
            statics: Vec<ResolvedStatic>,
            want: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "empty",
                cluster: Some("A"),
                sightings: vec![],
                statics: vec![],
                want: vec![],
            },
            Case {
                name: "other cluster ignored",
                cluster: Some("A"),
                sightings: vec![
                    s("n1", "A", 1, &["10.0.0.1"]),
                    s("x1", "B", 1, &["10.0.0.9"]),
                ],
                statics: vec![],
                want: vec!["1@10.0.0.1:7443[m]"],
            },
            Case {
                name: "no filter keeps all clusters, sorted by cluster then id",
                cluster: None,
                sightings: vec![
                    s("x1", "B", 1, &["10.0.0.9"]),
                    s("n2", "A", 2, &["10.0.0.2"]),
                ],
                statics: vec![],
                want: vec!["2@10.0.0.2:7443[m]", "1@10.0.0.9:7443[m]"],
            },
            Case {
                name: "same node under two instance names merges addresses",
                cluster: Some("A"),
                sightings: vec![
                    s("n1 (2)", "A", 1, &["10.0.0.5"]),
                    s("n1", "A", 1, &["10.0.0.1", "fe80::1"]),
                ],
                statics: vec![],
                want: vec!["1@10.0.0.1,10.0.0.5,fe80::1:7443[m]"],
            },
            Case {
                name: "static alone (mdns off)",
                cluster: Some("A"),
                sightings: vec![],
                statics: vec![st("10.0.0.1:7443", &["10.0.0.1:7443"])],
                want: vec!["-@10.0.0.1:7443[s=10.0.0.1:7443]"],
            },
            Case {
                name: "static matching an advert folds into it",
                cluster: Some("A"),
                sightings: vec![s("n1", "A", 1, &["10.0.0.1"])],
                statics: vec![st("node1:7443", &["10.0.0.1:7443"])],
                want: vec!["1@10.0.0.1:7443[m][s=node1:7443]"],
            },
            Case {
                name: "static on another port stays separate",
                cluster: Some("A"),
                sightings: vec![s("n1", "A", 1, &["10.0.0.1"])],
                statics: vec![st("10.0.0.1:9000", &["10.0.0.1:9000"])],
                want: vec!["1@10.0.0.1:7443[m]", "-@10.0.0.1:9000[s=10.0.0.1:9000]"],
            },
            Case {
                name: "static pointing at another cluster's node is kept as static-only",
                cluster: Some("A"),
                sightings: vec![s("x1", "B", 1, &["10.0.0.9"])],
                statics: vec![st("10.0.0.9:7443", &["10.0.0.9:7443"])],
                want: vec!["-@10.0.0.9:7443[s=10.0.0.9:7443]"],
            },
            Case {
                name: "two static spellings of one endpoint are one peer",
                cluster: Some("A"),
                sightings: vec![],
                statics: vec![
                    st("node1:7443", &["10.0.0.1:7443"]),
                    st("10.0.0.1:7443", &["10.0.0.1:7443"]),
                    st("node1:7443", &["10.0.0.1:7443"]),
                ],
                want: vec!["-@10.0.0.1:7443[s=10.0.0.1:7443,node1:7443]"],
            },
            Case {
                name: "unresolved static left out",
                cluster: Some("A"),
                sightings: vec![],
                statics: vec![st("gone:7443", &[])],
                want: vec![],
            },
        ];
        for c in cases {
            let got = merge_view(c.cluster, &c.sightings, &c.statics);
            assert_eq!(render(&got), c.want, "case {:?}", c.name);
            let mut rev_s = c.sightings.clone();
            rev_s.reverse();
            let mut rev_st = c.statics.clone();
            rev_st.reverse();
            let again = merge_view(c.cluster, &rev_s, &rev_st);
            assert_eq!(again, got, "case {:?} depends on input order", c.name);
        }
    }

    #[test]
    fn peer_socket_addrs() {
        let v = merge_view(
            None,
            &[s("n1", "A", 1, &["10.0.0.1"])],
            &[st("10.0.0.2:80", &["10.0.0.2:80"])],
        );
        assert_eq!(v.len(), 2);
        let n = v.node(1).unwrap();
        assert_eq!(n.api_addrs(), vec!["10.0.0.1:7443".parse().unwrap()]);
        assert_eq!(n.peer_addrs(), vec!["10.0.0.1:7444".parse().unwrap()]);
        assert_eq!(v.peers[1].peer_addrs(), vec![]);
        assert!(v.node(2).is_none());
    }
}
