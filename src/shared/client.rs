//! The HTTP client the CLI, the agent, a joining node, the benchmarks and the tests use to
//! reach a node's API: over the local Unix socket (no certificate) or over HTTPS with mTLS
//! (remote admin, agents, joiners).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};

use crate::shared::datadir::DataDir;

#[derive(Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tls {
        addr: String,
        config: Arc<rustls::ClientConfig>,
        server_name: String,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tls { addr, .. } => write!(f, "https://{addr}"),
        }
    }
}

/// An API error answered by the node: its HTTP status and its one-line reason.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
    /// The answer's `Retry-After` (whole seconds), when it had one (429, 503).
    pub retry_after: Option<Duration>,
}

/// A `Retry-After` header in seconds (the HTTP-date form is not used by Outpost).
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// One keep-alive HTTP/1.1 connection to one node (reconnects when it drops).
pub struct ApiClient {
    endpoint: Endpoint,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
    timeout: Duration,
    /// The local address TLS connections are made from (None: the system picks).
    source: Option<std::net::IpAddr>,
}

impl ApiClient {
    pub fn new(endpoint: Endpoint) -> ApiClient {
        ApiClient {
            endpoint,
            conn: tokio::sync::Mutex::new(None),
            timeout: Duration::from_secs(30),
            source: None,
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Makes TLS connections from this local address: `bench sync` gives each simulated agent
    /// a loopback address of its own, as real agents each have their machine's.
    pub fn set_source(&mut self, source: std::net::IpAddr) {
        self.source = Some(source);
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let connect = async {
            match &self.endpoint {
                Endpoint::Unix(path) => {
                    let s = UnixStream::connect(path).await.with_context(|| {
                        format!(
                            "connecting to {} (is `outpost serve` running on this data dir?)",
                            path.display()
                        )
                    })?;
                    handshake(s).await
                }
                Endpoint::Tls {
                    addr,
                    config,
                    server_name,
                } => {
                    let tcp = match self.source {
                        None => TcpStream::connect(addr).await,
                        Some(source) => connect_from(source, addr).await,
                    }
                    .with_context(|| format!("connecting to {addr}"))?;
                    let _ = tcp.set_nodelay(true);
                    let name = rustls::pki_types::ServerName::try_from(server_name.clone())
                        .with_context(|| format!("server name {server_name}"))?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .with_context(|| format!("TLS with {addr}"))?;
                    handshake(tls).await
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", self.endpoint))?
    }

    /// Sends one request; non-2xx answers become an `ApiFailure` error.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let bytes = self.call_raw(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("decoding the answer to {path} from {}", self.endpoint))
    }

    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Bytes> {
        let payload = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        // One id for this request, sent again with its retry: a write the node committed
        // before the connection broke is answered with its first outcome, not applied twice.
        let request_id = crate::shared::request_id::fresh();
        let mut guard = self.conn.lock().await;
        // One retry on a fresh connection when a kept-alive one turns out to be closed.
        for attempt in 0..2 {
            let mut sender = match guard.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, "outpost")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header("outpost-request-id", &request_id)
                .body(Full::new(payload.clone()))?;
            let sent = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let wait = retry_after(resp.headers());
                let body = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, wait, body))
            };
            match tokio::time::timeout(self.timeout, sent).await {
                Err(_) => {
                    return Err(anyhow!(
                        "{} did not answer {path} within {:?}",
                        self.endpoint,
                        self.timeout
                    ));
                }
                Ok(Err(e))
                    if attempt == 0
                        && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) =>
                {
                    continue;
                }
                Ok(Err(e)) => {
                    return Err(anyhow!(e).context(format!("request {path} to {}", self.endpoint)));
                }
                Ok(Ok((status, wait, body))) => {
                    *guard = Some(sender);
                    if status.is_success() {
                        return Ok(body);
                    }
                    let message = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                        .unwrap_or_else(|| {
                            format!("{status}: {}", String::from_utf8_lossy(&body).trim())
                        });
                    return Err(ApiFailure {
                        status,
                        message,
                        retry_after: wait,
                    }
                    .into());
                }
            }
        }
        Err(anyhow!("{} closed the connection twice", self.endpoint))
    }
}

/// A TCP connection to `addr` (the first of its addresses in `source`'s family) made from
/// `source`.
async fn connect_from(source: std::net::IpAddr, addr: &str) -> std::io::Result<TcpStream> {
    let to = tokio::net::lookup_host(addr)
        .await?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("{addr} has no address of the family of {source}"),
            )
        })?;
    let socket = if source.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

impl ApiClient {
    /// GETs `path` into the file `dest`, resuming after its current length with a Range
    /// request (a server that ignores Range gets the file rewritten from the start). Streams
    /// the body to disk as it arrives; returns the file's final length. The caller verifies
    /// the content.
    /// The file never grows past `max_len` bytes: a server that sends more than the declared
    /// size is cut off with an error.
    pub async fn download(&self, path: &str, dest: &std::path::Path, max_len: u64) -> Result<u64> {
        let offset = tokio::fs::metadata(dest)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        self.stream_to_file(Method::GET, path, Bytes::new(), offset, dest, max_len)
            .await
    }

    /// POSTs the JSON `body` to `path` and streams the answer into the new file `dest` (same
    /// limits as `download`; nothing is resumed). Returns the file's length.
    pub async fn post_into_file(
        &self,
        path: &str,
        body: &impl Serialize,
        dest: &std::path::Path,
        max_len: u64,
    ) -> Result<u64> {
        let payload = Bytes::from(serde_json::to_vec(body)?);
        self.stream_to_file(Method::POST, path, payload, 0, dest, max_len)
            .await
    }

    async fn stream_to_file(
        &self,
        method: Method,
        path: &str,
        payload: Bytes,
        offset: u64,
        dest: &std::path::Path,
        max_len: u64,
    ) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let mut sender = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "outpost")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if offset > 0 {
            req = req.header(hyper::header::RANGE, format!("bytes={offset}-"));
        }
        let req = req.body(Full::new(payload))?;
        let resp = tokio::time::timeout(self.timeout, async {
            sender.ready().await?;
            sender.send_request(req).await
        })
        .await
        .map_err(|_| {
            anyhow!(
                "{} did not answer {path} within {:?}",
                self.endpoint,
                self.timeout
            )
        })?
        .with_context(|| format!("request {path} to {}", self.endpoint))?;
        let status = resp.status();
        let mut file = match status {
            StatusCode::PARTIAL_CONTENT => tokio::fs::OpenOptions::new()
                .append(true)
                .open(dest)
                .await
                .with_context(|| format!("opening {}", dest.display()))?,
            StatusCode::OK => tokio::fs::File::create(dest)
                .await
                .with_context(|| format!("creating {}", dest.display()))?,
            _ => {
                let wait = retry_after(resp.headers());
                let body = resp.into_body().collect().await?.to_bytes();
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or_else(|| format!("{status}"));
                return Err(ApiFailure {
                    status,
                    message,
                    retry_after: wait,
                }
                .into());
            }
        };
        let mut written = match status {
            StatusCode::PARTIAL_CONTENT => offset,
            _ => 0,
        };
        let mut body = resp.into_body();
        loop {
            let frame = tokio::time::timeout(self.timeout, body.frame())
                .await
                .map_err(|_| anyhow!("{} stalled sending {path}", self.endpoint))?;
            let Some(frame) = frame else { break };
            let frame =
                frame.with_context(|| format!("receiving {path} from {}", self.endpoint))?;
            if let Ok(data) = frame.into_data() {
                written = written.saturating_add(data.len() as u64);
                if written > max_len {
                    file.flush().await?;
                    bail!(
                        "{} sent more than the {max_len} bytes declared for {path}; stopped",
                        self.endpoint
                    );
                }
                file.write_all(&data)
                    .await
                    .with_context(|| format!("writing {}", dest.display()))?;
            }
        }
        file.flush().await?;
        file.sync_all().await?;
        Ok(tokio::fs::metadata(dest).await?.len())
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "api connection ended");
        }
    });
    Ok(sender)
}

/// No request body (`call(.., NO_BODY)`).
pub const NO_BODY: Option<&()> = None;

/// An API client for this host's node: the Unix socket of the data directory.
pub fn local_client(dd: &Path) -> ApiClient {
    ApiClient::new(Endpoint::Unix(DataDir::new(dd).socket()))
}

/// A path segment or query value, percent-encoded (everything but `A-Za-z0-9-_.~`).
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
