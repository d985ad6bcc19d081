//! Limits of the API port against a flood from the site LAN: connection caps (per port, per
//! source address, and a smaller pool for anonymous connections), idle timeouts through an IO
//! wrapper that records when bytes last moved, and a rate limit for the two routes an
//! anonymous caller may use to make the node work (enroll and join).
//!
//! A connection is *anonymous* from accept until its TLS handshake shows a client certificate;
//! then it moves to the *authenticated* pool. The anonymous pool is small and shared fairly:
//! when it is full, a newcomer from a source holding fewer anonymous connections than the
//! biggest holder takes the oldest slot of that holder (which is closed), so a flood from a
//! few addresses cannot keep an admin, a node or an agent from starting its handshake.
//!
//! The caps and the rate limits are pure bookkeeping (`Pool`, governor's GCRA); the sockets
//! stay in `crate::node::server`. The numbers are in `LimitsConfig::default`, with the reasons.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::api::Caller;
use crate::metrics::ConstFamily;

pub use crate::api::activity::{Activity, Busy, Closed, Watched};
use crate::api::pool::{Full, Pool, PoolKind};
use crate::api::requests::{Class, Report, connection_body_bytes};

/// The remote address of an API request's connection, in the request's extensions (HTTPS
/// only: requests over the local Unix socket have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote(pub SocketAddr);

/// The limits of the API port. The defaults are what a 3-5 node appliance serving a few
/// thousand agents needs; see each field.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// From accept to the end of the TLS handshake. A LAN handshake takes milliseconds; 5 s
    /// leaves room for a loaded node and a slow agent.
    pub handshake_timeout: Duration,
    /// An anonymous connection on which no byte moved for this long is closed (HTTP/1 and
    /// HTTP/2 alike); it is also hyper's HTTP/1 header read timeout (which in hyper 1.12 also
    /// runs while a keep-alive connection waits for its next request). Join and enroll are
    /// one request each.
    pub idle_anonymous: Duration,
    /// The same for connections with a certificate (and the local socket). An agent opens
    /// a connection per sync and closes it at the end; a download keeps moving bytes. While a request is being
    /// handled the clock stops (a blob is fetched from a peer before it is streamed).
    pub idle_authenticated: Duration,
    /// An anonymous connection is closed after this long whatever moves on it: it cannot be
    /// kept open by a trickle (HTTP/2 pings, one byte at a time).
    pub anonymous_max_age: Duration,
    /// Anonymous connections at once (in handshake, or established without a certificate).
    pub anonymous_total: usize,
    /// Anonymous connections at once from one source (IPv4 address, IPv6 /64).
    pub anonymous_per_source: usize,
    /// Connections with a certificate at once: an agent holds one while it syncs.
    pub authenticated_total: usize,
    /// Connections with a certificate from one source: generous, agents may sit behind NAT.
    pub authenticated_per_source: usize,
    /// Connections with a certificate at once per identity (client id, admin name, node
    /// id), whatever the source: one certificate, revoked or not, cannot hold the pool.
    /// An agent holds one connection at a time; an admin's CLI one per command.
    pub per_client: usize,
    pub per_admin: usize,
    /// A peer fetches blobs and forwards over a few connections at once.
    pub per_node: usize,
    /// A connection with a certificate is closed after this long whatever moves on it (an
    /// agent opens one per sync; a download resumes with a Range request).
    pub authenticated_max_age: Duration,
    /// Bytes of request bodies in flight at once per class (anonymous, client, operator:
    /// admin, local socket and node): a request reserves what it may read (its declared
    /// length, or the route's limit) before its body is read, and waits at most
    /// `body_wait` for room, then is answered 429.
    pub body_bytes: [usize; 3],
    pub body_wait: Duration,
    /// HTTP/2 streams at once on one connection.
    pub http2_streams: u32,
    /// Inventory reports per minute per client, and the burst allowed. The agent reports
    /// only when its facts changed.
    pub inventory_rate: (u32, u32),
    /// Inventory changes one client may make in an hour, cluster-wide (counted from the
    /// replicated history by `agent_inventory`).
    pub inventory_per_hour: u32,
    /// Deployment results per minute per client, and the burst allowed: a deployment yields
    /// one result per attempt, and a sync may act on several.
    pub results_rate: (u32, u32),
    /// Enroll + join requests per second from one source, and the burst allowed.
    pub rate_per_source: (u32, u32),
    /// Enroll + join requests per second from all sources together, and the burst allowed.
    pub rate_global: (u32, u32),
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            handshake_timeout: Duration::from_secs(5),
            idle_anonymous: Duration::from_secs(10),
            idle_authenticated: Duration::from_secs(60),
            anonymous_max_age: Duration::from_secs(120),
            anonymous_total: 256,
            anonymous_per_source: 32,
            authenticated_total: 4096,
            authenticated_per_source: 1024,
            per_client: 16,
            per_admin: 32,
            per_node: 64,
            authenticated_max_age: Duration::from_secs(3600),
            // Anonymous: each of the 256 anonymous connections reads one 64 KiB body at a time
            // (`connection_body_bytes`), so 16 MiB is never all taken and one source (32
            // connections) holds at most 2 MiB of it. 64 inventory reports of 1 MiB (or a
            // thousand small results); 21 bundle commits of 12 MiB.
            body_bytes: [16 << 20, 64 << 20, 256 << 20],
            body_wait: Duration::from_secs(2),
            http2_streams: 32,
            // One client's reports through one node: at most 60 + 3 an hour of at most
            // 1 MiB each (the limit is each node's, in memory).
            inventory_rate: (1, 3),
            inventory_per_hour: outpost_storage::INVENTORY_CHANGES_PER_HOUR,
            results_rate: (30, 60),
            // An agent enrolls once; a rollout behind one NAT address gets 20 at once, then 5
            // a second (1,000 agents in under 4 minutes, each told when to retry).
            rate_per_source: (5, 20),
            // Each enroll or join costs a CSR check, a signature and a Raft entry with its
            // audit row even when the token is wrong: 50 a second keeps that under a few
            // percent of one core and far below what the batcher commits.
            rate_global: (50, 100),
        }
    }
}

impl LimitsConfig {
    /// The defaults, with the enroll/join rate taken from `OUTPOST_ENROLL_RATE` when set
    /// (requests per second per source; the burst is four times that and the cluster-wide
    /// limit ten times): an operations setting for a mass rollout behind one address, and
    /// for `bench sync`, whose simulated agents all enroll from one host.
    pub fn from_env() -> Self {
        let mut cfg = LimitsConfig::default();
        if let Some(rate) = std::env::var("OUTPOST_ENROLL_RATE")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|r| *r > 0)
        {
            cfg.rate_per_source = (rate, rate.saturating_mul(4));
            cfg.rate_global = (rate.saturating_mul(10), rate.saturating_mul(20));
        }
        // `OUTPOST_INVENTORY_RATE=N`: N inventory reports a minute per client, burst N (a
        // test setting: it shows the cluster-wide hourly budget behind the per-node rate).
        if let Some(rate) = std::env::var("OUTPOST_INVENTORY_RATE")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|r| *r > 0)
        {
            cfg.inventory_rate = (rate, rate);
        }
        // `OUTPOST_INVENTORY_PER_HOUR=N`: the cluster-wide hourly budget of one client's
        // inventory changes (a bench setting: `bench years` compresses a month into seconds
        // and scales this rate by the same factor as every other).
        if let Some(n) = std::env::var("OUTPOST_INVENTORY_PER_HOUR")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| *n > 0)
        {
            cfg.inventory_per_hour = n;
        }
        cfg
    }
}

/// Why a connection was refused at once (a cap was full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AnonymousTotal,
    AnonymousPerSource,
    AuthenticatedTotal,
    AuthenticatedPerSource,
    AuthenticatedPerIdentity,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::AnonymousTotal,
        Refusal::AnonymousPerSource,
        Refusal::AuthenticatedTotal,
        Refusal::AuthenticatedPerSource,
        Refusal::AuthenticatedPerIdentity,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AnonymousTotal => "anonymous_total",
            Refusal::AnonymousPerSource => "anonymous_per_source",
            Refusal::AuthenticatedTotal => "authenticated_total",
            Refusal::AuthenticatedPerSource => "authenticated_per_source",
            Refusal::AuthenticatedPerIdentity => "authenticated_per_identity",
        }
    }
}

/// Connection caps, rate limits and their counters for one API port. `runtime` creates one
/// and hands it to `server::serve_tls`; `/metrics` shows it through `families`.
pub struct ApiLimits {
    cfg: LimitsConfig,
    anonymous: Mutex<Pool>,
    authenticated: Mutex<Pool>,
    refused: [AtomicU64; Refusal::ALL.len()],
    closed: [AtomicU64; Closed::ALL.len()],
    /// Authenticated connections held per identity (`Caller::actor`).
    identities: Mutex<HashMap<String, usize>>,
    /// Bytes of request bodies in flight, per `Class`.
    bodies: [Arc<Semaphore>; 3],
    /// Requests answered 429 because their class's body bytes were all in flight.
    bodies_refused: [AtomicU64; 3],
    /// Reports per client: [inventory, results], and how many were answered 429.
    reports: [DefaultKeyedRateLimiter<String>; 2],
    reports_limited: [AtomicU64; 2],
    limited_source: AtomicU64,
    limited_global: AtomicU64,
    /// Completed TLS handshakes: [full, resumed].
    handshakes: [AtomicU64; 2],
    per_source: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
    clock: DefaultClock,
    /// Last warning per source and kind (refusal, 429): one line each a minute at most.
    logged: Mutex<HashMap<(IpAddr, &'static str), Instant>>,
}

/// At most this many sources are remembered for log throttling between two prunes; beyond
/// it new sources are not logged (the counters still count them).
const LOGGED_SOURCES: usize = 4096;
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The keyed rate limiter is pruned when it holds more sources than this (and on every
/// `prune`), so its memory stays bounded whatever the number of addresses.
const RATE_KEYS: usize = 65_536;
/// How often `serve_tls` calls `prune`.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl ApiLimits {
    pub fn new(cfg: LimitsConfig) -> Arc<ApiLimits> {
        let quota = |(per_s, burst): (u32, u32)| {
            let per_s = NonZeroU32::new(per_s).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst).unwrap_or(per_s);
            Quota::per_second(per_s).allow_burst(burst)
        };
        Arc::new(ApiLimits {
            anonymous: Mutex::new(Pool::new(
                cfg.anonymous_total,
                cfg.anonymous_per_source,
                true,
            )),
            authenticated: Mutex::new(Pool::new(
                cfg.authenticated_total,
                cfg.authenticated_per_source,
                false,
            )),
            refused: Default::default(),
            closed: Default::default(),
            identities: Mutex::new(HashMap::new()),
            bodies: cfg.body_bytes.map(|b| Arc::new(Semaphore::new(b))),
            bodies_refused: Default::default(),
            reports: [cfg.inventory_rate, cfg.results_rate].map(|(per_min, burst)| {
                let per_min = NonZeroU32::new(per_min).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(burst).unwrap_or(per_min);
                RateLimiter::keyed(Quota::per_minute(per_min).allow_burst(burst))
            }),
            reports_limited: Default::default(),
            limited_source: AtomicU64::new(0),
            limited_global: AtomicU64::new(0),
            handshakes: Default::default(),
            per_source: RateLimiter::keyed(quota(cfg.rate_per_source)),
            global: RateLimiter::direct(quota(cfg.rate_global)),
            clock: DefaultClock::default(),
            logged: Mutex::new(HashMap::new()),
            cfg,
        })
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    /// The rate limit of enroll and join: `Err(retry after)` when this source, or all
    /// sources together, sent too many. Callers answer `too_many(retry_after)`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let key = source_key(ip);
        if self.per_source.len() > RATE_KEYS {
            self.per_source.retain_recent();
        }
        let refused = match self.per_source.check_key(&key) {
            Err(not_until) => Some((not_until, &self.limited_source, "source")),
            Ok(()) => match self.global.check() {
                Err(not_until) => Some((not_until, &self.limited_global, "global")),
                Ok(()) => None,
            },
        };
        match refused {
            None => Ok(()),
            Some((not_until, counter, limit)) => {
                counter.fetch_add(1, Ordering::Relaxed);
                if self.should_log(key, "rate") {
                    tracing::warn!(source = %key, limit, "enroll/join rate limit: answering 429 (logged once a minute per source)");
                }
                Err(not_until.wait_time_from(self.clock.now()))
            }
        }
    }

    /// Takes an anonymous slot for a connection just accepted from `ip`. `None`: a cap is
    /// full, the caller closes the connection (already counted and logged).
    pub fn admit_anonymous(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        self.admit(PoolKind::Anonymous, ip)
    }

    /// Moves a connection whose handshake showed `caller`'s certificate to the authenticated
    /// pool, within its identity's cap; its anonymous slot is given back when `anonymous` is
    /// dropped by the caller.
    pub fn admit_authenticated(self: &Arc<Self>, ip: IpAddr, caller: &Caller) -> Option<Slot> {
        let cap = match caller {
            Caller::Client { .. } => self.cfg.per_client,
            Caller::Admin { .. } => self.cfg.per_admin,
            Caller::Node(_) => self.cfg.per_node,
            _ => usize::MAX,
        };
        let who = caller.actor();
        {
            let mut held = lock(&self.identities);
            let n = held.entry(who.clone()).or_insert(0);
            if *n >= cap {
                drop(held);
                self.refused[Refusal::AuthenticatedPerIdentity as usize]
                    .fetch_add(1, Ordering::Relaxed);
                if self.should_log(source_key(ip), "identity") {
                    tracing::warn!(source = %source_key(ip), identity = %who, cap, "API connection refused: this identity holds its cap of connections (logged once a minute per source)");
                }
                return None;
            }
            *n += 1;
        }
        let slot = self.admit(PoolKind::Authenticated, ip);
        match slot {
            Some(mut slot) => {
                slot.identity = Some(who);
                Some(slot)
            }
            None => {
                self.release_identity(&who);
                None
            }
        }
    }

    fn release_identity(&self, who: &str) {
        let mut held = lock(&self.identities);
        if let Some(n) = held.get_mut(who) {
            *n -= 1;
            if *n == 0 {
                held.remove(who);
            }
        }
    }

    /// Reserves room for `bytes` of a `class` request's body before it is read: waits at
    /// most `body_wait`, then `None` (counted): the caller answers 429.
    pub async fn reserve_body(&self, class: Class, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let pool = &self.bodies[class as usize];
        let want = u32::try_from(bytes.min(self.cfg.body_bytes[class as usize] as u64))
            .unwrap_or(u32::MAX);
        match tokio::time::timeout(self.cfg.body_wait, pool.clone().acquire_many_owned(want)).await
        {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                self.bodies_refused[class as usize].fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Reserves room for `bytes` of a body on one connection (its own budget,
    /// `connection_body_bytes`): waits at most `body_wait`, then `None` (counted with the
    /// class's refusals).
    pub async fn reserve_connection_body(
        &self,
        class: Class,
        connection: &Arc<Semaphore>,
        bytes: u64,
    ) -> Option<OwnedSemaphorePermit> {
        let want =
            u32::try_from(bytes.min(connection_body_bytes(class) as u64)).unwrap_or(u32::MAX);
        match tokio::time::timeout(
            self.cfg.body_wait,
            connection.clone().acquire_many_owned(want),
        )
        .await
        {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                self.bodies_refused[class as usize].fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The per-client rate of `report`: `Err(retry after)` when this client sent too many.
    pub fn check_report(&self, report: Report, client_id: &str) -> Result<(), Duration> {
        let limiter = &self.reports[report as usize];
        if limiter.len() > RATE_KEYS {
            limiter.retain_recent();
        }
        let key = client_id.to_string();
        limiter.check_key(&key).map_err(|not_until| {
            self.reports_limited[report as usize].fetch_add(1, Ordering::Relaxed);
            not_until.wait_time_from(self.clock.now())
        })
    }

    pub fn count_closed(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `count_closed`, for a closing the caller logs: true when `ip`'s source was not logged
    /// for this reason in the last minute (a peer cannot fill the log by reconnecting).
    pub fn count_closed_logged(&self, why: Closed, ip: IpAddr) -> bool {
        self.count_closed(why);
        self.should_log(source_key(ip), why.label())
    }

    /// One more completed TLS handshake, full or resumed.
    pub fn count_handshake(&self, resumed: bool) {
        self.handshakes[usize::from(resumed)].fetch_add(1, Ordering::Relaxed);
    }

    /// Completed TLS handshakes since start.
    pub fn handshakes(&self) -> crate::wire::TlsHandshakes {
        crate::wire::TlsHandshakes {
            full: self.handshakes[0].load(Ordering::Relaxed),
            resumed: self.handshakes[1].load(Ordering::Relaxed),
        }
    }

    /// Current (anonymous, authenticated) connections.
    pub fn current(&self) -> (usize, usize) {
        (lock(&self.anonymous).count, lock(&self.authenticated).count)
    }

    /// Connections refused at once for `why` since start.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Forgets rate-limit state indistinguishable from a fresh one and old log marks, so
    /// memory stays bounded. `serve_tls` calls it every `PRUNE_EVERY`.
    pub fn prune(&self) {
        self.per_source.retain_recent();
        self.per_source.shrink_to_fit();
        for r in &self.reports {
            r.retain_recent();
            r.shrink_to_fit();
        }
        let now = Instant::now();
        lock(&self.logged).retain(|_, at| now.duration_since(*at) < LOG_EVERY);
    }

    /// The port's gauges and counters for `/metrics`.
    pub fn families(&self) -> Vec<ConstFamily> {
        let (anonymous, authenticated) = self.current();
        let mut refused = ConstFamily::counter(
            "outpost_api_connections_refused",
            "API connections closed at once because a cap was full (total, per source, per identity).",
        );
        for r in Refusal::ALL {
            refused = refused.labelled("reason", r.label(), self.refused(r));
        }
        let mut closed = ConstFamily::counter(
            "outpost_api_connections_closed",
            "API connections the server ended: handshake timeout, idle, maximum age, anonymous slot taken over, resumed session with an expired certificate, certificate of a revoked client or admin or of a removed node (refused after the handshake).",
        );
        for c in Closed::ALL {
            closed = closed.labelled(
                "reason",
                c.label(),
                self.closed[c as usize].load(Ordering::Relaxed),
            );
        }
        let h = self.handshakes();
        let mut in_flight = ConstFamily::gauge(
            "outpost_api_body_bytes_in_flight",
            "Bytes of request bodies reserved by requests being read or handled, by class of caller.",
        );
        let mut body_refused = ConstFamily::counter(
            "outpost_api_body_refused",
            "Requests answered 429 because their class's body bytes were all in flight.",
        );
        for c in Class::ALL {
            let i = c as usize;
            in_flight = in_flight.labelled(
                "class",
                c.label(),
                self.cfg.body_bytes[i].saturating_sub(self.bodies[i].available_permits()),
            );
            body_refused = body_refused.labelled(
                "class",
                c.label(),
                self.bodies_refused[i].load(Ordering::Relaxed),
            );
        }
        vec![
            ConstFamily::gauge(
                "outpost_api_connections",
                "Open connections on the API port (anonymous: no client certificate (yet)).",
            )
            .labelled("kind", "anonymous", anonymous)
            .labelled("kind", "authenticated", authenticated),
            refused,
            closed,
            ConstFamily::counter(
                "outpost_api_tls_handshakes",
                "TLS handshakes completed on the API port: full, or resumed with a session ticket (agents' later syncs).",
            )
            .labelled("kind", "full", h.full)
            .labelled("kind", "resumed", h.resumed),
            ConstFamily::counter(
                "outpost_api_rate_limited",
                "Enroll and join requests answered 429, by the limit that refused them.",
            )
            .labelled("limit", "source", self.limited_source.load(Ordering::Relaxed))
            .labelled("limit", "global", self.limited_global.load(Ordering::Relaxed)),
            in_flight,
            body_refused,
            ConstFamily::counter(
                "outpost_api_reports_limited",
                "Client reports answered 429 by the per-client rate.",
            )
            .labelled("report", "inventory", self.reports_limited[0].load(Ordering::Relaxed))
            .labelled("report", "results", self.reports_limited[1].load(Ordering::Relaxed)),
        ]
    }

    fn admit(self: &Arc<Self>, kind: PoolKind, ip: IpAddr) -> Option<Slot> {
        let key = source_key(ip);
        let (admitted, victim) = {
            let mut pool = lock(self.pool(kind));
            match pool.admit(key) {
                Ok(x) => x,
                Err(full) => {
                    drop(pool);
                    let why = match (kind, full) {
                        (PoolKind::Anonymous, Full::Total) => Refusal::AnonymousTotal,
                        (PoolKind::Anonymous, Full::PerSource) => Refusal::AnonymousPerSource,
                        (PoolKind::Authenticated, Full::Total) => Refusal::AuthenticatedTotal,
                        (PoolKind::Authenticated, Full::PerSource) => {
                            Refusal::AuthenticatedPerSource
                        }
                    };
                    self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
                    if self.should_log(key, "refused") {
                        tracing::warn!(source = %key, reason = why.label(), "API connection refused: cap full (logged once a minute per source)");
                    }
                    return None;
                }
            }
        };
        if let Some(victim) = victim {
            victim.notify_one();
        }
        Some(Slot {
            limits: self.clone(),
            kind,
            key,
            id: admitted.0,
            kicked: admitted.1,
            identity: None,
        })
    }

    fn pool(&self, kind: PoolKind) -> &Mutex<Pool> {
        match kind {
            PoolKind::Anonymous => &self.anonymous,
            PoolKind::Authenticated => &self.authenticated,
        }
    }

    fn should_log(&self, source: IpAddr, kind: &'static str) -> bool {
        let now = Instant::now();
        let key = (source, kind);
        let mut logged = lock(&self.logged);
        match logged.get(&key) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            Some(_) => {
                logged.insert(key, now);
                true
            }
            None if logged.len() >= LOGGED_SOURCES => false,
            None => {
                logged.insert(key, now);
                true
            }
        }
    }
}

/// A connection's place in a pool, given back on drop.
pub struct Slot {
    limits: Arc<ApiLimits>,
    kind: PoolKind,
    key: IpAddr,
    id: u64,
    kicked: Arc<Notify>,
    /// Counted against its identity's cap (authenticated pool).
    identity: Option<String>,
}

impl Slot {
    /// Resolves when the slot was taken over by another source (anonymous pool only): the
    /// connection must close.
    pub async fn kicked(&self) {
        self.kicked.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(self.limits.pool(self.kind)).release(self.key, self.id);
        if let Some(who) = &self.identity {
            self.limits.release_identity(who);
        }
    }
}

/// 429 with `Retry-After` (whole seconds, rounded up) and the API's error body.
pub fn too_many(retry_after: Duration) -> Response {
    too_many_of("enrollment or join requests", retry_after)
}

/// `too_many`, naming what there were too many of.
pub fn too_many_of(what: &str, retry_after: Duration) -> Response {
    let secs = retry_after_secs(retry_after);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        Json(serde_json::json!({
            "error": format!("too many {what}; retry in {secs} s")
        })),
    )
        .into_response()
}

/// The key a source is counted under: an IPv4 address (IPv4-mapped IPv6 included), or the
/// /64 of an IPv6 address (one host usually holds a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_and_total_caps_refuse_without_take_over() {
        let mut p = Pool::new(3, 2, false);
        assert!(p.admit(ip("10.0.0.1")).is_ok());
        assert!(p.admit(ip("10.0.0.1")).is_ok());
        assert_eq!(p.admit(ip("10.0.0.1")).err(), Some(Full::PerSource));
        assert!(p.admit(ip("10.0.0.2")).is_ok());
        assert_eq!(p.admit(ip("10.0.0.3")).err(), Some(Full::Total));
        assert_eq!(p.count, 3);
    }

    #[test]
    fn a_full_anonymous_pool_gives_a_newcomer_the_oldest_slot_of_the_biggest_holder() {
        let mut p = Pool::new(4, 3, true);
        let (first, _) = p.admit(ip("10.0.0.1")).unwrap();
        p.admit(ip("10.0.0.1")).unwrap();
        p.admit(ip("10.0.0.1")).unwrap();
        p.admit(ip("10.0.0.2")).unwrap();
        // Full. A newcomer holding nothing takes 10.0.0.1's oldest slot.
        let (_, victim) = p.admit(ip("10.0.0.9")).unwrap();
        assert!(victim.is_some());
        assert_eq!(p.count, 4);
        assert_eq!(p.held(ip("10.0.0.1")), 2);
        // The taken-over connection ends later: giving its slot back changes nothing.
        p.release(ip("10.0.0.1"), first.0);
        assert_eq!(p.count, 4);
        assert_eq!(p.held(ip("10.0.0.1")), 2);
        // Now 2/1/1: 10.0.0.2 (holding 1) still gets in over 10.0.0.1 (holding 2) ...
        assert!(p.admit(ip("10.0.0.2")).unwrap().1.is_some());
        // ... but at 1/2/1 nobody holds more than 10.0.0.2 does: refused.
        assert_eq!(p.admit(ip("10.0.0.2")).err(), Some(Full::Total));
        // A source holding nothing still gets in.
        assert!(p.admit(ip("10.0.0.7")).unwrap().1.is_some());
    }

    /// A closing logged by its caller is counted every time and logged once a minute per
    /// source (so a peer reconnecting in a loop cannot fill the log).
    #[test]
    fn logged_closings_are_counted_always_and_logged_once_per_source() {
        let limits = ApiLimits::new(LimitsConfig::default());
        let why = Closed::ExpiredResumption;
        assert!(limits.count_closed_logged(why, ip("10.0.0.1")));
        assert!(!limits.count_closed_logged(why, ip("10.0.0.1")));
        assert!(limits.count_closed_logged(why, ip("10.0.0.2")));
        let out = crate::metrics::scrape::render(limits.families());
        assert!(
            out.contains("outpost_api_connections_closed_total{reason=\"expired_resumption\"} 3"),
            "{out}"
        );
    }

    /// One identity holds at most its cap of authenticated connections, from any source;
    /// another identity still gets in, and a slot given back can be taken again.
    #[test]
    fn one_identity_holds_at_most_its_cap() {
        let limits = ApiLimits::new(LimitsConfig::default());
        let client = |id: &str| Caller::Client {
            id: id.into(),
            serial: "01".into(),
            not_before: 0,
            not_after: 0,
        };
        let cap = limits.config().per_client;
        let held: Vec<Slot> = (0..cap)
            .map(|i| {
                limits
                    .admit_authenticated(IpAddr::from([10, 0, 0, i as u8]), &client("a"))
                    .expect("within the cap")
            })
            .collect();
        assert!(
            limits
                .admit_authenticated(ip("10.0.1.1"), &client("a"))
                .is_none()
        );
        assert_eq!(limits.refused(Refusal::AuthenticatedPerIdentity), 1);
        assert!(
            limits
                .admit_authenticated(ip("10.0.1.1"), &client("b"))
                .is_some()
        );
        drop(held);
        assert!(
            limits
                .admit_authenticated(ip("10.0.1.1"), &client("a"))
                .is_some()
        );
        assert!(lock(&limits.identities).is_empty());
    }

    #[test]
    fn reports_are_limited_per_client() {
        let limits = ApiLimits::new(LimitsConfig::default());
        let (_, burst) = limits.config().inventory_rate;
        let passed = (0..20)
            .filter(|_| limits.check_report(Report::Inventory, "a").is_ok())
            .count();
        assert_eq!(passed, burst as usize);
        let wait = limits.check_report(Report::Inventory, "a").unwrap_err();
        assert!(wait > Duration::from_secs(30), "{wait:?}");
        assert!(limits.check_report(Report::Inventory, "b").is_ok());
        assert!(limits.check_report(Report::Results, "a").is_ok());
    }

    #[tokio::test]
    async fn one_connection_reads_one_body_of_its_class_at_a_time() {
        let limits = ApiLimits::new(LimitsConfig {
            body_wait: Duration::from_millis(50),
            ..LimitsConfig::default()
        });
        let one = Arc::new(Semaphore::new(connection_body_bytes(Class::Anonymous)));
        let other = Arc::new(Semaphore::new(connection_body_bytes(Class::Anonymous)));
        let full = crate::api::BODY_LIMIT as u64;
        let first = limits
            .reserve_connection_body(Class::Anonymous, &one, full)
            .await
            .expect("room on a fresh connection");
        // A second stream of the same connection waits, then is refused...
        assert!(
            limits
                .reserve_connection_body(Class::Anonymous, &one, 1)
                .await
                .is_none()
        );
        // ... while another connection has its own room.
        assert!(
            limits
                .reserve_connection_body(Class::Anonymous, &other, full)
                .await
                .is_some()
        );
        drop(first);
        assert!(
            limits
                .reserve_connection_body(Class::Anonymous, &one, full)
                .await
                .is_some()
        );
        // Every anonymous connection at once, each with a full body, fits the class's room:
        // a few sources cannot take it from the others.
        let cfg = LimitsConfig::default();
        assert!(
            cfg.anonymous_total * connection_body_bytes(Class::Anonymous)
                <= cfg.body_bytes[Class::Anonymous as usize]
        );
        // A client's and an operator's largest route fits its connection's room.
        assert!(crate::api::INVENTORY_BODY_LIMIT <= connection_body_bytes(Class::Client));
        assert!(crate::api::BUNDLE_BODY_LIMIT <= connection_body_bytes(Class::Operator));
    }

    #[tokio::test]
    async fn body_bytes_in_flight_are_bounded_per_class() {
        let limits = ApiLimits::new(LimitsConfig {
            body_bytes: [100, 1000, 1000],
            body_wait: Duration::from_millis(50),
            ..LimitsConfig::default()
        });
        let a = limits
            .reserve_body(Class::Anonymous, 60)
            .await
            .expect("room");
        assert!(limits.reserve_body(Class::Anonymous, 60).await.is_none());
        // Another class has its own room.
        assert!(limits.reserve_body(Class::Client, 600).await.is_some());
        drop(a);
        assert!(limits.reserve_body(Class::Anonymous, 60).await.is_some());
        let out = crate::metrics::scrape::render(limits.families());
        assert!(
            out.contains("outpost_api_body_refused_total{class=\"anonymous\"} 1"),
            "{out}"
        );
    }

    #[test]
    fn release_frees_a_slot() {
        let mut p = Pool::new(1, 1, false);
        let ((id, _), _) = p.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(p.admit(ip("10.0.0.2")).err(), Some(Full::Total));
        p.release(ip("10.0.0.1"), id);
        assert_eq!(p.count, 0);
        assert!(p.sources.is_empty());
        assert!(p.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn source_keys() {
        for (given, key) in [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("::1", "::"),
        ] {
            assert_eq!(source_key(ip(given)), ip(key), "{given}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        for (d, s) in [
            (Duration::ZERO, 1),
            (Duration::from_millis(1), 1),
            (Duration::from_millis(1000), 1),
            (Duration::from_millis(1001), 2),
            (Duration::from_secs(7), 7),
        ] {
            assert_eq!(retry_after_secs(d), s, "{d:?}");
        }
    }

    #[test]
    fn a_burst_from_one_source_is_limited_while_another_source_passes() {
        let limits = ApiLimits::new(LimitsConfig::default());
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let passed = (0..100).filter(|_| limits.check(a).is_ok()).count();
        assert!((20..=25).contains(&passed), "{passed} of 100 passed");
        let wait = limits.check(a).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limits.check(b).is_ok());
        let out = crate::metrics::scrape::render(limits.families());
        assert!(out.contains("outpost_api_rate_limited_total{limit=\"source\"} "));
        assert!(out.contains("outpost_api_connections{kind=\"anonymous\"} 0"));
    }

    #[test]
    fn the_global_limit_holds_across_sources() {
        let limits = ApiLimits::new(LimitsConfig {
            rate_global: (1, 3),
            ..LimitsConfig::default()
        });
        let passed = (1..=10u8)
            .filter(|i| limits.check(IpAddr::from([10, 0, 0, *i])).is_ok())
            .count();
        assert_eq!(passed, 3);
    }

    #[tokio::test]
    async fn slots_are_given_back_on_drop_and_taken_over_slots_are_kicked() {
        let limits = ApiLimits::new(LimitsConfig {
            anonymous_total: 2,
            ..LimitsConfig::default()
        });
        let a = limits.admit_anonymous(ip("10.0.0.1")).unwrap();
        let _b = limits.admit_anonymous(ip("10.0.0.1")).unwrap();
        assert_eq!(limits.current(), (2, 0));
        let _c = limits.admit_anonymous(ip("10.0.0.2")).unwrap();
        tokio::time::timeout(Duration::from_secs(1), a.kicked())
            .await
            .expect("the oldest slot of the biggest holder is kicked");
        drop(a);
        assert_eq!(limits.current(), (2, 0));
        let auth = limits
            .admit_authenticated(ip("10.0.0.2"), &Caller::Node(2))
            .unwrap();
        assert_eq!(limits.current(), (2, 1));
        drop(auth);
        assert_eq!(limits.current(), (2, 0));
    }
}
