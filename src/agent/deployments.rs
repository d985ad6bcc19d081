//! The agent's deployment work (`S` = state dir): `S/artifacts/partial/<sha256>` grows across
//! attempts, is checked (size, sha256) and renamed to `S/artifacts/<sha256>`; the handler for
//! the payload kind is the effective configuration key `agent.handler.<kind>` (run with
//! `sh -c`), except for an `outpost-release`, which the agent installs itself (`release`);
//! `S/deployments.json` remembers results so a success is not re-run. Each result is reported
//! to the node (`/v1/agent/results`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper::Method;
use outpost_bundles::PayloadKind;
use serde::{Deserialize, Serialize};

use crate::agent::release;
use crate::shared::client::ApiClient;
use crate::shared::files::rename_durably;
use crate::shared::text::tail;
use crate::wire::{
    Assignment, DeploymentRecord, DeploymentStatus, RESULT_DETAIL_BYTES, ReportStatus, ResultReport,
};

/// A failed install is retried on later syncs at most this many times in all.
pub const MAX_ATTEMPTS: u32 = 5;

/// Default bound on a handler's run time (`agent.handler_timeout`, seconds, overrides it).
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(600);

/// What the agent remembers of each deployment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LocalResult {
    pub status: Option<DeploymentStatus>,
    pub attempts: u32,
    /// The outcome of the last removal (`abort --uninstall`), once one ran (`removals`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<Removal>,
    /// Removals tried so far (at most `MAX_ATTEMPTS`, like installs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub remove_attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The outcome of a removal (`removals`), as the agent remembers it and reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Removal {
    Removed,
    RemoveFailed,
}

impl Removal {
    /// The status `/v1/agent/results` takes for it.
    pub fn status(self) -> ReportStatus {
        match self {
            Removal::Removed => ReportStatus::Removed,
            Removal::RemoveFailed => ReportStatus::RemoveFailed,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }
}

/// What a handler is told about the payload it installs (its environment).
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub version: u64,
    pub sha256: &'a str,
    /// The deployment id, or `offline-<bundle id>` for `agent install`.
    pub origin: &'a str,
}

impl<'a> Job<'a> {
    pub(crate) fn of(d: &'a DeploymentRecord) -> Job<'a> {
        Job {
            name: &d.artifact,
            kind: &d.kind,
            version: d.version,
            sha256: &d.sha256,
            origin: &d.id,
        }
    }
}

/// The bound on a self-upgrade's proof: `agent.upgrade_timeout` seconds, or the default.
pub fn upgrade_timeout(config: &BTreeMap<String, String>) -> Duration {
    config
        .get("agent.upgrade_timeout")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(release::PROVE_TIMEOUT)
}

pub(crate) fn load_local(path: &Path) -> BTreeMap<String, LocalResult> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// One sync's deployment work: for each assignment not yet installed here, fetch, install,
/// report. An `outpost-release` replaces the agent's own binary (`release`) at `exe`; while
/// `proving` (this process is such a new binary, run by its predecessor) no release is
/// installed. Returns one line per deployment acted on.
pub async fn agent_step(
    client: &ApiClient,
    state_dir: &Path,
    config: &BTreeMap<String, String>,
    list: Vec<Assignment>,
    (exe, proving): (&Path, bool),
) -> Result<Vec<String>> {
    let state_path = state_dir.join("deployments.json");
    let mut local = load_local(&state_path);
    let mut lines = Vec::new();
    for a in list {
        let d = &a.deployment;
        let is_release = d.kind == PayloadKind::OutpostRelease.as_str();
        if is_release && proving {
            continue;
        }
        let mut entry = local.get(&d.id).cloned().unwrap_or_default();
        if entry.status == Some(DeploymentStatus::Installed) || entry.attempts >= MAX_ATTEMPTS {
            continue;
        }
        let path = fetch(client, state_dir, d).await?;
        entry.attempts += 1;
        let (status, detail) = if is_release {
            // Counted before the swap: an agent that dies proving a release tries it again
            // only MAX_ATTEMPTS times.
            local.insert(d.id.clone(), entry.clone());
            outpost_certs::write_public_file(&state_path, &serde_json::to_vec_pretty(&local)?)?;
            let u = release::install(
                state_dir,
                exe,
                &path,
                &d.sha256,
                &d.id,
                (release::Proof::Sync, upgrade_timeout(config)),
            )
            .await;
            if u.child_synced {
                // The new binary's sync recorded its own results: keep them.
                local = load_local(&state_path);
                lines.extend(u.child_lines);
            }
            (u.status, u.detail)
        } else {
            run_handler(config, &Job::of(d), &path).await
        };
        let report = ResultReport {
            deployment_id: d.id.clone(),
            status: status.into(),
            detail: tail(&detail, RESULT_DETAIL_BYTES),
        };
        report_result(client, &report).await?;
        entry.status = Some(status);
        local.insert(d.id.clone(), entry);
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
pub async fn run_handler(
    config: &BTreeMap<String, String>,
    job: &Job<'_>,
    path: &Path,
) -> (DeploymentStatus, String) {
    let Some(cmd) = config.get(&format!("agent.handler.{}", job.kind)) else {
        return (
            DeploymentStatus::Installed,
            format!(
                "stored at {} (no agent.handler.{} set)",
                path.display(),
                job.kind
            ),
        );
    };
    let (ok, detail) = run_sh(config, cmd, job, path).await;
    let status = if ok {
        DeploymentStatus::Installed
    } else {
        DeploymentStatus::Failed
    };
    (status, detail)
}

/// Runs `cmd` with `sh -c`, the job in its environment (`OUTPOST_ARTIFACT` = `path`, then
/// the name, version, sha256 and deployment), bounded by `agent.handler_timeout` seconds (or
/// `HANDLER_TIMEOUT`). Install and remove handlers both run here. Returns whether it exited 0,
/// and what it said: its exit and the tail of its stderr.
pub async fn run_sh(
    config: &BTreeMap<String, String>,
    cmd: &str,
    job: &Job<'_>,
    path: &Path,
) -> (bool, String) {
    let limit = config
        .get("agent.handler_timeout")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(HANDLER_TIMEOUT);
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("OUTPOST_ARTIFACT", path)
        .env("OUTPOST_ARTIFACT_NAME", job.name)
        .env("OUTPOST_ARTIFACT_VERSION", job.version.to_string())
        .env("OUTPOST_ARTIFACT_SHA256", job.sha256)
        .env("OUTPOST_DEPLOYMENT", job.origin)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("starting sh: {e}")),
    };
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => (false, format!("handler killed after {limit:?}")),
        Ok(Err(e)) => (false, format!("waiting for the handler: {e}")),
        Ok(Ok(out)) => {
            let stderr = tail(
                String::from_utf8_lossy(&out.stderr).trim(),
                RESULT_DETAIL_BYTES,
            );
            match out.status.code() {
                Some(0) => (true, format!("handler exit 0 {stderr}").trim().to_string()),
                Some(c) => (false, format!("handler exit {c}: {stderr}")),
                None => (false, format!("handler killed by a signal: {stderr}")),
            }
        }
    }
}

/// Reports one result; when the node answers 429 (its per-client rate), waits what it asks
/// (at most `RESULT_WAIT_MAX` each time) and tries again, `RESULT_TRIES` times in all.
pub(crate) async fn report_result(client: &ApiClient, report: &ResultReport) -> Result<()> {
    let mut tries = 1;
    loop {
        match client
            .call::<serde_json::Value>(Method::POST, "/v1/agent/results", Some(report))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => match crate::agent::too_many(&e) {
                Some(wait) if tries < RESULT_TRIES => {
                    let wait = wait.unwrap_or(Duration::from_secs(1)).min(RESULT_WAIT_MAX);
                    tracing::info!(
                        deployment = %report.deployment_id,
                        retry_after_s = wait.as_secs(),
                        "the node asks for this result later; waiting"
                    );
                    tokio::time::sleep(wait).await;
                    tries += 1;
                }
                _ => return Err(e),
            },
        }
    }
}

const RESULT_TRIES: u32 = 4;
const RESULT_WAIT_MAX: Duration = Duration::from_secs(30);
