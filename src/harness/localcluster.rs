//! Real `outpost` processes on 127.0.0.1, each in its own data directory: the demo, the
//! failover benchmark and the integration tests all build clusters with this.
//!
//! Nodes are formed exactly as an operator would: `outpost init`, `outpost serve`,
//! `outpost token create --kind node`, `outpost join`, `outpost serve`.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hyper::Method;

use crate::shared::client::{ApiClient, ApiFailure, Endpoint, NO_BODY, local_client};
use crate::shared::datadir::DataDir;
use crate::wire::StatusView;

/// Settings for every node of a local cluster.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Extra arguments for `init`/`join` (e.g. `--snapshot-after 50`).
    pub node_args: Vec<String>,
    /// Extra arguments for `init` only (e.g. `--bundle-trust KEY.pub`).
    pub init_args: Vec<String>,
    /// Environment of the `serve` processes (e.g. `OUTPOST_CLIENT_CERT_SECS`).
    pub env: Vec<(String, String)>,
    /// Where node logs go: a file per node in its directory's parent.
    pub log_level: String,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            node_args: Vec::new(),
            init_args: Vec::new(),
            env: Vec::new(),
            log_level: "info".into(),
        }
    }
}

pub struct LocalNode {
    pub name: String,
    pub dir: PathBuf,
    pub api_addr: String,
    pub peer_addr: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    /// The process id of its running `serve`, if any (to read /proc/PID in tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

pub struct LocalCluster {
    pub root: PathBuf,
    pub exe: PathBuf,
    pub nodes: Vec<LocalNode>,
    pub opts: LocalOptions,
}

/// A free TCP port on 127.0.0.1 (bound, read, released), below the kernel's range of
/// ephemeral ports when there is room: a node stopped and started again binds the same
/// ports, and a port of the ephemeral range may meanwhile be the local port of any outgoing
/// connection on the machine (a busy machine's restarts failed with "address in use").
pub fn free_port() -> Result<u16> {
    let low = ephemeral_low().unwrap_or(0);
    if low > FIXED_LOW + 1_000 {
        // A cursor from a random start, so this process never hands out one port twice (a
        // port checked free here is bound only later, by a node) and two processes rarely
        // meet; each candidate is still checked by binding it.
        let span = low - FIXED_LOW;
        let mut next = NEXT_PORT.lock().unwrap_or_else(|e| e.into_inner());
        let start =
            *next.get_or_insert_with(|| rand::Rng::gen_range(&mut rand::thread_rng(), 0..span));
        for step in 0..span.min(4_096) {
            let offset = (start + step) % span;
            let port = FIXED_LOW + offset;
            if let Ok(l) = StdListener::bind(("127.0.0.1", port)) {
                *next = Some((offset + 1) % span);
                return Ok(l.local_addr()?.port());
            }
        }
    }
    let l = StdListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Where `free_port` looks next, as an offset from `FIXED_LOW`.
static NEXT_PORT: std::sync::Mutex<Option<u16>> = std::sync::Mutex::new(None);

/// Where `free_port` starts looking: above the well-known services.
const FIXED_LOW: u16 = 10_000;

/// The first port of the kernel's ephemeral range, if it can be read.
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl LocalCluster {
    /// An empty cluster description under `root`; add nodes with `init_first` / `join_node`.
    pub fn new(root: &Path, exe: &Path, opts: LocalOptions) -> LocalCluster {
        LocalCluster {
            root: root.to_path_buf(),
            exe: exe.to_path_buf(),
            nodes: Vec::new(),
            opts,
        }
    }

    /// Forms an `n`-node cluster and waits until every node is a voter (up to 5).
    pub async fn start(
        root: &Path,
        exe: &Path,
        n: usize,
        opts: LocalOptions,
    ) -> Result<LocalCluster> {
        let mut c = LocalCluster::new(root, exe, opts);
        c.init_first()?;
        c.serve(0).await?;
        c.wait_ready(0, Duration::from_secs(20)).await?;
        for _ in 1..n {
            let i = c.join_node()?;
            c.serve(i).await?;
        }
        c.wait_voters(n.min(5), Duration::from_secs(30)).await?;
        Ok(c)
    }

    fn new_node(&mut self) -> Result<usize> {
        let i = self.nodes.len();
        let name = format!("node{}", i + 1);
        let dir = self.root.join(&name);
        let log = self.root.join(format!("{name}.log"));
        self.nodes.push(LocalNode {
            name,
            dir,
            api_addr: format!("127.0.0.1:{}", free_port()?),
            peer_addr: format!("127.0.0.1:{}", free_port()?),
            log,
            child: None,
        });
        Ok(i)
    }

    /// Runs `outpost ARGS` to completion (not a node process), with the same environment
    /// knobs as the nodes (so `init` signs the first node's certificate as `serve` would).
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.exe)
            .args(args)
            .stdin(Stdio::null())
            .env("RUST_LOG", "warn")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .output()
            .with_context(|| format!("running {} {}", self.exe.display(), args.join(" ")))
    }

    /// Runs `outpost ARGS --data-dir <node i>` and returns stdout; a failure carries stderr.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String> {
        let dir = self.nodes[i].dir.to_string_lossy().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", &dir]);
        self.run_ok(&all)
    }

    /// Runs `outpost ARGS` with the cluster's environment and returns stdout; a failure
    /// carries stderr.
    pub fn run_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!(
                "outpost {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn addr_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let mut v = vec![
            "--data-dir".into(),
            n.dir.to_string_lossy().to_string(),
            "--name".into(),
            n.name.clone(),
            "--api-addr".into(),
            n.api_addr.clone(),
            "--peer-addr".into(),
            n.peer_addr.clone(),
            // Loopback clusters never multicast on the machine's real interfaces.
            "--no-mdns".into(),
        ];
        v.extend(self.opts.node_args.iter().cloned());
        v
    }

    /// `outpost init` for a new first node; returns its stdout.
    pub fn init_first(&mut self) -> Result<String> {
        let i = self.new_node()?;
        let mut args = vec!["init".to_string()];
        args.extend(self.addr_args(i));
        args.extend(self.opts.init_args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&refs)?;
        if !out.status.success() {
            bail!(
                "outpost init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// A node token from the first running node.
    pub fn node_token(&mut self) -> Result<String> {
        let i = self
            .running_index()
            .context("no node is running to make a token")?;
        Ok(self
            .cli(i, &["token", "create", "--kind", "node"])?
            .trim()
            .to_string())
    }

    fn running_index(&mut self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.nodes[i].is_running())
    }

    /// Adds a node with `outpost join` (token from a running node, `--peer` = its API).
    pub fn join_node(&mut self) -> Result<usize> {
        let token = self.node_token()?;
        let via = self.running_index().context("no running node")?;
        let peer = self.nodes[via].api_addr.clone();
        let i = self.new_node()?;
        let mut args = vec!["join".to_string()];
        args.extend(self.addr_args(i));
        args.extend(["--token".into(), token, "--peer".into(), peer]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&refs)?;
        if !out.status.success() {
            bail!(
                "outpost join failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(i)
    }

    /// `outpost restore BACKUP` into a new node slot (not started) with `extra` arguments;
    /// returns the slot and the command's output, whether it succeeded or not.
    pub fn restore_node(&mut self, backup: &Path, extra: &[&str]) -> Result<(usize, Output)> {
        let i = self.new_node()?;
        let mut args = vec!["restore".to_string(), backup.to_string_lossy().to_string()];
        args.extend(self.addr_args(i));
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&refs)?;
        Ok((i, out))
    }

    /// Starts `outpost serve` for node `i` (logs appended to its log file) and returns once
    /// that node answers on its admin socket and on its API port (see [`Self::wait_answers`]):
    /// a caller may talk to the node as soon as this returns.
    pub async fn serve(&mut self, i: usize) -> Result<()> {
        self.spawn_serve(i)?;
        self.wait_answers(i, SERVE_DEADLINE).await
    }

    /// Starts `outpost serve` for node `i` without waiting for it to answer.
    fn spawn_serve(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(&self.exe)
            .args(["serve", "--data-dir"])
            .arg(&node.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RUST_LOG", &self.opts.log_level)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .with_context(|| format!("starting outpost serve for {}", node.name))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers a real request on its admin socket (`GET /v1/status`)
    /// and on its API port (anonymous `GET /healthz`): any HTTP answer counts, a refusal
    /// too, since what is awaited is that the process listens and serves. Fails early when
    /// the process exits, and at `timeout` with what did not answer and its last error.
    pub async fn wait_answers(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let dd = DataDir::new(&self.nodes[i].dir);
        let name = self.nodes[i].name.clone();
        let api_addr = self.nodes[i].api_addr.clone();
        let mut admin_ok = false;
        loop {
            if let Some(c) = self.nodes[i].child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "{name}'s `outpost serve` exited ({status}) before it answered; see {}",
                    self.nodes[i].log.display()
                );
            }
            let last = if !admin_ok {
                let mut admin = local_client(&self.nodes[i].dir);
                admin.set_timeout(Duration::from_secs(5));
                match answers(&admin, "/v1/status").await {
                    Ok(()) => {
                        admin_ok = true;
                        continue;
                    }
                    Err(e) => format!(
                        "its admin socket {} did not answer GET /v1/status: {e:#}",
                        dd.socket().display()
                    ),
                }
            } else {
                match api_client(&dd, &api_addr) {
                    Ok(client) => match answers(&client, "/healthz").await {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            format!("its API port {api_addr} did not answer GET /healthz: {e:#}")
                        }
                    },
                    Err(e) => format!("no client for its API port {api_addr}: {e:#}"),
                }
            };
            if Instant::now() >= deadline {
                bail!("{name} did not answer within {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9 of node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit (kill -9 after).
    pub fn stop(&mut self, i: usize, timeout: Duration) -> Result<bool> {
        let Some(mut c) = self.nodes[i].child.take() else {
            return Ok(true);
        };
        // SAFETY: sending a signal to our own child process id.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = c.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        Ok(false)
    }

    /// Node `i`'s status through its local socket.
    pub async fn status(&self, i: usize) -> Result<StatusView> {
        local_client(&self.nodes[i].dir)
            .call(Method::GET, "/v1/status", None::<&()>)
            .await
    }

    /// Waits until `pred` holds for node `i`'s status, polling every 50 ms.
    pub async fn wait_for(
        &self,
        i: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&StatusView) -> bool,
    ) -> Result<StatusView> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.status(i).await {
                Ok(s) if pred(&s) => return Ok(s),
                Ok(s) => format!("{s:?}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} did not reach \"{what}\" within {timeout:?}; last: {last}",
                    self.nodes[i].name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_ready(&self, i: usize, timeout: Duration) -> Result<StatusView> {
        self.wait_for(i, timeout, "has a leader", |s| s.leader_id.is_some())
            .await
    }

    /// Waits until the first running node sees `n` voters and a leader.
    pub async fn wait_voters(&mut self, n: usize, timeout: Duration) -> Result<StatusView> {
        let i = self.running_index().context("no running node")?;
        self.wait_for(i, timeout, &format!("{n} voters"), |s| {
            s.leader_id.is_some() && s.members.iter().filter(|m| m.voter).count() == n
        })
        .await
    }

    /// Waits until every member has reported the executable it runs (a node's first write
    /// after it starts), so that a test measuring the log's growth measures only its own.
    pub async fn wait_reported(&mut self, timeout: Duration) -> Result<StatusView> {
        let i = self.running_index().context("no running node")?;
        self.wait_for(i, timeout, "every member reported its build", |s| {
            s.members.iter().all(|m| {
                s.builds
                    .iter()
                    .any(|b| b.id == m.id && !b.binary_sha256.is_empty())
            })
        })
        .await
    }

    /// The index (into `nodes`) of the current leader, as seen by a running node.
    pub async fn leader(&mut self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() {
                    continue;
                }
                if let Ok(s) = self.status(i).await
                    && let Some(l) = s.leader_id
                    && let Some(m) = s.members.iter().find(|m| m.id == l)
                    && let Some(j) = self.nodes.iter().position(|n| n.api_addr == m.api_addr)
                    && self.nodes[j].is_running()
                {
                    return Ok(j);
                }
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "no leader among the running nodes within {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// How long `serve` waits for a started node to answer: generous, as a loaded machine may
/// take seconds to start a process and open its database.
const SERVE_DEADLINE: Duration = Duration::from_secs(60);

/// An anonymous HTTPS client for a node's API port, trusting the CA of its data directory.
fn api_client(dd: &DataDir, addr: &str) -> Result<ApiClient> {
    let ca_pem = dd.read(&dd.ca_cert())?;
    let config = outpost_certs::client_config(&ca_pem, None, &[b"http/1.1"])?;
    let mut client = ApiClient::new(Endpoint::Tls {
        addr: addr.to_string(),
        config,
        server_name: outpost_certs::ANY_NODE_SERVER_NAME.to_string(),
    });
    client.set_timeout(Duration::from_secs(5));
    Ok(client)
}

/// Whether `GET path` gets an HTTP answer from `client`: a success or an error the node
/// answered (`ApiFailure`); anything else (no connection, no answer) is the error.
async fn answers(client: &ApiClient, path: &str) -> Result<()> {
    match client.call_raw(Method::GET, path, NO_BODY).await {
        Ok(_) => Ok(()),
        Err(e) if e.downcast_ref::<ApiFailure>().is_some() => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports handed out are checked free only, bound later by a node: one process must never
    /// hand out the same port twice, or two nodes of one cluster could be given one port.
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let p = free_port().expect("a free port");
            assert!(seen.insert(p), "port {p} handed out twice");
        }
    }
}
