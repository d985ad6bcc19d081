//! Bundle routes behind `bundle import` and `bundle list`: the import context (trust,
//! channel floors, cluster time floor), the commit of a bundle already stored in this node's
//! blob store, the list, and the collection of blobs of a refused commit.
//!
//! The node checks that every payload blob is in its store before proposing, and verifies the
//! signed bytes against the trust in its state; `apply` verifies them again on every node.
//! The CLI's side (authoring, import, list) is `cli::bundle`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use outpost_bundles::{Limits, PayloadKind, TrustDocument};
use outpost_storage::{Command, SignedBundle};

use crate::api::convert::wire_list;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::wire::{BundleCommit, BundleCommitted, BundleContext, BundleList, MAX_CONFIG_PAYLOAD};

/// The cluster time floor (unix seconds): the highest of the voters' median clock (each read
/// over the peer channel) and the newest `created` of an accepted bundle.
async fn cluster_time_floor(st: &AppState) -> Result<i64, ApiError> {
    let voters: Vec<u64> = st
        .node
        .status()
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    let accepted = st.read(|r| r.bundle_time_floor()).await?;
    Ok(crate::peer_app::cluster_time_floor(&st.node, &voters, accepted).await)
}

pub async fn context(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<BundleContext> {
    caller.require_admin()?;
    // The import stores the payloads into this node's blob store next: not below the floor.
    st.refuse_when_full()?;
    st.node
        .linearizable_barrier(Duration::from_secs(5))
        .await
        .map_err(ApiError::unavailable)?;
    let (trust, channels) = st.read(|r| Ok((r.bundle_trust()?, r.channels()?))).await?;
    let Some(trust) = trust else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no bundle trust is pinned in this cluster: it was initialised without \
             --bundle-trust KEY.pub, so no bundle can be verified",
        ));
    };
    let doc: TrustDocument = serde_json::from_str(&trust.trust_json)
        .map_err(|e| ApiError::internal(format!("stored bundle trust does not parse: {e}")))?;
    let time_floor = cluster_time_floor(&st).await?;
    Ok(Json(BundleContext {
        cluster_id: st.cluster_id.clone(),
        trust_version: trust.version,
        trust: doc,
        channels: channels
            .into_iter()
            .map(|c| (c.name, c.version, c.manifest_sha256))
            .collect(),
        time_floor,
    }))
}

pub async fn list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<BundleList> {
    caller.require_admin()?;
    let (bundles, nodes) = st.read(|r| Ok((r.bundles()?, r.nodes()?))).await?;
    Ok(Json(BundleList {
        nodes: nodes
            .into_iter()
            .filter(|n| n.role != outpost_storage::NodeRole::Removed)
            .map(|n| (n.id, n.name))
            .collect(),
        bundles: wire_list(bundles),
    }))
}

/// Commits a bundle stored in this node's blob store by `bundle import` on this host.
pub async fn commit(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<BundleCommit>,
) -> ApiResult<BundleCommitted> {
    use base64::Engine;
    if caller != Caller::Local {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bundles are imported on a node's host (outpost bundle import FILE --data-dir D)",
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad =
        |what: &str, e: String| ApiError::new(StatusCode::BAD_REQUEST, format!("{what}: {e}"));
    let manifest = b64
        .decode(&req.manifest)
        .map_err(|e| bad("manifest is not base64", e.to_string()))?;
    let signatures = b64
        .decode(&req.signatures)
        .map_err(|e| bad("signatures are not base64", e.to_string()))?;
    let trust = st.read(|r| r.bundle_trust()).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no bundle trust is pinned in this cluster: it was initialised without --bundle-trust KEY.pub",
        )
    })?;
    let doc: TrustDocument = serde_json::from_str(&trust.trust_json)
        .map_err(|e| ApiError::internal(format!("stored bundle trust does not parse: {e}")))?;
    let head =
        outpost_bundles::verify_signed_head(&manifest, &signatures, &doc, &Limits::default())
            .map_err(|e| bad("bundle refused", e.to_string()))?;
    let mut config_payloads = Vec::new();
    for p in &head.manifest.payloads {
        let path = st
            .blobs
            .store()
            .blob_path(&p.sha256)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let len = tokio::fs::metadata(&path).await.map(|m| m.len()).ok();
        if len != Some(p.size) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "payload {} (sha256 {}) is not in this node's blob store with {} bytes; import again",
                    p.name, p.sha256, p.size
                ),
            ));
        }
        if p.kind == PayloadKind::Config {
            if p.size > MAX_CONFIG_PAYLOAD {
                return Err(bad(
                    "bundle refused",
                    format!(
                        "config payload {} is {} bytes, at most {MAX_CONFIG_PAYLOAD} allowed",
                        p.name, p.size
                    ),
                ));
            }
            let bytes = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
            // The retention policy is cluster-wide: refused here, before the commit (apply
            // accepts what older nodes accept, so mixed versions agree).
            let entries = std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(outpost_storage::parse_config_payload)
                .map_err(|e| bad("bundle refused", format!("config payload {}: {e}", p.name)))?;
            for (scope, key, value) in &entries {
                outpost_storage::check_retention_entry(scope, key, value).map_err(|e| {
                    bad("bundle refused", format!("config payload {}: {e}", p.name))
                })?;
            }
            config_payloads.push(bytes);
        }
    }
    let cluster_time = cluster_time_floor(&st).await?;
    let done = st
        .commit(
            &caller,
            Command::ImportSignedBundle(Box::new(SignedBundle {
                manifest,
                signatures,
                config_payloads,
                cluster_time,
                node_id: st.node_id,
            })),
        )
        .await?;
    // A release starts a rolling upgrade of every node (recorded in Raft, so it survives a
    // change of leader; the leader drives it).
    // The bundle is committed either way: a roll that cannot start is reported beside it.
    let (mut roll, mut roll_refused) = (None, None);
    if let Some(p) = head
        .manifest
        .payloads
        .iter()
        .find(|p| p.kind == PayloadKind::OutpostRelease)
        .filter(|_| req.roll)
    {
        let start = Command::StartRoll {
            bundle_id: head.manifest.id.clone(),
            sha256: p.sha256.clone(),
        };
        match st.commit(&caller, start).await {
            Ok(_) => roll = Some(p.sha256.clone()),
            Err(e) => roll_refused = Some(e.message().to_owned()),
        }
    }
    let imported = done != outpost_storage::Response::Unchanged;
    if imported {
        let bytes = head.manifest.payloads.iter().map(|p| p.size).sum();
        st.metrics.count_import(bytes);
    }
    Ok(Json(BundleCommitted {
        imported,
        roll,
        roll_refused,
    }))
}

/// Removes blobs no committed bundle refers to (after a refused commit).
pub async fn gc(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<serde_json::Value> {
    if caller != Caller::Local {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "local only"));
    }
    let wanted = st.read(|r| r.wanted_blobs()).await?;
    let store = st.blobs.store().clone();
    let report = tokio::task::spawn_blocking(move || store.gc(&wanted.into_keys().collect()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(
        serde_json::json!({ "removed": report.removed.len(), "bytes": report.bytes }),
    ))
}
