//! Simulated agents for the benchmarks: each enrolled for real (its own key, a CSR through
//! `/v1/enroll` with a client token, its own client certificate), spread over every member,
//! and, against a loopback cluster, each from a loopback address of its own (`agent_source`).
//! `bench sync`, `bench backup`, `bench console` and `bench rollout` start from here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::Method;
use outpost_certs::TlsIdentity;

use crate::shared::client::{ApiClient, Endpoint, local_client};
use crate::shared::datadir::DataDir;
use crate::shared::token::Token;
use crate::wire::{EnrollRequest, EnrollResponse, StatusView};

/// One enrolled simulated agent.
pub struct SimAgent {
    pub client_id: String,
    /// Its node and TLS configuration (its certificate, and a session cache of one entry
    /// kept from one sync to the next, as `outpost agent run` keeps its own).
    pub endpoint: Endpoint,
    /// The loopback address it connects from, when the cluster is on loopback.
    pub source: Option<std::net::IpAddr>,
}

impl SimAgent {
    /// A client of its own for one sync (a new connection, the agent's 5 s timeout).
    pub fn client(&self) -> ApiClient {
        let mut client = ApiClient::new(self.endpoint.clone());
        client.set_timeout(Duration::from_secs(5));
        if let Some(source) = self.source {
            client.set_source(source);
        }
        client
    }
}

/// A fleet of enrolled simulated agents and what enrolling them found.
pub struct Fleet {
    pub agents: Vec<SimAgent>,
    /// The local node's `/v1/status` before enrolling.
    pub status: StatusView,
    pub ca_pem: String,
    /// Every member's API address.
    pub addrs: Vec<String>,
    /// Whether each agent connects from its own loopback address.
    pub own_sources: bool,
    pub enroll_s: f64,
}

/// Enrolls `clients` agents in `group` through the members of the cluster whose local node's
/// data directory is `dd`, 24 at a time (under the per-source cap of anonymous connections),
/// waiting as told when the enrollment rate limit answers 429 (run the nodes with
/// OUTPOST_ENROLL_RATE=5000 for large fleets).
pub async fn enroll(dd: &DataDir, clients: usize, group: &str) -> Result<Fleet> {
    dd.check()?;
    let ca_pem = dd.read(&dd.ca_cert())?;
    let local = local_client(&dd.root);
    let status: StatusView = local.call(Method::GET, "/v1/status", None::<&()>).await?;
    let addrs: Vec<String> = status.members.iter().map(|m| m.api_addr.clone()).collect();
    if addrs.is_empty() {
        bail!("the local node knows no members");
    }
    let req = crate::wire::TokenRequest {
        kind: "client".into(),
        ttl_secs: 3600,
        uses: Some(u32::try_from(clients).context("--clients is too large")?),
        groups: vec![group.into()],
    };
    let token: crate::wire::TokenResponse =
        local.call(Method::POST, "/v1/tokens", Some(&req)).await?;
    let token = Token::decode(&token.token)?;
    let anon = outpost_certs::client_config(&ca_pem, None, &[b"http/1.1"])?;
    let own_sources = addrs.iter().all(|a| {
        a.parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.is_ipv4() && a.ip().is_loopback())
    });

    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(24));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let permit = sem.clone().acquire_owned().await?;
        let addr = addrs[i % addrs.len()].clone();
        let (anon, token, ca_pem) = (anon.clone(), token.clone(), ca_pem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let (key, csr) = outpost_certs::new_key_and_csr(&format!("bench-{i}"))?;
            let source = own_sources.then(|| agent_source(i));
            let mut client = ApiClient::new(Endpoint::Tls {
                addr: addr.clone(),
                config: anon,
                server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
            });
            if let Some(source) = source {
                client.set_source(source);
            }
            let req = EnrollRequest {
                token_id: token.id.clone(),
                secret: token.secret.clone(),
                hostname: format!("bench-{i}"),
                csr_pem: csr,
            };
            let mut waited = Duration::ZERO;
            let r: EnrollResponse = loop {
                match client.call(Method::POST, "/v1/enroll", Some(&req)).await {
                    Err(e)
                        if waited < Duration::from_secs(600)
                            && e.downcast_ref::<crate::shared::client::ApiFailure>()
                                .is_some_and(|f| {
                                    f.status == hyper::StatusCode::TOO_MANY_REQUESTS
                                }) =>
                    {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        waited += Duration::from_millis(500);
                    }
                    other => break other?,
                }
            };
            let id = TlsIdentity::from_pem(&r.cert_pem, &key, &ca_pem)?;
            let config = outpost_certs::client_config(&ca_pem, Some(&id), &[b"http/1.1"])?;
            // Kept for every sync, as `outpost agent run` keeps its own: its session cache
            // holds the node's ticket for the next sync's resumption. One server name (every
            // node answers to the same one), so a cache of one entry is all an agent needs.
            let mut config = (*config).clone();
            config.resumption = rustls::client::Resumption::store(Arc::new(
                rustls::client::ClientSessionMemoryCache::new(1),
            ));
            let endpoint = Endpoint::Tls {
                addr,
                config: Arc::new(config),
                server_name: outpost_certs::ANY_NODE_SERVER_NAME.into(),
            };
            Ok::<_, anyhow::Error>(SimAgent {
                client_id: r.client_id,
                endpoint,
                source,
            })
        }));
    }
    let mut agents = Vec::with_capacity(clients);
    for t in tasks {
        agents.push(t.await?.context("enrolling a simulated agent")?);
    }
    Ok(Fleet {
        agents,
        status,
        ca_pem,
        addrs,
        own_sources,
        enroll_s: t0.elapsed().as_secs_f64(),
    })
}

/// The loopback address simulated agent `i` connects from (127.16.0.1 on): real agents
/// each come from their own machine's address, and the API port's per-source caps (32
/// anonymous connections, which include those in their TLS handshake) are meant for one
/// machine, not for a whole fleet behind one address.
pub fn agent_source(i: usize) -> std::net::IpAddr {
    let base = u32::from(std::net::Ipv4Addr::new(127, 16, 0, 1));
    // Up to 127.255.255.254 (15.7 million agents); beyond, the last address is shared.
    let offset = u32::try_from(i).unwrap_or(u32::MAX).min(0x00EF_FFFD);
    std::net::IpAddr::V4(std::net::Ipv4Addr::from(base + offset))
}
