//! The client agent: `outpost agent enroll | sync --once | run`. Enrollment and the sync loop
//! are here; each sync also uploads the inventory (`inventory`), removes what an aborted
//! deployment asks to uninstall (`removals`), installs deployments (`deployments`) and renews
//! the certificate (`renewal`), with the results of the health checks the configuration
//! declares (`checks`) in its facts. The agent speaks to nodes only
//! through `crate::shared::client` with `crate::wire` bodies.
//!
//! State directory `S` (0700): `client.key` (0600), `client.crt`, `ca.crt`, `agent.json`
//! (client id, cluster id, the nodes it knows), and `config.json`, the effective
//! configuration written atomically at every sync. Any node will do: on an error or a
//! timeout the agent moves to the next node it knows; a refusal (revoked, not enrolled)
//! stops it with the reason. The agent also replaces its own binary with an
//! `outpost-release` (`release`) and installs bundles from a file without a node
//! (`offline`: `outpost agent install`, with the bundle trust pinned at enrollment).
//!
//! One agent process at a time works in a state dir: syncs and installs hold `S/agent.lock`
//! (the new binary proving a self-upgrade runs under its parent's hold).

pub mod checks;
pub mod deployments;
pub mod inventory;
pub mod offline;
pub mod release;
pub mod removals;
pub mod renewal;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hyper::Method;
use outpost_certs::{ANY_NODE_SERVER_NAME, Fingerprint, TlsIdentity};
use serde::{Deserialize, Serialize};

use crate::shared::client::{ApiClient, ApiFailure, Endpoint};
use crate::shared::token::Token;
use crate::wire::{AgentSync, EnrollRequest, EnrollResponse};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentFile {
    pub format: u32,
    pub client_id: String,
    pub cluster_id: String,
    pub servers: Vec<String>,
    /// Enrolled through mDNS: when every known node fails, browse for the cluster again.
    #[serde(default)]
    pub mdns: bool,
}

struct Paths {
    dir: PathBuf,
}

impl Paths {
    fn key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    fn agent(&self) -> PathBuf {
        self.dir.join("agent.json")
    }
    fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    fn inventory_hash(&self) -> PathBuf {
        self.dir.join("inventory.sha256")
    }
}

/// `outpost agent enroll`: proves a client token to a node whose CA matches the token's
/// fingerprint, sends a CSR, and stores the client identity.
pub async fn enroll(
    state_dir: &Path,
    token: &str,
    servers: &[String],
    hostname: &str,
    discover_timeout: std::time::Duration,
) -> Result<EnrollResponse> {
    let token = Token::decode(token)?;
    if token.kind != "client" {
        bail!(
            "this is a {} token; enrolling an agent needs a client token (outpost token create --kind client)",
            token.kind
        );
    }
    let paths = Paths {
        dir: state_dir.to_path_buf(),
    };
    if paths.agent().exists() {
        bail!(
            "{} already holds an enrolled agent (agent.json); use a new state dir",
            state_dir.display()
        );
    }
    let pin = Fingerprint::from_str(&token.ca_sha256)
        .map_err(|e| anyhow!("token CA fingerprint: {e}"))?;
    let tls = outpost_certs::pinned_client_config(pin, None, &[b"http/1.1"])?;
    let used_mdns = servers.is_empty() && token.addrs.is_empty();
    let servers = if !servers.is_empty() {
        servers.to_vec()
    } else if !token.addrs.is_empty() {
        token.addrs.clone()
    } else {
        // No address given or carried: find the token's cluster by mDNS.
        let found = browse_api_addrs(
            &outpost_discovery::DiscoveryConfig::default(),
            &token.cluster_id,
            discover_timeout,
        )
        .await?;
        if found.is_empty() {
            bail!(
                "no node to contact: the token carries no address, no --server was given, and mDNS found no node of cluster {} within {discover_timeout:?}",
                token.cluster_id
            );
        }
        found
    };
    let (key_pem, csr_pem) = outpost_certs::new_key_and_csr(hostname)?;
    let req = EnrollRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        hostname: hostname.to_string(),
        csr_pem,
    };
    let mut last = None;
    let mut resp = None;
    for s in &servers {
        let client = ApiClient::new(Endpoint::Tls {
            addr: s.clone(),
            config: tls.clone(),
            server_name: ANY_NODE_SERVER_NAME.into(),
        });
        match client
            .call::<EnrollResponse>(Method::POST, "/v1/enroll", Some(&req))
            .await
        {
            Ok(r) => {
                resp = Some(r);
                break;
            }
            Err(e) if e.downcast_ref::<ApiFailure>().is_some() => {
                return Err(e.context("enrollment refused"));
            }
            Err(e) => {
                tracing::warn!(server = %s, error = format!("{e:#}"), "enrollment attempt failed");
                last = Some(e);
            }
        }
    }
    let resp = resp.ok_or_else(|| {
        last.unwrap_or_else(|| anyhow!("no node answered"))
            .context("enrollment failed")
    })?;
    if Fingerprint::of_pem(&resp.ca_cert_pem)? != pin {
        bail!(
            "CA mismatch: the cluster's CA certificate does not match the token's fingerprint {pin}"
        );
    }
    create_private_dir(state_dir)?;
    // The enrollment is committed already: a trust that cannot be pinned now is pinned by a
    // later sync (`offline::refresh_trust`), so it does not undo the enrollment.
    if let Some(t) = &resp.bundle_trust
        && let Err(e) = offline::pin_trust(state_dir, t)
    {
        tracing::warn!(
            error = format!("{e:#}"),
            "bundle trust not pinned at enrollment"
        );
    }
    outpost_certs::write_secret_file(&paths.key(), key_pem.as_bytes())?;
    outpost_certs::write_public_file(&paths.cert(), resp.cert_pem.as_bytes())?;
    outpost_certs::write_public_file(&paths.ca(), resp.ca_cert_pem.as_bytes())?;
    let mut known = servers.clone();
    for s in &resp.servers {
        if !known.contains(s) {
            known.push(s.clone());
        }
    }
    let file = AgentFile {
        format: 1,
        client_id: resp.client_id.clone(),
        cluster_id: resp.cluster_id.clone(),
        servers: known,
        mdns: used_mdns,
    };
    // agent.json last: its presence marks a complete enrollment.
    outpost_certs::write_public_file(&paths.agent(), &serde_json::to_vec_pretty(&file)?)?;
    Ok(resp)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting mode 0700 on {}", dir.display()))
}

/// What one sync did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub server: String,
    pub config_keys: usize,
    /// Whether the facts changed since the last upload (and so were uploaded).
    pub inventory_uploaded: bool,
    /// One line per deployment removed, installed or failed in this sync.
    pub deployments: Vec<String>,
    /// The new certificate serial when the certificate was renewed.
    pub renewed: Option<String>,
    /// The bundle trust version newly pinned in this sync.
    pub trust_pinned: Option<u64>,
    /// What was done about an upgrade an earlier process left unfinished.
    pub recovered: Option<String>,
}

/// How long a sync or an install waits for another agent process of the same state dir
/// (longer than a self-upgrade's proof).
pub const LOCK_WAIT: Duration = Duration::from_secs(180);

/// Takes `S/agent.lock` (flock, released when the file drops), waiting at most `LOCK_WAIT`;
/// None for the new binary proving a self-upgrade, whose parent holds it.
async fn lock_state_dir(dir: &Path) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    if release::is_proving(dir) {
        return Ok(None);
    }
    let path = dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another agent process has held {} for {LOCK_WAIT:?} (a sync, an install or an upgrade)",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

/// The executable this process runs from: where a self-upgrade puts the new binary.
pub fn own_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the agent's own executable")?;
    if exe.to_string_lossy().ends_with(" (deleted)") {
        bail!(
            "the agent's executable {} was replaced while it ran; start it again",
            exe.display()
        );
    }
    Ok(exe)
}

fn read_agent_file(paths: &Paths) -> Result<AgentFile> {
    let text = std::fs::read_to_string(paths.agent()).with_context(|| {
        format!(
            "reading {} (run `outpost agent enroll` first)",
            paths.agent().display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", paths.agent().display()))
}

/// Gathers the facts, with `health` (the results of the checks) when there are any, and
/// uploads them when their hash differs from the last upload's.
async fn upload_inventory_if_changed(
    client: &ApiClient,
    paths: &Paths,
    health: Option<serde_json::Value>,
) -> Result<bool> {
    use sha2::Digest;
    let mut facts = tokio::task::spawn_blocking(crate::agent::inventory::gather).await?;
    if let (Some(health), Some(map)) = (health, facts.as_object_mut()) {
        map.insert("health".into(), health);
    }
    // What `agent install` did without a node reaches the cluster here, as facts.
    let installs = offline::offline_installs(&paths.dir)?;
    if let (false, Some(map)) = (installs.is_empty(), facts.as_object_mut()) {
        map.insert("offline_installs".into(), serde_json::to_value(&installs)?);
    }
    // serde_json::Value keeps keys sorted: the same facts give the same bytes and hash.
    let sha = hex::encode(sha2::Sha256::digest(serde_json::to_vec(&facts)?));
    let last = std::fs::read_to_string(paths.inventory_hash()).unwrap_or_default();
    if last.trim() == sha {
        return Ok(false);
    }
    match client
        .call::<serde_json::Value>(Method::PUT, "/v1/agent/inventory", Some(&facts))
        .await
    {
        Ok(_) => {}
        // The node's per-client report rate: the hash stays unwritten, so a later sync
        // (after the wait the node asked for) sends the facts again.
        Err(e) if too_many(&e).is_some() => {
            let wait = too_many(&e).flatten().unwrap_or_default();
            tracing::info!(
                retry_after_s = wait.as_secs(),
                "the node asks for the inventory later; a later sync sends it"
            );
            return Ok(false);
        }
        // Facts past the node's caps (1 MiB, 100,000 values): the rest of the sync (its
        // deployments, its certificate's renewal) must go on. The hash is written, so the same
        // facts are not sent again; a change sends them again.
        Err(e)
            if e.downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.status == hyper::StatusCode::PAYLOAD_TOO_LARGE) =>
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "the node refuses this machine's inventory as too large; it is sent again when the facts change"
            );
            outpost_certs::write_public_file(&paths.inventory_hash(), sha.as_bytes())?;
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    outpost_certs::write_public_file(&paths.inventory_hash(), sha.as_bytes())?;
    Ok(true)
}

/// `Some(retry after)` when `e` is the node's 429 answer.
pub(crate) fn too_many(e: &anyhow::Error) -> Option<Option<Duration>> {
    e.downcast_ref::<ApiFailure>()
        .filter(|f| f.status == hyper::StatusCode::TOO_MANY_REQUESTS)
        .map(|f| f.retry_after)
}

/// One sync against the first node that answers: fetch the effective configuration and
/// write it atomically to `config.json`, then the rest of `sync_with`. `exe` is the agent's
/// own executable (see [`own_exe`]).
pub async fn sync_once(state_dir: &Path, exe: &Path, tls: &mut AgentTls) -> Result<SyncReport> {
    let paths = Paths {
        dir: state_dir.to_path_buf(),
    };
    let file = read_agent_file(&paths)?;
    // Held until the sync ends; None only for the new binary proving an upgrade.
    let lock = lock_state_dir(state_dir).await?;
    let proving = lock.is_none();
    let recovered = if proving {
        None
    } else {
        release::recover(state_dir, exe)?
    };
    if let Some(r) = &recovered {
        tracing::warn!("{r}");
    }
    let me = Me { exe, proving };
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    renewal::finish_renewal(&paths.dir)?;
    let tls = tls.config([read(paths.ca())?, read(paths.cert())?, read(paths.key())?])?;
    let mut errors = Vec::new();
    if let Some(mut r) = sync_any(&file.servers, &tls, &paths, &me, &mut errors).await? {
        r.recovered = recovered;
        return Ok(r);
    }
    if file.mdns {
        // Every known node failed: the cluster may have moved (DHCP). Look for it again.
        let found = browse_api_addrs(
            &outpost_discovery::DiscoveryConfig::default(),
            &file.cluster_id,
            Duration::from_secs(3),
        )
        .await
        .unwrap_or_default();
        let new: Vec<String> = found
            .into_iter()
            .filter(|s| !file.servers.contains(s))
            .collect();
        if let Some(mut r) = sync_any(&new, &tls, &paths, &me, &mut errors).await? {
            let mut file = file.clone();
            file.servers.extend(new);
            outpost_certs::write_public_file(&paths.agent(), &serde_json::to_vec_pretty(&file)?)?;
            r.recovered = recovered;
            return Ok(r);
        }
    }
    bail!("no node answered: {}", errors.join("; "))
}

/// The agent's TLS client configuration, kept from one sync to the next: its session cache
/// holds the ticket the node gave at the last sync, so the next sync resumes that TLS session
/// instead of making a full handshake (certificate signatures and chain checks on both
/// sides, the larger part of what a sync costs a node). Made again whenever the CA,
/// certificate or key file changes (a renewal), so that a new certificate is presented in
/// a full handshake at once. `sync --once` starts with an empty one.
#[derive(Default)]
pub struct AgentTls {
    made_from: Option<[String; 3]>,
    config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl AgentTls {
    /// The configuration for these CA, certificate and key PEMs.
    fn config(&mut self, pems: [String; 3]) -> Result<std::sync::Arc<rustls::ClientConfig>> {
        if let (Some(made_from), Some(config)) = (&self.made_from, &self.config)
            && *made_from == pems
        {
            return Ok(config.clone());
        }
        let [ca, cert, key] = &pems;
        let id = TlsIdentity::from_pem(cert, key, ca)?;
        let config = outpost_certs::client_config(ca, Some(&id), &[b"http/1.1"])?;
        self.made_from = Some(pems);
        self.config = Some(config.clone());
        Ok(config)
    }
}

/// This process as the sync sees it: its executable, and whether it is a new binary proving
/// a self-upgrade for its parent.
struct Me<'a> {
    exe: &'a Path,
    proving: bool,
}

/// Tries `servers` in order: the first that answers does the sync. A refusal (revoked, not
/// enrolled) ends it with an error, since another node would say the same; other failures
/// are collected in `errors` and the next node is tried. `Ok(None)`: nobody answered.
async fn sync_any(
    servers: &[String],
    tls: &std::sync::Arc<rustls::ClientConfig>,
    paths: &Paths,
    me: &Me<'_>,
    errors: &mut Vec<String>,
) -> Result<Option<SyncReport>> {
    for server in servers {
        let mut client = ApiClient::new(Endpoint::Tls {
            addr: server.clone(),
            config: tls.clone(),
            server_name: ANY_NODE_SERVER_NAME.into(),
        });
        client.set_timeout(Duration::from_secs(5));
        match sync_with(&client, server, paths, me).await {
            Ok(r) => return Ok(Some(r)),
            Err(e)
                if e.downcast_ref::<ApiFailure>()
                    .is_some_and(|f| f.status.is_client_error()) =>
            {
                return Err(e.context(format!("refused by {server}")));
            }
            Err(e) => {
                tracing::warn!(%server, error = format!("{e:#}"), "sync failed; trying the next node");
                errors.push(format!("{server}: {e:#}"));
            }
        }
    }
    Ok(None)
}

/// One sync with one node: configuration, pinned bundle trust, inventory, deployments,
/// renewal.
async fn sync_with(
    client: &ApiClient,
    server: &str,
    paths: &Paths,
    me: &Me<'_>,
) -> Result<SyncReport> {
    let AgentSync {
        config,
        trust,
        assignments,
        removals,
    } = read_sync(client).await?;
    outpost_certs::write_public_file(&paths.config(), &serde_json::to_vec_pretty(&config)?)?;
    renewal::confirm_renewal_if_pending(client, &paths.dir).await?;
    // Best effort: a trust this agent cannot pin leaves the pinned one as it is.
    let trust_pinned = trust.and_then(|t| match offline::pin_trust(&paths.dir, &t) {
        Ok(pinned) => pinned.then_some(t.version),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "bundle trust not refreshed");
            None
        }
    });
    // The checks run before the facts are hashed: their results are part of them.
    let health = checks::run(&checks::plan(&config)).await;
    checks::save(&paths.dir, health.as_ref())?;
    let inventory_uploaded = upload_inventory_if_changed(client, paths, health).await?;
    // Removals first: an artifact uninstalled by an abort may be installed again (another
    // version) by a newer deployment in the same sync.
    let mut lines = removals::remove_step(client, &paths.dir, &config, &removals).await?;
    let installed = deployments::agent_step(
        client,
        &paths.dir,
        &config,
        assignments,
        (me.exe, me.proving),
    )
    .await?;
    lines.extend(installed);
    let renewed = renewal::renew_if_due(client, &paths.dir, crate::shared::now_ms() / 1000).await?;
    Ok(SyncReport {
        server: server.to_string(),
        config_keys: config.len(),
        inventory_uploaded,
        deployments: lines,
        renewed,
        trust_pinned,
        recovered: None,
    })
}

/// What a sync reads, in one request (`/v1/agent/sync`); from a node that predates it (404),
/// from the three routes it replaces. There the trust is best effort, as it always was: a
/// node without that route, or a hiccup, leaves the pinned trust as it is.
async fn read_sync(client: &ApiClient) -> Result<AgentSync> {
    match client
        .call(Method::GET, "/v1/agent/sync", None::<&()>)
        .await
    {
        Err(e)
            if e.downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.status == hyper::StatusCode::NOT_FOUND) => {}
        other => return other,
    }
    let config = client
        .call(Method::GET, "/v1/agent/config", None::<&()>)
        .await?;
    let trust = client
        .call(Method::GET, "/v1/agent/trust", None::<&()>)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = format!("{e:#}"), "bundle trust not refreshed");
            None
        });
    let assignments = client
        .call(Method::GET, "/v1/agent/assignments", None::<&()>)
        .await?;
    Ok(AgentSync {
        config,
        trust,
        assignments,
        // A node from before removals asks for none.
        removals: Vec::new(),
    })
}

/// `outpost agent run`: sync every `interval` (with up to 10% jitter), backing off on errors.
/// When its executable was replaced (a self-upgrade proved itself, or a package manager
/// installed another binary) it starts the new one in its place (exec, same arguments, same
/// process id).
pub async fn run(state_dir: &Path, interval: Duration) -> Result<()> {
    use rand::Rng;
    let exe = own_exe()?;
    let mut started_from = release::file_identity(&exe);
    let mut backoff = Duration::from_secs(1);
    let mut tls = AgentTls::default();
    loop {
        let wait = match sync_once(state_dir, &exe, &mut tls).await {
            Ok(r) => {
                tracing::info!(server = %r.server, keys = r.config_keys, "synced");
                backoff = Duration::from_secs(1);
                interval
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "sync failed");
                backoff = (backoff * 2).min(interval);
                backoff
            }
        };
        let now = release::file_identity(&exe);
        if now.is_some() && now != started_from {
            use std::os::unix::process::CommandExt;
            tracing::info!(exe = %exe.display(), "the agent's executable changed: starting it");
            let err = std::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .exec();
            tracing::warn!(error = %err, "could not start the new executable; going on with this one");
            started_from = now;
        }
        let jitter = rand::thread_rng().gen_range(0.0..0.1) * wait.as_secs_f64();
        tokio::select! {
            _ = tokio::time::sleep(wait + Duration::from_secs_f64(jitter)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `outpost agent install FILE`: installs a bundle from a file with no node (see `offline`).
pub async fn install(state_dir: &Path, file: &Path) -> Result<offline::InstallReport> {
    let paths = Paths {
        dir: state_dir.to_path_buf(),
    };
    let agent = read_agent_file(&paths)?;
    let exe = own_exe()?;
    let lock = lock_state_dir(state_dir).await?;
    if lock.is_some()
        && let Some(r) = release::recover(state_dir, &exe)?
    {
        tracing::warn!("{r}");
    }
    offline::install(state_dir, &exe, file, &agent.cluster_id).await
}

/// What `outpost agent status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub client_id: String,
    pub cluster_id: String,
    pub servers: Vec<String>,
    /// Unix seconds.
    pub cert_not_after: i64,
    pub bundle_trust_version: Option<u64>,
    /// Highest version installed from a file, per channel.
    pub channels: std::collections::BTreeMap<String, u64>,
    pub offline_installs: Vec<offline::OfflineInstall>,
    pub pending_upgrade: Option<release::PendingUpgrade>,
    pub exe: PathBuf,
    /// The health checks' results of the last sync, by name.
    pub checks: std::collections::BTreeMap<String, checks::LastResult>,
}

/// `outpost agent status`: reads and checks the whole state (identity, TLS configuration,
/// pinned trust, floors) without reaching a node. The new binary of an offline self-upgrade
/// proves itself with it.
pub fn status(state_dir: &Path) -> Result<AgentStatus> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let paths = Paths {
        dir: state_dir.to_path_buf(),
    };
    let file = read_agent_file(&paths)?;
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let (ca, cert) = (read(paths.ca())?, read(paths.cert())?);
    let id = TlsIdentity::from_pem(&cert, &read(paths.key())?, &ca)?;
    outpost_certs::client_config(&ca, Some(&id), &[b"http/1.1"])?;
    let der = CertificateDer::from_pem_slice(cert.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", paths.cert().display()))?;
    let floors = offline::Floors::load(state_dir)?;
    Ok(AgentStatus {
        client_id: file.client_id,
        cluster_id: file.cluster_id,
        servers: file.servers,
        cert_not_after: outpost_certs::not_after_unix(&der)?,
        bundle_trust_version: offline::pinned_trust(state_dir)?.map(|t| t.version),
        channels: floors
            .channels
            .into_iter()
            .map(|(c, f)| (c, f.version))
            .collect(),
        offline_installs: offline::offline_installs(state_dir)?,
        pending_upgrade: release::pending(state_dir)?,
        exe: own_exe()?,
        checks: checks::last(state_dir),
    })
}

/// The system host name (from /proc, falling back to /etc/hostname, then "localhost").
pub fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Browses mDNS for nodes of `cluster` until one is seen (then half a second more, for the
/// others' answers) or `timeout` passes; returns their API addresses. Each is only a hint: the
/// caller dials it with the token's pinned CA.
pub async fn browse_api_addrs(
    config: &outpost_discovery::DiscoveryConfig,
    cluster: &str,
    timeout: Duration,
) -> Result<Vec<String>> {
    let config = outpost_discovery::DiscoveryConfig {
        peers: Vec::new(),
        ..config.clone()
    };
    let cluster = cluster.to_string();
    let view = tokio::task::spawn_blocking(move || -> Result<outpost_discovery::PeerView> {
        let d = outpost_discovery::Discovery::start(&config, Some(&cluster))
            .context("starting the mDNS browser")?;
        let deadline = Instant::now() + timeout;
        let first = d.wait_until(deadline, |v| !v.is_empty());
        let view = if first.is_empty() {
            first
        } else {
            let settle = (Instant::now() + Duration::from_millis(500)).min(deadline);
            d.wait_until(settle, |_| false)
        };
        d.shutdown();
        Ok(view)
    })
    .await
    .context("the mDNS browse thread failed")??;
    Ok(view
        .peers
        .iter()
        .flat_map(|p| p.api_addrs())
        .map(|a| a.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::routing::get;

    /// A node on a Unix socket in `dir` serving `app`, and a client of it.
    fn node(dir: &Path, app: axum::Router) -> ApiClient {
        let path = dir.join("node.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move { axum::serve(listener, app).await });
        ApiClient::new(Endpoint::Unix(path))
    }

    fn old_routes() -> axum::Router {
        let config =
            std::collections::BTreeMap::from([("ntp".to_string(), "10.0.0.1".to_string())]);
        axum::Router::new()
            .route("/v1/agent/config", get(move || async move { Json(config) }))
            .route(
                "/v1/agent/trust",
                get(|| async { Json(None::<crate::wire::AgentTrust>) }),
            )
            .route(
                "/v1/agent/assignments",
                get(|| async { Json(Vec::<crate::wire::Assignment>::new()) }),
            )
    }

    #[tokio::test]
    async fn a_sync_reads_a_node_without_the_combined_route_through_the_three_routes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = read_sync(&node(dir.path(), old_routes()))
            .await
            .expect("read through the old routes");
        assert_eq!(read.config.get("ntp").map(String::as_str), Some("10.0.0.1"));
        assert_eq!((read.trust, read.assignments.len()), (None, 0));
    }

    #[tokio::test]
    async fn a_refused_sync_is_not_read_again_through_the_old_routes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = old_routes().route(
            "/v1/agent/sync",
            get(|| async { (hyper::StatusCode::FORBIDDEN, "client revoked") }),
        );
        let e = read_sync(&node(dir.path(), app))
            .await
            .expect_err("a refusal stays a refusal");
        let failure = e.downcast_ref::<ApiFailure>().expect("an API failure");
        assert_eq!(failure.status, hyper::StatusCode::FORBIDDEN, "{e:#}");
    }
}
