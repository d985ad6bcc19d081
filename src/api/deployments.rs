//! Deployment routes: artifacts from imported bundles assigned to groups of clients, and
//! each client's result committed through Raft.
//!
//! Admin routes (`/v1/deployments`) and agent routes (`/v1/agent/assignments`,
//! `/v1/agent/artifacts/{sha256}` with Range, `/v1/agent/results`). A client may download
//! only blobs of its own assignments; a node that lacks one fetches it from a peer first
//! (`Blobs::local_path`). The agent's side is `agent::deployments`, the CLI's
//! `cli::deployment`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_storage::Command;

use crate::api::clients::{authorized_client, authorized_read};
use crate::api::convert::wire_list;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::shared::text::tail;
use crate::wire;
use crate::wire::{DeploymentRequest, DeploymentStatusView, RESULT_DETAIL_BYTES, ResultReport};

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
) -> ApiResult<wire::DeploymentRecord> {
    caller.require_admin()?;
    let id = req.id.clone().unwrap_or_else(new_id);
    // An artifact keeps `CreateDeployment`, which every node of a mixed cluster applies; only
    // a release needs the newer `CreateReleaseDeployment` (apply resolves the payload again).
    let (name, version) = (req.artifact.clone(), req.version);
    let kind = st.read(move |r| r.deployable_kind(&name, version)).await?;
    let command = if kind.as_deref() == Some(outpost_bundles::PayloadKind::OutpostRelease.as_str())
    {
        Command::CreateReleaseDeployment {
            id: id.clone(),
            release: req.artifact,
            version: req.version,
            group: req.group,
        }
    } else {
        Command::CreateDeployment {
            id: id.clone(),
            artifact: req.artifact,
            version: req.version,
            group: req.group,
        }
    };
    st.commit(&caller, command).await?;
    st.node
        .linearizable_barrier(Duration::from_secs(5))
        .await
        .map_err(ApiError::unavailable)?;
    let i = id.clone();
    st.read(move |r| r.deployment(&i))
        .await?
        .map(|d| Json(d.into()))
        .ok_or_else(|| ApiError::internal(format!("deployment {id} committed but not found")))
}

pub async fn list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<wire::DeploymentRecord>> {
    caller.require_admin()?;
    Ok(Json(wire_list(st.read(|r| r.deployments()).await?)))
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
        deployment: deployment.into(),
        results: wire_list(results),
        pending,
    }))
}

// ---- agent routes -------------------------------------------------------------------------

pub async fn assignments(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<wire::Assignment>> {
    let (_, list) = authorized_read(&st, &caller, |r, client| {
        r.assignments(&client.id, outpost_raft::now_ms())
    })
    .await?;
    Ok(Json(wire_list(list)))
}

/// A client's result; rate-limited per client (`ResultsRate`) before its body is read.
pub async fn report(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    _rate: crate::api::extractors::ResultsRate,
    Json(rep): Json<ResultReport>,
) -> ApiResult<serde_json::Value> {
    let client = authorized_client(&st, &caller).await?;
    st.commit(
        &caller,
        Command::ReportDeployment {
            deployment_id: rep.deployment_id,
            client_id: client.id,
            status: rep.status.into(),
            detail: tail(&rep.detail, RESULT_DETAIL_BYTES),
        },
    )
    .await?;
    Ok(Json(serde_json::json!({ "ok": true })))
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
    let mine = st
        .read(move |r| r.assignments(&id, outpost_raft::now_ms()))
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for (v, want) in [
            ("bytes=0-", Some(0)),
            ("bytes=1024-", Some(1024)),
            ("bytes=0-99", None),
            ("items=1-", None),
            ("bytes=-5", None),
        ] {
            assert_eq!(parse_range(v), want, "{v}");
        }
    }
}
