//! Deployment routes: artifacts from imported bundles rolled out to the clients a selector
//! names (in phases, with a soak, a brake and windows), and each client's result committed
//! through Raft.
//!
//! `rollout_command` (request → the command to propose) and `plan` (the preview) are the two
//! entries the console shares. Admin routes (`/v1/deployments`, `/plan`, `/{id}`,
//! `/{id}/{approve|pause|resume|abort}`) and agent routes (`/v1/agent/assignments`,
//! `/v1/agent/artifacts/{sha256}` with Range, `/v1/agent/results`). A client may download
//! only blobs of its own assignments; a node that lacks one fetches it from a peer first
//! (`Blobs::local_path`). The agent's side is `agent::deployments`, the CLI's
//! `cli::deployment`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_storage::rollout;
use outpost_storage::{
    APPROVAL_ABOVE_KEY, Command, FailureLimit, Reader, RolloutSpec, RolloutStep, Scope, Selector,
};

use crate::api::clients::{authorized_client, authorized_read, refuse_outside};
use crate::api::convert::{status_view, wire_list};
use crate::api::{ApiError, ApiResult, AppState, Caller, fields, rollout_input};
use crate::shared::text::{shown, tail};
use crate::wire;
use crate::wire::{
    CreatedDeployment, DeploymentRequest, DeploymentStatusView, PlanRequest, PlanView,
    RESULT_DETAIL_BYTES, ReportStatus, ResultReport, SelectorArgs, StepRequest, StepResponse,
};

/// A fresh deployment id.
pub(crate) fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 5];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("d-{}", hex::encode(b))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Whether a request asks only what `deployment create --group G` always asked: then it keeps
/// the older commands, which every node of a mixed cluster applies.
fn is_plain(req: &DeploymentRequest) -> bool {
    req.selector == SelectorArgs::default()
        && req.phases.is_none()
        && req.soak.is_none()
        && req.max_failures.is_none()
        && req.windows.is_empty()
        && req.start_at.is_none()
}

/// A request's selector as storage takes it: every list within its cap, every name valid,
/// and a target named. Pure.
pub(crate) fn selector(args: &SelectorArgs, group: &str) -> Result<Selector, ApiError> {
    let (groups, facts) = rollout_input::selector_terms(args, group)?;
    let selector = Selector {
        groups,
        labels: args.labels.clone(),
        facts,
        clients: args.clients.clone(),
        exclude_labels: args.exclude_labels.clone(),
        exclude_clients: args.exclude_clients.clone(),
    };
    selector.check().map_err(bad)?;
    Ok(selector)
}

/// `--phases` text, default one phase of 100 %. Pure.
fn phases(text: Option<&str>) -> Result<Vec<u8>, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(vec![100]),
        Some(t) if t.len() > 128 => Err(bad(format!(
            "phases {} are {} bytes, at most 128 allowed",
            shown(t),
            t.len()
        ))),
        Some(t) => rollout::parse_phases(t).map_err(bad),
    }
}

/// The command a `POST /v1/deployments` proposes, and the deployment's id: the older
/// `CreateDeployment` / `CreateReleaseDeployment` for a plain `--group G` while no approval
/// policy is set (so a mixed cluster keeps working), else `CreateRollout`. Reads the artifact's
/// kind and the policy from `r`; the console's create form calls it too. `now_ms` is the
/// proposer's time (a start time in the past just starts).
pub(crate) fn rollout_command(
    r: &Reader,
    req: &DeploymentRequest,
    now_ms: i64,
) -> Result<(String, Command), ApiError> {
    let id = req.id.clone().unwrap_or_else(new_id);
    fields::id("deployment id", &id)?;
    if id == "plan" {
        // `/v1/deployments/plan` is the preview: such a deployment could not be read back.
        return Err(bad("deployment id plan is reserved (the preview's route)"));
    }
    fields::text("artifact", &req.artifact, fields::MAX_ID_CHARS * 4)?;
    let kind = r
        .deployable_kind(&req.artifact, req.version)
        .map_err(ApiError::internal)?;
    let is_release = kind.as_deref() == Some(outpost_bundles::PayloadKind::OutpostRelease.as_str());
    let approval = r
        .config_get(&Scope::Global, APPROVAL_ABOVE_KEY)
        .map_err(ApiError::internal)?;
    if is_plain(req) && approval.is_none() && !req.group.is_empty() {
        fields::id("group", &req.group)?;
        return Ok((
            id.clone(),
            if is_release {
                Command::CreateReleaseDeployment {
                    id,
                    release: req.artifact.clone(),
                    version: req.version,
                    group: req.group.clone(),
                }
            } else {
                Command::CreateDeployment {
                    id,
                    artifact: req.artifact.clone(),
                    version: req.version,
                    group: req.group.clone(),
                }
            },
        ));
    }
    let selector = selector(&req.selector, &req.group)?;
    let phases = phases(req.phases.as_deref())?;
    let soak_ms = rollout_input::soak_ms(req.soak.as_deref())?;
    let max_failures = match req.max_failures.as_deref().map(str::trim) {
        None | Some("") => FailureLimit::default(),
        Some(t) if t.len() > 16 => {
            return Err(bad(format!(
                "max failures {} must be a count (2) or a percent (10%)",
                shown(t)
            )));
        }
        Some(t) => FailureLimit::parse(t).map_err(bad)?,
    };
    rollout_input::windows(&req.windows)?;
    rollout::Windows::parse(&req.windows).map_err(bad)?;
    let start_at_ms =
        rollout_input::start_at_ms(req.start_at.as_deref())?.filter(|at| *at > now_ms);
    let kind = if is_release {
        outpost_bundles::PayloadKind::OutpostRelease.as_str()
    } else {
        outpost_bundles::PayloadKind::Artifact.as_str()
    };
    Ok((
        id.clone(),
        Command::CreateRollout(Box::new(RolloutSpec {
            id,
            kind: kind.to_string(),
            name: req.artifact.clone(),
            version: req.version,
            selector,
            phases,
            soak_ms,
            max_failures,
            windows: req.windows.clone(),
            start_at_ms,
        })),
    ))
}

/// The preview of `POST /v1/deployments/plan` (and of the console's create form): the
/// clients the selector reaches at `now_ms`, split as deployment `req.id` (or a fresh id)
/// would split them.
pub(crate) fn plan(r: &Reader, req: &PlanRequest, now_ms: i64) -> Result<PlanView, ApiError> {
    let selector = selector(&req.selector, &req.group)?;
    let phases = phases(req.phases.as_deref())?;
    let id = req.id.clone().unwrap_or_else(new_id);
    fields::id("deployment id", &id)?;
    let plan = r
        .plan(&selector, &phases, &id, now_ms)
        .map_err(ApiError::internal)?;
    Ok(plan.into())
}

// ---- scope ---------------------------------------------------------------------------------

/// What a create command will target: its selector, or the group of the older commands.
pub(crate) fn command_selector(command: &Command) -> Option<Selector> {
    match command {
        Command::CreateRollout(spec) => Some(spec.selector.clone()),
        Command::CreateDeployment { group, .. }
        | Command::CreateReleaseDeployment { group, .. } => Some(Selector {
            groups: vec![group.clone()],
            ..Selector::default()
        }),
        _ => None,
    }
}

/// Refuses (403, naming them) when `selector` targets any client now outside the caller's
/// reach: a scoped person deploys only where every target is in reach.
pub(crate) fn check_selector_reach(
    r: &Reader,
    caller: &Caller,
    selector: &Selector,
) -> Result<(), ApiError> {
    let Some((_, grant)) = caller.person().filter(|_| caller.scoped()) else {
        return Ok(());
    };
    let outside = r
        .targets_outside(selector, grant)
        .map_err(ApiError::internal)?;
    refuse_outside(caller, "the selector reaches", &outside)
}

/// Refuses (403, naming them) a step of deployment `id` when any of its clients (those its
/// selector targets now, and those that reported a result) is outside the caller's reach.
/// An unknown deployment passes: the step itself says it does not exist.
pub(crate) fn check_deployment_reach(
    r: &Reader,
    caller: &Caller,
    id: &str,
) -> Result<(), ApiError> {
    let Some((_, grant)) = caller.person().filter(|_| caller.scoped()) else {
        return Ok(());
    };
    let Some(rollout) = r.rollout(id).map_err(ApiError::internal)? else {
        return Ok(());
    };
    let mut outside = r
        .targets_outside(&rollout.selector, grant)
        .map_err(ApiError::internal)?;
    for result in r.deployment_results(id).map_err(ApiError::internal)? {
        if outside.contains(&result.client_id) {
            continue;
        }
        if let Some(c) = r.client(&result.client_id).map_err(ApiError::internal)?
            && !grant.reaches(&c.groups, &c.labels)
        {
            outside.push(c.id);
        }
    }
    refuse_outside(caller, &format!("deployment {id} targets"), &outside)
}

// ---- admin routes -------------------------------------------------------------------------

pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<DeploymentRequest>,
) -> ApiResult<CreatedDeployment> {
    caller.require_admin()?;
    let now = outpost_raft::now_ms();
    let who = caller.clone();
    let (id, command) = st
        .read(move |r| {
            Ok(rollout_command(r, &req, now).and_then(|(id, command)| {
                if let Some(selector) = command_selector(&command) {
                    check_selector_reach(r, &who, &selector)?;
                }
                Ok((id, command))
            }))
        })
        .await??;
    st.commit(&caller, command).await?;
    st.node
        .linearizable_barrier(Duration::from_secs(5))
        .await
        .map_err(ApiError::unavailable)?;
    let i = id.clone();
    let (d, rollout) = st
        .read(move |r| Ok((r.deployment(&i)?, r.rollout(&i)?)))
        .await?;
    let d =
        d.ok_or_else(|| ApiError::internal(format!("deployment {id} committed but not found")))?;
    Ok(Json(CreatedDeployment {
        deployment: d.into(),
        state: rollout
            .map(|r| r.state.as_str().to_string())
            .unwrap_or_default(),
    }))
}

/// `POST /v1/deployments/plan`: the preview, before anything moves.
pub async fn plan_route(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<PlanRequest>,
) -> ApiResult<PlanView> {
    caller.require_admin()?;
    let now = outpost_raft::now_ms();
    Ok(Json(
        st.read(move |r| {
            Ok(selector(&req.selector, &req.group)
                .and_then(|s| check_selector_reach(r, &caller, &s))
                .and_then(|()| plan(r, &req, now)))
        })
        .await??,
    ))
}

/// `POST /v1/deployments/{id}/{approve|pause|resume|abort}`: one transition, proposed as
/// one command (apply checks it is legal, and that an approver is not the creator).
pub async fn step(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    UrlPath((id, name)): UrlPath<(String, String)>,
    Json(req): Json<StepRequest>,
) -> ApiResult<StepResponse> {
    caller.require_admin()?;
    fields::id("deployment id", &id)?;
    let step = match name.as_str() {
        "approve" => RolloutStep::Approve,
        "pause" => RolloutStep::Pause,
        "resume" => RolloutStep::Resume,
        "abort" => RolloutStep::Abort {
            uninstall: req.uninstall,
        },
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no step {}: approve, pause, resume or abort", shown(other)),
            ));
        }
    };
    let reason = rollout_input::reason(&req.reason)?;
    let (who, i) = (caller.clone(), id.clone());
    st.read(move |r| Ok(check_deployment_reach(r, &who, &i)))
        .await??;
    st.commit(
        &caller,
        Command::RolloutStep {
            id: id.clone(),
            step,
            reason,
        },
    )
    .await?;
    st.node
        .linearizable_barrier(Duration::from_secs(5))
        .await
        .map_err(ApiError::unavailable)?;
    let i = id.clone();
    let rollout = st.read(move |r| r.rollout(&i)).await?;
    let state = rollout
        .map(|r| r.state.as_str().to_string())
        .ok_or_else(|| ApiError::internal(format!("deployment {id} stepped but not found")))?;
    Ok(Json(StepResponse { id, state }))
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
    let now = outpost_raft::now_ms();
    let (status, results) = st
        .read(move |r| Ok((r.rollout_status(&i, now)?, r.deployment_results(&i)?)))
        .await?;
    let Some(mut status) = status else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("deployment {id} does not exist"),
        ));
    };
    let mut results = results;
    if caller.scoped() {
        // The per-client rows are a list of clients: a scope narrows them.
        let clients = st.read(|r| r.clients()).await?;
        let reached: std::collections::HashSet<&str> = clients
            .iter()
            .filter(|c| caller.reaches(&c.groups, &c.labels))
            .map(|c| c.id.as_str())
            .collect();
        status.clients.retain(|c| reached.contains(c.id.as_str()));
        results.retain(|r| reached.contains(r.client_id.as_str()));
    }
    Ok(Json(status_view(status, results)))
}

// ---- agent routes -------------------------------------------------------------------------

pub async fn assignments(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<wire::Assignment>> {
    let now = outpost_raft::now_ms();
    let (client, list) = authorized_read(&st, &caller, move |r, client| {
        r.assignments(&client.id, now)
    })
    .await?;
    let list = crate::api::clients::current_assignments(&st, &client.id, list, now).await?;
    Ok(Json(wire_list(list)))
}

/// A client's result of an install (`installed`, `failed`) or of a removal (`removed`,
/// `remove-failed`); rate-limited per client (`ResultsRate`) before its body is read.
pub async fn report(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    _rate: crate::api::extractors::ResultsRate,
    Json(rep): Json<ResultReport>,
) -> ApiResult<serde_json::Value> {
    let client = authorized_client(&st, &caller).await?;
    fields::id("deployment id", &rep.deployment_id)?;
    let detail = tail(&rep.detail, RESULT_DETAIL_BYTES);
    let command = match rep.status {
        ReportStatus::Installed | ReportStatus::Failed => Command::ReportDeployment {
            deployment_id: rep.deployment_id,
            client_id: client.id,
            status: if rep.status == ReportStatus::Installed {
                outpost_storage::DeploymentStatus::Installed
            } else {
                outpost_storage::DeploymentStatus::Failed
            },
            detail,
        },
        ReportStatus::Removed | ReportStatus::RemoveFailed => Command::ReportRemoval {
            deployment_id: rep.deployment_id,
            client_id: client.id,
            ok: rep.status == ReportStatus::Removed,
            detail,
        },
    };
    st.commit(&caller, command).await?;
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
    let now = outpost_raft::now_ms();
    let mine = st.read(move |r| r.assignments(&id, now)).await?;
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

    /// A fresh state database, with `config` set in the global scope.
    async fn store(dir: &std::path::Path, config: &[(&str, &str)]) -> outpost_storage::Store {
        let store = outpost_storage::Store::open(&dir.join("state.db")).expect("open");
        let init = Command::InitCluster {
            cluster_id: "c-1".into(),
            name: "plant".into(),
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n".into(),
        };
        let sets = config.iter().map(|(k, v)| Command::SetConfig {
            scope: Scope::Global,
            key: k.to_string(),
            value: v.to_string(),
        });
        let batch: Vec<_> = std::iter::once(init)
            .chain(sets)
            .map(|command| outpost_storage::Envelope {
                at_ms: 1,
                actor: "tester".into(),
                command,
            })
            .collect();
        let outcomes = store
            .apply(vec![Some(outpost_storage::encode_batch(&batch))], vec![1])
            .await
            .expect("apply");
        for o in outcomes.into_iter().flatten().flatten() {
            o.expect("applied");
        }
        store
    }

    fn request(group: &str) -> DeploymentRequest {
        DeploymentRequest {
            artifact: "tool".into(),
            group: group.into(),
            id: Some("d-1".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_plain_group_keeps_the_older_command_and_anything_more_is_a_rollout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = store(dir.path(), &[]).await.reader();
        let (id, cmd) = rollout_command(&r, &request("lab"), 0).expect("plain");
        assert_eq!(id, "d-1");
        assert!(
            matches!(&cmd, Command::CreateDeployment { group, .. } if group == "lab"),
            "{cmd:?}"
        );
        let req = DeploymentRequest {
            selector: SelectorArgs {
                labels: vec!["line2".into()],
                exclude_labels: vec!["quarantine".into()],
                facts: vec!["os.version_id=12".into()],
                ..Default::default()
            },
            phases: Some("10%,50%,100%".into()),
            soak: Some("30m".into()),
            max_failures: Some("10%".into()),
            windows: vec!["Mon-Fri 22:00-05:00".into()],
            start_at: Some("2026-12-24T22:00:00Z".into()),
            ..request("")
        };
        let (_, cmd) = rollout_command(&r, &req, 0).expect("rollout");
        let Command::CreateRollout(spec) = cmd else {
            panic!("not a rollout: {cmd:?}");
        };
        assert_eq!(spec.kind, "artifact");
        assert_eq!(spec.selector.labels, ["line2"]);
        assert_eq!(spec.selector.exclude_labels, ["quarantine"]);
        assert_eq!(
            spec.selector.facts,
            [("os.version_id".to_string(), "12".to_string())]
        );
        assert_eq!(spec.phases, [10, 50, 100]);
        assert_eq!(spec.soak_ms, 1_800_000);
        assert_eq!(spec.max_failures, FailureLimit::Percent(10));
        assert_eq!(spec.start_at_ms, Some(1_798_149_600_000));
        // A start time already past just starts.
        let (_, cmd) = rollout_command(&r, &req, 1_798_149_600_000).expect("rollout");
        assert!(matches!(cmd, Command::CreateRollout(s) if s.start_at_ms.is_none()));
        // A fresh id when none is given.
        let (id, _) = rollout_command(
            &r,
            &DeploymentRequest {
                id: None,
                ..request("lab")
            },
            0,
        )
        .expect("fresh id");
        assert!(id.starts_with("d-") && id.len() == 12, "{id}");
    }

    #[tokio::test]
    async fn an_approval_policy_makes_every_create_a_rollout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = store(dir.path(), &[(APPROVAL_ABOVE_KEY, "5")])
            .await
            .reader();
        let (_, cmd) = rollout_command(&r, &request("all"), 0).expect("rollout");
        let Command::CreateRollout(spec) = cmd else {
            panic!("not a rollout: {cmd:?}");
        };
        assert_eq!(spec.selector.groups, ["all"]);
        assert_eq!(spec.phases, [100]);
        assert_eq!(spec.max_failures, FailureLimit::default());
    }

    #[tokio::test]
    async fn refusals_name_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = store(dir.path(), &[]).await.reader();
        let with = |f: &dyn Fn(&mut DeploymentRequest)| {
            let mut req = request("lab");
            f(&mut req);
            rollout_command(&r, &req, 0)
                .expect_err("refused")
                .message()
                .to_string()
        };
        type Change<'a> = &'a dyn Fn(&mut DeploymentRequest);
        let cases: [(Change, &str); 11] = [
            (
                &|q| q.group.clear(),
                "name a target: --group, --label, --where or --client",
            ),
            (
                &|q| {
                    q.group.clear();
                    q.selector.exclude_labels = vec!["x".into()];
                },
                "name a target",
            ),
            (
                &|q| q.phases = Some("50%,25%,100%".into()),
                "phase 2 (25%) must be above phase 1 (50%)",
            ),
            (&|q| q.phases = Some("10%,50%".into()), "must be 100%"),
            (&|q| q.soak = Some("a while".into()), "soak \"a while\""),
            (&|q| q.max_failures = Some("many".into()), "max failures"),
            (&|q| q.max_failures = Some("é".repeat(20)), "max failures"),
            (
                &|q| q.windows = vec!["Someday 22:00-05:00".into()],
                "window \"Someday",
            ),
            (&|q| q.start_at = Some("Christmas".into()), "start time"),
            (&|q| q.id = Some("d 1".into()), "deployment id"),
            (&|q| q.id = Some("plan".into()), "reserved"),
        ];
        for (change, want) in cases {
            let msg = with(change);
            assert!(msg.contains(want), "{msg:?} lacks {want:?}");
        }
    }

    #[tokio::test]
    async fn a_plan_of_an_empty_cluster_counts_nobody() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = store(dir.path(), &[]).await.reader();
        let req = PlanRequest {
            group: "all".into(),
            phases: Some("10%,100%".into()),
            id: Some("d-1".into()),
            ..Default::default()
        };
        let v = plan(&r, &req, 0).expect("plan");
        assert_eq!(v.count, 0);
        assert_eq!(
            v.phases.iter().map(|p| p.percent).collect::<Vec<_>>(),
            [10, 100]
        );
        let e = plan(&r, &PlanRequest::default(), 0).expect_err("no target");
        assert!(e.message().contains("name a target"), "{}", e.message());
    }

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
