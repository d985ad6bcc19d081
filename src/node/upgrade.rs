//! Rolling self-upgrade: a node switches to the release the roll in the state names, and the
//! leader drives the roll, one node at a time.
//!
//! The node owns its executables in `D/bin/`: `outpost-<sha256>` for each release it staged,
//! and `current`, a symlink to the release it confirmed. `outpost serve` started from any
//! other executable (`/usr/bin/outpost` under systemd, or the build a test runs) executes
//! `current` first (`launch`), so a restart keeps the upgraded release.
//!
//! Switching (`switch`): copy the blob into `D/bin/` checking its SHA-256, run it with
//! `--version` (it must answer within 10 s: a release that does not start stops the roll
//! here, before anything changed), write `D/bin/trial.json`, stop the node cleanly and
//! `exec` the release with the same arguments (same process id: systemd and a foreground
//! supervisor keep tracking it). The release, started on trial, confirms once it is a member
//! with a leader and has caught up (a read index): `current` then points at it and it
//! reports its version and SHA-256 (`ReportBinary`). If it dies before that, the next start
//! of an executable (systemd's restart of `/usr/bin/outpost`) finds the unconfirmed trial,
//! keeps it as `failed-trial.json`, goes back to `current` (the release before) and stops the
//! roll with the reason.
//!
//! The leader (`drive`): pre-flight (every member caught up), then each member in id order,
//! itself last: `RollNode(n)`, wait until `n` reports the release and has caught up, next. A
//! member that does not come back within the step deadline stops the roll. openraft 0.9
//! has no leadership transfer: the leader switches last, when every other member already runs
//! the release, so the election that follows its restart can only pick an upgraded node.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use outpost_storage::{Command, Envelope, RollRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::AppState;
use crate::node::VERSION;
use crate::shared::datadir::DataDir;
use crate::shared::files::sha256_file;

/// How long a node has to come back on a release, and how long pre-flight waits for every
/// member to catch up, before the leader stops the roll (`OUTPOST_ROLL_STEP_SECS`).
const STEP_DEADLINE: Duration = Duration::from_secs(300);
/// How long a staged release has to answer `--version`.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// A member within this many entries of the leader's log has caught up.
const CAUGHT_UP_ENTRIES: u64 = 100;

/// A release started on trial: written before the switch, removed when it confirms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub sha256: String,
    pub path: PathBuf,
    /// The executable it replaced.
    pub previous: PathBuf,
    pub started_ms: i64,
}

/// What this process is, found before the node starts.
pub struct Boot {
    pub exe: PathBuf,
    pub sha256: String,
    /// This process is a release on trial, to confirm once it has caught up.
    pub trial: Option<Trial>,
    /// A trial that ended before it confirmed; this process is what it replaced.
    pub failed_trial: Option<Trial>,
}

fn bin_dir(dd: &DataDir) -> PathBuf {
    dd.root.join("bin")
}

fn trial_file(dd: &DataDir) -> PathBuf {
    bin_dir(dd).join("trial.json")
}

/// A trial that ended before it confirmed, until the roll is told.
fn failed_file(dd: &DataDir) -> PathBuf {
    bin_dir(dd).join("failed-trial.json")
}

/// The confirmed release's SHA-256 and version, written before `current` moves.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    sha256: String,
    version: String,
}

fn current_meta(dd: &DataDir) -> PathBuf {
    bin_dir(dd).join("current.json")
}

/// `1.2.3` as numbers for comparing; what does not parse counts as 0.
fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

fn current_link(dd: &DataDir) -> PathBuf {
    bin_dir(dd).join("current")
}

fn staged_path(dd: &DataDir, sha256: &str) -> PathBuf {
    bin_dir(dd).join(format!("outpost-{sha256}"))
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Before the node starts (blocking): what this executable is, whether it is on trial, and
/// whether the node's confirmed release is another executable (then it is executed instead,
/// and this function does not return).
pub fn launch(dd: &DataDir) -> Result<Boot> {
    // Without /proc (a bare chroot) this executable cannot be found: the node serves, but
    // takes no part in rolls (it does not report and never switches).
    let found = std::env::current_exe()
        .context("finding this executable")
        .and_then(|exe| {
            let sha = sha256_file(&exe)?;
            Ok((exe, sha))
        });
    let (exe, sha256) = match found {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "rolling upgrades are off on this node");
            return Ok(Boot {
                exe: PathBuf::new(),
                sha256: String::new(),
                trial: None,
                failed_trial: None,
            });
        }
    };
    let mut boot = Boot {
        exe,
        sha256,
        trial: None,
        failed_trial: None,
    };
    let trial_path = trial_file(dd);
    if trial_path.exists() {
        let parsed = std::fs::read(&trial_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Trial>(&b).ok());
        match parsed {
            Some(t) if t.sha256 == boot.sha256 => {
                tracing::info!(release = short(&t.sha256), "started on trial");
                boot.trial = Some(t);
                return Ok(boot);
            }
            Some(t) => {
                // The release on trial ended before it confirmed (this is a restart of the
                // executable it replaced): remembered until the roll is told.
                tracing::warn!(
                    release = short(&t.sha256),
                    "the release on trial stopped before it was ready; going back"
                );
                crate::shared::files::rename_durably(&trial_path, &failed_file(dd))?;
            }
            None => {
                tracing::warn!(path = %trial_path.display(), "unreadable trial marker removed");
                std::fs::remove_file(&trial_path)?;
            }
        }
    }
    let link = current_link(dd);
    if let Ok(target) = std::fs::read_link(&link) {
        let target_sha = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("outpost-"))
            .unwrap_or("");
        let launched = std::env::var_os("OUTPOST_LAUNCHED").is_some();
        // A package installed after the roll (a newer version in /usr/bin) wins over an older
        // confirmed release; the same or a newer version in `current` wins over this one.
        let current_version = std::fs::read(current_meta(dd))
            .ok()
            .and_then(|b| serde_json::from_slice::<Current>(&b).ok())
            .map(|c| c.version)
            .unwrap_or_default();
        let not_older = version_key(&current_version) >= version_key(VERSION);
        if target_sha != boot.sha256 && target.is_file() && !launched && not_older {
            tracing::info!(release = short(target_sha), "executing this node's release");
            let err = exec(&target);
            tracing::warn!(error = %err, "could not execute this node's release; going on with this executable");
        }
    }
    if let Some(t) = std::fs::read(failed_file(dd))
        .ok()
        .and_then(|b| serde_json::from_slice::<Trial>(&b).ok())
    {
        boot.failed_trial = Some(t);
    }
    Ok(boot)
}

/// Replaces this process with `path`, same arguments; returns only on failure.
pub fn exec(path: &Path) -> anyhow::Error {
    let err = std::process::Command::new(path)
        .args(std::env::args_os().skip(1))
        .env("OUTPOST_LAUNCHED", "1")
        .exec();
    anyhow!(err).context(format!("executing {}", path.display()))
}

/// The node's side of rolling upgrades, every second: confirm a trial, report what runs,
/// switch when the roll names this node, and drive the roll while leader. A switch is
/// handed to `serve` through `switch`, which stops the node and executes the release.
pub fn spawn(
    state: Arc<AppState>,
    dd: DataDir,
    boot: Boot,
    switch: mpsc::Sender<PathBuf>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut w = Watch {
            state,
            dd,
            boot,
            switch,
            reported: false,
            refused: HashSet::new(),
            switching: false,
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = w.once().await {
                tracing::warn!(error = %format!("{e:#}"), "upgrade step");
            }
        }
    })
}

struct Watch {
    state: Arc<AppState>,
    dd: DataDir,
    boot: Boot,
    switch: mpsc::Sender<PathBuf>,
    /// This node's executable is recorded in the state.
    reported: bool,
    /// Rolls (release, start time) this node refused or failed: not tried again in the same
    /// roll; a roll started again (`upgrade start`) is tried afresh.
    refused: HashSet<(String, i64)>,
    switching: bool,
}

impl Watch {
    fn me(&self) -> u64 {
        self.state.node_id
    }

    async fn write(&self, command: Command) -> Result<()> {
        let env = Envelope {
            at_ms: outpost_raft::now_ms(),
            actor: format!("node:{}", self.me()),
            command,
        };
        self.state
            .node
            .write(env)
            .await?
            .map_err(|r| anyhow!("{}", r.message))?;
        Ok(())
    }

    async fn once(&mut self) -> Result<()> {
        if self.switching {
            return Ok(());
        }
        let s = self.state.node.status();
        if s.leader_id.is_none() || !s.members.iter().any(|m| m.id == self.me()) {
            return Ok(());
        }
        if self.boot.trial.is_some() || self.boot.failed_trial.is_some() || !self.reported {
            // Caught up: what the leader committed before now is applied here.
            self.state
                .node
                .linearizable_barrier(Duration::from_secs(2))
                .await
                .context("waiting to catch up")?;
        }
        if let Some(t) = self.boot.trial.clone() {
            let dd = self.dd.clone();
            tokio::task::spawn_blocking(move || confirm(&dd, &t)).await??;
            tracing::info!(
                release = short(&self.boot.sha256),
                "release confirmed: this node runs it from now on"
            );
            self.boot.trial = None;
        }
        let roll = self.state.read(|r| r.roll()).await.map_err(api_err)?;
        if let Some(t) = self.boot.failed_trial.clone() {
            if let Some(r) = roll.as_ref().filter(|r| r.state == "running")
                && r.sha256 == t.sha256
            {
                self.refused.insert((r.sha256.clone(), r.started_at_ms));
                let reason = format!(
                    "node {}: release {} stopped before it was ready; the node is back on its previous executable",
                    self.me(),
                    short(&t.sha256)
                );
                self.write(Command::EndRoll {
                    reason: Some(reason),
                })
                .await?;
            }
            let dd = self.dd.clone();
            tokio::task::spawn_blocking(move || std::fs::remove_file(failed_file(&dd))).await??;
            self.boot.failed_trial = None;
            return Ok(());
        }
        if !self.reported && self.boot.sha256.is_empty() {
            self.reported = true;
        }
        if !self.reported {
            let me = self.me();
            let row = self
                .state
                .read(move |r| r.node(me))
                .await
                .map_err(api_err)?;
            if row.is_some_and(|n| n.version != VERSION || n.binary_sha256 != self.boot.sha256) {
                self.write(Command::ReportBinary {
                    node_id: me,
                    version: VERSION.to_string(),
                    sha256: self.boot.sha256.clone(),
                })
                .await?;
            }
            self.reported = true;
        }
        let Some(roll) = roll.filter(|r| r.state == "running") else {
            return Ok(());
        };
        if roll.node == Some(self.me())
            && !self.boot.sha256.is_empty()
            && roll.sha256 != self.boot.sha256
            && !self
                .refused
                .contains(&(roll.sha256.clone(), roll.started_at_ms))
        {
            return self.switch_to(&roll).await;
        }
        if s.leader_id == Some(self.me()) {
            self.drive(&roll, &s).await?;
        }
        Ok(())
    }

    /// Stages the roll's release, probes it, and hands the switch to `serve`.
    async fn switch_to(&mut self, roll: &RollRecord) -> Result<()> {
        let blob = match self.state.blobs.local_path(&roll.sha256).await {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(error = %e, "waiting for the release's blob");
                return Ok(());
            }
        };
        let staged = staged_path(&self.dd, &roll.sha256);
        let (dd, sha) = (self.dd.clone(), roll.sha256.clone());
        let stage = {
            let staged = staged.clone();
            tokio::task::spawn_blocking(move || stage(&dd, &blob, &staged, &sha)).await?
        };
        let probe = match stage {
            Ok(()) => probe(&staged).await,
            Err(e) => Err(e),
        };
        if let Err(e) = probe {
            let mut reason = format!(
                "node {}: release {} does not start: {e:#}",
                self.me(),
                short(&roll.sha256)
            );
            if reason.len() > 1024 {
                let mut end = 1024;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason.truncate(end);
            }
            tracing::warn!(%reason, "release refused; stopping the roll");
            self.refused
                .insert((roll.sha256.clone(), roll.started_at_ms));
            return self
                .write(Command::EndRoll {
                    reason: Some(reason),
                })
                .await;
        }
        let trial = Trial {
            sha256: roll.sha256.clone(),
            path: staged.clone(),
            previous: self.boot.exe.clone(),
            started_ms: outpost_raft::now_ms(),
        };
        let dd = self.dd.clone();
        tokio::task::spawn_blocking(move || write_trial(&dd, &trial)).await??;
        tracing::info!(
            release = short(&roll.sha256),
            "switching to the release: stopping and executing it"
        );
        self.switching = true;
        self.switch
            .send(staged)
            .await
            .map_err(|_| anyhow!("the node is stopping"))?;
        Ok(())
    }

    /// The leader's part: one member at a time, itself last.
    async fn drive(&self, roll: &RollRecord, s: &outpost_raft::NodeStatus) -> Result<()> {
        let nodes = self.state.read(|r| r.nodes()).await.map_err(api_err)?;
        let done = |id: u64| {
            nodes
                .iter()
                .any(|n| n.id == id && n.binary_sha256 == roll.sha256)
        };
        let last = s.last_log_index;
        let caught_up = |id: u64| {
            id == self.me()
                || s.members.iter().any(|m| {
                    m.id == id
                        && m.matched_index
                            .is_some_and(|i| i + CAUGHT_UP_ENTRIES >= last)
                })
        };
        let age_ms = outpost_raft::now_ms().saturating_sub(roll.updated_at_ms);
        let deadline = step_deadline();
        let late = age_ms > deadline.as_millis() as i64;
        let members: Vec<u64> = s.members.iter().map(|m| m.id).collect();
        if let Some(n) = roll.node {
            if !members.contains(&n) || (done(n) && caught_up(n)) {
                return self.write(Command::RollNode { node: None }).await;
            }
            if late {
                return self
                    .write(Command::EndRoll {
                        reason: Some(format!(
                            "node {n} did not come back on release {} within {} s",
                            short(&roll.sha256),
                            deadline.as_secs()
                        )),
                    })
                    .await;
            }
            return Ok(());
        }
        let pending: Vec<u64> = members.iter().copied().filter(|&n| !done(n)).collect();
        if pending.is_empty() {
            tracing::info!(release = short(&roll.sha256), "every node runs the release");
            return self.write(Command::EndRoll { reason: None }).await;
        }
        let behind: Vec<u64> = members.iter().copied().filter(|&n| !caught_up(n)).collect();
        if !behind.is_empty() {
            if late {
                return self
                    .write(Command::EndRoll {
                        reason: Some(format!(
                            "pre-flight: node(s) {behind:?} behind or unreachable for {} s",
                            deadline.as_secs()
                        )),
                    })
                    .await;
            }
            return Ok(());
        }
        let next = pending
            .iter()
            .copied()
            .filter(|&n| n != self.me())
            .min()
            .unwrap_or(self.me());
        tracing::info!(
            node = next,
            release = short(&roll.sha256),
            "rolling upgrade: next node"
        );
        self.write(Command::RollNode { node: Some(next) }).await
    }
}

fn api_err(e: crate::api::ApiError) -> anyhow::Error {
    anyhow!("{}", e.message())
}

fn step_deadline() -> Duration {
    std::env::var("OUTPOST_ROLL_STEP_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(STEP_DEADLINE)
}

/// Copies the release blob to `staged` (mode 0755), checking its SHA-256 on the way.
fn stage(dd: &DataDir, blob: &Path, staged: &Path, sha256: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if staged.is_file() && sha256_file(staged)? == sha256 {
        return Ok(());
    }
    std::fs::create_dir_all(bin_dir(dd))?;
    let tmp = staged.with_extension("tmp");
    let mut from =
        std::fs::File::open(blob).with_context(|| format!("opening {}", blob.display()))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&tmp)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    to.sync_all()?;
    drop(to);
    let got = hex::encode(h.finalize());
    if got != sha256 {
        let _ = std::fs::remove_file(&tmp);
        bail!("the blob's SHA-256 is {got}, the release is {sha256}");
    }
    crate::shared::files::rename_durably(&tmp, staged)?;
    Ok(())
}

/// The trial marker, written whole before the switch.
fn write_trial(dd: &DataDir, trial: &Trial) -> Result<()> {
    use std::io::Write;
    let path = trial_file(dd);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(trial)?)?;
    f.sync_all()?;
    crate::shared::files::rename_durably(&tmp, &path)?;
    Ok(())
}

/// The staged release must answer `--version` with `outpost …` within `PROBE_DEADLINE`.
async fn probe(staged: &Path) -> Result<()> {
    let run = tokio::process::Command::new(staged)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PROBE_DEADLINE, run)
        .await
        .map_err(|_| anyhow!("`--version` did not answer within {PROBE_DEADLINE:?}"))?
        .with_context(|| format!("running {}", staged.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.starts_with("outpost") {
        bail!(
            "`--version` exited with {} and printed {:?} {:?}",
            out.status,
            crate::shared::text::tail(stdout.trim(), 200),
            crate::shared::text::tail(String::from_utf8_lossy(&out.stderr).trim(), 200)
        );
    }
    Ok(())
}

/// The release on trial caught up: `current` points at it, the trial marker goes.
fn confirm(dd: &DataDir, t: &Trial) -> Result<()> {
    use std::io::Write;
    let meta = current_meta(dd);
    let tmp = meta.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(&Current {
        sha256: t.sha256.clone(),
        version: VERSION.to_string(),
    })?)?;
    f.sync_all()?;
    crate::shared::files::rename_durably(&tmp, &meta)?;
    let link = current_link(dd);
    let tmp = bin_dir(dd).join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&t.path, &tmp)?;
    crate::shared::files::rename_durably(&tmp, &link)?;
    std::fs::remove_file(trial_file(dd))?;
    std::fs::File::open(bin_dir(dd))?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert!(version_key("0.10.0") > version_key("0.9.9"));
        assert!(version_key("1.0.0") >= version_key("1.0.0"));
        assert!(version_key("0.1.0") < version_key("0.2.0"));
        assert!(version_key("") < version_key("0.1.0"));
        assert_eq!(version_key("1.2.3-rc1"), vec![1, 2, 3]);
    }
}
