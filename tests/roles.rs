//! People's roles through the real binary on a three-node loopback cluster with four real
//! agents, two of them labelled `line2`: a viewer reads and changes nothing; an operator of
//! `label:line2` sees and deploys to its two clients only; a role set through one node is in
//! force on the next request through another; the audit read by person shows the role each
//! record was made with; root on the local socket stays an admin; and a certificate is never
//! made while the node cannot record its role.

// Tests of a file run one at a time: each holds SERIAL for its whole run, across awaits,
// on its own runtime, so the std Mutex cannot deadlock.
#![allow(clippy::await_holding_lock)]

mod support;

use support::agents::{Agent, Fleet};
use support::{exe, local::settle, local::trusted_cluster, or_dump, run_ok, s, serial};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use outpost::harness::localcluster::LocalCluster;
use serde_json::Value;

const ALL: [usize; 3] = [0, 1, 2];

/// A person's certificate directory, made on node `i` with `outpost admin issue-cert --name
/// NAME --role ROLE [--scope ...]`; what the command printed.
fn issue(
    c: &LocalCluster,
    root: &Path,
    i: usize,
    name: &str,
    role: &str,
    scopes: &[&str],
) -> Result<(PathBuf, String)> {
    let dir = root.join(name);
    let mut args = vec!["admin", "issue-cert", "--name", name, "--role", role];
    for sc in scopes {
        args.extend(["--scope", sc]);
    }
    args.extend(["-o", s(&dir)]);
    let out = c.cli(i, &args)?;
    Ok((dir, out))
}

/// `outpost ARGS` over HTTPS to node `i` with the certificate in `dir`: whether it succeeded,
/// stdout, stderr.
fn as_person(
    c: &LocalCluster,
    dir: &Path,
    i: usize,
    args: &[&str],
) -> Result<(bool, String, String)> {
    let (cert, key, ca) = (
        dir.join("admin.crt"),
        dir.join("admin.key"),
        dir.join("ca.crt"),
    );
    let mut all = vec![
        "--server",
        &c.nodes[i].api_addr,
        "--cert",
        s(&cert),
        "--key",
        s(&key),
        "--ca",
        s(&ca),
    ];
    all.extend(args);
    let out = c.run(&all)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

/// `as_person` that must succeed: its stdout.
fn ok_as(c: &LocalCluster, dir: &Path, i: usize, args: &[&str]) -> Result<String> {
    let (ok, out, err) = as_person(c, dir, i, args)?;
    anyhow::ensure!(ok, "outpost {} as {}: {err}", args.join(" "), dir.display());
    Ok(out)
}

/// `as_person` that must fail: its stderr.
fn refused_as(c: &LocalCluster, dir: &Path, i: usize, args: &[&str]) -> Result<String> {
    let (ok, out, err) = as_person(c, dir, i, args)?;
    anyhow::ensure!(
        !ok,
        "outpost {} as {} succeeded: {out}",
        args.join(" "),
        dir.display()
    );
    Ok(err)
}

/// The ids in a `client list --json`.
fn ids(list: &str) -> Result<BTreeSet<String>> {
    let v: Value = serde_json::from_str(list)?;
    Ok(v.as_array()
        .context("a list")?
        .iter()
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect())
}

/// Three nodes trusting a bundle key, the artifact `tool` imported, and four agents enrolled
/// across the nodes, the first two labelled `line2`.
async fn site(root: &Path) -> (LocalCluster, Vec<Agent>) {
    let (key, c) = trusted_cluster(
        root,
        "release",
        "cluster",
        3,
        &[("OUTPOST_ENROLL_RATE", "50")],
    )
    .await
    .expect("three-node cluster");
    let r = async {
        std::fs::write(root.join("tool.bin"), b"tool version 1\n")?;
        std::fs::write(
            root.join("spec.toml"),
            "channel = \"site\"\nversion = 1\n[[payload]]\npath = \"tool.bin\"\nkind = \"artifact\"\nname = \"tool\"\n",
        )?;
        let bundle = root.join("site.obundle");
        run_ok(
            &c,
            &[
                "bundle",
                "create",
                "--spec",
                s(&root.join("spec.toml")),
                "--key",
                s(&key),
                "-o",
                s(&bundle),
            ],
        )?;
        c.cli(0, &["bundle", "import", s(&bundle)])?;
        let token = c
            .cli(0, &["token", "create", "--kind", "client"])?
            .trim()
            .to_string();
        let servers: Vec<String> = c.nodes.iter().map(|n| n.api_addr.clone()).collect();
        let agents = Fleet::new(&exe()).enroll(&root.join("agents"), "pc", 4, &token, &servers)?;
        c.cli(
            0,
            &[
                "client",
                "label",
                &agents[0].id,
                &agents[1].id,
                "--add",
                "line2",
            ],
        )?;
        settle(&c, &ALL).await?;
        Ok::<_, anyhow::Error>(agents)
    }
    .await;
    let agents = or_dump(&c, r);
    (c, agents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_people_see_and_do() {
    let _g = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let (mut c, agents) = site(&root).await;
    let r = async {
        let line2: BTreeSet<String> = agents[..2].iter().map(|a| a.id.clone()).collect();
        let others: BTreeSet<String> = agents[2..].iter().map(|a| a.id.clone()).collect();
        let everyone: BTreeSet<String> = line2.union(&others).cloned().collect();

        // (a) A viewer reads, and is refused every change with its role named.
        let (vera, out) = issue(&c, &root, 0, "vera", "viewer", &[])?;
        assert!(
            out.contains("vera is now a viewer of the whole site on every node"),
            "{out}"
        );
        let err = refused_as(&c, &vera, 1, &["config", "set", "site.motd", "hello"])?;
        assert!(
            err.contains("vera is a viewer") && err.contains("needs the operator role"),
            "{err}"
        );
        let listed = ok_as(&c, &vera, 1, &["client", "list", "--json"])?;
        assert_eq!(ids(&listed)?, everyone, "{listed}");
        let tokens = ok_as(&c, &vera, 2, &["token", "list", "--json"])?;
        let tokens: Value = serde_json::from_str(&tokens)?;
        let rows = tokens.as_array().context("token list")?;
        assert!(!rows.is_empty(), "the client token is listed");
        for t in rows {
            let fields: Vec<&String> = t.as_object().context("a token")?.keys().collect();
            assert!(
                fields
                    .iter()
                    .all(|k| !k.contains("secret") && !k.contains("sha") && !k.contains("hash")),
                "a token row shows a secret: {t}"
            );
        }

        // (b) An operator of label:line2 sees and deploys to its two clients only.
        let (otto, out) = issue(&c, &root, 0, "otto", "operator", &["label:line2"])?;
        assert!(
            out.contains("otto is now an operator of label:line2 on every node"),
            "{out}"
        );
        let listed = ok_as(&c, &otto, 2, &["client", "list", "--json"])?;
        assert_eq!(ids(&listed)?, line2, "{listed}");
        let other = others.iter().next().context("a client outside")?;
        let err = refused_as(&c, &otto, 2, &["client", "show", other])?;
        assert!(
            err.contains(&format!(
                "otto's scope (label:line2) does not reach client {other}"
            )),
            "{err}"
        );
        let plan: Value = serde_json::from_str(&ok_as(
            &c,
            &otto,
            1,
            &["deployment", "plan", "--label", "line2", "--json"],
        )?)?;
        assert_eq!(plan["count"], 2, "{plan}");
        let out = ok_as(
            &c,
            &otto,
            1,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool",
                "--label",
                "line2",
                "--id",
                "l2",
            ],
        )?;
        assert!(out.starts_with("l2 "), "{out}");
        let beyond = format!(
            "the selector reaches 2 clients outside otto's scope (label:line2): {}",
            others.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        for verb in ["plan", "create"] {
            let mut args = vec!["deployment", verb, "--group", "all"];
            if verb == "create" {
                args.extend(["--artifact", "tool", "--id", "everywhere"]);
            }
            let err = refused_as(&c, &otto, 2, &args)?;
            assert!(err.contains(&beyond), "{verb}: {err}");
        }
        let err = refused_as(&c, &otto, 0, &["config", "set", "site.motd", "hello"])?;
        assert!(
            err.contains("otto's scope (label:line2) does not reach the global config"),
            "{err}"
        );
        let mine = line2.iter().next().context("a line2 client")?;
        ok_as(
            &c,
            &otto,
            0,
            &["config", "set", "site.motd", "line2", "--client", mine],
        )?;
        let err = refused_as(&c, &otto, 0, &["client", "label", other, "--add", "x"])?;
        assert!(
            err.contains("the request names 1 client outside otto's scope"),
            "{err}"
        );
        // The deployment's rows are in reach; nobody else's deployment is listed as hers.
        let status: Value = serde_json::from_str(&ok_as(
            &c,
            &otto,
            2,
            &["deployment", "status", "l2", "--json"],
        )?)?;
        assert_eq!(status["deployment"]["id"], "l2", "{status}");

        // (c) A role set through node 1 holds on the very next request through node 2.
        let (cara, _) = issue(&c, &root, 0, "cara", "operator", &[])?;
        ok_as(
            &c,
            &cara,
            1,
            &["config", "set", "site.motd", "from cara", "--group", "lab"],
        )?;
        let out = c.cli(0, &["role", "set", "cara", "--role", "viewer"])?;
        assert!(
            out.contains("cara is now a viewer of the whole site on every node"),
            "{out}"
        );
        let err = refused_as(
            &c,
            &cara,
            1,
            &["config", "set", "site.motd", "again", "--group", "lab"],
        )?;
        assert!(err.contains("cara is a viewer"), "{err}");
        let shown: Value = serde_json::from_str(&c.cli(2, &["role", "show", "cara", "--json"])?)?;
        assert_eq!(shown["role"], "viewer", "{shown}");
        let listed = c.cli(1, &["role", "list"])?;
        for name in ["vera", "otto", "cara"] {
            assert!(listed.contains(name), "{listed}");
        }

        // (d) The audit read by person: each record with the role held when it was made (and
        // ` via node:N` when the node asked forwarded it to the leader).
        let recs: Value = serde_json::from_str(
            &c.cli(2, &["audit", "--actor", "otto", "--json", "--limit", "100"])?,
        )?;
        let recs = recs.as_array().context("audit records")?;
        assert!(
            recs.iter().all(|r| r["actor"]
                .as_str()
                .is_some_and(|a| a == "admin:otto" || a.starts_with("admin:otto "))),
            "{recs:?}"
        );
        let actions: Vec<&str> = recs.iter().filter_map(|r| r["action"].as_str()).collect();
        assert!(
            recs.iter().any(|r| r["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with("admin:otto as operator of label:line2"))
                && r["target"] == "deployment:l2"),
            "{recs:?}"
        );
        assert!(actions.len() >= 2, "create and config set: {actions:?}");
        let recs: Value = serde_json::from_str(&ok_as(
            &c,
            &vera,
            0,
            &["audit", "--actor", "cara", "--json"],
        )?)?;
        let actors: Vec<&str> = recs
            .as_array()
            .context("audit records")?
            .iter()
            .filter_map(|r| r["actor"].as_str())
            .collect();
        assert_eq!(actors.len(), 1, "{recs}");
        assert!(
            actors[0] == "admin:cara as operator"
                || actors[0].starts_with("admin:cara as operator via "),
            "{recs}"
        );

        // (e) Root on the local socket stays an admin.
        c.cli(1, &["config", "set", "site.motd", "from root"])?;
        let plan: Value =
            serde_json::from_str(&c.cli(2, &["deployment", "plan", "--group", "all", "--json"])?)?;
        assert_eq!(plan["count"], 4, "{plan}");
        let listed = c.cli(2, &["client", "list", "--json"])?;
        assert_eq!(ids(&listed)?, everyone);

        // Root's deployment to every client: the operator sees only its own clients' rows,
        // and may not step it; its own deployment it may.
        let out = c.cli(
            0,
            &[
                "deployment",
                "create",
                "--artifact",
                "tool",
                "--group",
                "all",
                "--id",
                "everyone",
            ],
        )?;
        assert!(out.starts_with("everyone "), "{out}");
        settle(&c, &ALL).await?;
        let status: Value = serde_json::from_str(&ok_as(
            &c,
            &otto,
            1,
            &["deployment", "status", "everyone", "--json"],
        )?)?;
        let rows: BTreeSet<String> = status["clients"]
            .as_array()
            .context("client rows")?
            .iter()
            .filter_map(|r| r["id"].as_str().map(String::from))
            .collect();
        assert_eq!(rows, line2, "{status}");
        let err = refused_as(&c, &otto, 2, &["deployment", "pause", "everyone"])?;
        assert!(
            err.contains(&format!(
                "deployment everyone targets 2 clients outside otto's scope (label:line2): {}",
                others.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            "{err}"
        );
        ok_as(&c, &otto, 2, &["deployment", "pause", "l2"])?;

        // A console account is new: its role is required, and set before it.
        let pw = root.join("pw");
        std::fs::write(&pw, "a long enough password\n")?;
        let out = c.run(&[
            "console",
            "user",
            "add",
            "nina",
            "--password-file",
            s(&pw),
            "--data-dir",
            s(&c.nodes[0].dir),
        ])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "added without a role");
        assert!(err.contains("--role"), "{err}");
        c.cli(
            0,
            &[
                "console",
                "user",
                "add",
                "nina",
                "--role",
                "operator",
                "--scope",
                "group:lab",
                "--password-file",
                s(&pw),
            ],
        )?;
        let shown: Value = serde_json::from_str(&c.cli(1, &["role", "show", "nina", "--json"])?)?;
        assert_eq!(
            (&shown["role"], &shown["scopes"], &shown["console_account"]),
            (
                &Value::from("operator"),
                &serde_json::json!(["group:lab"]),
                &Value::from(true)
            ),
            "{shown}"
        );
        // Its password again: no role needed for an account that exists.
        c.cli(
            0,
            &["console", "user", "add", "nina", "--password-file", s(&pw)],
        )?;

        // No certificate while the node cannot record the role.
        assert!(c.stop(2, Duration::from_secs(30))?, "node 3 stopped");
        let out = c.run(&[
            "admin",
            "issue-cert",
            "--name",
            "late",
            "--role",
            "viewer",
            "-o",
            s(&root.join("late")),
            "--data-dir",
            s(&c.nodes[2].dir),
        ])?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "issued with the node down");
        assert!(
            err.contains("must run to record the role") && err.contains("nothing was issued"),
            "{err}"
        );
        assert!(!root.join("late").join("admin.crt").exists());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    or_dump(&c, r);
}
