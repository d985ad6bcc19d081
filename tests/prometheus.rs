//! The metrics as an operator's Prometheus sees them: Debian's `prometheus` scrapes a 3-node
//! loopback cluster over mutual TLS with an admin certificate (the shipped alert rules
//! loaded), and its HTTP API shows every node up with the series a dashboard needs;
//! `promtool` accepts the shipped rules and their unit tests; a client's failing health
//! check shows in `outpost_clients_failing_checks` and clears once fixed.
//!
//! Without `prometheus` or `promtool` (`.ci/run` installs Debian's `prometheus`, which has
//! both) a test fails when `CI` is set and is skipped with the reason otherwise.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::agents::Fleet;
use support::local::{admin_identity, ca_pem, trusted_cluster};
use support::{command_ok, exe, or_dump, output, s, serial};

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::{LocalCluster, LocalOptions, free_port};
use outpost::shared::client::{ApiClient, Endpoint};
use serde_json::Value;

/// The shipped alert rules, their promtool unit tests.
fn packaged(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/prometheus")
        .join(name)
}

/// The path of `tool` on PATH; without it, `None` after saying why (or a panic under `CI`).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "tests/prometheus needs `{name}` on PATH (Debian's package prometheus: .ci/run installs it)"
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (CI is set, so this is a failure)");
        }
        eprintln!("skipped: {msg}");
    }
    found
}

/// A Prometheus server of the test, killed (and reaped) on drop: the port of its HTTP API
/// and the file of its log.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `bin` with `config` on a free loopback port, its data under `dir`, and waits
    /// until it says it is ready.
    fn start(bin: &Path, config: &Path, dir: &Path) -> Result<Prometheus> {
        let port = free_port()?;
        // Prometheus logs to stderr; stdout joins it.
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", s(config)))
            .arg(format!("--storage.tsdb.path={}", s(&dir.join("tsdb"))))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut p = Prometheus { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(port, "/-/ready") {
                return Ok(p);
            }
            if let Some(status) = p.child.try_wait()? {
                bail!("prometheus exited ({status}): {}", p.log_text());
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after 30 s: {}", p.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/PATH`'s `data` (its `status` must be `success`).
    fn api(&self, path: &str) -> Result<Value> {
        let (status, body) = http_get(self.port, &format!("/api/v1/{path}"))?;
        let v: Value = serde_json::from_slice(&body)
            .with_context(|| format!("{path}: {}", String::from_utf8_lossy(&body)))?;
        if status != 200 || v["status"] != "success" {
            bail!("{path}: HTTP {status}: {v}");
        }
        Ok(v["data"].clone())
    }

    /// The samples of an instant query: each series' labels and value.
    fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>> {
        let data = self.api(&format!("query?query={}", urlencode(promql)))?;
        let rows = data["result"].as_array().context("no result")?;
        rows.iter()
            .map(|r| {
                let v = r["value"][1]
                    .as_str()
                    .and_then(|t| t.parse::<f64>().ok())
                    .with_context(|| format!("no value in {r}"))?;
                Ok((r["metric"].clone(), v))
            })
            .collect()
    }
}

/// Percent-encoding of a query parameter's value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET to 127.0.0.1:PORT (Prometheus's API on loopback): status and body.
fn http_get(port: u16, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut conn = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.take(16 << 20).read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head}"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// A viewer's certificate files (`outpost admin issue-cert --role viewer`) for Prometheus: the
/// directory with admin.crt, admin.key and ca.crt.
fn admin_files(c: &LocalCluster, dir: &Path) -> Result<PathBuf> {
    let out = dir.join("admin");
    c.cli(
        0,
        &[
            "admin",
            "issue-cert",
            "--name",
            "prometheus",
            "--role",
            "viewer",
            "-o",
            s(&out),
        ],
    )?;
    Ok(out)
}

/// A scrape configuration like `packaging/prometheus/prometheus.yml`'s: job `outpost`
/// over https with the admin's certificate, every node's API port, scraped every second,
/// the shipped rules loaded.
fn prometheus_yml(c: &LocalCluster, admin: &Path) -> String {
    let targets: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("'{}'", n.api_addr))
        .collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - '{rules}'\n\
         scrape_configs:\n  - job_name: outpost\n    scheme: https\n    scrape_timeout: 1s\n\
         \x20   tls_config:\n      ca_file: '{ca}'\n      cert_file: '{cert}'\n      key_file: '{key}'\n\
         \x20     server_name: '{server}'\n\
         \x20   static_configs:\n      - targets: [{targets}]\n",
        rules = s(&packaged("outpost-rules.yml")),
        ca = s(&admin.join("ca.crt")),
        cert = s(&admin.join("admin.crt")),
        key = s(&admin.join("admin.key")),
        server = outpost_certs::ANY_NODE_SERVER_NAME,
        targets = targets.join(", "),
    )
}

/// Polls `f` every 250 ms until it is `Ok`, for at most 60 s; then an error naming `what`
/// with `f`'s last answer.
fn until<T>(what: &str, mut f: impl FnMut() -> std::result::Result<T, String>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() > deadline => {
                bail!("timed out after 60 s: {what}; last answer: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// The distinct `instance` labels of `rows`.
fn instances(rows: &[(Value, f64)]) -> BTreeSet<String> {
    rows.iter()
        .filter_map(|(m, _)| m["instance"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_node_over_mtls() {
    let _g = serial();
    let Some(bin) = tool("prometheus") else {
        return;
    };
    let rules = packaged("outpost-rules.yml");
    assert!(
        rules.is_file(),
        "{} is missing: the shipped alert rules",
        rules.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let c = LocalCluster::start(
        &dir.path().join("cluster"),
        &exe(),
        3,
        LocalOptions::default(),
    )
    .await
    .expect("3-node cluster");
    let r = async {
        let admin = admin_files(&c, dir.path())?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, prometheus_yml(&c, &admin))?;
        let prom_dir = dir.path().join("prometheus");
        std::fs::create_dir_all(&prom_dir)?;
        let prom = Prometheus::start(&bin, &config, &prom_dir)?;
        let addrs: BTreeSet<String> = c.nodes.iter().map(|n| n.api_addr.clone()).collect();

        // Every node's target is up: the handshake with the admin's certificate, the
        // OpenMetrics text parsed.
        until("every target up", || {
            let data = prom.api("targets").map_err(|e| format!("{e:#}"))?;
            let targets = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let up: BTreeSet<String> = targets
                .iter()
                .filter(|t| t["health"] == "up")
                .filter_map(|t| t["labels"]["instance"].as_str().map(String::from))
                .collect();
            if up == addrs {
                Ok(())
            } else {
                Err(Value::Array(targets).to_string())
            }
        })?;

        // Some API requests of an operator beside the scrapes, for the latency histogram.
        for i in 0..3 {
            c.cli(i, &["status"])?;
        }
        type Rows<'a> = &'a [(Value, f64)];
        let wait_query = |what: &str, promql: &str, ok: &dyn Fn(Rows) -> bool| {
            until(&format!("{what} ({promql})"), || match prom.query(promql) {
                Ok(rows) if ok(&rows) => Ok(rows),
                Ok(rows) => Err(format!("{rows:?}")),
                Err(e) => Err(format!("{e:#}")),
            })
        };

        // The leader reports the lag of each of its two followers (one series each).
        let lag = wait_query(
            "the leader's lag of its 2 followers",
            "outpost_raft_replication_lag_entries",
            &|rows| rows.len() == 2 && instances(rows).len() == 1,
        )?;
        let followers: BTreeSet<&str> = lag
            .iter()
            .filter_map(|(m, _)| m["follower"].as_str())
            .collect();
        assert_eq!(followers.len(), 2, "two distinct followers: {lag:?}");
        // The request latency histogram has buckets with samples on every node.
        wait_query(
            "request latency buckets on every node",
            "sum by (instance) (outpost_http_request_duration_seconds_bucket{le=\"+Inf\"}) > 0",
            &|rows| instances(rows) == addrs,
        )?;
        // Free bytes of the data dir's file system on every node.
        wait_query(
            "disk free bytes on every node",
            "outpost_disk_free_bytes > 0",
            &|rows| instances(rows) == addrs,
        )?;
        // The build info names this version on every node.
        let version = env!("CARGO_PKG_VERSION");
        let info = wait_query(
            "build info with the version on every node",
            &format!("outpost_build_info{{version=\"{version}\"}} == 1"),
            &|rows| instances(rows) == addrs,
        )?;
        for (m, _) in &info {
            let sha = m["sha256"].as_str().unwrap_or_default();
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "the binary's sha256: {m}"
            );
        }

        // The shipped alert rules are loaded.
        let data = prom.api("rules")?;
        let names: Vec<&str> = data["groups"]
            .as_array()
            .context("no rule groups")?
            .iter()
            .filter_map(|g| g["rules"].as_array())
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(
            names.contains(&"OutpostNoLeader"),
            "rules loaded: {names:?}"
        );
        assert!(
            names.contains(&"OutpostFollowerLag"),
            "rules loaded: {names:?}"
        );
        drop(prom);
        anyhow::Ok(())
    }
    .await;
    or_dump(&c, r);
}

#[test]
fn promtool_accepts_the_shipped_rules_and_their_tests() {
    let Some(bin) = tool("promtool") else {
        return;
    };
    let rules = packaged("outpost-rules.yml");
    let tests = packaged("outpost-rules.test.yml");
    let checked = command_ok(Command::new(&bin).args(["check", "rules", s(&rules)]));
    assert!(checked.contains("SUCCESS"), "{checked}");
    // The unit tests show the lag and no-leader alerts firing on sample series.
    let text = std::fs::read_to_string(&tests).expect("outpost-rules.test.yml");
    for alert in ["OutpostFollowerLag", "OutpostNoLeader"] {
        assert!(text.contains(alert), "{} tests {alert}", tests.display());
    }
    // promtool resolves rule_files relative to the test file.
    let out = output(
        Command::new(&bin)
            .args(["test", "rules", s(&tests)])
            .current_dir(packaged("")),
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules: {all}");
    assert!(all.contains("SUCCESS"), "{all}");
}

/// The value of the unlabelled sample `name` in a `/metrics` text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Node `i`'s `/metrics` text, read as Prometheus does: over mutual TLS with an admin's
/// certificate.
async fn scrape(c: &LocalCluster, i: usize, admin: &ApiClient) -> Result<String> {
    let raw = admin
        .call_raw(hyper::Method::GET, "/metrics", None::<&()>)
        .await
        .with_context(|| format!("/metrics of {}", c.nodes[i].name))?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// Waits until node 0's `outpost_clients_failing_checks` is `want` (each node caches its
/// site counts for 10 s).
async fn wait_failing(c: &LocalCluster, admin: &ApiClient, want: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let text = scrape(c, 0, admin).await?;
        let got = sample(&text, "outpost_clients_failing_checks");
        if got == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("outpost_clients_failing_checks is {got:?}, not {want}, after 40 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_shows_in_the_metrics_until_fixed() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let (key, c) = trusted_cluster(&root, "release", "cluster", 1, &[])
        .await
        .expect("a one-node cluster trusting the test's bundle key");
    let r = async {
        // A signed config payload declares a check that fails until the file `fixed` exists.
        let fixed = root.join("fixed");
        std::fs::write(
            root.join("checks.toml"),
            format!(
                "[global]\n\"agent.check.cmd.probe\" = \"test -e {}\"\n",
                s(&fixed)
            ),
        )?;
        std::fs::write(
            root.join("spec.toml"),
            "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"checks.toml\"\nkind = \"config\"\nname = \"checks\"\n",
        )?;
        let bundle = root.join("checks.obundle");
        c.run_ok(&[
            "bundle",
            "create",
            "--spec",
            s(&root.join("spec.toml")),
            "--key",
            s(&key),
            "-o",
            s(&bundle),
        ])?;
        c.cli(0, &["bundle", "import", s(&bundle)])?;

        let admin = ApiClient::new(Endpoint::Tls {
            addr: c.nodes[0].api_addr.clone(),
            config: outpost_certs::client_config(
                &ca_pem(&c),
                Some(&admin_identity(&c)),
                &[b"http/1.1"],
            )?,
            server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
        });
        wait_failing(&c, &admin, 0.0).await?;

        // The agent reads the check at its first sync (enrollment) and reports it failing.
        let token = c.cli(0, &["token", "create", "--kind", "client"])?;
        let fleet = Fleet::new(&exe());
        let servers = [c.nodes[0].api_addr.clone()];
        let agent = fleet
            .enroll(&root.join("agents"), "probe", 1, token.trim(), &servers)?
            .remove(0);
        fleet.sync(&agent)?;
        wait_failing(&c, &admin, 1.0).await?;

        // Fixed: the next sync clears it.
        std::fs::write(&fixed, b"")?;
        fleet.sync(&agent)?;
        wait_failing(&c, &admin, 0.0).await?;
        anyhow::Ok(())
    }
    .await;
    or_dump(&c, r);
}
