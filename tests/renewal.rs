//! Node certificates renew themselves: a cluster whose node certificates live 20 seconds keeps
//! committing through at least three renewals on every node, and a node restarted long after
//! its first certificate expired comes back (every connection it makes is new).

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{exe, or_dump, serial};

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::shared::client::{ApiClient, Endpoint};

const CERT_SECS: u64 = 20;
const T: Duration = Duration::from_secs(30);

fn renewals(c: &LocalCluster, i: usize) -> usize {
    std::fs::read_to_string(&c.nodes[i].log)
        .map(|l| {
            l.lines()
                .filter(|l| l.contains("node certificate renewed"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_renew_and_the_cluster_keeps_committing() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        env: vec![("OUTPOST_NODE_CERT_SECS".into(), CERT_SECS.to_string())],
        log_level: "info".into(),
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, opts)
        .await
        .expect("three-node cluster");
    let r = async {
        // Writes every second through each node in turn until every node renewed three
        // times (about 3 × 2/3 × 20 s), bounded at 120 s.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut n = 0usize;
        while (0..3).any(|i| renewals(&c, i) < 3) {
            if Instant::now() > deadline {
                bail!(
                    "renewals after 120 s: {:?}",
                    (0..3).map(|i| renewals(&c, i)).collect::<Vec<_>>()
                );
            }
            c.cli(n % 3, &["config", "set", &format!("renew.{n}"), "v"])
                .with_context(|| format!("write {n} through node {}", n % 3))?;
            n += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        println!(
            "{n} writes committed across {:?} renewals",
            (0..3).map(|i| renewals(&c, i)).collect::<Vec<_>>()
        );
        // Long after the first certificates expired, a restarted node dials and is dialled
        // anew: it must come back and take writes.
        c.kill9(2);
        c.serve(2).await?;
        c.wait_ready(2, T).await?;
        c.cli(2, &["config", "set", "after.restart", "yes"])?;
        let v = c.cli(0, &["config", "get", "after.restart", "--linearizable"])?;
        assert_eq!(v.trim(), "yes");
        let metrics = ApiClient::new(Endpoint::Unix(c.nodes[0].dir.join("admin.sock")))
            .call_raw(Method::GET, "/metrics", None::<&()>)
            .await?;
        let metrics = String::from_utf8_lossy(&metrics);
        let left: i64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("outpost_cert_soonest_expiry_seconds "))
            .context("expiry metric")?
            .trim()
            .parse()?;
        assert!(
            left > 0 && left <= CERT_SECS as i64,
            "soonest expiry in {left} s"
        );
        // Every node's certificate, made at init, at join, and renewed since, names the host
        // it advertises: a client that trusts the CA reaches it by its IP address (a browser
        // opening the console's link does exactly this).
        let admin = dir.path().join("admin");
        c.cli(
            0,
            &[
                "admin",
                "issue-cert",
                "--name",
                "ops",
                "--role",
                "admin",
                "-o",
                &admin.to_string_lossy(),
            ],
        )?;
        let read = |f: &str| std::fs::read_to_string(admin.join(f));
        let ca = read("ca.crt")?;
        let id =
            outpost_certs::TlsIdentity::from_pem(&read("admin.crt")?, &read("admin.key")?, &ca)?;
        for n in &c.nodes {
            let config = outpost_certs::client_config(&ca, Some(&id), &[b"http/1.1"])?;
            let host = n.api_addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
            let api = ApiClient::new(Endpoint::Tls {
                addr: n.api_addr.clone(),
                config,
                server_name: host.to_string(),
            });
            api.call_raw(Method::GET, "/v1/status", None::<&()>)
                .await
                .with_context(|| format!("{} by its IP address {host}", n.name))?;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
