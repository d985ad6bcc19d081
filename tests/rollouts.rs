//! Rollouts through the real binary (issue 22's "What it must show"): a three-node cluster,
//! real `outpost agent` processes in their own state directories, handlers from a signed
//! bundle's config. Labels and selectors (a plan that lists exactly the labelled clients, a
//! fact changed on a client that brings it in at its next sync); phases with a brake (two
//! failures in phase 1 halt the rollout, later phases get nothing until `resume`, then
//! `abort --uninstall` runs the remove handler where it installed); windows (outside its
//! window nothing installs, inside it does); four eyes (`deploy.approval_above`: the creator's
//! approve is refused, a second admin's starts it).
//!
//! The product reads the real clock; the windows test computes windows around the current
//! UTC time with hours of margin, so no fake clock is needed.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::agents::{Agent, Fleet};
use support::{exe, local::settle, local::trusted_cluster, or_dump, run_ok, s, serial};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use outpost::harness::localcluster::LocalCluster;
use serde_json::Value;

/// The three nodes, for `settle`.
const ALL: [usize; 3] = [0, 1, 2];

/// How long a replicated result or a leader's step may take to show.
const T: Duration = Duration::from_secs(30);

/// The install handler: fails when `fail-install` is in the agent's state directory (its
/// working directory), else records the deployment in `installed.txt`.
const INSTALL: &str = "if [ -e fail-install ]; then echo \"fail-install marker in $(pwd)\" >&2; exit 4; fi; echo \"$OUTPOST_DEPLOYMENT\" >> installed.txt";
/// The remove handler: records that it ran in `removed.txt`.
const REMOVE: &str = "echo \"removed $OUTPOST_DEPLOYMENT\" >> removed.txt";

/// The brake test's soak: none. The leader opens phase k+1 only once every client of the
/// open phases that synced within a day has reported a result (storage's `next_step`), so
/// even without a soak phase 2 stays closed until phase 1's agents have synced, and the
/// brake sees their failures first.
const SOAK: &str = "0s";

/// A TOML basic string holding `v`.
fn toml_string(v: &str) -> String {
    serde_json::to_string(v).expect("a string serializes")
}

/// A cluster for one test: three nodes trusting a bundle key, the artifacts `tool` and
/// `tool2` imported with the handlers (and `extra_global` config lines) in a signed config
/// payload, and `agents` real agents enrolled (no group) across the three nodes.
struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    key: PathBuf,
    c: LocalCluster,
    fleet: Fleet,
    agents: Vec<Agent>,
}

async fn site(agents: usize, extra_global: &str) -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    // Twenty agents enroll from one address within seconds.
    let (key, c) = trusted_cluster(
        &root,
        "release",
        "cluster",
        3,
        &[("OUTPOST_ENROLL_RATE", "50")],
    )
    .await
    .expect("three-node cluster");
    let r = async {
        std::fs::write(root.join("tool.bin"), b"tool version 1\n")?;
        std::fs::write(root.join("tool2.bin"), b"tool2 version 1\n")?;
        std::fs::write(
            root.join("handlers.toml"),
            format!(
                "[global]\n\"agent.handler.artifact\" = {}\n\"agent.handler.remove.artifact\" = {}\n{extra_global}",
                toml_string(INSTALL),
                toml_string(REMOVE)
            ),
        )?;
        std::fs::write(
            root.join("spec.toml"),
            "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"tool.bin\"\nkind = \"artifact\"\nname = \"tool\"\n[[payload]]\npath = \"tool2.bin\"\nkind = \"artifact\"\nname = \"tool2\"\n[[payload]]\npath = \"handlers.toml\"\nkind = \"config\"\nname = \"handlers\"\n",
        )?;
        let bundle = root.join("site.obundle");
        run_ok(&c, &["bundle", "create", "--spec", s(&root.join("spec.toml")), "--key", s(&key), "-o", s(&bundle)])?;
        c.cli(0, &["bundle", "import", s(&bundle)])?;
        let token = c.cli(0, &["token", "create", "--kind", "client"])?.trim().to_string();
        let servers: Vec<String> = c.nodes.iter().map(|n| n.api_addr.clone()).collect();
        let fleet = Fleet::new(&exe());
        let enrolled = fleet.enroll(&root.join("agents"), "pc", agents, &token, &servers)?;
        Ok::<_, anyhow::Error>((fleet, enrolled))
    }
    .await;
    let (fleet, agents) = or_dump(&c, r);
    Site {
        _dir: dir,
        root,
        key,
        c,
        fleet,
        agents,
    }
}

/// The first line of `deployment create` is `ID STATE`.
fn created(out: &str) -> Result<(String, String)> {
    let mut words = out.lines().next().unwrap_or_default().split_whitespace();
    match (words.next(), words.next()) {
        (Some(id), Some(state)) => Ok((id.to_string(), state.to_string())),
        _ => bail!("`deployment create` printed no `ID STATE` line: {out}"),
    }
}

/// `deployment status ID --json` on node `i`.
fn status(c: &LocalCluster, i: usize, id: &str) -> Result<Value> {
    Ok(serde_json::from_str(
        &c.cli(i, &["deployment", "status", id, "--json"])?,
    )?)
}

/// The per-client status of `client` in a status JSON (`None`: not listed).
fn client_status(v: &Value, client: &str) -> Option<String> {
    v["clients"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == client)
        .and_then(|c| c["status"].as_str())
        .map(String::from)
}

/// Polls node `i`'s status of `id` until `pred` holds (deadline `T`); the JSON that held.
async fn wait_status(
    c: &LocalCluster,
    i: usize,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + T;
    loop {
        let v = status(c, i, id)?;
        if pred(&v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{id} on node {}: not {what} within {T:?}: {v}", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the agents whose sync output says `deployment ID ...: STATUS`.
fn reported(outputs: &[(String, String)], id: &str, status: &str) -> BTreeSet<String> {
    outputs
        .iter()
        .filter(|(_, out)| {
            out.lines().any(|l| {
                l.starts_with(&format!("deployment {id} ")) && l.contains(&format!(": {status}"))
            })
        })
        .map(|(client, _)| client.clone())
        .collect()
}

/// One sync of each agent; (client id, stdout) of each.
fn sync_each(fleet: &Fleet, agents: &[&Agent]) -> Result<Vec<(String, String)>> {
    agents
        .iter()
        .map(|a| Ok((a.id.clone(), fleet.sync(a)?)))
        .collect()
}

fn ids(agents: &[&Agent]) -> BTreeSet<String> {
    agents.iter().map(|a| a.id.clone()).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A signed bundle on channel `probe` with one artifact `probe`: installed from a file on a
/// client, it shows in that client's facts (`offline_installs.channel=probe`) at its next
/// inventory.
fn probe_bundle(site: &Site) -> Result<PathBuf> {
    let dir = site.root.join("probe");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("probe.bin"), b"probe\n")?;
    std::fs::write(
        dir.join("spec.toml"),
        "channel = \"probe\"\nversion = 1\n[[payload]]\npath = \"probe.bin\"\nkind = \"artifact\"\nname = \"probe\"\n",
    )?;
    let out = dir.join("probe.obundle");
    run_ok(
        &site.c,
        &[
            "bundle",
            "create",
            "--spec",
            s(&dir.join("spec.toml")),
            "--key",
            s(&site.key),
            "-o",
            s(&out),
        ],
    )?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_facts_choose_the_clients() {
    let _g = serial();
    let started = Instant::now();
    let site = site(20, "").await;
    let (c, fleet) = (&site.c, &site.fleet);
    let r = async {
        let all: Vec<&Agent> = site.agents.iter().collect();
        let (a0, a1, a2) = (&site.agents[0], &site.agents[1], &site.agents[2]);
        run_ok(
            c,
            &[
                "client",
                "label",
                &a0.id,
                &a1.id,
                &a2.id,
                "--add",
                "line2",
                "--data-dir",
                s(&c.nodes[1].dir),
            ],
        )?;
        c.cli(2, &["client", "label", &a2.id, "--add", "quarantine"])?;
        settle(c, &ALL).await?;
        let shown: Value = serde_json::from_str(&c.cli(0, &["client", "show", &a2.id, "--json"])?)?;
        assert_eq!(
            strings(&shown["labels"]),
            ["line2", "quarantine"],
            "{shown}"
        );

        // The preview lists exactly the two line2 clients not in quarantine, on any node.
        let mut want = vec![a0.id.clone(), a1.id.clone()];
        want.sort();
        for i in 0..3 {
            let plan: Value = serde_json::from_str(&c.cli(
                i,
                &[
                    "deployment",
                    "plan",
                    "--label",
                    "line2",
                    "--exclude-label",
                    "quarantine",
                    "--json",
                ],
            )?)?;
            assert_eq!(plan["count"], 2, "node {}: {plan}", i + 1);
            let phases = plan["phases"].as_array().context("phases")?;
            assert_eq!(phases.len(), 1, "{plan}");
            assert_eq!(phases[0]["percent"], 100, "{plan}");
            assert_eq!(strings(&phases[0]["clients"]), want, "{plan}");
            assert_eq!(strings(&plan["unseen"]), Vec::<String>::new(), "{plan}");
        }
        // And what installs is what the plan showed.
        let (lab, state) = created(&c.cli(
            0,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool2",
                "--label",
                "line2",
                "--exclude-label",
                "quarantine",
                "--id",
                "lab",
            ],
        )?)?;
        assert_eq!((lab.as_str(), state.as_str()), ("lab", "running"));
        settle(c, &ALL).await?;
        let outs = sync_each(fleet, &all)?;
        assert_eq!(
            reported(&outs, "lab", "installed"),
            want.iter().cloned().collect(),
            "{outs:?}"
        );
        assert!(
            outs.iter()
                .all(|(id, out)| want.contains(id) || !out.contains("deployment lab")),
            "{outs:?}"
        );

        // The target is evaluated at each sync: out of quarantine, the third line2 client
        // gets it at its next sync.
        c.cli(1, &["client", "label", &a2.id, "--remove", "quarantine"])?;
        settle(c, &ALL).await?;
        let out = fleet.sync(a2)?;
        assert!(out.contains("deployment lab tool2@1: installed"), "{out}");

        // A fact: a bundle installed from a file on a client shows in its inventory.
        let probe = probe_bundle(&site)?;
        let (holder, newcomer) = (&site.agents[5], &site.agents[7]);
        let out = fleet.install_file(holder, &probe)?;
        assert!(out.contains("installed"), "{out}");
        let out = fleet.sync(holder)?;
        assert!(out.contains("inventory uploaded"), "{out}");
        settle(c, &ALL).await?;
        let fact = "offline_installs.channel=probe";
        let plan: Value =
            serde_json::from_str(&c.cli(1, &["deployment", "plan", "--where", fact, "--json"])?)?;
        assert_eq!(plan["count"], 1, "{plan}");
        assert_eq!(
            strings(&plan["phases"][0]["clients"]),
            std::slice::from_ref(&holder.id),
            "{plan}"
        );

        let (by_fact, state) = created(&c.cli(
            0,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool",
                "--where",
                fact,
                "--id",
                "by-fact",
            ],
        )?)?;
        assert_eq!(state, "running");
        settle(c, &ALL).await?;
        let outs = sync_each(fleet, &all)?;
        assert_eq!(
            reported(&outs, &by_fact, "installed"),
            [holder.id.clone()].into(),
            "{outs:?}"
        );
        let v = status(c, 0, &by_fact)?;
        assert_eq!(
            client_status(&v, &newcomer.id),
            None,
            "not targeted yet: {v}"
        );

        // The same fact on a third client: its next inventory brings it in, its next sync
        // installs (a sync reads its assignments before it uploads its facts).
        let out = fleet.install_file(newcomer, &probe)?;
        assert!(out.contains("installed"), "{out}");
        let installed = format!("deployment {by_fact} tool@1: installed");
        let mut out = fleet.sync(newcomer)?;
        assert!(out.contains("inventory uploaded"), "{out}");
        if !out.contains(&installed) {
            settle(c, &ALL).await?;
            out = fleet.sync(newcomer)?;
        }
        assert!(out.contains(&installed), "{out}");
        assert!(newcomer.lines("installed.txt").contains(&by_fact));
        for i in 0..3 {
            wait_status(c, i, &by_fact, "installed on the newcomer", |v| {
                client_status(v, &newcomer.id).as_deref() == Some("installed")
            })
            .await?;
        }
        let plan: Value =
            serde_json::from_str(&c.cli(2, &["deployment", "plan", "--where", fact, "--json"])?)?;
        assert_eq!(plan["count"], 2, "{plan}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(c, r);
    eprintln!(
        "labels_and_facts_choose_the_clients: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_halt_the_rollout_and_abort_uninstalls() {
    let _g = serial();
    let started = Instant::now();
    let site = site(20, "").await;
    let (c, fleet) = (&site.c, &site.fleet);
    let r = async {
        let phases_flag = "10%,50%,100%";
        // An id whose phase 1 holds at least three of the twenty clients (the split is a hash
        // of the id and the client: the plan with --id shows the one create will use).
        let mut chosen = None;
        for i in 0..80 {
            let id = format!("brake-{i}");
            let plan: Value = serde_json::from_str(&c.cli(
                0,
                &[
                    "deployment",
                    "plan",
                    "--group",
                    "all",
                    "--phases",
                    phases_flag,
                    "--id",
                    &id,
                    "--json",
                ],
            )?)?;
            assert_eq!(plan["count"], 20, "{plan}");
            let percents: Vec<u64> = plan["phases"]
                .as_array()
                .context("phases")?
                .iter()
                .filter_map(|p| p["percent"].as_u64())
                .collect();
            assert_eq!(percents, [10, 50, 100], "{plan}");
            if strings(&plan["phases"][0]["clients"]).len() >= 3 {
                chosen = Some((id, plan));
                break;
            }
        }
        let (id, plan) = chosen.context("no id in 80 puts three clients in phase 1")?;
        let phase_of = |client: &str| -> Option<usize> {
            (0..3).find(|&k| {
                strings(&plan["phases"][k]["clients"])
                    .iter()
                    .any(|c| c == client)
            })
        };
        let by_phase: Vec<Vec<&Agent>> = (0..3)
            .map(|k| {
                site.agents
                    .iter()
                    .filter(|a| phase_of(&a.id) == Some(k))
                    .collect()
            })
            .collect();
        assert_eq!(by_phase.iter().map(Vec::len).sum::<usize>(), 20, "{plan}");
        let failing: Vec<&Agent> = by_phase[0][..2].to_vec();
        for a in &failing {
            std::fs::write(a.dir.join("fail-install"), b"")?;
        }
        let (_, state) = created(&c.cli(
            0,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool",
                "--group",
                "all",
                "--phases",
                phases_flag,
                "--max-failures",
                "1",
                "--soak",
                SOAK,
                "--id",
                &id,
            ],
        )?)?;
        assert_eq!(state, "running");
        settle(c, &ALL).await?;
        let v = status(c, 1, &id)?;
        for a in &site.agents {
            let listed = v["clients"]
                .as_array()
                .and_then(|cs| cs.iter().find(|x| x["id"] == a.id.as_str()))
                .with_context(|| format!("{} not in {v}", a.id))?;
            assert_eq!(
                listed["phase"].as_u64(),
                phase_of(&a.id).map(|k| k as u64 + 1),
                "{v}"
            );
        }

        // Phase 1 syncs: two handlers fail, the rollout halts naming both.
        let outs = sync_each(fleet, &by_phase[0])?;
        assert_eq!(reported(&outs, &id, "failed"), ids(&failing), "{outs:?}");
        let v = wait_status(c, 2, &id, "halted", |v| v["state"] == "halted").await?;
        settle(c, &ALL).await?;
        assert_eq!(v["phase"], 1, "{v}");
        let reason = v["reason"].as_str().unwrap_or_default();
        for a in &failing {
            assert!(
                reason.contains(&a.id),
                "the reason names {}: {reason}",
                a.id
            );
        }

        // Nothing new starts after the halt: two more rounds of every agent.
        let later: Vec<&Agent> = by_phase[1].iter().chain(&by_phase[2]).copied().collect();
        for _ in 0..2 {
            let all: Vec<&Agent> = site.agents.iter().collect();
            let outs = sync_each(fleet, &all)?;
            assert_eq!(
                reported(&outs, &id, "installed"),
                BTreeSet::new(),
                "after the halt: {outs:?}"
            );
        }
        assert!(later.iter().all(|a| !a.has("installed.txt")));
        let v = status(c, 0, &id)?;
        assert_eq!(v["state"], "halted", "{v}");
        for a in &later {
            assert_eq!(client_status(&v, &a.id).as_deref(), Some("waiting"), "{v}");
        }

        // resume: the operator has seen the two failures; the later phases open and install.
        c.cli(
            1,
            &["deployment", "resume", &id, "--reason", "the two are known"],
        )?;
        settle(c, &ALL).await?;
        let deadline = Instant::now() + Duration::from_secs(90);
        let healthy: Vec<&Agent> = site
            .agents
            .iter()
            .filter(|a| !a.has("fail-install"))
            .collect();
        for round in 0.. {
            let v = status(c, 0, &id)?;
            let pending: Vec<&Agent> = healthy
                .iter()
                .filter(|a| client_status(&v, &a.id).as_deref() == Some("pending"))
                .copied()
                .collect();
            let left = healthy
                .iter()
                .filter(|a| client_status(&v, &a.id).as_deref() != Some("installed"))
                .count();
            if left == 0 {
                break;
            }
            if Instant::now() > deadline || round > 40 {
                bail!("after resume, {left} healthy clients not installed: {v}");
            }
            if pending.is_empty() {
                // The leader opens the next phase once this one's clients all reported.
                let phase = v["phase"].as_u64().unwrap_or(0);
                wait_status(c, 0, &id, "in a later phase", |v| {
                    v["phase"].as_u64().unwrap_or(0) > phase || v["state"] != "running"
                })
                .await?;
                continue;
            }
            settle(c, &ALL).await?;
            let outs = sync_each(fleet, &pending)?;
            assert!(reported(&outs, &id, "failed").is_empty(), "{outs:?}");
        }
        let v = status(c, 0, &id)?;
        assert_eq!(v["phase"], 3, "{v}");
        assert_ne!(v["state"], "halted", "{v}");

        // Every transition is one audited command with who and why: the brake's halt, the
        // operator's resume with its reason, the leader's phase openings.
        let audit: Value =
            serde_json::from_str(&c.cli(0, &["audit", "--limit", "500", "--json"])?)?;
        let steps: Vec<(String, String)> = audit
            .as_array()
            .context("audit records")?
            .iter()
            .filter(|r| {
                r["target"] == format!("deployment:{id}").as_str()
                    && r["action"] == "deployment.step"
            })
            .map(|r| {
                (
                    r["actor"].as_str().unwrap_or_default().to_string(),
                    r["detail"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert!(
            steps
                .iter()
                .any(|(actor, detail)| actor.starts_with("local-admin")
                    && detail.contains("the two are known")),
            "{steps:?}"
        );
        assert!(
            steps
                .iter()
                .filter(|(actor, _)| actor.starts_with("node:"))
                .count()
                >= 2,
            "{steps:?}"
        );

        // abort --uninstall: every client that installed runs the remove handler.
        c.cli(
            2,
            &[
                "deployment",
                "abort",
                &id,
                "--uninstall",
                "--reason",
                "roll back",
            ],
        )?;
        wait_status(c, 0, &id, "aborted", |v| v["state"] == "aborted").await?;
        settle(c, &ALL).await?;
        let all: Vec<&Agent> = site.agents.iter().collect();
        let outs = sync_each(fleet, &all)?;
        assert_eq!(reported(&outs, &id, "removed"), ids(&healthy), "{outs:?}");
        for a in &healthy {
            assert!(a.has("removed.txt"), "no remove handler ran on {}", a.id);
        }
        for a in &failing {
            assert!(
                !a.has("removed.txt"),
                "{} never installed, yet removed",
                a.id
            );
        }
        for i in 0..3 {
            let v = wait_status(c, i, &id, "removed everywhere it installed", |v| {
                healthy
                    .iter()
                    .all(|a| client_status(v, &a.id).as_deref() == Some("removed"))
            })
            .await?;
            for a in &failing {
                assert_eq!(client_status(&v, &a.id).as_deref(), Some("failed"), "{v}");
            }
        }
        // Removed once: the next syncs do not run it again.
        let outs = sync_each(fleet, &all)?;
        assert!(reported(&outs, &id, "removed").is_empty(), "{outs:?}");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(c, r);
    eprintln!(
        "failures_halt_the_rollout_and_abort_uninstalls: {:?}",
        started.elapsed()
    );
}

/// `daily HH:MM-HH:MM` from `from_h` to `to_h` hours after now (UTC; negative: before).
fn daily_window(from_h: i64, to_h: i64) -> String {
    let now_min = (support::now().rem_euclid(86_400)) / 60;
    let at = |h: i64| {
        let m = (now_min + h * 60).rem_euclid(24 * 60);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    format!("daily {}-{}", at(from_h), at(to_h))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_decide_when_clients_install() {
    let _g = serial();
    let started = Instant::now();
    let site = site(3, "").await;
    let (c, fleet) = (&site.c, &site.fleet);
    let r = async {
        let all: Vec<&Agent> = site.agents.iter().collect();
        // Three hours from now to five: closed now, with hours of margin either side.
        let closed = daily_window(3, 5);
        let (later, state) = created(&c.cli(
            0,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool",
                "--group",
                "all",
                "--window",
                &closed,
                "--id",
                "later",
            ],
        )?)?;
        assert_eq!(state, "running");
        settle(c, &ALL).await?;
        for _ in 0..2 {
            let outs = sync_each(fleet, &all)?;
            assert!(
                outs.iter().all(|(_, o)| !o.contains("deployment later")),
                "{closed}: {outs:?}"
            );
        }
        let v = status(c, 1, &later)?;
        assert_eq!(v["window_open"], false, "{closed}: {v}");
        for a in &all {
            assert_eq!(
                client_status(&v, &a.id).as_deref(),
                Some("outside-window"),
                "{closed}: {v}"
            );
            assert!(!a.has("installed.txt"));
        }

        // Two hours ago to two hours ahead: open now (it may cross midnight).
        let open = daily_window(-2, 2);
        let (now_id, _) = created(&c.cli(
            0,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool2",
                "--group",
                "all",
                "--window",
                &closed,
                "--window",
                &open,
                "--id",
                "now",
            ],
        )?)?;
        settle(c, &ALL).await?;
        let outs = sync_each(fleet, &all)?;
        assert_eq!(
            reported(&outs, &now_id, "installed"),
            ids(&all),
            "{open}: {outs:?}"
        );
        let v = wait_status(c, 2, &now_id, "installed everywhere", |v| {
            all.iter()
                .all(|a| client_status(v, &a.id).as_deref() == Some("installed"))
        })
        .await?;
        assert_eq!(v["window_open"], true, "{open}: {v}");
        // The closed one still waits for its window.
        let outs = sync_each(fleet, &all)?;
        assert!(
            outs.iter().all(|(_, o)| !o.contains("deployment later")),
            "{outs:?}"
        );
        for a in &all {
            assert_eq!(a.lines("installed.txt"), std::slice::from_ref(&now_id));
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(c, r);
    eprintln!(
        "windows_decide_when_clients_install: {:?}",
        started.elapsed()
    );
}

/// `outpost ARGS` as the admin whose certificate `admin issue-cert` wrote into `dir`, over
/// HTTPS to node `i`: whether it succeeded, stdout, stderr.
fn as_admin(
    c: &LocalCluster,
    dir: &Path,
    i: usize,
    args: &[&str],
) -> Result<(bool, String, String)> {
    let mut all = vec!["--server", &c.nodes[i].api_addr, "--cert"];
    let (cert, key, ca) = (
        dir.join("admin.crt"),
        dir.join("admin.key"),
        dir.join("ca.crt"),
    );
    all.extend([s(&cert), "--key", s(&key), "--ca", s(&ca)]);
    all.extend(args);
    let out = c.run(&all)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_deployment_waits_for_a_second_admin() {
    let _g = serial();
    let started = Instant::now();
    let site = site(3, "\"deploy.approval_above\" = 5\n").await;
    let (c, fleet) = (&site.c, &site.fleet);
    let r = async {
        let all: Vec<&Agent> = site.agents.iter().collect();
        let (alice, bob) = (site.root.join("alice"), site.root.join("bob"));
        c.cli(
            0,
            &[
                "admin",
                "issue-cert",
                "--name",
                "alice",
                "--role",
                "operator",
                "-o",
                s(&alice),
            ],
        )?;
        c.cli(
            1,
            &[
                "admin",
                "issue-cert",
                "--name",
                "bob",
                "--role",
                "operator",
                "-o",
                s(&bob),
            ],
        )?;

        let (ok, out, err) = as_admin(
            c,
            &alice,
            0,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool",
                "--group",
                "all",
                "--id",
                "big",
            ],
        )?;
        assert!(ok, "{err}");
        let (id, state) = created(&out)?;
        assert_eq!((id.as_str(), state.as_str()), ("big", "waiting-approval"));
        settle(c, &ALL).await?;
        let outs = sync_each(fleet, &all)?;
        assert!(
            outs.iter().all(|(_, o)| !o.contains("deployment big")),
            "{outs:?}"
        );
        let v = status(c, 1, &id)?;
        assert_eq!(v["state"], "waiting-approval", "{v}");
        for a in &all {
            assert!(!a.has("installed.txt"));
            assert_ne!(
                client_status(&v, &a.id).as_deref(),
                Some("installed"),
                "{v}"
            );
        }

        // The creator cannot approve their own deployment, through any node.
        let (ok, _, err) = as_admin(c, &alice, 1, &["deployment", "approve", &id])?;
        assert!(!ok, "the creator approved: {}", status(c, 0, &id)?);
        assert!(
            err.contains("the creator cannot approve their own deployment"),
            "{err}"
        );
        assert_eq!(status(c, 2, &id)?["state"], "waiting-approval");

        let (ok, _, err) = as_admin(
            c,
            &bob,
            2,
            &["deployment", "approve", &id, "--reason", "checked the plan"],
        )?;
        assert!(ok, "{err}");
        let v = wait_status(c, 0, &id, "running", |v| v["state"] == "running").await?;
        settle(c, &ALL).await?;
        assert_eq!(
            v["approved_by"].as_str().map(|b| b.contains("bob")),
            Some(true),
            "{v}"
        );
        let outs = sync_each(fleet, &all)?;
        assert_eq!(reported(&outs, &id, "installed"), ids(&all), "{outs:?}");

        // A deployment to one client (below the threshold, not `all`) needs nobody.
        let (_, state) = created(&c.cli(
            0,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool2",
                "--client",
                &all[0].id,
                "--id",
                "small",
            ],
        )?)?;
        assert_eq!(state, "running");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(c, r);
    eprintln!(
        "a_large_deployment_waits_for_a_second_admin: {:?}",
        started.elapsed()
    );
}
