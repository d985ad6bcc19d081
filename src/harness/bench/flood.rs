//! `outpost bench flood`: writes/s without and then under an anonymous flood (enrollment
//! requests of ~64 KiB and idle anonymous TLS connections against every member), and
//! raft.db growth during a window of flood alone. Figures printed, never asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde::Serialize;

use crate::harness::bench::{WriteBench, WriteReport, write};
use crate::shared::client::local_client;
use crate::shared::datadir::DataDir;
use crate::wire::StatusView;

/// `bench flood`: what an anonymous flood costs the cluster, measured in one run.
pub struct FloodBench {
    pub write: WriteBench,
    /// Enrollment requests per second, each a body just under the 64 KiB route limit.
    pub enroll_per_s: u32,
    /// Idle anonymous TLS connections the flood tries to hold open.
    pub idle: usize,
    /// The flood's source address (e.g. 127.0.0.2 against a loopback cluster, so that it
    /// comes from another "machine" than the measured clients); default: the system's choice.
    pub from: Option<std::net::IpAddr>,
}

#[derive(Debug, Serialize)]
pub struct FloodReport {
    pub baseline: WriteReport,
    pub flooded: WriteReport,
    /// flooded writes/s ÷ baseline writes/s.
    pub ratio: f64,
    /// Growth of this node's raft.db (+ WAL) during a write-free window of flood alone.
    pub raft_db_growth_bytes: u64,
    pub flood_seconds: f64,
    /// Enrollment answers during the whole flood, by HTTP status (0 = no HTTP answer).
    pub enroll_answers: std::collections::BTreeMap<u16, u64>,
    /// Idle anonymous connections the flood held at the end, and how many it opened in all.
    pub idle_held: usize,
    pub idle_opened: u64,
}

impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "without flood: {}", self.baseline)?;
        writeln!(f, "under flood:   {}", self.flooded)?;
        writeln!(
            f,
            "ratio {:.2}; raft.db grew {} bytes in {:.1} s of flood alone; enroll answers {:?}; idle anonymous connections held {} (opened {})",
            self.ratio,
            self.raft_db_growth_bytes,
            self.flood_seconds,
            self.enroll_answers,
            self.idle_held,
            self.idle_opened
        )
    }
}

/// The local node's raft.db with its WAL: what Raft writes grow.
pub(super) fn raft_db_bytes(dd: &DataDir) -> u64 {
    ["raft.db", "raft.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dd.root.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Anonymous traffic against every member until `stop` flips: `enroll_per_s` enrollment
/// requests of about 64 KiB (a made-up token, a 60 KB host name, a real CSR), each on a new
/// connection, and up to `idle` anonymous TLS connections held open (re-opened when the node
/// closes them, at most 200 a second).
struct Flood {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answers: Arc<std::sync::Mutex<std::collections::BTreeMap<u16, u64>>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    opened: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// An anonymous TLS connection to `addr`, from the source address `from` when given (a flood
/// from another address than the benchmark's own clients, as from another machine).
async fn anonymous_tls(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
    from: Option<std::net::IpAddr>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let target: std::net::SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let socket = if target.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = from {
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
    }
    let tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(target))
        .await
        .context("connect timed out")??;
    let name =
        rustls::pki_types::ServerName::try_from(outpost_certs::ANY_NODE_SERVER_NAME.to_string())?;
    Ok(
        tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .context("handshake timed out")??,
    )
}

/// One `POST /v1/enroll` on a fresh anonymous connection; the answer's status (0: none).
async fn enroll_once(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
    from: Option<std::net::IpAddr>,
    request: &[u8],
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tls) = anonymous_tls(connector, addr, from).await else {
        return 0;
    };
    if tls.write_all(request).await.is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut head)).await {
        // "HTTP/1.1 NNN"
        Ok(Ok(_)) => std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

impl Flood {
    fn start(
        addrs: &[String],
        ca_pem: &str,
        enroll_per_s: u32,
        idle: usize,
        from: Option<std::net::IpAddr>,
    ) -> Result<Flood> {
        use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let held = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let anon = outpost_certs::client_config(ca_pem, None, &[b"http/1.1"])?;
        let connector = tokio_rustls::TlsConnector::from(anon);
        let (_, csr) = outpost_certs::new_key_and_csr("flood")?;
        let body = serde_json::to_vec(&serde_json::json!({
            "token_id": "0123456789abcdef",
            "secret": "ab".repeat(32),
            "hostname": "h".repeat(60_000),
            "csr_pem": csr,
        }))?;
        let mut request = format!(
            "POST /v1/enroll HTTP/1.1\r\nhost: outpost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let request = Arc::new(request);
        let mut tasks = Vec::new();
        // Enrollment: requests started at the given rate, each on a fresh connection.
        {
            let (stop, answers, connector, addrs) = (
                stop.clone(),
                answers.clone(),
                connector.clone(),
                addrs.to_vec(),
            );
            tasks.push(tokio::spawn(async move {
                let gap = Duration::from_secs_f64(1.0 / f64::from(enroll_per_s.max(1)));
                let mut tick = tokio::time::interval(gap);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let (connector, answers, request) =
                        (connector.clone(), answers.clone(), request.clone());
                    let addr = addrs[i % addrs.len()].clone();
                    i += 1;
                    tokio::spawn(async move {
                        let code = enroll_once(&connector, &addr, from, &request).await;
                        if let Ok(mut a) = answers.lock() {
                            *a.entry(code).or_insert(0) += 1;
                        }
                    });
                }
            }));
        }
        // Idle connections: handshake anonymously, then read until the node closes.
        let addrs = addrs.to_vec();
        let (stop2, held2, opened2) = (stop.clone(), held.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            while !stop2.load(Ordering::Relaxed) {
                pace.tick().await;
                if held2.load(Ordering::Relaxed) >= idle {
                    continue;
                }
                let addr = addrs[i % addrs.len()].clone();
                i += 1;
                let (connector, stop, held) = (connector.clone(), stop2.clone(), held2.clone());
                opened2.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let Ok(mut tls) = anonymous_tls(&connector, &addr, from).await else {
                        return;
                    };
                    held.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf))
                            .await
                        {
                            Ok(Ok(0)) | Ok(Err(_)) => break,
                            _ => {}
                        }
                    }
                    held.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }));
        Ok(Flood {
            stop,
            answers,
            held,
            opened,
            tasks,
        })
    }

    async fn stop(self) -> (std::collections::BTreeMap<u16, u64>, usize, u64) {
        use std::sync::atomic::Ordering;
        let held = self.held.load(Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        // Requests already started finish within their own deadlines.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let answers = self.answers.lock().map(|a| a.clone()).unwrap_or_default();
        (answers, held, self.opened.load(Ordering::Relaxed))
    }
}

/// Writes/s without and under an anonymous flood, in one run, and the raft.db growth of a
/// window of flood alone.
pub async fn flood(dd: &DataDir, opts: FloodBench) -> Result<FloodReport> {
    dd.check()?;
    let ca_pem = dd.read(&dd.ca_cert())?;
    let status: StatusView = local_client(&dd.root)
        .call(Method::GET, "/v1/status", None::<&()>)
        .await
        .context("asking the local node for the members")?;
    let addrs: Vec<String> = status.members.iter().map(|m| m.api_addr.clone()).collect();
    if addrs.is_empty() {
        bail!("the local node knows no members");
    }
    let WriteBench {
        clients,
        seconds,
        value_bytes,
    } = opts.write;
    let write_opts = || WriteBench {
        clients,
        seconds,
        value_bytes,
    };
    let baseline = write(dd, write_opts()).await?;
    let flood = Flood::start(&addrs, &ca_pem, opts.enroll_per_s, opts.idle, opts.from)?;
    let t0 = Instant::now();
    let before = raft_db_bytes(dd);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let growth = raft_db_bytes(dd).saturating_sub(before);
    let flood_seconds = t0.elapsed().as_secs_f64();
    let flooded = write(dd, write_opts()).await?;
    let (enroll_answers, idle_held, idle_opened) = flood.stop().await;
    Ok(FloodReport {
        ratio: flooded.writes_per_s / baseline.writes_per_s.max(1e-9),
        baseline,
        flooded,
        raft_db_growth_bytes: growth,
        flood_seconds,
        enroll_answers,
        idle_held,
        idle_opened,
    })
}
