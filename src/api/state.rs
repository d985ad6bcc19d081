//! What every handler shares: the Raft node, the CA, the blob store, the limits, and the
//! ways handlers reach the state (`commit` a command, `read` on a blocking thread, check a
//! token, readiness).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use outpost_certs::{CertAuthority, Fingerprint};
use outpost_raft::{NodeStatus, RaftNode};
use outpost_storage::{Command, Envelope, RejectCode, Response as Done, TokenCheck, TokenKind};

use crate::api::error::outcome;
use crate::api::{ApiError, Caller};
use crate::wire::{Readiness, StatusView};

/// The header in which a client names its request (`ApiClient` sends one per request, the
/// same on its retry).
pub const REQUEST_ID_HEADER: &str = "outpost-request-id";

tokio::task_local! {
    /// The client's request id while its request is handled.
    pub(crate) static CLIENT_REQUEST: ClientRequest;
}

/// A client's request id and how many commits its handling has made so far.
pub(crate) struct ClientRequest {
    pub id: String,
    pub commits: std::sync::atomic::AtomicU32,
}

impl ClientRequest {
    /// The header's value, if it is 16 to 64 characters of `A-Z a-z 0-9 _ -`.
    pub(crate) fn from_header(v: &axum::http::HeaderValue) -> Option<ClientRequest> {
        let id = v.to_str().ok()?;
        let ok = (16..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| ClientRequest {
            id: id.to_owned(),
            commits: Default::default(),
        })
    }
}

pub struct AppState {
    pub node: RaftNode,
    pub node_id: u64,
    pub name: String,
    pub cluster_id: String,
    pub ca: CertAuthority,
    pub ca_fingerprint: Fingerprint,
    /// Not-after (unix seconds) of this node's own certificate, for /metrics.
    pub node_cert_not_after: std::sync::atomic::AtomicI64,
    /// Clients seen by this node since the last flush (client id -> ms); flushed to Raft as
    /// one `TouchClients` command every few seconds by `clients::flush_last_seen`.
    pub seen: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// The content-addressed blob store and its replication from peers.
    pub blobs: Arc<crate::blobs::Blobs>,
    /// The data directory (bundle import runs beside the node on the same host).
    pub data_dir: std::path::PathBuf,
    /// Refused unauthenticated requests, counted by reason and logged at most once per source
    /// address per minute.
    pub refusals: crate::api::refusals::Refusals,
    /// The last answer of the readiness probe (a read-index round trip), reused for a second
    /// so that a flood of anonymous `/readyz` requests costs the leader nothing.
    pub readiness: tokio::sync::Mutex<Option<(std::time::Instant, Readiness)>>,
    /// Connection caps, timeouts and the enroll/join rate limit of the API port.
    pub limits: Arc<crate::api::limits::ApiLimits>,
    /// Admin and client certificates presented to this node (their expiry, for monitoring).
    pub certs_seen: crate::api::certs_seen::CertsSeen,
    /// Admins' and peers' standing, read once per change of who may call.
    pub identities: crate::api::identities::IdentityCache,
    /// Persons' requests catch up with the leader before their grant is read.
    pub fresh: crate::api::access::Freshness,
    /// The node's metrics registry (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This node's disk, growth, last backup and binary hash (its `wire::NodeHealth`).
    pub own: Arc<crate::metrics::NodeSelf>,
    /// The site's counts for `/metrics`, read at most every 10 s.
    pub site: crate::metrics::site::SiteCache,
    /// How far this node's audit chain is proven (`audit verify`, the console, peers' asks).
    pub audit_mark: Arc<crate::shared::audit_file::VerifiedMark>,
    /// The data directory's free space against its floor: below it, operator writes are
    /// refused with 507 (`commit`, `refuse_when_full`).
    pub disk: Arc<crate::metrics::DiskGuard>,
}

/// Whether `caller` may commit `command` while the disk is below its floor.
/// Agents' own writes (reports, renewals) and the nodes' own commands (last-seen touches,
/// blob holders, the leader's rollout steps) go on: a full disk must not stop the fleet or
/// the cluster's own upkeep, and each is small. A console sign-in or sign-out goes on too,
/// so that an operator can still open the console and read the alarm. Everything else an
/// operator (local socket, admin certificate, console session) or an unknown caller (enroll,
/// join) asks is refused.
pub(crate) fn disk_allows(caller: &Caller, command: &Command) -> bool {
    matches!(caller, Caller::Client { .. } | Caller::Node(_))
        || matches!(
            command,
            Command::StartConsoleSession { .. } | Command::EndConsoleSession { .. }
        )
}

/// How long a person's request waits for this node to catch up with the leader before its
/// grant is read.
const FRESH_GRANT_WAIT: Duration = Duration::from_secs(1);

impl AppState {
    /// The API addresses of every member (a token's and an enrolled agent's first node list).
    pub(crate) fn member_api_addrs(&self) -> Vec<String> {
        self.node
            .status()
            .members
            .into_iter()
            .map(|m| m.api_addr)
            .collect()
    }

    /// Commits `command` for `caller`, under a new request id: retries of this write inside
    /// the cluster (forwarding, leader changes) apply it once. Below the disk floor an
    /// operator's command is refused with 507 (`disk_allows`).
    pub(crate) async fn commit(&self, caller: &Caller, command: Command) -> Result<Done, ApiError> {
        if !disk_allows(caller, &command) {
            self.refuse_when_full()?;
        }
        // The client's id for its request, when it sent one: a client that sends the same
        // request again (its connection broke before the answer) gets the first outcome.
        // Namespaced by caller; numbered per commit, as one request may commit several.
        let from_client = CLIENT_REQUEST
            .try_with(|r| {
                let n = r.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::shared::request_id::scoped(&caller.actor(), &r.id, n)
            })
            .ok();
        let request_id = from_client.unwrap_or_else(crate::shared::request_id::fresh);
        let env = Envelope {
            at_ms: outpost_raft::now_ms(),
            // A session's start names its account alone: older leaders match it exactly.
            actor: match command {
                Command::StartConsoleSession { .. } => caller.actor(),
                _ => caller.audit_actor(),
            },
            command: Command::Once {
                request_id,
                command: Box::new(command),
            },
        };
        let o = self.node.write(env).await.map_err(ApiError::unavailable)?;
        outcome(o)
    }

    /// Before a person's grant is read: this node catches up with the leader (single-flight,
    /// `access::Freshness`), at most `FRESH_GRANT_WAIT`; past it (no leader, a partition) this
    /// node's state decides. The API's middleware and the console's sessions both wait here.
    pub(crate) async fn catch_up_for_person(&self) {
        self.fresh
            .ensure(FRESH_GRANT_WAIT, || async {
                let _ = self.node.linearizable_barrier(FRESH_GRANT_WAIT).await;
            })
            .await;
    }

    /// 507 with the node, the path and the sizes while the data directory's file system is
    /// below its floor: for operator writes that do not go through `commit` (the blobs a
    /// bundle import is about to store).
    pub(crate) fn refuse_when_full(&self) -> Result<(), ApiError> {
        match self.disk.refusal() {
            Some(why) => Err(ApiError::insufficient_storage(why)),
            None => Ok(()),
        }
    }

    /// The gate of the routes open without a certificate (enroll, join), against local state
    /// only, so that a request refused here leaves no Raft entry, no audit row and no
    /// certificate: the shared field caps (token id, secret, CSR size) and the route's own
    /// (`fields`), the token (`check_token`), then the CSR (parsed and its signature checked,
    /// nothing signed). Every refusal is counted for `route` and logged once a minute per
    /// source. Returns the SHA-256 of the token secret, for the Raft command.
    pub(crate) async fn admit_with_token(
        &self,
        route: &'static str,
        source: Option<std::net::IpAddr>,
        token: (&str, &str, TokenKind),
        csr_pem: &str,
        fields: impl FnOnce() -> Result<(), ApiError>,
    ) -> Result<String, axum::response::Response> {
        let (token_id, secret, kind) = token;
        let refuse =
            |e: ApiError, reason: &'static str| self.refusals.refuse(route, reason, source, e);
        let bad = |e: ApiError| refuse(e, "malformed");
        crate::api::fields::id("token id", token_id).map_err(bad)?;
        crate::api::fields::sha256_hex("token secret", secret).map_err(bad)?;
        crate::api::fields::csr(csr_pem).map_err(bad)?;
        fields().map_err(bad)?;
        let secret_sha256 = crate::shared::token::secret_sha256(secret);
        self.check_token(token_id, &secret_sha256, kind)
            .await
            .map_err(|(e, reason)| refuse(e, reason))?;
        outpost_certs::check_csr(csr_pem).map_err(|e| {
            refuse(
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("certificate request refused: {e}"),
                ),
                "bad_csr",
            )
        })?;
        Ok(secret_sha256)
    }

    /// Checks a token against the local state before anything is written. A token unknown
    /// here may have been made on another node a moment ago: then this node first catches up
    /// with the leader (read index, bounded) and looks again. Err carries the answer and the
    /// reason for the refusal counter.
    pub(crate) async fn check_token(
        &self,
        token_id: &str,
        secret_sha256: &str,
        kind: TokenKind,
    ) -> Result<(), (ApiError, &'static str)> {
        for attempt in 0..2 {
            let (id, secret) = (token_id.to_string(), secret_sha256.to_string());
            let now = outpost_raft::now_ms();
            let verdict = self
                .read(move |r| r.check_token(&id, &secret, kind, now))
                .await
                .map_err(|e| (e, "internal"))?;
            let (rej, unknown) = match verdict {
                TokenCheck::Usable => return Ok(()),
                TokenCheck::Unknown(rej) => (rej, true),
                TokenCheck::Refused(rej) => (rej, false),
            };
            // Only a bounded read-index round trip, never a write.
            if attempt == 0
                && unknown
                && self
                    .node
                    .linearizable_barrier(Duration::from_secs(2))
                    .await
                    .is_ok()
            {
                continue;
            }
            let reason = match rej.code {
                RejectCode::TokenExpired => "token_expired",
                RejectCode::TokenUsedUp => "token_used_up",
                _ if unknown => "token_unknown",
                _ => "token_invalid",
            };
            return Err((ApiError::new(StatusCode::FORBIDDEN, rej.message), reason));
        }
        Err((
            ApiError::new(StatusCode::FORBIDDEN, "the token was not accepted"),
            "token_invalid",
        ))
    }

    /// Runs a blocking storage query on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&outpost_storage::Reader) -> Result<T, outpost_storage::StorageError>
        + Send
        + 'static,
    ) -> Result<T, ApiError> {
        let reader = self.node.reader();
        tokio::task::spawn_blocking(move || f(&reader))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// `read` of something that may have been written through another node a moment ago:
    /// when it finds nothing, this node catches up once (a read index, at most 2 s) and looks
    /// again.
    pub(crate) async fn read_caught_up<T: Send + 'static>(
        &self,
        f: impl Fn(&outpost_storage::Reader) -> Result<Option<T>, outpost_storage::StorageError>
        + Send
        + Sync
        + 'static,
    ) -> Result<Option<T>, ApiError> {
        let f = std::sync::Arc::new(f);
        let first = {
            let f = f.clone();
            self.read(move |r| f(r)).await?
        };
        if first.is_some()
            || self
                .node
                .linearizable_barrier(Duration::from_secs(2))
                .await
                .is_err()
        {
            return Ok(first);
        }
        self.read(move |r| f(r)).await
    }

    pub(crate) async fn status_view(&self) -> StatusView {
        let s: NodeStatus = self.node.status();
        let cluster_name = self
            .read(|r| r.cluster())
            .await
            .ok()
            .flatten()
            .map(|c| c.name);
        StatusView {
            name: self.name.clone(),
            cluster_id: self.cluster_id.clone(),
            cluster_name,
            raft: s.into(),
            ready: Some(self.readiness().await),
            cert_expiry: Some(self.cert_expiry()),
            builds: self.builds().await.unwrap_or_default(),
            resident_bytes: crate::shared::process::resident_bytes(),
            open_fds: crate::shared::process::open_fds(),
            tls_handshakes: Some(self.limits.handshakes()),
            backup: Some(self.own.backup_status()),
        }
    }

    /// What every node that is not removed last reported running.
    pub(crate) async fn builds(&self) -> Result<Vec<crate::wire::MemberBuild>, ApiError> {
        let nodes = self.read(|r| r.nodes()).await?;
        Ok(nodes
            .into_iter()
            .filter(|n| n.role != outpost_storage::NodeRole::Removed)
            .map(|n| crate::wire::MemberBuild {
                id: n.id,
                name: n.name,
                version: n.version,
                binary_sha256: n.binary_sha256,
            })
            .collect())
    }

    /// This node's report of itself (what the `health` peer ask answers; `outpost doctor`
    /// reads it for the node that gathers): readiness, disk (a blocking read, reused 10 s),
    /// growth, certificate, last backup, version.
    pub async fn own_health(&self) -> crate::wire::NodeHealth {
        // Within the asker's 2 s deadline: a node that cannot get its leader's confirmation
        // still answers, as not ready.
        let r = tokio::time::timeout(Duration::from_millis(1500), self.readiness())
            .await
            .unwrap_or_else(|_| Readiness {
                ready: false,
                reason: "the leader did not confirm within 1.5 s".into(),
            });
        let own = self.own.clone();
        let disk = tokio::task::spawn_blocking(move || own.disk())
            .await
            .unwrap_or_default();
        let mut health = self.own.health(
            crate::metrics::OwnFacts {
                node_id: self.node_id,
                ready: r.ready,
                reason: r.reason,
                node_cert_not_after: self
                    .node_cert_not_after
                    .load(std::sync::atomic::Ordering::Relaxed),
                now_ms: outpost_raft::now_ms(),
            },
            disk,
        );
        health.below_floor = self.disk.below_floor();
        health.floor_bytes = self.disk.floor_bytes();
        health
    }

    /// Soonest certificate expiries this node knows (unix seconds).
    pub(crate) fn cert_expiry(&self) -> crate::api::certs_seen::CertExpiry {
        let now = outpost_raft::now_ms() / 1000;
        let ca = crate::api::status::pem_der(self.ca.cert_pem())
            .and_then(|d| outpost_certs::not_after_unix(&d).ok());
        let node = Some(
            self.node_cert_not_after
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let (admin, client) = self.certs_seen.soonest(now);
        crate::api::certs_seen::CertExpiry {
            ca,
            node,
            admin,
            client,
        }
    }

    /// Ready: not stopped, a member, a leader known, and that leader confirms (read index,
    /// a heartbeat round with a quorum) within two seconds. Answers are reused for a second.
    pub(crate) async fn readiness(&self) -> Readiness {
        let mut cached = self.readiness.lock().await;
        if let Some((at, r)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return r.clone();
        }
        let s = self.node.status();
        let member = s.members.iter().any(|m| m.id == self.node_id);
        let verdict = match (s.fatal, s.leader_id, member) {
            (Some(f), _, _) => Err(f),
            (None, _, false) => Err("not a member of the cluster".to_string()),
            (None, None, true) => Err("no leader".to_string()),
            (None, Some(_), true) => self
                .node
                .linearizable_barrier(Duration::from_secs(2))
                .await
                .map_err(|e| format!("the cluster cannot commit: {e}")),
        };
        let r = match verdict {
            Ok(()) => Readiness {
                ready: true,
                reason: "ready".into(),
            },
            Err(reason) => Readiness {
                ready: false,
                reason,
            },
        };
        *cached = Some((std::time::Instant::now(), r.clone()));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_floor_only_agents_nodes_and_console_sign_ins_commit() {
        let set = || Command::SetConfig {
            key: "k".into(),
            value: "v".into(),
            scope: outpost_storage::Scope::Global,
        };
        let client = Caller::Client {
            id: "c1".into(),
            serial: "01".into(),
            not_before: 0,
            not_after: 1,
        };
        let admin = Caller::Admin {
            name: "alice".into(),
            issued_at: 0,
            not_after: 1,
            grant: outpost_storage::Grant::admin(),
        };
        let console = Caller::Console {
            user: "alice".into(),
            grant: outpost_storage::Grant::admin(),
        };
        let end = || Command::EndConsoleSession { id: "s1".into() };
        // (caller, command, allowed below the floor)
        let cases: Vec<(&Caller, Command, bool)> = vec![
            (&Caller::Local, set(), false),
            (&admin, set(), false),
            (&console, set(), false),
            (&Caller::Anonymous, set(), false),
            (&client, set(), true),
            (&Caller::Node(2), set(), true),
            (&console, end(), true),
            (&admin, end(), true),
        ];
        for (caller, command, allowed) in cases {
            assert_eq!(
                disk_allows(caller, &command),
                allowed,
                "{caller:?} {command:?}"
            );
        }
    }
}
