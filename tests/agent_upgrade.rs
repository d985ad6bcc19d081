//! Agents upgrade themselves and install bundles without a node, through the real binary.
//!
//! The agent always runs from a copy of the test binary in a temp dir, so an upgrade never
//! replaces the binary cargo built. A "new release" is that binary with bytes appended (it
//! runs the same, its sha256 differs); a "broken release" is a shell script.
//!
//! - A release deployment replaces the agent's executable: `sync --once` reports `installed`
//!   only after the new binary synced; a release whose `--version` fails is refused before
//!   anything moves; one that starts but cannot sync is rolled back; `agent run` replaces
//!   its own process with the new binary (exec).
//! - Offline: the trust pinned at enrollment (and re-pinned after a rotation), an artifact
//!   installed from a bundle file through the handler a signed bundle configured, a bundle
//!   signed with a retired key and an older bundle refused, the very same bundle a no-op, a
//!   release installed from a file; then one sync and the results are facts on the cluster.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::{
    exe, local::enroll_agent, local::keygen, local::trusting, or_dump, s, serial, sha256_hex,
};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::LocalCluster;

const T: Duration = Duration::from_secs(60);

fn sha256_file(p: &Path) -> Result<String> {
    Ok(sha256_hex(&std::fs::read(p)?))
}

fn write_exec(p: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(p, bytes)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `BIN ARGS` to completion.
fn run_bin(bin: &Path, args: &[&str]) -> Result<Output> {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {} {}", bin.display(), args.join(" ")))
}

/// `BIN ARGS`, which must succeed; its stdout.
fn ok_bin(bin: &Path, args: &[&str]) -> Result<String> {
    let out = run_bin(bin, args)?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}\n{}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `BIN ARGS`, which must fail; its stderr.
fn refused_bin(bin: &Path, args: &[&str]) -> Result<String> {
    let out = run_bin(bin, args)?;
    if out.status.success() {
        bail!(
            "{} {} succeeded: {}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stderr).to_string())
}

/// Writes `spec` (TOML) beside its payload files in `dir` and makes a bundle signed by `key`.
fn bundle(dir: &Path, spec: &str, key: &Path, out: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let spec_path = dir.join(format!("{out}.spec.toml"));
    std::fs::write(&spec_path, spec)?;
    let file = dir.join(format!("{out}.obundle"));
    ok_bin(
        &exe(),
        &[
            "bundle",
            "create",
            "--spec",
            s(&spec_path),
            "--key",
            s(key),
            "-o",
            s(&file),
        ],
    )?;
    Ok(file)
}

/// A release for agents; imported with `--no-roll`, so that the node is not rolled to it.
fn release_spec(version: u64, file: &str) -> String {
    format!(
        "channel = \"agent\"\nversion = {version}\n[[payload]]\npath = \"{file}\"\nkind = \"outpost-release\"\nname = \"outpost\"\n"
    )
}

/// Enrolls the agent in `state` with the binary `bin`; returns its client id.
fn enroll(c: &LocalCluster, bin: &Path, group: &str, state: &Path) -> Result<String> {
    let token = c
        .cli(
            0,
            &["token", "create", "--kind", "client", "--group", group],
        )?
        .trim()
        .to_string();
    enroll_agent(
        |args| ok_bin(bin, args),
        &token,
        &c.nodes[0].api_addr,
        state,
        &[],
    )
}

fn deploy(c: &LocalCluster, what: &str) -> Result<String> {
    let out = c.cli(
        0,
        &["deployment", "create", "--artifact", what, "--group", "all"],
    )?;
    Ok(out
        .split_whitespace()
        .next()
        .context("deployment id")?
        .to_string())
}

/// The result of `client` for deployment `id` once the cluster has one.
async fn result_of(c: &LocalCluster, id: &str, client: &str) -> Result<serde_json::Value> {
    let deadline = Instant::now() + T;
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&c.cli(0, &["deployment", "status", id, "--json"])?)?;
        if let Some(r) = v["results"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["client_id"] == client))
        {
            return Ok(r.clone());
        }
        if Instant::now() > deadline {
            bail!("no result of {client} for {id}: {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The running binary's bytes of process `pid`, hashed.
fn running_sha(pid: u32) -> Result<String> {
    sha256_file(Path::new(&format!("/proc/{pid}/exe")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_upgrades_itself_through_a_release_deployment() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let key = keygen(&root, "release");
    let c = LocalCluster::start(&root.join("cluster"), &exe(), 1, trusting(&key))
        .await
        .expect("cluster");
    let r = async {
        // The agent runs from its own copy of the binary.
        let original = std::fs::read(exe())?;
        let bin = root.join("agentbin/outpost");
        write_exec(&bin, &original)?;
        let state = root.join("agent");
        let id = enroll(&c, &bin, "lab", &state)?;

        // 1. A new release: the same binary with bytes appended.
        let files = root.join("releases");
        let mut new = original.clone();
        new.extend_from_slice(b"\n-- outpost release 2 --\n");
        write_exec(&files.join("outpost-2"), &new)?;
        let b = bundle(&files, &release_spec(1, "outpost-2"), &key, "r1")?;
        c.cli(0, &["bundle", "import", s(&b), "--no-roll"])?;
        let d1 = deploy(&c, "outpost")?;
        let synced = ok_bin(&bin, &["agent", "sync", "--once", "--state-dir", s(&state)])?;
        assert!(
            synced.contains(&format!("deployment {d1} outpost@1: installed")),
            "{synced}"
        );
        assert_eq!(sha256_file(&bin)?, sha256_hex(&new), "the new binary is in place");
        assert_eq!(
            sha256_file(&root.join("agentbin/outpost.previous"))?,
            sha256_hex(&original),
            "the previous binary is kept"
        );
        assert!(!state.join("upgrade.json").exists());
        assert!(ok_bin(&bin, &["--version"])?.starts_with("outpost "));
        let r = result_of(&c, &d1, &id).await?;
        assert_eq!(r["status"], "installed", "{r}");
        let detail = r["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("started and synced"), "{detail}");
        // The new binary syncs, and the release is not installed again.
        let again = ok_bin(&bin, &["agent", "sync", "--once", "--state-dir", s(&state)])?;
        assert!(again.starts_with("synced with"), "{again}");
        assert!(!again.contains("deployment "), "{again}");

        // 2. A broken release (`--version` exits 1) is refused before anything moves.
        write_exec(&files.join("broken"), b"#!/bin/sh\nexit 1\n")?;
        let b = bundle(&files, &release_spec(2, "broken"), &key, "r2")?;
        c.cli(0, &["bundle", "import", s(&b), "--no-roll"])?;
        let d2 = deploy(&c, "outpost")?;
        let synced = ok_bin(&bin, &["agent", "sync", "--once", "--state-dir", s(&state)])?;
        assert!(
            synced.contains(&format!("deployment {d2} outpost@2: failed")),
            "{synced}"
        );
        assert_eq!(sha256_file(&bin)?, sha256_hex(&new), "the binary is unchanged");
        let r = result_of(&c, &d2, &id).await?;
        assert_eq!(r["status"], "failed", "{r}");
        let detail = r["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("does not start") && detail.contains("`--version` exited 1"),
            "{detail}"
        );

        // 3. A release that starts but cannot sync is rolled back.
        write_exec(
            &files.join("nosync"),
            b"#!/bin/sh\n[ \"$1\" = --version ] && { echo 'outpost 9.9.9'; exit 0; }\necho 'cannot reach anything' >&2\nexit 7\n",
        )?;
        let b = bundle(&files, &release_spec(3, "nosync"), &key, "r3")?;
        c.cli(0, &["bundle", "import", s(&b), "--no-roll"])?;
        let d3 = deploy(&c, "outpost")?;
        let synced = ok_bin(&bin, &["agent", "sync", "--once", "--state-dir", s(&state)])?;
        assert!(
            synced.contains(&format!("deployment {d3} outpost@3: failed")),
            "{synced}"
        );
        assert_eq!(sha256_file(&bin)?, sha256_hex(&new), "rolled back");
        assert!(!state.join("upgrade.json").exists());
        let r = result_of(&c, &d3, &id).await?;
        assert_eq!(r["status"], "failed", "{r}");
        let detail = r["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("outpost 9.9.9")
                && detail.contains("did not sync: it exited 7")
                && detail.contains("cannot reach anything")
                && detail.contains("rolled back"),
            "{detail}"
        );

        // 4. `agent run` installs the next release and becomes it (exec, same process).
        let mut newer = original.clone();
        newer.extend_from_slice(b"\n-- outpost release 4 --\n");
        write_exec(&files.join("outpost-4"), &newer)?;
        let b = bundle(&files, &release_spec(4, "outpost-4"), &key, "r4")?;
        c.cli(0, &["bundle", "import", s(&b), "--no-roll"])?;
        let log = std::fs::File::create(root.join("agent-run.log"))?;
        let mut agent = Command::new(&bin)
            .args(["agent", "run", "--interval", "1s", "--state-dir", s(&state)])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RUST_LOG", "info")
            .spawn()?;
        let pid = agent.id();
        let ran = async {
            assert_eq!(running_sha(pid)?, sha256_hex(&new));
            let d4 = deploy(&c, "outpost")?;
            let r = result_of(&c, &d4, &id).await?;
            assert_eq!(r["status"], "installed", "{r}");
            let deadline = Instant::now() + T;
            while running_sha(pid)? != sha256_hex(&newer) {
                if Instant::now() > deadline {
                    bail!("agent run (pid {pid}) still runs the old binary");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(matches!(agent.try_wait(), Ok(None)), "agent run exited");
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let _ = agent.kill();
        let _ = agent.wait();
        if let Err(e) = ran {
            let log = std::fs::read_to_string(root.join("agent-run.log")).unwrap_or_default();
            bail!("{e:#}\n---- agent run ----\n{log}");
        }
        assert_eq!(sha256_file(&bin)?, sha256_hex(&newer));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_installs_bundles_without_a_node_and_reports_them_later() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let key = keygen(&root, "release");
    let mut c = LocalCluster::start(&root.join("cluster"), &exe(), 1, trusting(&key))
        .await
        .expect("cluster");
    let r = async {
        let original = std::fs::read(exe())?;
        let bin = root.join("agentbin/outpost");
        write_exec(&bin, &original)?;
        let state = root.join("agent");
        let files = root.join("files");
        std::fs::create_dir_all(&files)?;

        // Online: the lab handler comes from a signed bundle's config payload.
        let installed = root.join("installed");
        std::fs::create_dir_all(&installed)?;
        let handler = format!(
            "cp \"$OUTPOST_ARTIFACT\" {dir}/\"$OUTPOST_ARTIFACT_NAME\" && echo \"$OUTPOST_DEPLOYMENT $OUTPOST_ARTIFACT_VERSION\" >> {dir}/log",
            dir = installed.display()
        );
        std::fs::write(
            files.join("handlers.toml"),
            format!(
                "[group.lab]\n\"agent.handler.artifact\" = {}\n",
                serde_json::to_string(&handler)?
            ),
        )?;
        let b = bundle(
            &files,
            "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"handlers.toml\"\nkind = \"config\"\nname = \"handlers\"\n",
            &key,
            "handlers",
        )?;
        c.cli(0, &["bundle", "import", s(&b)])?;
        let id = enroll(&c, &bin, "lab", &state)?;
        let pinned = |state: &Path| -> Result<u64> {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(state.join("bundle-trust.json"))?)?;
            v["version"].as_u64().context("pinned trust version")
        };
        assert_eq!(pinned(&state)?, 1, "the trust is pinned at enrollment");

        // The release key is rotated by a trust bundle: the next sync pins version 2.
        let key2 = keygen(&root, "release2");
        let t = bundle(
            &root,
            &format!(
                "type = \"trust\"\nversion = 2\n[trust]\nroot_keys = [\"{k}.pub\"]\nroot_threshold = 1\nrelease_keys = [\"{k2}.pub\"]\nrelease_threshold = 1\n",
                k = key.display(),
                k2 = key2.display()
            ),
            &key,
            "trust2",
        )?;
        c.cli(0, &["bundle", "import", s(&t)])?;
        let synced = ok_bin(&bin, &["agent", "sync", "--once", "--state-dir", s(&state)])?;
        assert!(synced.contains("bundle trust pinned: version 2"), "{synced}");
        assert_eq!(pinned(&state)?, 2);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(state.join("config.json"))?)?;
        assert!(config["agent.handler.artifact"].is_string(), "{config}");

        // No node can be reached.
        c.stop(0, Duration::from_secs(10))?;
        let err = refused_bin(&bin, &["agent", "sync", "--once", "--state-dir", s(&state)])?;
        assert!(err.contains("no node answered"), "{err}");

        // A bundle signed with the new release key installs through the handler; its config
        // payload is left to the cluster.
        let tool: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(files.join("tool.bin"), &tool)?;
        std::fs::write(files.join("more.toml"), "[global]\nx = \"1\"\n")?;
        let tools = |version: u64, key: &Path, name: &str| {
            bundle(
                &files,
                &format!(
                    "channel = \"tools\"\nversion = {version}\n[[payload]]\npath = \"tool.bin\"\nkind = \"artifact\"\nname = \"tool\"\n[[payload]]\npath = \"more.toml\"\nkind = \"config\"\nname = \"more\"\n"
                ),
                key,
                name,
            )
        };
        let b3 = tools(3, &key2, "tools3")?;
        let out = ok_bin(&bin, &["agent", "install", s(&b3), "--state-dir", s(&state)])?;
        assert!(out.contains("tool tools@3 (artifact): installed"), "{out}");
        assert!(out.contains("config payload more skipped"), "{out}");
        assert_eq!(std::fs::read(installed.join("tool"))?, tool);
        let log = std::fs::read_to_string(installed.join("log"))?;
        assert!(log.contains("offline-") && log.contains(" 3"), "{log}");

        // Refused: signed with the retired key, and older than what this agent installed.
        let old_key = tools(4, &key, "tools4-old-key")?;
        let err = refused_bin(&bin, &["agent", "install", s(&old_key), "--state-dir", s(&state)])?;
        assert!(err.contains("unknown key") || err.contains("threshold"), "{err}");
        let b2 = tools(2, &key2, "tools2")?;
        let err = refused_bin(&bin, &["agent", "install", s(&b2), "--state-dir", s(&state)])?;
        assert!(
            err.contains("not greater than 3") && err.contains("rollback"),
            "{err}"
        );
        // The very same bundle again is a no-op.
        let out = ok_bin(&bin, &["agent", "install", s(&b3), "--state-dir", s(&state)])?;
        assert!(out.contains("already installed"), "{out}");
        assert_eq!(log, std::fs::read_to_string(installed.join("log"))?);

        // A release from a file replaces the agent's binary, proved offline.
        let mut new = original.clone();
        new.extend_from_slice(b"\n-- offline release --\n");
        write_exec(&files.join("outpost-new"), &new)?;
        let rb = bundle(
            &files,
            "channel = \"agent\"\nversion = 5\n[[payload]]\npath = \"outpost-new\"\nkind = \"outpost-release\"\nname = \"outpost\"\n",
            &key2,
            "release5",
        )?;
        let out = ok_bin(&bin, &["agent", "install", s(&rb), "--state-dir", s(&state)])?;
        assert!(out.contains("outpost agent@5 (outpost-release): installed"), "{out}");
        assert_eq!(sha256_file(&bin)?, sha256_hex(&new));
        let status = ok_bin(&bin, &["agent", "status", "--json", "--state-dir", s(&state)])?;
        let status: serde_json::Value = serde_json::from_str(&status)?;
        assert_eq!(status["channels"]["tools"], 3, "{status}");
        assert_eq!(status["channels"]["agent"], 5, "{status}");

        // The cluster is back: one sync, and the results are facts on the cluster.
        c.serve(0).await?;
        c.wait_ready(0, T).await?;
        let synced = ok_bin(&bin, &["agent", "sync", "--once", "--state-dir", s(&state)])?;
        assert!(synced.contains("inventory uploaded"), "{synced}");
        let v: serde_json::Value =
            serde_json::from_str(&c.cli(0, &["inventory", "show", &id, "--json"])?)?;
        let installs = v["inventory"]["facts"]["offline_installs"]
            .as_array()
            .cloned()
            .with_context(|| format!("no offline_installs: {v}"))?;
        let find = |payload: &str| {
            installs
                .iter()
                .find(|i| i["payload"] == payload)
                .cloned()
                .with_context(|| format!("no {payload} in {installs:?}"))
        };
        let t = find("tool")?;
        assert_eq!(
            (&t["status"], &t["channel"], &t["version"], &t["sha256"]),
            (
                &serde_json::json!("installed"),
                &serde_json::json!("tools"),
                &serde_json::json!(3),
                &serde_json::json!(sha256_hex(&tool))
            ),
            "{t}"
        );
        assert_eq!(find("more")?["status"], "skipped");
        assert_eq!(find("outpost")?["status"], "installed");
        let q: serde_json::Value = serde_json::from_str(&c.cli(
            0,
            &["inventory", "query", "offline_installs.payload=tool", "--json"],
        )?)?;
        assert_eq!(q.as_array().map(Vec::len), Some(1), "{q}");
        assert_eq!(q[0]["client_id"], id.as_str());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
