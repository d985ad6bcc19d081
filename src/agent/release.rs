//! The agent replaces its own binary with an `outpost-release` payload (from a deployment, or
//! from a bundle file through `agent install`), and takes it back if the new one does not work.
//!
//! A process that replaces itself cannot watch itself fail, so the old binary watches the new
//! one before it lets go:
//!
//! 1. **verify**: the payload was checked against its sha256 and size when it was fetched (or
//!    read from a signed bundle); it is copied beside the running executable (`<exe>.new`, the
//!    same directory, so that the rename below is atomic) and hashed again while copied.
//! 2. **probe**: `<exe>.new --version` must exit 0 within 10 s and print `outpost <version>`;
//!    otherwise nothing was replaced and the deployment fails with what the probe said.
//! 3. **swap**: `S/upgrade.json` records the pending upgrade (the new and the old sha256),
//!    the running executable is kept as `<exe>.previous` (a hard link, else a copy), and
//!    `<exe>.new` is renamed over `<exe>`. Every step is fsynced with its directory.
//! 4. **prove**: the old process runs the new binary as a child: `<exe> agent sync --once`
//!    (online: it must reach a node and finish a whole sync) or `<exe> agent status` (offline
//!    install: it must start and read the agent's state), with `OUTPOST_AGENT_PROVING` set so
//!    that the child neither waits for the state-dir lock its parent holds nor installs a
//!    release itself, within `agent.upgrade_timeout` seconds (default 120).
//! 5. **keep or roll back**: exit 0 keeps the new binary (`upgrade.json` removed, the result
//!    `installed`); anything else renames `<exe>.previous` back over `<exe>` and the result is
//!    `failed` with the child's exit and the tail of its stderr.
//!
//! A crash between 3 and 5 leaves `upgrade.json`: the next agent command that is not the
//! proving child rolls back first (only when `<exe>` is the new binary and `<exe>.previous`
//! the old one, by their hashes), and the deployment is tried again at the next sync. What no
//! process of ours can catch is a new binary that starts, syncs, and fails later; the previous
//! one stays in `<exe>.previous` for an operator.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::shared::files::{rename_durably, sha256_file};
use crate::shared::text::tail;
use crate::wire::{DeploymentStatus, RESULT_DETAIL_BYTES};

/// Set in the environment of the new binary while it proves itself, to the pending upgrade's
/// origin (`S/upgrade.json`).
pub const PROVE_ENV: &str = "OUTPOST_AGENT_PROVING";
/// The probe (`--version`) must answer within this.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on the proof (`agent.upgrade_timeout`, seconds, overrides it).
pub const PROVE_TIMEOUT: Duration = Duration::from_secs(120);

/// How the new binary proves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A whole `agent sync --once` with a node.
    Sync,
    /// `agent status`: it starts and reads the agent's state (no node to reach).
    Offline,
}

/// `S/upgrade.json`: an upgrade between the swap and its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpgrade {
    pub format: u32,
    /// The deployment id, or `offline-<bundle id>` for `agent install`.
    pub origin: String,
    /// sha256 of the new binary.
    pub sha256: String,
    /// sha256 of the binary it replaced.
    pub previous_sha256: String,
    pub exe: PathBuf,
    pub at_ms: i64,
}

/// The outcome of one self-upgrade.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub status: DeploymentStatus,
    pub detail: String,
    /// The new binary replaced the old one and stays.
    pub replaced: bool,
    /// The new binary ran a sync of its own (its results are in the state dir now).
    pub child_synced: bool,
    /// `deployment …` lines the proving sync printed.
    pub child_lines: Vec<String>,
}

impl Upgrade {
    fn failed(detail: String) -> Upgrade {
        Upgrade {
            status: DeploymentStatus::Failed,
            detail,
            replaced: false,
            child_synced: false,
            child_lines: Vec::new(),
        }
    }
}

fn pending_path(state_dir: &Path) -> PathBuf {
    state_dir.join("upgrade.json")
}

/// `<exe>.previous`: the binary a self-upgrade replaced.
pub fn previous_path(exe: &Path) -> PathBuf {
    with_suffix(exe, ".previous")
}

fn staged_path(exe: &Path) -> PathBuf {
    with_suffix(exe, ".new")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The pending upgrade recorded in the state dir, if any.
pub fn pending(state_dir: &Path) -> Result<Option<PendingUpgrade>> {
    let path = pending_path(state_dir);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether this process is the new binary proving the upgrade pending in `state_dir`.
pub fn is_proving(state_dir: &Path) -> bool {
    let Ok(origin) = std::env::var(PROVE_ENV) else {
        return false;
    };
    matches!(pending(state_dir), Ok(Some(p)) if p.origin == origin)
}

/// Replaces the agent's executable `exe` with `release` (already verified against `sha256`),
/// proves the new binary with `proof` within `limit`, and rolls back if it fails. Never
/// returns an error: every failure is the deployment's result.
pub async fn install(
    state_dir: &Path,
    exe: &Path,
    release: &Path,
    sha256: &str,
    origin: &str,
    (proof, limit): (Proof, Duration),
) -> Upgrade {
    let running = match sha256_file(exe) {
        Ok(s) => s,
        Err(e) => return Upgrade::failed(format!("reading the running binary: {e:#}")),
    };
    if running == sha256 {
        return Upgrade {
            status: DeploymentStatus::Installed,
            detail: format!("{} already is this release", exe.display()),
            replaced: false,
            child_synced: false,
            child_lines: Vec::new(),
        };
    }
    let staged = staged_path(exe);
    let (r, s) = (release.to_path_buf(), staged.clone());
    let copied = tokio::task::spawn_blocking(move || copy_hashed(&r, &s)).await;
    match copied {
        Ok(Ok(got)) if got == sha256 => {}
        Ok(Ok(got)) => {
            let _ = std::fs::remove_file(&staged);
            return Upgrade::failed(format!(
                "the staged copy hashes to {got}, not {sha256}; the agent's binary is unchanged"
            ));
        }
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&staged);
            return Upgrade::failed(format!(
                "staging beside {}: {e:#}; the agent's binary is unchanged",
                exe.display()
            ));
        }
        Err(e) => return Upgrade::failed(format!("staging thread: {e}")),
    }
    let version = match probe(&staged).await {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Upgrade::failed(format!(
                "the release does not start: {e:#}; the agent's binary is unchanged"
            ));
        }
    };
    let pending = PendingUpgrade {
        format: 1,
        origin: origin.to_string(),
        sha256: sha256.to_string(),
        previous_sha256: running,
        exe: exe.to_path_buf(),
        at_ms: crate::shared::now_ms(),
    };
    if let Err(e) = swap(state_dir, exe, &staged, &pending) {
        let _ = std::fs::remove_file(&staged);
        let _ = recover(state_dir, exe);
        return Upgrade::failed(format!(
            "replacing {}: {e:#}; the agent's binary is unchanged",
            exe.display()
        ));
    }
    let proved = prove(state_dir, exe, origin, proof, limit).await;
    match proved {
        Ok(lines) => {
            if let Err(e) = std::fs::remove_file(pending_path(state_dir)) {
                tracing::warn!(error = %e, "removing upgrade.json after the proof");
            }
            let how = match proof {
                Proof::Sync => "it started and synced",
                Proof::Offline => "it started and read the agent's state (offline)",
            };
            Upgrade {
                status: DeploymentStatus::Installed,
                detail: format!(
                    "{} is now {version} (sha256 {sha256}): {how}; the previous binary is kept as {}",
                    exe.display(),
                    previous_path(exe).display()
                ),
                replaced: true,
                child_synced: proof == Proof::Sync,
                child_lines: lines,
            }
        }
        Err(why) => {
            let back = match rollback(state_dir, exe, &pending) {
                Ok(()) => "rolled back to the previous binary".to_string(),
                Err(e) => format!("rolling back failed too: {e:#}"),
            };
            Upgrade::failed(tail(
                &format!("the new binary ({version}) {why}; {back}"),
                RESULT_DETAIL_BYTES,
            ))
        }
    }
}

/// Copies `from` to `to` (mode 0755, fsynced), returning the sha256 of what was written.
fn copy_hashed(from: &Path, to: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(to);
    let mut src =
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .with_context(|| format!("writing {}", to.display()))?;
    }
    dst.sync_all()?;
    Ok(hex::encode(h.finalize()))
}

/// `<staged> --version` within `PROBE_TIMEOUT`: exit 0 and `outpost <version>` on stdout.
async fn probe(staged: &Path) -> Result<String> {
    let mut cmd = tokio::process::Command::new(staged);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = spawn_fresh(&mut cmd)
        .await
        .with_context(|| format!("running {} --version", staged.display()))?;
    let out = match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
        Err(_) => bail!("`--version` did not answer within {PROBE_TIMEOUT:?}"),
        Ok(r) => r.context("waiting for `--version`")?,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or("").trim();
    if !out.status.success() {
        bail!("`--version` {}", exit_text(&out));
    }
    match first.strip_prefix("outpost ") {
        Some(v) if !v.trim().is_empty() => Ok(format!("outpost {}", v.trim())),
        _ => bail!(
            "`--version` printed {:?}, not `outpost <version>`",
            crate::shared::text::shown(first)
        ),
    }
}

/// Spawns a program this process has just written. Any fork of this process while the file
/// was open for writing (another task starting a child) holds that descriptor until its exec,
/// and exec of the file meanwhile fails with ETXTBSY: tried again for up to half a second.
async fn spawn_fresh(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// Records the pending upgrade, keeps `exe` as `<exe>.previous` and renames `staged` over it.
fn swap(state_dir: &Path, exe: &Path, staged: &Path, pending: &PendingUpgrade) -> Result<()> {
    // Durable before anything moves: a crash from here on is rolled back by `recover`.
    outpost_certs::write_public_file(&pending_path(state_dir), &serde_json::to_vec(pending)?)?;
    let previous = previous_path(exe);
    match std::fs::remove_file(&previous) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", previous.display())),
    }
    if std::fs::hard_link(exe, &previous).is_err() {
        // No hard links here: a full copy, fsynced, then renamed into place.
        let tmp = with_suffix(exe, ".previous.tmp");
        copy_hashed(exe, &tmp)?;
        rename_durably(&tmp, &previous)
            .with_context(|| format!("keeping {}", previous.display()))?;
    }
    // The rename is atomic: whoever starts `exe` gets the old or the new binary, whole.
    rename_durably(staged, exe)
        .with_context(|| format!("renaming {} over {}", staged.display(), exe.display()))?;
    Ok(())
}

/// Runs the new binary's proof; Ok with its `deployment …` lines, or Err with why it failed.
async fn prove(
    state_dir: &Path,
    exe: &Path,
    origin: &str,
    proof: Proof,
    limit: Duration,
) -> std::result::Result<Vec<String>, String> {
    let mut cmd = tokio::process::Command::new(exe);
    match proof {
        Proof::Sync => cmd.args(["agent", "sync", "--once", "--state-dir"]),
        Proof::Offline => cmd.args(["agent", "status", "--state-dir"]),
    };
    let child = cmd
        .arg(state_dir)
        .env(PROVE_ENV, origin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("did not start: {e}"))?;
    let what = match proof {
        Proof::Sync => "did not sync",
        Proof::Offline => "did not read the agent's state",
    };
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => return Err(format!("{what} within {limit:?} (killed)")),
        Ok(Err(e)) => return Err(format!("{what}: waiting for it: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("deployment "))
            .map(String::from)
            .collect());
    }
    Err(format!("{what}: it {}", exit_text(&out)))
}

/// "exited 3: <tail of stderr>" or "was killed by signal 9". Pure.
fn exit_text(out: &std::process::Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (out.status.code(), out.status.signal()) {
        (Some(c), _) => format!("exited {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => format!("ended with {}", out.status),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    match stderr.trim() {
        "" => how,
        text => format!("{how}: {}", tail(text, RESULT_DETAIL_BYTES / 2)),
    }
}

/// Puts `<exe>.previous` back over `exe` and forgets the pending upgrade.
fn rollback(state_dir: &Path, exe: &Path, pending: &PendingUpgrade) -> Result<()> {
    let previous = previous_path(exe);
    if sha256_file(&previous)? != pending.previous_sha256 {
        bail!(
            "{} is not the binary the upgrade replaced; left as it is",
            previous.display()
        );
    }
    rename_durably(&previous, exe)
        .with_context(|| format!("renaming {} over {}", previous.display(), exe.display()))?;
    std::fs::remove_file(pending_path(state_dir))
        .with_context(|| format!("removing {}", pending_path(state_dir).display()))?;
    Ok(())
}

/// An upgrade left pending by a process that stopped before the proof ended is rolled back:
/// when `<exe>` is the unproven new binary and `<exe>.previous` the one it replaced, the old
/// one goes back; when the swap had not happened, only the record (and a staged copy) go.
/// Returns what it did, if anything. Not for the proving child (see [`is_proving`]).
pub fn recover(state_dir: &Path, exe: &Path) -> Result<Option<String>> {
    let Some(p) = pending(state_dir)? else {
        return Ok(None);
    };
    let _ = std::fs::remove_file(staged_path(exe));
    let what = if p.exe == exe && sha256_file(exe)? == p.sha256 {
        rollback(state_dir, exe, &p)?;
        format!(
            "an upgrade to {} ({}) stopped before the new binary proved itself: rolled back to the previous binary",
            p.sha256, p.origin
        )
    } else {
        std::fs::remove_file(pending_path(state_dir))?;
        format!(
            "an upgrade to {} ({}) stopped before the swap: nothing to undo",
            p.sha256, p.origin
        )
    };
    Ok(Some(what))
}

/// The `(device, inode)` of a file: `agent run` compares it to notice that its executable was
/// replaced (by a self-upgrade, or a package manager) and starts the new one.
pub fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(path: &Path, body: &str) {
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[tokio::test]
    async fn probes() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("x");
        // (script, accepted)
        for (body, ok) in [
            ("echo 'outpost 1.2.3'", true),
            ("exit 1", false),
            ("echo 'outpost 1.2.3'; exit 2", false),
            ("echo 'something 1.0'", false),
            ("echo 'outpost '", false),
            ("true", false),
        ] {
            script(&p, body);
            let got = probe(&p).await;
            assert_eq!(got.is_ok(), ok, "{body}: {got:?}");
        }
    }

    /// The whole swap with shell scripts as binaries: a release whose proof fails is rolled
    /// back, one whose proof passes stays, and an interrupted one is undone by `recover`.
    #[tokio::test]
    async fn swap_prove_and_roll_back() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = d.path().join("state");
        std::fs::create_dir(&state).expect("state dir");
        let exe = d.path().join("outpost");
        script(&exe, "echo 'outpost 1.0'");
        let old = sha256_file(&exe).expect("hash");
        let limit = (Proof::Offline, Duration::from_secs(10));

        // Starts (probe passes) but its `agent status` fails: rolled back.
        let bad = d.path().join("bad");
        script(
            &bad,
            "[ \"$1\" = --version ] && { echo 'outpost 2.0'; exit 0; }\necho 'no state' >&2; exit 4",
        );
        let bad_sha = sha256_file(&bad).expect("hash");
        let u = install(&state, &exe, &bad, &bad_sha, "d-1", limit).await;
        assert_eq!(u.status, DeploymentStatus::Failed, "{}", u.detail);
        assert!(
            u.detail.contains("outpost 2.0") && u.detail.contains("no state"),
            "{}",
            u.detail
        );
        assert!(u.detail.contains("rolled back"), "{}", u.detail);
        assert_eq!(sha256_file(&exe).expect("hash"), old);
        assert!(pending(&state).expect("read").is_none());

        // A release that proves itself stays; the old binary is kept.
        let good = d.path().join("good");
        script(
            &good,
            "[ \"$1\" = --version ] && { echo 'outpost 3.0'; exit 0; }\n[ -n \"$OUTPOST_AGENT_PROVING\" ]",
        );
        let good_sha = sha256_file(&good).expect("hash");
        let u = install(&state, &exe, &good, &good_sha, "d-2", limit).await;
        assert_eq!(u.status, DeploymentStatus::Installed, "{}", u.detail);
        assert_eq!(sha256_file(&exe).expect("hash"), good_sha);
        assert_eq!(sha256_file(&previous_path(&exe)).expect("hash"), old);
        assert!(pending(&state).expect("read").is_none());
        // Installing what already runs changes nothing.
        let u = install(&state, &exe, &good, &good_sha, "d-3", limit).await;
        assert_eq!(u.status, DeploymentStatus::Installed);
        assert!(u.detail.contains("already"), "{}", u.detail);

        // Interrupted after the swap: `recover` puts the previous binary back.
        let newer = d.path().join("newer");
        script(&newer, "echo 'outpost 4.0'");
        let newer_sha = sha256_file(&newer).expect("hash");
        let p = PendingUpgrade {
            format: 1,
            origin: "d-4".into(),
            sha256: newer_sha.clone(),
            previous_sha256: good_sha.clone(),
            exe: exe.clone(),
            at_ms: 0,
        };
        let staged = staged_path(&exe);
        copy_hashed(&newer, &staged).expect("stage");
        swap(&state, &exe, &staged, &p).expect("swap");
        assert_eq!(sha256_file(&exe).expect("hash"), newer_sha);
        let did = recover(&state, &exe).expect("recover");
        assert!(did.is_some_and(|s| s.contains("rolled back")));
        assert_eq!(sha256_file(&exe).expect("hash"), good_sha);
        assert!(pending(&state).expect("read").is_none());

        // Interrupted before the swap: the record goes, the binary stays.
        outpost_certs::write_public_file(
            &pending_path(&state),
            &serde_json::to_vec(&p).expect("json"),
        )
        .expect("write");
        let did = recover(&state, &exe).expect("recover");
        assert!(did.is_some_and(|s| s.contains("nothing to undo")));
        assert_eq!(sha256_file(&exe).expect("hash"), good_sha);
        assert!(recover(&state, &exe).expect("recover").is_none());
    }
}
