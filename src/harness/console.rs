//! The web console from outside, as a browser would reach it but without one: HTTPS without
//! a client certificate, the cluster CA trusted, cookies and headers as given. Used by
//! `outpost bench console` (`bench/console.rs`), the demo and the console's route tests.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::harness::localcluster::LocalCluster;

/// One answer of the console.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
    pub took: Duration,
}

impl Answer {
    /// `name=value` of the cookie `name` the answer sets, if it does.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(hyper::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, v)| k == name && !v.is_empty())
            })
            .map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One request over a new HTTPS connection (no client certificate; the CA in `ca_pem`
/// trusted), with `headers` (e.g. `cookie`, `origin`) and a form `body` for a POST.
pub async fn request(
    addr: &str,
    ca_pem: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Answer> {
    request_from(None, addr, ca_pem, method, path, headers, body).await
}

/// `request` from source address `source` (e.g. one of 127.0.0.0/8) when given.
pub async fn request_from(
    source: Option<std::net::IpAddr>,
    addr: &str,
    ca_pem: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Answer> {
    let config = outpost_certs::client_config(ca_pem, None, &[b"http/1.1"])?;
    let started = Instant::now();
    let go = async {
        let tcp = match source {
            None => tokio::net::TcpStream::connect(addr).await?,
            Some(ip) => {
                let to: std::net::SocketAddr = addr.parse()?;
                let socket = match ip {
                    std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.bind(std::net::SocketAddr::new(ip, 0))?;
                socket.connect(to).await?
            }
        };
        let name = rustls::pki_types::ServerName::try_from(outpost_certs::ANY_NODE_SERVER_NAME)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr)
            // One request a connection: none is left holding an anonymous slot.
            .header(hyper::header::CONNECTION, "close");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            took: started.elapsed(),
        })
    };
    tokio::time::timeout(Duration::from_secs(30), go)
        .await
        .map_err(|_| anyhow!("{addr} did not answer {path} within 30 s"))?
        .with_context(|| format!("{path} on {addr}"))
}

/// Adds console account `user` through node `i` with a random password (links are made
/// only for accounts) and returns the password.
pub fn add_account(c: &LocalCluster, i: usize, user: &str) -> Result<String> {
    let password = hex::encode(rand::random::<[u8; 12]>());
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), format!("{password}\n"))?;
    let path = file.path().to_string_lossy().to_string();
    c.cli(
        i,
        &[
            "console",
            "user",
            "add",
            user,
            "--role",
            "admin",
            "--password-file",
            &path,
        ],
    )?;
    Ok(password)
}

/// Signs in with a one-time link from `outpost console login` on node `i` (after adding
/// account `user`) and returns the session cookie (`name=value`).
pub async fn sign_in(c: &LocalCluster, i: usize, user: &str) -> Result<String> {
    add_account(c, i, user)?;
    let link = c.cli(i, &["console", "login", "--as", user])?;
    let path = link
        .trim()
        .split_once("/login/link/")
        .map(|(_, t)| format!("/login/link/{t}"))
        .context("a login link")?;
    let ca = std::fs::read_to_string(c.nodes[i].dir.join("ca.crt"))?;
    let a = request(&c.nodes[i].api_addr, &ca, Method::GET, &path, &[], None).await?;
    if a.status != 303 {
        bail!("the login link answered {}: {}", a.status, a.body);
    }
    a.cookie("__Host-outpost-session")
        .context("no session cookie after the login link")
}

/// One GET of the console's Audit page on node `i` with the session `cookie`, as an operator
/// opens it: how long it took, from the connection to the whole page. `bench audit` and
/// `bench years` time it this one way, so their figures compare. Err unless it answered 200.
pub async fn time_audit_page(c: &LocalCluster, i: usize, cookie: &str) -> Result<Duration> {
    let ca = std::fs::read_to_string(c.nodes[i].dir.join("ca.crt"))?;
    let a = request(
        &c.nodes[i].api_addr,
        &ca,
        Method::GET,
        "/audit",
        &[("cookie", cookie)],
        None,
    )
    .await?;
    if a.status != 200 {
        bail!(
            "the console's Audit page answered {}: {}",
            a.status,
            crate::shared::text::tail(&a.body, 300)
        );
    }
    Ok(a.took)
}
