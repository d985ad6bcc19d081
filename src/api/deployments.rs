//! Deployments: artifacts from imported bundles assigned to groups of clients, fetched by
//! agents (resumable, hash-checked, from any node), installed through handlers, with each
//! client's result reported through Raft. Also the agent's certificate renewal.
//!
//! Node side: admin routes (`/v1/deployments`) and agent routes (`/v1/agent/assignments`,
//! `/v1/agent/artifacts/{sha256}` with Range, `/v1/agent/results`, `/v1/agent/renew`). A client
//! may download only blobs of its own assignments; a node that lacks one fetches it from a
//! peer first (`Blobs::local_path`).
//!
//! Agent side (`S` = state dir): `S/artifacts/partial/<sha256>` grows across attempts,
//! is checked (size, sha256) and renamed to `S/artifacts/<sha256>`; the handler for the
//! payload kind is the effective configuration key `agent.handler.<kind>` (run with `sh -c`);
//! `S/deployments.json` remembers results so a success is not re-run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::Method;
use outpost_certs::{Role, Validity};
use outpost_storage::{Assignment, Command, DeploymentRecord, DeploymentStatus};
use serde::{Deserialize, Serialize};

use crate::api::clients::authorized_client;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::shared::client::ApiClient;
use crate::shared::files::rename_durably;
use crate::shared::policy::renewal_due;
use crate::shared::text::tail;
use crate::wire::{
    DeploymentRequest, DeploymentStatusView, RenewRequest, RenewResponse, ResultReport,
};

/// A failed install is retried on later syncs at most this many times in all.
pub const MAX_ATTEMPTS: u32 = 5;
/// Default bound on a handler's run time (`agent.handler_timeout`, seconds, overrides it).
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest result detail kept (the tail of the handler's stderr).
const DETAIL_BYTES: usize = 2000;

/// `NAME[@VERSION]` as `deployment create --artifact` takes it. Pure.
pub fn parse_artifact(s: &str) -> Result<(String, Option<u64>)> {
    match s.split_once('@') {
        None if !s.is_empty() => Ok((s.to_string(), None)),
        Some((name, v)) if !name.is_empty() => {
            let v = v
                .parse()
                .with_context(|| format!("--artifact {s}: the version after @ must be a number"))?;
            Ok((name.to_string(), Some(v)))
        }
        _ => bail!("--artifact must be NAME or NAME@VERSION"),
    }
}

fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 5];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("d-{}", hex::encode(b))
}

// ---- admin routes -------------------------------------------------------------------------

pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<DeploymentRequest>,
) -> ApiResult<DeploymentRecord> {
    caller.require_admin()?;
    let id = req.id.clone().unwrap_or_else(new_id);
    st.commit(
        &caller,
        Command::CreateDeployment {
            id: id.clone(),
            artifact: req.artifact,
            version: req.version,
            group: req.group,
        },
    )
    .await?;
    st.node
        .linearizable_barrier(Duration::from_secs(5))
        .await
        .map_err(ApiError::unavailable)?;
    let i = id.clone();
    st.read(move |r| r.deployment(&i))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::internal(format!("deployment {id} committed but not found")))
}

pub async fn list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<DeploymentRecord>> {
    caller.require_admin()?;
    Ok(Json(st.read(|r| r.deployments()).await?))
}

pub async fn status(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<DeploymentStatusView> {
    caller.require_admin()?;
    let i = id.clone();
    let (d, results, clients) = st
        .read(move |r| Ok((r.deployment(&i)?, r.deployment_results(&i)?, r.clients()?)))
        .await?;
    let Some(deployment) = d else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("deployment {id} does not exist"),
        ));
    };
    let reported: BTreeSet<&str> = results.iter().map(|r| r.client_id.as_str()).collect();
    let pending = clients
        .iter()
        .filter(|c| !c.revoked)
        .filter(|c| {
            deployment.group == outpost_storage::ALL_CLIENTS || c.groups.contains(&deployment.group)
        })
        .filter(|c| !reported.contains(c.id.as_str()))
        .map(|c| c.id.clone())
        .collect();
    Ok(Json(DeploymentStatusView {
        deployment,
        results,
        pending,
    }))
}

// ---- agent routes -------------------------------------------------------------------------

pub async fn assignments(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<Assignment>> {
    let client = authorized_client(&st, &caller).await?;
    Ok(Json(st.read(move |r| r.assignments(&client.id)).await?))
}

pub async fn report(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(rep): Json<ResultReport>,
) -> ApiResult<serde_json::Value> {
    let client = authorized_client(&st, &caller).await?;
    st.commit(
        &caller,
        Command::ReportDeployment {
            deployment_id: rep.deployment_id,
            client_id: client.id,
            status: rep.status,
            detail: tail(&rep.detail, DETAIL_BYTES),
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// A new certificate for the calling client from a CSR; committed before it is handed out.
pub async fn renew(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RenewRequest>,
) -> Result<Json<RenewResponse>, Response> {
    let client = authorized_client(&st, &caller)
        .await
        .map_err(IntoResponse::into_response)?;
    let Caller::Client {
        serial,
        not_before,
        not_after,
        ..
    } = &caller
    else {
        return Err(
            ApiError::new(StatusCode::FORBIDDEN, "a client certificate is required")
                .into_response(),
        );
    };
    crate::api::fields::csr(&req.csr_pem).map_err(IntoResponse::into_response)?;
    let key_sha256 = outpost_certs::check_csr(&req.csr_pem).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("certificate request refused: {e}"),
        )
        .into_response()
    })?;
    let now_ms = outpost_raft::now_ms();
    let id = client.id.clone();
    let state = st
        .read(move |r| r.client_cert_state(&id))
        .await
        .map_err(IntoResponse::into_response)?
        .ok_or_else(|| {
            ApiError::new(StatusCode::FORBIDDEN, "client is not enrolled").into_response()
        })?;
    let validity = crate::api::clients::client_validity(now_ms / 1000);
    let sign = |serial: &outpost_certs::Serial| {
        st.ca
            .issue_with_serial(
                &req.csr_pem,
                &Role::Client(client.id.clone()),
                &validity,
                serial,
            )
            .map_err(|e| {
                ApiError::internal(format!("signing the renewed certificate: {e}")).into_response()
            })
    };
    if &state.cert_serial != serial {
        // The caller holds the retired certificate (still inside its grace). An agent cut off
        // after its renewal committed asks again with the same key: it gets the certificate of
        // the serial already committed, and nothing is written. Any other key is refused.
        let same_key = state.cert_key_sha256.as_deref() == Some(key_sha256.as_str());
        let current = outpost_certs::Serial::from_hex(&state.cert_serial);
        return match (same_key, current) {
            (true, Some(current)) => {
                let cert_pem = sign(&current)?;
                tracing::info!(client = %client.id, serial = %state.cert_serial, "client certificate renewal completed again for the same key");
                Ok(Json(RenewResponse { cert_pem }))
            }
            _ => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("certificate {serial} was already renewed: use the new certificate"),
            )
            .into_response()),
        };
    }
    // Only inside the renewal window (the last third of the certificate's life, with up to
    // a minute of slack for the agent's clock), and at most once per RENEWAL_INTERVAL_MS.
    let slack = ((not_after - not_before) / 100).clamp(0, 60);
    if !renewal_due(*not_before, *not_after, now_ms / 1000 + slack) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "certificate {serial} is not due for renewal: renew in the last third of its life (it ends at {not_after})"
            ),
        )
        .into_response());
    }
    if let Some(at) = state.renewed_at_ms {
        let next = at.saturating_add(outpost_storage::RENEWAL_INTERVAL_MS);
        if now_ms < next {
            let secs = (next - now_ms + 999) / 1000;
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(serde_json::json!({
                    "error": format!("client {} renewed its certificate less than an hour ago", client.id)
                })),
            )
                .into_response());
        }
    }
    let new_serial = outpost_certs::Serial::random();
    st.commit(
        &caller,
        Command::RotateClientCert {
            client_id: client.id.clone(),
            old_serial: serial.clone(),
            new_serial: new_serial.to_hex(),
            new_key_sha256: key_sha256,
        },
    )
    .await
    .map_err(IntoResponse::into_response)?;
    let cert_pem = sign(&new_serial)?;
    tracing::info!(client = %client.id, serial = %new_serial.to_hex(), "client certificate renewed");
    Ok(Json(RenewResponse { cert_pem }))
}

/// The agent's first request with its renewed certificate: the retired one ends now.
pub async fn renew_confirm(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<serde_json::Value> {
    let client = authorized_client(&st, &caller).await?;
    let Caller::Client { serial, .. } = &caller else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a client certificate is required",
        ));
    };
    if &client.cert_serial != serial {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "certificate {serial} is not client {}'s current one",
                client.id
            ),
        ));
    }
    st.commit(
        &caller,
        Command::ConfirmClientCert {
            client_id: client.id.clone(),
            serial: serial.clone(),
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "confirmed": serial })))
}

/// Streams a blob of one of the caller's assignments, from the offset a `Range: bytes=N-`
/// header asks for (206), or whole (200).
pub async fn artifact(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    UrlPath(sha256): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let client = authorized_client(&st, &caller).await?;
    let id = client.id.clone();
    let mine = st.read(move |r| r.assignments(&id)).await?;
    let Some(a) = mine.iter().find(|a| a.deployment.sha256 == sha256) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("blob {sha256} is not assigned to client {}", client.id),
        ));
    };
    let size = a.deployment.size;
    let path = st
        .blobs
        .local_path(&sha256)
        .await
        .map_err(ApiError::unavailable)?;
    let offset = match headers.get(header::RANGE).map(|v| v.to_str()) {
        None => 0,
        Some(Ok(v)) => parse_range(v).ok_or_else(|| {
            ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("unsupported Range {v:?}: only bytes=N- is served"),
            )
        })?,
        Some(Err(_)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "Range is not text"));
        }
    };
    if offset > size {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("offset {offset} past the end of {size} bytes"),
        ));
    }
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(ApiError::internal)?;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(ApiError::internal)?;
    let stream = futures::stream::unfold((file, size - offset), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; (256 * 1024).min(left as usize)];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than recorded",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, (size - offset).into());
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    if offset > 0 {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = header::HeaderValue::from_str(&format!(
            "bytes {offset}-{}/{size}",
            size.saturating_sub(1)
        )) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// `bytes=N-` → N. Pure.
pub fn parse_range(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .trim()
        .parse()
        .ok()
}

// ---- CLI ----------------------------------------------------------------------------------

pub async fn create_cmd(
    api: &ApiClient,
    artifact: &str,
    group: &str,
    id: Option<String>,
) -> Result<()> {
    let (name, version) = parse_artifact(artifact)?;
    let d: DeploymentRecord = api
        .call(
            Method::POST,
            "/v1/deployments",
            Some(&DeploymentRequest {
                artifact: name,
                version,
                group: group.to_string(),
                id,
            }),
        )
        .await?;
    println!(
        "{}  {}@{} (sha256 {}) to group {}",
        d.id,
        d.artifact,
        d.version,
        &d.sha256[..16.min(d.sha256.len())],
        d.group
    );
    Ok(())
}

pub async fn list_cmd(api: &ApiClient, json: bool) -> Result<()> {
    let v: Vec<DeploymentRecord> = api
        .call(
            Method::GET,
            "/v1/deployments",
            crate::shared::client::NO_BODY,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if v.is_empty() {
        println!("no deployments");
    } else {
        for d in v {
            println!(
                "{:<14} {}@{:<6} {:<8} group {:<12} by {}",
                d.id, d.artifact, d.version, d.kind, d.group, d.created_by
            );
        }
    }
    Ok(())
}

pub async fn status_cmd(api: &ApiClient, id: &str, json: bool) -> Result<()> {
    let v: DeploymentStatusView = api
        .call(
            Method::GET,
            &format!("/v1/deployments/{}", crate::shared::client::urlencode(id)),
            crate::shared::client::NO_BODY,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let d = &v.deployment;
    println!(
        "{}: {}@{} ({} bytes, sha256 {}) to group {}",
        d.id, d.artifact, d.version, d.size, d.sha256, d.group
    );
    for r in &v.results {
        println!(
            "  {:<16} {:<9} attempts {}  {}",
            r.client_id,
            r.status.as_str(),
            r.attempts,
            r.detail.replace('\n', " ")
        );
    }
    for c in &v.pending {
        println!("  {c:<16} pending");
    }
    Ok(())
}

// ---- agent --------------------------------------------------------------------------------

/// What the agent remembers of each deployment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LocalResult {
    pub status: Option<DeploymentStatus>,
    pub attempts: u32,
}

/// One sync's deployment work: for each assignment not yet installed here, fetch, install,
/// report. Returns one line per deployment acted on.
pub async fn agent_step(
    client: &ApiClient,
    state_dir: &Path,
    config: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let list: Vec<Assignment> = client
        .call(
            Method::GET,
            "/v1/agent/assignments",
            crate::shared::client::NO_BODY,
        )
        .await?;
    let state_path = state_dir.join("deployments.json");
    let mut local: BTreeMap<String, LocalResult> = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut lines = Vec::new();
    for a in list {
        let d = &a.deployment;
        let entry = local.entry(d.id.clone()).or_default();
        if entry.status == Some(DeploymentStatus::Installed) || entry.attempts >= MAX_ATTEMPTS {
            continue;
        }
        let path = fetch(client, state_dir, d).await?;
        entry.attempts += 1;
        let (status, detail) = run_handler(config, d, &path).await;
        client
            .call::<serde_json::Value>(
                Method::POST,
                "/v1/agent/results",
                Some(&ResultReport {
                    deployment_id: d.id.clone(),
                    status,
                    detail: detail.clone(),
                }),
            )
            .await?;
        entry.status = Some(status);
        lines.push(format!(
            "{} {}@{}: {} ({})",
            d.id,
            d.artifact,
            d.version,
            status.as_str(),
            detail.lines().last().unwrap_or("")
        ));
        outpost_certs::write_public_file(&state_path, &serde_json::to_vec_pretty(&local)?)?;
    }
    Ok(lines)
}

/// The artifact's verified local copy, downloading (resuming) it if needed.
async fn fetch(client: &ApiClient, state_dir: &Path, d: &DeploymentRecord) -> Result<PathBuf> {
    // The hash becomes a file name and a URL: only 64 lowercase hex digits may.
    if !(d.sha256.len() == 64
        && d.sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        bail!(
            "deployment {} names sha256 {} which is not 64 lowercase hex digits; refused",
            d.id,
            crate::shared::text::shown(&d.sha256)
        );
    }
    let dir = state_dir.join("artifacts");
    let partial_dir = dir.join("partial");
    tokio::fs::create_dir_all(&partial_dir).await?;
    let done = dir.join(&d.sha256);
    if tokio::fs::metadata(&done)
        .await
        .is_ok_and(|m| m.len() == d.size)
    {
        return Ok(done);
    }
    let partial = partial_dir.join(&d.sha256);
    if tokio::fs::metadata(&partial)
        .await
        .is_ok_and(|m| m.len() > d.size)
    {
        tokio::fs::remove_file(&partial).await?;
    }
    let have = tokio::fs::metadata(&partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if have < d.size {
        client
            .download(
                &format!("/v1/agent/artifacts/{}", d.sha256),
                &partial,
                d.size,
            )
            .await
            .with_context(|| format!("downloading {}@{}", d.artifact, d.version))?;
    }
    let (p, sha, size) = (partial.clone(), d.sha256.clone(), d.size);
    let ok = tokio::task::spawn_blocking(move || -> Result<bool> {
        use sha2::Digest;
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            n_total += n as u64;
            h.update(&buf[..n]);
        }
        Ok(n_total == size && hex::encode(h.finalize()) == sha)
    })
    .await??;
    if !ok {
        let _ = tokio::fs::remove_file(&partial).await;
        bail!(
            "{}@{}: the download does not match size {} and sha256 {}; discarded",
            d.artifact,
            d.version,
            d.size,
            d.sha256
        );
    }
    // `download` fsynced the partial file.
    rename_durably(&partial, &done)?;
    Ok(done)
}

/// Runs `agent.handler.<kind>` for the artifact (or keeps it stored when none is set).
async fn run_handler(
    config: &BTreeMap<String, String>,
    d: &DeploymentRecord,
    path: &Path,
) -> (DeploymentStatus, String) {
    let Some(cmd) = config.get(&format!("agent.handler.{}", d.kind)) else {
        return (
            DeploymentStatus::Installed,
            format!(
                "stored at {} (no agent.handler.{} set)",
                path.display(),
                d.kind
            ),
        );
    };
    let limit = config
        .get("agent.handler_timeout")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(HANDLER_TIMEOUT);
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("OUTPOST_ARTIFACT", path)
        .env("OUTPOST_ARTIFACT_NAME", &d.artifact)
        .env("OUTPOST_ARTIFACT_VERSION", d.version.to_string())
        .env("OUTPOST_ARTIFACT_SHA256", &d.sha256)
        .env("OUTPOST_DEPLOYMENT", &d.id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return (DeploymentStatus::Failed, format!("starting sh: {e}")),
    };
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => (
            DeploymentStatus::Failed,
            format!("handler killed after {limit:?}"),
        ),
        Ok(Err(e)) => (
            DeploymentStatus::Failed,
            format!("waiting for the handler: {e}"),
        ),
        Ok(Ok(out)) => {
            let stderr = tail(String::from_utf8_lossy(&out.stderr).trim(), DETAIL_BYTES);
            match out.status.code() {
                Some(0) => (
                    DeploymentStatus::Installed,
                    format!("handler exit 0 {stderr}").trim().to_string(),
                ),
                Some(c) => (
                    DeploymentStatus::Failed,
                    format!("handler exit {c}: {stderr}"),
                ),
                None => (
                    DeploymentStatus::Failed,
                    format!("handler killed by a signal: {stderr}"),
                ),
            }
        }
    }
}

/// Renews the client certificate when less than a third of its lifetime is left: a new key
/// and CSR, the new certificate from the cluster, both written beside the old ones and then
/// renamed in (an interrupted renewal is rolled forward by [`finish_renewal`]).
pub async fn renew_if_due(
    client: &ApiClient,
    state_dir: &Path,
    now: i64,
) -> Result<Option<String>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let cert_path = state_dir.join("client.crt");
    let pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", cert_path.display()))?;
    let (nb, na) = (
        outpost_certs::not_before_unix(&der)?,
        outpost_certs::not_after_unix(&der)?,
    );
    if !renewal_due(nb, na, now) {
        return Ok(None);
    }
    // The key and CSR are kept until the renewal finishes: an agent cut off after the cluster
    // committed its renewal asks again with the same key and gets the same certificate.
    let key_new = state_dir.join("client.key.new");
    let csr_new = state_dir.join("client.csr.new");
    let crt_new = state_dir.join("client.crt.new");
    let csr_pem = match (key_new.exists(), std::fs::read_to_string(&csr_new)) {
        (true, Ok(csr)) => csr,
        _ => {
            let (key, csr) = outpost_certs::new_key_and_csr("outpost-agent")?;
            outpost_certs::write_secret_file(&key_new, key.as_bytes())?;
            outpost_certs::write_public_file(&csr_new, csr.as_bytes())?;
            csr
        }
    };
    let resp: RenewResponse = client
        .call(
            Method::POST,
            "/v1/agent/renew",
            Some(&RenewRequest { csr_pem }),
        )
        .await
        .context("renewing the client certificate")?;
    outpost_certs::write_public_file(&crt_new, resp.cert_pem.as_bytes())?;
    finish_renewal(state_dir)?;
    // The next sync, made with the new certificate, confirms it (the old one ends then).
    outpost_certs::write_public_file(&state_dir.join(UNCONFIRMED), b"")?;
    let der = CertificateDer::from_pem_slice(resp.cert_pem.as_bytes())
        .map_err(|e| anyhow!("renewed certificate: {e}"))?;
    Ok(Some(outpost_certs::serial_hex(&der)?))
}

/// Marker file in the agent's state dir: a renewed certificate not yet confirmed.
const UNCONFIRMED: &str = "renewal.unconfirmed";

/// After a renewal, the first sync with the new certificate tells the cluster so, which ends
/// the old certificate at once instead of after its grace hour.
pub async fn confirm_renewal_if_pending(client: &ApiClient, state_dir: &Path) -> Result<()> {
    let marker = state_dir.join(UNCONFIRMED);
    if !marker.exists() {
        return Ok(());
    }
    match client
        .call::<serde_json::Value>(Method::POST, "/v1/agent/renew/confirm", None::<&()>)
        .await
    {
        Ok(_) => {}
        // Already superseded or confirmed elsewhere: nothing left to confirm.
        Err(e)
            if e.downcast_ref::<crate::shared::client::ApiFailure>()
                .is_some_and(|f| f.status == StatusCode::CONFLICT) => {}
        Err(e) => return Err(e.context("confirming the renewed certificate")),
    }
    std::fs::remove_file(&marker)?;
    Ok(())
}

/// Rolls an interrupted renewal forward: `client.key.new` then `client.crt.new` renamed over
/// the old pair (both were fsynced before the first rename). A key without its certificate
/// stays with its CSR: the renewal is asked again with them.
pub fn finish_renewal(state_dir: &Path) -> Result<()> {
    let key_new = state_dir.join("client.key.new");
    let crt_new = state_dir.join("client.crt.new");
    if !crt_new.exists() {
        return Ok(());
    }
    if key_new.exists() {
        rename_durably(&key_new, &state_dir.join("client.key"))?;
    }
    rename_durably(&crt_new, &state_dir.join("client.crt"))?;
    // A CSR left behind by a crash here is harmless: without `client.key.new` beside it, the
    // next renewal makes a new key and CSR.
    let _ = std::fs::remove_file(state_dir.join("client.csr.new"));
    Ok(())
}

/// Validity for client certificates issued now.
pub fn validity(now: i64, secs: Option<i64>) -> Validity {
    match secs {
        Some(s) => Validity {
            not_before_unix: now,
            not_after_unix: now.saturating_add(s),
        },
        None => Validity::days_from(now, crate::api::clients::CLIENT_CERT_DAYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_ranges_and_renewal_windows() {
        assert_eq!(parse_artifact("tool").ok(), Some(("tool".into(), None)));
        assert_eq!(
            parse_artifact("tool@3").ok(),
            Some(("tool".into(), Some(3)))
        );
        for bad in ["", "@3", "tool@x", "tool@"] {
            assert!(parse_artifact(bad).is_err(), "{bad}");
        }
        for (v, want) in [
            ("bytes=0-", Some(0)),
            ("bytes=1024-", Some(1024)),
            ("bytes=0-99", None),
            ("items=1-", None),
            ("bytes=-5", None),
        ] {
            assert_eq!(parse_range(v), want, "{v}");
        }
        // (not_before, not_after, now, due)
        for (nb, na, now, due) in [
            (0, 90, 10, false),
            (0, 90, 59, false),
            (0, 90, 61, true),
            (0, 90, 100, true),
        ] {
            assert_eq!(renewal_due(nb, na, now), due, "{nb} {na} {now}");
        }
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("ab", 3), "ab");
    }

    #[test]
    fn interrupted_renewal_rolls_forward() -> Result<()> {
        let d = tempfile::tempdir()?;
        let p = d.path();
        std::fs::write(p.join("client.key"), "old key")?;
        std::fs::write(p.join("client.crt"), "old crt")?;
        // Crash after the key was renamed in, before the certificate.
        std::fs::write(p.join("client.key"), "new key")?;
        std::fs::write(p.join("client.crt.new"), "new crt")?;
        finish_renewal(p)?;
        assert_eq!(std::fs::read_to_string(p.join("client.crt"))?, "new crt");
        assert_eq!(std::fs::read_to_string(p.join("client.key"))?, "new key");
        // A key written without its certificate stays with its CSR (the renewal is asked
        // again with them, and the cluster answers with the serial it committed); the pair in
        // use is untouched.
        std::fs::write(p.join("client.key.new"), "pending key")?;
        std::fs::write(p.join("client.csr.new"), "pending csr")?;
        finish_renewal(p)?;
        assert_eq!(
            std::fs::read_to_string(p.join("client.key.new"))?,
            "pending key"
        );
        assert_eq!(std::fs::read_to_string(p.join("client.key"))?, "new key");
        assert_eq!(std::fs::read_to_string(p.join("client.crt"))?, "new crt");
        // Once its certificate arrives, the pending pair rolls in and the CSR goes.
        std::fs::write(p.join("client.crt.new"), "newer crt")?;
        finish_renewal(p)?;
        assert_eq!(
            std::fs::read_to_string(p.join("client.key"))?,
            "pending key"
        );
        assert_eq!(std::fs::read_to_string(p.join("client.crt"))?, "newer crt");
        assert!(!p.join("client.csr.new").exists());
        Ok(())
    }
}
