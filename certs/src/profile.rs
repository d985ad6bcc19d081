//! The certificate policy: what each role's certificate contains, and reading a role back out
//! of a certificate. Pure functions over values; the randomness (serials) comes in as arguments.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{CertError, x509_error};

/// The TLS server name every node certificate carries, for callers that accept any node.
pub const ANY_NODE_SERVER_NAME: &str = "any.node.outpost";

/// The TLS server name bound to node `id`: a peer dialling node 3 accepts only "n3.node.outpost".
pub fn node_server_name(id: u64) -> String {
    format!("n{id}.node.outpost")
}

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Node(u64),
    Client(String),
    Admin(String),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Node(id) => write!(f, "node {id}"),
            Role::Client(c) => write!(f, "client {c}"),
            Role::Admin(a) => write!(f, "admin {a}"),
        }
    }
}

/// A certificate's validity window, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl Validity {
    /// From an hour before `now_unix` (clock skew between machines) to `days` days after it.
    pub fn days_from(now_unix: i64, days: u32) -> Self {
        Validity {
            not_before_unix: now_unix.saturating_sub(CLOCK_SKEW_SECS),
            not_after_unix: now_unix.saturating_add(i64::from(days) * DAY_SECS),
        }
    }
}

/// The role bound in a leaf certificate: exactly one "urn:outpost:<role>:<id>" URI SAN, with an
/// EKU set that fits the role (a node has serverAuth+clientAuth; a client/admin cert has
/// clientAuth and must not have serverAuth), and not a CA. Anything else is an error naming
/// what is wrong. This reads the certificate only: chain verification is the TLS layer's job.
pub fn role_of(cert_der: &[u8]) -> Result<Role, CertError> {
    let cert = parse_cert(cert_der)?;
    let what = "certificate extensions";
    let x509 = |source| CertError::X509 { what, source };
    let uris: Vec<&str> = match cert.subject_alternative_name().map_err(x509)? {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let (server_auth, client_auth) = match cert.extended_key_usage().map_err(x509)? {
        Some(eku) => (eku.value.server_auth, eku.value.client_auth),
        None => (false, false),
    };
    let is_ca = cert
        .basic_constraints()
        .map_err(x509)?
        .is_some_and(|bc| bc.value.ca);
    role_from(&uris, server_auth, client_auth, is_ca).map_err(CertError::NoRole)
}

/// The certificate's notAfter, in Unix seconds.
pub fn not_after_unix(cert_der: &[u8]) -> Result<i64, CertError> {
    Ok(parse_cert(cert_der)?.validity().not_after.timestamp())
}

/// The certificate's notBefore, in Unix seconds.
pub fn not_before_unix(cert_der: &[u8]) -> Result<i64, CertError> {
    Ok(parse_cert(cert_der)?.validity().not_before.timestamp())
}

/// The certificate's serial number as lowercase hex of its DER bytes (32 digits for ours).
pub fn serial_hex(cert_der: &[u8]) -> Result<String, CertError> {
    Ok(hex::encode(parse_cert(cert_der)?.raw_serial()))
}

const URI_PREFIX: &str = "urn:outpost:";
/// How far before its issue a certificate is valid (clock skew between machines): its issue
/// time is `not_before + CLOCK_SKEW_SECS`.
pub const CLOCK_SKEW_SECS: i64 = 3600;
const DAY_SECS: i64 = 86_400;
/// How long the cluster CA lives: 20 years. Air-gapped sites have nobody to re-root them often.
pub(crate) const CA_DAYS: u32 = 20 * 365 + 5;

/// The profile of a leaf certificate for `role`: every field of an issued certificate comes
/// from here, nothing from the request.
pub(crate) fn leaf_params(
    role: &Role,
    validity: &Validity,
    serial: [u8; 16],
) -> Result<CertificateParams, CertError> {
    node_leaf_params(role, validity, serial, &[])
}

/// The host of a `HOST:PORT` address (`[v6]:port` too) as a subject alternative name: an IP
/// address, or a DNS name; None for anything else. So that a browser that trusts the cluster CA
/// accepts a node reached at the address it advertises (the console's links).
fn host_san(addr: &str) -> Option<SanType> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(SanType::IpAddress(ip));
    }
    let dns_ok = host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !dns_ok {
        return None;
    }
    host.to_string().try_into().ok().map(SanType::DnsName)
}

/// `leaf_params`, and for a node also the hosts of `addrs` (its advertised addresses) as
/// names; other roles ignore `addrs`.
pub(crate) fn node_leaf_params(
    role: &Role,
    validity: &Validity,
    serial: [u8; 16],
    addrs: &[&str],
) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::default();
    set_validity(&mut p, validity)?;
    p.serial_number = Some(serial_number(serial));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    let (cn, uri) = match role {
        Role::Node(id) => {
            p.subject_alt_names = vec![
                SanType::DnsName(node_server_name(*id).try_into()?),
                SanType::DnsName(ANY_NODE_SERVER_NAME.try_into()?),
            ];
            for san in addrs.iter().filter_map(|a| host_san(a)) {
                if !p.subject_alt_names.contains(&san) {
                    p.subject_alt_names.push(san);
                }
            }
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            (
                format!("outpost node {id}"),
                role_uri("node", &id.to_string()),
            )
        }
        Role::Client(c) => {
            check_name("client id", c)?;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            (format!("outpost client {c}"), role_uri("client", c))
        }
        Role::Admin(a) => {
            check_name("admin name", a)?;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            (format!("outpost admin {a}"), role_uri("admin", a))
        }
    };
    p.subject_alt_names.push(SanType::URI(uri.try_into()?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    Ok(p)
}

/// The profile of the cluster CA: CA:TRUE with path length 0 (it signs leaves only),
/// keyCertSign + cRLSign, CN "Outpost CA <name>", O = cluster id.
pub(crate) fn ca_params(
    cluster_id: &str,
    cluster_name: &str,
    validity: &Validity,
    serial: [u8; 16],
) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::default();
    set_validity(&mut p, validity)?;
    p.serial_number = Some(serial_number(serial));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Outpost CA {cluster_name}"));
    dn.push(DnType::OrganizationName, cluster_id);
    p.distinguished_name = dn;
    Ok(p)
}

/// Client ids and admin names: [A-Za-z0-9._-]{1,64}.
pub(crate) fn check_name(what: &'static str, value: &str) -> Result<(), CertError> {
    if is_valid_name(value) {
        Ok(())
    } else {
        Err(CertError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| CertError::X509 {
        what: "certificate",
        source: x509_error(e),
    })?;
    if !rest.is_empty() {
        return Err(CertError::X509 {
            what: "certificate (trailing bytes)",
            source: x509_parser::error::X509Error::InvalidCertificate,
        });
    }
    Ok(cert)
}

fn is_valid_name(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn role_uri(kind: &str, id: &str) -> String {
    format!("{URI_PREFIX}{kind}:{id}")
}

/// A serial as 16 bytes that DER keeps as they are: positive (top bit clear) and without a
/// leading zero byte that DER would strip.
fn serial_number(mut bytes: [u8; 16]) -> SerialNumber {
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 0x01;
    }
    SerialNumber::from_slice(&bytes)
}

fn set_validity(p: &mut CertificateParams, v: &Validity) -> Result<(), CertError> {
    if v.not_after_unix <= v.not_before_unix {
        return Err(CertError::EmptyValidity {
            not_before_unix: v.not_before_unix,
            not_after_unix: v.not_after_unix,
        });
    }
    p.not_before = time_of(v.not_before_unix)?;
    p.not_after = time_of(v.not_after_unix)?;
    Ok(())
}

fn time_of(unix: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|source| CertError::Time { unix, source })
}

/// The decision behind `role_of`, over the facts it reads from a certificate.
fn role_from(
    uris: &[&str],
    server_auth: bool,
    client_auth: bool,
    is_ca: bool,
) -> Result<Role, String> {
    // Any spelling of the prefix counts, so "URN:OUTPOST:..." cannot ride along unseen.
    let ours: Vec<&str> = uris
        .iter()
        .copied()
        .filter(|u| {
            u.get(..URI_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(URI_PREFIX))
        })
        .collect();
    let uri = match ours.as_slice() {
        [one] => *one,
        [] => return Err("no urn:outpost: URI in its subject alternative names".into()),
        more => {
            return Err(format!(
                "{} urn:outpost: URIs ({}), exactly one is allowed",
                more.len(),
                more.join(", ")
            ));
        }
    };
    if is_ca {
        return Err(format!("{uri}: a CA certificate cannot hold a role"));
    }
    let (kind, id) = uri
        .strip_prefix(URI_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| format!("malformed role URI {uri:?}"))?;
    match kind {
        "node" => {
            let node: u64 = id
                .parse()
                .ok()
                .filter(|n: &u64| n.to_string() == id)
                .ok_or_else(|| format!("{uri}: node id {id:?} is not a plain number"))?;
            if !(server_auth && client_auth) {
                return Err(format!(
                    "{uri}: a node certificate needs EKU serverAuth and clientAuth"
                ));
            }
            Ok(Role::Node(node))
        }
        "client" | "admin" => {
            if !is_valid_name(id) {
                return Err(format!(
                    "{uri}: {kind} id {id:?} is not 1-64 of A-Z a-z 0-9 . _ -"
                ));
            }
            if server_auth {
                return Err(format!(
                    "{uri}: a {kind} certificate must not carry EKU serverAuth"
                ));
            }
            if !client_auth {
                return Err(format!("{uri}: a {kind} certificate needs EKU clientAuth"));
            }
            Ok(if kind == "client" {
                Role::Client(id.to_string())
            } else {
                Role::Admin(id.to_string())
            })
        }
        other => Err(format!("{uri}: unknown role {other:?}")),
    }
}

#[cfg(test)]
mod host_san_tests {
    use super::*;

    #[test]
    fn advertised_hosts_become_names() {
        let v = Validity::days_from(1_700_000_000, 1);
        let p = node_leaf_params(
            &Role::Node(2),
            &v,
            [1; 16],
            &[
                "10.0.0.2:7443",
                "[fd00::2]:7443",
                "n2.plant.lan:7443",
                "bad host:1",
                "10.0.0.2:7444",
            ],
        )
        .expect("params");
        let names: Vec<String> = p
            .subject_alt_names
            .iter()
            .map(|s| format!("{s:?}"))
            .collect();
        assert!(names.iter().any(|n| n.contains("10.0.0.2")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("fd00::2")), "{names:?}");
        assert!(
            names.iter().any(|n| n.contains("n2.plant.lan")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("bad host")), "{names:?}");
        assert_eq!(
            names.iter().filter(|n| n.contains("10.0.0.2")).count(),
            1,
            "the same host once: {names:?}"
        );
        let admin = node_leaf_params(&Role::Admin("ops".into()), &v, [1; 16], &["10.0.0.9:1"])
            .expect("params");
        assert!(!format!("{:?}", admin.subject_alt_names).contains("10.0.0.9"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};

    const NOW: i64 = 1_800_000_000;

    fn uris(p: &CertificateParams) -> Vec<String> {
        p.subject_alt_names
            .iter()
            .filter_map(|s| match s {
                SanType::URI(u) => Some(u.as_str().to_string()),
                _ => None,
            })
            .collect()
    }

    fn dns(p: &CertificateParams) -> Vec<String> {
        p.subject_alt_names
            .iter()
            .filter_map(|s| match s {
                SanType::DnsName(d) => Some(d.as_str().to_string()),
                _ => None,
            })
            .collect()
    }

    fn cn(p: &CertificateParams) -> String {
        match p.distinguished_name.get(&DnType::CommonName) {
            Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
            other => panic!("unexpected CN {other:?}"),
        }
    }

    #[test]
    fn leaf_profiles_by_role() {
        struct Case {
            role: Role,
            cn: &'static str,
            uri: &'static str,
            dns: &'static [&'static str],
            eku: &'static [ExtendedKeyUsagePurpose],
        }
        let cases = [
            Case {
                role: Role::Node(7),
                cn: "outpost node 7",
                uri: "urn:outpost:node:7",
                dns: &["n7.node.outpost", "any.node.outpost"],
                eku: &[ServerAuth, ClientAuth],
            },
            Case {
                role: Role::Node(u64::MAX),
                cn: "outpost node 18446744073709551615",
                uri: "urn:outpost:node:18446744073709551615",
                dns: &["n18446744073709551615.node.outpost", "any.node.outpost"],
                eku: &[ServerAuth, ClientAuth],
            },
            Case {
                role: Role::Client("host-12.site_a".into()),
                cn: "outpost client host-12.site_a",
                uri: "urn:outpost:client:host-12.site_a",
                dns: &[],
                eku: &[ClientAuth],
            },
            Case {
                role: Role::Admin("ops".into()),
                cn: "outpost admin ops",
                uri: "urn:outpost:admin:ops",
                dns: &[],
                eku: &[ClientAuth],
            },
        ];
        let v = Validity::days_from(NOW, 90);
        for c in cases {
            let p = leaf_params(&c.role, &v, [0xff; 16]).unwrap();
            assert_eq!(cn(&p), c.cn, "{:?}", c.role);
            assert_eq!(uris(&p), vec![c.uri.to_string()], "{:?}", c.role);
            assert_eq!(dns(&p), c.dns, "{:?}", c.role);
            assert_eq!(p.extended_key_usages, c.eku, "{:?}", c.role);
            assert_eq!(p.is_ca, IsCa::ExplicitNoCa);
            assert_eq!(p.key_usages, vec![KeyUsagePurpose::DigitalSignature]);
            assert!(p.use_authority_key_identifier_extension);
            assert_eq!(p.not_before.unix_timestamp(), NOW - 3600);
            assert_eq!(p.not_after.unix_timestamp(), NOW + 90 * 86_400);
        }
    }

    #[test]
    fn names_outside_the_alphabet_are_refused() {
        let v = Validity::days_from(NOW, 1);
        let long = "x".repeat(65);
        let max = "x".repeat(64);
        let cases: [(&str, bool); 9] = [
            ("a", true),
            ("A.b_c-9", true),
            (&max, true),
            ("", false),
            (&long, false),
            ("a/b", false),
            ("a:b", false),
            ("a b", false),
            ("é", false),
        ];
        for (name, ok) in cases {
            for role in [Role::Client(name.into()), Role::Admin(name.into())] {
                let got = leaf_params(&role, &v, [1; 16]);
                assert_eq!(got.is_ok(), ok, "{role:?}");
                if !ok {
                    assert!(matches!(got, Err(CertError::BadName { .. })), "{role:?}");
                }
            }
        }
    }

    #[test]
    fn validity_must_be_a_real_window() {
        let cases = [
            (Validity::days_from(NOW, 1), true),
            (Validity::days_from(NOW, 0), true), // the hour of skew still makes a window
            (
                Validity {
                    not_before_unix: NOW,
                    not_after_unix: NOW,
                },
                false,
            ),
            (
                Validity {
                    not_before_unix: NOW,
                    not_after_unix: NOW - 1,
                },
                false,
            ),
            (
                Validity {
                    not_before_unix: NOW,
                    not_after_unix: i64::MAX,
                },
                false,
            ),
        ];
        for (v, ok) in cases {
            assert_eq!(
                leaf_params(&Role::Node(1), &v, [1; 16]).is_ok(),
                ok,
                "{v:?}"
            );
        }
        assert_eq!(
            Validity::days_from(i64::MAX, 5).not_after_unix,
            i64::MAX,
            "saturates"
        );
    }

    #[test]
    fn ca_profile() {
        let v = Validity::days_from(NOW, CA_DAYS);
        let p = ca_params("c-42", "plant 3", &v, [0; 16]).unwrap();
        assert_eq!(p.is_ca, IsCa::Ca(BasicConstraints::Constrained(0)));
        assert_eq!(
            p.key_usages,
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
        );
        assert!(p.extended_key_usages.is_empty());
        assert!(p.subject_alt_names.is_empty());
        assert_eq!(cn(&p), "Outpost CA plant 3");
        assert!(matches!(
            p.distinguished_name.get(&DnType::OrganizationName),
            Some(rcgen::DnValue::Utf8String(o)) if o == "c-42"
        ));
        let years = (p.not_after.unix_timestamp() - NOW) / (365 * 86_400);
        assert_eq!(years, 20);
    }

    #[test]
    fn serials_are_16_positive_bytes() {
        for raw in [[0u8; 16], [0xff; 16], [0x80; 16], [0x01; 16]] {
            let s = serial_number(raw);
            let bytes = s.to_bytes();
            assert_eq!(bytes.len(), 16, "{raw:?}");
            assert!(bytes[0] != 0 && bytes[0] < 0x80, "{raw:?} -> {bytes:?}");
        }
    }

    #[test]
    fn role_decisions() {
        let node = Ok(Role::Node(3));
        // (URI SANs, serverAuth, clientAuth, CA, expected role or a piece of the error)
        type Case = (
            &'static [&'static str],
            bool,
            bool,
            bool,
            Result<Role, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (&["urn:outpost:node:3"], true, true, false, node.clone()),
            (
                &["https://example", "urn:outpost:node:3"],
                true,
                true,
                false,
                node,
            ),
            (
                &["urn:outpost:client:h1"],
                false,
                true,
                false,
                Ok(Role::Client("h1".into())),
            ),
            (
                &["urn:outpost:admin:ops"],
                false,
                true,
                false,
                Ok(Role::Admin("ops".into())),
            ),
            (&[], true, true, false, Err("no urn:outpost: URI")),
            (
                &["urn:other:node:3"],
                true,
                true,
                false,
                Err("no urn:outpost:"),
            ),
            (
                &["urn:outpost:admin:a", "urn:outpost:admin:b"],
                false,
                true,
                false,
                Err("2 urn:outpost: URIs"),
            ),
            (
                &["urn:outpost:client:a", "URN:OUTPOST:admin:b"],
                false,
                true,
                false,
                Err("2 urn:outpost: URIs"),
            ),
            (
                &["urn:outpost:client:c"],
                true,
                true,
                false,
                Err("must not carry EKU serverAuth"),
            ),
            (
                &["urn:outpost:admin:c"],
                false,
                false,
                false,
                Err("needs EKU clientAuth"),
            ),
            (
                &["urn:outpost:node:3"],
                false,
                true,
                false,
                Err("needs EKU serverAuth and clientAuth"),
            ),
            (
                &["urn:outpost:node:3"],
                true,
                false,
                false,
                Err("needs EKU serverAuth and clientAuth"),
            ),
            (
                &["urn:outpost:node:3"],
                true,
                true,
                true,
                Err("CA certificate"),
            ),
            (
                &["urn:outpost:node:03"],
                true,
                true,
                false,
                Err("plain number"),
            ),
            (
                &["urn:outpost:node:+3"],
                true,
                true,
                false,
                Err("plain number"),
            ),
            (
                &["urn:outpost:node:x"],
                true,
                true,
                false,
                Err("plain number"),
            ),
            (
                &["urn:outpost:node:"],
                true,
                true,
                false,
                Err("plain number"),
            ),
            (
                &["urn:outpost:client:a/b"],
                false,
                true,
                false,
                Err("client id"),
            ),
            (
                &["urn:outpost:client:"],
                false,
                true,
                false,
                Err("client id"),
            ),
            (
                &["urn:outpost:root:x"],
                true,
                true,
                false,
                Err("unknown role"),
            ),
            (&["urn:outpost:node"], true, true, false, Err("malformed")),
            (&["URN:OUTPOST:node:3"], true, true, false, Err("malformed")),
        ];
        for (uris, server, client, ca, want) in cases {
            let got = role_from(uris, server, client, ca);
            match (&want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{uris:?}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{uris:?}: {g:?} lacks {w:?}"),
                _ => panic!("{uris:?} {server} {client} {ca}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn role_of_reads_real_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let v = Validity::days_from(NOW, 10);
        for role in [
            Role::Node(9),
            Role::Client("c".into()),
            Role::Admin("a".into()),
        ] {
            let cert = leaf_params(&role, &v, [7; 16])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            assert_eq!(role_of(cert.der()).unwrap(), role);
            assert_eq!(not_after_unix(cert.der()).unwrap(), NOW + 10 * 86_400);
            assert_eq!(serial_hex(cert.der()).unwrap(), "07".repeat(16));
        }
        let ca = ca_params("c", "n", &v, [7; 16])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(matches!(role_of(ca.der()), Err(CertError::NoRole(_))));
        for garbage in [&b""[..], b"\x30\x03\x02\x01\x01", b"not der"] {
            assert!(matches!(role_of(garbage), Err(CertError::X509 { .. })));
            assert!(not_after_unix(garbage).is_err());
            assert!(serial_hex(garbage).is_err());
        }
    }
}
