//! The API port's budgets per identity, through the real binary: anonymous callers never
//! make a node hold a big body, a revoked certificate cannot hold the connection pool and
//! one valid certificate holds at most its own cap, and one client's report flood is
//! answered 429 and adds at most its hourly budget to any node's disk.
//!
//! `OUTPOST_BUDGET_EXE` runs the same attacks against another build (e.g. main's, for the
//! figures "before"); the assertions are this branch's.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{
    local::admin_identity, local::ca_pem, local::enroll_agent, or_dump, raft_bytes, raise_nofile,
    run_ok, s, serial, status_of, tls::closed_by, tls::tls_from,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::Method;
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::shared::client::{ApiClient, ApiFailure, Endpoint};
use outpost_certs::TlsIdentity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

const T: Duration = Duration::from_secs(30);

fn exe() -> PathBuf {
    std::env::var_os("OUTPOST_BUDGET_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(support::exe)
}

/// The pid of node `i`'s `serve` process, found by its data directory in /proc.
fn node_pid(c: &LocalCluster, i: usize) -> Option<u32> {
    let dir = c.nodes[i].dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        (args.iter().any(|a| *a == b"serve") && args.contains(&dir.as_bytes())).then_some(pid)
    })
}

/// Resident memory of node `i`, in MiB.
fn rss_mib(c: &LocalCluster, i: usize) -> u64 {
    let Some(pid) = node_pid(c, i) else {
        return 0;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Open file descriptors of node `i`.
fn fds(c: &LocalCluster, i: usize) -> usize {
    node_pid(c, i)
        .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
        .map_or(0, |d| d.count())
}

fn tls_config(c: &LocalCluster, id: Option<&TlsIdentity>) -> Arc<rustls::ClientConfig> {
    outpost_certs::client_config(&ca_pem(c), id, &[b"http/1.1"]).expect("tls config")
}

fn api(c: &LocalCluster, i: usize, id: Option<&TlsIdentity>) -> ApiClient {
    let mut api = ApiClient::new(Endpoint::Tls {
        addr: c.nodes[i].api_addr.clone(),
        config: tls_config(c, id),
        server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
    });
    api.set_timeout(Duration::from_secs(20));
    api
}

/// An agent enrolled into `state` (through node 0); returns its client id and identity.
fn enroll(c: &LocalCluster, state: &Path, host: &str) -> Result<(String, TlsIdentity)> {
    let token = c.cli(0, &["token", "create", "--kind", "client"])?;
    let id = enroll_agent(
        |args| run_ok(c, args),
        token.trim(),
        &c.nodes[0].api_addr,
        state,
        &["--hostname", host],
    )?;
    let identity = TlsIdentity::from_pem(
        &std::fs::read_to_string(state.join("client.crt"))?,
        &std::fs::read_to_string(state.join("client.key"))?,
        &std::fs::read_to_string(state.join("ca.crt"))?,
    )?;
    Ok((id, identity))
}

/// `agent sync --once` from `state` succeeds.
fn agent_syncs(c: &LocalCluster, state: &Path) -> Result<String> {
    let out = c.run(&["agent", "sync", "--once", "--state-dir", s(state)])?;
    if !out.status.success() {
        bail!("agent sync: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// A counter of node `i`'s /metrics (0 when absent).
async fn metric(admin: &ApiClient, line_prefix: &str) -> Result<u64> {
    let text = admin.call_raw(Method::GET, "/metrics", None::<&()>).await?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Posts `body_len` bytes (declared in Content-Length) to `path` over a fresh anonymous TLS
/// connection from `src`, writing the body while reading the answer; returns the answer's
/// status line (None: the connection ended without one).
async fn post_big(
    src: [u8; 4],
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    (method, path): (&str, &str),
    body_len: usize,
) -> Option<u16> {
    let tls = timeout(Duration::from_secs(10), tls_from(src, to, config))
        .await
        .ok()?
        .ok()?;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: outpost\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
    );
    let write = async move {
        let sent = async {
            wr.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; 64 << 10];
            let mut left = body_len;
            while left > 0 {
                let n = left.min(chunk.len());
                wr.write_all(&chunk[..n]).await?;
                left -= n;
            }
            wr.flush().await
        };
        // A server that answers without reading closes under the writer: go on reading.
        let _ = sent.await;
        // Keep the write half until the answer is read.
        std::future::pending::<()>().await
    };
    let read = async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(2).any(|w| w == b"\r\n") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&got).to_string();
        line.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    timeout(Duration::from_secs(30), async {
        tokio::select! {
            status = read => status,
            _ = write => None,
        }
    })
    .await
    .ok()
    .flatten()
}

/// 160 anonymous connections each post 12 MiB to the bundle commit route (and 4 MiB to the
/// inventory route): every one is answered 401 without its body being read, the node's
/// memory barely moves, and an admin is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_big_bodies_are_refused_unread() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = LocalCluster::start(dir.path(), &exe(), 1, LocalOptions::default())
        .await
        .expect("one node");
    let r = async {
        let addr: SocketAddr = c.nodes[0].api_addr.parse()?;
        let anon = tls_config(&c, None);
        let admin = api(&c, 0, Some(&admin_identity(&c)));
        admin
            .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
            .await?;
        let idle = rss_mib(&c, 0);
        let started = std::time::Instant::now();
        // Peak memory sampled while the flood runs.
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let peak = {
            let sampling = sampling.clone();
            let dir = c.nodes[0].dir.clone();
            let pid = node_pid(&c, 0);
            tokio::spawn(async move {
                let mut peak = 0u64;
                let deadline = Instant::now() + Duration::from_secs(120);
                while sampling.load(std::sync::atomic::Ordering::Relaxed)
                    && Instant::now() < deadline
                {
                    if let Some(kb) = pid.and_then(|p| {
                        std::fs::read_to_string(format!("/proc/{p}/status"))
                            .ok()?
                            .lines()
                            .find(|l| l.starts_with("VmRSS:"))?
                            .split_whitespace()
                            .nth(1)?
                            .parse::<u64>()
                            .ok()
                    }) {
                        peak = peak.max(kb / 1024);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let _ = dir;
                peak
            })
        };
        let flood = futures::future::join_all((0..160usize).map(|i| {
            let anon = anon.clone();
            // Spread over 8 sources: the anonymous per-source cap is 32.
            let src = [127, 0, 0, 10 + (i % 8) as u8];
            let (route, len) = if i % 4 == 3 {
                (("PUT", "/v1/agent/inventory"), 4 << 20)
            } else {
                (("POST", "/v1/bundles"), 12 << 20)
            };
            async move { post_big(src, addr, anon, route, len).await }
        }));
        let during = async {
            // An admin during the flood.
            tokio::time::sleep(Duration::from_millis(300)).await;
            admin
                .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
                .await
        };
        let (statuses, admin_during) = tokio::join!(flood, during);
        let flood_secs = started.elapsed().as_secs_f64();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let peak = peak.await?;
        let mut counts = std::collections::BTreeMap::new();
        for st in &statuses {
            *counts.entry(*st).or_insert(0u32) += 1;
        }
        eprintln!(
            "anonymous 12 MiB flood: {counts:?} in {flood_secs:.1} s; RSS idle {idle} MiB, peak {peak} MiB, after {} MiB, fds {}",
            rss_mib(&c, 0),
            fds(&c, 0)
        );
        // One minute later (eprinted for the note), before the assertions.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let after_minute = rss_mib(&c, 0);
        eprintln!("anonymous 12 MiB flood: RSS one minute after: {after_minute} MiB");
        admin_during.context("an admin during the flood")?;
        // Answered 401 at once; the rest were closed at the anonymous caps, or closed
        // under the writer before the answer could be read (no status).
        let unauthorized = counts.get(&Some(401)).copied().unwrap_or(0);
        assert!(unauthorized >= 80, "{counts:?}");
        assert!(
            counts.keys().all(|k| matches!(k, Some(401) | None)),
            "a big anonymous body got another answer: {counts:?}"
        );
        // 160 x 12 MiB read would be 1.9 GB; unread, the node stays near idle.
        assert!(
            peak <= idle + 200,
            "RSS grew from {idle} MiB to {peak} MiB"
        );
        assert!(
            after_minute <= idle + 100,
            "RSS one minute after: {after_minute} MiB (idle {idle} MiB)"
        );
        admin
            .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
            .await?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// 4,200 TLS connections with a revoked client's certificate get no slot of the
/// authenticated pool (each is answered 403 and closed), and an admin `status` and an
/// agent sync still succeed while they are tried; then 40 connections with one valid
/// client's certificate get at most its cap of 16, while another client still syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_single_certificates_cannot_hold_the_pool() {
    let _g = serial();
    raise_nofile(20_000).expect("RLIMIT_NOFILE");
    let dir = tempfile::tempdir().expect("tempdir");
    let c = LocalCluster::start(dir.path(), &exe(), 1, LocalOptions::default())
        .await
        .expect("one node");
    let r = async {
        let addr: SocketAddr = c.nodes[0].api_addr.parse()?;
        let (gone_id, gone) = enroll(&c, &dir.path().join("gone"), "gone")?;
        let good = dir.path().join("good");
        let (_, good_id) = enroll(&c, &good, "good")?;
        let other = dir.path().join("other");
        enroll(&c, &other, "other")?;
        c.cli(0, &["client", "revoke", &gone_id])?;
        let admin = api(&c, 0, Some(&admin_identity(&c)));
        let revoked_cfg = tls_config(&c, Some(&gone));

        // The flood: 4,200 connections, 200 at a time, from 16 sources, each kept.
        const FLOOD: usize = 4200;
        let flood_deadline = Instant::now() + Duration::from_secs(60);
        let mut held = Vec::new();
        let mut failed = 0usize;
        let attempts: Vec<usize> = (0..FLOOD).collect();
        for round in attempts.chunks(200) {
            if Instant::now() > flood_deadline {
                break;
            }
            let opened = futures::future::join_all(round.iter().map(|&i| {
                let cfg = revoked_cfg.clone();
                let src = [127, 0, 1, 1 + (i % 16) as u8];
                async move { timeout(Duration::from_secs(10), tls_from(src, addr, cfg)).await }
            }))
            .await;
            for o in opened {
                match o {
                    Ok(Ok(s)) => held.push(s),
                    _ => failed += 1,
                }
            }
        }
        let tried = held.len() + failed;
        eprintln!(
            "revoked flood: {tried} tried, {} handshakes completed, {failed} failed; node fds {}",
            held.len(),
            fds(&c, 0)
        );
        assert!(tried >= 4000, "only {tried} connections were tried");
        // None of the held ones has a slot of the authenticated pool: only the admin's own
        // connection (and at most a few of the harness's) are counted there.
        let authenticated = metric(
            &admin,
            "outpost_api_connections{kind=\"authenticated\"}",
        )
        .await?;
        assert!(
            authenticated <= 4,
            "{authenticated} authenticated connections while {} revoked ones were held",
            held.len()
        );
        // While they are held: an admin status and an agent sync.
        admin
            .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
            .await
            .context("admin status during the revoked flood")?;
        agent_syncs(&c, &good).context("agent sync during the revoked flood")?;
        // Every one of them is closed by the server (answered 403 first when it asks):
        // 5 s for a refused identity, 10 s anonymous idle; 30 s leaves slack.
        let deadline = Instant::now() + Duration::from_secs(30);
        let opened = held.len();
        let closed = futures::future::join_all(held.into_iter().map(|mut h| async move { closed_by(&mut h, deadline).await }))
            .await
            .into_iter()
            .filter(|c| *c)
            .count();
        assert_eq!(closed, opened, "revoked connections still open after 30 s");
        // None reached the authenticated pool, and a request on one is refused.
        let revoked = metric(
            &admin,
            "outpost_api_connections_closed_total{reason=\"revoked\"}",
        )
        .await?;
        eprintln!("revoked flood: {revoked} connections refused after the handshake");
        assert!(revoked >= 1, "no connection was refused as revoked");
        let err = api(&c, 0, Some(&gone))
            .call::<serde_json::Value>(Method::GET, "/v1/agent/config", None::<&()>)
            .await
            .expect_err("a revoked client was served");
        assert_eq!(status_of(&err), Some(403), "{err:#}");
        assert!(format!("{err:#}").contains("revoked"), "{err:#}");

        // One valid certificate: 40 connections held, at most 16 stay.
        let good_cfg = tls_config(&c, Some(&good_id));
        let conns = futures::future::join_all((0..40usize).map(|i| {
            let cfg = good_cfg.clone();
            let src = [127, 0, 2, 1 + (i % 4) as u8];
            async move { timeout(Duration::from_secs(10), tls_from(src, addr, cfg)).await }
        }))
        .await;
        let conns: Vec<_> = conns.into_iter().filter_map(|r| r.ok()?.ok()).collect();
        // Those over the cap are closed at once; the 16 within it stay (idle timeout 60 s).
        let soon = Instant::now() + Duration::from_secs(5);
        let closed = futures::future::join_all(conns.into_iter().map(|mut h| async move { closed_by(&mut h, soon).await }))
            .await
            .into_iter()
            .filter(|c| *c)
            .count();
        let per_identity = metric(
            &admin,
            "outpost_api_connections_refused_total{reason=\"authenticated_per_identity\"}",
        )
        .await?;
        eprintln!("one certificate, 40 connections: {closed} closed at once, {per_identity} refused at its cap");
        assert!(per_identity >= 24, "refused at the cap: {per_identity}");
        assert!(closed >= 24, "closed: {closed}");
        agent_syncs(&c, &other).context("another client syncs")?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// Facts of `len` bytes of JSON that differ with `n`.
fn facts(n: usize, len: usize) -> serde_json::Value {
    serde_json::json!({ "n": n, "pad": "x".repeat(len) })
}

/// One enrolled client floods inventory reports of nearly 1 MiB on a three-node cluster:
/// most are answered 429 with Retry-After, a report over 1 MiB or with too many facts is
/// refused 413, raft.db on every node grows by less than the client's hourly budget, the
/// audit does not gain a row per report, and the agent's own sync still succeeds (it leaves
/// its inventory for a later sync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_flood_is_limited_and_bounded_on_disk() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, LocalOptions::default())
        .await
        .expect("three nodes");
    let r = async {
        let state = dir.path().join("agent");
        let (_, id) = enroll(&c, &state, "flooder")?;
        let leader = c.leader(T).await?;
        c.wait_reported(T).await?;
        let audit_rows = |c: &LocalCluster| -> Result<usize> {
            let v: serde_json::Value =
                serde_json::from_str(&c.cli(0, &["audit", "--json", "--limit", "100000"])?)?;
            Ok(v.as_array().map_or(0, Vec::len))
        };
        let audit_before = audit_rows(&c)?;
        let before: Vec<u64> = c.nodes.iter().map(|n| raft_bytes(&n.dir)).collect();

        // Too big, and too many facts (well under 1 MiB): refused at the API.
        let client = api(&c, leader, Some(&id));
        let err = client
            .call::<serde_json::Value>(
                Method::PUT,
                "/v1/agent/inventory",
                Some(&facts(0, 1_100_000)),
            )
            .await
            .expect_err("1.1 MB of facts accepted");
        assert_eq!(status_of(&err), Some(413), "{err:#}");
        let many = serde_json::json!({ "packages": vec![0u8; 150_000] });
        let err = client
            .call::<serde_json::Value>(Method::PUT, "/v1/agent/inventory", Some(&many))
            .await
            .expect_err("150,000 facts accepted");
        assert_eq!(status_of(&err), Some(413), "{err:#}");

        // The flood: 200 reports of 1,000,000 bytes, 4 at a time, through every node.
        const REPORTS: usize = 200;
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4usize {
            let client = api(&c, w % 3, Some(&id));
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in (w..REPORTS).step_by(4) {
                    let r = client
                        .call::<serde_json::Value>(
                            Method::PUT,
                            "/v1/agent/inventory",
                            Some(&facts(n, 1_000_000)),
                        )
                        .await;
                    seen.push(match r {
                        Ok(_) => (200, None),
                        Err(e) => {
                            let f = e.downcast_ref::<ApiFailure>();
                            if f.is_none() && seen.iter().all(|(s, _)| *s != 0) {
                                eprintln!("inventory flood: refused without a status: {e:#}");
                            }
                            (
                                f.map_or(0, |f| f.status.as_u16()),
                                f.and_then(|f| f.retry_after),
                            )
                        }
                    });
                }
                seen
            }));
        }
        let mut counts = std::collections::BTreeMap::new();
        let mut retry_after = Vec::new();
        for t in tasks {
            for (status, wait) in t.await? {
                *counts.entry(status).or_insert(0u32) += 1;
                if status == 429 {
                    retry_after.push(wait);
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let accepted = counts.get(&200).copied().unwrap_or(0);
        let limited = counts.get(&429).copied().unwrap_or(0);
        eprintln!("inventory flood: {counts:?} in {secs:.1} s");
        // A burst of 3 and one a minute, per node (the limit is each node's: the workers
        // go through all three): the flood lasts seconds, so at most 3 x (3 + 1 + minutes).
        let per_node = 3 + 1 + (secs / 60.0).ceil() as u32;
        assert!(accepted <= 3 * per_node, "{counts:?}");
        assert!(accepted >= 1, "{counts:?}");
        // The rest are refused before their body is read: 429, or (while the client was
        // still writing the body of a refused request) the connection closed under it.
        let unanswered = counts.get(&0).copied().unwrap_or(0);
        assert!(limited >= 20, "{counts:?}");
        assert_eq!(
            accepted + limited + unanswered,
            REPORTS as u32,
            "{counts:?}"
        );
        assert!(
            retry_after
                .iter()
                .all(|w| w.is_some_and(|w| w >= Duration::from_secs(1))),
            "a 429 without Retry-After"
        );

        // Every node applied what was accepted; none grew by more than the hourly budget of
        // one client's reports: 63 reports (60 an hour and a burst of 3) of 1 MiB.
        let budget: u64 = 63 << 20;
        let key = "after.inventory.flood";
        c.cli(leader, &["config", "set", key, "ok"])?;
        for i in 0..3 {
            c.wait_for(i, T, "the write after the flood", |st| {
                st.applied_index >= 1
            })
            .await?;
            let v = c.cli(i, &["config", "get", key, "--linearizable"])?;
            if v.trim() != "ok" {
                bail!("node {i}: {key} read back as {v:?}");
            }
        }
        for (i, n) in c.nodes.iter().enumerate() {
            let grew = raft_bytes(&n.dir).saturating_sub(before[i]);
            eprintln!(
                "inventory flood: raft.db of node {i} grew {:.1} MiB",
                grew as f64 / f64::from(1 << 20)
            );
            assert!(grew <= budget, "raft.db of node {i} grew {grew} bytes");
        }
        let audit_after = audit_rows(&c)?;
        eprintln!("inventory flood: audit rows {audit_before} -> {audit_after}");
        assert!(
            audit_after <= audit_before + 20,
            "audit grew from {audit_before} to {audit_after}"
        );
        // The agent's own sync: its inventory is answered 429, the sync goes on.
        let out = agent_syncs(&c, &state)?;
        eprintln!("agent sync after the flood: {}", out.trim());
        // It was answered 429 (this client's budget is spent on every node): it left the
        // hash of its facts unwritten, so a later sync sends them.
        assert!(
            !state.join("inventory.sha256").exists(),
            "the agent recorded an inventory the node refused"
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// One anonymous HTTP/2 connection opens 100 streams, each posting 12 MiB to the bundle
/// commit route: every stream is answered 401 without its body being read, and the node's
/// memory barely moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_anonymous_http2_connection_cannot_make_the_node_hold_bodies() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let c = LocalCluster::start(dir.path(), &exe(), 1, LocalOptions::default())
        .await
        .expect("one node");
    let r = async {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        let addr: SocketAddr = c.nodes[0].api_addr.parse()?;
        let h2 = outpost_certs::client_config(&ca_pem(&c), None, &[b"h2"])?;
        let tls = tls_from([127, 0, 0, 5], addr, h2).await?;
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await?;
        let driver = tokio::spawn(conn);
        let idle = rss_mib(&c, 0);
        // One 12 MiB buffer, shared by every stream.
        let body = Bytes::from(vec![b' '; 12 << 20]);
        let started = std::time::Instant::now();
        let statuses = futures::future::join_all((0..100).map(|_| {
            let mut sender = sender.clone();
            let body = body.clone();
            async move {
                let req = hyper::Request::post("/v1/bundles")
                    .header("host", "outpost")
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .ok()?;
                let sent = async {
                    sender.ready().await.ok()?;
                    let resp = sender.send_request(req).await.ok()?;
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    Some(status)
                };
                timeout(Duration::from_secs(60), sent).await.ok().flatten()
            }
        }))
        .await;
        let secs = started.elapsed().as_secs_f64();
        let peak = rss_mib(&c, 0);
        let mut counts = std::collections::BTreeMap::new();
        for st in &statuses {
            *counts.entry(*st).or_insert(0u32) += 1;
        }
        eprintln!(
            "anonymous HTTP/2, 100 streams of 12 MiB: {counts:?} in {secs:.1} s; RSS idle {idle} MiB, after {peak} MiB"
        );
        driver.abort();
        assert!(
            counts.get(&Some(401)).copied().unwrap_or(0) >= 90,
            "{counts:?}"
        );
        assert!(peak <= idle + 100, "RSS grew from {idle} MiB to {peak} MiB");
        // The node still serves an admin.
        api(&c, 0, Some(&admin_identity(&c)))
            .call::<serde_json::Value>(Method::GET, "/v1/status", None::<&()>)
            .await?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

/// Behind the per-node rate, a client's inventory changes are bounded cluster-wide per
/// hour from the replicated history: with the per-node rate lifted, 90 changed reports
/// spread over three nodes are accepted only up to the hourly budget (63), then 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_changes_have_a_cluster_wide_hourly_budget() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        env: vec![("OUTPOST_INVENTORY_RATE".into(), "1000".into())],
        ..LocalOptions::default()
    };
    let c = LocalCluster::start(dir.path(), &exe(), 3, opts)
        .await
        .expect("three nodes");
    let r = async {
        let (_, id) = enroll(&c, &dir.path().join("agent"), "busy")?;
        let clients: Vec<ApiClient> = (0..3).map(|i| api(&c, i, Some(&id))).collect();
        let (mut accepted, mut limited) = (0u32, 0u32);
        for n in 0..90usize {
            match clients[n % 3]
                .call::<serde_json::Value>(Method::PUT, "/v1/agent/inventory", Some(&facts(n, 100)))
                .await
            {
                Ok(_) => accepted += 1,
                Err(e) if status_of(&e) == Some(429) => {
                    assert!(format!("{e:#}").contains("in the last hour"), "{e:#}");
                    limited += 1;
                }
                Err(e) => return Err(e.context(format!("report {n}"))),
            }
        }
        eprintln!("hourly budget: {accepted} accepted, {limited} answered 429");
        let budget = outpost_storage::INVENTORY_CHANGES_PER_HOUR;
        // One report at a time: a node that has not yet applied the last accepted report
        // may let one more through.
        assert!(
            (budget..=budget + 3).contains(&accepted),
            "{accepted} accepted, {limited} refused"
        );
        assert_eq!(accepted + limited, 90);
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
