//! Certificate profiles and TLS policy, exercised with in-memory handshakes (no sockets).

use std::sync::Arc;

use outpost_certs::*;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConnection, ServerConnection};
use x509_parser::prelude::FromDer;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn valid() -> Validity {
    Validity::days_from(now(), 30)
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn identity(ca: &CertAuthority, role: Role) -> TlsIdentity {
    let (cert, key) = ca.issue_with_new_key(&role, &valid()).unwrap();
    TlsIdentity::from_pem(&cert, &key, ca.cert_pem()).unwrap()
}

/// Which end refused a handshake, and why.
#[derive(Debug)]
struct Refused {
    by: &'static str,
    error: rustls::Error,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.by, self.error)
    }
}

/// Pumps TLS records between the two ends until both finish or one refuses (bounded rounds).
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    name: &str,
) -> Result<(ClientConnection, ServerConnection), Refused> {
    let mut c =
        ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap()).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    for _ in 0..20 {
        while c.wants_write() {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets().map_err(|error| Refused {
                by: "server",
                error,
            })?;
        }
        while s.wants_write() {
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets().map_err(|error| Refused {
                by: "client",
                error,
            })?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    panic!("handshake neither finished nor failed in 20 rounds");
}

#[test]
fn profiles_round_trip_through_role_of() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let cases = [
        Role::Node(7),
        Role::Client("host-12".into()),
        Role::Admin("ops".into()),
    ];
    for role in cases {
        let (cert, _) = ca.issue_with_new_key(&role, &valid()).unwrap();
        assert_eq!(role_of(&der(&cert)).unwrap(), role);
        let after = not_after_unix(&der(&cert)).unwrap();
        assert!((after - valid().not_after_unix).abs() < 5);
        assert_eq!(serial_hex(&der(&cert)).unwrap().len(), 32);
    }
    for bad in [
        Role::Client("".into()),
        Role::Admin("a/b".into()),
        Role::Client("x".repeat(65)),
    ] {
        assert!(
            ca.issue_with_new_key(&bad, &valid()).is_err(),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn csr_asking_for_ca_rights_and_extra_names_gets_neither() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![
        "evil.example".to_string(),
        "any.node.outpost".to_string(),
    ])
    .unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p.subject_alt_names.push(rcgen::SanType::URI(
        "urn:outpost:admin:root".try_into().unwrap(),
    ));
    // An extension nobody knows: ignored, not a reason to refuse.
    p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 99999, 1],
        vec![0x05, 0x00],
    )];
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    // The request really asks for all of it.
    let csr_der =
        rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
    let (_, parsed_csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der.as_ref())
            .unwrap();
    let asked = format!(
        "{:?}",
        parsed_csr
            .requested_extensions()
            .unwrap()
            .collect::<Vec<_>>()
    );
    assert!(
        asked.contains("ca: true") && asked.contains("evil.example"),
        "{asked}"
    );

    let cert = ca
        .issue(&csr, &Role::Client("c9".into()), &valid())
        .unwrap();
    let d = der(&cert);
    let (_, parsed) = x509_parser::parse_x509_certificate(&d).unwrap();
    assert!(!parsed.is_ca(), "leaf got CA rights from its CSR");
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(!eku.server_auth && eku.client_auth);
    let ku = parsed.key_usage().unwrap().unwrap().value;
    assert!(!ku.key_cert_sign() && ku.digital_signature());
    let text = format!("{:?}", parsed.subject_alternative_name().unwrap());
    assert!(
        !text.contains("evil.example")
            && !text.contains("any.node.outpost")
            && !text.contains("root"),
        "{text}"
    );
    assert!(
        parsed
            .extensions()
            .iter()
            .all(|e| e.oid.to_id_string() != "1.3.6.1.4.1.99999.1"),
        "unknown extension copied"
    );
    assert_eq!(role_of(&d).unwrap(), Role::Client("c9".into()));
    // The issued key is the CSR's.
    assert_eq!(
        parsed.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
    );
}

/// Splits a DER SEQUENCE into its content's top-level elements (short and long lengths).
fn der_elements(seq: &[u8]) -> Vec<Vec<u8>> {
    fn header(b: &[u8]) -> (usize, usize) {
        let first = b[1] as usize;
        if first < 0x80 {
            (2, first)
        } else {
            let n = first & 0x7f;
            let len = b[2..2 + n]
                .iter()
                .fold(0usize, |acc, x| (acc << 8) | *x as usize);
            (2 + n, len)
        }
    }
    let (h, len) = header(seq);
    let mut body = &seq[h..h + len];
    let mut out = Vec::new();
    while !body.is_empty() {
        let (h, len) = header(body);
        out.push(body[..h + len].to_vec());
        body = &body[h + len..];
    }
    out
}

fn der_sequence(parts: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    let mut out = vec![0x30];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else if body.len() < 0x100 {
        out.extend([0x81, body.len() as u8]);
    } else {
        out.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
    }
    out.extend(body);
    out
}

#[test]
fn csr_with_a_broken_signature_is_refused() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let csr_der = |pem: &str| {
        rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let (_, mine) = new_key_and_csr("n").unwrap();
    let (_, theirs) = new_key_and_csr("n").unwrap();
    // Well-formed: my request info (my key) with a signature made by another key.
    let mine = der_elements(&csr_der(&mine));
    let theirs = der_elements(&csr_der(&theirs));
    assert_eq!(mine.len(), 3);
    let forged = der_sequence(&[mine[0].clone(), theirs[1].clone(), theirs[2].clone()]);
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_lines(&forged)
    );
    // It parses; only the signature is wrong.
    assert!(
        x509_parser::certification_request::X509CertificationRequest::from_der(&forged).is_ok()
    );
    let err = ca.issue(&pem, &Role::Node(2), &valid()).unwrap_err();
    assert!(matches!(err, CertError::CsrSignature(_)), "{err:?}");
    // The untouched request signs fine, so the splice itself is not what failed.
    let good = der_sequence(&mine);
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_lines(&good)
    );
    ca.issue(&pem, &Role::Node(2), &valid()).unwrap();
    assert!(ca.issue("not a csr", &Role::Node(2), &valid()).is_err());
}

fn base64_lines(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 16 == 0 {
            out.push('\n');
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn role_of_refuses_certificates_outside_our_profiles() {
    // A certificate with no outpost URI at all.
    let key = rcgen::KeyPair::generate().unwrap();
    let plain = rcgen::CertificateParams::new(vec!["host".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert!(role_of(plain.der()).is_err());
    // Two outpost URIs.
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![
        rcgen::SanType::URI("urn:outpost:admin:a".try_into().unwrap()),
        rcgen::SanType::URI("urn:outpost:admin:b".try_into().unwrap()),
    ];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    assert!(role_of(p.self_signed(&key).unwrap().der()).is_err());
    // A client URI with serverAuth.
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        "urn:outpost:client:c".try_into().unwrap(),
    )];
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    assert!(role_of(p.self_signed(&key).unwrap().der()).is_err());
    // A node URI without serverAuth.
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        "urn:outpost:node:3".try_into().unwrap(),
    )];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    assert!(role_of(p.self_signed(&key).unwrap().der()).is_err());
}

#[test]
fn fingerprints_parse_and_print() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let fp = ca.fingerprint();
    assert_eq!(fp, Fingerprint::of_pem(ca.cert_pem()).unwrap());
    let text = fp.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
    let colons: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(colons.join(":").parse::<Fingerprint>().unwrap(), fp);
    for bad in ["", "zz", &"ab".repeat(31)] {
        assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
    }
    let again = CertAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(again.fingerprint(), fp);
    let other = CertAuthority::generate("c2", "x").unwrap();
    assert!(
        CertAuthority::from_pem(ca.cert_pem(), &other.key_pem()).is_err(),
        "mismatched key accepted"
    );
}

#[test]
fn secret_files_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.pem");
    write_secret_file(&p, b"secret").unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(&p).unwrap(), b"secret");
    write_secret_file(&p, b"again").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"again");
    let q = dir.path().join("c.pem");
    write_public_file(&q, b"public").unwrap();
    assert_eq!(
        std::fs::metadata(&q).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn mutual_tls_accepts_this_ca_only_and_checks_names() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let other = CertAuthority::generate("c2", "other").unwrap();
    let node1 = identity(&ca, Role::Node(1));
    let node2 = identity(&ca, Role::Node(2));
    let foreign = identity(&other, Role::Node(2));
    let peer =
        |id: &TlsIdentity| server_config(ca.cert_pem(), id, ClientAuth::Required, &[b"p"]).unwrap();
    let dial = |id: Option<&TlsIdentity>| client_config(ca.cert_pem(), id, &[b"p"]).unwrap();

    let (c, s) =
        handshake(dial(Some(&node2)), peer(&node1), &node_server_name(1)).expect("mutual TLS");
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let client_leaf = &s.peer_certificates().unwrap()[0];
    assert_eq!(role_of(client_leaf).unwrap(), Role::Node(2));

    assert!(
        handshake(dial(Some(&foreign)), peer(&node1), &node_server_name(1)).is_err(),
        "foreign client cert"
    );
    assert!(
        handshake(dial(None), peer(&node1), &node_server_name(1)).is_err(),
        "no client cert under Required"
    );
    assert!(
        handshake(dial(Some(&node2)), peer(&node1), &node_server_name(2)).is_err(),
        "n1 answered as n2"
    );
    let foreign_server =
        server_config(other.cert_pem(), &foreign, ClientAuth::Required, &[b"p"]).unwrap();
    assert!(
        handshake(dial(Some(&node2)), foreign_server, &node_server_name(2)).is_err(),
        "server of another CA"
    );

    let api = server_config(ca.cert_pem(), &node1, ClientAuth::Optional, &[b"h"]).unwrap();
    let (_, s) = handshake(
        client_config(ca.cert_pem(), None, &[b"h"]).unwrap(),
        api.clone(),
        ANY_NODE_SERVER_NAME,
    )
    .expect("anonymous client under Optional");
    assert!(s.peer_certificates().is_none());
    let foreign_admin = identity(&other, Role::Admin("x".into()));
    assert!(
        handshake(
            client_config(ca.cert_pem(), Some(&foreign_admin), &[b"h"]).unwrap(),
            api,
            ANY_NODE_SERVER_NAME
        )
        .is_err(),
        "a presented certificate must still chain to the CA under Optional"
    );
}

#[test]
fn pinned_config_trusts_exactly_the_pinned_ca() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let node1 = identity(&ca, Role::Node(1));
    let api = server_config(ca.cert_pem(), &node1, ClientAuth::Optional, &[b"h"]).unwrap();
    let good = pinned_client_config(ca.fingerprint(), None, &[b"h"]).unwrap();
    let (c, _) = handshake(good, api.clone(), ANY_NODE_SERVER_NAME).expect("right pin");
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));

    // A pinned client may also present its own certificate (a node re-joining).
    let node2 = identity(&ca, Role::Node(2));
    let with_id = pinned_client_config(ca.fingerprint(), Some(&node2), &[b"h"]).unwrap();
    let (_, s) = handshake(with_id, api.clone(), ANY_NODE_SERVER_NAME).expect("pin + client cert");
    assert_eq!(
        role_of(&s.peer_certificates().unwrap()[0]).unwrap(),
        Role::Node(2)
    );

    let other = CertAuthority::generate("c2", "other").unwrap();
    let bad = pinned_client_config(other.fingerprint(), None, &[b"h"]).unwrap();
    let err = handshake(bad, api.clone(), ANY_NODE_SERVER_NAME).unwrap_err();
    assert_eq!(err.by, "client");
    let text = err.to_string();
    assert!(text.contains(&other.fingerprint().to_string()), "{text}");
    assert!(text.contains(&ca.fingerprint().to_string()), "{text}");
    assert!(text.contains("CA fingerprint mismatch: expected"), "{text}");
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(inner)) = &err.error
    else {
        panic!("not a certificate error: {err}");
    };
    let mismatch = inner
        .0
        .downcast_ref::<PinMismatch>()
        .expect("a PinMismatch");
    assert_eq!(mismatch.expected, other.fingerprint());
    assert_eq!(mismatch.presented.len(), 2);
    assert_eq!(mismatch.presented[1], ca.fingerprint());

    // The pin is the only anchor, and the usual checks still apply: the name...
    let good = || pinned_client_config(ca.fingerprint(), None, &[b"h"]).unwrap();
    assert!(handshake(good(), api, &node_server_name(5)).is_err());
    // ...the leaf's signature: a foreign leaf sent along with our CA certificate is refused...
    let foreign_ca = CertAuthority::generate("c1", "site").unwrap();
    let (leaf, key) = foreign_ca
        .issue_with_new_key(&Role::Node(1), &valid())
        .unwrap();
    let impostor = TlsIdentity::from_pem(&leaf, &key, ca.cert_pem()).unwrap();
    let impostor_srv =
        server_config(ca.cert_pem(), &impostor, ClientAuth::Optional, &[b"h"]).unwrap();
    let err = handshake(good(), impostor_srv, ANY_NODE_SERVER_NAME).unwrap_err();
    assert!(
        matches!(
            err.error,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        ),
        "{err}"
    );
    // ...its validity...
    let past = Validity {
        not_before_unix: now() - 10 * 86_400,
        not_after_unix: now() - 86_400,
    };
    let (leaf, key) = ca.issue_with_new_key(&Role::Node(1), &past).unwrap();
    let expired = TlsIdentity::from_pem(&leaf, &key, ca.cert_pem()).unwrap();
    let expired_srv =
        server_config(ca.cert_pem(), &expired, ClientAuth::Optional, &[b"h"]).unwrap();
    let err = handshake(good(), expired_srv, ANY_NODE_SERVER_NAME).unwrap_err();
    assert!(
        matches!(
            err.error,
            rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
        ),
        "{err}"
    );
    // ...and its usage: a client certificate cannot serve.
    let client = identity(&ca, Role::Client("h1".into()));
    let client_srv = server_config(ca.cert_pem(), &client, ClientAuth::Optional, &[b"h"]).unwrap();
    assert!(handshake(good(), client_srv, ANY_NODE_SERVER_NAME).is_err());
}

#[test]
fn client_and_admin_certificates_cannot_serve() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    for role in [Role::Client("h1".into()), Role::Admin("ops".into())] {
        let id = identity(&ca, role.clone());
        let srv = server_config(ca.cert_pem(), &id, ClientAuth::Optional, &[b"h"]).unwrap();
        let err = handshake(
            client_config(ca.cert_pem(), None, &[b"h"]).unwrap(),
            srv,
            ANY_NODE_SERVER_NAME,
        )
        .unwrap_err();
        assert!(
            matches!(
                err.error,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::InvalidPurposeContext { .. }
                )
            ),
            "{role:?}: {err}"
        );
    }
}

#[test]
fn alpn_is_negotiated_from_the_lists_given() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let node = identity(&ca, Role::Node(1));
    let api = server_config(
        ca.cert_pem(),
        &node,
        ClientAuth::Optional,
        &[b"h2", b"http/1.1"],
    )
    .unwrap();
    // (client offer, protocol both ends agree on)
    type Case = (&'static [&'static [u8]], Option<&'static [u8]>);
    let cases: [Case; 3] = [
        (&[b"http/1.1"], Some(b"http/1.1")),
        (&[b"h2", b"http/1.1"], Some(b"h2")),
        (&[], None),
    ];
    for (offer, want) in cases {
        let (c, s) = handshake(
            client_config(ca.cert_pem(), None, offer).unwrap(),
            api.clone(),
            ANY_NODE_SERVER_NAME,
        )
        .unwrap();
        assert_eq!(c.alpn_protocol(), want);
        assert_eq!(s.alpn_protocol(), want);
    }
    // No protocol in common is refused rather than silently speaking something else.
    assert!(
        handshake(
            client_config(ca.cert_pem(), None, &[b"outpost-peer/1"]).unwrap(),
            api,
            ANY_NODE_SERVER_NAME
        )
        .is_err()
    );
}

#[test]
fn only_tls13_is_spoken() {
    // The tests build rustls with TLS 1.2 compiled in, so this checks our configs, not a
    // missing feature.
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let node = identity(&ca, Role::Node(1));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca.cert_pem()).into()).unwrap();
    let old_client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let ours = server_config(ca.cert_pem(), &node, ClientAuth::Optional, &[]).unwrap();
    assert!(handshake(old_client, ours, ANY_NODE_SERVER_NAME).is_err());

    let old_server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(node.chain.clone(), node.key.clone_key())
            .unwrap(),
    );
    for client in [
        client_config(ca.cert_pem(), None, &[]).unwrap(),
        pinned_client_config(ca.fingerprint(), None, &[]).unwrap(),
    ] {
        assert!(handshake(client, old_server.clone(), ANY_NODE_SERVER_NAME).is_err());
    }
}

#[test]
fn identities_refuse_a_key_of_another_certificate() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let (cert, _) = ca.issue_with_new_key(&Role::Node(1), &valid()).unwrap();
    let (_, other_key) = ca.issue_with_new_key(&Role::Node(1), &valid()).unwrap();
    assert!(matches!(
        TlsIdentity::from_pem(&cert, &other_key, ca.cert_pem()),
        Err(CertError::Tls(rustls::Error::InconsistentKeys(_)))
    ));
    assert!(TlsIdentity::from_pem(&cert, "no key", ca.cert_pem()).is_err());
    assert!(TlsIdentity::from_pem(&cert, &other_key, "no ca").is_err());
}

/// A live identity is presented at each new handshake, by servers and by clients alike, so a
/// renewed certificate is used without rebuilding any config.
#[test]
fn live_identities_present_the_replacement_from_the_next_handshake() {
    let ca = CertAuthority::generate("c1", "plant").unwrap();
    let first = identity(&ca, Role::Node(1));
    let second = identity(&ca, Role::Node(1));
    let peer = identity(&ca, Role::Node(2));
    let live = LiveIdentity::new(&first).unwrap();
    // Fresh configs on the other end for every handshake: a resumed TLS 1.3 session shows the
    // certificates of the session it resumes, not a new handshake's.
    let server =
        live_server_config(ca.cert_pem(), live.clone(), ClientAuth::Required, &[]).unwrap();
    let client = || client_config(ca.cert_pem(), Some(&peer), &[]).unwrap();
    let presented = |c: &ClientConnection| c.peer_certificates().unwrap()[0].to_vec();
    let (c, _) = handshake(client(), server.clone(), &node_server_name(1)).unwrap();
    assert_eq!(presented(&c), first.chain[0].to_vec());
    live.replace(&second).unwrap();
    let (c, _) = handshake(client(), server, &node_server_name(1)).unwrap();
    assert_eq!(presented(&c), second.chain[0].to_vec());

    // The client side: the server sees the live client certificate of the moment.
    let peer_server = || server_config(ca.cert_pem(), &peer, ClientAuth::Required, &[]).unwrap();
    let live_client = live_client_config(ca.cert_pem(), live.clone(), &[]).unwrap();
    live.replace(&first).unwrap();
    let (_, s) = handshake(live_client.clone(), peer_server(), &node_server_name(2)).unwrap();
    assert_eq!(
        s.peer_certificates().unwrap()[0].to_vec(),
        first.chain[0].to_vec()
    );
    live.replace(&second).unwrap();
    let (_, s) = handshake(live_client, peer_server(), &node_server_name(2)).unwrap();
    assert_eq!(
        s.peer_certificates().unwrap()[0].to_vec(),
        second.chain[0].to_vec()
    );
    assert_eq!(live.leaf().unwrap().to_vec(), second.chain[0].to_vec());
}
