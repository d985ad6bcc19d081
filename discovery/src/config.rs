//! The `[discovery]` section of a node's (or agent's) configuration, and static peer specs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// `[discovery]` in the node's TOML configuration.
///
/// ```toml
/// [discovery]
/// mdns = true                  # advertise and browse `_outpost._tcp.local.`
/// interfaces = ["eth1"]        # allow-list; empty = every non-loopback multicast interface
/// peers = ["10.1.2.3:7443"]    # static list, `host:port` of a node's API endpoint
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Use mDNS at all. With `false` only the static `peers` are used and nothing is multicast.
    pub mdns: bool,
    /// Interface names mDNS may use. Empty means every non-loopback interface that has multicast.
    pub interfaces: Vec<String>,
    /// Static peers, each `host:port` naming a node's API endpoint (`--peer` flags land here too).
    pub peers: Vec<String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mdns: true,
            interfaces: Vec::new(),
            peers: Vec::new(),
        }
    }
}

/// A parsed static peer entry: a host (IP literal or name) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerSpec {
    /// An IP literal: needs no resolution.
    Addr(SocketAddr),
    /// A host name, resolved through the system resolver each refresh.
    Name { host: String, port: u16 },
}

/// Why a static peer string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerSpecError {
    #[error("empty peer entry")]
    Empty,
    #[error("missing `:port` (expected host:port)")]
    MissingPort,
    #[error("port {0:?} is not a number in 1..=65535")]
    BadPort(String),
    #[error("host {0:?} is not a valid host name")]
    BadHost(String),
}

impl PeerSpec {
    /// Parses `host:port`, `a.b.c.d:port` or `[v6]:port`.
    pub fn parse(spec: &str) -> Result<Self, PeerSpecError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(PeerSpecError::Empty);
        }
        if let Ok(addr) = spec.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(PeerSpecError::BadPort("0".into()));
            }
            return Ok(Self::Addr(addr));
        }
        let (host, port) = spec.rsplit_once(':').ok_or(PeerSpecError::MissingPort)?;
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(PeerSpecError::BadPort(port.into())),
        };
        // A bare IPv6 literal without brackets, or a bracketed host that failed to parse above.
        if host.contains(':') || host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
            return Err(PeerSpecError::BadHost(host.into()));
        }
        if !valid_host_name(host) {
            return Err(PeerSpecError::BadHost(host.into()));
        }
        Ok(Self::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The port of this entry.
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(a) => a.port(),
            Self::Name { port, .. } => *port,
        }
    }
}

impl fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
fn valid_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether mDNS may use an interface: named in a non-empty allow-list, or (empty list) any
/// non-loopback interface with multicast enabled.
pub fn interface_allowed(allow: &[String], name: &str, loopback: bool, multicast: bool) -> bool {
    if allow.is_empty() {
        !loopback && multicast
    } else {
        allow.iter().any(|a| a == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_spec_table() {
        use PeerSpecError::*;
        let cases: &[(&str, Result<PeerSpec, PeerSpecError>)] = &[
            (
                "10.1.2.3:7443",
                Ok(PeerSpec::Addr("10.1.2.3:7443".parse().unwrap())),
            ),
            (
                " [fe80::1]:80 ",
                Ok(PeerSpec::Addr("[fe80::1]:80".parse().unwrap())),
            ),
            (
                "Node1.Site:7443",
                Ok(PeerSpec::Name {
                    host: "node1.site".into(),
                    port: 7443,
                }),
            ),
            (
                "node-1:1",
                Ok(PeerSpec::Name {
                    host: "node-1".into(),
                    port: 1,
                }),
            ),
            ("", Err(Empty)),
            ("   ", Err(Empty)),
            ("node1", Err(MissingPort)),
            ("node1:", Err(BadPort("".into()))),
            ("node1:0", Err(BadPort("0".into()))),
            ("10.1.2.3:0", Err(BadPort("0".into()))),
            ("node1:70000", Err(BadPort("70000".into()))),
            ("node1:http", Err(BadPort("http".into()))),
            ("fe80::1:80", Err(BadHost("fe80::1".into()))),
            ("[fe80::zz]:80", Err(BadHost("[fe80::zz]".into()))),
            ("-bad:80", Err(BadHost("-bad".into()))),
            ("a..b:80", Err(BadHost("a..b".into()))),
            ("a_b:80", Err(BadHost("a_b".into()))),
            (
                "300.1.1.1:80",
                Ok(PeerSpec::Name {
                    host: "300.1.1.1".into(),
                    port: 80,
                }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&PeerSpec::parse(input), want, "input {input:?}");
        }
    }

    #[test]
    fn peer_spec_display_round_trips() {
        for s in ["10.1.2.3:7443", "[fe80::1]:80", "node1.site:7443"] {
            let spec = PeerSpec::parse(s).unwrap();
            assert_eq!(PeerSpec::parse(&spec.to_string()).unwrap(), spec);
            assert_eq!(spec.to_string(), s);
        }
    }

    #[test]
    fn interface_allowed_table() {
        let none: Vec<String> = vec![];
        let eth1 = vec!["eth1".to_string()];
        let lo = vec!["lo".to_string()];
        // (allow, name, loopback, multicast, want)
        let cases: &[(&[String], &str, bool, bool, bool)] = &[
            (&none, "eth0", false, true, true),
            (&none, "lo", true, true, false),
            (&none, "tun0", false, false, false),
            (&eth1, "eth1", false, true, true),
            (&eth1, "eth0", false, true, false),
            (&eth1, "eth1", false, false, true),
            (&lo, "lo", true, false, true),
        ];
        for (allow, name, lb, mc, want) in cases {
            assert_eq!(
                interface_allowed(allow, name, *lb, *mc),
                *want,
                "{allow:?} {name}"
            );
        }
    }

    #[test]
    fn config_from_toml_defaults_and_unknown_fields() -> anyhow::Result<()> {
        #[derive(Deserialize)]
        struct Node {
            discovery: DiscoveryConfig,
        }
        let n: Node = toml::from_str("[discovery]\n")?;
        assert_eq!(n.discovery, DiscoveryConfig::default());
        assert!(n.discovery.mdns);
        let n: Node = toml::from_str(
            "[discovery]\nmdns = false\ninterfaces = [\"eth1\"]\npeers = [\"10.0.0.1:7443\"]\n",
        )?;
        assert!(!n.discovery.mdns);
        assert_eq!(n.discovery.interfaces, vec!["eth1"]);
        assert_eq!(n.discovery.peers, vec!["10.0.0.1:7443"]);
        assert!(toml::from_str::<Node>("[discovery]\nmdsn = false\n").is_err());
        Ok(())
    }
}
