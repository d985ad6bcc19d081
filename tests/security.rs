//! Trust at the edges: join needs the right token and the pinned CA; the API and peer ports
//! refuse clients without a certificate of this cluster's CA (and the peer port anything
//! that is not a node certificate).

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{now, one_node, serial};

use std::time::Duration;

use hyper::Method;
use outpost::shared::client::{ApiClient, ApiFailure, Endpoint};
use outpost::shared::token::Token;
use outpost_certs::{CertAuthority, Role, TlsIdentity, Validity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refused_for_wrong_token_and_ca_mismatch() {
    let _g = serial();
    let (dir, mut c) = one_node().await;
    let good = c.node_token().expect("token");
    let peer = c.nodes[0].api_addr.clone();
    let join = |token: &str, name: &str| {
        let d = dir.path().join(name);
        let out = c
            .run(&[
                "join",
                "--data-dir",
                d.to_str().unwrap(),
                "--name",
                name,
                "--api-addr",
                "127.0.0.1:1",
                "--peer-addr",
                "127.0.0.1:2",
                "--token",
                token,
                "--peer",
                &peer,
            ])
            .expect("run join");
        (out, d)
    };

    let mut wrong_secret = Token::decode(&good).unwrap();
    wrong_secret.secret = "00".repeat(32);
    let (out, d) = join(&wrong_secret.encode(), "wrongsecret");
    assert!(!out.status.success(), "join with a wrong secret succeeded");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("token"), "stderr should name the token: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line reason: {err}");
    assert!(
        !d.join("node.toml").exists(),
        "a refused join left a node behind"
    );

    let mut wrong_ca = Token::decode(&good).unwrap();
    wrong_ca.ca_sha256 = "ab".repeat(32);
    let (out, d) = join(&wrong_ca.encode(), "wrongca");
    assert!(!out.status.success(), "join with a CA mismatch succeeded");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("fingerprint") || err.contains("ca mismatch"),
        "stderr should name the CA: {err}"
    );
    assert!(!d.join("node.toml").exists());

    // The good token still works, so the refusals above were about the token alone.
    let i = c.join_node().expect("join with the right token");
    c.serve(i).await.unwrap();
    c.wait_voters(2, Duration::from_secs(20))
        .await
        .expect("two voters");
}

fn foreign_admin() -> (String, TlsIdentity) {
    let other = CertAuthority::generate("other-cluster", "other").unwrap();
    let (cert, key) = other
        .issue_with_new_key(
            &Role::Admin("mallory".into()),
            &Validity::days_from(now(), 1),
        )
        .unwrap();
    let id = TlsIdentity::from_pem(&cert, &key, other.cert_pem()).unwrap();
    (other.cert_pem().to_string(), id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_peer_ports_refuse_clients_without_a_cluster_certificate() {
    let _g = serial();
    let (_dir, c) = one_node().await;
    let node = &c.nodes[0];
    let ca_pem = std::fs::read_to_string(node.dir.join("ca.crt")).unwrap();
    let ca = CertAuthority::from_pem(
        &ca_pem,
        &std::fs::read_to_string(node.dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let (cert, key) = ca
        .issue_with_new_key(&Role::Admin("ops".into()), &Validity::days_from(now(), 1))
        .unwrap();
    let admin = TlsIdentity::from_pem(&cert, &key, &ca_pem).unwrap();
    let (_, foreign) = foreign_admin();

    let api = |id: Option<&TlsIdentity>| {
        let config = outpost_certs::client_config(&ca_pem, id, &[b"http/1.1"]).unwrap();
        ApiClient::new(Endpoint::Tls {
            addr: node.api_addr.clone(),
            config,
            server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
        })
    };
    // Control: an admin certificate of this cluster gets an answer.
    let ok: serde_json::Value = api(Some(&admin))
        .call(Method::GET, "/v1/status", None::<&()>)
        .await
        .unwrap();
    assert_eq!(ok["node_id"], 1);
    // No certificate: the TLS session opens (enrollment needs that) but the API says 401.
    let err = api(None)
        .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
        .await
        .unwrap_err();
    let failure = err.downcast_ref::<ApiFailure>().expect("an HTTP answer");
    assert_eq!(failure.status, 401);
    // A certificate from another CA: the handshake is refused, no HTTP answer at all.
    let err = api(Some(&foreign))
        .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
        .await
        .unwrap_err();
    assert!(
        err.downcast_ref::<ApiFailure>().is_none(),
        "foreign cert got an HTTP answer: {err:#}"
    );

    // Peer port: only node certificates of this CA get an answer.
    let ping = |id: Option<TlsIdentity>| {
        let config =
            outpost_certs::client_config(&ca_pem, id.as_ref(), &[outpost_raft::PEER_ALPN]).unwrap();
        let addr = node.peer_addr.clone();
        async move {
            outpost_raft::transport::ping(
                config,
                outpost_certs::node_server_name(1),
                1,
                &addr,
                Duration::from_secs(3),
            )
            .await
        }
    };
    let (cert, key) = ca
        .issue_with_new_key(&Role::Node(99), &Validity::days_from(now(), 1))
        .unwrap();
    let node99 = TlsIdentity::from_pem(&cert, &key, &ca_pem).unwrap();
    assert_eq!(
        ping(Some(node99))
            .await
            .expect("a node certificate is answered"),
        1
    );
    assert!(
        ping(None).await.is_err(),
        "peer port answered a client without a certificate"
    );
    assert!(
        ping(Some(foreign)).await.is_err(),
        "peer port answered a certificate from another CA"
    );
    let (cert, key) = ca
        .issue_with_new_key(&Role::Admin("ops2".into()), &Validity::days_from(now(), 1))
        .unwrap();
    let admin2 = TlsIdentity::from_pem(&cert, &key, &ca_pem).unwrap();
    assert!(
        ping(Some(admin2)).await.is_err(),
        "peer port answered an admin (non-node) certificate"
    );
}
