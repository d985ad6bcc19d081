//! Loopback clusters of real `outpost` processes (`outpost::harness::localcluster`): how the
//! tests form them (plain, or trusting bundle keys made for the test), their logs on failure,
//! the cluster's CA and an admin identity of it (and an API client as that admin), `audit
//! verify` on one node, and a background writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use outpost::harness::localcluster::{LocalCluster, LocalOptions};
use outpost::shared::client::{ApiClient, Endpoint};
use outpost_certs::{CertAuthority, Role, TlsIdentity, Validity};

use super::{exe, s};

/// An `n`-node cluster in a temporary directory with extra `init`/`join` arguments.
pub async fn cluster(n: usize, node_args: &[&str]) -> Result<(tempfile::TempDir, LocalCluster)> {
    let dir = tempfile::tempdir()?;
    let opts = LocalOptions {
        node_args: node_args.iter().map(|s| s.to_string()).collect(),
        log_level: "info".into(),
        ..LocalOptions::default()
    };
    let c = LocalCluster::start(dir.path(), &exe(), n, opts).await?;
    Ok((dir, c))
}

/// A one-node cluster in a temporary directory.
pub async fn one_node() -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = LocalCluster::start(dir.path(), &exe(), 1, LocalOptions::default())
        .await
        .expect("one-node cluster");
    (dir, c)
}

/// `outpost bundle keygen -o ROOT/NAME`, which must succeed; the key's path (its public
/// half is `PATH.pub`).
pub fn keygen(root: &Path, name: &str) -> PathBuf {
    let key = root.join(name);
    let out = std::process::Command::new(exe())
        .args(["bundle", "keygen", "-o", s(&key)])
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "bundle keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    key
}

/// Options of a cluster whose `init` pins the bundle trust `--bundle-trust KEY.pub`.
pub fn trusting(key: &Path) -> LocalOptions {
    LocalOptions {
        init_args: vec!["--bundle-trust".into(), format!("{}.pub", key.display())],
        ..LocalOptions::default()
    }
}

/// A bundle signing key `ROOT/KEY_NAME` made for the test and an `n`-node cluster under
/// `ROOT/DIR` that trusts it, its nodes with the environment `env`.
pub async fn trusted_cluster(
    root: &Path,
    key_name: &str,
    dir: &str,
    n: usize,
    env: &[(&str, &str)],
) -> Result<(PathBuf, LocalCluster)> {
    let key = keygen(root, key_name);
    let opts = LocalOptions {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..trusting(&key)
    };
    let c = LocalCluster::start(&root.join(dir), &exe(), n, opts).await?;
    Ok((key, c))
}

/// `outpost agent enroll --token TOKEN --server SERVER --state-dir STATE EXTRA...` through
/// `run` (the caller's way of running a binary: which one, with what environment); the new
/// client's id from `STATE/agent.json`.
pub fn enroll_agent(
    run: impl FnOnce(&[&str]) -> Result<String>,
    token: &str,
    server: &str,
    state: &Path,
    extra: &[&str],
) -> Result<String> {
    let mut args = vec![
        "agent",
        "enroll",
        "--token",
        token,
        "--server",
        server,
        "--state-dir",
        s(state),
    ];
    args.extend(extra);
    let out = run(&args)?;
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("agent.json"))?)?;
    v["client_id"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("no client id after enroll: {out}"))
}

/// Waits until every node of `nodes` has applied everything any of them has applied now
/// (the highest applied index among them; a write acknowledged to a client was applied by
/// the leader): what was written is then what any of them reads and serves, e.g. to an
/// agent syncing with it.
pub async fn settle(c: &LocalCluster, nodes: &[usize]) -> Result<()> {
    let mut index = 0;
    for &i in nodes {
        index = index.max(c.status(i).await?.applied_index);
    }
    for &i in nodes {
        c.wait_for(
            i,
            Duration::from_secs(30),
            &format!("applied index {index}"),
            |s| s.applied_index >= index,
        )
        .await?;
    }
    Ok(())
}

/// The cluster CA's certificate (PEM) from the first node's data directory.
pub fn ca_pem(c: &LocalCluster) -> String {
    std::fs::read_to_string(c.nodes[0].dir.join("ca.crt")).expect("ca.crt")
}

/// An admin identity (`ops`, one day) issued with the CA key of the first node.
pub fn admin_identity(c: &LocalCluster) -> TlsIdentity {
    let dir = &c.nodes[0].dir;
    let pem = ca_pem(c);
    let ca = CertAuthority::from_pem(
        &pem,
        &std::fs::read_to_string(dir.join("ca.key")).expect("ca.key"),
    )
    .expect("the cluster CA");
    let now = outpost_raft::now_ms() / 1000;
    let (cert, key) = ca
        .issue_with_new_key(&Role::Admin("ops".into()), &Validity::days_from(now, 1))
        .expect("an admin certificate");
    TlsIdentity::from_pem(&cert, &key, &pem).expect("admin identity")
}

/// An API client of node `i` as that admin (`admin_identity`), over TLS, 20 s per call.
pub fn admin_api(c: &LocalCluster, i: usize) -> Result<ApiClient> {
    let id = admin_identity(c);
    let mut api = ApiClient::new(Endpoint::Tls {
        addr: c.nodes[i].api_addr.clone(),
        config: outpost_certs::client_config(&ca_pem(c), Some(&id), &[b"http/1.1"])?,
        server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
    });
    api.set_timeout(Duration::from_secs(20));
    Ok(api)
}

/// `outpost audit verify [--full]` on node `i`'s data directory: whether it passed, its
/// stdout and its stderr.
pub fn audit_verify(c: &LocalCluster, i: usize, full: bool) -> Result<(bool, String, String)> {
    let mut args = vec!["audit", "verify", "--data-dir", s(&c.nodes[i].dir)];
    if full {
        args.push("--full");
    }
    let out = c.run(&args)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// On failure, the tail of every node's log helps more than the assertion alone.
pub fn dump_logs(c: &LocalCluster) {
    for n in &c.nodes {
        if let Ok(text) = std::fs::read_to_string(&n.log) {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("---- {} ----\n{}", n.name, tail.join("\n"));
        }
    }
}

/// The value of a test body, or, on failure, the tail of every node's log and then a panic
/// with the error and its causes.
pub fn or_dump<T>(c: &LocalCluster, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            dump_logs(c);
            panic!("{e:#}");
        }
    }
}

/// What a `writer` got: each acknowledged key with the moment its acknowledgement arrived,
/// and how many writes were refused.
pub struct Written {
    pub acked: Vec<(String, Instant)>,
    pub refused: u64,
}

/// Writes `PREFIX.N = v` (`outpost config set`, one process each) through the data dirs of
/// `dirs` in turn, until `stop` is set or `max` writes were tried.
pub fn writer(
    exe: PathBuf,
    dirs: Vec<PathBuf>,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    max: usize,
) -> std::thread::JoinHandle<Written> {
    std::thread::spawn(move || {
        let mut w = Written {
            acked: Vec::new(),
            refused: 0,
        };
        for n in 0..max {
            if stop.load(Ordering::Relaxed) || dirs.is_empty() {
                break;
            }
            let key = format!("{prefix}.{n}");
            let ok = std::process::Command::new(&exe)
                .args(["config", "set", &key, "v", "--data-dir"])
                .arg(&dirs[n % dirs.len()])
                .env("RUST_LOG", "off")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                w.acked.push((key, Instant::now()));
            } else {
                w.refused += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        w
    })
}
