//! Floods of the API port through the real binary, from other loopback source addresses
//! (127.0.0.2-9) as a machine on the site LAN would send them: idle anonymous connections are
//! refused at the caps or closed by the handshake and idle timeouts, and do not keep an admin
//! out; a burst of enrollments from one source is answered 429 + Retry-After while another
//! source is still served. Every loop is bounded in count and time; every wait has a deadline.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{
    dump_logs, local::admin_identity, local::ca_pem, one_node, serial, tls::connect_from,
    tls::tls_from,
};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use outpost::shared::client::{ApiClient, Endpoint};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::client::TlsStream;

/// The flood: half bare TCP connections (no ClientHello), half completed anonymous TLS
/// sessions, spread over eight source addresses.
const FLOOD: usize = 5000;
const SOURCES: u8 = 8;
/// In rounds of this many connection attempts at once.
const ROUND: usize = 100;

enum Held {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Held {
    /// True when the server closed the connection before `deadline` (end of stream or an
    /// error); false if it was still open then.
    async fn closed_by(mut self, deadline: Instant) -> bool {
        let mut buf = [0u8; 256];
        loop {
            let read = match &mut self {
                Held::Tcp(s) => timeout_at(deadline, s.read(&mut buf)).await,
                Held::Tls(s) => timeout_at(deadline, s.read(&mut buf)).await,
            };
            match read {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                // The server sent something (it should not): keep waiting for the close.
                Ok(Ok(_)) => continue,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_anonymous_flood_is_shed_and_does_not_keep_an_admin_out() {
    let _g = serial();
    let (_dir, c) = one_node().await;
    let addr: SocketAddr = c.nodes[0].api_addr.parse().expect("api address");
    let (ca_pem, admin) = (ca_pem(&c), admin_identity(&c));
    let anon = outpost_certs::client_config(&ca_pem, None, &[b"http/1.1"]).expect("config");

    // The flood, opened as fast as the node accepts it (bounded: FLOOD attempts, 90 s).
    let flood_deadline = Instant::now() + Duration::from_secs(90);
    let mut held = Vec::new();
    let (mut tls_refused, mut tcp_failed) = (0usize, 0usize);
    let attempts: Vec<usize> = (0..FLOOD).collect();
    for round in attempts.chunks(ROUND) {
        if Instant::now() > flood_deadline {
            break;
        }
        let opened = futures::future::join_all(round.iter().map(|&i| {
            let src = [127, 0, 0, 2 + (i % SOURCES as usize) as u8];
            let anon = anon.clone();
            async move {
                let tls = i % 2 == 1;
                let open = async {
                    if tls {
                        tls_from(src, addr, anon)
                            .await
                            .map(|s| Held::Tls(Box::new(s)))
                    } else {
                        Ok(Held::Tcp(connect_from(src, addr).await?))
                    }
                };
                (tls, timeout(Duration::from_secs(10), open).await)
            }
        }))
        .await;
        for (tls, r) in opened {
            match r {
                Ok(Ok(h)) => held.push(h),
                // A handshake on a connection closed at once (cap full) fails: refused.
                _ if tls => tls_refused += 1,
                _ => tcp_failed += 1,
            }
        }
    }
    let opened = held.len();
    let tls_open = held.iter().filter(|h| matches!(h, Held::Tls(_))).count();
    eprintln!(
        "flood: {FLOOD} attempts: {opened} connections held ({tls_open} completed TLS), \
         {tls_refused} TLS handshakes refused, {tcp_failed} TCP connects failed"
    );

    // While the flood is held: an admin from 127.0.0.1 is answered (a fresh source takes
    // over a slot of the biggest anonymous holder, then moves to the authenticated pool).
    let admin_api = ApiClient::new(Endpoint::Tls {
        addr: c.nodes[0].api_addr.clone(),
        config: outpost_certs::client_config(&ca_pem, Some(&admin), &[b"http/1.1"])
            .expect("admin config"),
        server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
    });
    let status: serde_json::Value =
        match admin_api.call(Method::GET, "/v1/status", None::<&()>).await {
            Ok(v) => v,
            Err(e) => {
                dump_logs(&c);
                panic!("an admin request during the flood failed: {e:#}");
            }
        };
    assert_eq!(status["node_id"], 1, "status: {status}");
    // And a write commits: an admin `config set` during the flood.
    let set = outpost::wire::ConfigSetRequest {
        key: "during.flood".into(),
        value: "committed".into(),
        scope: outpost::wire::Scope::Global,
    };
    if let Err(e) = admin_api
        .call::<serde_json::Value>(Method::PUT, "/v1/config", Some(&set))
        .await
    {
        dump_logs(&c);
        panic!("an admin config set during the flood failed: {e:#}");
    }

    // Every flood connection is closed by the server: at once when refused, else by the
    // handshake timeout (5 s) or the anonymous idle timeout (10 s); 45 s leaves slack.
    let deadline = Instant::now() + Duration::from_secs(45);
    let closed = futures::future::join_all(held.into_iter().map(|h| h.closed_by(deadline)))
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    eprintln!("flood: {closed} of {opened} held connections closed by the server");
    if closed < opened {
        dump_logs(&c);
    }
    assert_eq!(closed, opened, "flood connections still open after 45 s");
    // The caps did refuse (a source holds at most 32 anonymous connections): some TLS
    // handshakes met a connection closed at once.
    assert!(
        tls_refused > 0,
        "no handshake was refused: the caps did not engage"
    );

    // Refusals are logged once per source a minute, not once per connection.
    let log = std::fs::read_to_string(&c.nodes[0].log).expect("node log");
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("API connection refused"))
        .count();
    assert!(
        (1..=2 * SOURCES as usize).contains(&refusal_lines),
        "{refusal_lines} refusal lines for {SOURCES} sources"
    );

    // And the node still serves after the flood.
    let again: serde_json::Value = admin_api
        .call(Method::GET, "/v1/status", None::<&()>)
        .await
        .expect("status after the flood");
    assert_eq!(again["node_id"], 1);
}

/// One keep-alive HTTP/1.1 connection over anonymous TLS from `src`.
async fn http_from(
    src: [u8; 4],
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<SendRequest<Full<Bytes>>> {
    let tls = tls_from(src, to, config).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// POSTs `body`; returns the status and the Retry-After header, if any.
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    body: &serde_json::Value,
) -> Result<(StatusCode, Option<String>)> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(hyper::header::HOST, "outpost")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let answer = timeout(Duration::from_secs(10), async {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let _ = resp.into_body().collect().await?;
        anyhow::Ok((status, retry_after))
    })
    .await
    .with_context(|| format!("POST {path} timed out"))??;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_enrollments_from_one_source_gets_429_while_another_source_is_served() {
    let _g = serial();
    let (_dir, c) = one_node().await;
    let addr: SocketAddr = c.nodes[0].api_addr.parse().expect("api address");
    let ca_pem = std::fs::read_to_string(c.nodes[0].dir.join("ca.crt")).expect("ca.crt");
    let anon = outpost_certs::client_config(&ca_pem, None, &[b"http/1.1"]).expect("config");
    // A wrong token and no real CSR: whatever passes the limit is refused by the handler.
    let enroll = serde_json::json!({
        "token_id": "flood",
        "secret": "00",
        "hostname": "flood",
        "csr_pem": "not a CSR",
    });

    let result = async {
        let mut from2 = http_from([127, 0, 0, 2], addr, anon.clone()).await?;
        let (mut limited, mut other) = (0usize, Vec::new());
        let started = Instant::now();
        for _ in 0..100 {
            let (status, retry_after) = post(&mut from2, "/v1/enroll", &enroll).await?;
            if status == StatusCode::TOO_MANY_REQUESTS {
                let secs: u64 = retry_after
                    .as_deref()
                    .context("429 without Retry-After")?
                    .parse()
                    .context("Retry-After in whole seconds")?;
                if !(1..=60).contains(&secs) {
                    bail!("Retry-After {secs} s");
                }
                limited += 1;
            } else {
                other.push(status);
            }
        }
        eprintln!(
            "burst: {limited} of 100 answered 429 in {:.1} s; others: {other:?}",
            started.elapsed().as_secs_f64()
        );
        if limited < 50 {
            bail!("only {limited} of 100 enrollments from one source were limited");
        }
        // The requests that passed reached the handler, which refused the bad request.
        if other.iter().any(|s| s.is_success()) {
            bail!("an enrollment with a wrong token succeeded: {other:?}");
        }

        // Join shares the budget: the same source is still limited.
        let join = serde_json::json!({
            "token_id": "flood", "secret": "00", "name": "flood", "api_addr": "127.0.0.1:1",
            "peer_addr": "127.0.0.1:2", "version": "0", "csr_pem": "not a CSR",
        });
        let (status, _) = post(&mut from2, "/v1/join", &join).await?;
        if status != StatusCode::TOO_MANY_REQUESTS {
            bail!("join from the flooding source answered {status}, not 429");
        }

        // Another source is served meanwhile (the handler's own refusal, not 429).
        let mut from3 = http_from([127, 0, 0, 3], addr, anon.clone()).await?;
        let (status, _) = post(&mut from3, "/v1/enroll", &enroll).await?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            bail!("a second source was limited by the first one's burst");
        }
        anyhow::Ok(())
    };
    match timeout(Duration::from_secs(120), result).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            dump_logs(&c);
            panic!("{e:#}");
        }
        Err(_) => {
            dump_logs(&c);
            panic!("the rate-limit test did not finish in 120 s");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_anonymous_connections_are_closed_while_an_idle_admin_connection_stays() {
    let _g = serial();
    let (_dir, c) = one_node().await;
    let addr: SocketAddr = c.nodes[0].api_addr.parse().expect("api address");
    let (ca_pem, admin) = (ca_pem(&c), admin_identity(&c));
    let anon = outpost_certs::client_config(&ca_pem, None, &[b"http/1.1"]).expect("config");
    let with_cert =
        outpost_certs::client_config(&ca_pem, Some(&admin), &[b"http/1.1"]).expect("config");

    let result = async {
        let get = |path: &str| {
            Request::builder()
                .uri(path)
                .header(hyper::header::HOST, "outpost")
                .body(Full::new(Bytes::new()))
        };
        // A bare TCP connection that never says hello: the handshake timeout (5 s).
        let bare = connect_from([127, 0, 0, 8], addr).await?;
        // An anonymous session that asked once and then idles: the idle timeout (10 s).
        let tls = tls_from([127, 0, 0, 9], addr, anon).await?;
        let (mut anon_http, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let anon_conn = tokio::spawn(conn);
        let resp = anon_http.send_request(get("/healthz")?).await?;
        let _ = resp.into_body().collect().await?;
        // An admin session that asked once and then idles as long: it stays (60 s).
        let tls = tls_from([127, 0, 0, 1], addr, with_cert).await?;
        let (mut admin_http, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let resp = admin_http.send_request(get("/v1/status")?).await?;
        if !resp.status().is_success() {
            bail!("admin status answered {}", resp.status());
        }
        let _ = resp.into_body().collect().await?;
        let asked = Instant::now();

        let deadline = Instant::now() + Duration::from_secs(40);
        if !Held::Tcp(bare).closed_by(deadline).await {
            bail!("a connection without a ClientHello was still open after 40 s");
        }
        if timeout_at(deadline, anon_conn).await.is_err() {
            bail!("an idle anonymous TLS connection was still open after 40 s");
        }
        // Past the anonymous idle timeout, the admin's connection still answers.
        tokio::time::sleep_until(asked + Duration::from_secs(15)).await;
        if admin_http.is_closed() {
            bail!("the idle admin connection was closed within 15 s");
        }
        let resp = timeout(
            Duration::from_secs(10),
            admin_http.send_request(get("/v1/status")?),
        )
        .await
        .context("second admin request timed out")??;
        if !resp.status().is_success() {
            bail!("second admin status answered {}", resp.status());
        }
        anyhow::Ok(())
    };
    match timeout(Duration::from_secs(120), result).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            dump_logs(&c);
            panic!("{e:#}");
        }
        Err(_) => {
            dump_logs(&c);
            panic!("the idle-timeout test did not finish in 120 s");
        }
    }
}
