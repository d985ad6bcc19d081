//! What a node says about itself in its mDNS advert, and how a sighting is read back.
//!
//! TXT keys (RFC 6763 section 6): `txtvers` (format of this record set, currently `1`),
//! `cluster`, `node`, `api`, `peer`, `ver`. A record set with another `txtvers` is ignored
//! rather than guessed at.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

/// The service type every Outpost node registers.
pub const SERVICE_TYPE: &str = "_outpost._tcp.local.";

/// Version of the TXT record layout below.
pub const TXT_VERSION: &str = "1";

/// What a serving node advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Node name, used as the mDNS instance name (may be renamed `name (2)` on a conflict).
    pub name: String,
    /// Cluster id, or its short hash: browsers keep only the entries of their cluster.
    pub cluster: String,
    /// Node id allocated by the cluster.
    pub node_id: u64,
    /// Port of the HTTPS API (also the SRV port).
    pub api_port: u16,
    /// Port of the Raft peer transport.
    pub peer_port: u16,
    /// Outpost version string.
    pub version: String,
}

/// One node as seen through mDNS: its TXT records plus the addresses it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sighting {
    /// The mDNS instance name (without the service type).
    pub instance: String,
    pub cluster: String,
    pub node_id: u64,
    pub api_port: u16,
    pub peer_port: u16,
    pub version: String,
    /// Addresses, sorted, IPv4 first.
    pub addrs: Vec<IpAddr>,
}

/// Why an advert could not be built or a sighting not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    #[error("TXT key {0:?} is missing")]
    Missing(&'static str),
    #[error("TXT key {key:?} has invalid value {value:?}")]
    Invalid { key: &'static str, value: String },
    #[error("TXT format version {0:?} is not understood (this build reads {TXT_VERSION})")]
    UnknownVersion(String),
    #[error("{field} {value:?} is not usable in an mDNS advert")]
    BadAdvert { field: &'static str, value: String },
}

impl Advert {
    /// Checks the fields and returns the TXT key/value pairs to publish.
    pub fn txt(&self) -> Result<Vec<(&'static str, String)>, TxtError> {
        check_label("name", &self.name, 63)?;
        check_token("cluster", &self.cluster)?;
        check_token("version", &self.version)?;
        for (field, port) in [("api_port", self.api_port), ("peer_port", self.peer_port)] {
            if port == 0 {
                return Err(TxtError::BadAdvert {
                    field,
                    value: "0".into(),
                });
            }
        }
        Ok(vec![
            ("txtvers", TXT_VERSION.to_string()),
            ("cluster", self.cluster.clone()),
            ("node", self.node_id.to_string()),
            ("api", self.api_port.to_string()),
            ("peer", self.peer_port.to_string()),
            ("ver", self.version.clone()),
        ])
    }

    /// The mDNS host name for this node: unique per (cluster, node id), so two nodes on the same
    /// LAN never fight over it even when the operating systems share a host name.
    pub fn host_name(&self) -> String {
        let cluster: String = self
            .cluster
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect::<String>()
            .to_ascii_lowercase();
        format!("outpost-{cluster}-{}.local.", self.node_id)
    }
}

/// Reads a sighting from an instance name, its TXT properties and its addresses.
pub fn parse_sighting(
    instance: &str,
    txt: &HashMap<String, String>,
    addrs: impl IntoIterator<Item = IpAddr>,
) -> Result<Sighting, TxtError> {
    let get = |key: &'static str| txt.get(key).ok_or(TxtError::Missing(key));
    let txtvers = get("txtvers")?;
    if txtvers != TXT_VERSION {
        return Err(TxtError::UnknownVersion(txtvers.clone()));
    }
    let invalid = |key: &'static str, value: &str| TxtError::Invalid {
        key,
        value: value.to_string(),
    };
    let cluster = get("cluster")?;
    if cluster.is_empty() {
        return Err(invalid("cluster", cluster));
    }
    let node = get("node")?;
    let node_id = node.parse::<u64>().map_err(|_| invalid("node", node))?;
    let port = |key: &'static str| -> Result<u16, TxtError> {
        let v = get(key)?;
        match v.parse::<u16>() {
            Ok(p) if p != 0 => Ok(p),
            _ => Err(invalid(key, v)),
        }
    };
    let api_port = port("api")?;
    let peer_port = port("peer")?;
    let version = get("ver")?.clone();
    let mut addrs: Vec<IpAddr> = addrs.into_iter().collect();
    sort_addrs(&mut addrs);
    Ok(Sighting {
        instance: instance.to_string(),
        cluster: cluster.clone(),
        node_id,
        api_port,
        peer_port,
        version,
        addrs,
    })
}

/// Sorts addresses IPv4 first, then by value, and removes duplicates.
pub fn sort_addrs(addrs: &mut Vec<IpAddr>) {
    addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    addrs.dedup();
}

/// The instance part of a full service name: `node1._outpost._tcp.local.` -> `node1`.
pub fn instance_of(fullname: &str) -> &str {
    let suffix = format!(".{SERVICE_TYPE}");
    match fullname.len().checked_sub(suffix.len()) {
        Some(cut)
            if fullname.is_char_boundary(cut) && fullname[cut..].eq_ignore_ascii_case(&suffix) =>
        {
            &fullname[..cut]
        }
        _ => fullname,
    }
}

fn check_label(field: &'static str, value: &str, max: usize) -> Result<(), TxtError> {
    if value.is_empty() || value.len() > max || value.chars().any(|c| c.is_control()) {
        return Err(TxtError::BadAdvert {
            field,
            value: value.into(),
        });
    }
    Ok(())
}

/// A TXT value we publish: printable ASCII without spaces or `=`, short enough for one string.
fn check_token(field: &'static str, value: &str) -> Result<(), TxtError> {
    if value.is_empty()
        || value.len() > 200
        || !value.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
    {
        return Err(TxtError::BadAdvert {
            field,
            value: value.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert() -> Advert {
        Advert {
            name: "node1".into(),
            cluster: "c0ffee".into(),
            node_id: 7,
            api_port: 7443,
            peer_port: 7444,
            version: "0.1.0".into(),
        }
    }

    fn txt_of(a: &Advert) -> HashMap<String, String> {
        a.txt()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn advert_round_trips_through_txt() {
        let a = advert();
        let addrs: Vec<IpAddr> = vec!["fe80::1".parse().unwrap(), "198.18.0.2".parse().unwrap()];
        let s = parse_sighting("node1", &txt_of(&a), addrs).unwrap();
        assert_eq!(s.cluster, a.cluster);
        assert_eq!(s.node_id, a.node_id);
        assert_eq!((s.api_port, s.peer_port), (7443, 7444));
        assert_eq!(s.version, "0.1.0");
        assert_eq!(s.addrs[0], "198.18.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn advert_field_checks() {
        let cases: Vec<(Advert, Option<&str>)> = vec![
            (advert(), None),
            (
                Advert {
                    name: "".into(),
                    ..advert()
                },
                Some("name"),
            ),
            (
                Advert {
                    name: "x".repeat(64),
                    ..advert()
                },
                Some("name"),
            ),
            (
                Advert {
                    name: "node one".into(),
                    ..advert()
                },
                None,
            ),
            (
                Advert {
                    cluster: "".into(),
                    ..advert()
                },
                Some("cluster"),
            ),
            (
                Advert {
                    cluster: "a=b".into(),
                    ..advert()
                },
                Some("cluster"),
            ),
            (
                Advert {
                    cluster: "a b".into(),
                    ..advert()
                },
                Some("cluster"),
            ),
            (
                Advert {
                    version: "".into(),
                    ..advert()
                },
                Some("version"),
            ),
            (
                Advert {
                    api_port: 0,
                    ..advert()
                },
                Some("api_port"),
            ),
            (
                Advert {
                    peer_port: 0,
                    ..advert()
                },
                Some("peer_port"),
            ),
        ];
        for (a, want) in cases {
            let got = match a.txt() {
                Ok(_) => None,
                Err(TxtError::BadAdvert { field, .. }) => Some(field),
                Err(e) => panic!("unexpected {e}"),
            };
            assert_eq!(got, want, "{a:?}");
        }
    }

    #[test]
    fn parse_sighting_table() {
        let good = txt_of(&advert());
        let with = |k: &str, v: Option<&str>| {
            let mut t = good.clone();
            match v {
                Some(v) => t.insert(k.into(), v.into()),
                None => t.remove(k),
            };
            t
        };
        let inv = |key: &'static str, value: &str| TxtError::Invalid {
            key,
            value: value.into(),
        };
        let cases: Vec<(HashMap<String, String>, Result<(), TxtError>)> = vec![
            (good.clone(), Ok(())),
            (with("txtvers", None), Err(TxtError::Missing("txtvers"))),
            (
                with("txtvers", Some("2")),
                Err(TxtError::UnknownVersion("2".into())),
            ),
            (with("cluster", None), Err(TxtError::Missing("cluster"))),
            (with("cluster", Some("")), Err(inv("cluster", ""))),
            (with("node", Some("-1")), Err(inv("node", "-1"))),
            (with("node", Some("x")), Err(inv("node", "x"))),
            (with("api", Some("0")), Err(inv("api", "0"))),
            (with("api", Some("65536")), Err(inv("api", "65536"))),
            (with("peer", None), Err(TxtError::Missing("peer"))),
            (with("ver", None), Err(TxtError::Missing("ver"))),
            (with("extra", Some("ignored")), Ok(())),
        ];
        for (txt, want) in cases {
            let got = parse_sighting("n", &txt, []).map(|_| ());
            assert_eq!(got, want, "{txt:?}");
        }
    }

    #[test]
    fn host_name_is_per_cluster_and_node() {
        let a = advert();
        assert_eq!(a.host_name(), "outpost-c0ffee-7.local.");
        let b = Advert {
            cluster: "AB-cd:ef".into(),
            node_id: 1,
            ..advert()
        };
        assert_eq!(b.host_name(), "outpost-abcdef-1.local.");
    }

    #[test]
    fn instance_of_table() {
        let cases = [
            ("node1._outpost._tcp.local.", "node1"),
            ("node 1 (2)._OUTPOST._tcp.local.", "node 1 (2)"),
            ("weird", "weird"),
            ("x._http._tcp.local.", "x._http._tcp.local."),
        ];
        for (full, want) in cases {
            assert_eq!(instance_of(full), want);
        }
    }

    #[test]
    fn sort_addrs_puts_v4_first_and_dedups() {
        let mut v: Vec<IpAddr> = ["::1", "10.0.0.2", "10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        sort_addrs(&mut v);
        let want: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(v, want);
    }
}
