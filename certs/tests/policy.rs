//! Certificate profiles and TLS policy, exercised with in-memory handshakes (no sockets).

use std::sync::Arc;

use outpost_certs::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

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

/// Pumps TLS records between the two ends until both finish or one refuses.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    name: &str,
) -> Result<(ClientConnection, ServerConnection), String> {
    let mut c =
        ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap()).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    for _ in 0..20 {
        while c.wants_write() {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
        }
        while s.wants_write() {
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    Err("handshake did not finish".into())
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
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca
        .issue(&csr, &Role::Client("c9".into()), &valid())
        .unwrap();
    let d = der(&cert);
    let (_, parsed) = x509_parser::parse_x509_certificate(&d).unwrap();
    assert!(!parsed.is_ca(), "leaf got CA rights from its CSR");
    let text = format!("{:?}", parsed.subject_alternative_name().unwrap());
    assert!(
        !text.contains("evil.example") && !text.contains("any.node.outpost"),
        "{text}"
    );
    assert_eq!(role_of(&d).unwrap(), Role::Client("c9".into()));
    // The issued key is the CSR's.
    assert_eq!(
        parsed.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
    );
}

#[test]
fn csr_with_a_broken_signature_is_refused() {
    let ca = CertAuthority::generate("c1", "site").unwrap();
    let (_, csr) = new_key_and_csr("n").unwrap();
    let mut bytes = {
        use rustls::pki_types::CertificateSigningRequestDer;
        use rustls::pki_types::pem::PemObject;
        CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_lines(&bytes)
    );
    assert!(ca.issue(&pem, &Role::Node(2), &valid()).is_err());
    assert!(ca.issue("not a csr", &Role::Node(2), &valid()).is_err());
}

fn base64_lines(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
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
    handshake(good, api.clone(), ANY_NODE_SERVER_NAME).expect("right pin");

    let other = CertAuthority::generate("c2", "other").unwrap();
    let bad = pinned_client_config(other.fingerprint(), None, &[b"h"]).unwrap();
    let err = handshake(bad, api.clone(), ANY_NODE_SERVER_NAME).unwrap_err();
    assert!(err.contains(&other.fingerprint().to_string()), "{err}");
    assert!(err.contains(&ca.fingerprint().to_string()), "{err}");

    // The pin is the only anchor, and the usual checks still apply (here: the name).
    let good = pinned_client_config(ca.fingerprint(), None, &[b"h"]).unwrap();
    assert!(handshake(good, api, &node_server_name(5)).is_err());
}
