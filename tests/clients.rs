//! Clients through the real binary: enrollment, configuration by scope, failover between
//! nodes, revocation on every node, token limits, and isolation between clients.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, or_dump, run_ok, serial};

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};

/// `outpost agent sync --once` for the agent in `state`; its stdout.
fn sync(c: &LocalCluster, state: &Path) -> Result<String> {
    run_ok(
        c,
        &[
            "agent",
            "sync",
            "--once",
            "--state-dir",
            &state.to_string_lossy(),
        ],
    )
}

fn config_json(state: &Path) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        state.join("config.json"),
    )?)?)
}

fn client_id(state: &Path) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("agent.json"))?)?;
    Ok(v["client_id"].as_str().context("client_id")?.to_string())
}

/// Retries `f` until it succeeds or `timeout` passes (followers apply a commit a moment later).
fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_enroll_sync_fail_over_and_are_revoked_everywhere() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, LocalOptions::default())
        .await
        .expect("cluster");
    let r = async {
        let token = c
            .cli(
                0,
                &["token", "create", "--kind", "client", "--group", "lab"],
            )?
            .trim()
            .to_string();
        c.cli(0, &["config", "set", "ntp", "10.0.0.1"])?;
        c.cli(0, &["config", "set", "ntp", "10.9.9.9", "--group", "lab"])?;
        c.cli(0, &["config", "set", "banner", "welcome"])?;
        c.cli(0, &["config", "set", "banner", "other", "--group", "other"])?;

        // Enroll through node 2 only; the agent learns every member.
        let a = dir.path().join("agent-a");
        let servers: Vec<String> = c.nodes.iter().map(|n| n.api_addr.clone()).collect();
        run_ok(
            &c,
            &[
                "agent",
                "enroll",
                "--token",
                &token,
                "--server",
                &servers[1],
                "--state-dir",
                a.to_str().unwrap(),
                "--hostname",
                "host-a",
            ],
        )?;
        let id_a = client_id(&a)?;
        let agent_file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.join("agent.json"))?)?;
        assert_eq!(
            agent_file["servers"].as_array().map(|s| s.len()),
            Some(3),
            "{agent_file}"
        );
        sync(&c, &a)?;
        let cfg = config_json(&a)?;
        assert_eq!(cfg["ntp"], "10.9.9.9", "group beats global: {cfg}");
        // The node the agent synced with reports when its certificate ends (status and
        // /metrics); every node reports the CA's and its own.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let mut client_seen = 0;
        for i in 0..3 {
            let e = c.status(i).await?.cert_expiry.context("cert_expiry")?;
            assert!(
                e.ca.is_some_and(|t| t > now) && e.node.is_some_and(|t| t > now),
                "{e:?}"
            );
            if e.client.is_some_and(|t| t > now) {
                client_seen += 1;
                let metrics = metrics(&c, i).await?;
                assert!(
                    metrics.contains("outpost_cert_expiry_seconds{kind=\"client\"}"),
                    "{metrics}"
                );
            }
        }
        assert!(client_seen >= 1, "no node reports the agent's certificate");

        // The inventory is this machine's own, uploaded once and then only when it changes.
        let inv: serde_json::Value =
            serde_json::from_str(&c.cli(0, &["inventory", "show", &id_a, "--json"])?)?;
        let facts = &inv["inventory"]["facts"];
        let os_id = std::fs::read_to_string("/etc/os-release")?
            .lines()
            .find_map(|l| {
                l.strip_prefix("ID=")
                    .map(|v| v.trim_matches('"').to_string())
            })
            .context("ID in /etc/os-release")?;
        assert_eq!(facts["os"]["id"], os_id.as_str(), "{facts}");
        let names: Vec<&str> = facts["network"]
            .as_array()
            .context("network")?
            .iter()
            .filter_map(|n| n["name"].as_str())
            .collect();
        for iface in std::fs::read_dir("/sys/class/net")? {
            let iface = iface?.file_name().to_string_lossy().to_string();
            assert!(
                names.contains(&iface.as_str()),
                "interface {iface} missing from {names:?}"
            );
        }
        assert!(facts["memory_bytes"].as_u64().unwrap_or(0) > 0, "{facts}");
        let again = sync(&c, &a)?;
        assert!(again.contains("inventory unchanged"), "{again}");
        let found = c.cli(
            0,
            &["inventory", "query", &format!("os.id={os_id}"), "--json"],
        )?;
        assert!(found.contains(&id_a), "{found}");
        let none = c.cli(0, &["inventory", "query", "os.id=no-such-os", "--json"])?;
        assert!(!none.contains(&id_a), "{none}");
        if let Some(pkg) = facts["packages"]
            .as_array()
            .and_then(|p| p.first())
            .and_then(|p| p["name"].as_str())
        {
            let by_pkg = c.cli(
                0,
                &[
                    "inventory",
                    "query",
                    &format!("packages.name={pkg}"),
                    "--group",
                    "lab",
                ],
            )?;
            assert!(by_pkg.contains(&id_a), "{by_pkg}");
        }
        assert_eq!(
            cfg["banner"], "welcome",
            "another group's value must not leak: {cfg}"
        );

        c.cli(1, &["config", "set", "ntp", "192.0.2.1", "--client", &id_a])?;
        eventually(Duration::from_secs(5), || {
            sync(&c, &a)?;
            let cfg = config_json(&a)?;
            if cfg["ntp"] != "192.0.2.1" {
                bail!("client scope not applied yet: {cfg}");
            }
            Ok(())
        })?;
        let effective = c.cli(0, &["config", "effective", "--client", &id_a])?;
        assert!(effective.contains("192.0.2.1"), "{effective}");

        // The node it used first dies: the agent syncs through another.
        let agent: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.join("agent.json"))?)?;
        let first = agent["servers"][0].as_str().context("servers")?.to_string();
        let i = c
            .nodes
            .iter()
            .position(|n| n.api_addr == first)
            .context("first server is a node")?;
        c.kill9(i);
        let out = sync(&c, &a)?;
        assert!(!out.contains(&first), "synced with the dead node? {out}");
        c.serve(i).await?;
        c.wait_ready(i, Duration::from_secs(20)).await?;

        // Listing shows it; last seen arrives within a few flushes.
        let listed: serde_json::Value =
            serde_json::from_str(&c.cli(0, &["client", "list", "--json"])?)?;
        let row = listed
            .as_array()
            .context("list")?
            .iter()
            .find(|r| r["id"] == id_a.as_str())
            .context("listed")?
            .clone();
        assert_eq!(row["hostname"], "host-a");
        assert_eq!(row["groups"], serde_json::json!(["lab"]));
        assert_eq!(row["revoked"], false);
        eventually(Duration::from_secs(15), || {
            let v: serde_json::Value =
                serde_json::from_str(&c.cli(0, &["client", "show", &id_a, "--json"])?)?;
            if v["last_seen"].is_null() {
                bail!("no last_seen yet");
            }
            Ok(())
        })?;

        // A second client cannot reach the first one's records with its certificate.
        let b = dir.path().join("agent-b");
        run_ok(
            &c,
            &[
                "agent",
                "enroll",
                "--token",
                &token,
                "--server",
                &servers[0],
                "--state-dir",
                b.to_str().unwrap(),
            ],
        )?;
        let b_cert = b.join("client.crt");
        let b_key = b.join("client.key");
        let b_ca = b.join("ca.crt");
        for path in [
            vec!["client", "show", id_a.as_str()],
            vec!["client", "list"],
            vec!["status"],
        ] {
            let mut args: Vec<&str> = path.clone();
            args.extend([
                "--server",
                &servers[0],
                "--cert",
                b_cert.to_str().unwrap(),
                "--key",
                b_key.to_str().unwrap(),
                "--ca",
                b_ca.to_str().unwrap(),
            ]);
            let out = c.run(&args)?;
            assert!(!out.status.success(), "client certificate reached {path:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("may not use the admin API"), "{path:?}: {err}");
        }

        // Revocation: refused on every node once it commits.
        c.cli(2, &["client", "revoke", &id_a])?;
        for s in &servers {
            let only = dir
                .path()
                .join(format!("only-{}", s.replace([':', '.'], "-")));
            copy_state(&a, &only, s)?;
            let err = eventually(Duration::from_secs(2), || {
                let out = c.run(&[
                    "agent",
                    "sync",
                    "--once",
                    "--state-dir",
                    only.to_str().unwrap(),
                ])?;
                if out.status.success() {
                    bail!("revoked client still served by {s}");
                }
                Ok(String::from_utf8_lossy(&out.stderr).to_string())
            })?;
            assert!(err.contains("revoked"), "{s}: {err}");
        }
        // The other client is untouched.
        sync(&c, &b)?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// A copy of an agent's state that knows only `server`.
fn copy_state(from: &Path, to: &Path, server: &str) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for f in ["client.key", "client.crt", "ca.crt"] {
        std::fs::copy(from.join(f), to.join(f))?;
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("agent.json"))?)?;
    v["servers"] = serde_json::json!([server]);
    std::fs::write(to.join("agent.json"), serde_json::to_vec(&v)?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_up_and_expired_client_tokens_are_refused() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(dir.path(), &exe(), 1, LocalOptions::default())
        .await
        .expect("cluster");
    let server = c.nodes[0].api_addr.clone();
    let once = c
        .cli(0, &["token", "create", "--kind", "client", "--uses", "1"])
        .unwrap()
        .trim()
        .to_string();
    let enroll = |token: &str, name: &str| {
        let s = dir.path().join(name);
        c.run(&[
            "agent",
            "enroll",
            "--token",
            token,
            "--server",
            &server,
            "--state-dir",
            s.to_str().unwrap(),
        ])
        .unwrap()
    };
    assert!(enroll(&once, "first").status.success());
    let out = enroll(&once, "second");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no uses left"), "{err}");
    assert!(!dir.path().join("second/agent.json").exists());

    let short = c
        .cli(0, &["token", "create", "--kind", "client", "--ttl", "1s"])
        .unwrap()
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let out = enroll(&short, "late");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expired"), "{err}");

    // A node token is not a client token.
    let node_token = c
        .cli(0, &["token", "create", "--kind", "node"])
        .unwrap()
        .trim()
        .to_string();
    let out = enroll(&node_token, "wrongkind");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("client token"));
}

/// `outpost bench sync` at a small scale through the real binary: its simulated agents
/// enroll and sync (a connection per sync) without an error, and it reports every member's
/// resident memory, which each node also shows in `/metrics` and `outpost status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sync_syncs_without_errors_and_reports_every_nodes_memory() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalOptions {
        env: vec![("OUTPOST_ENROLL_RATE".into(), "100".into())],
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, opts)
        .await
        .expect("cluster");
    let r = async {
        c.wait_voters(3, Duration::from_secs(30)).await?;
        let out = c.cli(
            0,
            &[
                "bench",
                "sync",
                "--clients",
                "12",
                "--seconds",
                "3",
                "--interval",
                "1s",
                "--json",
            ],
        )?;
        let report: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("bench sync output: {out}"))?;
        assert_eq!(report["errors"], 0, "{report}");
        assert!(report["syncs"].as_u64().is_some_and(|n| n >= 1), "{report}");
        assert_eq!(report["requests_per_sync"], 1, "{report}");
        // Each agent syncs about three times: its later syncs resume its TLS session.
        assert_eq!(report["first_syncs"]["syncs"], 12, "{report}");
        assert!(
            report["tls_handshakes"]["resumed"]
                .as_u64()
                .is_some_and(|n| n >= 12),
            "{report}"
        );
        let rss = report["node_rss"].as_array().context("node_rss")?;
        assert_eq!(rss.len(), 3, "{report}");
        for n in rss {
            assert!(n["max_bytes"].as_u64().is_some_and(|b| b > 0), "{report}");
        }

        let rss = counter(&metrics(&c, 1).await?, "outpost_process_resident_bytes")?;
        assert!(rss > 0, "resident bytes {rss}");
        let status = c.cli(2, &["status"])?;
        assert!(status.contains("resident memory"), "{status}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// `outpost bench rollout` at a small scale through the real binary (it starts its own
/// three-node cluster): plan and status count every client, and the three-phase rollout to
/// the simulated agents walks its phases (audited as the leader's steps) to done.
#[test]
fn bench_rollout_walks_its_phases_to_done() {
    let _g = serial();
    let mut child = std::process::Command::new(exe())
        .args([
            "bench",
            "rollout",
            "--clients",
            "24",
            "--agents",
            "16",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting outpost bench rollout");
    // Its output is small (one JSON line, a few warnings): the pipes do not fill.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("waiting for the bench").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench rollout did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("the bench's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench rollout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect(&stdout);
    assert_eq!(report["plan_count"], 24, "{report}");
    assert_eq!(report["status_clients"], 24, "{report}");
    assert_eq!(report["agents"], 16, "{report}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s[0].as_str())
        .collect();
    assert_eq!(
        steps,
        ["open phase 2", "open phase 3", "finish"],
        "{report}"
    );
    assert!(
        report["create_to_done_s"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
}

/// Node `i`'s `/metrics` text, read over its local socket (no TLS handshake).
async fn metrics(c: &LocalCluster, i: usize) -> Result<String> {
    let raw = outpost::shared::client::local_client(&c.nodes[i].dir)
        .call_raw(hyper::Method::GET, "/metrics", None::<&()>)
        .await?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// The value of the sample `name` (labels included, as printed) in a `/metrics` text.
fn counter(metrics: &str, name: &str) -> Result<u64> {
    let line = format!("{name} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no {name} in {metrics}"))
}

/// Node `i`'s completed API handshakes (full, resumed), from its `/metrics`.
async fn handshakes(c: &LocalCluster, i: usize) -> Result<(u64, u64)> {
    let metrics = metrics(c, i).await?;
    let count = |kind: &str| {
        counter(
            &metrics,
            &format!("outpost_api_tls_handshakes_total{{kind=\"{kind}\"}}"),
        )
    };
    Ok((count("full")?, count("resumed")?))
}

/// `outpost agent run` keeps its TLS session from one sync to the next: after the first, a
/// sync resumes with the node's ticket (no certificate signatures). A resumed session carries
/// the certificate of its first handshake, which rustls does not check again: a node refuses
/// one whose certificate has expired since, where a full handshake would have been refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_resume_their_tls_session_and_an_expired_certificate_cannot() {
    use outpost::shared::client::{ApiClient, Endpoint};
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(dir.path(), &exe(), 1, LocalOptions::default())
        .await
        .expect("cluster");
    let r = async {
        let token = c
            .cli(0, &["token", "create", "--kind", "client"])?
            .trim()
            .to_string();
        let state = dir.path().join("agent");
        let state_arg = state.to_string_lossy().to_string();
        run_ok(
            &c,
            &[
                "agent",
                "enroll",
                "--token",
                &token,
                "--server",
                &c.nodes[0].api_addr,
                "--state-dir",
                &state_arg,
                "--hostname",
                "host-r",
            ],
        )?;
        let before = handshakes(&c, 0).await?;
        let mut agent = std::process::Command::new(exe())
            .args(["agent", "run", "--interval", "1s", "--state-dir", &state_arg])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let resumed = loop {
            let now = handshakes(&c, 0).await?;
            if now.1 >= before.1 + 2 || Instant::now() >= deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let _ = agent.kill();
        let _ = agent.wait();
        assert!(
            resumed.1 >= before.1 + 2,
            "agent run's later syncs did not resume: handshakes (full, resumed) {before:?} -> {resumed:?}"
        );
        // `outpost status` says it too (the CLI talks over the local socket: no handshake).
        let status = c.cli(0, &["status"])?;
        let shown = status
            .lines()
            .find_map(|l| l.strip_prefix("API TLS handshakes since start: "))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        // (A sync may have resumed between the count above and the agent's end.)
        assert!(shown.is_some_and(|n| n >= resumed.1), "{resumed:?} {status}");

        // An admin certificate that ends in two seconds: a full handshake, then a resumption
        // once it has expired.
        let dd = outpost::shared::datadir::DataDir::new(&c.nodes[0].dir);
        let ca_pem = std::fs::read_to_string(dd.ca_cert())?;
        let ca = outpost_certs::CertAuthority::from_pem(&ca_pem, &std::fs::read_to_string(dd.ca_key())?)?;
        let now = outpost_raft::now_ms() / 1000;
        let validity = outpost_certs::Validity {
            not_before_unix: now - 60,
            not_after_unix: now + 2,
        };
        let (cert, key) =
            ca.issue_with_new_key(&outpost_certs::Role::Admin("short".into()), &validity)?;
        let id = outpost_certs::TlsIdentity::from_pem(&cert, &key, &ca_pem)?;
        let tls = outpost_certs::client_config(&ca_pem, Some(&id), &[b"http/1.1"])?;
        let client = || {
            let mut client = ApiClient::new(Endpoint::Tls {
                addr: c.nodes[0].api_addr.clone(),
                config: tls.clone(),
                server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
            });
            client.set_timeout(Duration::from_secs(5));
            client
        };
        client()
            .call_raw(hyper::Method::GET, "/v1/status", None::<&()>)
            .await
            .context("the short certificate, still valid")?;
        let expired = handshakes(&c, 0).await?;
        while outpost_raft::now_ms() / 1000 <= validity.not_after_unix {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let refused = client()
            .call_raw(hyper::Method::GET, "/v1/status", None::<&()>)
            .await;
        let after = handshakes(&c, 0).await?;
        assert!(
            refused.is_err(),
            "a resumed session with an expired certificate was served: {:?}",
            refused.map(|b| String::from_utf8_lossy(&b).to_string())
        );
        // Refused on resumed sessions only (the client retries once on a fresh connection,
        // resuming again with the ticket the refused one got): no full handshake happened.
        assert!(
            after.0 == expired.0 && after.1 > expired.1,
            "the refused connection was not a resumption (handshakes {expired:?} -> {after:?})"
        );
        let closed = counter(
            &metrics(&c, 0).await?,
            "outpost_api_connections_closed_total{reason=\"expired_resumption\"}",
        )?;
        assert!(closed >= 1, "refused resumptions counted: {closed}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
