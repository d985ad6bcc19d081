//! A hostile LAN, through the real binary: every attack the security review tried, each
//! asserting its refusal and then that the cluster still works (all nodes ready, a write
//! commits, disk growth bounded). Connection floods are in `tests/flood.rs`.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{
    exe, local::ca_pem, local::keygen, local::trusting, or_dump, raft_bytes, s, serial, status_of,
};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use hyper::Method;
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::shared::client::{ApiClient, Endpoint};
use outpost_certs::{CertAuthority, Role, TlsIdentity, Validity};

const T: Duration = Duration::from_secs(30);

/// An API client to node `i`: anonymous (`id` None) or with a certificate.
fn tls_client(c: &LocalCluster, i: usize, id: Option<&TlsIdentity>) -> ApiClient {
    let config = outpost_certs::client_config(&ca_pem(c), id, &[b"http/1.1"]).expect("tls config");
    let mut api = ApiClient::new(Endpoint::Tls {
        addr: c.nodes[i].api_addr.clone(),
        config,
        server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
    });
    api.set_timeout(Duration::from_secs(20));
    api
}

fn local_client(c: &LocalCluster, i: usize) -> ApiClient {
    ApiClient::new(Endpoint::Unix(c.nodes[i].dir.join("admin.sock")))
}

async fn three_nodes(root: &Path, opts: LocalOptions) -> LocalCluster {
    LocalCluster::start(root, &exe(), 3, opts)
        .await
        .expect("three-node cluster")
}

/// Every node answers /readyz 200 and a write through each node commits and is read back.
async fn cluster_works(c: &LocalCluster, tag: &str) -> Result<()> {
    for i in 0..c.nodes.len() {
        let deadline = Instant::now() + T;
        loop {
            let api = tls_client(c, i, None);
            match api.call_raw(Method::GET, "/readyz", None::<&()>).await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => bail!("node {i} not ready: {e:#}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let key = format!("after.{tag}.{i}");
        c.cli(i, &["config", "set", &key, "ok"])?;
        let v = c.cli(
            (i + 1) % c.nodes.len(),
            &["config", "get", &key, "--linearizable"],
        )?;
        if v.trim() != "ok" {
            bail!("{key} read back as {v:?}");
        }
    }
    Ok(())
}

fn enroll_body(token_id: &str, secret: &str, hostname: &str, csr: &str) -> serde_json::Value {
    serde_json::json!({
        "token_id": token_id, "secret": secret, "hostname": hostname, "csr_pem": csr,
    })
}

/// 200 enrollments of 1.9 MB (a 950 KB token id, a 1 MB host name, a real CSR) and 200 more
/// of 60 KB and of the right shape with made-up tokens: none is written anywhere, the
/// answers are short, the refusals are counted, and the cluster goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_enrollment_floods_write_nothing() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = three_nodes(dir.path(), LocalOptions::default()).await;
    let r = async {
        let leader = c.leader(T).await?;
        c.wait_reported(T).await?;
        let before: Vec<u64> = c.nodes.iter().map(|n| raft_bytes(&n.dir)).collect();
        let log_before = c.status(leader).await?.last_log_index;
        let (_, csr) = outpost_certs::new_key_and_csr("x")?;
        let huge = enroll_body(
            &"a".repeat(950_000),
            &"0".repeat(64),
            &"h".repeat(1_000_000),
            &csr,
        );
        let shaped = |i: usize| {
            enroll_body(
                &format!("{i:016x}"),
                &"ab".repeat(32),
                &"h".repeat(60_000),
                &csr,
            )
        };
        let unknown = |i: usize| enroll_body(&format!("{i:016x}"), &"ab".repeat(32), "host", &csr);
        let bodies: Vec<serde_json::Value> = (0..200)
            .map(|_| huge.clone())
            .chain((0..100).map(shaped))
            .chain((0..100).map(unknown))
            .collect();
        let bodies = Arc::new(bodies);
        let mut tasks = Vec::new();
        let started = Instant::now();
        for w in 0..16usize {
            let bodies = bodies.clone();
            let api = tls_client(&c, leader, None);
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for body in bodies.iter().skip(w).step_by(16) {
                    match api.call_raw(Method::POST, "/v1/enroll", Some(body)).await {
                        Ok(b) => {
                            seen.push(Err(format!("accepted: {}", String::from_utf8_lossy(&b))))
                        }
                        Err(e) => seen.push(Ok((status_of(&e), format!("{e:#}").len()))),
                    }
                }
                seen
            }));
        }
        let mut statuses = std::collections::BTreeMap::new();
        for t in tasks {
            for r in t.await? {
                let (status, msg_len) = r.map_err(anyhow::Error::msg)?;
                // Connection-level refusals (closed at a cap) carry no status; HTTP answers
                // must be refusals with a short message, never an echo of the input.
                if let Some(code) = status {
                    assert!((400..500).contains(&code), "status {code}");
                    assert!(msg_len < 2048, "an answer of {msg_len} bytes echoes input");
                }
                *statuses.entry(status).or_insert(0u32) += 1;
            }
        }
        println!(
            "enroll flood: {statuses:?} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // The same refusals whatever their mix: 413 for the oversized, 400 for the shapes, 403
        // for unknown tokens, 429 once the source's budget is spent.
        assert!(
            statuses.keys().any(|k| matches!(k, Some(413) | Some(429))),
            "{statuses:?}"
        );

        let log_after = c.status(leader).await?.last_log_index;
        assert!(
            log_after <= log_before + 2,
            "the flood reached the Raft log: {log_before} -> {log_after}"
        );
        for (i, n) in c.nodes.iter().enumerate() {
            let grew = raft_bytes(&n.dir).saturating_sub(before[i]);
            assert!(grew < 64 << 10, "raft.db of node {i} grew {grew} bytes");
        }
        // Once the source's rate budget has refilled, a well-formed enrollment with a made-up
        // token reaches the token check (under load the flood may have been shed entirely at
        // the connection cap and the rate limit) and is refused there: 403, counted.
        let deadline = Instant::now() + T;
        loop {
            let api = tls_client(&c, leader, None);
            match api
                .call_raw(Method::POST, "/v1/enroll", Some(&unknown(9999)))
                .await
            {
                Err(e) if status_of(&e) == Some(403) => break,
                Ok(b) => bail!("a made-up token enrolled: {}", String::from_utf8_lossy(&b)),
                Err(e) if Instant::now() > deadline => bail!("no token-check refusal: {e:#}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let metrics = local_client(&c, leader)
            .call_raw(Method::GET, "/metrics", None::<&()>)
            .await?;
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(
            metrics.contains(
                "outpost_refused_requests_total{route=\"enroll\",reason=\"token_unknown\"}"
            ),
            "{metrics}"
        );
        let audit = c.cli(leader, &["audit", "--json"])?;
        assert!(
            !audit.contains("client.enroll"),
            "refused enrollments were audited"
        );
        cluster_works(&c, "enroll-flood").await
    }
    .await;
    or_dump(&c, r);
}

/// A node token is single-use by default and short-lived; tokens are listed without their
/// secret and can be revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tokens_are_single_use_listed_and_revocable() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = LocalCluster::start(dir.path(), &exe(), 1, LocalOptions::default())
        .await
        .expect("one node");
    let r = async {
        let made = c.run(&[
            "token",
            "create",
            "--kind",
            "node",
            "--data-dir",
            s(&c.nodes[0].dir),
        ])?;
        assert!(made.status.success());
        let said = String::from_utf8_lossy(&made.stderr);
        assert!(said.contains("1 use"), "the CLI says what it made: {said}");
        let token = String::from_utf8_lossy(&made.stdout).trim().to_string();
        let join = |name: &str| {
            let d = dir.path().join(name);
            c.run(&[
                "join",
                "--data-dir",
                s(&d),
                "--name",
                name,
                "--api-addr",
                "127.0.0.1:1",
                "--peer-addr",
                "127.0.0.1:2",
                "--token",
                &token,
                "--peer",
                &c.nodes[0].api_addr,
            ])
        };
        let first = join("j1")?;
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let second = join("j2")?;
        assert!(!second.status.success(), "a single-use token joined twice");
        assert!(String::from_utf8_lossy(&second.stderr).contains("no uses left"));

        let list = c.cli(0, &["token", "list", "--json"])?;
        let id = outpost::shared::token::Token::decode(&token)?.id;
        let secret = outpost::shared::token::Token::decode(&token)?.secret;
        assert!(list.contains(&id) && !list.contains(&secret), "{list}");
        let tokens: Vec<serde_json::Value> = serde_json::from_str(&list)?;
        let t = tokens
            .iter()
            .find(|t| t["id"] == id.as_str())
            .context("listed")?;
        assert_eq!(t["uses_left"], 0);

        let client_token = c.cli(0, &["token", "create", "--kind", "client"])?;
        let client_token = client_token.trim();
        let cid = outpost::shared::token::Token::decode(client_token)?.id;
        c.cli(0, &["token", "revoke", &cid])?;
        let state = dir.path().join("agent");
        let out = c.run(&[
            "agent",
            "enroll",
            "--token",
            client_token,
            "--server",
            &c.nodes[0].api_addr,
            "--state-dir",
            s(&state),
        ])?;
        assert!(!out.status.success(), "a revoked token enrolled");
        assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// After `node remove 3`, node 3 can no longer write: not through its local socket (the
/// leader refuses what it forwards) and not with its certificate on another node's API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_cannot_write() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = three_nodes(dir.path(), LocalOptions::default()).await;
    let r = async {
        let leader = c.leader(T).await?;
        let victim = (leader + 1) % 3;
        let other = (leader + 2) % 3;
        let victim_id = c.status(victim).await?.node_id;
        c.cli(leader, &["node", "remove", &victim_id.to_string()])?;
        c.wait_for(leader, T, "two members", |s| s.members.len() == 2)
            .await?;
        // Its own socket: the write must not land.
        let out = c.run(&[
            "config",
            "set",
            "removed.wrote",
            "yes",
            "--data-dir",
            s(&c.nodes[victim].dir),
        ])?;
        assert!(!out.status.success(), "a removed node's write was accepted");
        let got = c.run(&[
            "config",
            "get",
            "removed.wrote",
            "--data-dir",
            s(&c.nodes[leader].dir),
        ])?;
        assert!(
            !got.status.success(),
            "the removed node's write landed on the leader"
        );
        // Its certificate on the API of a member: refused.
        let cert = std::fs::read_to_string(c.nodes[victim].dir.join("node.crt"))?;
        let key = std::fs::read_to_string(c.nodes[victim].dir.join("node.key"))?;
        let id = TlsIdentity::from_pem(&cert, &key, &ca_pem(&c))?;
        let err = tls_client(&c, other, Some(&id))
            .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
            .await
            .expect_err("a removed node's certificate was served");
        assert_eq!(status_of(&err), Some(403), "{err:#}");
        cluster_works_on(&c, &[leader, other], "removed").await
    }
    .await;
    or_dump(&c, r);
}

async fn cluster_works_on(c: &LocalCluster, nodes: &[usize], tag: &str) -> Result<()> {
    for &i in nodes {
        let key = format!("after.{tag}.{i}");
        c.cli(i, &["config", "set", &key, "ok"])?;
        let v = c.cli(i, &["config", "get", &key, "--linearizable"])?;
        if v.trim() != "ok" {
            bail!("{key} read back as {v:?}");
        }
    }
    Ok(())
}

/// `admin revoke NAME` ends the admin certificates of that name on every node; a new one
/// issued afterwards works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_admin_certificates_end() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = three_nodes(dir.path(), LocalOptions::default()).await;
    let r = async {
        let pem = ca_pem(&c);
        let ca = CertAuthority::from_pem(
            &pem,
            &std::fs::read_to_string(c.nodes[0].dir.join("ca.key"))?,
        )?;
        let now = outpost_raft::now_ms() / 1000;
        let (cert, key) =
            ca.issue_with_new_key(&Role::Admin("ops".into()), &Validity::days_from(now, 1))?;
        let ops = TlsIdentity::from_pem(&cert, &key, &pem)?;
        for i in 0..3 {
            tls_client(&c, i, Some(&ops))
                .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
                .await?;
        }
        let out = c.cli(0, &["admin", "revoke", "ops"])?;
        assert!(out.contains("revoked"), "{out}");
        for i in 0..3 {
            let deadline = Instant::now() + T;
            loop {
                match tls_client(&c, i, Some(&ops))
                    .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
                    .await
                {
                    Err(e) if status_of(&e) == Some(403) => break,
                    _ if Instant::now() > deadline => {
                        bail!("node {i} still serves a revoked admin")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        // A certificate issued after the revocation (its issue time is later) works.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let now = outpost_raft::now_ms() / 1000;
        let (cert, key) =
            ca.issue_with_new_key(&Role::Admin("ops".into()), &Validity::days_from(now, 1))?;
        let fresh = TlsIdentity::from_pem(&cert, &key, &pem)?;
        tls_client(&c, 1, Some(&fresh))
            .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
            .await
            .context("a certificate issued after the revocation")?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// A client renews only in the last third of its certificate's life and only once: the old
/// serial is retired (it ends when the new one is confirmed), a second renewal is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_renewal_mints_one_certificate_and_retires_the_old() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        env: vec![("OUTPOST_CLIENT_CERT_SECS".into(), "24".into())],
        ..LocalOptions::default()
    };
    let c = LocalCluster::start(dir.path(), &exe(), 1, opts)
        .await
        .expect("one node");
    let r = async {
        let token = c.cli(0, &["token", "create", "--kind", "client"])?;
        let state = dir.path().join("agent");
        let out = c.run(&[
            "agent",
            "enroll",
            "--token",
            token.trim(),
            "--server",
            &c.nodes[0].api_addr,
            "--state-dir",
            s(&state),
        ])?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let enrolled = Instant::now();
        let identity = |st: &Path| -> Result<TlsIdentity> {
            Ok(TlsIdentity::from_pem(
                &std::fs::read_to_string(st.join("client.crt"))?,
                &std::fs::read_to_string(st.join("client.key"))?,
                &std::fs::read_to_string(st.join("ca.crt"))?,
            )?)
        };
        let old = identity(&state)?;
        let (_, csr) = outpost_certs::new_key_and_csr("x")?;
        let renew = |id: &TlsIdentity| {
            let api = tls_client(&c, 0, Some(id));
            let body = serde_json::json!({ "csr_pem": csr });
            async move {
                api.call::<serde_json::Value>(Method::POST, "/v1/agent/renew", Some(&body))
                    .await
            }
        };
        // Too early: the certificate is fresh.
        let err = renew(&old).await.expect_err("renewed a fresh certificate");
        assert_eq!(status_of(&err), Some(409), "{err:#}");
        // In the window: the agent's renewal is cut off after the cluster committed it (the
        // agent had written its new key and CSR first, as it does, then died before it saved
        // the certificate).
        let due = enrolled + Duration::from_secs(17);
        tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
        let (pending_key, pending_csr) = outpost_certs::new_key_and_csr("outpost-agent")?;
        std::fs::write(state.join("client.key.new"), pending_key.as_bytes())?;
        std::fs::write(state.join("client.csr.new"), &pending_csr)?;
        let body = serde_json::json!({ "csr_pem": pending_csr });
        tls_client(&c, 0, Some(&old))
            .call::<serde_json::Value>(Method::POST, "/v1/agent/renew", Some(&body))
            .await
            .context("renewal in the window")?;
        // Another key cannot ride on the retired certificate ...
        let err = renew(&old)
            .await
            .expect_err("a second key renewed on the old certificate");
        assert_eq!(status_of(&err), Some(409), "{err:#}");
        // ... but the agent, asking again with its pending key, completes its renewal.
        let synced = c.run(&["agent", "sync", "--once", "--state-dir", s(&state)])?;
        let text = String::from_utf8_lossy(&synced.stdout);
        assert!(
            text.contains("certificate renewed"),
            "{text} {}",
            String::from_utf8_lossy(&synced.stderr)
        );
        let new = identity(&state)?;
        assert!(!state.join("client.csr.new").exists());
        // The old certificate cannot renew again ...
        let err = renew(&old)
            .await
            .expect_err("a second renewal with the old certificate");
        assert_eq!(status_of(&err), Some(409), "{err:#}");
        // ... and still works until the new one is used, which the agent's next sync does.
        tls_client(&c, 0, Some(&old))
            .call::<serde_json::Value>(Method::GET, "/v1/agent/config", None::<&()>)
            .await
            .context("the old certificate within its grace")?;
        let synced = c.run(&["agent", "sync", "--once", "--state-dir", s(&state)])?;
        assert!(
            synced.status.success(),
            "{}",
            String::from_utf8_lossy(&synced.stderr)
        );
        let err = tls_client(&c, 0, Some(&old))
            .call::<serde_json::Value>(Method::GET, "/v1/agent/config", None::<&()>)
            .await
            .expect_err("the retired certificate still works after the new one was confirmed");
        assert_eq!(status_of(&err), Some(403), "{err:#}");
        tls_client(&c, 0, Some(&new))
            .call::<serde_json::Value>(Method::GET, "/v1/agent/config", None::<&()>)
            .await
            .context("the renewed certificate")?;
        // And the renewed one may not renew again within the hour.
        let err = renew(&new)
            .await
            .expect_err("renewed twice within the hour");
        assert!(matches!(status_of(&err), Some(409) | Some(429)), "{err:#}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// On the local socket, a hand-written bundle commit without a valid signature is refused,
/// and so is a correctly signed one created far in the future; a good bundle still imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_future_bundles_are_refused_on_the_local_socket() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let key = keygen(&root, "release");
    let opts = trusting(&key);
    let c = LocalCluster::start(&root.join("cluster"), &exe(), 1, opts)
        .await
        .expect("one node");
    let r = async {
        // A real bundle puts a config payload's blob in the store.
        std::fs::write(root.join("cfg.toml"), "[global]\nsite = \"a\"\n")?;
        std::fs::write(
            root.join("spec.toml"),
            "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"cfg.toml\"\nkind = \"config\"\nname = \"cfg\"\n",
        )?;
        let bundle = root.join("b.obundle");
        let made = c.run(&["bundle", "create", "--spec", s(&root.join("spec.toml")), "--key", s(&key), "-o", s(&bundle)])?;
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        c.cli(0, &["bundle", "import", s(&bundle)])?;

        let cfg = std::fs::read(root.join("cfg.toml"))?;
        let now = outpost_raft::now_ms() / 1000;
        let manifest = |version: u64, created: i64, config: &str| outpost_bundles::Manifest {
            format: 1,
            id: format!("{:032x}", version),
            bundle_type: outpost_bundles::BundleType::Content,
            channel: Some("site".into()),
            version,
            created,
            expires: created + 30 * 86_400,
            targets: vec!["any".into()],
            payloads: vec![outpost_bundles::PayloadEntry {
                name: "cfg".into(),
                kind: outpost_bundles::PayloadKind::Config,
                size: config.len() as u64,
                sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(config.as_bytes())),
            }],
            trust: None,
            channel_resets: Default::default(),
        };
        let cfg = String::from_utf8(cfg)?;
        let signing = outpost_bundles::load_signing_key(&key)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let post = |m: &outpost_bundles::Manifest, signed: bool| {
            let bytes = outpost_bundles::manifest_bytes(m).expect("manifest bytes");
            let entry = if signed {
                outpost_bundles::sign_manifest(&signing, m.bundle_type, &bytes)
            } else {
                outpost_bundles::SignatureEntry {
                    key_id: "nobody".into(),
                    signature: "00".repeat(64),
                }
            };
            let sigs = outpost_bundles::SignatureDocument { format: 1, signatures: vec![entry] };
            let body = serde_json::json!({
                "manifest": b64.encode(&bytes),
                "signatures": b64.encode(serde_json::to_vec(&sigs).expect("json")),
            });
            let api = local_client(&c, 0);
            async move { api.call::<serde_json::Value>(Method::POST, "/v1/bundles", Some(&body)).await }
        };
        let err = post(&manifest(2, now, &cfg), false).await.expect_err("unsigned bundle committed");
        assert_eq!(status_of(&err), Some(400), "{err:#}");
        let err = post(&manifest(3, 1 << 40, &cfg), true).await.expect_err("future bundle committed");
        assert!(format!("{err:#}").contains("later than the cluster time floor"), "{err:#}");
        let ctx: serde_json::Value = local_client(&c, 0)
            .call(Method::GET, "/v1/bundles/context", None::<&()>)
            .await?;
        assert!(ctx["time_floor"].as_i64().unwrap_or(i64::MAX) < now + 3600, "{ctx}");
        // A correctly signed bundle of now is still accepted.
        post(&manifest(4, now, &cfg), true).await.context("a good signed commit")?;
        // Handlers cannot be slipped in by config set either.
        let out = c.run(&["config", "set", "agent.handler.artifact", "true", "--data-dir", s(&c.nodes[0].dir)])?;
        assert!(!out.status.success());
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// /readyz tells the truth: with two of three nodes gone, the survivor is alive but not
/// ready, and `status` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_without_a_committing_cluster() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = three_nodes(dir.path(), LocalOptions::default()).await;
    let r = async {
        let leader = c.leader(T).await?;
        let survivor = (leader + 1) % 3;
        for i in 0..3 {
            if i != survivor {
                c.kill9(i);
            }
        }
        let deadline = Instant::now() + T;
        loop {
            let api = tls_client(&c, survivor, None);
            let ready = api.call_raw(Method::GET, "/readyz", None::<&()>).await;
            let alive = api.call_raw(Method::GET, "/healthz", None::<&()>).await;
            match (ready, alive) {
                (Err(e), Ok(_)) if status_of(&e) == Some(503) => break,
                _ if Instant::now() > deadline => bail!("the survivor still says ready"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let st = c.cli(survivor, &["status", "--json"])?;
        let st: serde_json::Value = serde_json::from_str(&st)?;
        assert_eq!(st["ready"]["ready"], false, "{st}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
