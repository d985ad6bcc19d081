//! `/metrics` of real nodes on loopback, read with an admin certificate: OpenMetrics text that
//! parses line by line and ends with `# EOF`, the request counters by route after a request,
//! the node's build, disk and readiness, the Raft layer's series, a follower's clock offset to
//! the leader (the `ClockMs` peer ask); and `OUTPOST_METRICS=off`, which keeps the counters but
//! observes no histogram.

// The serial lock is held across awaits on purpose: one cluster at a time on this machine.
#![allow(clippy::await_holding_lock)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::shared::client::{ApiClient, Endpoint};
use support::local::{admin_identity, ca_pem};
use support::{exe, or_dump, serial};

fn admin(c: &LocalCluster, i: usize) -> ApiClient {
    let id = admin_identity(c);
    let config: Arc<rustls::ClientConfig> =
        outpost_certs::client_config(&ca_pem(c), Some(&id), &[b"http/1.1"]).expect("tls config");
    let mut api = ApiClient::new(Endpoint::Tls {
        addr: c.nodes[i].api_addr.clone(),
        config,
        server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
    });
    api.set_timeout(Duration::from_secs(20));
    api
}

async fn scrape(api: &ApiClient) -> Result<String> {
    let raw = api.call_raw(Method::GET, "/metrics", None::<&()>).await?;
    Ok(String::from_utf8(raw.to_vec())?)
}

/// Checks the text the way a scraper reads it: descriptors before their samples, each sample
/// `name[{labels}] value` of a declared family with a numeric value, `# EOF` last.
/// Returns the sample lines.
fn parse_openmetrics(text: &str) -> Result<Vec<(String, f64)>> {
    let Some(body) = text.strip_suffix("# EOF\n") else {
        bail!("no # EOF at the end");
    };
    let mut families = BTreeSet::new();
    let mut samples = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').context("TYPE without a type")?;
            if !["gauge", "counter", "histogram", "info", "unknown"].contains(&kind) {
                bail!("unknown type in {line:?}");
            }
            families.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            bail!("stray line {line:?}");
        }
        let (series, value) = line.rsplit_once(' ').context("sample without a value")?;
        let name = series.split('{').next().unwrap_or(series);
        let family = ["_total", "_bucket", "_count", "_sum", "_created", "_info"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(name);
        if !families.contains(family) {
            bail!("sample of an undeclared family: {line:?}");
        }
        if series.contains('{') && !series.ends_with('}') {
            bail!("labels not closed: {line:?}");
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().with_context(|| format!("value of {line:?}"))?,
        };
        samples.push((series.to_string(), v));
    }
    Ok(samples)
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

/// Scrapes node `i` until `want` holds of its samples (20 s at most).
async fn scrape_until(
    api: &ApiClient,
    what: &str,
    want: impl Fn(&[(String, f64)]) -> bool,
) -> Result<Vec<(String, f64)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(api).await?;
        let samples = parse_openmetrics(&text).with_context(|| text.clone())?;
        if want(&samples) {
            return Ok(samples);
        }
        if Instant::now() > deadline {
            bail!("{what} not in /metrics within 20 s:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_requests_raft_disk_build_and_clock() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = LocalCluster::start(dir.path(), &exe(), 3, LocalOptions::default())
        .await
        .expect("cluster");
    let r = async {
        c.wait_voters(3, Duration::from_secs(30)).await?;
        let leader = c.leader(Duration::from_secs(20)).await?;
        let follower = (leader + 1) % 3;
        let api = admin(&c, leader);
        api.call_raw(Method::GET, "/v1/status", None::<&()>).await?;
        let s = scrape_until(&api, "the build's hash", |s| {
            s.iter().any(|(k, _)| {
                k.starts_with("outpost_build_info{version=\"")
                    && k.split("sha256=\"")
                        .nth(1)
                        .is_some_and(|h| h.len() == 64 + 2)
            })
        })
        .await?;
        let status = value(
            &s,
            "outpost_http_requests_total{route=\"/v1/status\",status=\"200\"}",
        );
        assert!(status.is_some_and(|n| n >= 1.0), "{s:?}");
        assert!(
            value(
                &s,
                "outpost_http_request_duration_seconds_count{route=\"/v1/status\"}"
            )
            .is_some_and(|n| n >= 1.0),
            "{s:?}"
        );
        for series in [
            "outpost_raft_is_leader",
            "outpost_node_ready",
            "outpost_clients{state=\"enrolled\"}",
            "outpost_clients_failing_checks",
            "outpost_blobs_missing",
            "outpost_clock_offset_seconds",
        ] {
            assert!(value(&s, series).is_some(), "{series} missing: {s:?}");
        }
        assert_eq!(value(&s, "outpost_raft_is_leader"), Some(1.0));
        assert_eq!(value(&s, "outpost_node_ready"), Some(1.0));
        assert_eq!(value(&s, "outpost_clock_offset_seconds"), Some(0.0));
        assert!(
            value(&s, "outpost_disk_used_bytes{part=\"raft_db\"}").is_some_and(|b| b > 0.0),
            "{s:?}"
        );
        assert!(
            value(&s, "outpost_disk_size_bytes").is_some_and(|b| b > 0.0),
            "{s:?}"
        );
        // The Raft layer's series are in the same registry.
        assert!(
            s.iter()
                .any(|(k, _)| k.starts_with("outpost_raft_commit_duration_seconds_count")),
            "{s:?}"
        );
        // A follower measures its clock against the leader's (same host: well under a second).
        let f = scrape_until(&admin(&c, follower), "a follower's clock offset", |s| {
            value(s, "outpost_clock_offset_seconds").is_some()
        })
        .await?;
        let off = value(&f, "outpost_clock_offset_seconds").unwrap_or(f64::MAX);
        assert!(off.abs() < 1.0, "offset {off}");
        assert_eq!(value(&f, "outpost_raft_is_leader"), Some(0.0));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_off_counts_requests_but_times_nothing() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LocalOptions {
        env: vec![("OUTPOST_METRICS".into(), "off".into())],
        ..LocalOptions::default()
    };
    let mut c = LocalCluster::start(dir.path(), &exe(), 1, opts)
        .await
        .expect("cluster");
    let r = async {
        c.wait_voters(1, Duration::from_secs(30)).await?;
        let api = admin(&c, 0);
        api.call_raw(Method::GET, "/v1/status", None::<&()>).await?;
        let s = scrape_until(&api, "the status request", |s| {
            value(
                s,
                "outpost_http_requests_total{route=\"/v1/status\",status=\"200\"}",
            )
            .is_some()
        })
        .await?;
        assert_eq!(
            value(
                &s,
                "outpost_http_request_duration_seconds_count{route=\"/v1/status\"}"
            ),
            None,
            "{s:?}"
        );
        // Node 1 committed its own join and more: with collection on, the commit histogram
        // would have counted them.
        assert_eq!(
            value(&s, "outpost_raft_commit_duration_seconds_count"),
            Some(0.0),
            "{s:?}"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
