//! `outpost` nodes on the hosts of a [`Site`](super::netns::Site): the binary run inside a
//! host, a node's `serve` started there with its log, and the wait until a started node
//! answers (its admin socket and its API port), as `LocalCluster::serve` does on loopback.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use super::netns::Host;

pub const EXE: &str = env!("CARGO_BIN_EXE_outpost");
pub const API_PORT: u16 = 7443;
pub const PEER_PORT: u16 = 7444;
/// How long one run of the binary (not a node) may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a started node has to answer on its socket and API port.
const SERVE_DEADLINE: Duration = Duration::from_secs(60);
/// How long one readiness probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `outpost ARGS` inside `host` (`RUST_LOG=warn`) to completion.
pub fn run_on(host: &Host, args: &[&str]) -> Output {
    let mut cmd = host.command(EXE);
    cmd.args(args).env("RUST_LOG", "warn");
    host.run(cmd, CLI_TIMEOUT).expect("run outpost")
}

/// Starts `outpost serve --data-dir DIR` inside `host`, its output appended to `log`, with
/// the log filter `rust_log`; its pid. Does not wait: see [`wait_answers`].
pub fn spawn_serve(host: &Host, dir: &str, log: &Path, rust_log: &str) -> u32 {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open node log");
    let mut cmd = host.command(EXE);
    cmd.args(["serve", "--data-dir", dir])
        .env("RUST_LOG", rust_log)
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log);
    host.spawn(cmd).expect("spawn outpost serve")
}

/// The last `lines` lines of a node's log.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until the node of data directory `dir` on `host` answers a real request on its
/// admin socket (`GET /v1/status`) and on its API port (anonymous `GET /healthz` over TLS,
/// inside the host's namespace); any HTTP answer counts. Panics at the deadline naming the
/// node and what did not answer.
pub fn wait_answers(host: &Host, dir: &Path, name: &str) {
    let deadline = Instant::now() + SERVE_DEADLINE;
    let socket = dir.join("admin.sock");
    let mut admin_ok = false;
    loop {
        let last = if !admin_ok {
            match admin_answers(&socket) {
                Ok(()) => {
                    admin_ok = true;
                    continue;
                }
                Err(e) => format!("admin socket {}: {e}", socket.display()),
            }
        } else {
            match api_answers(host, dir) {
                Ok(()) => return,
                Err(e) => format!("API port {}:{API_PORT}: {e}", host.addr()),
            }
        };
        assert!(
            Instant::now() < deadline,
            "{name} did not answer within {SERVE_DEADLINE:?}: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn admin_answers(socket: &Path) -> Result<(), String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    http_answer(&mut s, "/v1/status")
}

fn api_answers(host: &Host, dir: &Path) -> Result<(), String> {
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).map_err(|e| format!("ca.crt: {e}"))?;
    let to = SocketAddr::from((host.addr(), API_PORT));
    let tcp = host
        .enter(move || std::net::TcpStream::connect_timeout(&to, PROBE_TIMEOUT))
        .and_then(|r| r)
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let config = outpost_certs::client_config(&ca_pem, None, &[b"http/1.1"])
        .map_err(|e| format!("TLS config: {e}"))?;
    let server = rustls::pki_types::ServerName::try_from(outpost_certs::ANY_NODE_SERVER_NAME)
        .map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, server).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    http_answer(&mut tls, "/healthz")
}

/// Sends `GET path` and reads the start of the answer: an HTTP status line is an answer.
fn http_answer(s: &mut (impl Read + Write), path: &str) -> Result<(), String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: outpost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head)
        .map_err(|e| format!("no answer: {e}"))?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(format!("not HTTP: {:?}", String::from_utf8_lossy(&head)))
    }
}
